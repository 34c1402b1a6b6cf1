//! Readers on OSDP buses, driven by the engine as Control Panel: one bus task per endpoint (the
//! protocol is `portcullis_adapters::osdp_bus`), its card reads and PINs decided for the reader's
//! gate exactly like an HTTP decision (same actors, journal and stream; `source: "osdp"`), and
//! each verdict answered with the relay, LED and buzzer. Each reader's status (online, since
//! when, why not) is kept here, shown with its binding and published on the gate's stream
//! (`gate.reader`).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use portcullis_actors::domain::{Decision, Source};
use portcullis_actors::engine::Engine;
use portcullis_actors::events::Event;
use portcullis_adapters::osdp::{Colour, Command};
use portcullis_adapters::osdp_bus::{self, Bus, BusEvent, Key, Reader};
use portcullis_adapters::wiegand;
use secrecy::SecretString;
use serde::Serialize;
use tokio::sync::{Mutex, mpsc};
use uuid::Uuid;

use crate::engine::credentials::{self, CredentialInput};

/// A reader bound to a gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub org_id: Uuid,
    pub gate_id: Uuid,
    /// `host:port` of the serial-device server.
    pub endpoint: String,
    pub address: u8,
    /// The relay the gate's lock hangs on.
    pub output: u8,
    /// Its secure channel's key; `None`: plain OSDP.
    pub key: Option<Key>,
}

/// A reader's live status.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReaderStatus {
    pub online: bool,
    /// When it last came online or went offline.
    pub since: Option<DateTime<Utc>>,
    /// When it last answered its local-status question (about every 2 s while online).
    pub last_seen: Option<DateTime<Utc>>,
    /// Its tamper switch and power, as it last reported them.
    pub tamper: Option<bool>,
    pub power_failure: Option<bool>,
    /// Why it is offline, when it is.
    pub reason: Option<String>,
    /// Its identification (OSDP vendor code, hex, and serial), once it gave one.
    pub vendor: Option<String>,
    pub serial: Option<u32>,
    /// Whether it talks over the secure channel now (a reader given a key never talks otherwise).
    pub secure_channel: bool,
}

/// A bus being driven (aborting its task stops it, and its listener with it).
struct Running {
    task: tokio::task::JoinHandle<()>,
}

/// Every bus the engine drives, and every bound reader's status.
pub struct Readers {
    engine: Engine,
    pepper: SecretString,
    pool: deadpool_postgres::Pool,
    bindings: DashMap<Uuid, Binding>,
    status: DashMap<Uuid, ReaderStatus>,
    buses: Mutex<HashMap<String, Running>>,
}

impl Readers {
    pub fn new(engine: Engine, pepper: SecretString, pool: deadpool_postgres::Pool) -> Arc<Readers> {
        Arc::new(Readers {
            engine,
            pepper,
            pool,
            bindings: DashMap::new(),
            status: DashMap::new(),
            buses: Mutex::new(HashMap::new()),
        })
    }

    /// Starts driving the readers bound at start.
    pub async fn start_all(self: &Arc<Self>, bindings: Vec<Binding>) {
        let mut endpoints: Vec<String> = bindings.iter().map(|b| b.endpoint.clone()).collect();
        endpoints.sort();
        endpoints.dedup();
        for binding in bindings {
            self.bindings.insert(binding.gate_id, binding);
        }
        for endpoint in endpoints {
            self.restart_bus(&endpoint).await;
        }
    }

    /// Binds (or re-binds) a gate's reader; in force when this returns, without a restart.
    pub async fn bind(self: &Arc<Self>, binding: Binding) {
        let old = self.bindings.insert(binding.gate_id, binding.clone());
        self.status.insert(binding.gate_id, offline("not yet polled"));
        if let Some(old) = old.filter(|o| o.endpoint != binding.endpoint) {
            self.restart_bus(&old.endpoint).await;
        }
        self.restart_bus(&binding.endpoint).await;
    }

    /// Unbinds a gate's reader (the gate was deleted, or its binding removed).
    pub async fn unbind(self: &Arc<Self>, gate_id: Uuid) {
        self.status.remove(&gate_id);
        if let Some((_, old)) = self.bindings.remove(&gate_id) {
            self.restart_bus(&old.endpoint).await;
        }
    }

