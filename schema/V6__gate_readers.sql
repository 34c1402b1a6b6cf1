-- An OSDP reader bound to a gate: the engine polls it as Control Panel over a serial-device
-- server's TCP endpoint and turns its card reads into decisions for the gate.
CREATE TABLE gate_readers (
    org_id      uuid NOT NULL,
    gate_id     uuid NOT NULL,
    protocol    text NOT NULL CHECK (protocol IN ('osdp')),
    endpoint    text NOT NULL,
    address     smallint NOT NULL CHECK (address BETWEEN 0 AND 126),
    output      smallint NOT NULL DEFAULT 0 CHECK (output BETWEEN 0 AND 255),
    card_format text CHECK (card_format IN ('h10301', 'h10306', 'h10304', 'h10302')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, gate_id),
    FOREIGN KEY (org_id, gate_id) REFERENCES gates (org_id, id) ON DELETE CASCADE
);
-- One reader per address on a bus.
CREATE UNIQUE INDEX gate_readers_bus_address_idx ON gate_readers (endpoint, address);
