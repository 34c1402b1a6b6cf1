//! Interop: readers played by an independent OSDP implementation — libosdp, the C library, as
//! Peripheral Devices — on one TCP bus, driven by the engine as Control Panel. Plain and secure
//! channel on the same bus at two addresses; card reads decided for each reader's gate and answered
//! with relay, LED and buzzer; a bus that drops and comes back. `OSDP_TRACE=1` prints the bus.

// The bus runs on a plain thread (libosdp is synchronous); its shared state is locked briefly.
#![expect(
    clippy::disallowed_types,
    reason = "state shared with the thread playing the bus; never held across an await"
)]

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libosdp::{
    Channel, ChannelError, OsdpCommand, OsdpEvent, OsdpEventCardRead, OsdpFlag, OsdpLedColor, PdCapEntity,
    PdCapability, PdId, PdInfoBuilder, PeripheralDevice,
};
use portcullis_adapters::wiegand;
use serde_json::{Value, json};

use crate::helpers::{TestResult, spawn_app};
use crate::site::Site;

const SCBK: [u8; 16] = [0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D, 0x3E, 0x3F];

/// One PD's side of the bus: what the serial-device server received for it, and what it sends.
#[derive(Clone, Default)]
struct Wire {
    inbound: Arc<Mutex<VecDeque<u8>>>,
    outbound: Arc<Mutex<Vec<u8>>>,
}

impl Channel for Wire {
    fn get_id(&self) -> i32 {
        0
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ChannelError> {
        let mut inbound = self.inbound.lock().map_err(|_| ChannelError::TransportError)?;
        let n = buf.len().min(inbound.len());
        for (to, from) in buf.iter_mut().zip(inbound.drain(..n)) {
            *to = from;
        }
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> Result<usize, ChannelError> {
        self.outbound.lock().map_err(|_| ChannelError::TransportError)?.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), ChannelError> {
        Ok(())
    }

    fn close(&mut self) -> Result<(), ChannelError> {
        Ok(())
    }
}

/// A card to present at a PD, or the bus to cut.
type Presented = Arc<Mutex<HashMap<i32, VecDeque<Vec<bool>>>>>;

/// The commands each PD received (address → when, what).
type Commands = Arc<Mutex<HashMap<i32, Vec<(Instant, OsdpCommand)>>>>;

/// The serial-device server and its libosdp readers.
struct LibosdpBus {
    port: u16,
    presented: Presented,
    /// Commands each PD received (address → commands).
    commands: Commands,
    /// Whether each PD's secure channel is up.
    secure: Arc<Mutex<HashMap<i32, bool>>>,
    /// Cleared: the server drops the connection and refuses new ones (the cable is cut).
    linked: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
}

impl LibosdpBus {
    /// Readers at `readers` (address, SCBK for a secure one).
    fn start(readers: Vec<(i32, Option<[u8; 16]>)>) -> TestResult<LibosdpBus> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let bus = LibosdpBus {
            port: listener.local_addr()?.port(),
            presented: Arc::default(),
            commands: Arc::default(),
            secure: Arc::default(),
            linked: Arc::new(AtomicBool::new(true)),
            quit: Arc::new(AtomicBool::new(false)),
        };
        let (presented, commands, secure) = (bus.presented.clone(), bus.commands.clone(), bus.secure.clone());
        let (linked, quit) = (bus.linked.clone(), bus.quit.clone());
        std::thread::spawn(move || {
            while !quit.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                if linked.load(Ordering::Relaxed) {
                    // Fresh PDs for each connection, as readers power-cycled with the bus.
                    serve(stream, &readers, &presented, &commands, &secure, &linked, &quit);
                }
            }
        });
        Ok(bus)
    }

    fn present(&self, address: i32, bits: Vec<bool>) {
        if let Ok(mut presented) = self.presented.lock() {
            presented.entry(address).or_default().push_back(bits);
        }
    }

    fn received_since(&self, address: i32, since: Instant) -> Vec<OsdpCommand> {
        let commands = self.commands.lock().map(|c| c.get(&address).cloned().unwrap_or_default());
        commands.unwrap_or_default().into_iter().filter(|(at, _)| *at >= since).map(|(_, c)| c).collect()
    }

    fn secure(&self, address: i32) -> bool {
        self.secure.lock().map(|s| s.get(&address).copied().unwrap_or(false)).unwrap_or(false)
    }
}

impl Drop for LibosdpBus {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Relaxed);
    }
}

