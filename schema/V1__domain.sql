-- Portcullis domain schema, version 1.
--
-- Tenancy: every tenant-owned table carries `org_id`, and references between tenant rows are
-- composite foreign keys on (org_id, id), so a row can never point at another organization's row,
-- whatever the application does. Every tenant-scoped lookup has an index that starts with org_id.
--
-- Secrets: passwords are argon2 PHC strings; refresh tokens, API keys, card numbers and PINs are
-- stored only as HMAC-SHA-256 under a server pepper (`*_hash bytea`). QR seeds are derived from the
-- server key and the credential id and are never stored.

CREATE TABLE organizations (
    id               uuid PRIMARY KEY,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    slug             text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    timezone         text NOT NULL,
    access_mode      text NOT NULL DEFAULT 'active'
                     CHECK (access_mode IN ('active', 'read_only', 'blocked')),
    lockdown         boolean NOT NULL DEFAULT false,
    revoked_may_exit boolean NOT NULL DEFAULT true,
    version          integer NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE departments (
    id         uuid PRIMARY KEY,
    org_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id),
    UNIQUE (org_id, name)
);

-- Users are global (one login), their roles are per organization (memberships).
CREATE TABLE users (
    id                  uuid PRIMARY KEY,
    email               text NOT NULL CHECK (email = lower(email) AND position('@' IN email) > 1),
    name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    password_hash       text NOT NULL,
    is_platform_admin   boolean NOT NULL DEFAULT false,
    disabled_at         timestamptz,
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (email)
);

CREATE TABLE memberships (
    org_id        uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role          text NOT NULL CHECK (role IN ('org_admin', 'security_officer', 'operator',
                                                'host', 'guest', 'developer')),
    department_id uuid,
    disabled_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id),
    FOREIGN KEY (org_id, department_id) REFERENCES departments (org_id, id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

-- Operator sessions behind refresh tokens. Soft-revoked; expired rows are swept.
CREATE TABLE sessions (
    id                 uuid PRIMARY KEY,
    user_id            uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_token_hash bytea NOT NULL UNIQUE,
    created_at         timestamptz NOT NULL DEFAULT now(),
    last_used_at       timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    revoked_at         timestamptz,
    revoke_reason      text,
    client_addr        inet,
    user_agent         text
);
CREATE INDEX sessions_user_idx ON sessions (user_id) WHERE revoked_at IS NULL;
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

CREATE TABLE hosts (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id       uuid REFERENCES users (id) ON DELETE SET NULL,
    department_id uuid,
    name          text NOT NULL,
    email         text,
    phone         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, department_id) REFERENCES departments (org_id, id)
);
CREATE INDEX hosts_org_idx ON hosts (org_id, name);
CREATE INDEX hosts_user_idx ON hosts (user_id);

CREATE TABLE visitors (
    id         uuid PRIMARY KEY,
    org_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name       text NOT NULL,
    email      text,
    phone      text,
    company    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id)
);
CREATE INDEX visitors_org_idx ON visitors (org_id, name);

CREATE TABLE appointments (
    id         uuid PRIMARY KEY,
    org_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    host_id    uuid NOT NULL,
    visitor_id uuid NOT NULL,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL CHECK (ends_at > starts_at),
    purpose    text,
    status     text NOT NULL DEFAULT 'scheduled'
               CHECK (status IN ('scheduled', 'checked_in', 'completed', 'cancelled', 'no_show')),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, host_id) REFERENCES hosts (org_id, id),
    FOREIGN KEY (org_id, visitor_id) REFERENCES visitors (org_id, id)
);
CREATE INDEX appointments_org_time_idx ON appointments (org_id, starts_at);
CREATE INDEX appointments_host_idx ON appointments (org_id, host_id);
CREATE INDEX appointments_visitor_idx ON appointments (org_id, visitor_id);

CREATE TABLE zones (
    id         uuid PRIMARY KEY,
    org_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    capacity   integer CHECK (capacity > 0),
    version    integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id),
    UNIQUE (org_id, name)
);

