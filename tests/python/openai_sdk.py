"""The official OpenAI SDK through Airlock: OPENAI_URL as base URL, OPENAI (the gws_ token) as key.

Prints one JSON line: the completion text, the streamed deltas with their arrival times (seconds
since the request), the tool call, and the status of the error passed back.
"""
import json
import os
import time

import openai

client = openai.OpenAI(base_url=os.environ["OPENAI_URL"], api_key=os.environ["OPENAI"], max_retries=0)
messages = [{"role": "user", "content": "ping"}]
out = {}

completion = client.chat.completions.create(model="gpt-test", messages=messages)
out["text"] = completion.choices[0].message.content

start = time.monotonic()
arrivals = []
for chunk in client.chat.completions.create(model="gpt-test", messages=messages, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        arrivals.append([round(time.monotonic() - start, 4), chunk.choices[0].delta.content])
out["stream"] = arrivals

tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
tool = client.chat.completions.create(model="gpt-test", messages=messages, tools=tools)
out["tool"] = tool.choices[0].message.tool_calls[0].function.name

try:
    client.chat.completions.create(model="error-model", messages=messages)
    out["error"] = None
except openai.APIStatusError as e:
    out["error"] = e.status_code

print(json.dumps(out))
