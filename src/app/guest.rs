//! Guest access: a visitor signs in with the single-use link of their invitation, or with a
//! one-time code mailed on request, and gets a `guest` session limited to their own visits:
//! the organization's public settings, their visits, and the current QR code of a visit's pass.
//!
//! Links, codes and sessions are random tokens stored only as keyed hashes. A guest session is
//! no user session: it opens the `/api/v1/guest/` routes and nothing else.

use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::GenericClient;
use portcullis_actors::domain::VisitStatus;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::App;
use crate::app::input::{Checked, Email, Fields, done};
use crate::app::passes::LiveQr;
use crate::app::visits;
use crate::audit::{self, Actor, Event as AuditEvent};
use crate::crypto;
use crate::error::AppError;

/// A session lasts until the guest's last open visit ends plus this, at most 30 days.
const SESSION_AFTER_VISIT_HOURS: i64 = 12;
/// A one-time code is good for this long.
const CODE_MINUTES: i64 = 10;

pub fn token_hash(pepper: &SecretString, token: &str) -> Vec<u8> {
    crypto::keyed_hash(pepper, "guest-token", token)
}

/// A signed-in guest.
#[derive(Debug, Clone, Copy)]
pub struct Guest {
    pub org_id: Uuid,
    pub visitor_id: Uuid,
}

/// How a guest signs in: the link's token, or the organization, their e-mail and a code.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum SignIn {
    Link {
        link: String,
    },
    Code {
        org: String,
        #[schema(value_type = String)]
        email: Checked<Email>,
        code: String,
    },
}

/// A guest session (the token is shown once). Not `Debug`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct GuestSession {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

async fn open_session(app: &App, client: &impl GenericClient, guest: Guest) -> Result<GuestSession, AppError> {
    let last_end: Option<DateTime<Utc>> = client
        .query_one(
            "SELECT max(ends_at) FROM visits WHERE org_id = $1 AND visitor_id = $2
               AND status IN ('invited', 'registered', 'arrived', 'checked_in')",
            &[&guest.org_id, &guest.visitor_id],
        )
        .await?
        .try_get(0)?;
    let now = Utc::now();
    let expires_at =
        (last_end.unwrap_or(now).max(now) + Duration::hours(SESSION_AFTER_VISIT_HOURS)).min(now + Duration::days(30));
    let token = format!("pcg_{}", crypto::random_token(32));
    client
        .execute(
            "INSERT INTO guest_tokens (token_hash, org_id, visitor_id, kind, expires_at) VALUES ($1, $2, $3, 'session', $4)",
            &[&token_hash(&app.auth.pepper, &token), &guest.org_id, &guest.visitor_id, &expires_at],
        )
        .await?;
    audit::record(
        client,
        Actor::default(),
        AuditEvent::new(Some(guest.org_id), "guest.signed_in", "visitor", guest.visitor_id),
    )
    .await?;
    Ok(GuestSession { token, expires_at })
}

/// Spends a link or a code (each once) for a session; 401 `invalid_token` otherwise.
pub async fn sign_in(app: &App, body: SignIn, addr: Option<std::net::IpAddr>) -> Result<GuestSession, AppError> {
    let pepper = &app.auth.pepper;
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let spent = match body {
        SignIn::Link { link } => {
            tx.query_opt(
                "UPDATE guest_tokens SET used_at = now()
                 WHERE token_hash = $1 AND kind = 'link' AND used_at IS NULL AND expires_at > now()
                 RETURNING org_id, visitor_id",
                &[&token_hash(pepper, link.trim())],
            )
            .await?
        }
        SignIn::Code { org, email, code } => {
            let mut fields = Fields::new();
            let email = email.take(&mut fields, "email");
            done(fields)?;
            let Some(email) = email else { return Err(AppError::InvalidToken) };
            let account = format!("guest:{}:{}", org.trim(), email.as_str());
            app.auth.limiter.check(&account, addr)?;
            let row = tx
                .query_opt(
                    "UPDATE guest_tokens t SET used_at = now()
                     FROM visitors v JOIN organizations o ON o.id = v.org_id
                     WHERE (o.slug = $1 OR o.id::text = $1) AND v.email_hash = $2 AND t.org_id = v.org_id
                       AND t.visitor_id = v.id AND t.token_hash = $3 AND t.kind = 'code' AND t.used_at IS NULL
                       AND t.expires_at > now()
                     RETURNING t.org_id, t.visitor_id",
                    &[
                        &org.trim(),
                        &crate::app::visitors::email_hash(pepper, email.as_str()),
                        &token_hash(pepper, code.trim()),
                    ],
                )
                .await?;
            match &row {
                Some(_) => app.auth.limiter.succeeded(&account, addr),
                None => app.auth.limiter.failed(&account, addr, true),
            }
            row
        }
    };
    let Some(row) = spent else { return Err(AppError::InvalidToken) };
    let guest = Guest { org_id: row.try_get(0)?, visitor_id: row.try_get(1)? };
    let session = open_session(app, &tx, guest).await?;
    tx.commit().await?;
    Ok(session)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    /// The organization's slug.
    pub org: String,
    #[schema(value_type = String)]
    pub email: Checked<Email>,
}