CREATE TABLE gates (
    id         uuid PRIMARY KEY,
    org_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    zone_id    uuid NOT NULL,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    direction  text NOT NULL CHECK (direction IN ('in', 'out', 'both')),
    fail_mode  text NOT NULL DEFAULT 'closed' CHECK (fail_mode IN ('closed', 'open')),
    mode       text NOT NULL DEFAULT 'normal' CHECK (mode IN ('normal', 'locked_down', 'free_passage')),
    open_ms    integer NOT NULL DEFAULT 3000 CHECK (open_ms BETWEEN 100 AND 60000),
    version    integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id),
    UNIQUE (org_id, name),
    FOREIGN KEY (org_id, zone_id) REFERENCES zones (org_id, id)
);
CREATE INDEX gates_zone_idx ON gates (org_id, zone_id);

CREATE TABLE access_rules (
    id                    uuid PRIMARY KEY,
    org_id                uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name                  text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- ISO weekdays, 1 = Monday .. 7 = Sunday.
    weekdays              smallint[] NOT NULL DEFAULT '{1,2,3,4,5,6,7}'
                          CHECK (weekdays <@ '{1,2,3,4,5,6,7}'::smallint[]),
    -- [{"from": "08:00", "to": "19:00"}] in the organization's time zone; empty = all day.
    time_windows          jsonb NOT NULL DEFAULT '[]',
    escort_required       boolean NOT NULL DEFAULT false,
    anti_passback         text NOT NULL DEFAULT 'off' CHECK (anti_passback IN ('off', 'hard', 'timed')),
    anti_passback_minutes integer CHECK (anti_passback_minutes > 0),
    version               integer NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id),
    UNIQUE (org_id, name),
    CHECK (anti_passback <> 'timed' OR anti_passback_minutes IS NOT NULL)
);

CREATE TABLE access_rule_zones (
    org_id  uuid NOT NULL,
    rule_id uuid NOT NULL,
    zone_id uuid NOT NULL,
    PRIMARY KEY (org_id, rule_id, zone_id),
    FOREIGN KEY (org_id, rule_id) REFERENCES access_rules (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, zone_id) REFERENCES zones (org_id, id) ON DELETE CASCADE
);
CREATE INDEX access_rule_zones_zone_idx ON access_rule_zones (org_id, zone_id);

CREATE TABLE holidays (
    id     uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    date   date NOT NULL,
    name   text NOT NULL,
    UNIQUE (org_id, date)
);

CREATE TABLE passes (
    id              uuid PRIMARY KEY,
    org_id          uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    access_rule_id  uuid NOT NULL,
    appointment_id  uuid,
    visitor_id      uuid,
    holder_name     text NOT NULL CHECK (length(holder_name) BETWEEN 1 AND 200),
    type            text NOT NULL CHECK (type IN ('single', 'multi', 'group')),
    max_uses        integer CHECK (max_uses > 0),
    group_size      integer NOT NULL DEFAULT 1 CHECK (group_size BETWEEN 1 AND 1000),
    uses_count      integer NOT NULL DEFAULT 0 CHECK (uses_count >= 0),
    status          text NOT NULL DEFAULT 'active'
                    CHECK (status IN ('draft', 'active', 'suspended', 'revoked', 'expired')),
    valid_from      timestamptz NOT NULL,
    valid_to        timestamptz NOT NULL CHECK (valid_to > valid_from),
    inside          boolean NOT NULL DEFAULT false,
    last_gate_id    uuid,
    last_passage_at timestamptz,
    escort_pass_id  uuid,
    issued_by       uuid REFERENCES users (id) ON DELETE SET NULL,
    revoked_at      timestamptz,
    revoked_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    revoke_reason   text,
    version         integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, access_rule_id) REFERENCES access_rules (org_id, id),
    FOREIGN KEY (org_id, appointment_id) REFERENCES appointments (org_id, id),
    FOREIGN KEY (org_id, visitor_id) REFERENCES visitors (org_id, id),
    FOREIGN KEY (org_id, last_gate_id) REFERENCES gates (org_id, id) ON DELETE SET NULL (last_gate_id),
    FOREIGN KEY (org_id, escort_pass_id) REFERENCES passes (org_id, id) ON DELETE SET NULL (escort_pass_id),
    CHECK (type <> 'multi' OR max_uses IS NOT NULL),
    CHECK (type <> 'group' OR group_size > 1)
);
-- Live passes are loaded into actors at start; expiry sweeps walk valid_to.
CREATE INDEX passes_org_status_idx ON passes (org_id, status, valid_to);
CREATE INDEX passes_org_created_idx ON passes (org_id, created_at DESC, id DESC);
CREATE INDEX passes_appointment_idx ON passes (org_id, appointment_id) WHERE appointment_id IS NOT NULL;

