-- The engine: card numbers presented without a facility code, and the expiry sweep.

-- HMAC of the card number alone, for readers that send no facility code. Like lookup_hash, never
-- the number itself.
ALTER TABLE credentials ADD COLUMN number_hash bytea;
CREATE INDEX credentials_number_idx ON credentials (org_id, number_hash)
    WHERE revoked_at IS NULL AND number_hash IS NOT NULL;

-- Passes the expiry sweep will end, soonest first.
CREATE INDEX passes_expiry_idx ON passes (valid_to) WHERE status IN ('active', 'suspended');
