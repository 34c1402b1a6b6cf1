//! The visitor journey: appointments (with their recurrence), visits and their lifecycle
//! `invited → registered → arrived → checked_in → checked_out` (or `cancelled`, `no_show`,
//! `denied`), walk-ins, and the housekeeping that checks out and closes what time has ended.
//!
//! A visit's pass is made when first needed (the guest asks for their QR code, or reception
//! checks them in): a QR pass for the occurrence plus the organization's margin, issued
//! *suspended*, so its code is refused at every gate until check-in resumes it; check-out
//! revokes it (reason `checked_out`), in force at every gate before the answer. Each transition
//! is one transaction with its audit row and its outbox event, and is on the live stream before
//! the answer.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use deadpool_postgres::GenericClient;
use portcullis_actors::domain::{CredentialKind, PassStatus, PassType, Role, VisitStatus};
use portcullis_actors::engine::CredentialRef;
use portcullis_actors::events::Event;
use portcullis_actors::pass_actor::PassChange;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::app::input::{Fields, check_name, done, optional_text};
use crate::app::passes::{self, NewPass};
use crate::app::rrule::Rule;
use crate::app::visitors::{self, Personal, VisitorInput};
use crate::app::{App, Caller, host_scope};
use crate::audit::{self, Actor, Event as AuditEvent};
use crate::crypto;
use crate::db::pagination::{self, Page};
use crate::engine::credentials;
use crate::error::{AppError, Conflict};

/// The most visitors one appointment invites.
const MAX_VISITORS: usize = 50;

/// The most visits one appointment makes (visitors × occurrences).
const MAX_VISITS: usize = 1000;
/// A walk-in's visit lasts this long unless the desk says otherwise.
const WALK_IN_HOURS: i64 = 4;

// ---- appointments ----

/// A visitor of an appointment: one already registered, or a new one (recognised by e-mail).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Invitee {
    Known { visitor_id: Uuid },
    New(VisitorInput),
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAppointment {
    pub title: String,
    pub room: Option<String>,
    #[serde(deserialize_with = "crate::app::input::timestamp")]
    pub starts_at: DateTime<Utc>,
    #[serde(deserialize_with = "crate::app::input::timestamp")]
    pub ends_at: DateTime<Utc>,
    /// The recurrence subset: `FREQ=DAILY|WEEKLY;INTERVAL=n;BYDAY=MO,..;UNTIL=YYYYMMDD|COUNT=n`.
    pub rrule: Option<String>,
    /// The host (default: the caller; a host may name only themselves).
    pub host_id: Option<Uuid>,
    /// The visitors' access rule (default: the organization's visitor rule).
    pub access_rule_id: Option<Uuid>,
    pub visitors: Vec<Invitee>,
}

/// An appointment and its visits.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Appointment {
    pub id: Uuid,
    pub host_id: Uuid,
    pub title: String,
    pub room: Option<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub rrule: Option<String>,
    pub access_rule_id: Option<Uuid>,
    /// `scheduled`, `cancelled` or `completed`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub visits: Vec<Visit>,
}

impl pagination::Identified for Appointment {
    fn id(&self) -> Uuid {
        self.id
    }
}

/// Org settings the journey needs.
struct OrgSettings {
    name: String,
    tz: Tz,
    locale: String,
    margin: Duration,
    visitor_rule_id: Option<Uuid>,
    address: Option<String>,
}

async fn org_settings(client: &impl GenericClient, org_id: Uuid) -> Result<OrgSettings, AppError> {
    let row = client
        .query_opt(
            "SELECT name, timezone, locale, visit_margin_minutes, visitor_rule_id, address FROM organizations WHERE id = $1",
            &[&org_id],
        )
        .await?
        .ok_or(AppError::NotFound("organization"))?;
    let tz: String = row.try_get(1)?;
    Ok(OrgSettings {
        name: row.try_get(0)?,
        tz: tz.parse().unwrap_or(Tz::UTC),
        locale: row.try_get(2)?,
        margin: Duration::minutes(i64::from(row.try_get::<_, i32>(3)?)),
        visitor_rule_id: row.try_get(4)?,
        address: row.try_get(5)?,
    })
}

/// The host a caller may name: hosts only themselves; others any active member.
async fn check_host(
    client: &impl GenericClient,
    caller: &Caller<'_>,
    org_id: Uuid,
    asked: Option<Uuid>,
    fields: &mut Fields,
) -> Result<Option<Uuid>, AppError> {
    let me = caller.principal.user_id();
    let host = asked.or(me);
    let Some(host) = host else {
        fields.insert("host_id".into(), "is required when an API key asks".into());
        return Ok(None);
    };
    if caller.principal.role_in(org_id) == Some(Role::Host) && Some(host) != me {
        return Err(AppError::Forbidden);
    }
    let member = client
        .query_opt(
            "SELECT 1 FROM memberships WHERE org_id = $1 AND user_id = $2 AND disabled_at IS NULL",
            &[&org_id, &host],
        )
        .await?;
    if member.is_none() {
        fields.insert("host_id".into(), "no such member of this organization".into());
        return Ok(None);
    }
    Ok(Some(host))
}

