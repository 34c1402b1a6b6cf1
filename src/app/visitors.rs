//! Visitors and the deny list.
//!
//! A visitor's personal fields (name, e-mail, phone, company, document number, photo, consents)
//! are one AES-256-GCM box under a key derived from the server secret ([`seal`]); the database
//! holds the box and keyed hashes (HMAC) for recognition and search, never a value in clear. A
//! returning visitor is recognised by e-mail. Nothing here logs a personal field: [`Personal`]
//! has no `Debug`.
//!
//! The deny list matches names (each alias an entry), e-mails, phones and document numbers,
//! exactly and case-insensitively, on the same keyed hashes.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
pub use portcullis_actors::domain::DenyKind;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::app::input::{Checked, Email, Fields, Name, done, optional_text};
use crate::app::{App, Caller, host_scope};
use crate::audit::{self, Event as AuditEvent};
use crate::crypto;
use crate::db::pagination::{self, ListQuery, Page};
use crate::error::{AppError, Conflict};

fn purpose(version: i16) -> String {
    format!("visitor-personal-data/v{version}")
}

/// The key personal data is sealed under now: derived from the server secret and its version
/// (`visits.data_key_version`). Rows name the version they were sealed under, so every version
/// still opens; housekeeping re-seals older rows under the current one ([`reseal`]).
#[derive(Clone, Copy)]
pub struct DataKey<'a> {
    pub pepper: &'a SecretString,
    pub version: i16,
}

impl<'a> DataKey<'a> {
    pub fn of(app: &'a App) -> Self {
        DataKey { pepper: &app.auth.pepper, version: app.settings.visits.data_key_version }
    }
}

/// A photo is a `data:image/…` URL of at most this many characters.
const MAX_PHOTO_CHARS: usize = 400_000;

/// A visitor's personal fields, as sealed. No `Debug`: it is never logged.
#[derive(Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Personal {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub document_number: Option<String>,
    /// A `data:image/…` URL.
    pub photo: Option<String>,
    #[serde(default)]
    pub consents: Vec<Consent>,
}

/// A consent the visitor gave: to what, the version of the text they were shown, and when.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Consent {
    pub kind: String,
    pub text_version: String,
    pub given_at: DateTime<Utc>,
}

/// Seals a visitor's fields under the current key.
pub fn seal(key: DataKey<'_>, personal: &Personal) -> Result<Vec<u8>, AppError> {
    let plain = serde_json::to_vec(personal).map_err(AppError::internal)?;
    Ok(crypto::seal_secret(key.pepper, &purpose(key.version), &plain))
}

/// Opens a sealed box (of any key version still known).
pub fn open(pepper: &SecretString, version: i16, sealed: &[u8]) -> Result<Personal, AppError> {
    let plain = crypto::open_secret(pepper, &purpose(version), sealed)
        .ok_or_else(|| AppError::internal("a visitor's sealed fields do not open under the server secret"))?;
    serde_json::from_slice(&plain).map_err(AppError::internal)
}

/// How each kind of value is compared: names and e-mails case-insensitively with spaces
/// collapsed, phones by their digits, documents by their letters and digits.
fn normalize(kind: DenyKind, value: &str) -> String {
    match kind {
        DenyKind::Name | DenyKind::Email => value.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase(),
        DenyKind::Phone => value.chars().filter(char::is_ascii_digit).collect(),
        DenyKind::Document => value.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_uppercase(),
    }
}

fn value_hash(pepper: &SecretString, kind: DenyKind, value: &str) -> Vec<u8> {
    crypto::keyed_hash(pepper, &format!("visitor-{}", kind.as_str()), &normalize(kind, value))
}

/// The keyed hash an e-mail is recognised by.
pub fn email_hash(pepper: &SecretString, email: &str) -> Vec<u8> {
    value_hash(pepper, DenyKind::Email, email)
}

fn word_hashes(pepper: &SecretString, text: &str) -> Vec<Vec<u8>> {
    let mut words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
    words.sort();
    words.dedup();
    words.iter().map(|w| crypto::keyed_hash(pepper, "visitor-name-word", w)).collect()
}

/// What a visitor is registered with.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VisitorInput {
    #[schema(value_type = String)]
    pub name: Checked<Name>,
    #[schema(value_type = Option<String>)]
    pub email: Option<Checked<Email>>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub document_number: Option<String>,
    /// A `data:image/…` URL.
    pub photo: Option<String>,
    /// Consents given now: `{kind, text_version}`.
    #[serde(default)]
    pub consents: Vec<ConsentInput>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentInput {
    pub kind: String,
    pub text_version: String,
}

