-- LLM gateways: a gateway config's provider preset, the dialect its endpoint speaks and the
-- operator's model list; and on each proxied request, what the data plane metered.
--
-- Rows written before this migration read as `api = 'none'` (opaque bytes, not metered) with no
-- provider and no models, which is exactly how they behaved.
ALTER TABLE gateway_configs ADD COLUMN provider TEXT;
ALTER TABLE gateway_configs ADD COLUMN api TEXT NOT NULL DEFAULT 'none';
-- The store's own JSON encoding of the model list (prices as integer nano-dollars per million
-- tokens); NULL when the config has none.
ALTER TABLE gateway_configs ADD COLUMN models TEXT;

-- All NULL for a request that was not metered (a gateway whose api is none, or an event written
-- before this migration). `usage_exact` is 1 when the upstream reported the numbers, 0 when they
-- were estimated; `cost_nanos` is NULL when the model's price is unknown.
ALTER TABLE request_events ADD COLUMN provider TEXT;
ALTER TABLE request_events ADD COLUMN model TEXT;
ALTER TABLE request_events ADD COLUMN input_tokens BIGINT;
ALTER TABLE request_events ADD COLUMN output_tokens BIGINT;
ALTER TABLE request_events ADD COLUMN cache_read_tokens BIGINT;
ALTER TABLE request_events ADD COLUMN cache_write_tokens BIGINT;
ALTER TABLE request_events ADD COLUMN reasoning_tokens BIGINT;
ALTER TABLE request_events ADD COLUMN usage_exact BIGINT;
ALTER TABLE request_events ADD COLUMN cost_nanos BIGINT;
-- Usage queries (`GET /v1/usage`) read one account's metered events in a time range. Partial, so
-- the unmetered majority of a passthrough-heavy installation costs the index nothing.
CREATE INDEX request_events_usage ON request_events(account_id, time_ms) WHERE input_tokens IS NOT NULL;
