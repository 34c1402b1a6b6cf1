//! Events out: the transactional outbox and what delivers it.
//!
//! Every domain event is a row of `outbox`, written in the transaction of the change it describes:
//! by the use case ([`record`]), or by the journal in the commit of the records it derives from
//! (pass changes and entries, see `engine::journal`). One [`dispatcher`] per node claims new
//! events (`FOR UPDATE SKIP LOCKED`, so neither commit order nor a second node can skip one), makes
//! one delivery per matching webhook endpoint, and delivers them: at least once, each attempt
//! signed ([`signing`], Standard Webhooks 1.0) and logged, retried on a schedule, resumed after a
//! restart from what is committed. Payloads hold no secret and no hash.

pub mod dispatcher;
pub mod notify;
pub mod signing;
pub mod targets;

use deadpool_postgres::GenericClient;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// An event type, what it means, and an example of its `data`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventType {
    pub name: &'static str,
    pub description: &'static str,
    #[schema(value_type = Object)]
    pub example: Value,
}

/// Every event type delivered, with an example payload (`GET /api/v1/event-types`).
pub fn catalogue() -> Vec<EventType> {
    let pass = "0192f5c4-0000-7000-8000-000000000001";
    let gate = "0192f5c4-0000-7000-8000-0000000000a1";
    let user = "0192f5c4-0000-7000-8000-0000000000c1";
    vec![
        EventType {
            name: "visitpass.issued",
            description: "A pass was issued.",
            example: json!({"pass_id": pass, "holder_name": "Ada Lovelace", "type": "single",
                "valid_from": "2026-11-23T08:00:00Z", "valid_to": "2026-11-23T18:00:00Z",
                "access_rule_id": "0192f5c4-0000-7000-8000-0000000000b1", "issued_by": user,
                "credential": "qr"}),
        },
        EventType {
            name: "visitpass.checked_in",
            description: "A pass was let in at a gate.",
            example: json!({"pass_id": pass, "holder_name": "Ada Lovelace", "gate_id": gate, "direction": "in",
                "source": "api", "checkin_id": "0192f5c4-0000-7000-8000-0000000000d1", "first_arrival": true}),
        },
        EventType {
            name: "visitpass.checked_out",
            description: "A pass was let out at a gate.",
            example: json!({"pass_id": pass, "holder_name": "Ada Lovelace", "gate_id": gate, "direction": "out",
                "source": "osdp", "checkin_id": "0192f5c4-0000-7000-8000-0000000000d2", "first_arrival": false}),
        },
        EventType {
            name: "visitpass.revoked",
            description: "A pass was revoked; it opens no gate from now on.",
            example: pass_example("revoked", Some("left early"), Some(user), 1),
        },
        EventType {
            name: "visitpass.suspended",
            description: "A pass was suspended.",
            example: pass_example("suspended", None, Some(user), 0),
        },
        EventType {
            name: "visitpass.resumed",
            description: "A suspended pass was resumed.",
            example: pass_example("active", None, Some(user), 0),
        },
        EventType {
            name: "visitpass.extended",
            description: "A pass's validity was changed.",
            example: pass_example("active", None, Some(user), 0),
        },
        EventType {
            name: "visitpass.expired",
            description: "A pass reached the end of its validity.",
            example: pass_example("expired", None, None, 1),
        },
        EventType {
            name: "alert.raised",
            description: "Something security should look at: a revoked pass still inside, an anti-passback \
                          refusal, a controller that let in a pass the engine refuses, a lockdown set or lifted.",
            example: json!({"alert": "revoked_pass_inside", "gate_id": gate, "pass_id": pass,
                "holder_name": "Ada Lovelace", "checkin_id": "0192f5c4-0000-7000-8000-0000000000d3"}),
        },
        EventType {
            name: "webhook.disabled",
            description: "A webhook endpoint was disabled (a 410, or days of failed deliveries).",
            example: json!({"endpoint_id": "0192f5c4-0000-7000-8000-0000000000e1",
                "url": "https://hooks.example.com/in", "reason": "the endpoint answered 410 Gone"}),
        },
        EventType {
            name: "appointment.created",
            description: "A host's appointment was made (its visits follow as `visit.invited`).",
            example: json!({"appointment_id": "0192f5c4-0000-7000-8000-0000000000f1", "host_id": user,
                "title": "Design review", "starts_at": "2026-11-23T09:00:00Z", "ends_at": "2026-11-23T10:00:00Z",
                "rrule": null, "occurrences": 1}),
        },
        EventType {
            name: "appointment.cancelled",
            description: "An appointment was cancelled (its open visits with it).",
            example: json!({"appointment_id": "0192f5c4-0000-7000-8000-0000000000f1"}),
        },
        EventType {
            name: "visit.invited",
            description: "A visitor was invited (mailed a link to their guest page).",
            example: json!({"visit_id": "0192f5c4-0000-7000-8000-0000000000f2",
                "appointment_id": "0192f5c4-0000-7000-8000-0000000000f1", "visitor_id": "0192f5c4-0000-7000-8000-0000000000f3",
                "host_id": user, "holder_name": "Ada Lovelace", "starts_at": "2026-11-23T09:00:00Z", "occurrences": 1}),
        },
        EventType {
            name: "visit.registered",
            description: "A visitor completed their registration on the guest page (details, consents).",
            example: visit_example("registered"),
        },
        EventType {
            name: "visit.arrived",
            description: "A visitor is at reception (their host is told).",
            example: visit_example("arrived"),
        },
        EventType {
            name: "visit.checked_in",
            description: "Reception checked a visitor in: their pass opens the gates it allows.",
            example: visit_example("checked_in"),
        },
        EventType {
            name: "visit.checked_out",
            description: "A visitor was checked out (by the desk, or automatically after the meeting): their pass is revoked.",
            example: visit_example("checked_out"),
        },
        EventType {
            name: "visit.cancelled",
            description: "A visit was cancelled.",
            example: visit_example("cancelled"),
        },
        EventType {
            name: "visit.no_show",
            description: "Nobody came to a visit by its end.",
            example: visit_example("no_show"),
        },
        EventType {
            name: "visit.denied",
            description: "A visitor matched the deny list: the visit is held for a security officer's review.",
            example: json!({"visit_id": "0192f5c4-0000-7000-8000-0000000000f2", "holder_name": "Ada Lovelace",
                "matched": "email", "reason": "banned after an incident"}),
        },
        EventType {
            name: "visit.released",
            description: "A security officer released a denied visit (the match was a false one).",
            example: visit_example("registered"),
        },
        EventType {
            name: "webhook.test",
            description: "Sent by \"send test event\", to this endpoint only.",
            example: json!({"endpoint_id": "0192f5c4-0000-7000-8000-0000000000e1", "message": "a test event"}),
        },
    ]
}

