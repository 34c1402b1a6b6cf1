//! Virtual turnstiles, a BAS-IP panel, an OSDP reader and a UHPPOTE controller (`portcullis demo --simulate`,
//! `portcullis simulate`), so the dashboard comes alive on a fresh machine: the demo's
//! credentials (live QR codes, the card, the PIN) presented at its gates through the real decision
//! API and the BAS-IP dialect, unknown cards among them, and cards held to an OSDP reader on a
//! virtual bus, bound to the Office door through the API, which the engine polls like any other;
//! and a virtual UHPPOTE controller whose door 1 serves another gate, its card table kept by the
//! engine, swiping the demo's card and unknown ones.
//! It talks to the engine only as hardware and an installer would: over HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use portcullis_adapters::credential::QrCode;
use portcullis_adapters::osdp_pd::VirtualBus;
use portcullis_adapters::uhppote;
use portcullis_adapters::uhppote_sim::VirtualController;
use portcullis_adapters::wiegand;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::demo::DemoCredentials;

/// The OSDP reader the demo binds: on the "Office door" gate, address 1 of the virtual bus.
pub const READER_GATE: &str = "Office door";
pub const READER_ADDRESS: u8 = 1;
/// The UHPPOTE controller the demo binds (always the same one, so a restarted demo re-binds it).
const CONTROLLER_ID: Uuid = Uuid::from_u128(0x0c0e_7a11_0000_4000_8000_0000_0000_0001);
const CONTROLLER_SERIAL: u32 = 423_187_757;

/// What to simulate.
pub struct Plan {
    /// The engine's API.
    pub api: SocketAddr,
    pub credentials: DemoCredentials,
    /// Presentations a second, over all gates.
    pub rate: f64,
}

/// A demo pass's credential as a turnstile would present it now (a QR code's payload is the live
/// one, from its seed).
fn presented(credential: &Value) -> Option<Value> {
    let text = |key: &str| credential.get(key).and_then(Value::as_str);
    match text("kind")? {
        "qr" => {
            use base64::Engine as _;
            let seed = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text("seed")?).ok()?;
            let id = Uuid::try_parse(text("credential_id")?).ok()?;
            let (payload, _) = QrCode::issue(&seed, id, Utc::now().timestamp());
            Some(json!({"kind": "qr", "value": payload}))
        }
        kind @ ("card" | "pin") => Some(json!({"kind": kind, "value": text("value")?})),
        _ => None,
    }
}

/// Starts the virtual reader's bus, binds it to the Office door (as the demo's admin, through the
/// API), then presents credentials until the process stops.
pub async fn run(plan: Plan) {
    let token = match sign_in(&plan).await {
        Ok(token) => Some(token),
        Err(err) => {
            tracing::warn!(error = %err, "no simulated reader or controller; simulating turnstiles only");
            None
        }
    };
    let reader = match &token {
        Some(token) => match bind_reader(&plan, token).await {
            Ok(bus) => Some(bus),
            Err(err) => {
                tracing::warn!(error = %err, "no simulated OSDP reader");
                None
            }
        },
        None => None,
    };
    let controller = match &token {
        Some(token) => match bind_controller(&plan, token).await {
            Ok(controller) => Some(controller),
            Err(err) => {
                tracing::warn!(error = %err, "no simulated UHPPOTE controller");
                None
            }
        },
        None => None,
    };
    let every = Duration::from_secs_f64(1.0 / plan.rate.clamp(0.1, 1000.0));
    let mut ticker = tokio::time::interval(every);
    let gates = &plan.credentials.gates;
    let passes = &plan.credentials.passes;
    let card = passes.iter().find_map(|p| p.credential.get("card_number").and_then(Value::as_u64));
    tracing::info!(
        rate = plan.rate,
        gates = gates.len(),
        reader = reader.is_some(),
        controller = controller.is_some(),
        "simulating turnstiles, a panel, a reader and a controller"
    );
    for n in 0u64.. {
        ticker.tick().await;
        let Some(gate) = gates.get(usize::try_from(n).unwrap_or(0) % gates.len().max(1)) else { return };
        let path = format!("/api/v1/gates/{}/decisions", gate.id);
        match n % 10 {
            // A card nobody issued, at a turnstile and at the reader.
            0 => {
                let body = json!({"credential": {"kind": "card", "value": format!("7:{}", 1000 + n % 5000)}});
                ask(plan.api, &path, &gate.device_key, &body).await;
            }
            3 | 7 if reader.is_some() => {
                let (facility, number) = if n % 10 == 3 { (123, 4567) } else { (7, 1000 + n % 5000) };
                let card = wiegand::Card { format: wiegand::Format::H10301, facility, number };
                if let (Some(bus), Ok(bits)) = (&reader, wiegand::encode(card)) {
                    bus.present(READER_ADDRESS, bits).await;
                }
            }
            // A card swiped at the controller's door: the demo's card, or one it does not hold.
            9 if controller.is_some() => {
                let number =
                    if n % 20 == 9 { uhppote::card_number(123, 4567) } else { Some(700_000 + (n % 5000) as u32) };
                if let (Some(controller), Some(number)) = (&controller, number) {
                    controller.swipe(number, 1, Utc::now().naive_local()).await;
                }
            }
            // A BAS-IP panel reading the card pass by its number.
            5 if card.is_some() => {
                let body =
                    json!({"identifier_number": card.unwrap_or_default().to_string(), "identifier_type": "card"});
                ask(plan.api, &format!("/api/v1/gates/{}/bas-ip", gate.id), &gate.device_key, &body).await;
            }
            _ => {
                let pass = passes.get(usize::try_from(n / 10).unwrap_or(0) % passes.len().max(1));
                if let Some(credential) = pass.and_then(|p| presented(&p.credential)) {
                    ask(plan.api, &path, &gate.device_key, &json!({"credential": credential})).await;
                }
            }
        }
    }
}

