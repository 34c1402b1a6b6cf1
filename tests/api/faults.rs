//! Faults against the real thing: the engine as a user runs it (`demo`, with its own managed
//! PostgreSQL), under decision load from several turnstiles, while its database hangs (SIGSTOP of
//! every process of the cluster), dies (SIGKILL of the postmaster), or the engine itself is killed
//! with records in its spool; and a spool that fills up.
//!
//! What a user checks afterwards: every decision was answered (no 5xx) within the admit bound
//! and some slack, gates with `fail_mode` `open` kept admitting, gates with `closed` refused
//! consuming admits only while the database was away, and the check-in log holds exactly the
//! decisions that were answered (none lost, none twice), with pass use counts to match.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::engine_process::{Engine, http};
use crate::helpers::TestResult;

/// Short bounds, so an outage of a few seconds shows every state.
const SETTINGS: &[(&str, &str)] = &[
    ("PORTCULLIS__JOURNAL__COMMIT_TIMEOUT_MS", "500"),
    ("PORTCULLIS__JOURNAL__RETRY_MS", "250"),
    ("PORTCULLIS__ENGINE__ADMIT_TIMEOUT_MS", "1000"),
    ("PORTCULLIS__SERVER__REQUEST_TIMEOUT_SECS", "3"),
];
/// No decision may take longer: the admit bound above plus slack for a loaded 2-core machine
/// running the rest of the suite, and far below the outages (12 s), so a decision that waited on
/// the database would fail it. The measured slowest is printed with the figures (about 0.5 s).
const SLOWEST_ANSWER: Duration = Duration::from_secs(5);

/// A gate of the demo organization.
#[derive(Debug, Clone)]
struct Gate {
    id: String,
    key: String,
}

/// The demo engine in a data dir of its own, signed in as its organization's admin.
struct Site {
    engine: Engine,
    port: u16,
    data_dir: PathBuf,
    org: String,
    token: String,
    gates: BTreeMap<String, Gate>,
    _dir: tempfile::TempDir,
}

