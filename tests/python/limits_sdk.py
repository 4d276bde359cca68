"""The official OpenAI and Anthropic SDKs against gateways with a request limit: admitted calls
carry the x-ratelimit headers, and the call over the limit raises the SDK's RateLimitError with
Airlock's `limit_exceeded`.

Environment: OPENAI_URL and OPENAI (a token for an OpenAI gateway limited to 2 requests a
minute), ANTHROPIC_URL and ANTHROPIC (a token for an Anthropic gateway limited to 1 request a
minute). The limits reach the data plane within a second of being set, so each side first calls
until an answer shows its limit's header (the calls before that are not counted). Prints one
JSON line.
"""
import json
import os
import time

import anthropic
import openai

out = {}

oa = openai.OpenAI(base_url=os.environ["OPENAI_URL"] + "/v1", api_key=os.environ["OPENAI"], max_retries=0)


def oa_call():
    return oa.chat.completions.with_raw_response.create(
        model="gpt-plain", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )


def until_limited(call, header):
    for _ in range(100):
        raw = call()
        if raw.headers.get(header) is not None:
            return raw
        time.sleep(0.1)
    raise SystemExit("the limit never reached the data plane")


first = until_limited(oa_call, "x-ratelimit-limit-requests-per-minute")
second = oa_call()
out["openai_admitted"] = [
    [first.headers.get("x-ratelimit-limit-requests-per-minute"), first.headers.get("x-ratelimit-remaining-requests-per-minute")],
    [second.headers.get("x-ratelimit-limit-requests-per-minute"), second.headers.get("x-ratelimit-remaining-requests-per-minute")],
]
try:
    oa_call()
    out["openai_refused"] = None
except openai.RateLimitError as e:
    out["openai_refused"] = {
        "status": e.status_code,
        "code": e.response.headers.get("x-airlock-error"),
        "retry_after": e.response.headers.get("retry-after"),
        "message": str(e),
    }

an = anthropic.Anthropic(base_url=os.environ["ANTHROPIC_URL"], api_key=os.environ["ANTHROPIC"], max_retries=0)


def an_call():
    return an.messages.with_raw_response.create(
        model="claude-plain", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )


until_limited(an_call, "x-ratelimit-limit-requests-per-minute")
try:
    an_call()
    out["anthropic_refused"] = None
except anthropic.RateLimitError as e:
    out["anthropic_refused"] = {
        "status": e.status_code,
        "code": e.response.headers.get("x-airlock-error"),
        "message": str(e),
    }

print(json.dumps(out))