/// Makes an appointment: its visits (one per visitor per occurrence) are invited, each visitor
/// checked against the deny list (a match holds the visit `denied` and alerts security), and each
/// visitor mailed an invitation with a single-use link to their guest page.
pub async fn create_appointment(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    body: CreateAppointment,
) -> Result<Appointment, AppError> {
    let pepper = &app.auth.pepper;
    let mut fields = Fields::new();
    check_name(&mut fields, "title", &body.title);
    let room = optional_text(&mut fields, "room", body.room.as_deref(), 200);
    if body.ends_at <= body.starts_at {
        fields.insert("ends_at".into(), "must be after starts_at".into());
    } else if body.ends_at - body.starts_at > Duration::hours(24) {
        fields.insert("ends_at".into(), "a meeting lasts at most 24 hours (use rrule to repeat it)".into());
    }
    if body.visitors.is_empty() || body.visitors.len() > MAX_VISITORS {
        fields.insert("visitors".into(), format!("must name 1 to {MAX_VISITORS} visitors"));
    }
    let mut client = app.pool.get().await?;
    let org = org_settings(&client, org_id).await?;
    let starts = match &body.rrule {
        None => vec![body.starts_at],
        Some(text) => match Rule::parse(text, org.tz).and_then(|r| r.starts(body.starts_at, org.tz)) {
            Ok(starts) if !starts.is_empty() => starts,
            Ok(_) => {
                fields.insert("rrule".into(), "has no occurrence".into());
                Vec::new()
            }
            Err(reason) => {
                fields.insert("rrule".into(), reason);
                Vec::new()
            }
        },
    };
    let host = check_host(&client, caller, org_id, body.host_id, &mut fields).await?;
    let rule = body.access_rule_id.or(org.visitor_rule_id);
    if let Some(rule) = rule
        && client
            .query_opt("SELECT 1 FROM access_rules WHERE org_id = $1 AND id = $2", &[&org_id, &rule])
            .await?
            .is_none()
    {
        fields.insert("access_rule_id".into(), "no such access rule in this organization".into());
    }
    let mut invitees = Vec::new();
    for (i, invitee) in body.visitors.into_iter().enumerate() {
        match invitee {
            Invitee::Known { visitor_id } => {
                let known = client
                    .query_opt("SELECT 1 FROM visitors WHERE org_id = $1 AND id = $2", &[&org_id, &visitor_id])
                    .await?;
                if known.is_none() {
                    fields.insert(format!("visitors[{i}].visitor_id"), "no such visitor in this organization".into());
                }
                invitees.push(Err(visitor_id));
            }
            Invitee::New(input) => {
                if let Some(personal) = input.check(&mut fields, &format!("visitors[{i}].")) {
                    invitees.push(Ok(personal));
                }
            }
        }
    }
    if invitees.len() * starts.len() > MAX_VISITS {
        fields.insert(
            "rrule".into(),
            format!("{} visitors × {} occurrences is more than {MAX_VISITS} visits", invitees.len(), starts.len()),
        );
    }
    done(fields)?;
    let (Some(host), Some(first)) = (host, starts.first().copied()) else {
        return Err(AppError::internal("a checked field was missing"));
    };
    let duration = body.ends_at - body.starts_at;
    let title = body.title.trim().to_owned();

    let tx = client.transaction().await?;
    let id = Uuid::now_v7();
    tx.execute(
        "INSERT INTO appointments (id, org_id, host_id, title, room, starts_at, ends_at, rrule, access_rule_id, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[&id, &org_id, &host, &title, &room, &first, &(first + duration), &body.rrule, &rule, &caller.principal.user_id()],
    )
    .await?;
    let actor = caller.actor();
    let details = json!({ "host_id": host, "occurrences": starts.len(), "visitors": invitees.len() });
    audit::record(&tx, actor, AuditEvent::new(Some(org_id), "appointment.created", "appointment", id).details(details))
        .await?;
    crate::outbox::record(
        &tx,
        org_id,
        "appointment.created",
        json!({ "appointment_id": id, "host_id": host, "title": title, "starts_at": first,
                "ends_at": first + duration, "rrule": body.rrule, "occurrences": starts.len() }),
    )
    .await?;
    let host_name: String = tx.query_one("SELECT name FROM users WHERE id = $1", &[&host]).await?.try_get(0)?;
    let mut events = Vec::new();
    for invitee in invitees {
        let (visitor_id, personal) = match invitee {
            Ok(personal) => {
                let visitor =
                    visitors::register(&tx, visitors::DataKey::of(app), org_id, personal, actor.user_id).await?;
                (visitor.id, visitor.personal)
            }
            Err(visitor_id) => (visitor_id, load_personal(&tx, pepper, org_id, visitor_id).await?),
        };
        let hit = visitors::deny_match(&tx, pepper, org_id, &personal).await?;
        // The invitee's first occurrence stands for their visits in the invitation and the alert.
        let mut first_visit = None;
        for start in &starts {
            let visit = Uuid::now_v7();
            let status = if hit.is_some() { VisitStatus::Denied } else { VisitStatus::Invited };
            let denied = hit.as_ref().map(|h| format!("deny_list:{}", h.kind));
            tx.execute(
                "INSERT INTO visits (id, org_id, appointment_id, visitor_id, host_id, starts_at, ends_at, status, denied_reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[&visit, &org_id, &id, &visitor_id, &host, start, &(*start + duration), &status.as_str(), &denied],
            )
            .await?;
            first_visit.get_or_insert(visit);
            events.push(visit_event(visit, visitor_id, host, status, &personal.name, None));
        }
        let first_visit = first_visit.unwrap_or_default();
        match &hit {
            Some(hit) => {
                deny_alert(&tx, actor, org_id, first_visit, &personal.name, hit).await?;
            }
            None => {
                let payload = json!({ "visit_id": first_visit, "appointment_id": id, "visitor_id": visitor_id,
                                      "host_id": host, "holder_name": personal.name, "starts_at": first,
                                      "occurrences": starts.len() });
                let event_id = crate::outbox::record(&tx, org_id, "visit.invited", payload).await?;
                if let Some(email) = &personal.email {
                    let invitation = Invitation {
                        org: &org,
                        title: &title,
                        host: &host_name,
                        room: room.as_deref(),
                        starts_at: first,
                        occurrences: starts.len(),
                    };
                    let link = guest_link(app, &tx, org_id, visitor_id, first + duration + org.margin).await?;
                    queue_invitation(&tx, org_id, event_id, &personal.name, email, &invitation, &link).await?;
                }
            }
        }
    }
    tx.commit().await?;
    app.outbox.wake();
    for event in events {
        app.engine.events().publish(org_id, event);
    }
    get_appointment(app, caller, org_id, id).await
}

