-- Events out: a transactional outbox, and webhook endpoints with their deliveries.

-- V1 reserved an `outbox` that nothing ever wrote to: it is replaced by this one.
DROP TABLE outbox;

-- Every domain event, written in the transaction of the change it describes (by the use case, or
-- by the journal in the commit of the records it derives from). Payloads hold no secret and no
-- hash. `txid`: the writing transaction. The dispatcher reads events in (txid, seq) order up to
-- the oldest transaction still running (pg_snapshot_xmin): every event before that point is
-- committed (or gone with its rollback) and no new one can appear there, so a cursor over
-- (txid, seq) skips none, whatever order transactions commit in — and no event row is updated.
CREATE TABLE outbox (
    seq         bigserial PRIMARY KEY,
    id          uuid NOT NULL UNIQUE,
    org_id      uuid NOT NULL,
    type        text NOT NULL,
    payload     jsonb NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX outbox_txid_seq_idx ON outbox (txid, seq);

-- How far the dispatch has gone (one row; the node dispatching holds it locked).
CREATE TABLE outbox_cursor (
    id   smallint PRIMARY KEY CHECK (id = 1),
    txid xid8 NOT NULL,
    seq  bigint NOT NULL
);
INSERT INTO outbox_cursor VALUES (1, '0', 0);
CREATE INDEX outbox_org_time_idx ON outbox (org_id, occurred_at);

CREATE TABLE webhook_endpoints (
    org_id          uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id              uuid NOT NULL,
    url             text NOT NULL,
    description     text,
    -- Event types delivered; '*' for all.
    event_types     text[] NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text,
    -- The signing secret, sealed under the server pepper (shown once, never logged); after a
    -- rotation the previous one signs too until previous_until.
    secret_sealed   bytea NOT NULL,
    previous_sealed bytea,
    previous_until  timestamptz,
    -- Since when every delivery has failed (NULL: the last one succeeded).
    failing_since   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id)
);

-- One event for one endpoint: its state and when it is tried next.
CREATE TABLE webhook_deliveries (
    org_id      uuid NOT NULL,
    endpoint_id uuid NOT NULL,
    event_id    uuid NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    state       text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    next_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, endpoint_id, event_id),
    FOREIGN KEY (org_id, endpoint_id) REFERENCES webhook_endpoints (org_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_at, seq) WHERE state = 'pending';

-- Every attempt, for the delivery log.
CREATE TABLE webhook_attempts (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL,
    endpoint_id   uuid NOT NULL,
    event_id      uuid NOT NULL,
    event_type    text NOT NULL,
    attempt       integer NOT NULL,
    at            timestamptz NOT NULL,
    status_code   integer,
    latency_ms    integer NOT NULL,
    outcome       text NOT NULL CHECK (outcome IN ('delivered', 'failed', 'timeout', 'unreachable', 'refused')),
    -- The first bytes of the answer (or why there was none).
    response      text,
    next_retry_at timestamptz,
    FOREIGN KEY (org_id, endpoint_id) REFERENCES webhook_endpoints (org_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_attempts_endpoint_idx ON webhook_attempts (org_id, endpoint_id, id DESC);
