-- A scoped token's allowed methods and path prefixes (create_gateway_token's allowed_methods and
-- allowed_path_prefixes), as the store's JSON: {"methods": [...], "path_prefixes": [...]}.
-- NULL: an unscoped token.
ALTER TABLE gateway_tokens ADD COLUMN scope TEXT;