fn visit_event(
    visit_id: Uuid,
    visitor_id: Uuid,
    host_id: Uuid,
    status: VisitStatus,
    name: &str,
    pass_id: Option<Uuid>,
) -> Event {
    Event::Visit { visit_id, visitor_id, host_id, status, visitor_name: name.to_owned(), pass_id }
}

/// Security hears of a deny-list match: `alert.raised` (notifications, webhooks) and the audit.
async fn deny_alert(
    tx: &impl GenericClient,
    actor: Actor,
    org_id: Uuid,
    visit_id: Uuid,
    name: &str,
    hit: &visitors::DenyHit,
) -> Result<(), AppError> {
    let details = json!({ "kind": hit.kind });
    audit::record(tx, actor, AuditEvent::new(Some(org_id), "visit.denied", "visit", visit_id).details(details)).await?;
    crate::outbox::record(
        tx,
        org_id,
        "visit.denied",
        json!({ "visit_id": visit_id, "holder_name": name, "matched": hit.kind, "reason": hit.reason }),
    )
    .await?;
    crate::outbox::record(
        tx,
        org_id,
        "alert.raised",
        json!({ "alert": "deny_list_match", "visit_id": visit_id, "holder_name": name, "matched": hit.kind }),
    )
    .await?;
    Ok(())
}

async fn load_personal(
    client: &impl GenericClient,
    pepper: &secrecy::SecretString,
    org_id: Uuid,
    visitor_id: Uuid,
) -> Result<Personal, AppError> {
    let row = client
        .query_opt("SELECT sealed, key_version FROM visitors WHERE org_id = $1 AND id = $2", &[&org_id, &visitor_id])
        .await?
        .ok_or(AppError::NotFound("visitor"))?;
    let sealed: Vec<u8> = row.try_get(0)?;
    visitors::open(pepper, row.try_get(1)?, &sealed)
}

/// What an invitation says.
struct Invitation<'a> {
    org: &'a OrgSettings,
    title: &'a str,
    host: &'a str,
    room: Option<&'a str>,
    starts_at: DateTime<Utc>,
    occurrences: usize,
}

/// A single-use magic link to the guest page, valid until `until` (at most 30 days); only its
/// hash is stored. The token rides in the fragment, which browsers never send to a server.
async fn guest_link(
    app: &App,
    tx: &impl GenericClient,
    org_id: Uuid,
    visitor_id: Uuid,
    until: DateTime<Utc>,
) -> Result<String, AppError> {
    let token = crypto::random_token(32);
    let expires = until.min(Utc::now() + Duration::days(30));
    tx.execute(
        "INSERT INTO guest_tokens (token_hash, org_id, visitor_id, kind, expires_at) VALUES ($1, $2, $3, 'link', $4)",
        &[&crate::app::guest::token_hash(&app.auth.pepper, &token), &org_id, &visitor_id, &expires],
    )
    .await?;
    Ok(format!("{}/guest#link={token}", app.settings.public_url()))
}

async fn queue_invitation(
    tx: &impl GenericClient,
    org_id: Uuid,
    event_id: Uuid,
    name: &str,
    email: &str,
    invitation: &Invitation<'_>,
    link: &str,
) -> Result<(), AppError> {
    let message = crate::outbox::notify::invitation(
        &invitation.org.locale,
        &crate::outbox::notify::InvitationText {
            org: &invitation.org.name,
            visitor: name,
            host: invitation.host,
            title: invitation.title,
            room: invitation.room,
            address: invitation.org.address.as_deref(),
            at: invitation.starts_at.with_timezone(&invitation.org.tz).format("%Y-%m-%d %H:%M %Z").to_string(),
            occurrences: invitation.occurrences,
            link,
        },
    );
    let mail = crate::outbox::notify::QueuedMail { org_id, user_id: None, event_id, name, email, message: &message };
    crate::outbox::notify::queue_mail(tx, mail).await?;
    Ok(())
}

const APPOINTMENT_COLUMNS: &str =
    "id, host_id, title, room, starts_at, ends_at, rrule, access_rule_id, status, created_at";

fn appointment_from_row(row: &tokio_postgres::Row) -> Result<Appointment, AppError> {
    Ok(Appointment {
        id: row.try_get(0)?,
        host_id: row.try_get(1)?,
        title: row.try_get(2)?,
        room: row.try_get(3)?,
        starts_at: row.try_get(4)?,
        ends_at: row.try_get(5)?,
        rrule: row.try_get(6)?,
        access_rule_id: row.try_get(7)?,
        status: row.try_get(8)?,
        created_at: row.try_get(9)?,
        visits: Vec::new(),
    })
}