/// Mails a one-time code to a visitor with a visit to come. Answers the same whether or not the
/// address is known (no oracle); limited like logins.
pub async fn request_code(app: &App, body: CodeRequest, addr: Option<std::net::IpAddr>) -> Result<(), AppError> {
    let mut fields = Fields::new();
    let email = body.email.take(&mut fields, "email");
    done(fields)?;
    let Some(email) = email else { return Ok(()) };
    let account = format!("guest:{}:{}", body.org.trim(), email.as_str());
    app.auth.limiter.check(&account, addr)?;
    // Each request counts as a failure until a code is used: a flood of requests is limited.
    app.auth.limiter.failed(&account, addr, true);
    let pepper = &app.auth.pepper;
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT v.org_id, v.id, v.sealed, v.key_version, o.name, o.locale FROM visitors v
             JOIN organizations o ON o.id = v.org_id
             WHERE (o.slug = $1 OR o.id::text = $1) AND v.email_hash = $2
               AND EXISTS (SELECT 1 FROM visits s WHERE s.org_id = v.org_id AND s.visitor_id = v.id
                             AND s.status IN ('invited', 'registered', 'arrived', 'checked_in') AND s.ends_at > now())",
            &[&body.org.trim(), &crate::app::visitors::email_hash(pepper, email.as_str())],
        )
        .await?;
    let Some(row) = row else { return Ok(()) };
    let (org_id, visitor_id): (Uuid, Uuid) = (row.try_get(0)?, row.try_get(1)?);
    let sealed: Vec<u8> = row.try_get(2)?;
    let personal = crate::app::visitors::open(pepper, row.try_get(3)?, &sealed)?;
    let code = format!("{:06}", rand::random::<u32>() % 1_000_000);
    tx.execute(
        "INSERT INTO guest_tokens (token_hash, org_id, visitor_id, kind, expires_at)
         VALUES ($1, $2, $3, 'code', now() + make_interval(mins => $4))",
        &[&token_hash(pepper, &code), &org_id, &visitor_id, &(CODE_MINUTES as i32)],
    )
    .await?;
    let org_name: String = row.try_get(4)?;
    let locale: String = row.try_get(5)?;
    let message = crate::outbox::notify::guest_code(&locale, &org_name, &code, CODE_MINUTES);
    // A code is its own event: each request queues one mail.
    let mail = crate::outbox::notify::QueuedMail {
        org_id,
        user_id: None,
        event_id: Uuid::now_v7(),
        name: &personal.name,
        email: email.as_str(),
        message: &message,
    };
    crate::outbox::notify::queue_mail(&tx, mail).await?;
    tx.commit().await?;
    Ok(())
}

/// The guest a session token belongs to; 401 `invalid_token` if it is unknown or expired.
pub async fn authenticate(app: &App, token: &str) -> Result<Guest, AppError> {
    let row = app
        .pool
        .get()
        .await?
        .query_opt(
            "SELECT org_id, visitor_id FROM guest_tokens WHERE token_hash = $1 AND kind = 'session' AND expires_at > now()",
            &[&token_hash(&app.auth.pepper, token)],
        )
        .await?
        .ok_or(AppError::InvalidToken)?;
    Ok(Guest { org_id: row.try_get(0)?, visitor_id: row.try_get(1)? })
}

/// What the guest page shows.
#[derive(Serialize, utoipa::ToSchema)]
pub struct GuestHome {
    pub organization: GuestOrg,
    pub visitor_name: String,
    pub visits: Vec<GuestVisit>,
}