/// Signs in as the demo's admin, as an installer would.
async fn sign_in(plan: &Plan) -> Result<String, String> {
    let admin = &plan.credentials.admin;
    let login = json!({"email": admin.email, "password": admin.password});
    let (status, body) = request(plan.api, "POST", "/api/v1/auth/login", None, Some(&login)).await?;
    body.get("access_token")
        .and_then(Value::as_str)
        .filter(|_| status == 200)
        .map(str::to_owned)
        .ok_or(format!("cannot sign in as the demo's admin: {status}"))
}

/// A virtual UHPPOTE controller whose door 1 serves the first gate that is not the reader's.
async fn bind_controller(plan: &Plan, token: &str) -> Result<VirtualController, String> {
    let gate = plan.credentials.gates.iter().find(|g| g.name != READER_GATE).ok_or("the demo has no other gate")?;
    let bind: SocketAddr = ([127, 0, 0, 1], 0).into();
    let (controller, serve) = VirtualController::start(CONTROLLER_SERIAL, bind)
        .await
        .map_err(|e| format!("cannot start the controller: {e}"))?;
    actix_rt::spawn(serve);
    let path = format!("/api/v1/orgs/{}/controllers/{CONTROLLER_ID}", plan.credentials.org_id);
    let binding = json!({
        "protocol": "uhppote", "endpoint": format!("udp://{}", controller.addr), "serial": CONTROLLER_SERIAL,
        "gate_doors": [{"gate_id": gate.id, "door": 1}],
    });
    let (status, body) = request(plan.api, "PUT", &path, Some(token), Some(&binding)).await?;
    if status != 200 {
        return Err(format!("the controller could not be bound: {status} {body}"));
    }
    Ok(controller)
}

/// The virtual bus, and its reader bound to the Office door by the demo's admin.
async fn bind_reader(plan: &Plan, token: &str) -> Result<VirtualBus, String> {
    let gate = plan.credentials.gates.iter().find(|g| g.name == READER_GATE).ok_or("the demo has no Office door")?;
    let (bus, serve) =
        VirtualBus::start(vec![READER_ADDRESS]).await.map_err(|e| format!("cannot start the bus: {e}"))?;
    actix_rt::spawn(serve);
    let path = format!("/api/v1/orgs/{}/gates/{}/reader", plan.credentials.org_id, gate.id);
    let binding =
        json!({"protocol": "osdp", "endpoint": format!("tcp://127.0.0.1:{}", bus.port), "address": READER_ADDRESS});
    let (status, body) = request(plan.api, "PUT", &path, Some(token), Some(&binding)).await?;
    if status != 200 {
        return Err(format!("the reader could not be bound: {status} {body}"));
    }
    Ok(bus)
}

/// A decision asked as a device asks it (the verdict is the dashboard's to show).
async fn ask(api: SocketAddr, path: &str, key: &str, body: &Value) {
    match request(api, "POST", path, Some(key), Some(body)).await {
        Ok((200, _)) => {}
        Ok((status, body)) => tracing::warn!(path, status, %body, "simulated decision refused"),
        Err(err) => tracing::warn!(path, error = %err, "simulated device could not ask"),
    }
}

/// One HTTP/1.1 request with a JSON body and a bearer token; the status and the JSON answer.
async fn request(
    api: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let asked = async {
        let mut stream = tokio::net::TcpStream::connect(api).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = match tokio::time::timeout(Duration::from_secs(5), asked).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(err)) => return Err(err.to_string()),
        Err(_) => return Err("no answer in 5 s".to_owned()),
    };
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let json = text.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    Ok((status, json))
}