pub async fn get_appointment(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid) -> Result<Appointment, AppError> {
    let client = app.pool.get().await?;
    let row = client
        .query_opt(
            &format!(
                "SELECT {APPOINTMENT_COLUMNS} FROM appointments WHERE org_id = $1 AND id = $2
                   AND ($3::uuid IS NULL OR host_id = $3)"
            ),
            &[&org_id, &id, &host_scope(caller.principal, org_id)],
        )
        .await?
        .ok_or(AppError::NotFound("appointment"))?;
    let mut appointment = appointment_from_row(&row)?;
    let filter = VisitFilter { appointment_id: Some(id), ..VisitFilter::default() };
    appointment.visits = query_visits(app, &client, org_id, None, &filter, None, 1000).await?;
    Ok(appointment)
}

#[derive(Deserialize)]
pub struct AppointmentQuery {
    /// From this local day on (default: today).
    #[serde(default, deserialize_with = "crate::app::input::opt_date")]
    pub from: Option<NaiveDate>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

pub async fn list_appointments(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    query: &AppointmentQuery,
) -> Result<Page<Appointment>, AppError> {
    let limit = pagination::limit(query.limit)?;
    let after: Option<Uuid> = pagination::decode(query.cursor.as_deref())?;
    let client = app.pool.get().await?;
    let org = org_settings(&client, org_id).await?;
    let from = local_day_start(org.tz, query.from.unwrap_or_else(|| Utc::now().with_timezone(&org.tz).date_naive()));
    let rows = client
        .query(
            &format!(
                "SELECT {APPOINTMENT_COLUMNS} FROM appointments a
                 WHERE org_id = $1 AND ($2::uuid IS NULL OR host_id = $2)
                   AND EXISTS (SELECT 1 FROM visits v WHERE v.org_id = a.org_id AND v.appointment_id = a.id AND v.ends_at > $3)
                   AND ($4::uuid IS NULL OR id > $4)
                 ORDER BY id LIMIT $5"
            ),
            &[&org_id, &host_scope(caller.principal, org_id), &from, &after, &(limit + 1)],
        )
        .await?;
    let items = rows.iter().map(appointment_from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(pagination::page(items, limit, |a: &Appointment| Some(a.id.to_string())))
}

/// Cancels an appointment: its open visits are cancelled and their passes revoked.
pub async fn cancel_appointment(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    id: Uuid,
) -> Result<Appointment, AppError> {
    let appointment = get_appointment(app, caller, org_id, id).await?;
    if appointment.status != "scheduled" {
        return Err(AppError::Conflict {
            code: Conflict::VisitNotOpen,
            message: "the appointment is not scheduled".into(),
        });
    }
    for visit in appointment.visits.iter().filter(|v| closes_from(VisitStatus::Cancelled).contains(&v.status)) {
        close(app, caller.actor(), org_id, visit.id, VisitStatus::Cancelled).await?;
    }
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "UPDATE appointments SET status = 'cancelled', updated_at = now() WHERE org_id = $1 AND id = $2",
        &[&org_id, &id],
    )
    .await?;
    audit::record(&tx, caller.actor(), AuditEvent::new(Some(org_id), "appointment.cancelled", "appointment", id))
        .await?;
    crate::outbox::record(&tx, org_id, "appointment.cancelled", json!({ "appointment_id": id })).await?;
    tx.commit().await?;
    app.outbox.wake();
    get_appointment(app, caller, org_id, id).await
}

// ---- visits ----

/// A visit as the desk sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Visit {
    pub id: Uuid,
    pub appointment_id: Option<Uuid>,
    pub title: Option<String>,
    pub room: Option<String>,
    pub visitor_id: Uuid,
    pub visitor_name: String,
    pub company: Option<String>,
    pub host_id: Uuid,
    pub host_name: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub status: VisitStatus,
    pub pass_id: Option<Uuid>,
    /// Why it is `denied` (`deny_list:<kind>`).
    pub denied_reason: Option<String>,
    pub arrived_at: Option<DateTime<Utc>>,
    pub checked_in_at: Option<DateTime<Utc>>,
    pub checked_out_at: Option<DateTime<Utc>>,
}

