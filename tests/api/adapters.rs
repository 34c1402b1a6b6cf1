//! The adapters' edges, end to end: a BAS-IP panel asking in its own dialect, and an OSDP reader
//! on a TCP bus that the engine drives as Control Panel.

// The simulated reader runs on a plain thread; its shared state is locked briefly, never across
// an await.
#![expect(clippy::disallowed_types, reason = "the simulated reader's state, shared with a plain thread")]

use std::collections::VecDeque;
use std::sync::Arc;
#[expect(
    clippy::disallowed_types,
    reason = "shared with a plain thread playing the reader; never held across an await"
)]
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use portcullis_adapters::osdp::Reply;
use portcullis_adapters::wiegand;
use portcullis_adapters::{osdp, osdp_sc};
use serde_json::{Value, json};

use crate::helpers::{TestResult, spawn_app};
use crate::site::Site;

/// The check-ins from `source` (decision, reason, pass), oldest first, once there are `count` of
/// them (a deny is written within moments of its answer), or whatever there is after 10 s.
async fn logged_from(site: &Site, source: &str, count: usize) -> TestResult<Vec<(String, String, Option<String>)>> {
    let db = site.app.db().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = db
            .query(
                "SELECT decision, reason, pass_id::text FROM checkins WHERE source = $1 ORDER BY decided_at",
                &[&source],
            )
            .await?;
        let logged: Vec<(String, String, Option<String>)> =
            rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        if logged.len() >= count || Instant::now() > deadline {
            return Ok(logged);
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn a_bas_ip_panel_is_answered_in_its_dialect_and_journaled_like_any_decision() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 2).await?;
    let card = json!({"kind": "card", "format": "h10301", "facility_code": 123, "card_number": 4567});
    let (pass, _) = site.pass(json!({"credential": card})).await?;
    let path = format!("/api/v1/gates/{}/bas-ip", site.gates[0]);
    let ask = |number: &str, kind: &str| {
        let body = json!({"identifier_number": number, "identifier_type": kind, "device_serial": "BAS-42", "lock": 1});
        site.app.call("POST", &path, Some(&site.device_key), Some(body))
    };

    // The card's number as the panel reads it, with and without its facility code.
    for number in ["4567", "123:4567"] {
        let reply = ask(number, "card").await?;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json(), json!({"handled": true, "access": {"granted": true, "lock_number": 1}}));
    }
    let reply = ask("98765", "card").await?;
    assert_eq!(reply.json()["access"]["granted"], false);

    // Journaled with its source, like any decision.
    let logged = logged_from(&site, "bas-ip", 3).await?;
    assert_eq!(
        logged,
        [
            ("allow".to_owned(), "allowed".to_owned(), Some(pass.clone())),
            ("allow".to_owned(), "allowed".to_owned(), Some(pass)),
            ("deny".to_owned(), "unknown_credential".to_owned(), None),
        ]
    );

    // An identifier type it does not know is a 422 naming the field; a key not bound to the
    // gate, 403; no key, 401.
    let reply = ask("4567", "retina").await?;
    assert_eq!((reply.status, reply.error_code().as_deref()), (422, Some("validation_failed")));
    assert!(reply.json()["error"]["details"]["fields"]["identifier_type"].is_string(), "{}", reply.text());
    let other_gate = format!("/api/v1/gates/{}/bas-ip", site.gates[1]);
    let key = site
        .post("/api-keys", json!({"name": "Other panel", "scopes": ["gate:decide"], "gate_ids": [site.gates[0]]}))
        .await?;
    let reply = site
        .app
        .call(
            "POST",
            &other_gate,
            key["key"].as_str(),
            Some(json!({"identifier_number": "4567", "identifier_type": "card"})),
        )
        .await?;
    assert_eq!((reply.status, reply.error_code().as_deref()), (403, Some("key_not_bound_to_gate")));
    let reply = site
        .app
        .call("POST", &path, None, Some(json!({"identifier_number": "4567", "identifier_type": "card"})))
        .await?;
    assert_eq!(reply.status, 401);
    Ok(())
}

/// A reader on an RS-485 bus behind a serial-device server, as the engine sees it: a TCP
/// listener whose reader (at one address) answers ID with its identity, POLL with ACK or a card
/// read waiting to be sent, and records every output, LED and buzzer command it is given.
/// (when, command code, data) of every OUT, LED and BUZ a simulated reader received.
type Received = Mutex<Vec<(Instant, u8, Vec<u8>)>>;

