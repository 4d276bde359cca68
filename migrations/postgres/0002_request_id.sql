-- The request id (`x-request-id`) of a proxied request: the client's own when it sent a usable
-- one, else the one Airlock generated. Null for rows written before this migration.
ALTER TABLE request_events ADD COLUMN request_id TEXT;