fn serve(
    mut stream: std::net::TcpStream,
    readers: &[(i32, Option<[u8; 16]>)],
    presented: &Presented,
    commands: &Commands,
    secure: &Mutex<HashMap<i32, bool>>,
    linked: &AtomicBool,
    quit: &AtomicBool,
) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut pds = Vec::new();
    for (address, scbk) in readers {
        let wire = Wire::default();
        let id = PdId {
            version: 1,
            model: 2,
            vendor_code: (0x0A, 0x0B, 0x0C),
            // The crate hands these bytes to the C library as a little-endian u32, which sends it
            // LSB first, as OSDP wants.
            serial_number: 4242u32.to_le_bytes(),
            firmware_version: (1, 0, 0),
        };
        let info = PdInfoBuilder::new()
            .name(&format!("reader {address}"))
            .and_then(|b| b.address(*address))
            .and_then(|b| b.baud_rate(115_200))
            // A reader with a relay, an LED and a buzzer (libosdp refuses commands for what a PD
            // does not have).
            .map(|b| {
                b.id(&id).capabilities(&[
                    PdCapability::OutputControl(PdCapEntity::new(1, 1)),
                    PdCapability::LedControl(PdCapEntity::new(1, 1)),
                    PdCapability::AudibleOutput(PdCapEntity::new(1, 1)),
                ])
            });
        let info = match (info, scbk) {
            (Ok(builder), Some(key)) => builder
                .flag(OsdpFlag::EnforceSecure)
                .capability(PdCapability::CommunicationSecurity(PdCapEntity::new(1, 1)))
                .secure_channel_key(*key),
            (Ok(builder), None) => builder,
            (Err(_), _) => return,
        };
        let Ok(mut pd) = PeripheralDevice::new(info, Box::new(wire.clone())) else { return };
        let (log, address) = (commands.clone(), *address);
        pd.set_command_callback(move |command| {
            if let Ok(mut log) = log.lock() {
                log.entry(address).or_default().push((Instant::now(), command.clone()));
            }
            0
        });
        pds.push((address, pd, wire));
    }
    let mut chunk = [0u8; 1024];
    while linked.load(Ordering::Relaxed) && !quit.load(Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            // Every reader on the bus hears every byte; each answers only its own address.
            Ok(n) => {
                if std::env::var_os("OSDP_TRACE").is_some() {
                    eprintln!("cp -> {:02x?}", chunk.get(..n));
                }
                for (_, _, wire) in &pds {
                    if let Ok(mut inbound) = wire.inbound.lock() {
                        inbound.extend(chunk.iter().take(n));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
        for (address, pd, wire) in &mut pds {
            if let Some(bits) = presented.lock().ok().and_then(|mut p| p.get_mut(address)?.pop_front()) {
                let mut bytes = vec![0u8; bits.len().div_ceil(8)];
                for (i, bit) in bits.iter().enumerate() {
                    if *bit && let Some(byte) = bytes.get_mut(i / 8) {
                        *byte |= 0x80 >> (i % 8);
                    }
                }
                if let Ok(event) = OsdpEventCardRead::new_wiegand(bits.len(), bytes) {
                    let _ = pd.notify_event(OsdpEvent::CardRead(event));
                }
            }
            pd.refresh();
            if let Ok(mut secure) = secure.lock() {
                secure.insert(*address, pd.is_sc_active());
            }
            let out = wire.outbound.lock().map(|mut o| std::mem::take(&mut *o)).unwrap_or_default();
            if !out.is_empty() && std::env::var_os("OSDP_TRACE").is_some() {
                eprintln!("pd {address} -> {:02x?}", out);
            }
            if !out.is_empty() && stream.write_all(&out).is_err() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

async fn wait<T>(secs: u64, what: &str, mut probe: impl AsyncFnMut() -> TestResult<Option<T>>) -> TestResult<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(found) = probe().await? {
            return Ok(found);
        }
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {secs} s").into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

fn bits(facility: u64, number: u64) -> TestResult<Vec<bool>> {
    Ok(wiegand::encode(wiegand::Card { format: wiegand::Format::H10301, facility, number })?)
}

#[actix_web::test]
async fn libosdp_readers_plain_and_secure_on_one_bus_open_their_gates_and_come_back_after_a_cut() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 2).await?;
    let card = json!({"kind": "card", "format": "h10301", "facility_code": 123, "card_number": 4567});
    let (pass, _) = site.pass(json!({"credential": card})).await?;
    let bus = LibosdpBus::start(vec![(1, None), (2, Some(SCBK))])?;
    let endpoint = format!("tcp://127.0.0.1:{}", bus.port);
    let scbk: String = SCBK.iter().map(|b| format!("{b:02X}")).collect();
    let bindings = [
        (&site.gates[0], json!({"protocol": "osdp", "endpoint": endpoint, "address": 1})),
        (&site.gates[1], json!({"protocol": "osdp", "endpoint": endpoint, "address": 2, "scbk": scbk})),
    ];
    for (gate, body) in &bindings {
        let path = site.path(&format!("/gates/{gate}/reader"));
        let reply = site.app.call("PUT", &path, Some(&site.root.access), Some(body.clone())).await?;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let online = |gate: String, secure: bool| {
        let site = &site;
        async move || -> TestResult<Option<Value>> {
            let binding = site.get(&format!("/gates/{gate}/reader")).await?;
            let status = &binding["status"];
            Ok((status["online"] == true && status["secure_channel"] == secure).then(|| binding.clone()))
        }
    };
    let plain = wait(15, "the plain reader online", online(site.gates[0].clone(), false)).await?;
    assert_eq!(plain["status"]["serial"], 4242, "its identity, from its ID reply: {plain}");
    wait(15, "the secure reader online over the secure channel", online(site.gates[1].clone(), true)).await?;
    assert!(bus.secure(2), "libosdp says its secure channel is up");
    assert!(!bus.secure(1));

    // The pass's card at each reader: relay pulsed, green, one beep.
    for address in [1, 2] {
        let since = Instant::now();
        bus.present(address, bits(123, 4567)?);
        wait(5, "the allow's commands", async || {
            let got = bus.received_since(address, since);
            let out =
                got.iter().any(|c| matches!(c, OsdpCommand::Output(o) if o.control_code == 5 && o.timer_count > 0));
            let led =
                got.iter().any(|c| matches!(c, OsdpCommand::Led(l) if l.temporary.on_color == OsdpLedColor::Green));
            let buzz = got.iter().any(|c| matches!(c, OsdpCommand::Buzzer(_)));
            Ok((out && led && buzz).then_some(()))
        })
        .await?;
    }
    // An unknown card: no relay.
    let since = Instant::now();
    bus.present(2, bits(9, 999)?);
    wait(5, "the deny's LED and buzzer", async || {
        let got = bus.received_since(2, since);
        let red = got.iter().any(|c| matches!(c, OsdpCommand::Led(l) if l.temporary.on_color == OsdpLedColor::Red));
        Ok((red && got.iter().any(|c| matches!(c, OsdpCommand::Buzzer(_)))).then_some(()))
    })
    .await?;
    assert!(
        !bus.received_since(2, since).iter().any(|c| matches!(c, OsdpCommand::Output(_))),
        "a deny opened the relay"
    );

    let db = site.app.db().await?;
    let logged = wait(10, "the three reads journaled", async || {
        let rows = db
            .query(
                "SELECT decision, pass_id::text, gate_id::text FROM checkins WHERE source = 'osdp' ORDER BY decided_at",
                &[],
            )
            .await?;
        let rows: Vec<(String, Option<String>, String)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        Ok((rows.len() == 3).then_some(rows))
    })
    .await?;
    assert_eq!(
        logged,
        [
            ("allow".to_owned(), Some(pass.clone()), site.gates[0].clone()),
            ("allow".to_owned(), Some(pass), site.gates[1].clone()),
            ("deny".to_owned(), None, site.gates[1].clone()),
        ]
    );

    // The cable is cut: both offline within 10 s; back: both online (secure again) within 10 s.
    bus.linked.store(false, Ordering::Relaxed);
    let offline = |gate: String| {
        let site = &site;
        async move || -> TestResult<Option<()>> {
            Ok((site.get(&format!("/gates/{gate}/reader")).await?["status"]["online"] == false).then_some(()))
        }
    };
    wait(10, "reader 1 offline", offline(site.gates[0].clone())).await?;
    wait(10, "reader 2 offline", offline(site.gates[1].clone())).await?;
    bus.linked.store(true, Ordering::Relaxed);
    wait(15, "reader 1 back", online(site.gates[0].clone(), false)).await?;
    wait(15, "reader 2 back, secure", online(site.gates[1].clone(), true)).await?;
    Ok(())
}