struct SimulatedReader {
    port: u16,
    address: u8,
    cards: Arc<Mutex<VecDeque<Vec<bool>>>>,
    commands: Arc<Received>,
    /// Cleared: the server drops its connection and refuses new ones (the reader's cable is cut).
    linked: Arc<AtomicBool>,
    /// The reader's tamper switch, as it reports it when asked its local status.
    tamper: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
}

impl SimulatedReader {
    fn start(address: u8) -> TestResult<SimulatedReader> {
        Self::start_with(address, None)
    }

    /// A reader that holds `scbk` and speaks the secure channel when asked to.
    fn start_with(address: u8, scbk: Option<[u8; 16]>) -> TestResult<SimulatedReader> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let reader = SimulatedReader {
            port: listener.local_addr()?.port(),
            address,
            cards: Arc::default(),
            commands: Arc::default(),
            linked: Arc::new(AtomicBool::new(true)),
            tamper: Arc::new(AtomicBool::new(false)),
            quit: Arc::new(AtomicBool::new(false)),
        };
        let (cards, commands, linked, quit) =
            (reader.cards.clone(), reader.commands.clone(), reader.linked.clone(), reader.quit.clone());
        let tamper = reader.tamper.clone();
        std::thread::spawn(move || {
            while !quit.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                if linked.load(Ordering::Relaxed) {
                    serve(stream, address, scbk, &cards, &commands, &linked, &tamper, &quit);
                }
            }
        });
        Ok(reader)
    }

    fn present(&self, bits: Vec<bool>) {
        if let Ok(mut cards) = self.cards.lock() {
            cards.push_back(bits);
        }
    }

    /// The commands received since `since`.
    fn received_since(&self, since: Instant) -> Vec<(u8, Vec<u8>)> {
        self.commands
            .lock()
            .map(|c| c.iter().filter(|(at, _, _)| *at >= since).map(|(_, code, data)| (*code, data.clone())).collect())
            .unwrap_or_default()
    }
}

impl Drop for SimulatedReader {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Relaxed);
    }
}

/// The reader's random for the secure channel's handshake.
const READER_RANDOM: [u8; 8] = [0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7];