/// The organization's public face.
#[derive(Serialize, utoipa::ToSchema)]
pub struct GuestOrg {
    pub name: String,
    pub timezone: String,
    pub address: Option<String>,
    pub instructions: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct GuestVisit {
    pub id: Uuid,
    pub title: Option<String>,
    pub room: Option<String>,
    pub host_name: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub status: VisitStatus,
}

pub async fn home(app: &App, guest: Guest) -> Result<GuestHome, AppError> {
    let client = app.pool.get().await?;
    let org = client
        .query_one(
            "SELECT name, timezone, address, guest_instructions FROM organizations WHERE id = $1",
            &[&guest.org_id],
        )
        .await?;
    let sealed = client
        .query_opt(
            "SELECT sealed, key_version FROM visitors WHERE org_id = $1 AND id = $2",
            &[&guest.org_id, &guest.visitor_id],
        )
        .await?
        .ok_or(AppError::InvalidToken)?;
    let bytes: Vec<u8> = sealed.try_get(0)?;
    let personal = crate::app::visitors::open(&app.auth.pepper, sealed.try_get(1)?, &bytes)?;
    let rows = client
        .query(
            "SELECT v.id, a.title, a.room, u.name, v.starts_at, v.ends_at, v.status FROM visits v
             JOIN users u ON u.id = v.host_id
             LEFT JOIN appointments a ON a.org_id = v.org_id AND a.id = v.appointment_id
             WHERE v.org_id = $1 AND v.visitor_id = $2 AND v.ends_at > now() - interval '1 day'
             ORDER BY v.starts_at LIMIT 50",
            &[&guest.org_id, &guest.visitor_id],
        )
        .await?;
    let mut visits = Vec::new();
    for row in rows {
        let status: String = row.try_get(6)?;
        visits.push(GuestVisit {
            id: row.try_get(0)?,
            title: row.try_get(1)?,
            room: row.try_get(2)?,
            host_name: row.try_get(3)?,
            starts_at: row.try_get(4)?,
            ends_at: row.try_get(5)?,
            status: status.parse().map_err(AppError::internal)?,
        });
    }
    Ok(GuestHome {
        organization: GuestOrg {
            name: org.try_get(0)?,
            timezone: org.try_get(1)?,
            address: org.try_get(2)?,
            instructions: org.try_get(3)?,
        },
        visitor_name: personal.name,
        visits,
    })
}

/// The guest's own visit, or 404 (another's visit does not exist for them).
async fn own_visit(app: &App, guest: Guest, visit_id: Uuid) -> Result<VisitStatus, AppError> {
    let row = app
        .pool
        .get()
        .await?
        .query_opt(
            "SELECT status FROM visits WHERE org_id = $1 AND id = $2 AND visitor_id = $3",
            &[&guest.org_id, &visit_id, &guest.visitor_id],
        )
        .await?
        .ok_or(AppError::NotFound("visit"))?;
    let status: String = row.try_get(0)?;
    status.parse().map_err(AppError::internal)
}

/// The current QR code of the visit's pass (made now if need be; refused at the gates until
/// reception checks the guest in).
pub async fn qr(app: &App, guest: Guest, visit_id: Uuid) -> Result<LiveQr, AppError> {
    let status = own_visit(app, guest, visit_id).await?;
    if !(status.is_open() || status == VisitStatus::CheckedIn) {
        return Err(visits::not_open(status));
    }
    let actor = Actor::default();
    let (_, credential_id) = visits::ensure_pass(app, actor, guest.org_id, visit_id).await?;
    Ok(LiveQr::now(&app.auth.pepper, credential_id))
}

/// The guest completes their registration: details and consents, `invited → registered`.
pub async fn register(
    app: &App,
    guest: Guest,
    visit_id: Uuid,
    details: crate::app::visitors::Details,
) -> Result<GuestVisit, AppError> {
    own_visit(app, guest, visit_id).await?;
    {
        let mut client = app.pool.get().await?;
        let tx = client.transaction().await?;
        let key = crate::app::visitors::DataKey::of(app);
        crate::app::visitors::add_details(&tx, key, guest.org_id, guest.visitor_id, details).await?;
        tx.commit().await?;
    }
    let visit = visits::register(app, Actor::default(), guest.org_id, visit_id).await?;
    Ok(guest_visit(visit))
}

fn guest_visit(visit: visits::Visit) -> GuestVisit {
    GuestVisit {
        id: visit.id,
        title: visit.title,
        room: visit.room,
        host_name: visit.host_name,
        starts_at: visit.starts_at,
        ends_at: visit.ends_at,
        status: visit.status,
    }
}

/// The guest says they are here: their host is told.
pub async fn arrive(app: &App, guest: Guest, visit_id: Uuid) -> Result<GuestVisit, AppError> {
    own_visit(app, guest, visit_id).await?;
    let visit = visits::arrive(app, Actor::default(), guest.org_id, visit_id).await?;
    Ok(guest_visit(visit))
}
