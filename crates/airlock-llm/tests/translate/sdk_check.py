"""Reads every golden output of the translation with the official SDKs, as a client would.

Not run by cargo: it needs Python with the `openai` and `anthropic` packages. Each expected
output (`*.out.sse`, `*.out.json`) is served by a mock transport and read through the SDK's own
stream accumulator or response parser; error outputs must raise the SDK's exception for their
status. Usage:

    python3 -m venv /tmp/sdk && /tmp/sdk/bin/pip install openai anthropic
    /tmp/sdk/bin/python crates/airlock-llm/tests/translate/sdk_check.py
"""

import glob
import os
import sys

import anthropic
import openai

try:  # Newer SDKs ship on pydantic's httpx2; older ones on httpx.
    import httpx2 as httpx
except ImportError:
    import httpx

ROOT = os.path.dirname(os.path.abspath(__file__))
# Streams that end in an error, and the OpenAI stream helper's refusals to parse a truncated or
# filtered answer: the SDK raising is the expected outcome.
EXPECTED_ERRORS = {
    "error_first_chunk", "error_mid_stream", "truncated_before_finish", "error_first_event",
    "truncated_before_message_stop", "max_tokens_crlf", "refusal_and_redacted_thinking",
}
failures = []


def transport(body, status=200, ctype="text/event-stream"):
    return httpx.MockTransport(
        lambda request: httpx.Response(status, content=body, headers={"content-type": ctype})
    )


def case(path):
    return os.path.basename(path).split(".")[0]


def anthropic_client(body, status=200, ctype="text/event-stream"):
    http = httpx.Client(transport=transport(body, status, ctype))
    return anthropic.Anthropic(api_key="x", http_client=http, max_retries=0)


def openai_client(body, status=200, ctype="text/event-stream"):
    http = httpx.Client(transport=transport(body, status, ctype))
    return openai.OpenAI(api_key="x", http_client=http, max_retries=0)


def run(name, expect_error, fn):
    try:
        print("ok  ", name, fn())
        if expect_error:
            failures.append(f"{name}: expected an error")
    except Exception as error:  # noqa: BLE001 - any failure is reported
        print("err ", name, type(error).__name__, str(error)[:100])
        if not expect_error:
            failures.append(f"{name}: {type(error).__name__}: {error}")


ASK = {"messages": [{"role": "user", "content": "hi"}]}

for path in sorted(glob.glob(f"{ROOT}/stream/openai_to_anthropic/*.out.sse")):
    def read(path=path):
        client = anthropic_client(open(path, "rb").read())
        with client.messages.stream(model="m", max_tokens=10, **ASK) as stream:
            message = stream.get_final_message()
        return message.stop_reason, [block.type for block in message.content]
    run(path, case(path) in EXPECTED_ERRORS, read)

for path in sorted(glob.glob(f"{ROOT}/stream/anthropic_to_openai/*.out.sse")):
    def read(path=path):
        client = openai_client(open(path, "rb").read())
        options = {"include_usage": True}
        with client.chat.completions.stream(model="m", stream_options=options, **ASK) as stream:
            completion = stream.get_final_completion()
        choice = completion.choices[0]
        return choice.finish_reason, len(choice.message.tool_calls or [])
    run(path, case(path) in EXPECTED_ERRORS, read)

for path in sorted(glob.glob(f"{ROOT}/response/openai_to_anthropic/*.out.json")):
    def read(path=path):
        client = anthropic_client(open(path, "rb").read(), ctype="application/json")
        message = client.messages.create(model="m", max_tokens=10, **ASK)
        return message.stop_reason, [block.type for block in message.content]
    run(path, False, read)

for path in sorted(glob.glob(f"{ROOT}/response/anthropic_to_openai/*.out.json")):
    def read(path=path):
        client = openai_client(open(path, "rb").read(), ctype="application/json")
        completion = client.chat.completions.create(model="m", **ASK)
        return completion.choices[0].finish_reason, completion.usage.prompt_tokens
    run(path, False, read)

for path in sorted(glob.glob(f"{ROOT}/error/*/*.out.json")):
    status = int(case(path).rsplit("_", 1)[1])
    body = open(path, "rb").read()

    def read(path=path, status=status, body=body):
        if "/openai_to_anthropic/" in path:
            try:
                anthropic_client(body, status, "application/json").messages.create(
                    model="m", max_tokens=10, **ASK)
            except anthropic.APIStatusError as error:
                return type(error).__name__, error.status_code, error.body["error"]["type"]
        else:
            try:
                openai_client(body, status, "application/json").chat.completions.create(
                    model="m", **ASK)
            except openai.APIStatusError as error:
                return type(error).__name__, error.status_code, error.code
        raise AssertionError("no error raised")
    run(path, False, read)

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("all outputs read by the SDKs")
