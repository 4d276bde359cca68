"""The official Anthropic SDK through Airlock: ANTHROPIC_URL as base URL, ANTHROPIC as key.

Prints one JSON line like openai_sdk.py.
"""
import json
import os
import time

import anthropic

client = anthropic.Anthropic(base_url=os.environ["ANTHROPIC_URL"], api_key=os.environ["ANTHROPIC"], max_retries=0)
messages = [{"role": "user", "content": "ping"}]
out = {}

message = client.messages.create(model="claude-test", max_tokens=64, messages=messages)
out["text"] = message.content[0].text

start = time.monotonic()
arrivals = []
with client.messages.stream(model="claude-test", max_tokens=64, messages=messages) as stream:
    for text in stream.text_stream:
        arrivals.append([round(time.monotonic() - start, 4), text])
out["stream"] = arrivals

tools = [{"name": "get_weather", "description": "weather", "input_schema": {"type": "object", "properties": {}}}]
tool = client.messages.create(model="claude-test", max_tokens=64, messages=messages, tools=tools)
out["tool"] = next(block.name for block in tool.content if block.type == "tool_use")

try:
    client.messages.create(model="error-model", max_tokens=64, messages=messages)
    out["error"] = None
except anthropic.APIStatusError as e:
    out["error"] = e.status_code

print(json.dumps(out))