/// A pass event's payload (the pass's status after it, why, by whom, its uses).
fn pass_example(status: &str, reason: Option<&str>, actor_id: Option<&str>, uses_count: u32) -> Value {
    json!({"pass_id": "0192f5c4-0000-7000-8000-000000000001", "holder_name": "Ada Lovelace", "status": status,
        "reason": reason, "actor_id": actor_id, "uses_count": uses_count})
}

fn visit_example(status: &str) -> Value {
    json!({"visit_id": "0192f5c4-0000-7000-8000-0000000000f2", "visitor_id": "0192f5c4-0000-7000-8000-0000000000f3",
        "host_id": "0192f5c4-0000-7000-8000-0000000000c1", "appointment_id": "0192f5c4-0000-7000-8000-0000000000f1",
        "pass_id": "0192f5c4-0000-7000-8000-000000000001", "holder_name": "Ada Lovelace", "status": status})
}

/// Whether `name` is an event type an endpoint may ask for.
pub fn is_event_type(name: &str) -> bool {
    name == "*" || catalogue().iter().any(|t| t.name == name)
}

/// How long events are kept once dispatched (deliveries and notifications made) (they can be redelivered until then),
/// and delivery attempts and sent mail with them.
pub const RETENTION_DAYS: i32 = 30;

/// Removes what is past its retention: events done with (and their deliveries, by cascade), the
/// delivery log's older attempts, and mail sent or given up on. Run by the periodic sweep.
pub async fn prune(pool: &deadpool_postgres::Pool) -> Result<u64, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let mut removed = 0;
    for statement in [
        "DELETE FROM outbox o USING outbox_cursor c
         WHERE (o.txid, o.seq) <= (c.txid, c.seq) AND o.occurred_at < now() - make_interval(days => $1)
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = o.id AND d.state = 'pending')",
        "DELETE FROM webhook_attempts WHERE at < now() - make_interval(days => $1)",
        "DELETE FROM mail_queue WHERE state <> 'pending' AND created_at < now() - make_interval(days => $1)",
    ] {
        removed += client.execute(statement, &[&RETENTION_DAYS]).await.map_err(|e| e.to_string())?;
    }
    Ok(removed)
}

/// Writes an event in the caller's transaction; its id.
pub async fn record(
    client: &impl GenericClient,
    org_id: Uuid,
    event_type: &str,
    payload: Value,
) -> Result<Uuid, tokio_postgres::Error> {
    let id = Uuid::now_v7();
    client
        .execute(
            "INSERT INTO outbox (id, org_id, type, payload) VALUES ($1, $2, $3, $4)",
            &[&id, &org_id, &event_type, &payload],
        )
        .await?;
    Ok(id)
}
