"""The official Anthropic SDK through an Airlock gateway of the `anthropic` provider, recording
what the SDK saw.

Environment: ANTHROPIC_URL (the data plane), ANTHROPIC (the gws_ token). Each request names its
own model, so that the test can find its request event by model. Prints one JSON line.
"""
import json
import os

import anthropic

client = anthropic.Anthropic(base_url=os.environ["ANTHROPIC_URL"], api_key=os.environ["ANTHROPIC"], max_retries=0)


def ask(text):
    return [{"role": "user", "content": text}]


def usage(u):
    return u.model_dump(exclude_none=True)


out = {}

m = client.messages.create(model="claude-plain", max_tokens=64, messages=ask("one two three"))
out["plain"] = {"text": m.content[0].text, "usage": usage(m.usage)}

# A stream with a cached prefix and extended thinking.
with client.messages.stream(
    model="claude-cache-reason",
    max_tokens=2048,
    thinking={"type": "enabled", "budget_tokens": 1024},
    messages=ask("think with the cache"),
) as stream:
    events = [event.type for event in stream]
    final = stream.get_final_message()
    out["stream"] = {
        "events": events,
        "blocks": [block.type for block in final.content],
        "text": "".join(block.text for block in final.content if block.type == "text"),
        "usage": usage(final.usage),
    }

tools = [{"name": "get_weather", "description": "weather", "input_schema": {"type": "object", "properties": {}}}]
m = client.messages.create(model="claude-tool", max_tokens=64, messages=ask("weather in Paris"), tools=tools)
block = next(b for b in m.content if b.type == "tool_use")
out["tool"] = {"name": block.name, "input": block.input, "usage": usage(m.usage)}

# Leave after the first event of a slow stream.
stream = client.messages.create(model="claude-slow", max_tokens=64, messages=ask("leave early please"), stream=True)
first = next(iter(stream))
stream.close()
out["abort_first"] = first.type

print(json.dumps(out))
