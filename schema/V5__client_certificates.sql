-- A device may authenticate with a TLS client certificate instead of a key's secret: the
-- certificate's SHA-256 fingerprint (hex) is registered on the API key it acts as. One live key
-- per certificate; a rotated key carries it over (the old one is revoked first).
ALTER TABLE api_keys ADD COLUMN client_cert_sha256 text
    CHECK (client_cert_sha256 ~ '^[0-9a-f]{64}$');
CREATE UNIQUE INDEX api_keys_client_cert_idx ON api_keys (client_cert_sha256)
    WHERE client_cert_sha256 IS NOT NULL AND revoked_at IS NULL;
