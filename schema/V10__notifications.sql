-- Notifications: e-mail and in-app, made from the outbox's events for the people concerned.

-- The language of an organization's notifications.
ALTER TABLE organizations ADD COLUMN locale text NOT NULL DEFAULT 'en' CHECK (locale IN ('en', 'ru'));

-- In-app notifications, each for one user.
CREATE TABLE notifications (
    id         uuid PRIMARY KEY,
    org_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    event_id   uuid NOT NULL,
    type       text NOT NULL,
    title      text NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    read_at    timestamptz,
    UNIQUE (user_id, event_id)
);
CREATE INDEX notifications_user_idx ON notifications (user_id, id DESC);
CREATE INDEX notifications_org_idx ON notifications (org_id, created_at);

-- Which notifications a user wants, and where (no row: all of them, both channels).
CREATE TABLE notification_preferences (
    user_id     uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    email       boolean NOT NULL DEFAULT true,
    in_app      boolean NOT NULL DEFAULT true,
    muted_types text[] NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- E-mails to send, retried with back-off; never on a request's or a decision's path.
CREATE TABLE mail_queue (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id     uuid REFERENCES users (id) ON DELETE SET NULL,
    event_id    uuid NOT NULL,
    to_address  text NOT NULL,
    subject     text NOT NULL,
    text_body   text NOT NULL,
    html_body   text NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    state       text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    next_at     timestamptz NOT NULL DEFAULT now(),
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    UNIQUE (event_id, to_address)
);
CREATE INDEX mail_queue_due_idx ON mail_queue (next_at) WHERE state = 'pending';
CREATE INDEX mail_queue_org_idx ON mail_queue (org_id, created_at);