#[expect(clippy::too_many_arguments, reason = "the simulated reader's whole state, handed to its thread")]
fn serve(
    mut stream: std::net::TcpStream,
    address: u8,
    mut scbk: Option<[u8; 16]>,
    cards: &Mutex<VecDeque<Vec<bool>>>,
    commands: &Received,
    linked: &AtomicBool,
    tamper: &AtomicBool,
    quit: &AtomicBool,
) {
    use std::io::{Read, Write};
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    let mut session: Option<osdp_sc::Session> = None;
    let respond = |packet: &osdp::Packet| -> (u8, Vec<u8>) {
        if matches!(packet.code, 0x68..=0x6A)
            && let Ok(mut seen) = commands.lock()
        {
            seen.push((Instant::now(), packet.code, packet.data.clone()));
        }
        let reply = match packet.code {
            0x61 => Reply::PdId { vendor: [0x0A, 0x0B, 0x0C], model: 1, version: 1, serial: 4242, firmware: [1, 0, 0] },
            0x60 => match cards.lock().ok().and_then(|mut c| c.pop_front()) {
                Some(bits) => Reply::Raw { reader: 0, format: 1, bits },
                None => Reply::Ack,
            },
            0x64 => Reply::LocalStatus { tamper: tamper.load(Ordering::Relaxed), power_failure: false },
            _ => Reply::Ack,
        };
        reply.encode()
    };
    while linked.load(Ordering::Relaxed) && !quit.load(Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        while let Ok((found, used)) = osdp::frame(&buf) {
            let start = used - found.body.len() - if found.crc { 2 } else { 1 };
            let (secure, reply, addr, seq) = (found.secure, found.reply, found.addr, found.seq);
            let bytes = buf[start..used].to_vec();
            buf.drain(..used);
            if reply || addr != address {
                continue;
            }
            let answer = |seq, code, data| osdp::Packet { addr: address, reply: true, seq, crc: true, code, data };
            let nak = |seq, why: u8| answer(seq, 0x41, vec![why]).encode(true);
            let wire = match (secure, scbk) {
                // A reader without a key refuses the secure channel (NAK 5).
                (true, None) => nak(seq, 5),
                (true, Some(key)) => match osdp_sc::open(session.as_mut(), true, &bytes) {
                    Ok((opened, _)) if opened.kind == osdp_sc::SCS_11 => {
                        let rnd_a: [u8; 8] =
                            opened.packet.data.get(..8).and_then(|r| r.try_into().ok()).unwrap_or_default();
                        let fresh = osdp_sc::Session::new(&key, rnd_a, READER_RANDOM);
                        let mut data = vec![0xC0; 8];
                        data.extend(READER_RANDOM);
                        data.extend(fresh.client_cryptogram());
                        session = Some(fresh);
                        let key_type = opened.block.first().copied().unwrap_or(1);
                        osdp_sc::handshake(&answer(seq, osdp_sc::CCRYPT, data), osdp_sc::SCS_12, key_type, true)
                    }
                    Ok((opened, _)) if opened.kind == osdp_sc::SCS_13 => match session.as_mut() {
                        Some(s) if s.host_cryptogram_matches(&opened.packet.data) => {
                            let rmac = s.start_chain().to_vec();
                            osdp_sc::handshake(&answer(seq, osdp_sc::RMAC_I, rmac), osdp_sc::SCS_14, 1, true)
                        }
                        _ => nak(seq, 6),
                    },
                    // osdp_KEYSET: acknowledged, and the new key is the reader's from the next
                    // handshake on.
                    Ok((opened, _)) if opened.packet.code == 0x75 => match session.as_mut() {
                        Some(s) => {
                            let wire = osdp_sc::seal(s, false, &answer(seq, 0x40, vec![]), true);
                            scbk = opened.packet.data.get(2..18).and_then(|k| k.try_into().ok()).or(scbk);
                            wire
                        }
                        None => nak(seq, 6),
                    },
                    Ok((opened, _)) => match session.as_mut() {
                        Some(s) => {
                            let (code, data) = respond(&opened.packet);
                            osdp_sc::seal(s, false, &answer(seq, code, data), true)
                        }
                        None => nak(seq, 6),
                    },
                    Err(_) => {
                        session = None;
                        nak(seq, 6)
                    }
                },
                (false, _) => match osdp::decode(&bytes) {
                    Ok((packet, _)) => {
                        let (code, data) = respond(&packet);
                        answer(packet.seq, code, data).encode(true)
                    }
                    Err(_) => continue,
                },
            };
            if stream.write_all(&wire).is_err() {
                return;
            }
        }
    }
}

