-- Controllers that decide by themselves (UHPPOTE UT0311): the engine keeps their card tables in
-- step with the passes allowed at their gates, and hears their swipes.

-- A controller needs the card numbers themselves, which the lookup hashes cannot give back: a
-- card credential's number is kept sealed (AES-256-GCM under a key derived from the server pepper;
-- never returned, never logged), opened only to be sent to a controller.
ALTER TABLE credentials ADD COLUMN card_sealed bytea;

CREATE TABLE controllers (
    org_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id          uuid NOT NULL,
    protocol    text NOT NULL CHECK (protocol IN ('uhppote')),
    endpoint    text NOT NULL,
    serial      bigint NOT NULL CHECK (serial BETWEEN 1 AND 4294967295),
    -- When the engine last emptied the controller's table to own it (NULL: not yet).
    cleared_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id)
);
-- One controller per serial number.
CREATE UNIQUE INDEX controllers_serial_idx ON controllers (serial);

-- Which gate each of its doors (1-4) serves.
CREATE TABLE controller_doors (
    org_id        uuid NOT NULL,
    controller_id uuid NOT NULL,
    door          smallint NOT NULL CHECK (door BETWEEN 1 AND 4),
    gate_id       uuid NOT NULL,
    PRIMARY KEY (org_id, controller_id, door),
    FOREIGN KEY (org_id, controller_id) REFERENCES controllers (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, gate_id) REFERENCES gates (org_id, id) ON DELETE CASCADE
);
CREATE INDEX controller_doors_gate_idx ON controller_doors (org_id, gate_id);

-- What the engine may assume a controller holds: a card is written here before it is sent, and
-- removed only once the controller has confirmed its deletion. So this is never less than the
-- controller's table, and a revocation can never be forgotten across a restart: what must change
-- is the difference between this and the passes allowed now.
CREATE TABLE controller_cards (
    org_id        uuid NOT NULL,
    controller_id uuid NOT NULL,
    card_number   bigint NOT NULL,
    valid_from    date NOT NULL,
    valid_to      date NOT NULL,
    -- Bit d-1 set: the card opens door d.
    doors         smallint NOT NULL,
    -- Whether the controller confirmed it (false: sent, or about to be, and not yet confirmed).
    confirmed     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (org_id, controller_id, card_number),
    FOREIGN KEY (org_id, controller_id) REFERENCES controllers (org_id, id) ON DELETE CASCADE
);
