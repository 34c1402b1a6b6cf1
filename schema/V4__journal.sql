-- Journal batches that hold rows which would be duplicated if written twice (pass events, audit
-- rows), by the id the journal gave them. A batch is written with its id in one transaction, so
-- when the journal replays its spool after an outage (a commit whose answer was lost may have
-- happened), a batch whose id is here is skipped. Rows older than a week are pruned at start.
CREATE TABLE journal_batches (
    id          uuid PRIMARY KEY,
    written_at  timestamptz NOT NULL DEFAULT now()
);