/// Waits for `done` to hold of the reader's binding (`GET …/reader`).
async fn wait_reader(site: &Site, gate: &str, what: &str, done: impl Fn(&Value) -> bool) -> TestResult<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let binding = site.get(&format!("/gates/{gate}/reader")).await?;
        if done(&binding) {
            return Ok(binding);
        }
        if Instant::now() > deadline {
            return Err(format!("{what} within 10 s: {binding}").into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the reader has received a command `matches` accepts since `since`.
async fn wait_command(
    reader: &SimulatedReader,
    since: Instant,
    what: &str,
    matches: impl Fn(&[(u8, Vec<u8>)]) -> bool,
) -> TestResult<Duration> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let received = reader.received_since(since);
        if matches(&received) {
            return Ok(since.elapsed());
        }
        if Instant::now() > deadline {
            return Err(format!("{what}: the reader received {received:?}").into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix_web::test]
async fn an_osdp_reader_on_a_tcp_bus_opens_the_gate_for_a_pass_and_refuses_an_unknown_card() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let card = json!({"kind": "card", "format": "h10301", "facility_code": 123, "card_number": 4567});
    let (pass, _) = site.pass(json!({"credential": card})).await?;
    let reader = SimulatedReader::start(5)?;
    let gate = site.gates[0].clone();
    let body = json!({"protocol": "osdp", "endpoint": format!("tcp://127.0.0.1:{}", reader.port), "address": reader.address, "output": 0});
    let reply =
        site.app.call("PUT", &site.path(&format!("/gates/{gate}/reader")), Some(&site.root.access), Some(body)).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let binding = wait_reader(&site, &gate, "online", |b| b["status"]["online"] == true).await?;
    assert_eq!(
        (binding["status"]["vendor"].as_str(), binding["status"]["serial"].as_u64()),
        (Some("0a0b0c"), Some(4242))
    );
    assert_eq!(binding["status"]["secure_channel"], false);

    // The pass's card: relay for the gate's open time (3.0 s), green, one beep.
    let h10301 = |number| wiegand::encode(wiegand::Card { format: wiegand::Format::H10301, facility: 123, number });
    let presented = Instant::now();
    reader.present(h10301(4567)?);
    let relay = wait_command(&reader, presented, "relay", |c| {
        c.iter().any(|(code, data)| *code == 0x68 && data == &[0, 5, 30, 0])
    })
    .await?;
    wait_command(&reader, presented, "green LED and a beep", |c| {
        c.iter().any(|(code, data)| *code == 0x69 && data.get(5) == Some(&2))
            && c.iter().any(|(code, data)| *code == 0x6A && data.get(4) == Some(&1))
    })
    .await?;
    // An unknown card: no relay; red, three beeps.
    let refused = Instant::now();
    reader.present(h10301(9999)?);
    wait_command(&reader, refused, "red LED and three beeps", |c| {
        c.iter().any(|(code, data)| *code == 0x69 && data.get(5) == Some(&1))
            && c.iter().any(|(code, data)| *code == 0x6A && data.get(4) == Some(&3))
    })
    .await?;
    assert!(!reader.received_since(refused).iter().any(|(code, _)| *code == 0x68), "no relay for a refusal");

    // Both in the check-in log, from the reader.
    let logged = logged_from(&site, "osdp", 2).await?;
    assert_eq!(
        logged,
        [
            ("allow".to_owned(), "allowed".to_owned(), Some(pass)),
            ("deny".to_owned(), "unknown_credential".to_owned(), None)
        ]
    );

    // Its local status is asked every couple of seconds; a tamper switch it reports shows.
    wait_reader(&site, &gate, "last seen, not tampered", |b| {
        b["status"]["last_seen"].is_string() && b["status"]["tamper"] == false
    })
    .await?;
    reader.tamper.store(true, Ordering::Relaxed);
    wait_reader(&site, &gate, "tamper reported", |b| b["status"]["tamper"] == true).await?;

    // The reader's link cut: offline within 10 s; back: online within 10 s, no restart.
    reader.linked.store(false, Ordering::Relaxed);
    let binding = wait_reader(&site, &gate, "offline", |b| b["status"]["online"] == false).await?;
    assert!(binding["status"]["reason"].is_string(), "{binding}");
    reader.linked.store(true, Ordering::Relaxed);
    wait_reader(&site, &gate, "back online", |b| b["status"]["online"] == true).await?;
    eprintln!("OSDP card read to relay command: {} ms (loopback, one reader)", relay.as_millis());

    // Unbound: the engine stops polling it.
    let reply =
        site.app.call("DELETE", &site.path(&format!("/gates/{gate}/reader")), Some(&site.root.access), None).await?;
    assert_eq!(reply.status, 204);
    let reply =
        site.app.call("GET", &site.path(&format!("/gates/{gate}/reader")), Some(&site.root.access), None).await?;
    assert_eq!(reply.status, 404);
    Ok(())
}

#[actix_web::test]
async fn a_reader_binding_that_cannot_be_used_is_refused_naming_the_field() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let path = site.path(&format!("/gates/{}/reader", site.gates[0]));
    let base = json!({"protocol": "osdp", "endpoint": "tcp://10.0.0.7:4001", "address": 1});
    for (change, field) in [
        (json!({"address": 127}), "address"),
        (json!({"endpoint": "http://10.0.0.7"}), "endpoint"),
        (json!({"endpoint": "tcp://10.0.0.7:0"}), "endpoint"),
        (json!({"protocol": "wiegand"}), "protocol"),
        (json!({"scbk": "not-hex"}), "scbk"),
        (json!({"scbk": "3031323334"}), "scbk"),
        (json!({"install_mode": "yes"}), "install_mode"),
        (json!({"card_format": "h99999"}), "card_format"),
    ] {
        let mut body = base.clone();
        if let (Some(body), Some(change)) = (body.as_object_mut(), change.as_object()) {
            body.extend(change.clone());
        }
        let reply = site.app.call("PUT", &path, Some(&site.root.access), Some(body)).await?;
        assert_eq!(reply.status, 422, "{change}: {}", reply.text());
        assert!(reply.json()["error"]["details"]["fields"][field].is_string(), "{change}: {}", reply.text());
    }
    // An endpoint nobody answers is a status, not an error.
    let reply = site.app.call("PUT", &path, Some(&site.root.access), Some(base)).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["status"]["online"], false);
    Ok(())
}

