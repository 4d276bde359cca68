-- Airlock's schema on SQLite (the same as Postgres', with SQLite's type names). Ids are prefixed ULID strings; times are Unix milliseconds.
-- Secret values exist here only sealed (envelope-encrypted, bound to account, id and version);
-- tokens and API keys only as SHA-256 digests.

CREATE TABLE accounts (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    operator        INTEGER NOT NULL DEFAULT 0,
    create_time_ms  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id),
    name            TEXT NOT NULL,
    scope           TEXT NOT NULL CHECK (scope IN ('admin', 'launcher')),
    digest          TEXT NOT NULL UNIQUE,
    create_time_ms  INTEGER NOT NULL,
    revoke_time_ms  INTEGER
);
CREATE INDEX api_keys_account ON api_keys(account_id, id);

CREATE TABLE secrets (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id),
    name            TEXT NOT NULL,
    version         INTEGER NOT NULL,
    sealed          BLOB NOT NULL,
    key_id          INTEGER NOT NULL,
    create_time_ms  INTEGER NOT NULL,
    update_time_ms  INTEGER NOT NULL,
    delete_time_ms  INTEGER
);
CREATE UNIQUE INDEX secrets_live_name ON secrets(account_id, name) WHERE delete_time_ms IS NULL;
CREATE INDEX secrets_account ON secrets(account_id, id);

CREATE TABLE gateway_configs (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id),
    name            TEXT NOT NULL,
    endpoint        TEXT NOT NULL,
    auth_type       TEXT NOT NULL,
    auth_key        TEXT,
    custom_headers  TEXT NOT NULL,
    description     TEXT,
    create_time_ms  INTEGER NOT NULL,
    update_time_ms  INTEGER NOT NULL,
    delete_time_ms  INTEGER
);
CREATE INDEX gateway_configs_account ON gateway_configs(account_id, id);
CREATE INDEX gateway_configs_name ON gateway_configs(account_id, name);

CREATE TABLE devboxes (
    id                TEXT PRIMARY KEY,
    account_id        TEXT NOT NULL REFERENCES accounts(id),
    name              TEXT,
    status            TEXT NOT NULL CHECK (status IN ('running', 'shutdown')),
    source_addresses  TEXT NOT NULL,
    metadata          TEXT NOT NULL,
    create_time_ms    INTEGER NOT NULL,
    update_time_ms    INTEGER NOT NULL,
    shutdown_time_ms  INTEGER
);
CREATE INDEX devboxes_account ON devboxes(account_id, id);

CREATE TABLE gateway_tokens (
    id                 TEXT PRIMARY KEY,
    account_id         TEXT NOT NULL REFERENCES accounts(id),
    devbox_id          TEXT NOT NULL REFERENCES devboxes(id),
    gateway_config_id  TEXT NOT NULL REFERENCES gateway_configs(id),
    secret_id          TEXT NOT NULL REFERENCES secrets(id),
    prefix             TEXT,
    digest             TEXT NOT NULL UNIQUE,
    create_time_ms     INTEGER NOT NULL,
    expire_time_ms     INTEGER,
    revoke_time_ms     INTEGER
);
CREATE INDEX gateway_tokens_devbox ON gateway_tokens(devbox_id);
CREATE INDEX gateway_tokens_gateway ON gateway_tokens(gateway_config_id) WHERE revoke_time_ms IS NULL;
CREATE INDEX gateway_tokens_secret ON gateway_tokens(secret_id) WHERE revoke_time_ms IS NULL;

CREATE TABLE idempotency_keys (
    account_id      TEXT NOT NULL,
    key             TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    status          INTEGER,
    response        TEXT,
    create_time_ms  INTEGER NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_keys_time ON idempotency_keys(create_time_ms);

CREATE TABLE audit_events (
    id            TEXT PRIMARY KEY,
    time_ms       INTEGER NOT NULL,
    account_id    TEXT NOT NULL,
    api_key_id    TEXT,
    action        TEXT NOT NULL,
    object_type   TEXT NOT NULL,
    object_id     TEXT NOT NULL,
    detail        TEXT NOT NULL,
    client_addr   TEXT
);
CREATE INDEX audit_events_account ON audit_events(account_id, id);

CREATE TABLE request_events (
    id                 TEXT PRIMARY KEY,
    time_ms            INTEGER NOT NULL,
    account_id         TEXT,
    devbox_id          TEXT,
    gateway_config_id  TEXT,
    token_id           TEXT,
    secret_id          TEXT,
    secret_version     INTEGER,
    method             TEXT NOT NULL,
    path               TEXT NOT NULL,
    status             INTEGER NOT NULL,
    upstream_status    INTEGER,
    latency_us         INTEGER NOT NULL,
    ttfb_us            INTEGER,
    bytes_in           INTEGER NOT NULL,
    bytes_out          INTEGER NOT NULL,
    client_addr        TEXT NOT NULL,
    error_code         TEXT
);
CREATE INDEX request_events_account ON request_events(account_id, id);
