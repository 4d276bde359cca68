"""The official OpenAI SDK through Airlock's metered gateways, recording what the SDK saw.

Environment: OPENAI_URL (the data plane), OPENAI (a token for a Chat Completions gateway of the
`openai` provider), OPENAI_RESPONSES (a token for a Responses gateway), CUSTOM (a token for a Chat
Completions gateway without a provider). Each request names its own model, so that the test can
find its request event by model. Prints one JSON line.
"""
import json
import os

import openai

base_url = os.environ["OPENAI_URL"]
chat = openai.OpenAI(base_url=base_url, api_key=os.environ["OPENAI"], max_retries=0)
responses = openai.OpenAI(base_url=base_url, api_key=os.environ["OPENAI_RESPONSES"], max_retries=0)
custom = openai.OpenAI(base_url=base_url, api_key=os.environ["CUSTOM"], max_retries=0)


def ask(text):
    return [{"role": "user", "content": text}]


def usage(u):
    return None if u is None else u.model_dump(exclude_none=True)


def chunks_seen(stream):
    """Every chunk as [number of choices, usage or None, content delta]."""
    seen = []
    for chunk in stream:
        content = chunk.choices[0].delta.content if chunk.choices else None
        seen.append([len(chunk.choices), usage(chunk.usage), content])
    return seen


out = {}

r = chat.chat.completions.create(model="gpt-plain", messages=ask("one two three"))
out["plain"] = {"text": r.choices[0].message.content, "usage": usage(r.usage)}
r = chat.chat.completions.create(model="gpt-plain", messages=ask("again"))
out["plain_again"] = {"text": r.choices[0].message.content, "usage": usage(r.usage)}

# The client does not ask for the stream's usage: Airlock does, and must take the extra chunk
# out again.
out["stream"] = chunks_seen(
    chat.chat.completions.create(model="gpt-stream", messages=ask("stream four words please"), stream=True)
)
# The client asks: it gets the usage chunk, as from OpenAI.
out["stream_asked"] = chunks_seen(
    chat.chat.completions.create(
        model="gpt-stream-asked",
        messages=ask("stream with usage"),
        stream=True,
        stream_options={"include_usage": True},
    )
)

tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
r = chat.chat.completions.create(model="gpt-tool", messages=ask("weather in Paris"), tools=tools)
call = r.choices[0].message.tool_calls[0]
out["tool"] = {"name": call.function.name, "arguments": call.function.arguments, "usage": usage(r.usage)}

r = chat.chat.completions.create(model="gpt-reason", messages=ask("think it over"))
out["reason"] = usage(r.usage)
r = chat.chat.completions.create(model="gpt-cache", messages=ask("cached prompt here"))
out["cache"] = usage(r.usage)

try:
    chat.chat.completions.create(model="error-model", messages=ask("x"))
    out["error"] = None
except openai.APIStatusError as e:
    out["error"] = e.status_code

# Leave after the first chunk of a slow stream.
stream = chat.chat.completions.create(model="gpt-slow", messages=ask("leave early please"), stream=True)
first = next(iter(stream))
stream.close()
out["abort_first"] = [len(first.choices), usage(first.usage)]

r = responses.responses.create(model="gpt-responses", input="one two three", instructions="answer briefly")
out["responses"] = {"text": r.output_text, "usage": usage(r.usage)}
with responses.responses.stream(
    model="gpt-responses-cache-reason", input="stream the response", reasoning={"summary": "auto"}
) as s:
    text = "".join(e.delta for e in s if e.type == "response.output_text.delta")
    final = s.get_final_response()
    out["responses_stream"] = {
        "text": text,
        "output": [item.type for item in final.output],
        "usage": usage(final.usage),
    }

out["custom_stream"] = chunks_seen(
    custom.chat.completions.create(model="gpt-custom", messages=ask("no usage asked"), stream=True)
)

print(json.dumps(out))