CREATE TABLE credentials (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL,
    pass_id       uuid NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('qr', 'card', 'pin')),
    card_format   text CHECK (card_format IN ('h10301', 'h10306', 'h10304', 'h10302')),
    -- HMAC-SHA-256 of the normalized credential under the server pepper: what the index looks up.
    lookup_hash   bytea NOT NULL,
    -- Last digits of a card number, for operators to recognise a card; never the whole number.
    display_hint  text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    FOREIGN KEY (org_id, pass_id) REFERENCES passes (org_id, id) ON DELETE CASCADE,
    CHECK ((kind = 'card') = (card_format IS NOT NULL))
);
CREATE UNIQUE INDEX credentials_lookup_idx ON credentials (org_id, kind, lookup_hash)
    WHERE revoked_at IS NULL;
CREATE INDEX credentials_pass_idx ON credentials (org_id, pass_id);

-- The journal of every decision, allowed or denied.
CREATE TABLE checkins (
    id         uuid PRIMARY KEY,
    org_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    gate_id    uuid NOT NULL,
    pass_id    uuid,
    direction  text NOT NULL CHECK (direction IN ('in', 'out')),
    decision   text NOT NULL CHECK (decision IN ('allow', 'deny')),
    reason     text NOT NULL,
    source     text NOT NULL,
    credential_kind text CHECK (credential_kind IN ('qr', 'card', 'pin')),
    decided_at timestamptz NOT NULL,
    FOREIGN KEY (org_id, gate_id) REFERENCES gates (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, pass_id) REFERENCES passes (org_id, id) ON DELETE CASCADE
);
CREATE INDEX checkins_org_time_idx ON checkins (org_id, decided_at DESC, id DESC);
CREATE INDEX checkins_gate_time_idx ON checkins (org_id, gate_id, decided_at DESC);
CREATE INDEX checkins_pass_time_idx ON checkins (org_id, pass_id, decided_at DESC) WHERE pass_id IS NOT NULL;

-- Pass state changes (issue, consume, revoke, suspend, resume, extend, expire), in order.
CREATE TABLE pass_events (
    id         bigserial PRIMARY KEY,
    org_id     uuid NOT NULL,
    pass_id    uuid NOT NULL,
    kind       text NOT NULL,
    status     text NOT NULL,
    uses_count integer NOT NULL,
    actor_id   uuid,
    reason     text,
    at         timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (org_id, pass_id) REFERENCES passes (org_id, id) ON DELETE CASCADE
);
CREATE INDEX pass_events_pass_idx ON pass_events (org_id, pass_id, id);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    org_id       uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    env          text NOT NULL CHECK (env IN ('live', 'test')),
    -- The first characters of the key (`pcl_live_ab12`), to tell keys apart in listings.
    prefix       text NOT NULL,
    key_hash     bytea NOT NULL UNIQUE,
    scopes       text[] NOT NULL,
    gate_ids     uuid[] NOT NULL DEFAULT '{}',
    created_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    rotated_from uuid REFERENCES api_keys (id) ON DELETE SET NULL
);
CREATE INDEX api_keys_org_idx ON api_keys (org_id, created_at DESC);

-- Security-relevant actions. Never secrets, never personal payloads.
CREATE TABLE audit_log (
    id            bigserial PRIMARY KEY,
    org_id        uuid REFERENCES organizations (id) ON DELETE SET NULL,
    actor_user_id uuid REFERENCES users (id) ON DELETE SET NULL,
    actor_key_id  uuid REFERENCES api_keys (id) ON DELETE SET NULL,
    action        text NOT NULL,
    target_type   text,
    target_id     text,
    client_addr   inet,
    details       jsonb NOT NULL DEFAULT '{}',
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_org_idx ON audit_log (org_id, at DESC, id DESC);

-- Events to publish beyond this node (Redis fan-out, webhooks), written in the same transaction
-- as the change they describe.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    org_id       uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    topic        text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_org_idx ON outbox (org_id, id);
