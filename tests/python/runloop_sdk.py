"""Runloop's generated Python SDK, unchanged, against Airlock's control plane.

Environment: AIRLOCK_URL (control plane), AIRLOCK_TOKEN (admin API key), DEVBOX_ID (a running
devbox registered beforehand). Prints one JSON line with what it saw; any failure raises.
"""
import json
import os

from runloop_api_client import Runloop

client = Runloop(bearer_token=os.environ["AIRLOCK_TOKEN"], base_url=os.environ["AIRLOCK_URL"], max_retries=0)

secret = client.secrets.create(name="SDK_SECRET", value="sdk-sentinel-value-5a4b3c")
assert secret.id.startswith("sec_"), secret
assert client.secrets.retrieve("SDK_SECRET").id == secret.id
assert client.secrets.retrieve_by_id(secret.id).name == "SDK_SECRET"
rotated = client.secrets.update("SDK_SECRET", value="sdk-sentinel-value-rotated")
assert rotated.update_time_ms >= secret.update_time_ms
client.secrets.update_by_id(secret.id, value="sdk-sentinel-value-rotated-2")
listed = client.secrets.list(limit=10)
assert any(s.id == secret.id for s in listed.secrets), listed

gw = client.gateway_configs.create(
    name="sdk-gateway",
    endpoint="https://api.anthropic.com",
    auth_mechanism={"type": "header", "key": "x-api-key"},
    custom_headers=[{"name": "anthropic-beta", "value": "tools-2024"}, {"name": "x-extra", "secret": "SDK_SECRET"}],
    description="made by the Runloop SDK",
)
assert gw.id.startswith("gwc_"), gw
assert gw.auth_mechanism.type == "header" and gw.auth_mechanism.key == "x-api-key"
assert gw.custom_headers[1].secret == secret.id
assert client.gateway_configs.retrieve(gw.id).name == "sdk-gateway"
updated = client.gateway_configs.update(gw.id, description="updated", custom_headers=[])
assert updated.description == "updated" and updated.custom_headers == []
page = client.gateway_configs.list(limit=5)
assert any(g.id == gw.id for g in page.gateway_configs), page

token = client.devboxes.create_gateway_token(os.environ["DEVBOX_ID"], gateway=gw.id, secret="SDK_SECRET")
assert token.token.startswith("gws_"), token
assert token.gateway_config_id == gw.id and token.devbox_id == os.environ["DEVBOX_ID"]
assert token.endpoint == "https://api.anthropic.com"

doomed = client.gateway_configs.create(name="doomed", endpoint="https://example.com", auth_mechanism={"type": "bearer"})
assert client.gateway_configs.delete(doomed.id).id == doomed.id
spare = client.secrets.create(name="SPARE", value="x")
client.secrets.delete("SPARE")
spare2 = client.secrets.create(name="SPARE2", value="x")
client.secrets.delete_by_id(spare2.id)

print(json.dumps({"secret": secret.id, "gateway": gw.id, "token_prefix": token.token[:4], "url": token.url}))
