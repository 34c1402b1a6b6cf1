//! `portcullis demo`: an organization a newcomer can use at once, and the file that tells them how.
//!
//! Seeding is idempotent: rows are found by their natural keys (slug, names, emails) and created
//! only when missing. Secrets (passwords, device keys, the PIN) live only as hashes in the
//! database, so the previous `demo-credentials.json` is the source of what to reuse; anything in
//! it that no longer matches the database (or is missing) is issued anew and written back.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{Duration, Utc};
use deadpool_postgres::{GenericClient, Pool};
use portcullis_actors::domain::{CardFormat, CredentialKind, GateDirection, PassType, Role};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::config::Secrets;
use crate::crypto::{self, KeyEnv};

pub const CREDENTIALS_FILE: &str = "demo-credentials.json";
pub const SECRETS_FILE: &str = "demo-secrets.json";
const ORG_SLUG: &str = "demo";
const PLATFORM_ADMIN_EMAIL: &str = "platform-admin@portcullis.localhost";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo seeding failed: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("demo seeding failed: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Hash(#[from] crypto::HashError),
    #[error("cannot write `{}`: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read `{}`: {reason}; delete it to have new demo secrets generated", path.display())]
    Read { path: PathBuf, reason: String },
}

/// What `demo-credentials.json` holds (API.md), plus the URL to reach the engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoCredentials {
    pub org_id: Uuid,
    #[serde(default)]
    pub api_url: String,
    pub platform_admin: Login,
    pub admin: Login,
    #[serde(default)]
    pub users: Vec<DemoUser>,
    pub gates: Vec<DemoGate>,
    pub passes: Vec<DemoPass>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Login {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoUser {
    pub email: String,
    pub password: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoGate {
    pub id: Uuid,
    pub name: String,
    pub device_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoPass {
    pub id: Uuid,
    pub holder_name: String,
    #[serde(rename = "type")]
    pub pass_type: PassType,
    pub credential: serde_json::Value,
}

/// The demo's server secrets: configured ones win; otherwise generated once and kept in
/// `<data_dir>/demo-secrets.json` (mode 0600) so restarts keep keys and tokens valid.
pub fn demo_secrets(configured: Option<Secrets>, data_dir: &Path) -> Result<Secrets, DemoError> {
    if let Some(secrets) = configured {
        return Ok(secrets);
    }
    #[derive(Serialize, Deserialize)]
    struct Stored {
        jwt_secret: String,
        api_key_pepper: String,
    }
    let path = data_dir.join(SECRETS_FILE);
    let stored = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str::<Stored>(&text)
            .map_err(|e| DemoError::Read { path: path.clone(), reason: e.to_string() })?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let stored = Stored { jwt_secret: crypto::random_token(48), api_key_pepper: crypto::random_token(48) };
            let text = serde_json::to_vec_pretty(&json!(stored))
                .map_err(|e| DemoError::Write { path: path.clone(), source: std::io::Error::other(e) })?;
            write_private(&path, &text)?;
            stored
        }
        Err(err) => {
            return Err(DemoError::Read { path, reason: err.to_string() });
        }
    };
    Ok(Secrets {
        jwt_secret: SecretString::from(stored.jwt_secret),
        api_key_pepper: SecretString::from(stored.api_key_pepper),
    })
}

/// The demo's generated secrets, if `demo` ran on this data dir before.
pub fn stored_demo_secrets(data_dir: &Path) -> Option<Secrets> {
    data_dir.join(SECRETS_FILE).exists().then(|| demo_secrets(None, data_dir).ok()).flatten()
}

/// Reads the previous credentials file, if there is a usable one.
pub fn read_credentials(data_dir: &Path) -> Option<DemoCredentials> {
    let text = std::fs::read_to_string(data_dir.join(CREDENTIALS_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Reads a credentials file, saying what is wrong with it when it cannot be used.
pub fn read_credentials_file(path: &Path) -> Result<DemoCredentials, DemoError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| DemoError::Read { path: path.to_owned(), reason: e.to_string() })?;
    serde_json::from_str(&text).map_err(|e| DemoError::Read { path: path.to_owned(), reason: e.to_string() })
}

/// Writes the credentials file (mode 0600, replaced atomically).
pub fn write_credentials(data_dir: &Path, credentials: &DemoCredentials) -> Result<PathBuf, DemoError> {
    let path = data_dir.join(CREDENTIALS_FILE);
    let text = serde_json::to_vec_pretty(credentials)
        .map_err(|e| DemoError::Write { path: path.clone(), source: std::io::Error::other(e) })?;
    write_private(&path, &text)?;
    Ok(path)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DemoError> {
    let err = |source| DemoError::Write { path: path.to_owned(), source };
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

struct GateSpec {
    name: &'static str,
    zone: &'static str,
    direction: GateDirection,
}

const ZONES: [(&str, Option<i32>); 2] = [("Lobby", None), ("Office floor", Some(120))];
const GATES: [GateSpec; 3] = [
    GateSpec { name: "Main entrance in", zone: "Lobby", direction: GateDirection::In },
    GateSpec { name: "Main entrance out", zone: "Lobby", direction: GateDirection::Out },
    GateSpec { name: "Office door", zone: "Office floor", direction: GateDirection::Both },
];
const RULE_NAME: &str = "Visitors, any day, any time";

/// Seeds the demo organization and returns what a newcomer needs to use it.
pub async fn seed(
    pool: &Pool,
    secrets: &Secrets,
    previous: Option<DemoCredentials>,
) -> Result<DemoCredentials, DemoError> {
    let pepper = &secrets.api_key_pepper;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;

    let org_id: Uuid = tx
        .query_one(
            "INSERT INTO organizations (id, name, slug, timezone) VALUES ($1, 'Demo Corp', $2, 'Europe/Berlin')
             ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug RETURNING id",
            &[&Uuid::now_v7(), &ORG_SLUG],
        )
        .await?
        .try_get(0)?;
    // Reuse the previous file's secrets only if it describes this organization.
    let previous = previous.filter(|p| p.org_id == org_id);

    let mut zone_ids = HashMap::new();
    for (name, capacity) in ZONES {
        let id: Uuid = tx
            .query_one(
                "INSERT INTO zones (id, org_id, name, capacity) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (org_id, name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                &[&Uuid::now_v7(), &org_id, &name, &capacity],
            )
            .await?
            .try_get(0)?;
        zone_ids.insert(name, id);
    }

    let rule_id: Uuid = tx
        .query_one(
            "INSERT INTO access_rules (id, org_id, name, weekdays, time_windows) VALUES ($1, $2, $3, $4, '[]')
             ON CONFLICT (org_id, name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            &[&Uuid::now_v7(), &org_id, &RULE_NAME, &vec![1i16, 2, 3, 4, 5, 6, 7]],
        )
        .await?
        .try_get(0)?;
    for zone_id in zone_ids.values() {
        tx.execute(
            "INSERT INTO access_rule_zones (org_id, rule_id, zone_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&org_id, &rule_id, zone_id],
        )
        .await?;
    }
    // Visitors invited through the desk get this rule unless their appointment names another.
    tx.execute(
        "UPDATE organizations SET visitor_rule_id = coalesce(visitor_rule_id, $2),
                address = coalesce(address, 'Demo Corp, 1 Example Street'),
                guest_instructions = coalesce(guest_instructions, 'Show your QR code at reception, then at the turnstile.')
         WHERE id = $1",
        &[&org_id, &rule_id],
    )
    .await?;

    let old_keys: HashMap<Uuid, String> =
        previous.iter().flat_map(|p| &p.gates).map(|g| (g.id, g.device_key.clone())).collect();
    let mut gates = Vec::new();
    for spec in &GATES {
        let zone_id = zone_ids.get(spec.zone).copied().unwrap_or_default();
        let gate_id: Uuid = tx
            .query_one(
                "INSERT INTO gates (id, org_id, zone_id, name, direction) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (org_id, name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                &[&Uuid::now_v7(), &org_id, &zone_id, &spec.name, &spec.direction.as_str()],
            )
            .await?
            .try_get(0)?;
        let device_key = ensure_device_key(&tx, pepper, org_id, gate_id, spec.name, old_keys.get(&gate_id)).await?;
        gates.push(DemoGate { id: gate_id, name: spec.name.to_owned(), device_key });
    }

    let old_password = |email: &str| {
        previous.as_ref().and_then(|p| {
            std::iter::once(&p.platform_admin)
                .chain(std::iter::once(&p.admin))
                .map(|l| (l.email.as_str(), l.password.as_str()))
                .chain(p.users.iter().map(|u| (u.email.as_str(), u.password.as_str())))
                .find(|(e, _)| *e == email)
                .map(|(_, pw)| pw.to_owned())
        })
    };
    let platform_admin = Login {
        email: PLATFORM_ADMIN_EMAIL.to_owned(),
        password: old_password(PLATFORM_ADMIN_EMAIL).unwrap_or_else(new_password),
    };
    ensure_user(&tx, &platform_admin, "Platform Admin", None).await?;
    let mut users = Vec::new();
    for (role, local, name) in [
        (Role::OrgAdmin, "admin", "Olga Admin"),
        (Role::SecurityOfficer, "security", "Sam Security"),
        (Role::Operator, "operator", "Otto Operator"),
        (Role::Host, "host", "Hanna Host"),
    ] {
        let email = format!("{local}@demo.portcullis.localhost");
        let password = old_password(&email).unwrap_or_else(new_password);
        ensure_user(&tx, &Login { email: email.clone(), password: password.clone() }, name, Some((org_id, role)))
            .await?;
        users.push(DemoUser { email, password, role });
    }
    let admin = users
        .first()
        .map(|u| Login { email: u.email.clone(), password: u.password.clone() })
        .unwrap_or_else(|| platform_admin.clone());

    let old_pin = previous
        .iter()
        .flat_map(|p| &p.passes)
        .filter(|p| p.credential.get("kind").and_then(|k| k.as_str()) == Some("pin"))
        .find_map(|p| p.credential.get("value").and_then(|v| v.as_str()).map(str::to_owned));
    let pass_specs = [
        ("Ada Lovelace", PassType::Multi, Some(50), CredentialSpec::Qr),
        ("Grace Hopper", PassType::Multi, Some(500), CredentialSpec::Card { facility: 123, number: 4567 }),
        ("Alan Turing", PassType::Single, None, CredentialSpec::Pin(old_pin.unwrap_or_else(new_pin))),
    ];
    let mut passes = Vec::new();
    for (holder, pass_type, max_uses, credential) in pass_specs {
        let pass_id = ensure_pass(&tx, org_id, rule_id, holder, pass_type, max_uses).await?;
        let credential = ensure_credential(&tx, pepper, org_id, pass_id, &credential).await?;
        passes.push(DemoPass { id: pass_id, holder_name: holder.to_owned(), pass_type, credential });
    }

    tx.execute(
        "INSERT INTO audit_log (org_id, action, target_type, target_id) VALUES ($1, 'demo.seeded', 'organization', $2)",
        &[&org_id, &org_id.to_string()],
    )
    .await?;
    tx.commit().await?;
    Ok(DemoCredentials { org_id, api_url: String::new(), platform_admin, admin, users, gates, passes })
}

enum CredentialSpec {
    Qr,
    Card { facility: u32, number: u64 },
    Pin(String),
}

fn new_password() -> String {
    crypto::random_token(15)
}

fn new_pin() -> String {
    format!("{:06}", rand::thread_rng().gen_range(0..1_000_000))
}

async fn ensure_user(
    tx: &impl GenericClient,
    login: &Login,
    name: &str,
    membership: Option<(Uuid, Role)>,
) -> Result<(), DemoError> {
    let hash = crypto::hash_password(&login.password)?;
    let user_id: Uuid = tx
        .query_one(
            "INSERT INTO users (id, email, name, password_hash, is_platform_admin) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash, updated_at = now()
             RETURNING id",
            &[&Uuid::now_v7(), &login.email, &name, &hash, &membership.is_none()],
        )
        .await?
        .try_get(0)?;
    if let Some((org_id, role)) = membership {
        tx.execute(
            "INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, $3)
             ON CONFLICT (org_id, user_id) DO UPDATE SET role = EXCLUDED.role",
            &[&org_id, &user_id, &role.as_str()],
        )
        .await?;
    }
    Ok(())
}

/// Keeps the previous device key when its hash is still live, otherwise revokes the gate's demo
/// keys and issues a new one.
async fn ensure_device_key(
    tx: &impl GenericClient,
    pepper: &SecretString,
    org_id: Uuid,
    gate_id: Uuid,
    gate_name: &str,
    previous: Option<&String>,
) -> Result<String, DemoError> {
    let name = format!("Demo device: {gate_name}");
    if let Some(key) = previous {
        let hash = crypto::keyed_hash(pepper, crypto::API_KEY_PURPOSE, key);
        let live = tx
            .query_opt(
                "SELECT 1 FROM api_keys WHERE org_id = $1 AND key_hash = $2 AND revoked_at IS NULL",
                &[&org_id, &hash],
            )
            .await?;
        if live.is_some() {
            return Ok(key.clone());
        }
    }
    tx.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE org_id = $1 AND name = $2 AND revoked_at IS NULL",
        &[&org_id, &name],
    )
    .await?;
    let key = crypto::new_api_key(KeyEnv::Live, pepper);
    tx.execute(
        "INSERT INTO api_keys (id, org_id, name, env, prefix, key_hash, scopes, gate_ids)
         VALUES ($1, $2, $3, 'live', $4, $5, $6, $7)",
        &[&Uuid::now_v7(), &org_id, &name, &key.prefix, &key.hash, &vec!["gate:decide".to_owned()], &vec![gate_id]],
    )
    .await?;
    Ok(key.key.expose_secret().to_owned())
}

async fn ensure_pass(
    tx: &impl GenericClient,
    org_id: Uuid,
    rule_id: Uuid,
    holder: &str,
    pass_type: PassType,
    max_uses: Option<i32>,
) -> Result<Uuid, DemoError> {
    let existing = tx
        .query_opt(
            "SELECT id FROM passes WHERE org_id = $1 AND holder_name = $2 ORDER BY created_at LIMIT 1",
            &[&org_id, &holder],
        )
        .await?;
    if let Some(row) = existing {
        let id: Uuid = row.try_get(0)?;
        // A demo left alone for weeks should still open its gates.
        tx.execute(
            "UPDATE passes SET valid_to = now() + interval '30 days', updated_at = now()
             WHERE org_id = $1 AND id = $2 AND status = 'active' AND valid_to < now() + interval '1 day'",
            &[&org_id, &id],
        )
        .await?;
        return Ok(id);
    }
    let id = Uuid::now_v7();
    let now = Utc::now();
    tx.execute(
        "INSERT INTO passes (id, org_id, access_rule_id, holder_name, type, max_uses, valid_from, valid_to)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &id,
            &org_id,
            &rule_id,
            &holder,
            &pass_type.as_str(),
            &max_uses,
            &(now - Duration::hours(1)),
            &(now + Duration::days(30)),
        ],
    )
    .await?;
    tx.execute(
        "INSERT INTO pass_events (org_id, pass_id, kind, status, uses_count, reason)
         VALUES ($1, $2, 'issued', 'active', 0, 'demo seed')",
        &[&org_id, &id],
    )
    .await?;
    Ok(id)
}

/// Makes sure the pass has exactly the wanted live credential and returns its public description.
async fn ensure_credential(
    tx: &impl GenericClient,
    pepper: &SecretString,
    org_id: Uuid,
    pass_id: Uuid,
    spec: &CredentialSpec,
) -> Result<serde_json::Value, DemoError> {
    use crate::engine::credentials::{self as cred, lookup_key};
    let (kind, format, lookup, number_hash, hint) = match spec {
        // A QR credential is looked up by its own id; the seed is derived, never stored.
        CredentialSpec::Qr => (CredentialKind::Qr, None, None, None, None),
        CredentialSpec::Card { facility, number } => (
            CredentialKind::Card,
            Some(CardFormat::H10301),
            Some(lookup_key(pepper, cred::CARD, &cred::card_value(u64::from(*facility), *number)).to_vec()),
            Some(lookup_key(pepper, cred::CARD_NUMBER, &number.to_string()).to_vec()),
            Some(format!("…{:02}", number % 100)),
        ),
        CredentialSpec::Pin(pin) => {
            (CredentialKind::Pin, None, Some(lookup_key(pepper, cred::PIN, pin).to_vec()), None, None)
        }
    };
    let sealed = match spec {
        CredentialSpec::Card { facility, number } => Some(cred::seal_card(pepper, u64::from(*facility), *number)),
        _ => None,
    };
    let live = tx
        .query_opt(
            "SELECT id, lookup_hash FROM credentials
             WHERE org_id = $1 AND pass_id = $2 AND kind = $3 AND revoked_at IS NULL",
            &[&org_id, &pass_id, &kind.as_str()],
        )
        .await?;
    let credential_id = match live {
        Some(row) if lookup.is_none() || lookup.as_deref() == Some(row.try_get::<_, &[u8]>(1)?) => {
            let id: Uuid = row.try_get(0)?;
            // A demo seeded before cards were sealed gets its card sealed now.
            tx.execute(
                "UPDATE credentials SET card_sealed = $2 WHERE id = $1 AND card_sealed IS NULL",
                &[&id, &sealed.as_deref()],
            )
            .await?;
            id
        }
        _ => {
            tx.execute(
                "UPDATE credentials SET revoked_at = now() WHERE org_id = $1 AND pass_id = $2 AND revoked_at IS NULL",
                &[&org_id, &pass_id],
            )
            .await?;
            let id = Uuid::now_v7();
            let hash = lookup.unwrap_or_else(|| lookup_key(pepper, cred::QR, &id.to_string()).to_vec());
            let stored = cred::StoredCredential {
                id,
                org_id,
                pass_id,
                kind,
                format,
                lookup_hash: &hash,
                number_hash: number_hash.as_deref(),
                display_hint: hint.as_deref(),
                card_sealed: sealed.as_deref(),
            };
            cred::store(tx, &stored).await?;
            id
        }
    };
    Ok(match spec {
        CredentialSpec::Qr => json!({
            "kind": "qr",
            "credential_id": credential_id,
            "seed": cred::qr_seed_text(pepper, credential_id),
        }),
        CredentialSpec::Card { facility, number } => json!({
            "kind": "card", "format": "h10301", "facility_code": facility, "card_number": number,
            "value": format!("{facility}:{number}"),
        }),
        CredentialSpec::Pin(pin) => json!({ "kind": "pin", "value": pin }),
    })
}