impl VisitorInput {
    /// The fields, checked; every bad one is named under `prefix` (e.g. `visitors[0].`).
    pub fn check(self, fields: &mut Fields, prefix: &str) -> Option<Personal> {
        let name = self.name.take(fields, &format!("{prefix}name"));
        let email = self.email.and_then(|e| e.take(fields, &format!("{prefix}email")));
        let details = Details {
            phone: self.phone,
            company: self.company,
            document_number: self.document_number,
            consents: self.consents,
        }
        .check(fields, prefix);
        let photo = self.photo.filter(|p| !p.is_empty());
        if let Some(photo) = &photo
            && (!photo.starts_with("data:image/") || photo.len() > MAX_PHOTO_CHARS)
        {
            fields.insert(
                format!("{prefix}photo"),
                format!("must be a data:image/… URL of at most {MAX_PHOTO_CHARS} characters"),
            );
        }
        Some(Personal {
            name: name?.as_str().to_owned(),
            email: email.map(|e| e.as_str().to_owned()),
            phone: details.phone,
            company: details.company,
            document_number: details.document_number,
            photo,
            consents: details.consents,
        })
    }
}

/// Contact details and consents, checked.
struct CheckedDetails {
    phone: Option<String>,
    company: Option<String>,
    document_number: Option<String>,
    consents: Vec<Consent>,
}

impl Details {
    /// The details, checked (registration and a guest's own additions alike); every bad one is
    /// named under `prefix`. Consents are given now.
    fn check(self, fields: &mut Fields, prefix: &str) -> CheckedDetails {
        let phone = optional_text(fields, &format!("{prefix}phone"), self.phone.as_deref(), 40);
        if phone.as_deref().is_some_and(|p| {
            !p.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c)) || !p.chars().any(|c| c.is_ascii_digit())
        }) {
            fields.insert(format!("{prefix}phone"), "must be digits, spaces and + - ( ) .".into());
        }
        let company = optional_text(fields, &format!("{prefix}company"), self.company.as_deref(), 200);
        let document_number =
            optional_text(fields, &format!("{prefix}document_number"), self.document_number.as_deref(), 100);
        let now = Utc::now();
        let mut consents = Vec::new();
        for (i, c) in self.consents.into_iter().enumerate() {
            let (kind, version) = (c.kind.trim(), c.text_version.trim());
            if kind.is_empty() || kind.len() > 100 || version.is_empty() || version.len() > 100 {
                fields.insert(
                    format!("{prefix}consents[{i}]"),
                    "needs a kind and a text_version of 1 to 100 characters".into(),
                );
                continue;
            }
            consents.push(Consent { kind: kind.to_owned(), text_version: version.to_owned(), given_at: now });
        }
        CheckedDetails { phone, company, document_number, consents }
    }
}

/// A visitor as the desk sees them.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Visitor {
    pub id: Uuid,
    #[serde(flatten)]
    pub personal: Personal,
    /// When they last came in (checked in).
    pub last_visit_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Whether this answer found a visitor already registered (by e-mail) rather than a new one.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub recognised: bool,
}

impl pagination::Identified for Visitor {
    fn id(&self) -> Uuid {
        self.id
    }
}

const VISITOR_COLUMNS: &str = "id, sealed, key_version, last_visit_at, created_at";

fn visitor_from_row(pepper: &SecretString, row: &tokio_postgres::Row) -> Result<Visitor, AppError> {
    let sealed: Vec<u8> = row.try_get(1)?;
    Ok(Visitor {
        id: row.try_get(0)?,
        personal: open(pepper, row.try_get(2)?, &sealed)?,
        last_visit_at: row.try_get(3)?,
        created_at: row.try_get(4)?,
        recognised: false,
    })
}

