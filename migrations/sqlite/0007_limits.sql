-- Budgets and rate limits (docs/limits.md).
--
-- limit_settings: the limits object of a devbox, a gateway config or an account, as the store's
-- JSON ({"requests_per_minute": 10, "cost_usd_per_day": 1500000000}, costs in nano-dollars).
-- One table for the three scopes, so that a data plane follows every change with one query on
-- update_time_ms. A scope whose limits were removed keeps its row with '{}'.
CREATE TABLE limit_settings (
    scope_kind      TEXT NOT NULL CHECK (scope_kind IN ('account', 'devbox', 'gateway')),
    scope_id        TEXT NOT NULL,
    account_id      TEXT NOT NULL REFERENCES accounts(id),
    limits          TEXT NOT NULL,
    update_time_ms  INTEGER NOT NULL,
    PRIMARY KEY (scope_kind, scope_id)
);
CREATE INDEX limit_settings_update ON limit_settings(update_time_ms);

-- limit_counters: the ledger. One row per limit of a scope per window (window_start_ms 0 for
-- the limits that never reset). used = what replicas leased (spent or still held) plus the
-- usage charged beyond leases, minus what they returned. last_grant is what the last lease took
-- (read back with RETURNING, since both databases evaluate SET against the row before it).
CREATE TABLE limit_counters (
    scope_kind       TEXT NOT NULL,
    scope_id         TEXT NOT NULL,
    kind             TEXT NOT NULL,
    window_start_ms  INTEGER NOT NULL,
    used             INTEGER NOT NULL,
    last_grant       INTEGER NOT NULL,
    PRIMARY KEY (scope_kind, scope_id, kind, window_start_ms)
);