impl Site {
    fn start(extra: &[(&str, &str)]) -> TestResult<Site> {
        let dir = tempfile::Builder::new().prefix("pcl-fault-").tempdir_in("/tmp")?;
        let data_dir = dir.path().join("var");
        let (engine, port) = Site::launch(&data_dir, extra)?;
        let path = data_dir.join("demo-credentials.json");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let creds: Value = serde_json::from_str(&text)?;
        let login = json!({"email": creds["admin"]["email"], "password": creds["admin"]["password"]});
        let (status, body) = http(port, "POST", "/api/v1/auth/login", None, Some(&login))?;
        assert_eq!(status, 200, "{body}");
        let token = serde_json::from_str::<Value>(&body)?["access_token"].as_str().unwrap_or_default().to_owned();
        let gates = creds["gates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                let text = |k: &str| g[k].as_str().unwrap_or_default().to_owned();
                (text("name"), Gate { id: text("id"), key: text("device_key") })
            })
            .collect();
        let org = creds["org_id"].as_str().unwrap_or_default().to_owned();
        Ok(Site { engine, port, data_dir, org, token, gates, _dir: dir })
    }

    fn launch(data_dir: &Path, extra: &[(&str, &str)]) -> TestResult<(Engine, u16)> {
        let env: Vec<(&str, &str)> = SETTINGS.iter().chain(extra).copied().collect();
        let mut engine = Engine::demo(data_dir, &env)?;
        let port = engine.wait_for_port()?;
        Ok((engine, port))
    }

    fn gate(&self, name: &str) -> TestResult<Gate> {
        self.gates.get(name).cloned().ok_or_else(|| format!("the demo has no gate `{name}`").into())
    }

    fn api(&self, method: &str, path: &str, body: Option<&Value>) -> TestResult<(u16, Value)> {
        let path = format!("/api/v1/orgs/{}{path}", self.org);
        let (status, text) = http(self.port, method, &path, Some(&self.token), body)?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A pass with a PIN, good for many entries: each entry consumes a use (a durable admit).
    fn pass(&self) -> TestResult<(String, Value)> {
        let (_, rules) = self.api("GET", "/access-rules", None)?;
        let rule = rules["items"][0]["id"].clone();
        let now = chrono::Utc::now();
        let body = json!({
            "holder_name": "Fault Visitor", "access_rule_id": rule, "type": "multi", "max_uses": 10000,
            "valid_from": (now - chrono::Duration::hours(1)).to_rfc3339(),
            "valid_to": (now + chrono::Duration::hours(8)).to_rfc3339(),
            "credential": {"kind": "pin"},
        });
        let (status, pass) = self.api("POST", "/passes", Some(&body))?;
        assert_eq!(status, 201, "{pass}");
        let pin = json!({"kind": "pin", "value": pass["credential"]["value"]});
        Ok((pass["id"].as_str().unwrap_or_default().to_owned(), pin))
    }

    fn set_fail_mode(&self, gate: &Gate, mode: &str) -> TestResult {
        let (status, body) = self.api("PATCH", &format!("/gates/{}", gate.id), Some(&json!({"fail_mode": mode})))?;
        assert_eq!((status, body["fail_mode"].as_str()), (200, Some(mode)), "{body}");
        Ok(())
    }

    fn decide(&self, gate: &Gate, credential: &Value, direction: &str) -> Answer {
        let path = format!("/api/v1/gates/{}/decisions", gate.id);
        let body = json!({"credential": credential, "direction": direction});
        let asked = Instant::now();
        let (status, text) = http(self.port, "POST", &path, Some(&gate.key), Some(&body)).unwrap_or((0, String::new()));
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
        Answer {
            gate: gate.id.clone(),
            direction: direction.to_owned(),
            status,
            decision: text("decision"),
            reason: text("reason"),
            asked,
            took: asked.elapsed(),
        }
    }

    fn ready(&self) -> Value {
        let (_, text) = http(self.port, "GET", "/ready", None, None).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Waits until the database is back and the spool is replayed and empty.
    fn wait_recovered(&self) -> TestResult<Value> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ready = self.ready();
            if ready["status"] == "ready" && ready["spool"]["records"] == 0 {
                return Ok(ready);
            }
            if Instant::now() > deadline {
                return Err(format!("not recovered: {ready}\n{}", self.engine.output()).into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until `/ready` says what `done` looks for (90 s at most: a liveness bound on a
    /// loaded machine, where a restart may wait for the dead server's backends to go).
    fn wait_ready_until(&self, what: &str, done: impl Fn(&Value) -> bool) -> TestResult<Value> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ready = self.ready();
            if done(&ready) {
                return Ok(ready);
            }
            if Instant::now() > deadline {
                return Err(format!("{what}: {ready}\n{}", self.engine.output()).into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn postmaster(&self) -> TestResult<i32> {
        let path = self.data_dir.join("pg/data/postmaster.pid");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(text.lines().next().unwrap_or_default().trim().parse()?)
    }

    /// The postmaster and every process it started.
    fn cluster(&self) -> TestResult<Vec<i32>> {
        let postmaster = self.postmaster()?;
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // `pid (comm) state ppid …`: the fields after the last ')'.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
        Ok(pids)
    }

    fn signal_cluster(&self, pids: &[i32], signal: Signal) -> TestResult {
        for &pid in pids {
            let _ = kill(Pid::from_raw(pid), signal);
        }
        Ok(())
    }

    /// Runs `sql` against the engine's database (the managed cluster's socket).
    fn query(&self, sql: &str) -> TestResult<Vec<tokio_postgres::Row>> {
        let socket = self.data_dir.join("pg/run");
        let config = format!(
            "host={} user={} dbname={}",
            socket.display(),
            portcullis::db::managed::SUPERUSER,
            portcullis::db::managed::DATABASE
        );
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Ok(client.query(sql, &[]).await?)
        })
    }

    /// The check-in log, counted by (gate, decision, reason).
    fn logged(&self) -> TestResult<BTreeMap<(String, String, String), i64>> {
        let rows = self.query("SELECT gate_id::text, decision, reason, count(*) FROM checkins GROUP BY 1, 2, 3")?;
        Ok(rows.iter().map(|r| ((r.get(0), r.get(1), r.get(2)), r.get(3))).collect())
    }

    /// The pass row's uses once they reach `expected`, or as they are after five seconds: the
    /// row is a checkpoint the journal writes within half a second of the check-ins.
    fn uses(&self, pass_id: &str, expected: i64) -> TestResult<i64> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let rows = self.query(&format!("SELECT uses_count::bigint FROM passes WHERE id = '{pass_id}'"))?;
            let uses = rows.first().map_or(-1, |r| r.get(0));
            if uses == expected || Instant::now() > deadline {
                return Ok(uses);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        // Leave no cluster behind, stopped or running: let it go on, kill the engine, and wait
        // for the engine's guard to stop the cluster before the data dir is removed (the guard
        // checks the cluster's pid file first).
        let Ok(cluster) = self.cluster() else { return };
        let _ = self.signal_cluster(&cluster, Signal::SIGCONT);
        let _ = self.engine.sigkill();
        let deadline = Instant::now() + Duration::from_secs(15);
        while crate::engine_process::postmaster_running(&self.data_dir) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if crate::engine_process::postmaster_running(&self.data_dir) {
            let _ = self.signal_cluster(&cluster, Signal::SIGKILL);
        }
    }
}

/// One decision as the turnstile saw it.
#[derive(Debug, Clone)]
struct Answer {
    gate: String,
    direction: String,
    status: u16,
    decision: String,
    reason: String,
    asked: Instant,
    took: Duration,
}

/// A turnstile's loop: its steps (gate, credential, direction), over and over.
struct Turnstile {
    pass: Option<String>,
    steps: Vec<(Gate, Value, &'static str)>,
}

/// Runs the turnstiles, each on a thread of its own, while `during` runs; returns each
/// turnstile's answers.
fn under_load(
    site: &Site,
    turnstiles: &[Turnstile],
    during: impl FnOnce() -> TestResult,
) -> TestResult<Vec<Vec<Answer>>> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let handles: Vec<_> = turnstiles
            .iter()
            .map(|t| {
                let stop = &stop;
                scope.spawn(move || {
                    let mut answers = Vec::new();
                    for (gate, credential, direction) in t.steps.iter().cycle() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        answers.push(site.decide(gate, credential, direction));
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    answers
                })
            })
            .collect();
        let outcome = during();
        stop.store(true, Ordering::Relaxed);
        let answers = handles.into_iter().map(|h| h.join().unwrap_or_default()).collect();
        outcome.map(|()| answers)
    })
}

/// The fault scene: an open gate and a closed one, each with a visitor going in and out, and a
/// turnstile presenting unknown cards.
fn turnstiles(site: &Site) -> TestResult<(Vec<Turnstile>, Gate, Gate)> {
    let (open, closed_in, closed_out) =
        (site.gate("Office door")?, site.gate("Main entrance in")?, site.gate("Main entrance out")?);
    site.set_fail_mode(&open, "open")?;
    let (open_pass, open_pin) = site.pass()?;
    let (closed_pass, closed_pin) = site.pass()?;
    let unknown = json!({"kind": "card", "value": "7:4242"});
    let turnstiles = vec![
        Turnstile {
            pass: Some(open_pass),
            steps: vec![(open.clone(), open_pin.clone(), "in"), (open.clone(), open_pin, "out")],
        },
        Turnstile {
            pass: Some(closed_pass),
            steps: vec![(closed_in.clone(), closed_pin.clone(), "in"), (closed_out, closed_pin, "out")],
        },
        Turnstile { pass: None, steps: vec![(closed_in.clone(), unknown, "in")] },
    ];
    Ok((turnstiles, open, closed_in))
}

/// What every fault must leave true, once the database is back and the spool replayed; returns
/// the figures for the README ("N decisions, slowest M ms").
fn check_nothing_lost(site: &Site, turnstiles: &[Turnstile], answers: &[Vec<Answer>]) -> TestResult<String> {
    let all: Vec<&Answer> = answers.iter().flatten().collect();
    assert!(all.len() > 100, "the load ran: {} decisions", all.len());
    let failed: Vec<&&Answer> = all.iter().filter(|a| a.status != 200).collect();
    assert!(failed.is_empty(), "every decision answered: {} failed, first {:?}", failed.len(), failed.first());
    let slowest = all.iter().map(|a| a.took).max().unwrap_or_default();
    assert!(slowest <= SLOWEST_ANSWER, "no decision slower than the bound: slowest {slowest:?}");

    let mut answered: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    for a in &all {
        *answered.entry((a.gate.clone(), a.decision.clone(), a.reason.clone())).or_default() += 1;
    }
    // The last decisions answered may still be on their way (committed within moments).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut logged = site.logged()?;
    while logged != answered && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        logged = site.logged()?;
    }
    assert_eq!(logged, answered, "the check-in log holds exactly the decisions answered");
    for (turnstile, answers) in turnstiles.iter().zip(answers) {
        let Some(pass) = &turnstile.pass else { continue };
        let entries = answers.iter().filter(|a| a.direction == "in" && a.decision == "allow").count();
        let entries = i64::try_from(entries)?;
        assert_eq!(site.uses(pass, entries)?, entries, "the pass's uses are its admitted entries");
    }
    Ok(format!("{} decisions, none lost or doubled, slowest {} ms", all.len(), slowest.as_millis()))
}

#[test]
fn a_hung_database_stops_no_gate_and_loses_no_decision() -> TestResult {
    let site = Site::start(&[])?;
    let (turnstiles, open, closed) = turnstiles(&site)?;
    let mut outage = (Instant::now(), Instant::now());
    let (mut peak, mut replayed_in) = (0, Duration::ZERO);
    let answers = under_load(&site, &turnstiles, || {
        std::thread::sleep(Duration::from_secs(2));
        let cluster = site.cluster()?;
        site.signal_cluster(&cluster, Signal::SIGSTOP)?;
        outage.0 = Instant::now();
        let degraded = site.wait_ready_until("spooling", |r| r["checks"]["journal"] == "spooling");
        std::thread::sleep(Duration::from_secs(10).saturating_sub(outage.0.elapsed()));
        let spooled = site.ready();
        outage.1 = Instant::now();
        site.signal_cluster(&cluster, Signal::SIGCONT)?;
        degraded?;
        peak = spooled["spool"]["records"].as_u64().unwrap_or(0);
        assert!(peak > 0, "{spooled}");
        site.wait_recovered()?;
        replayed_in = outage.1.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        Ok(())
    })?;
    site.wait_recovered()?;
    let figures = check_nothing_lost(&site, &turnstiles, &answers)?;

    // While the database hung, the open gate kept admitting and the closed one refused entries
    // it could not make durable; exits and unknown cards were answered as ever.
    let during = |a: &&Answer| a.asked > outage.0 + Duration::from_secs(1) && a.asked + a.took < outage.1;
    let entries = |gate: &Gate| -> Vec<String> {
        answers
            .iter()
            .flatten()
            .filter(during)
            .filter(|a| a.gate == gate.id && a.direction == "in" && a.reason != "unknown_credential")
            .map(|a| a.reason.clone())
            .collect()
    };
    let (open_entries, closed_entries) = (entries(&open), entries(&closed));
    assert!(!open_entries.is_empty() && open_entries.iter().all(|r| r == "allowed"), "{open_entries:?}");
    assert!(
        !closed_entries.is_empty() && closed_entries.iter().all(|r| r == "journal_unavailable"),
        "{closed_entries:?}"
    );
    let output = site.engine.output();
    assert!(output.contains("the journal spools to disk"), "{output}");
    assert!(output.contains("the spool is replayed and empty"), "{output}");
    eprintln!(
        "FAULT SIGSTOP of the cluster for {} s: {figures}; {} spooled; the spool replayed and empty {} ms after SIGCONT",
        (outage.1 - outage.0).as_secs(),
        peak,
        replayed_in.as_millis()
    );
    Ok(())
}

#[test]
fn a_killed_postmaster_is_restarted_and_no_decision_is_lost() -> TestResult {
    let site = Site::start(&[])?;
    let (turnstiles, _, _) = turnstiles(&site)?;
    let mut back_in = Duration::ZERO;
    let answers = under_load(&site, &turnstiles, || {
        std::thread::sleep(Duration::from_secs(2));
        kill(Pid::from_raw(site.postmaster()?), Signal::SIGKILL)?;
        let killed = Instant::now();
        site.wait_ready_until("degraded", |r| r["status"] == "degraded")?;
        site.wait_ready_until("restarted", |r| r["status"] == "ready" && r["spool"]["records"] == 0)?;
        back_in = killed.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        Ok(())
    })?;
    site.wait_recovered()?;
    let figures = check_nothing_lost(&site, &turnstiles, &answers)?;
    let output = site.engine.output();
    assert!(output.contains("the managed PostgreSQL died and was restarted"), "{output}");
    eprintln!(
        "FAULT SIGKILL of the postmaster: {figures}; restarted and the spool replayed {} ms after the kill",
        back_in.as_millis()
    );
    Ok(())
}

#[test]
fn a_spool_left_by_a_killed_engine_is_replayed_once_after_restart() -> TestResult {
    let mut site = Site::start(&[])?;
    let (turnstiles, _, _) = turnstiles(&site)?;
    // Every process of the cluster once the load runs (the journal's backend among them).
    let mut cluster = Vec::new();
    let answers = under_load(&site, &turnstiles, || {
        std::thread::sleep(Duration::from_secs(1));
        cluster = site.cluster()?;
        site.signal_cluster(&cluster, Signal::SIGSTOP)?;
        site.wait_ready_until("records spooled", |r| r["spool"]["records"].as_u64().unwrap_or(0) > 20)?;
        Ok(())
    })?;
    // Every answered decision reaches the spool within moments while spooling: wait until
    // nothing waits in memory and the spool holds still, then kill -9 the engine and let the old
    // cluster go on.
    let mut held = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = site.ready();
        let now = ready["spool"]["records"].clone();
        if ready["spool"]["queued_batches"] == 0 && now == held {
            break;
        }
        assert!(Instant::now() < deadline, "the journal never caught up: {ready}");
        held = now;
        std::thread::sleep(Duration::from_millis(500));
    }
    let spool = site.data_dir.join("spool/journal.spool");
    assert!(std::fs::metadata(&spool).map_err(|e| format!("{}: {e}", spool.display()))?.len() > 0);
    site.engine.sigkill()?;
    site.signal_cluster(&cluster, Signal::SIGCONT)?;
    let restarted = Instant::now();
    let (engine, port) = Site::launch(&site.data_dir, &[])?;
    (site.engine, site.port) = (engine, port);
    site.wait_recovered()?;
    let replayed_in = restarted.elapsed();
    assert_eq!(
        std::fs::metadata(&spool).map_err(|e| format!("{}: {e}", spool.display()))?.len(),
        0,
        "the spool is emptied"
    );
    let figures = check_nothing_lost(&site, &turnstiles, &answers)?;
    // The new engine loaded once the spool was replayed: its passes count the spooled entries.
    for (turnstile, answers) in turnstiles.iter().zip(&answers) {
        let Some(pass) = &turnstile.pass else { continue };
        let entries = answers.iter().filter(|a| a.direction == "in" && a.decision == "allow").count();
        let (status, live) = site.api("GET", &format!("/passes/{pass}"), None)?;
        assert_eq!(status, 200, "{live}");
        assert_eq!(live["uses_count"].as_u64(), Some(u64::try_from(entries)?), "the engine's view of {pass}");
    }
    eprintln!(
        "FAULT kill -9 of the engine with {held} records spooled: {figures}; replayed {} ms after the restart began",
        replayed_in.as_millis()
    );
    // Once more: killed again with its spool empty, the next engine finds nothing to replay and
    // duplicates nothing.
    let logged = site.logged()?;
    site.engine.sigkill()?;
    let (engine, port) = Site::launch(&site.data_dir, &[])?;
    (site.engine, site.port) = (engine, port);
    site.wait_recovered()?;
    assert_eq!(site.logged()?, logged);
    Ok(())
}