/// Registers a visitor, or recognises a returning one by e-mail (whose other fields are updated
/// with what was given). Checked against nothing: the deny list is checked at invitation and at
/// arrival.
pub async fn register(
    client: &impl GenericClient,
    key: DataKey<'_>,
    org_id: Uuid,
    personal: Personal,
    created_by: Option<Uuid>,
) -> Result<Visitor, AppError> {
    let pepper = key.pepper;
    let email_hash = personal.email.as_deref().map(|e| value_hash(pepper, DenyKind::Email, e));
    if let Some(hash) = &email_hash {
        let row = client
            .query_opt(
                &format!("SELECT {VISITOR_COLUMNS} FROM visitors WHERE org_id = $1 AND email_hash = $2 FOR UPDATE"),
                &[&org_id, hash],
            )
            .await?;
        if let Some(row) = row {
            let known = visitor_from_row(pepper, &row)?;
            let merged = Personal {
                name: personal.name,
                email: personal.email,
                phone: personal.phone.or(known.personal.phone),
                company: personal.company.or(known.personal.company),
                document_number: personal.document_number.or(known.personal.document_number),
                photo: personal.photo.or(known.personal.photo),
                consents: [known.personal.consents, personal.consents].concat(),
            };
            write(client, key, org_id, known.id, &merged, false, created_by).await?;
            return Ok(Visitor { personal: merged, recognised: true, ..known });
        }
    }
    let id = Uuid::now_v7();
    write(client, key, org_id, id, &personal, true, created_by).await?;
    Ok(Visitor { id, personal, last_visit_at: None, created_at: Utc::now(), recognised: false })
}

async fn write(
    client: &impl GenericClient,
    key: DataKey<'_>,
    org_id: Uuid,
    id: Uuid,
    personal: &Personal,
    new: bool,
    created_by: Option<Uuid>,
) -> Result<(), AppError> {
    let pepper = key.pepper;
    let sealed = seal(key, personal)?;
    let email = personal.email.as_deref().map(|e| value_hash(pepper, DenyKind::Email, e));
    let phone = personal.phone.as_deref().map(|p| value_hash(pepper, DenyKind::Phone, p));
    let document = personal.document_number.as_deref().map(|d| value_hash(pepper, DenyKind::Document, d));
    let name = value_hash(pepper, DenyKind::Name, &personal.name);
    let words = word_hashes(pepper, &personal.name);
    if new {
        client
            .execute(
                "INSERT INTO visitors (id, org_id, sealed, key_version, email_hash, phone_hash, document_hash, name_hash,
                                       name_words, created_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[&id, &org_id, &sealed, &key.version, &email, &phone, &document, &name, &words, &created_by],
            )
            .await
            .map_err(|e| AppError::unique(e, "a visitor with this e-mail is registered"))?;
    } else {
        client
            .execute(
                "UPDATE visitors SET sealed = $3, key_version = $4, email_hash = $5, phone_hash = $6, document_hash = $7,
                        name_hash = $8, name_words = $9, updated_at = now()
                 WHERE org_id = $1 AND id = $2",
                &[&org_id, &id, &sealed, &key.version, &email, &phone, &document, &name, &words],
            )
            .await
            .map_err(|e| AppError::unique(e, "a visitor with this e-mail is registered"))?;
    }
    Ok(())
}

/// What a guest adds about themselves when they register: contact details and consents.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Details {
    pub phone: Option<String>,
    pub company: Option<String>,
    pub document_number: Option<String>,
    /// Consents given now: `{kind, text_version}`.
    #[serde(default)]
    pub consents: Vec<ConsentInput>,
}

/// Adds a guest's details and consents to their record (what they leave out stays as it was).
pub async fn add_details(
    client: &impl GenericClient,
    key: DataKey<'_>,
    org_id: Uuid,
    visitor_id: Uuid,
    details: Details,
) -> Result<(), AppError> {
    let row = client
        .query_opt(
            &format!("SELECT {VISITOR_COLUMNS} FROM visitors WHERE org_id = $1 AND id = $2 FOR UPDATE"),
            &[&org_id, &visitor_id],
        )
        .await?
        .ok_or(AppError::NotFound("visitor"))?;
    let mut fields = Fields::new();
    let given = details.check(&mut fields, "");
    done(fields)?;
    let known = visitor_from_row(key.pepper, &row)?;
    let merged = Personal {
        phone: given.phone.or(known.personal.phone),
        company: given.company.or(known.personal.company),
        document_number: given.document_number.or(known.personal.document_number),
        consents: [known.personal.consents, given.consents].concat(),
        ..known.personal
    };
    write(client, key, org_id, visitor_id, &merged, false, None).await
}

/// `POST /visitors`: registers (or recognises) a visitor.
pub async fn create(app: &App, caller: &Caller<'_>, org_id: Uuid, body: VisitorInput) -> Result<Visitor, AppError> {
    let mut fields = Fields::new();
    let personal = body.check(&mut fields, "");
    done(fields)?;
    let Some(personal) = personal else { return Err(AppError::internal("a checked field was missing")) };
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let visitor = register(&tx, DataKey::of(app), org_id, personal, caller.principal.user_id()).await?;
    let action = if visitor.recognised { "visitor.updated" } else { "visitor.registered" };
    audit::record(&tx, caller.actor(), AuditEvent::new(Some(org_id), action, "visitor", visitor.id)).await?;
    tx.commit().await?;
    Ok(visitor)
}