impl pagination::Identified for Visit {
    fn id(&self) -> Uuid {
        self.id
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct VisitFilter {
    /// The organization's local day (default: today).
    #[serde(default, deserialize_with = "crate::app::input::opt_date")]
    pub date: Option<NaiveDate>,
    pub status: Option<VisitStatus>,
    pub host_id: Option<Uuid>,
    pub appointment_id: Option<Uuid>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// The first instant of a local day (midnight, or the first minute after a DST gap).
fn local_day_start(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    use chrono::TimeZone;
    let midnight = day.and_time(chrono::NaiveTime::MIN);
    tz.from_local_datetime(&midnight).earliest().map_or_else(|| midnight.and_utc(), |t| t.with_timezone(&Utc))
}

const VISIT_SELECT: &str = "SELECT v.id, v.appointment_id, a.title, a.room, v.visitor_id, s.sealed, s.key_version, v.host_id,
        u.name, v.starts_at, v.ends_at, v.status, v.pass_id, v.denied_reason, v.arrived_at, v.checked_in_at, v.checked_out_at
     FROM visits v JOIN visitors s ON s.org_id = v.org_id AND s.id = v.visitor_id
     JOIN users u ON u.id = v.host_id
     LEFT JOIN appointments a ON a.org_id = v.org_id AND a.id = v.appointment_id";

fn visit_from_row(pepper: &secrecy::SecretString, row: &tokio_postgres::Row) -> Result<Visit, AppError> {
    let sealed: Vec<u8> = row.try_get(5)?;
    let personal = visitors::open(pepper, row.try_get(6)?, &sealed)?;
    let status: String = row.try_get(11)?;
    Ok(Visit {
        id: row.try_get(0)?,
        appointment_id: row.try_get(1)?,
        title: row.try_get(2)?,
        room: row.try_get(3)?,
        visitor_id: row.try_get(4)?,
        visitor_name: personal.name,
        company: personal.company,
        host_id: row.try_get(7)?,
        host_name: row.try_get(8)?,
        starts_at: row.try_get(9)?,
        ends_at: row.try_get(10)?,
        status: status.parse().map_err(AppError::internal)?,
        pass_id: row.try_get(12)?,
        denied_reason: row.try_get(13)?,
        arrived_at: row.try_get(14)?,
        checked_in_at: row.try_get(15)?,
        checked_out_at: row.try_get(16)?,
    })
}

async fn query_visits(
    app: &App,
    client: &impl GenericClient,
    org_id: Uuid,
    host: Option<Uuid>,
    filter: &VisitFilter,
    day: Option<(DateTime<Utc>, DateTime<Utc>)>,
    limit: i64,
) -> Result<Vec<Visit>, AppError> {
    let after: Option<Uuid> = pagination::decode(filter.cursor.as_deref())?;
    let (from, to) = day.unzip();
    let rows = client
        .query(
            &format!(
                "{VISIT_SELECT}
                 WHERE v.org_id = $1 AND ($2::uuid IS NULL OR v.host_id = $2) AND ($3::uuid IS NULL OR v.host_id = $3)
                   AND ($4::uuid IS NULL OR v.appointment_id = $4) AND ($5::text IS NULL OR v.status = $5)
                   AND ($6::timestamptz IS NULL OR v.ends_at > $6) AND ($7::timestamptz IS NULL OR v.starts_at < $7)
                   AND ($8::uuid IS NULL OR v.id > $8)
                 ORDER BY v.id LIMIT $9"
            ),
            &[
                &org_id,
                &host,
                &filter.host_id,
                &filter.appointment_id,
                &filter.status.map(VisitStatus::as_str),
                &from,
                &to,
                &after,
                &limit,
            ],
        )
        .await?;
    rows.iter().map(|row| visit_from_row(&app.auth.pepper, row)).collect()
}

/// The visits of a day (the reception's list), or of an appointment; hosts: their own.
pub async fn list(app: &App, caller: &Caller<'_>, org_id: Uuid, filter: &VisitFilter) -> Result<Page<Visit>, AppError> {
    let limit = pagination::limit(filter.limit)?;
    let client = app.pool.get().await?;
    let org = org_settings(&client, org_id).await?;
    let day = if filter.appointment_id.is_some() && filter.date.is_none() {
        None
    } else {
        let date = filter.date.unwrap_or_else(|| Utc::now().with_timezone(&org.tz).date_naive());
        let next = date.succ_opt().unwrap_or(date);
        Some((local_day_start(org.tz, date), local_day_start(org.tz, next)))
    };
    let items =
        query_visits(app, &client, org_id, host_scope(caller.principal, org_id), filter, day, limit + 1).await?;
    Ok(pagination::page(items, limit, |v: &Visit| Some(v.id.to_string())))
}

pub async fn get(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid) -> Result<Visit, AppError> {
    let client = app.pool.get().await?;
    load(app, &client, org_id, id, host_scope(caller.principal, org_id)).await
}

async fn load(
    app: &App,
    client: &impl GenericClient,
    org_id: Uuid,
    id: Uuid,
    host: Option<Uuid>,
) -> Result<Visit, AppError> {
    let row = client
        .query_opt(
            &format!("{VISIT_SELECT} WHERE v.org_id = $1 AND v.id = $2 AND ($3::uuid IS NULL OR v.host_id = $3)"),
            &[&org_id, &id, &host],
        )
        .await?
        .ok_or(AppError::NotFound("visit"))?;
    visit_from_row(&app.auth.pepper, &row)
}

/// A visit not in a state the request can act on (`visit_not_open`).
pub fn not_open(status: VisitStatus) -> AppError {
    AppError::Conflict { code: Conflict::VisitNotOpen, message: format!("the visit is {status}") }
}

/// The visit's pass, made now if it has none: a QR pass for the occurrence plus the margin,
/// suspended until check-in, its holder's host as its issuer (so the host's stream follows it).
/// Returns the pass and its QR credential.
pub async fn ensure_pass(app: &App, actor: Actor, org_id: Uuid, visit_id: Uuid) -> Result<(Uuid, Uuid), AppError> {
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT v.pass_id, v.visitor_id, v.host_id, v.appointment_id, v.starts_at, v.ends_at, v.status,
                    a.access_rule_id, o.visitor_rule_id, o.visit_margin_minutes
             FROM visits v JOIN organizations o ON o.id = v.org_id
             LEFT JOIN appointments a ON a.org_id = v.org_id AND a.id = v.appointment_id
             WHERE v.org_id = $1 AND v.id = $2 FOR UPDATE OF v",
            &[&org_id, &visit_id],
        )
        .await?
        .ok_or(AppError::NotFound("visit"))?;
    if let Some(pass_id) = row.try_get::<_, Option<Uuid>>(0)? {
        let credential = tx
            .query_opt(
                "SELECT id FROM credentials WHERE org_id = $1 AND pass_id = $2 AND kind = 'qr' AND revoked_at IS NULL",
                &[&org_id, &pass_id],
            )
            .await?
            .ok_or(AppError::NotFound("QR credential"))?;
        return Ok((pass_id, credential.try_get(0)?));
    }
    let status: String = row.try_get(6)?;
    let status: VisitStatus = status.parse().map_err(AppError::internal)?;
    if !status.is_open() {
        return Err(not_open(status));
    }
    let Some(rule) = row.try_get::<_, Option<Uuid>>(7)?.or(row.try_get(8)?) else {
        return Err(AppError::field(
            "access_rule_id",
            "neither the appointment nor the organization (visitor_rule_id) names the visitors' access rule",
        ));
    };
    let visitor_id: Uuid = row.try_get(1)?;
    let host_id: Uuid = row.try_get(2)?;
    let margin = Duration::minutes(i64::from(row.try_get::<_, i32>(9)?));
    let starts: DateTime<Utc> = row.try_get(4)?;
    let ends: DateTime<Utc> = row.try_get(5)?;
    let personal = load_personal(&tx, &app.auth.pepper, org_id, visitor_id).await?;
    let (pass_id, credential_id) = (Uuid::now_v7(), Uuid::now_v7());
    let lookup = credentials::lookup_key(&app.auth.pepper, credentials::QR, &credential_id.to_string());
    let draft = NewPass {
        id: pass_id,
        org_id,
        access_rule_id: rule,
        holder: &personal.name,
        pass_type: PassType::Multi,
        max_uses: Some(100),
        group_size: 1,
        valid_from: starts - margin,
        valid_to: ends + margin,
        escort_pass_id: None,
        issued_by: Some(host_id),
        appointment_id: row.try_get(3)?,
        visitor_id: Some(visitor_id),
        status: PassStatus::Suspended,
    };
    let stored = credentials::StoredCredential {
        id: credential_id,
        org_id,
        pass_id,
        kind: CredentialKind::Qr,
        format: None,
        lookup_hash: &lookup,
        number_hash: None,
        display_hint: None,
        card_sealed: None,
    };
    let pass_row = passes::write_pass(&tx, &draft, &stored, actor).await?;
    tx.execute(
        "UPDATE visits SET pass_id = $3, updated_at = now() WHERE org_id = $1 AND id = $2",
        &[&org_id, &visit_id, &pass_id],
    )
    .await?;
    tx.commit().await?;
    app.outbox.wake();
    let credential = CredentialRef { pass_id, kind: CredentialKind::Qr };
    passes::hand_over(app, &pass_row, vec![(lookup, credential)], Some(host_id)).await?;
    Ok((pass_id, credential_id))
}

/// What check-in answers: the visit, and the pass's current QR code for the badge.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CheckedIn {
    pub visit: Visit,
    pub qr: crate::app::passes::LiveQr,
}

/// Checks a visitor in at reception: the deny list is checked again (failing closed), the pass
/// made if need be and resumed; in force at every gate when this returns.
pub async fn check_in(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid) -> Result<CheckedIn, AppError> {
    let actor = caller.actor();
    let visit = load(app, &app.pool.get().await?, org_id, id, None).await?;
    if !visit.status.is_open() {
        return Err(match visit.status {
            VisitStatus::Denied => AppError::Conflict {
                code: Conflict::VisitorDenied,
                message: "the visitor matches the deny list; a security officer must review the visit".into(),
            },
            other => not_open(other),
        });
    }
    {
        let mut client = app.pool.get().await?;
        let tx = client.transaction().await?;
        let cleared: Option<Uuid> = tx
            .query_one("SELECT deny_cleared_by FROM visits WHERE org_id = $1 AND id = $2 FOR UPDATE", &[&org_id, &id])
            .await?
            .try_get(0)?;
        let personal = load_personal(&tx, &app.auth.pepper, org_id, visit.visitor_id).await?;
        let hit = match cleared {
            Some(_) => None,
            None => visitors::deny_match(&tx, &app.auth.pepper, org_id, &personal).await?,
        };
        if let Some(hit) = hit {
            tx.execute(
                "UPDATE visits SET status = 'denied', denied_reason = $3, updated_at = now() WHERE org_id = $1 AND id = $2",
                &[&org_id, &id, &format!("deny_list:{}", hit.kind)],
            )
            .await?;
            deny_alert(&tx, actor, org_id, id, &personal.name, &hit).await?;
            tx.commit().await?;
            app.outbox.wake();
            let event =
                visit_event(id, visit.visitor_id, visit.host_id, VisitStatus::Denied, &personal.name, visit.pass_id);
            app.engine.events().publish(org_id, event);
            return Err(AppError::Conflict {
                code: Conflict::VisitorDenied,
                message: "the visitor matches the deny list; the visit is held for a security officer's review".into(),
            });
        }
    }
    let (pass_id, credential_id) = ensure_pass(app, actor, org_id, id).await?;
    let audit = AuditEvent::new(Some(org_id), "pass.resumed", "pass", pass_id);
    match passes::change_pass(app, actor, org_id, pass_id, PassChange::Resume, Some(audit)).await {
        // Resumed now, or already (a check-in repeated after a crash between the two steps).
        Ok(_) | Err(AppError::Conflict { code: Conflict::PassNotSuspended, .. }) => {}
        Err(other) => return Err(other),
    }
    let visit =
        transition(app, actor, org_id, id, (VisitStatus::OPEN, VisitStatus::CheckedIn), "visit.checked_in").await?;
    Ok(CheckedIn { visit, qr: crate::app::passes::LiveQr::now(&app.auth.pepper, credential_id) })
}

/// Moves a visit from one of `from` to `to` in one transaction with its audit row and outbox
/// event, then tells the stream. A transition that lost a race (two desks checking one visitor in)
/// changes nothing and says so.
async fn transition(
    app: &App,
    actor: Actor,
    org_id: Uuid,
    id: Uuid,
    (from, to): (&[VisitStatus], VisitStatus),
    event_type: &'static str,
) -> Result<Visit, AppError> {
    let column = match to {
        VisitStatus::Arrived => ", arrived_at = coalesce(arrived_at, now())",
        VisitStatus::CheckedIn => ", checked_in_at = now(), arrived_at = coalesce(arrived_at, now())",
        VisitStatus::CheckedOut => ", checked_out_at = now()",
        _ => "",
    };
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let changed = tx
        .execute(
            &format!(
                "UPDATE visits SET status = $3, updated_at = now(){column}
                 WHERE org_id = $1 AND id = $2 AND status = ANY($4)"
            ),
            &[&org_id, &id, &to.as_str(), &from],
        )
        .await?;
    let visit = load(app, &tx, org_id, id, None).await?;
    if changed == 0 {
        return Err(not_open(visit.status));
    }
    if to == VisitStatus::CheckedIn {
        tx.execute(
            "UPDATE visitors SET last_visit_at = now() WHERE org_id = $1 AND id = $2",
            &[&org_id, &visit.visitor_id],
        )
        .await?;
    }
    audit::record(&tx, actor, AuditEvent::new(Some(org_id), event_type, "visit", id)).await?;
    let payload = json!({ "visit_id": id, "visitor_id": visit.visitor_id, "host_id": visit.host_id,
                          "appointment_id": visit.appointment_id, "pass_id": visit.pass_id,
                          "holder_name": visit.visitor_name, "status": to });
    crate::outbox::record(&tx, org_id, event_type, payload).await?;
    tx.commit().await?;
    app.outbox.wake();
    let event = visit_event(id, visit.visitor_id, visit.host_id, to, &visit.visitor_name, visit.pass_id);
    app.engine.events().publish(org_id, event);
    Ok(visit)
}

/// Checks a visitor out: their pass is revoked (`checked_out`) at every gate before this returns.
pub async fn check_out(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid) -> Result<Visit, AppError> {
    close(app, caller.actor(), org_id, id, VisitStatus::CheckedOut).await
}

/// The states a visit may be closed to `to` from.
fn closes_from(to: VisitStatus) -> &'static [VisitStatus] {
    match to {
        VisitStatus::CheckedOut => &[VisitStatus::CheckedIn],
        VisitStatus::Cancelled => {
            &[VisitStatus::Invited, VisitStatus::Registered, VisitStatus::Arrived, VisitStatus::Denied]
        }
        _ => VisitStatus::OPEN,
    }
}

