//! Readers on a gate (`/api/v1/orgs/{org}/gates/{gate}/reader`): bind an OSDP reader, see its
//! binding and live status, unbind it. In force without a restart; the engine's side is
//! `engine::readers`.

use deadpool_postgres::GenericClient;
use portcullis_adapters::osdp_bus::Key;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::app::{App, Caller};
use crate::audit::{self, Event as AuditEvent};
use crate::engine::readers::{Binding, ReaderStatus};
use crate::error::AppError;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReaderBody {
    /// `osdp`.
    protocol: String,
    /// `tcp://host:port` of the serial-device server the reader's bus hangs on.
    endpoint: String,
    /// The reader's OSDP address, 0–126.
    address: u16,
    /// The reader's secure-channel key (32 hex digits): every exchange with it is then encrypted
    /// and MAC'd. Stored sealed; never shown again.
    scbk: Option<String>,
    /// Use the install-mode key (SCBK-D) every reader knows: only for setting a reader up. With
    /// `scbk`: install mode once, to give the reader that key, then that key.
    install_mode: Option<bool>,
    /// The relay the lock hangs on (default 0).
    output: Option<u8>,
    /// The card format expected (any of the Wiegand formats is read either way).
    card_format: Option<String>,
}

/// A binding as the API shows it (never a key).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReaderView {
    pub gate_id: Uuid,
    pub protocol: &'static str,
    pub endpoint: String,
    pub address: u8,
    pub output: u8,
    pub card_format: Option<String>,
    /// `scbk` (its own key), `install` (SCBK-D), `rekeying` (SCBK-D until the reader has taken
    /// its own key) or `off` (plain OSDP).
    pub secure_channel: &'static str,
    pub status: Option<ReaderStatus>,
}

/// The purpose an SCBK is sealed under (see `crypto::seal_secret`).
const SCBK_PURPOSE: &str = "osdp-scbk";

/// The reader took its own key (`engine::readers` saw it): install mode is over for good.
pub async fn rekeyed(client: &impl GenericClient, org_id: Uuid, gate_id: Uuid) -> Result<(), AppError> {
    client
        .execute(
            "UPDATE gate_readers SET install_mode = false, updated_at = now() WHERE org_id = $1 AND gate_id = $2",
            &[&org_id, &gate_id],
        )
        .await?;
    Ok(())
}

/// `tcp://host:port` → `host:port`.
fn endpoint(text: &str) -> Result<String, AppError> {
    let bad = || AppError::field("endpoint", "must be tcp://host:port");
    let rest = text.trim().strip_prefix("tcp://").ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    if port == 0 || !host_ok {
        return Err(bad());
    }
    Ok(format!("{host}:{port}"))
}