#[derive(Deserialize)]
pub struct VisitorQuery {
    /// An e-mail (exact), or words of the name (each whole, any case).
    pub q: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

/// `GET /visitors?q=`: search by e-mail or name words.
pub async fn list(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    query: &VisitorQuery,
) -> Result<Page<Visitor>, AppError> {
    let pepper = &app.auth.pepper;
    let limit = pagination::limit(query.limit)?;
    let after: Option<Uuid> = pagination::decode(query.cursor.as_deref())?;
    let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let email = q.filter(|q| q.contains('@')).map(|q| value_hash(pepper, DenyKind::Email, q));
    let words = q.filter(|q| !q.contains('@')).map(|q| word_hashes(pepper, q));
    let client = app.pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {VISITOR_COLUMNS} FROM visitors v
                 WHERE org_id = $1 AND ($2::bytea IS NULL OR email_hash = $2) AND ($3::bytea[] IS NULL OR name_words @> $3)
                   AND ($4::uuid IS NULL OR EXISTS (SELECT 1 FROM visits s WHERE s.org_id = v.org_id
                                                     AND s.visitor_id = v.id AND s.host_id = $4))
                   AND ($5::uuid IS NULL OR id > $5)
                 ORDER BY id LIMIT $6"
            ),
            &[&org_id, &email, &words, &host_scope(caller.principal, org_id), &after, &(limit + 1)],
        )
        .await?;
    let items = rows.iter().map(|row| visitor_from_row(pepper, row)).collect::<Result<Vec<_>, _>>()?;
    Ok(pagination::page(items, limit, |v: &Visitor| Some(v.id.to_string())))
}

/// One visitor (hosts: of their own visits).
pub async fn get(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid) -> Result<Visitor, AppError> {
    let client = app.pool.get().await?;
    let row = client
        .query_opt(
            &format!(
                "SELECT {VISITOR_COLUMNS} FROM visitors v WHERE org_id = $1 AND id = $2
                   AND ($3::uuid IS NULL OR EXISTS (SELECT 1 FROM visits s WHERE s.org_id = v.org_id
                                                     AND s.visitor_id = v.id AND s.host_id = $3))"
            ),
            &[&org_id, &id, &host_scope(caller.principal, org_id)],
        )
        .await?
        .ok_or(AppError::NotFound("visitor"))?;
    visitor_from_row(&app.auth.pepper, &row)
}

/// Everything held about one visitor (a subject access request): their fields and visits.
#[derive(Serialize, utoipa::ToSchema)]
pub struct VisitorExport {
    pub visitor: Visitor,
    #[schema(value_type = Vec<Object>)]
    pub visits: Vec<serde_json::Value>,
}

pub async fn export(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid) -> Result<VisitorExport, AppError> {
    let visitor = get(app, caller, org_id, id).await?;
    let client = app.pool.get().await?;
    let visits = crate::db::query_as(
        &client,
        "SELECT id, appointment_id, host_id, starts_at, ends_at, status, arrived_at, checked_in_at, checked_out_at
         FROM visits WHERE org_id = $1 AND visitor_id = $2 ORDER BY starts_at",
        &[&org_id, &id],
    )
    .await?;
    audit::record(&client, caller.actor(), AuditEvent::new(Some(org_id), "visitor.exported", "visitor", id)).await?;
    Ok(VisitorExport { visitor, visits })
}

/// Erases a visitor's personal data (on request, or by retention): the row and its sealed
/// fields go, their visits with it; the check-in facts stay, their passes renamed `Visitor`.
pub async fn erase(client: &impl GenericClient, org_id: Uuid, id: Uuid) -> Result<bool, AppError> {
    client
        .execute("UPDATE passes SET holder_name = 'Visitor' WHERE org_id = $1 AND visitor_id = $2", &[&org_id, &id])
        .await?;
    client.execute("UPDATE visits SET pass_id = NULL WHERE org_id = $1 AND visitor_id = $2", &[&org_id, &id]).await?;
    Ok(client.execute("DELETE FROM visitors WHERE org_id = $1 AND id = $2", &[&org_id, &id]).await? > 0)
}

