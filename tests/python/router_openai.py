"""The official OpenAI SDK through an Airlock router gateway: one token, two backends.

Environment: LLM_URL (the data plane), LLM (a router token). The router's first backend speaks
Anthropic Messages and fails for the model `flaky` (the test's upstream answers 529), its second
speaks Chat Completions. Prints one JSON line of what the SDK saw.
"""
import json
import os

import openai

client = openai.OpenAI(base_url=os.environ["LLM_URL"] + "/v1", api_key=os.environ["LLM"], max_retries=0)


def ask(text):
    return [{"role": "user", "content": text}]


def streamed(model, text):
    """A stream with usage: its joined text and its usage."""
    stream = client.chat.completions.create(
        model=model, messages=ask(text), stream=True, stream_options={"include_usage": True}
    )
    joined, usage = "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            joined += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage.model_dump(exclude_none=True)
    return {"text": joined, "usage": usage}


out = {}

# Served by the Anthropic backend, translated both ways.
raw = client.chat.completions.with_raw_response.create(model="claude-x", messages=ask("one two three"))
r = raw.parse()
out["translated"] = {
    "text": r.choices[0].message.content,
    "finish": r.choices[0].finish_reason,
    "usage": r.usage.model_dump(exclude_none=True),
    "provider": raw.headers.get("x-airlock-provider"),
    "model": raw.headers.get("x-airlock-model"),
    "attempts": raw.headers.get("x-airlock-attempts"),
}

# Streamed, translated.
out["translated_stream"] = streamed("claude-x", "stream this")

# A tool call through translation.
tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
r = client.chat.completions.create(model="claude-x", messages=ask("weather?"), tools=tools)
call = r.choices[0].message.tool_calls[0]
out["tool"] = {"name": call.function.name, "arguments": call.function.arguments, "finish": r.choices[0].finish_reason}

# The first backend fails (529): the second answers, once.
raw = client.chat.completions.with_raw_response.create(model="flaky", messages=ask("fail over"))
r = raw.parse()
out["failover"] = {
    "text": r.choices[0].message.content,
    "provider": raw.headers.get("x-airlock-provider"),
    "attempts": raw.headers.get("x-airlock-attempts"),
}
stream = client.chat.completions.create(model="flaky", messages=ask("fail over streaming"), stream=True)
out["failover_stream"] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

# A model naming another host is refused, in OpenAI's error shape.
try:
    client.chat.completions.create(model="evil.example.com:gpt", messages=ask("x"))
    out["refused"] = None
except openai.BadRequestError as e:
    out["refused"] = {"status": e.status_code, "message": e.message}

# The Gemini backend (model gemini-x), translated both ways, JSON and stream.
raw = client.chat.completions.with_raw_response.create(model="gemini-x", messages=ask("ask gemini"))
r = raw.parse()
out["gemini"] = {
    "text": r.choices[0].message.content,
    "finish": r.choices[0].finish_reason,
    "usage": r.usage.model_dump(exclude_none=True),
    "provider": raw.headers.get("x-airlock-provider"),
}
out["gemini_stream"] = streamed("gemini-x", "stream gemini")

# The Responses API over the Anthropic backend (not streamed).
raw = client.responses.with_raw_response.create(model="claude-x", instructions="Be brief.", input="respond to this")
r = raw.parse()
out["responses"] = {
    "text": r.output_text,
    "status": r.status,
    "output_tokens": r.usage.output_tokens,
    "provider": raw.headers.get("x-airlock-provider"),
}

out["models"] = sorted(m.id for m in client.models.list())
print(json.dumps(out))