impl ReaderBody {
    fn check(&self, org_id: Uuid, gate_id: Uuid) -> Result<(Binding, Option<String>), AppError> {
        let key = match (&self.scbk, self.install_mode.unwrap_or(false)) {
            (Some(hex), install) => {
                let bytes: Option<Vec<u8>> = (hex.len() == 32)
                    .then(|| {
                        (0..16)
                            .map(|i| hex.get(2 * i..2 * i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                            .collect()
                    })
                    .flatten();
                let Some(scbk) = bytes.and_then(|b| <[u8; 16]>::try_from(b).ok()) else {
                    return Err(AppError::field("scbk", "must be 32 hex digits"));
                };
                // With install mode: SCBK-D once, to give the reader this key.
                Some(if install { Key::InstallThen(scbk) } else { Key::Scbk(scbk) })
            }
            (None, true) => Some(Key::Install),
            (None, false) => None,
        };
        if self.protocol != "osdp" {
            return Err(AppError::field("protocol", "must be `osdp`"));
        }
        let address = u8::try_from(self.address).ok().filter(|a| *a <= 126);
        let Some(address) = address else { return Err(AppError::field("address", "must be 0 to 126")) };
        let card_format = match self.card_format.as_deref() {
            None => None,
            Some(text) => {
                let text = text.to_ascii_lowercase();
                if !["h10301", "h10306", "h10304", "h10302"].contains(&text.as_str()) {
                    return Err(AppError::field("card_format", "must be h10301, h10306, h10304 or h10302"));
                }
                Some(text)
            }
        };
        let binding = Binding {
            org_id,
            gate_id,
            endpoint: endpoint(&self.endpoint)?,
            address,
            output: self.output.unwrap_or(0),
            key,
        };
        Ok((binding, card_format))
    }
}

fn view(app: &App, binding: &Binding, card_format: Option<String>) -> ReaderView {
    ReaderView {
        gate_id: binding.gate_id,
        protocol: "osdp",
        endpoint: format!("tcp://{}", binding.endpoint),
        address: binding.address,
        output: binding.output,
        card_format,
        secure_channel: match binding.key {
            Some(Key::Scbk(_)) => "scbk",
            Some(Key::Install) => "install",
            Some(Key::InstallThen(_)) => "rekeying",
            None => "off",
        },
        status: app.readers.status(binding.gate_id),
    }
}

/// Binds (or re-binds) the gate's reader. An endpoint that cannot be reached is a status, not an
/// error: the engine keeps trying.
pub async fn put(
    app: &App,
    caller: &Caller<'_>,
    org_id: Uuid,
    gate_id: Uuid,
    body: ReaderBody,
) -> Result<ReaderView, AppError> {
    let (binding, card_format) = body.check(org_id, gate_id)?;
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    if tx.query_opt("SELECT 1 FROM gates WHERE org_id = $1 AND id = $2", &[&org_id, &gate_id]).await?.is_none() {
        return Err(AppError::NotFound("gate"));
    }
    let sealed = match &binding.key {
        Some(Key::Scbk(scbk) | Key::InstallThen(scbk)) => {
            Some(crate::crypto::seal_secret(&app.auth.pepper, SCBK_PURPOSE, scbk))
        }
        _ => None,
    };
    let install = matches!(binding.key, Some(Key::Install | Key::InstallThen(_)));
    tx.execute(
        "INSERT INTO gate_readers (org_id, gate_id, protocol, endpoint, address, output, card_format, scbk_sealed, install_mode)
         VALUES ($1, $2, 'osdp', $3, $4, $5, $6, $7, $8)
         ON CONFLICT (org_id, gate_id) DO UPDATE SET endpoint = EXCLUDED.endpoint, address = EXCLUDED.address,
             output = EXCLUDED.output, card_format = EXCLUDED.card_format, scbk_sealed = EXCLUDED.scbk_sealed,
             install_mode = EXCLUDED.install_mode, updated_at = now()",
        &[
            &org_id, &gate_id, &binding.endpoint, &i16::from(binding.address), &i16::from(binding.output), &card_format,
            &sealed, &install,
        ],
    )
    .await
    .map_err(|e| AppError::unique(e, "another reader on this bus has that address"))?;
    // The key itself never goes into the audit row.
    let secure = match (sealed.is_some(), install) {
        (true, true) => "rekeying",
        (true, false) => "scbk",
        (false, true) => "install",
        (false, false) => "off",
    };
    let details = json!({ "endpoint": binding.endpoint, "address": binding.address, "output": binding.output, "secure_channel": secure });
    audit::record(
        &tx,
        caller.actor(),
        AuditEvent::new(Some(org_id), "gate_reader.bound", "gate", gate_id).details(details),
    )
    .await?;
    tx.commit().await?;
    app.readers.bind(binding.clone()).await;
    Ok(view(app, &binding, card_format))
}

/// The gate's reader binding and its live status.
pub async fn get(app: &App, org_id: Uuid, gate_id: Uuid) -> Result<ReaderView, AppError> {
    let client = app.pool.get().await?;
    let (binding, card_format) =
        load_one(&client, &app.auth.pepper, org_id, gate_id).await?.ok_or(AppError::NotFound("reader"))?;
    Ok(view(app, &binding, card_format))
}

/// Unbinds the gate's reader; the engine stops polling it.
pub async fn delete(app: &App, caller: &Caller<'_>, org_id: Uuid, gate_id: Uuid) -> Result<(), AppError> {
    let mut client = app.pool.get().await?;
    let tx = client.transaction().await?;
    let removed =
        tx.execute("DELETE FROM gate_readers WHERE org_id = $1 AND gate_id = $2", &[&org_id, &gate_id]).await?;
    if removed == 0 {
        return Err(AppError::NotFound("reader"));
    }
    audit::record(&tx, caller.actor(), AuditEvent::new(Some(org_id), "gate_reader.unbound", "gate", gate_id)).await?;
    tx.commit().await?;
    app.readers.unbind(gate_id).await;
    Ok(())
}

const SELECT: &str =
    "SELECT org_id, gate_id, endpoint, address, output, card_format, scbk_sealed, install_mode FROM gate_readers";

fn from_row(row: &tokio_postgres::Row, pepper: &SecretString) -> Result<(Binding, Option<String>), AppError> {
    let small = |i: usize| -> Result<u8, AppError> {
        u8::try_from(row.try_get::<_, i16>(i)?).map_err(|_| AppError::internal("a stored reader field out of range"))
    };
    Ok((
        Binding {
            org_id: row.try_get(0)?,
            gate_id: row.try_get(1)?,
            endpoint: row.try_get(2)?,
            address: small(3)?,
            output: small(4)?,
            key: match (row.try_get::<_, Option<Vec<u8>>>(6)?, row.try_get::<_, bool>(7)?) {
                (Some(sealed), install) => {
                    let scbk = crate::crypto::open_secret(pepper, SCBK_PURPOSE, &sealed)
                        .and_then(|b| <[u8; 16]>::try_from(b).ok())
                        // Never a plain-text fallback: the binding cannot be used.
                        .ok_or_else(|| {
                            AppError::internal("a reader's stored SCBK cannot be opened (was the pepper changed?)")
                        })?;
                    Some(if install { Key::InstallThen(scbk) } else { Key::Scbk(scbk) })
                }
                (None, true) => Some(Key::Install),
                (None, false) => None,
            },
        },
        row.try_get(5)?,
    ))
}

async fn load_one(
    client: &impl GenericClient,
    pepper: &SecretString,
    org_id: Uuid,
    gate_id: Uuid,
) -> Result<Option<(Binding, Option<String>)>, AppError> {
    let row = client.query_opt(&format!("{SELECT} WHERE org_id = $1 AND gate_id = $2"), &[&org_id, &gate_id]).await?;
    row.as_ref().map(|r| from_row(r, pepper)).transpose()
}

/// Every binding, for the engine to drive at start. One that cannot be used is left out, loudly.
pub async fn load_all(client: &impl GenericClient, pepper: &SecretString) -> Result<Vec<Binding>, AppError> {
    let mut bindings = Vec::new();
    for row in client.query(SELECT, &[]).await? {
        match from_row(&row, pepper) {
            Ok((binding, _)) => bindings.push(binding),
            Err(err) => tracing::error!(error = %crate::error::error_chain(&err), "a reader binding is not driven"),
        }
    }
    Ok(bindings)
}