/// `DELETE /visitors/{id}`: erasure on request. A visitor inside the building is not erased
/// (check them out first).
pub async fn delete(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid) -> Result<(), AppError> {
    get(app, caller, org_id, id).await?;
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let inside = tx
        .query_opt(
            "SELECT 1 FROM visits WHERE org_id = $1 AND visitor_id = $2 AND status = 'checked_in' FOR UPDATE",
            &[&org_id, &id],
        )
        .await?;
    if inside.is_some() {
        return Err(AppError::Conflict { code: Conflict::InUse, message: "the visitor is checked in".into() });
    }
    if !erase(&tx, org_id, id).await? {
        return Err(AppError::NotFound("visitor"));
    }
    audit::record(&tx, caller.actor(), AuditEvent::new(Some(org_id), "visitor.erased", "visitor", id)).await?;
    tx.commit().await?;
    Ok(())
}

/// Purges the personal data of visitors whose last visit ended more than their organization's
/// retention ago; how many were purged.
pub async fn purge_expired(client: &impl GenericClient) -> Result<u64, AppError> {
    let rows = client
        .query(
            "SELECT v.org_id, v.id FROM visitors v JOIN organizations o ON o.id = v.org_id
             WHERE v.created_at < now() - make_interval(days => o.visitor_retention_days)
               AND NOT EXISTS (SELECT 1 FROM visits s WHERE s.org_id = v.org_id AND s.visitor_id = v.id
                                 AND s.ends_at > now() - make_interval(days => o.visitor_retention_days))
             LIMIT 500",
            &[],
        )
        .await?;
    let mut purged = 0;
    for row in rows {
        if erase(client, row.try_get(0)?, row.try_get(1)?).await? {
            purged += 1;
        }
    }
    Ok(purged)
}

// ---- deny list ----

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DenyInput {
    pub kind: DenyKind,
    pub value: String,
    pub reason: String,
}

/// A deny-list entry, for security.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DenyEntry {
    pub id: Uuid,
    pub kind: DenyKind,
    pub value: String,
    pub reason: String,
    pub added_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

impl pagination::Identified for DenyEntry {
    fn id(&self) -> Uuid {
        self.id
    }
}

pub async fn deny_add(app: &App, caller: &Caller<'_>, org_id: Uuid, body: DenyInput) -> Result<DenyEntry, AppError> {
    let mut fields = Fields::new();
    let value = body.value.trim();
    if value.is_empty() || value.chars().count() > 200 || normalize(body.kind, value).is_empty() {
        fields.insert("value".into(), "must be 1 to 200 characters with something to match".into());
    }
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        fields.insert("reason".into(), "must be 1 to 500 characters".into());
    }
    done(fields)?;
    let pepper = &app.auth.pepper;
    let id = Uuid::now_v7();
    let key = DataKey::of(app);
    let sealed = crypto::seal_secret(pepper, &purpose(key.version), value.as_bytes());
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO deny_list (id, org_id, kind, value_hash, sealed, key_version, reason, added_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &id,
            &org_id,
            &body.kind.as_str(),
            &value_hash(pepper, body.kind, value),
            &sealed,
            &key.version,
            &reason,
            &caller.principal.user_id(),
        ],
    )
    .await
    .map_err(|e| AppError::unique(e, "this value is on the deny list"))?;
    let event = AuditEvent::new(Some(org_id), "deny_list.added", "deny_list", id).details(json!({ "kind": body.kind }));
    audit::record(&tx, caller.actor(), event).await?;
    tx.commit().await?;
    Ok(DenyEntry {
        id,
        kind: body.kind,
        value: value.to_owned(),
        reason: reason.to_owned(),
        added_by: caller.principal.user_id(),
        created_at: Utc::now(),
    })
}

pub async fn deny_list(app: &App, org_id: Uuid, query: &ListQuery) -> Result<Page<DenyEntry>, AppError> {
    let limit = pagination::limit(query.limit)?;
    let after: Option<Uuid> = pagination::decode(query.cursor.as_deref())?;
    let client = app.pool.get().await?;
    let rows = client
        .query(
            "SELECT id, kind, sealed, key_version, reason, added_by, created_at FROM deny_list
             WHERE org_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3",
            &[&org_id, &after, &(limit + 1)],
        )
        .await?;
    let mut items = Vec::new();
    for row in rows {
        let sealed: Vec<u8> = row.try_get(2)?;
        let value = crypto::open_secret(&app.auth.pepper, &purpose(row.try_get(3)?), &sealed)
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| AppError::internal("a deny-list value does not open"))?;
        let kind: String = row.try_get(1)?;
        items.push(DenyEntry {
            id: row.try_get(0)?,
            kind: kind.parse().map_err(AppError::internal)?,
            value,
            reason: row.try_get(4)?,
            added_by: row.try_get(5)?,
            created_at: row.try_get(6)?,
        });
    }
    Ok(pagination::page(items, limit, |e: &DenyEntry| Some(e.id.to_string())))
}

