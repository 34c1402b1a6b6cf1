-- Refresh tokens already spent, per session. A refresh token that matches one of these is a
-- replay of a token that was really issued (stolen or copied): its session is revoked. Any other
-- token that does not match the session's current one is merely invalid, so knowing a session's
-- id (it is in every access token) is not enough to end someone else's session.
CREATE TABLE spent_refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    spent_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX spent_refresh_tokens_session_idx ON spent_refresh_tokens (session_id);
