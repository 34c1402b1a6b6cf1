-- An OSDP reader's secure channel: its SCBK, sealed at rest (AES-256-GCM under a key derived from
-- the server pepper; never returned, never logged), or install mode (the default SCBK-D, only
-- when the binding asks for it).
ALTER TABLE gate_readers
    ADD COLUMN scbk_sealed bytea,
    ADD COLUMN install_mode boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT gate_readers_one_key CHECK (NOT (install_mode AND scbk_sealed IS NOT NULL));