pub async fn deny_remove(app: &App, caller: &Caller<'_>, org_id: Uuid, id: Uuid) -> Result<(), AppError> {
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    if tx.execute("DELETE FROM deny_list WHERE org_id = $1 AND id = $2", &[&org_id, &id]).await? == 0 {
        return Err(AppError::NotFound("deny-list entry"));
    }
    audit::record(&tx, caller.actor(), AuditEvent::new(Some(org_id), "deny_list.removed", "deny_list", id)).await?;
    tx.commit().await?;
    Ok(())
}

/// A deny-list match: which kind of value matched, and why it is listed.
#[derive(Debug, Clone)]
pub struct DenyHit {
    pub kind: DenyKind,
    pub reason: String,
}

/// Checks a visitor against the deny list. An error is an error: the caller lets nobody in on
/// it (the check fails closed).
pub async fn deny_match(
    client: &impl GenericClient,
    pepper: &SecretString,
    org_id: Uuid,
    personal: &Personal,
) -> Result<Option<DenyHit>, AppError> {
    let mut probes: Vec<(&str, Vec<u8>)> = vec![("name", value_hash(pepper, DenyKind::Name, &personal.name))];
    if let Some(email) = &personal.email {
        probes.push(("email", value_hash(pepper, DenyKind::Email, email)));
    }
    if let Some(phone) = &personal.phone {
        probes.push(("phone", value_hash(pepper, DenyKind::Phone, phone)));
    }
    if let Some(document) = &personal.document_number {
        probes.push(("document", value_hash(pepper, DenyKind::Document, document)));
    }
    let kinds: Vec<&str> = probes.iter().map(|(k, _)| *k).collect();
    let hashes: Vec<&[u8]> = probes.iter().map(|(_, h)| h.as_slice()).collect();
    let row = client
        .query_opt(
            "SELECT d.kind, d.reason FROM deny_list d
             JOIN unnest($2::text[], $3::bytea[]) AS p(kind, hash) ON p.kind = d.kind AND p.hash = d.value_hash
             WHERE d.org_id = $1 ORDER BY d.id LIMIT 1",
            &[&org_id, &kinds, &hashes],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let kind: String = row.try_get(0)?;
    Ok(Some(DenyHit { kind: kind.parse().map_err(AppError::internal)?, reason: row.try_get(1)? }))
}

/// Re-seals up to `batch` visitors and deny-list entries sealed under an older key version under
/// the current one (never a newer one down: a node still on an older version during a rolling
/// change leaves them be); how many were re-sealed.
pub async fn reseal(client: &impl GenericClient, key: DataKey<'_>, batch: i64) -> Result<u64, AppError> {
    let mut done = 0;
    let rows = client
        .query(
            "SELECT org_id, id, sealed, key_version FROM visitors WHERE key_version < $1 LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&key.version, &batch],
        )
        .await?;
    for row in rows {
        let sealed: Vec<u8> = row.try_get(2)?;
        let personal = open(key.pepper, row.try_get(3)?, &sealed)?;
        client
            .execute(
                "UPDATE visitors SET sealed = $3, key_version = $4 WHERE org_id = $1 AND id = $2",
                &[&row.try_get::<_, Uuid>(0)?, &row.try_get::<_, Uuid>(1)?, &seal(key, &personal)?, &key.version],
            )
            .await?;
        done += 1;
    }
    let rows = client
        .query(
            "SELECT id, sealed, key_version FROM deny_list WHERE key_version < $1 LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&key.version, &batch],
        )
        .await?;
    for row in rows {
        let sealed: Vec<u8> = row.try_get(1)?;
        let value = crypto::open_secret(key.pepper, &purpose(row.try_get(2)?), &sealed)
            .ok_or_else(|| AppError::internal("a deny-list value does not open"))?;
        let resealed = crypto::seal_secret(key.pepper, &purpose(key.version), &value);
        client
            .execute(
                "UPDATE deny_list SET sealed = $2, key_version = $3 WHERE id = $1",
                &[&row.try_get::<_, Uuid>(0)?, &resealed, &key.version],
            )
            .await?;
        done += 1;
    }
    Ok(done)
}
