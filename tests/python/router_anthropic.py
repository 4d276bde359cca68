"""The official Anthropic SDK through an Airlock router gateway, served by an OpenAI backend.

Environment: LLM_URL (the data plane), LLM (a router token). Prints one JSON line.
"""
import json
import os

import anthropic

client = anthropic.Anthropic(base_url=os.environ["LLM_URL"], api_key=os.environ["LLM"], max_retries=0)

out = {}
r = client.messages.create(model="gpt-x", max_tokens=100, messages=[{"role": "user", "content": "one two three"}])
out["plain"] = {"text": r.content[0].text, "stop": r.stop_reason, "usage": r.usage.model_dump(exclude_none=True)}

text = ""
with client.messages.stream(model="gpt-x", max_tokens=100, messages=[{"role": "user", "content": "stream this"}]) as s:
    for t in s.text_stream:
        text += t
    final = s.get_final_message()
out["stream"] = {"text": text, "stop": final.stop_reason, "output_tokens": final.usage.output_tokens}

try:
    client.messages.create(model="nobody:serves", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    out["refused"] = None
except anthropic.BadRequestError as e:
    out["refused"] = {"status": e.status_code, "type": e.body["error"]["type"] if isinstance(e.body, dict) else None}
print(json.dumps(out))
