//! The dispatcher: one per node. It claims events the outbox has not fanned out yet, makes one
//! delivery per enabled endpoint that wants the event's type, and delivers what is due — each
//! attempt signed, logged in `webhook_attempts`, and followed by the next on the retry schedule
//! when it fails. Everything it knows is in PostgreSQL, claimed with `FOR UPDATE SKIP LOCKED`
//! (a delivery is leased while it is tried), so a restart or a crash resumes from what is
//! committed and several nodes share the work. It never blocks a decision or a request: it runs
//! on its own task and talks to the database through the pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use rand::Rng;
use secrecy::SecretString;
use serde_json::Value;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::outbox::{notify, signing, targets};

/// The purpose a webhook secret is sealed under (see `crypto::seal_secret`).
pub const SECRET_PURPOSE: &str = "webhook-secret";

/// How deliveries are made (`[webhooks]` in the configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Whether this node delivers at all.
    pub deliver: bool,
    /// Deliver to loopback and private addresses (development and tests only).
    pub allow_private: bool,
    /// The wait after each failed attempt (the first attempt is at once); its length is the
    /// number of retries.
    pub schedule: Vec<Duration>,
    pub attempt_timeout: Duration,
    /// An endpoint failing this long is disabled.
    pub disable_after: Duration,
}

/// The least wait after a timeout or a 429.
const SLOW_DOWN: Duration = Duration::from_secs(60);
/// How much of an answer the log keeps.
const RESPONSE_HEAD: usize = 512;
/// Deliveries tried at once.
const BATCH: i64 = 32;

/// The dispatcher's handle: wake it when an event was just committed.
pub struct Dispatcher {
    pool: Pool,
    pepper: SecretString,
    settings: Settings,
    wake: Notify,
    /// Where in-app notifications are published.
    engine: portcullis_actors::engine::Engine,
    mailer: notify::Mailer,
    from: lettre::message::Mailbox,
}

/// A delivery claimed for an attempt.
struct Due {
    org_id: Uuid,
    endpoint_id: Uuid,
    event_id: Uuid,
    attempts: i32,
    url: String,
    secret: Vec<u8>,
    previous: Option<Vec<u8>>,
    event_type: String,
    payload: Value,
    occurred_at: DateTime<Utc>,
}

/// How an attempt ended.
struct Outcome {
    status: Option<u16>,
    kind: &'static str,
    response: Option<String>,
    retry_after: Option<Duration>,
    latency: Duration,
}

impl Dispatcher {
    /// Starts the dispatcher on the current arbiter (its HTTP client lives there).
    pub fn start(
        pool: Pool,
        pepper: SecretString,
        settings: Settings,
        engine: portcullis_actors::engine::Engine,
        mailer: notify::Mailer,
        from: lettre::message::Mailbox,
    ) -> Arc<Dispatcher> {
        let deliver = settings.deliver;
        let dispatcher = Arc::new(Dispatcher { pool, pepper, settings, wake: Notify::new(), engine, mailer, from });
        if deliver {
            actix_rt::spawn(dispatcher.clone().run());
        }
        dispatcher
    }