#[test]
fn a_full_spool_refuses_entries_even_at_an_open_gate_and_says_so() -> TestResult {
    let site = Site::start(&[("PORTCULLIS__JOURNAL__SPOOL_MAX_BYTES", "20000")])?;
    let (turnstiles, open, _) = turnstiles(&site)?;
    let mut full_at = Instant::now();
    let answers = under_load(&site, &turnstiles, || {
        std::thread::sleep(Duration::from_secs(1));
        let cluster = site.cluster()?;
        site.signal_cluster(&cluster, Signal::SIGSTOP)?;
        let filled = site.wait_ready_until("spool full", |r| r["spool"]["bytes"].as_u64().unwrap_or(0) > 18_000);
        std::thread::sleep(Duration::from_secs(1));
        full_at = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        site.signal_cluster(&cluster, Signal::SIGCONT)?;
        filled.map(|_| ())
    })?;
    site.wait_recovered()?;
    let after_full: Vec<&Answer> =
        answers.iter().flatten().filter(|a| a.asked > full_at && a.gate == open.id && a.direction == "in").collect();
    let refused = after_full.iter().filter(|a| a.reason == "journal_unavailable").count();
    assert!(refused > 0, "entries refused once the spool is full: {after_full:?}");
    assert!(answers.iter().flatten().all(|a| a.status == 200), "every decision still answered");
    let output = site.engine.output();
    assert!(output.contains("the spool is full"), "{output}");
    eprintln!(
        "FAULT a full spool (20,000 bytes): {refused} of {} entries at the open gate refused once it filled, every decision answered",
        after_full.len()
    );
    Ok(())
}
