-- What receiver/auth.py runs: the key set ingest and reads are checked against, and `glia keys`.

-- name: active_keys
SELECT key_hash, scope FROM api_keys WHERE revoked_at IS NULL;

-- name: create_key
-- No row back when an active key has this name already (api_keys_active_name_idx).
INSERT INTO api_keys (name, scope, key_hash, key_prefix) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
RETURNING key_id, name, scope, key_prefix, created_at;

-- name: list_keys
SELECT key_id, name, scope, key_prefix, created_at, revoked_at FROM api_keys
WHERE $1 OR revoked_at IS NULL
ORDER BY key_id;

-- name: revoke_key
-- By name or by id; revoking an already revoked key changes nothing.
UPDATE api_keys SET revoked_at = now()
WHERE revoked_at IS NULL AND (name = $1 OR key_id::text = $1)
RETURNING key_id, name, scope;