    /// Unbinds every reader of an organization (it was deleted).
    pub async fn unbind_org(self: &Arc<Self>, org_id: Uuid) {
        let gates: Vec<Uuid> = self.bindings.iter().filter(|b| b.org_id == org_id).map(|b| b.gate_id).collect();
        for gate_id in gates {
            self.unbind(gate_id).await;
        }
    }

    pub fn status(&self, gate_id: Uuid) -> Option<ReaderStatus> {
        self.status.get(&gate_id).map(|s| s.clone())
    }

    /// Stops the bus at `endpoint` and starts it again with the readers bound there now.
    async fn restart_bus(self: &Arc<Self>, endpoint: &str) {
        let mut buses = self.buses.lock().await;
        if let Some(old) = buses.remove(endpoint) {
            old.task.abort();
        }
        let on_bus: Vec<Binding> = self.bindings.iter().filter(|b| b.endpoint == endpoint).map(|b| b.clone()).collect();
        if on_bus.is_empty() {
            return;
        }
        let readers: HashMap<u8, Uuid> = on_bus.iter().map(|b| (b.address, b.gate_id)).collect();
        let (tx, rx) = mpsc::channel(256);
        let wanted = on_bus.into_iter().map(|b| Reader { address: b.address, key: b.key }).collect();
        let (bus, driver) = osdp_bus::start(endpoint.to_owned(), wanted, tx);
        let task = actix_rt::spawn(driver);
        actix_rt::spawn(self.clone().listen(bus, readers, rx));
        buses.insert(endpoint.to_owned(), Running { task });
        metrics::gauge!("portcullis_osdp_buses").set(buses.len() as f64);
    }