#[actix_web::test]
async fn a_reader_with_a_key_talks_only_over_the_secure_channel_and_a_wrong_key_is_named() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 2).await?;
    let card = json!({"kind": "card", "format": "h10301", "facility_code": 123, "card_number": 4567});
    site.pass(json!({"credential": card})).await?;
    let scbk = [0x5a; 16];
    let hex: String = scbk.iter().map(|b| format!("{b:02x}")).collect();
    let reader = SimulatedReader::start_with(7, Some(scbk))?;
    let gate = site.gates[0].clone();
    let path = site.path(&format!("/gates/{gate}/reader"));
    let body =
        json!({"protocol": "osdp", "endpoint": format!("tcp://127.0.0.1:{}", reader.port), "address": 7, "scbk": hex});
    let reply = site.app.call("PUT", &path, Some(&site.root.access), Some(body)).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["secure_channel"], "scbk");
    assert!(!reply.text().contains(&hex), "the key is never shown again");
    let binding =
        wait_reader(&site, &gate, "online over the secure channel", |b| b["status"]["online"] == true).await?;
    assert_eq!(binding["status"]["secure_channel"], true, "{binding}");
    assert!(!binding.to_string().contains(&hex));

    // A card through the encrypted channel: the relay comes back, decrypted by the reader.
    let presented = Instant::now();
    reader.present(wiegand::encode(wiegand::Card { format: wiegand::Format::H10301, facility: 123, number: 4567 })?);
    wait_command(&reader, presented, "relay over the secure channel", |c| {
        c.iter().any(|(code, data)| *code == 0x68 && data == &[0, 5, 30, 0])
    })
    .await?;
    let db = site.app.db().await?;
    let stored: Option<Vec<u8>> = db
        .query_one("SELECT scbk_sealed FROM gate_readers WHERE gate_id = $1", &[&uuid::Uuid::try_parse(&gate)?])
        .await?
        .get(0);
    assert!(stored.is_some_and(|s| !s.windows(16).any(|w| w == scbk)), "stored sealed, not in the clear");

    // The same reader bound with another key: never talked to in plain text; the reason says why.
    let other = SimulatedReader::start_with(7, Some([0x11; 16]))?;
    let gate = site.gates[1].clone();
    let body =
        json!({"protocol": "osdp", "endpoint": format!("tcp://127.0.0.1:{}", other.port), "address": 7, "scbk": hex});
    let reply =
        site.app.call("PUT", &site.path(&format!("/gates/{gate}/reader")), Some(&site.root.access), Some(body)).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let binding = wait_reader(&site, &gate, "the wrong key named", |b| {
        b["status"]["reason"].as_str().is_some_and(|r| r.contains("does not hold the key it was bound with"))
    })
    .await?;
    assert_eq!(binding["status"]["online"], false);
    assert!(other.received_since(presented).is_empty(), "nothing was sent to it in plain text");
    Ok(())
}

#[actix_web::test]
async fn a_reader_in_install_mode_is_given_its_own_key_once_and_then_uses_it() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let reader = SimulatedReader::start_with(3, Some(osdp_sc::SCBK_D))?;
    let gate = site.gates[0].clone();
    let key: String = [0x7e_u8; 16].iter().map(|b| format!("{b:02x}")).collect();
    let body = json!({"protocol": "osdp", "endpoint": format!("tcp://127.0.0.1:{}", reader.port), "address": 3,
                      "install_mode": true, "scbk": key});
    let reply =
        site.app.call("PUT", &site.path(&format!("/gates/{gate}/reader")), Some(&site.root.access), Some(body)).await?;
    assert_eq!((reply.status, reply.json()["secure_channel"].as_str()), (200, Some("rekeying")), "{}", reply.text());
    // SCBK-D once, KEYSET over it, then a new channel with the reader's own key.
    let binding = wait_reader(&site, &gate, "online with its own key", |b| {
        b["secure_channel"] == "scbk" && b["status"]["online"] == true && b["status"]["secure_channel"] == true
    })
    .await?;
    assert!(!binding.to_string().contains(&key));
    let db = site.app.db().await?;
    let install: bool = db
        .query_one("SELECT install_mode FROM gate_readers WHERE gate_id = $1", &[&uuid::Uuid::try_parse(&gate)?])
        .await?
        .get(0);
    assert!(!install, "install mode is over, and recorded");
    Ok(())
}
