"""Gemini through an Airlock gateway of the `google` provider, over plain HTTP (no Google SDK is
installed): the token goes in `x-goog-api-key`, as the google-genai SDK sends its key.

Environment: GEMINI_URL (the data plane), GEMINI (the gws_ token). Prints one JSON line with the
whole answer and the streamed chunks.
"""
import json
import os
import urllib.request

base = os.environ["GEMINI_URL"]


def post(path, body):
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-goog-api-key": os.environ["GEMINI"]},
        method="POST",
    )
    return urllib.request.urlopen(request, timeout=60)


def ask(text):
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


out = {}
with post("/v1beta/models/gemini-plain:generateContent", ask("one two three")) as r:
    out["plain"] = json.load(r)

chunks = []
with post("/v1beta/models/gemini-cache-reason:streamGenerateContent?alt=sse", ask("stream from gemini")) as r:
    out["stream_content_type"] = r.headers["content-type"]
    for line in r:
        line = line.decode().strip()
        if line.startswith("data: "):
            chunks.append(json.loads(line[len("data: "):]))
out["stream"] = chunks

print(json.dumps(out))
