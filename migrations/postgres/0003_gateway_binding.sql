-- A gateway config's binding: a MAC under the master key over its account, id, endpoint, auth
-- mechanism and custom headers, made by the control plane on every write and checked by the
-- data plane before it sends a credential anywhere (see docs/security.md). NULL for rows written
-- before this migration: the data plane refuses them until they are saved again through the API
-- or re-bound by `airlock keys rewrap --bind-unbound`.
ALTER TABLE gateway_configs ADD COLUMN binding BYTEA;
