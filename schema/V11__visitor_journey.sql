-- The visitor journey: visitors (personal fields sealed), appointments, visits, the deny list and
-- guest access. V1's sketches of hosts, visitors and appointments were never written by any
-- version; they are replaced (a host is a member with the `host` role).

DROP TABLE appointments CASCADE;
DROP TABLE visitors CASCADE;
DROP TABLE hosts CASCADE;

ALTER TABLE organizations
    ADD COLUMN visitor_retention_days integer NOT NULL DEFAULT 30 CHECK (visitor_retention_days BETWEEN 1 AND 3650),
    -- A visitor's pass opens this long before the meeting and closes this long after it.
    ADD COLUMN visit_margin_minutes   integer NOT NULL DEFAULT 30 CHECK (visit_margin_minutes BETWEEN 0 AND 1440),
    -- The access rule of visitors' passes when the appointment names none.
    ADD COLUMN visitor_rule_id        uuid,
    -- What the guest page shows.
    ADD COLUMN address                text,
    ADD COLUMN guest_instructions     text,
    -- Visitors still checked in this long after their meeting ends are checked out.
    ADD COLUMN auto_checkout_minutes  integer NOT NULL DEFAULT 120 CHECK (auto_checkout_minutes BETWEEN 0 AND 10080),
    -- And at the end of the organization's day (local time), when set.
    ADD COLUMN day_ends_at            time,
    ADD FOREIGN KEY (id, visitor_rule_id) REFERENCES access_rules (org_id, id) ON DELETE SET NULL (visitor_rule_id);

-- Departments form a tree; a host belongs to one and says when they are in.
ALTER TABLE departments
    ADD COLUMN parent_id uuid,
    ADD FOREIGN KEY (org_id, parent_id) REFERENCES departments (org_id, id) ON DELETE SET NULL (parent_id);
-- {weekdays: [1..7], time_windows: [{from, to}]} in the organization's time zone.
ALTER TABLE memberships ADD COLUMN presence jsonb;

CREATE TABLE visitors (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- Name, e-mail, phone, company, document number, photo, consents: one AES-256-GCM box under a
    -- key derived from the server secret; `key_version` names the key.
    sealed        bytea NOT NULL,
    key_version   smallint NOT NULL,
    -- Keyed hashes (HMAC under the server secret) for recognition and search, never the values.
    email_hash    bytea,
    phone_hash    bytea,
    document_hash bytea,
    name_hash     bytea NOT NULL,
    name_words    bytea[] NOT NULL DEFAULT '{}',
    last_visit_at timestamptz,
    created_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id)
);
-- A returning visitor is recognised by their e-mail.
CREATE UNIQUE INDEX visitors_email_idx ON visitors (org_id, email_hash) WHERE email_hash IS NOT NULL;
CREATE INDEX visitors_words_idx ON visitors USING gin (name_words);

CREATE TABLE appointments (
    id             uuid PRIMARY KEY,
    org_id         uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    host_id        uuid NOT NULL REFERENCES users (id),
    title          text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    room           text CHECK (length(room) <= 200),
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL CHECK (ends_at > starts_at),
    -- The RRULE subset: FREQ=DAILY|WEEKLY, INTERVAL, BYDAY (weekly), UNTIL or COUNT.
    rrule          text,
    access_rule_id uuid,
    status         text NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'cancelled', 'completed')),
    created_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, access_rule_id) REFERENCES access_rules (org_id, id)
);
CREATE INDEX appointments_host_idx ON appointments (org_id, host_id, starts_at);

-- One visitor at one occurrence of an appointment (walk-ins have no appointment).
CREATE TABLE visits (
    id             uuid PRIMARY KEY,
    org_id         uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    appointment_id uuid,
    visitor_id     uuid NOT NULL,
    host_id        uuid NOT NULL REFERENCES users (id),
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL CHECK (ends_at > starts_at),
    status         text NOT NULL CHECK (status IN ('invited', 'registered', 'arrived', 'checked_in', 'checked_out',
                                                   'cancelled', 'no_show', 'denied')),
    pass_id        uuid,
    denied_reason  text,
    -- A security officer judged the deny-list match a false one.
    deny_cleared_by uuid REFERENCES users (id) ON DELETE SET NULL,
    arrived_at     timestamptz,
    checked_in_at  timestamptz,
    checked_out_at timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, appointment_id) REFERENCES appointments (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, visitor_id) REFERENCES visitors (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, pass_id) REFERENCES passes (org_id, id)
);
CREATE INDEX visits_day_idx ON visits (org_id, starts_at);
CREATE INDEX visits_host_idx ON visits (org_id, host_id, starts_at);
CREATE INDEX visits_visitor_idx ON visits (org_id, visitor_id);
CREATE INDEX visits_open_idx ON visits (ends_at) WHERE status IN ('invited', 'registered', 'arrived', 'checked_in');

ALTER TABLE passes
    ADD FOREIGN KEY (org_id, visitor_id) REFERENCES visitors (org_id, id) ON DELETE SET NULL (visitor_id),
    ADD FOREIGN KEY (org_id, appointment_id) REFERENCES appointments (org_id, id) ON DELETE SET NULL (appointment_id);

-- Who may not come in: matched exactly (case-insensitive) on a keyed hash of the value.
CREATE TABLE deny_list (
    id         uuid PRIMARY KEY,
    org_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind IN ('name', 'email', 'phone', 'document')),
    value_hash bytea NOT NULL,
    -- The value itself, sealed, for the security officers who list the entries.
    sealed     bytea NOT NULL,
    key_version smallint NOT NULL,
    reason     text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    added_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, kind, value_hash)
);

-- A guest's ways in: a magic link (single use), a one-time code (single use), and the session
-- either opens. Only hashes are stored.
CREATE TABLE guest_tokens (
    token_hash bytea PRIMARY KEY,
    org_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    visitor_id uuid NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('link', 'code', 'session')),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (org_id, visitor_id) REFERENCES visitors (org_id, id) ON DELETE CASCADE
);
CREATE INDEX guest_tokens_expiry_idx ON guest_tokens (expires_at);
CREATE INDEX guest_tokens_visitor_idx ON guest_tokens (org_id, visitor_id);