    /// Something was committed: look now rather than at the next tick.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    async fn run(self: Arc<Self>) {
        let client = http_client(self.settings.attempt_timeout);
        let mut last_report = Instant::now();
        loop {
            let fanned = match self.fan_out().await {
                Ok((n, made)) => {
                    notify::publish(&self.engine, made);
                    n
                }
                Err(err) => {
                    tracing::debug!(error = %err, "outbox not fanned out (database away?)");
                    0
                }
            };
            let tried = match self.claim().await {
                Ok(due) => {
                    let n = due.len();
                    let attempts = due.into_iter().map(|d| self.attempt(&client, d));
                    futures_util::future::join_all(attempts).await;
                    n
                }
                Err(err) => {
                    tracing::debug!(error = %err, "no deliveries claimed (database away?)");
                    0
                }
            };
            let mailed = notify::send_due(&self.pool, &self.mailer, &self.from).await.unwrap_or_else(|err| {
                tracing::debug!(error = %err, "no mail sent (database away?)");
                0
            });
            if last_report.elapsed() > Duration::from_secs(5) {
                self.refresh_interest().await;
                self.report().await;
                last_report = Instant::now();
            }
            if fanned == 0 && tried == 0 && mailed == 0 {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }

    /// Claims events not fanned out yet and makes their deliveries, in one statement.
    /// Claims events not dispatched yet, and in one transaction makes their webhook deliveries
    /// and their notifications; how many were claimed, and the in-app notifications to publish
    /// once committed.
    async fn fan_out(&self) -> Result<(usize, Vec<notify::Made>), String> {
        let mut client = self.pool.get().await.map_err(|e| e.to_string())?;
        let tx = client.transaction().await.map_err(|e| e.to_string())?;
        let notifying: Vec<String> = notify::NOTIFYING.iter().map(|t| (*t).to_owned()).collect();
        // The cursor, held for this transaction (another node waits, then goes on from here), and
        // the batch after it, up to the oldest transaction still running.
        let rows = tx
            .query(
                "WITH cursor AS (SELECT txid, seq FROM outbox_cursor WHERE id = 1 FOR UPDATE),
                 batch AS (
                     SELECT o.id, o.org_id, o.type, o.seq, o.txid, o.payload, o.occurred_at FROM outbox o, cursor c
                     WHERE (o.txid, o.seq) > (c.txid, c.seq) AND o.txid < pg_snapshot_xmin(pg_current_snapshot())
                     ORDER BY o.txid, o.seq LIMIT 500
                 ), made AS (
                     INSERT INTO webhook_deliveries (org_id, endpoint_id, event_id, seq)
                     SELECT b.org_id, w.id, b.id, b.seq FROM batch b
                     JOIN webhook_endpoints w ON w.org_id = b.org_id AND w.enabled
                      AND b.type <> 'webhook.test' AND ('*' = ANY(w.event_types) OR b.type = ANY(w.event_types))
                     ON CONFLICT DO NOTHING
                 ), last AS (
                     SELECT txid, seq FROM batch ORDER BY txid DESC, seq DESC LIMIT 1
                 ), moved AS (
                     UPDATE outbox_cursor SET txid = last.txid, seq = last.seq FROM last WHERE id = 1
                 )
                 SELECT b.id, b.org_id, b.type, b.payload, b.occurred_at,
                        -- Worth a notification: a notifying type, and an arrival only if it is the
                        -- pass's first.
                        b.type = ANY($1) AND (b.type <> 'visitpass.checked_in'
                                              OR coalesce((b.payload->>'first_arrival')::bool, false))
                 FROM batch b",
                &[&notifying],
            )
            .await
            .map_err(|e| e.to_string())?;
        let claimed = rows.len();
        let notifying: Vec<tokio_postgres::Row> =
            rows.into_iter().filter(|r| r.try_get::<_, bool>(5).unwrap_or(false)).collect();
        let made = notify::make(&tx, notifying).await.map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok((claimed, made))
    }

    /// Leases the deliveries that are due, oldest event first.
    async fn claim(&self) -> Result<Vec<Due>, String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        // Leased for two attempt timeouts and a margin: a node that dies mid-attempt leaves the
        // delivery to another soon after, and one that lives settles it well before.
        let lease = (self.settings.attempt_timeout * 2 + Duration::from_secs(5)).as_secs_f64();
        let rows = client
            .query(
                "WITH due AS (
                         SELECT d.org_id, d.endpoint_id, d.event_id FROM webhook_deliveries d
                         JOIN webhook_endpoints w ON w.org_id = d.org_id AND w.id = d.endpoint_id AND w.enabled
                         WHERE d.state = 'pending' AND d.next_at <= now()
                         ORDER BY d.next_at, d.seq LIMIT $1
                         FOR UPDATE OF d SKIP LOCKED
                     ), leased AS (
                         UPDATE webhook_deliveries d SET next_at = now() + make_interval(secs => $2)
                         FROM due WHERE d.org_id = due.org_id AND d.endpoint_id = due.endpoint_id
                           AND d.event_id = due.event_id
                         RETURNING d.org_id, d.endpoint_id, d.event_id, d.attempts
                     )
                     SELECT l.org_id, l.endpoint_id, l.event_id, l.attempts, w.url, w.secret_sealed,
                            CASE WHEN w.previous_until > now() THEN w.previous_sealed END,
                            o.type, o.payload, o.occurred_at
                     FROM leased l
                     JOIN webhook_endpoints w ON w.org_id = l.org_id AND w.id = l.endpoint_id
                     JOIN outbox o ON o.id = l.event_id",
                &[&BATCH, &lease],
            )
            .await
            .map_err(|e| e.to_string())?;
        let open = |sealed: Vec<u8>| {
            crate::crypto::open_secret(&self.pepper, SECRET_PURPOSE, &sealed)
                .and_then(|s| String::from_utf8(s).ok())
                .and_then(|s| signing::key(&s))
        };
        let mut due = Vec::with_capacity(rows.len());
        for row in rows {
            let read = || -> Result<Due, tokio_postgres::Error> {
                Ok(Due {
                    org_id: row.try_get(0)?,
                    endpoint_id: row.try_get(1)?,
                    event_id: row.try_get(2)?,
                    attempts: row.try_get(3)?,
                    url: row.try_get(4)?,
                    secret: open(row.try_get(5)?).unwrap_or_default(),
                    previous: row.try_get::<_, Option<Vec<u8>>>(6)?.and_then(open),
                    event_type: row.try_get(7)?,
                    payload: row.try_get(8)?,
                    occurred_at: row.try_get(9)?,
                })
            };
            match read() {
                Ok(d) if d.secret.is_empty() => {
                    tracing::error!(endpoint = %d.endpoint_id, "a webhook secret cannot be opened (was the pepper changed?)");
                }
                Ok(d) => due.push(d),
                Err(err) => tracing::error!(error = %err, "a delivery could not be read"),
            }
        }
        Ok(due)
    }

    /// One attempt: sign, send, log, and schedule what follows.
    async fn attempt(&self, client: &awc::Client, due: Due) {
        let attempt = due.attempts + 1;
        let body = serde_json::json!({
            "type": due.event_type,
            "timestamp": due.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": due.payload,
        })
        .to_string();
        let outcome = self.send(client, &due, &body).await;
        metrics::counter!("portcullis_webhook_attempts_total", "outcome" => outcome.kind).increment(1);
        metrics::histogram!("portcullis_webhook_attempt_seconds").record(outcome.latency.as_secs_f64());
        let delivered = outcome.kind == "delivered";
        let gone = outcome.status == Some(410);
        let next = if delivered || gone {
            None
        } else {
            self.settings.schedule.get(usize::try_from(due.attempts).unwrap_or(usize::MAX)).map(|wait| {
                let mut wait = jitter(*wait);
                if matches!(outcome.status, Some(429)) || outcome.kind == "timeout" {
                    wait = wait.max(SLOW_DOWN).max(outcome.retry_after.unwrap_or_default());
                }
                Utc::now() + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::hours(10))
            })
        };
        let state = match (delivered, next) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        if let Err(err) = self.settle(&due, attempt, &outcome, next, state, gone).await {
            // The lease runs out and the delivery is tried again: at least once.
            tracing::warn!(endpoint = %due.endpoint_id, event = %due.event_id, error = %err, "a delivery's outcome was not recorded");
        }
    }

    async fn send(&self, client: &awc::Client, due: &Due, body: &str) -> Outcome {
        let started = Instant::now();
        let refused = |why: String| Outcome {
            status: None,
            kind: "refused",
            response: Some(why),
            retry_after: None,
            latency: started.elapsed(),
        };
        let (_, host, port) = match targets::parse(&due.url) {
            Ok(target) => target,
            Err(why) => return refused(format!("the URL {why}")),
        };
        let addrs = match targets::resolve(&host, port, self.settings.allow_private).await {
            Ok(addrs) => addrs,
            Err(why) => return refused(why),
        };
        let timestamp = Utc::now().timestamp();
        let id = due.event_id.to_string();
        let mut keys = vec![due.secret.clone()];
        keys.extend(due.previous.clone());
        let signature = signing::header(&keys, &id, timestamp, body.as_bytes());
        let mut request = client
            .post(&due.url)
            .insert_header(("content-type", "application/json"))
            .insert_header(("user-agent", concat!("Portcullis-Webhooks/", env!("CARGO_PKG_VERSION"))))
            .insert_header(("webhook-id", id))
            .insert_header(("webhook-timestamp", timestamp.to_string()))
            .insert_header(("webhook-signature", signature))
            .timeout(self.settings.attempt_timeout);
        // Connect to the address just checked, not to whatever the name resolves to next.
        if let Some(addr) = addrs.first() {
            request = request.address(*addr);
        }
        match request.send_body(body.to_owned()).await {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let head = response.body().limit(64 * 1024).await.ok().map(|b| {
                    let text = String::from_utf8_lossy(&b);
                    text.chars().take(RESPONSE_HEAD).collect::<String>()
                });
                Outcome {
                    status: Some(status),
                    kind: if (200..300).contains(&status) { "delivered" } else { "failed" },
                    response: head,
                    retry_after,
                    latency: started.elapsed(),
                }
            }
            Err(awc::error::SendRequestError::Timeout) => Outcome {
                status: None,
                kind: "timeout",
                response: Some(format!("no answer within {} s", self.settings.attempt_timeout.as_secs())),
                retry_after: None,
                latency: started.elapsed(),
            },
            Err(err) => Outcome {
                status: None,
                kind: "unreachable",
                response: Some(err.to_string()),
                retry_after: None,
                latency: started.elapsed(),
            },
        }
    }

    /// Records the attempt and what follows, in one transaction.
    async fn settle(
        &self,
        due: &Due,
        attempt: i32,
        outcome: &Outcome,
        next: Option<DateTime<Utc>>,
        state: &str,
        gone: bool,
    ) -> Result<(), String> {
        let mut client = self.pool.get().await.map_err(|e| e.to_string())?;
        let tx = client.transaction().await.map_err(|e| e.to_string())?;
        let latency_ms = i32::try_from(outcome.latency.as_millis()).unwrap_or(i32::MAX);
        let status = outcome.status.map(i32::from);
        tx.execute(
            "INSERT INTO webhook_attempts (id, org_id, endpoint_id, event_id, event_type, attempt, at, status_code,
                                           latency_ms, outcome, response, next_retry_at)
             VALUES ($1, $2, $3, $4, $5, $6, now(), $7, $8, $9, $10, $11)",
            &[
                &Uuid::now_v7(),
                &due.org_id,
                &due.endpoint_id,
                &due.event_id,
                &due.event_type,
                &attempt,
                &status,
                &latency_ms,
                &outcome.kind,
                &outcome.response,
                &next,
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
        tx.execute(
            "UPDATE webhook_deliveries SET attempts = $4, state = $5, next_at = coalesce($6, now())
             WHERE org_id = $1 AND endpoint_id = $2 AND event_id = $3",
            &[&due.org_id, &due.endpoint_id, &due.event_id, &attempt, &state, &next],
        )
        .await
        .map_err(|e| e.to_string())?;
        let delivered = outcome.kind == "delivered";
        let disable_after = i64::try_from(self.settings.disable_after.as_secs()).unwrap_or(i64::MAX);
        // A success clears the endpoint's failing streak; a failure starts it, and a streak too
        // long (or a 410) disables the endpoint.
        let disabled: Option<String> = tx
            .query_opt(
                "WITH old AS (SELECT enabled FROM webhook_endpoints WHERE org_id = $1 AND id = $2 FOR UPDATE),
                 new AS (
                     UPDATE webhook_endpoints SET
                         failing_since = CASE WHEN $3 THEN NULL ELSE coalesce(failing_since, now()) END,
                         enabled = enabled AND NOT $4
                                   AND ($3 OR coalesce(failing_since, now()) > now() - make_interval(secs => $5)),
                         disabled_reason = CASE
                             WHEN NOT enabled THEN disabled_reason
                             WHEN $4 THEN 'the endpoint answered 410 Gone'
                             WHEN NOT $3 AND coalesce(failing_since, now()) <= now() - make_interval(secs => $5)
                                 THEN 'every delivery failed for ' || round($5 / 3600)::text || ' hours'
                             ELSE disabled_reason END,
                         updated_at = now()
                     WHERE org_id = $1 AND id = $2
                     RETURNING enabled, disabled_reason
                 )
                 SELECT new.disabled_reason FROM new, old WHERE old.enabled AND NOT new.enabled",
                &[&due.org_id, &due.endpoint_id, &delivered, &gone, &(disable_after as f64)],
            )
            .await
            .map_err(|e| e.to_string())?
            .and_then(|row| row.try_get(0).ok())
            .flatten();
        if let Some(reason) = &disabled {
            let event = crate::audit::Event::new(Some(due.org_id), "webhook.disabled", "webhook", due.endpoint_id)
                .details(serde_json::json!({ "reason": reason }));
            crate::audit::record(&tx, crate::audit::Actor::default(), event).await.map_err(|e| e.to_string())?;
            // Its owners are told (and other endpoints that want it).
            let payload = serde_json::json!({ "endpoint_id": due.endpoint_id, "url": due.url, "reason": reason });
            crate::outbox::record(&tx, due.org_id, "webhook.disabled", payload).await.map_err(|e| e.to_string())?;
        }
        tx.commit().await.map_err(|e| e.to_string())?;
        if let Some(reason) = disabled {
            tracing::warn!(endpoint = %due.endpoint_id, %reason, "webhook endpoint disabled");
        }
        Ok(())
    }

    /// Tells the journal whether any endpoint wants entries (checked every 5 s; a use case that
    /// subscribes one says so at once).
    async fn refresh_interest(&self) {
        let Ok(client) = self.pool.get().await else { return };
        let wanted = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE enabled AND event_types
                                && ARRAY['*', 'visitpass.checked_in', 'visitpass.checked_out'])",
                &[],
            )
            .await
            .and_then(|row| row.try_get::<_, bool>(0));
        if let Ok(wanted) = wanted {
            self.engine.journal().health().set_entries_wanted(wanted);
        }
    }

    /// Backlog gauges: events not fanned out, deliveries pending, and the oldest pending.
    async fn report(&self) {
        let Ok(client) = self.pool.get().await else { return };
        let row = client
            .query_opt(
                "SELECT (SELECT count(*) FROM outbox o, outbox_cursor c WHERE (o.txid, o.seq) > (c.txid, c.seq)),
                        (SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'),
                        (SELECT coalesce(extract(epoch FROM now() - min(o.occurred_at)), 0)::float8
                           FROM webhook_deliveries d JOIN outbox o ON o.id = d.event_id WHERE d.state = 'pending')",
                &[],
            )
            .await;
        if let Ok(Some(row)) = row {
            let (events, pending, age): (i64, i64, f64) =
                (row.try_get(0).unwrap_or(0), row.try_get(1).unwrap_or(0), row.try_get(2).unwrap_or(0.0));
            metrics::gauge!("portcullis_outbox_backlog").set(events as f64);
            metrics::gauge!("portcullis_webhook_deliveries_pending").set(pending as f64);
            metrics::gauge!("portcullis_webhook_oldest_pending_seconds").set(age);
        }
    }
}

/// ±20 %.
fn jitter(wait: Duration) -> Duration {
    wait.mul_f64(rand::thread_rng().gen_range(0.8..=1.2))
}

/// The client deliveries go out with: no redirects followed, a timeout per attempt, TLS with the
/// web's root certificates (ring).
fn http_client(timeout: Duration) -> awc::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let connector = match rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
        Ok(builder) => {
            let config = builder.with_root_certificates(roots).with_no_client_auth();
            awc::Connector::new().rustls_0_23(Arc::new(config)).timeout(Duration::from_secs(5))
        }
        Err(err) => {
            tracing::error!(error = %err, "no TLS for webhooks: https endpoints will fail");
            awc::Connector::new().timeout(Duration::from_secs(5))
        }
    };
    awc::Client::builder().connector(connector).disable_redirects().timeout(timeout).finish()
}
