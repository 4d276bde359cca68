-- Router gateways: a gateway config of `type: router` keeps its backends, strategy, fallback,
-- attempts, timeout and aliases here as the store's JSON; NULL for a plain (passthrough) config.
-- A router token names no secret of its own (each backend names its own), so a token's
-- secret_id may now be NULL.
ALTER TABLE gateway_configs ADD COLUMN router TEXT;
ALTER TABLE gateway_tokens ALTER COLUMN secret_id DROP NOT NULL;