/// Ends a visit (`checked_out`, `cancelled`, `no_show`): its pass, if any, is revoked first, once
/// the visit is known to be in a state it may close from.
async fn close(app: &App, actor: Actor, org_id: Uuid, id: Uuid, to: VisitStatus) -> Result<Visit, AppError> {
    let from = closes_from(to);
    let row = app
        .pool
        .get()
        .await?
        .query_opt("SELECT pass_id, status FROM visits WHERE org_id = $1 AND id = $2", &[&org_id, &id])
        .await?
        .ok_or(AppError::NotFound("visit"))?;
    let status: VisitStatus = row.try_get::<_, String>(1)?.parse().map_err(AppError::internal)?;
    if !from.contains(&status) {
        return Err(match to {
            VisitStatus::CheckedOut => {
                AppError::Conflict { code: Conflict::VisitNotCheckedIn, message: format!("the visit is {status}") }
            }
            _ => not_open(status),
        });
    }
    if let Some(pass_id) = row.try_get::<_, Option<Uuid>>(0)? {
        let audit = AuditEvent::new(Some(org_id), "pass.revoked", "pass", pass_id);
        let revoke = PassChange::Revoke { reason: to.as_str().to_owned() };
        match passes::change_pass(app, actor, org_id, pass_id, revoke, Some(audit)).await {
            // Already revoked or expired: nothing left to close.
            Ok(_) | Err(AppError::Conflict { code: Conflict::PassNotActive, .. }) => {}
            Err(other) => return Err(other),
        }
    }
    let event = match to {
        VisitStatus::CheckedOut => "visit.checked_out",
        VisitStatus::NoShow => "visit.no_show",
        _ => "visit.cancelled",
    };
    transition(app, actor, org_id, id, (from, to), event).await
}

