-- A devbox's tokens are listed with their last use and use count, read from the request events:
-- an index by token keeps that a lookup, not a scan.
CREATE INDEX request_events_token ON request_events(token_id, time_ms) WHERE token_id IS NOT NULL;
