-- Router gateways: a gateway config of `type: router` keeps its backends, strategy, fallback,
-- attempts, timeout and aliases here as the store's JSON; NULL for a plain (passthrough) config.
-- A router token names no secret of its own (each backend names its own), so a token's
-- secret_id may now be NULL. SQLite cannot drop a NOT NULL constraint: the table is rebuilt
-- with the same columns (0001's plus 0005's scope), rows and indexes. No table references it.
ALTER TABLE gateway_configs ADD COLUMN router TEXT;

CREATE TABLE gateway_tokens_new (
    id                 TEXT PRIMARY KEY,
    account_id         TEXT NOT NULL REFERENCES accounts(id),
    devbox_id          TEXT NOT NULL REFERENCES devboxes(id),
    gateway_config_id  TEXT NOT NULL REFERENCES gateway_configs(id),
    secret_id          TEXT REFERENCES secrets(id),
    prefix             TEXT,
    digest             TEXT NOT NULL UNIQUE,
    create_time_ms     INTEGER NOT NULL,
    expire_time_ms     INTEGER,
    revoke_time_ms     INTEGER,
    scope              TEXT
);
INSERT INTO gateway_tokens_new (id, account_id, devbox_id, gateway_config_id, secret_id, prefix, digest, create_time_ms, expire_time_ms, revoke_time_ms, scope)
    SELECT id, account_id, devbox_id, gateway_config_id, secret_id, prefix, digest, create_time_ms, expire_time_ms, revoke_time_ms, scope FROM gateway_tokens;
DROP TABLE gateway_tokens;
ALTER TABLE gateway_tokens_new RENAME TO gateway_tokens;
CREATE INDEX gateway_tokens_devbox ON gateway_tokens(devbox_id);
CREATE INDEX gateway_tokens_gateway ON gateway_tokens(gateway_config_id) WHERE revoke_time_ms IS NULL;
CREATE INDEX gateway_tokens_secret ON gateway_tokens(secret_id) WHERE revoke_time_ms IS NULL;