/// Cancels one visit (the host, or the desk).
pub async fn cancel(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid) -> Result<Visit, AppError> {
    // Read through the caller's scope first: a host cancels only their own visitors' visits.
    get(app, caller, org_id, id).await?;
    close(app, caller.actor(), org_id, id, VisitStatus::Cancelled).await
}

/// The visitor is at the desk (or says so from the guest page): their host is told.
pub async fn arrive(app: &App, actor: Actor, org_id: Uuid, id: Uuid) -> Result<Visit, AppError> {
    let from = &[VisitStatus::Invited, VisitStatus::Registered];
    transition(app, actor, org_id, id, (from, VisitStatus::Arrived), "visit.arrived").await
}

/// A security officer's review of a denied visit: released (the match is judged a false one;
/// the visit may be checked in) or upheld (it stays denied).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Review {
    pub release: bool,
}

pub async fn review(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid, body: Review) -> Result<Visit, AppError> {
    let visit = get(app, caller, org_id, id).await?;
    if visit.status != VisitStatus::Denied {
        return Err(not_open(visit.status));
    }
    if !body.release {
        return Ok(visit);
    }
    let client = app.pool.get().await?;
    client
        .execute(
            "UPDATE visits SET deny_cleared_by = $3 WHERE org_id = $1 AND id = $2",
            &[&org_id, &id, &caller.principal.user_id()],
        )
        .await?;
    let released = (&[VisitStatus::Denied][..], VisitStatus::Registered);
    transition(app, caller.actor(), org_id, id, released, "visit.released").await
}