    /// Handles what one bus reports, until the bus is stopped.
    async fn listen(self: Arc<Self>, bus: Bus, readers: HashMap<u8, Uuid>, mut events: mpsc::Receiver<BusEvent>) {
        let mut typed: HashMap<u8, String> = HashMap::new();
        while let Some(event) = events.recv().await {
            let address = match &event {
                BusEvent::Online { address, .. }
                | BusEvent::Offline { address, .. }
                | BusEvent::Card { address, .. }
                | BusEvent::Keys { address, .. }
                | BusEvent::Status { address, .. }
                | BusEvent::Rekeyed { address } => *address,
            };
            let Some(&gate_id) = readers.get(&address) else { continue };
            match event {
                BusEvent::Online { vendor, serial, secure, .. } => {
                    let vendor = vendor.map(|v| v.iter().map(|b| format!("{b:02x}")).collect());
                    let now = Some(Utc::now());
                    let status = ReaderStatus {
                        online: true,
                        since: now,
                        last_seen: now,
                        reason: None,
                        vendor,
                        serial,
                        secure_channel: secure,
                        ..offline("")
                    };
                    self.set_status(gate_id, status);
                }
                BusEvent::Rekeyed { .. } => self.rekeyed(gate_id).await,
                BusEvent::Status { tamper, power_failure, .. } => {
                    let changed = self.status.get_mut(&gate_id).map(|mut status| {
                        status.last_seen = Some(Utc::now());
                        let changed = status.tamper != Some(tamper) || status.power_failure != Some(power_failure);
                        (status.tamper, status.power_failure) = (Some(tamper), Some(power_failure));
                        changed
                    });
                    if changed == Some(true) && (tamper || power_failure) {
                        tracing::warn!(%gate_id, address, tamper, power_failure, "OSDP reader reports tamper or power failure");
                    }
                    if changed == Some(true)
                        && let Some(org_id) = self.bindings.get(&gate_id).map(|b| b.org_id)
                    {
                        let alert = match (tamper, power_failure) {
                            (true, _) => "reader_tamper",
                            (_, true) => "reader_power_failure",
                            _ => "reader_normal",
                        };
                        self.engine.publish(org_id, Event::Alert { alert, gate_id, pass_id: None });
                    }
                }
                BusEvent::Offline { reason, .. } => {
                    tracing::warn!(%gate_id, address, %reason, "OSDP reader offline");
                    let last_seen = self.status.get(&gate_id).and_then(|s| s.last_seen);
                    self.set_status(gate_id, ReaderStatus { since: Some(Utc::now()), last_seen, ..offline(&reason) });
                }
                BusEvent::Card { bits, .. } => {
                    let credential = CredentialInput::Wiegand { bits: wiegand::to_text(&bits) };
                    self.decide(&bus, gate_id, address, &credential).await;
                }
                BusEvent::Keys { keys, .. } => {
                    let entry = typed.entry(address).or_default();
                    for key in keys {
                        match key {
                            b'#' => {
                                let value = std::mem::take(entry);
                                self.decide(&bus, gate_id, address, &CredentialInput::Pin { value }).await;
                            }
                            b'*' => entry.clear(),
                            b'0'..=b'9' if entry.len() < 32 => entry.push(char::from(key)),
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    /// The reader took its own key: the binding (here and stored) uses it from now on.
    async fn rekeyed(&self, gate_id: Uuid) {
        let Some(org_id) = self.bindings.get_mut(&gate_id).map(|mut binding| {
            if let Some(Key::InstallThen(scbk)) = binding.key {
                binding.key = Some(Key::Scbk(scbk));
            }
            binding.org_id
        }) else {
            return;
        };
        let stored = match self.pool.get().await {
            Ok(client) => {
                crate::app::readers::rekeyed(&client, org_id, gate_id).await.map_err(|e| crate::error::error_chain(&e))
            }
            Err(err) => Err(err.to_string()),
        };
        match stored {
            Ok(()) => tracing::info!(%gate_id, "OSDP reader re-keyed: install mode is over"),
            // The reader holds its key either way; a restart before this is stored would try
            // install mode again, which the reader refuses: said in its status.
            Err(err) => tracing::error!(%gate_id, error = %err, "the reader's new key is in use but not recorded"),
        }
    }

    fn set_status(&self, gate_id: Uuid, status: ReaderStatus) {
        let online = status.online;
        let reason = status.reason.clone();
        self.status.insert(gate_id, status);
        let count = self.status.iter().filter(|s| s.online).count();
        metrics::gauge!("portcullis_osdp_readers_online").set(count as f64);
        if let Some(binding) = self.bindings.get(&gate_id).map(|b| b.clone()) {
            self.engine.publish(binding.org_id, Event::GateReader { gate_id, online, reason });
        }
    }

    /// A read at a reader: decided for its gate, answered with the relay, LED and buzzer.
    async fn decide(&self, bus: &Bus, gate_id: Uuid, address: u8, credential: &CredentialInput) {
        let Some(binding) = self.bindings.get(&gate_id).map(|b| b.clone()) else { return };
        let decided = match credentials::present(credential, &self.pepper, Utc::now()) {
            Ok(presented) => {
                self.engine.decide(gate_id, presented, None, Source::Osdp).await.map_err(|e| e.to_string())
            }
            Err(err) => Err(err.to_string()),
        };
        let commands = match decided {
            Ok(outcome) if outcome.decision == Decision::Allow => {
                let tenths = u16::try_from(outcome.open_ms.unwrap_or(3000) / 100).unwrap_or(u16::MAX);
                metrics::counter!("portcullis_osdp_reads_total", "decision" => "allow").increment(1);
                vec![
                    Command::Pulse { output: binding.output, timer_100ms: tenths },
                    Command::Led { led: 0, colour: Colour::Green, timer_100ms: tenths },
                    Command::Buzz { on_100ms: 1, off_100ms: 0, count: 1 },
                ]
            }
            Ok(_) => {
                metrics::counter!("portcullis_osdp_reads_total", "decision" => "deny").increment(1);
                deny()
            }
            Err(err) => {
                metrics::counter!("portcullis_osdp_reads_total", "decision" => "error").increment(1);
                tracing::warn!(%gate_id, address, error = %err, "OSDP read not decided; refused");
                deny()
            }
        };
        if !bus.send(address, commands) {
            tracing::warn!(%gate_id, address, "the reader's answer could not be queued (bus stopped or far behind)");
        }
    }
}

/// A refusal: red, and three short beeps.
fn deny() -> Vec<Command> {
    vec![
        Command::Led { led: 0, colour: Colour::Red, timer_100ms: 20 },
        Command::Buzz { on_100ms: 1, off_100ms: 1, count: 3 },
    ]
}

fn offline(reason: &str) -> ReaderStatus {
    ReaderStatus {
        online: false,
        since: None,
        last_seen: None,
        tamper: None,
        power_failure: None,
        reason: Some(reason.to_owned()),
        vendor: None,
        serial: None,
        secure_channel: false,
    }
}
