-- Service-client secrets are generated 256-bit values: stored as SHA-256 (`sha256:<hex>`)
-- so client authentication costs a hash, not argon2 (issue 11, finding 3). Clients
-- created before keep their argon2id hash until their first successful check.
ALTER TABLE service_clients
    DROP CONSTRAINT service_clients_secret_hash_check,
    ADD CONSTRAINT service_clients_secret_hash_check
        CHECK (secret_hash LIKE '$argon2id$%' OR secret_hash ~ '^sha256:[0-9a-f]{64}$');