/// A walk-in: the visitor (new or recognised), the host, and until when.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WalkIn {
    pub visitor: Invitee,
    pub host_id: Uuid,
    #[serde(default, deserialize_with = "crate::app::input::opt_timestamp")]
    pub ends_at: Option<DateTime<Utc>>,
    pub access_rule_id: Option<Uuid>,
}

/// Registers a walk-in and checks them in, in one step.
pub async fn walk_in(app: &App, caller: &Caller<'_>, org_id: Uuid, body: WalkIn) -> Result<CheckedIn, AppError> {
    let mut fields = Fields::new();
    let now = Utc::now();
    let ends = body.ends_at.unwrap_or(now + Duration::hours(WALK_IN_HOURS));
    if ends <= now || ends - now > Duration::hours(24) {
        fields.insert("ends_at".into(), "must be in the next 24 hours".into());
    }
    let mut client = app.pool.get().await?;
    let host = check_host(&client, caller, org_id, Some(body.host_id), &mut fields).await?;
    let personal = match body.visitor {
        Invitee::New(input) => input.check(&mut fields, "visitor.").map(Ok),
        Invitee::Known { visitor_id } => Some(Err(visitor_id)),
    };
    done(fields)?;
    let (Some(host), Some(personal)) = (host, personal) else {
        return Err(AppError::internal("a checked field was missing"));
    };
    let tx = client.transaction().await?;
    let visitor_id = match personal {
        Ok(personal) => {
            visitors::register(&tx, visitors::DataKey::of(app), org_id, personal, caller.principal.user_id()).await?.id
        }
        Err(visitor_id) => {
            load_personal(&tx, &app.auth.pepper, org_id, visitor_id)
                .await
                .map_err(|_| AppError::field("visitor.visitor_id", "no such visitor in this organization"))?;
            visitor_id
        }
    };
    let appointment = match body.access_rule_id {
        // A rule of its own for this walk-in: carried by a one-visit appointment.
        Some(rule) => {
            let id = Uuid::now_v7();
            tx.execute(
                "INSERT INTO appointments (id, org_id, host_id, title, starts_at, ends_at, access_rule_id, created_by)
                 VALUES ($1, $2, $3, 'Walk-in', $4, $5, $6, $7)",
                &[&id, &org_id, &host, &now, &ends, &rule, &caller.principal.user_id()],
            )
            .await
            .map_err(|_| AppError::field("access_rule_id", "no such access rule in this organization"))?;
            Some(id)
        }
        None => None,
    };
    let id = Uuid::now_v7();
    tx.execute(
        "INSERT INTO visits (id, org_id, appointment_id, visitor_id, host_id, starts_at, ends_at, status, arrived_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'arrived', $6)",
        &[&id, &org_id, &appointment, &visitor_id, &host, &now, &ends],
    )
    .await?;
    audit::record(&tx, caller.actor(), AuditEvent::new(Some(org_id), "visit.walked_in", "visit", id)).await?;
    tx.commit().await?;
    check_in(app, caller, org_id, id).await
}

/// Closes what time has ended: visitors still checked in the organization's
/// `auto_checkout_minutes` after their visit, or at its `day_ends_at`, are checked out; visits nobody came to are
/// `no_show`; appointments whose visits are all closed are `completed`. Then purges visitor data
/// past retention and spent guest tokens.
pub async fn housekeeping(app: &App) -> Result<(), AppError> {
    let system = Actor::default();
    let due = app
        .pool
        .get()
        .await?
        .query(
            "SELECT v.org_id, v.id, v.status FROM visits v JOIN organizations o ON o.id = v.org_id
             WHERE (v.status = 'checked_in' AND v.ends_at + make_interval(mins => o.auto_checkout_minutes) <= now())
                OR (v.status = 'checked_in' AND o.day_ends_at IS NOT NULL
                    AND ((v.starts_at AT TIME ZONE o.timezone)::date + o.day_ends_at) AT TIME ZONE o.timezone <= now())
                OR (v.status IN ('invited', 'registered', 'arrived') AND v.ends_at <= now())
             ORDER BY v.ends_at LIMIT 200",
            &[],
        )
        .await?;
    for row in due {
        let (org_id, id, status): (Uuid, Uuid, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let to = if status == "checked_in" { VisitStatus::CheckedOut } else { VisitStatus::NoShow };
        if let Err(err) = close(app, system, org_id, id, to).await {
            tracing::warn!(visit = %id, error = %err, "visit not closed");
        }
    }
    let client = app.pool.get().await?;
    client
        .execute(
            "UPDATE appointments a SET status = 'completed', updated_at = now()
             WHERE status = 'scheduled' AND NOT EXISTS (
                 SELECT 1 FROM visits v WHERE v.org_id = a.org_id AND v.appointment_id = a.id
                   AND v.status IN ('invited', 'registered', 'arrived', 'checked_in', 'denied'))",
            &[],
        )
        .await?;
    let resealed = visitors::reseal(&client, visitors::DataKey::of(app), 500).await?;
    if resealed > 0 {
        tracing::info!(rows = resealed, "re-sealed personal data under the current key version");
    }
    let purged = visitors::purge_expired(&client).await?;
    if purged > 0 {
        tracing::info!(visitors = purged, "purged visitors' personal data past retention");
    }
    client.execute("DELETE FROM guest_tokens WHERE expires_at < now() - interval '1 day'", &[]).await?;
    Ok(())
}

/// The guest completed their registration (details, consents): `invited → registered`.
pub async fn register(app: &App, actor: Actor, org_id: Uuid, id: Uuid) -> Result<Visit, AppError> {
    let from = &[VisitStatus::Invited];
    transition(app, actor, org_id, id, (from, VisitStatus::Registered), "visit.registered").await
}
