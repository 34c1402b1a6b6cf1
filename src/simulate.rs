//! Virtual turnstiles and a virtual OSDP reader for the demo (`portcullis demo --simulate`), so
//! the dashboard comes alive on a fresh machine: the demo's credentials (live QR codes, the card,
//! the PIN) presented at its gates through the real decision API, unknown cards among them, and
//! the card pass held to an OSDP reader on a virtual bus the engine polls like any other.

use std::time::Duration;

use chrono::Utc;
use portcullis_adapters::credential::QrCode;
use portcullis_adapters::osdp_pd::VirtualBus;
use portcullis_adapters::wiegand;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::demo::DemoCredentials;

/// The OSDP reader the demo binds: on the "Office door" gate, address 1 of the virtual bus.
pub const READER_GATE: &str = "Office door";
pub const READER_ADDRESS: u8 = 1;

/// What to simulate.
pub struct Plan {
    pub api_port: u16,
    pub credentials: DemoCredentials,
    /// Presentations a second, over all gates.
    pub rate: f64,
    pub reader: Option<VirtualBus>,
}

/// A demo pass's credential as a turnstile would present it now (a QR code's payload is the live
/// one, from its seed).
fn presented(credential: &Value) -> Option<Value> {
    match credential["kind"].as_str()? {
        "qr" => {
            use base64::Engine as _;
            let seed = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(credential["seed"].as_str()?).ok()?;
            let id = Uuid::try_parse(credential["credential_id"].as_str()?).ok()?;
            let (payload, _) = QrCode::issue(&seed, id, Utc::now().timestamp());
            Some(json!({"kind": "qr", "value": payload}))
        }
        "card" | "pin" => Some(json!({"kind": credential["kind"], "value": credential["value"]})),
        _ => None,
    }
}

/// Runs until the process stops.
pub async fn run(plan: Plan) {
    let every = Duration::from_secs_f64(1.0 / plan.rate.clamp(0.1, 1000.0));
    let mut ticker = tokio::time::interval(every);
    let gates = &plan.credentials.gates;
    let passes = &plan.credentials.passes;
    tracing::info!(rate = plan.rate, gates = gates.len(), "simulating turnstiles and a reader");
    for n in 0u64.. {
        ticker.tick().await;
        let Some(gate) = gates.get(usize::try_from(n).unwrap_or(0) % gates.len().max(1)) else { return };
        match n % 10 {
            // A card nobody issued, at a turnstile and at the reader.
            0 => {
                let body = json!({"credential": {"kind": "card", "value": format!("7:{}", 1000 + n % 5000)}});
                decide(plan.api_port, &gate.id, &gate.device_key, &body).await;
            }
            3 | 7 if plan.reader.is_some() => {
                let (facility, number) = if n % 10 == 3 { (123, 4567) } else { (7, 1000 + n % 5000) };
                let card = wiegand::Card { format: wiegand::Format::H10301, facility, number };
                if let (Some(bus), Ok(bits)) = (&plan.reader, wiegand::encode(card)) {
                    bus.present(READER_ADDRESS, bits).await;
                }
            }
            _ => {
                let pass = passes.get(usize::try_from(n / 10).unwrap_or(0) % passes.len().max(1));
                if let Some(credential) = pass.and_then(|p| presented(&p.credential)) {
                    decide(plan.api_port, &gate.id, &gate.device_key, &json!({"credential": credential})).await;
                }
            }
        }
    }
}

/// One decision through the API, as a turnstile asks it (the verdict is the dashboard's to show).
async fn decide(port: u16, gate: &Uuid, key: &str, body: &Value) {
    let body = body.to_string();
    let request = format!(
        "POST /api/v1/gates/{gate}/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let asked = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(Duration::from_secs(5), asked).await {
        Ok(Ok(answer)) => {
            let text = String::from_utf8_lossy(&answer);
            if !text.starts_with("HTTP/1.1 200") {
                tracing::warn!(%gate, answer = %text.lines().next().unwrap_or_default(), "simulated decision refused");
            }
        }
        Ok(Err(err)) => tracing::warn!(%gate, error = %err, "simulated turnstile could not ask"),
        Err(_) => tracing::warn!(%gate, "simulated turnstile got no answer in 5 s"),
    }
}
