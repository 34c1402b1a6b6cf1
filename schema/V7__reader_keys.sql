-- An OSDP reader's secure channel: its SCBK, sealed at rest (AES-256-GCM under a key derived from
-- the server pepper; never returned, never logged), and/or install mode (the default SCBK-D, only
-- when the binding asks for it). Both: install mode once, to give the reader that key; the engine
-- clears install_mode when the reader has taken it.
ALTER TABLE gate_readers
    ADD COLUMN scbk_sealed bytea,
    ADD COLUMN install_mode boolean NOT NULL DEFAULT false;
