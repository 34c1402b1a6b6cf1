//! The engine's guarantees: revocation at every gate on return, one admit for a single-use pass
//! however many gates ask at once, state that survives passivation, the journal, and the errors.

use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::{TestResult, spawn_app, spawn_app_with};
use crate::site::{Site, allow, deny};

#[actix_web::test]
async fn a_revocation_is_in_force_at_every_gate_when_the_call_returns() -> TestResult {
    let site = Site::build(spawn_app().await?, 2, 4).await?;
    let (pass, pin) = site.pass(json!({})).await?;
    for gate in 0..site.gates.len() {
        let direction = if gate % 2 == 0 { "in" } else { "out" };
        assert!(site.decide(gate, &pin, direction).await?.0 == "allow");
    }
    site.post(&format!("/passes/{pass}/revoke"), json!({"reason": "badge reported stolen"})).await?;
    // Immediately, at all gates at once.
    let verdicts = join_all((0..site.gates.len()).map(|gate| site.decide(gate, &pin, "in"))).await;
    for (gate, verdict) in verdicts.into_iter().enumerate() {
        assert_eq!(verdict?, deny("pass_revoked"), "gate {gate}");
    }
    let stored = site.get(&format!("/passes/{pass}")).await?;
    assert_eq!(stored["status"], "revoked");
    assert_eq!(stored["revoke_reason"], "badge reported stolen");
    Ok(())
}

#[actix_web::test]
async fn fifty_simultaneous_decisions_for_a_single_use_pass_admit_exactly_one() -> TestResult {
    let site = Site::build(spawn_app().await?, 2, 5).await?;
    let (pass, pin) = site.pass(json!({"type": "single"})).await?;
    let gates = site.gates.len();
    let verdicts = join_all((0..50).map(|i| site.decide(i % gates, &pin, "in"))).await;
    let verdicts: Vec<_> = verdicts.into_iter().collect::<Result<_, _>>()?;
    let allowed = verdicts.iter().filter(|v| v.0 == "allow").count();
    assert_eq!(allowed, 1, "{verdicts:?}");
    assert!(verdicts.iter().filter(|v| v.0 == "deny").all(|v| v.1 == "uses_exhausted"), "{verdicts:?}");

    // The journal has every one of them, and the pass is used up in the database too.
    let db = site.app.db().await?;
    let pass_id = uuid::Uuid::try_parse(&pass)?;
    let mut logged = 0;
    for _ in 0..50 {
        logged = db.query_one("SELECT count(*) FROM checkins WHERE pass_id = $1", &[&pass_id]).await?.get::<_, i64>(0);
        if logged == 50 {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(logged, 50);
    // The pass row is a checkpoint the journal writes within half a second of the check-ins.
    let mut stored = (0, 0);
    for _ in 0..50 {
        let row = db.query_one("SELECT uses_count, (SELECT count(*) FROM checkins WHERE pass_id = $1 AND decision = 'allow') FROM passes WHERE id = $1", &[&pass_id]).await?;
        stored = (row.get::<_, i32>(0), row.get::<_, i64>(1));
        if stored == (1, 1) {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(stored, (1, 1));
    Ok(())
}

#[actix_web::test]
async fn a_pass_keeps_its_state_when_its_actor_is_passivated() -> TestResult {
    let app = spawn_app_with(|s| s.engine.pass_idle_secs = 1).await?;
    let site = Site::build(app, 1, 2).await?;
    let (_, pin) = site.pass(json!({"type": "single"})).await?;
    assert_eq!(site.decide(0, &pin, "in").await?, allow());
    // Idle long enough to be passivated, then woken by the next swipe.
    actix_web::rt::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(site.decide(1, &pin, "in").await?, deny("uses_exhausted"));
    Ok(())
}

/// A pass's actor lives on the thread that first asked about it: a listener's worker, which stops
/// when its listener does. The actor hands the pass back as it stands, and the pass is decided
/// from there, not refused as unavailable nor found as it was before.
#[actix_web::test]
async fn a_pass_keeps_its_state_when_the_thread_of_its_actor_stops() -> TestResult {
    use portcullis_actors::domain::PassStatus;
    use portcullis_actors::pass_actor::PassChange;

    let site = Site::build(spawn_app().await?, 1, 2).await?;
    let (pass, pin) = site.pass(json!({})).await?;
    let pass_id = uuid::Uuid::try_parse(&pass)?;
    // Suspended from a thread that answers gates (the pass's actor starts there), which then stops.
    let worker = actix::Arbiter::new();
    let (engine, (tx, rx)) = (site.app.engine.clone(), tokio::sync::oneshot::channel());
    worker.spawn(async move {
        portcullis_actors::engine::place_passes_here();
        let _ = tx.send(engine.change_pass(pass_id, PassChange::Suspend, None).await.map(|state| state.status));
    });
    assert_eq!(rx.await??, PassStatus::Suspended);
    worker.stop();
    worker.join().map_err(|_| "the worker thread panicked")?;

    assert_eq!(site.decide(0, &pin, "in").await?, deny("pass_suspended"));
    site.post(&format!("/passes/{pass}/resume"), json!({})).await?;
    assert_eq!(site.decide(0, &pin, "in").await?, allow());
    Ok(())
}

#[actix_web::test]
async fn bad_requests_get_their_codes() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 2).await?;
    let (_, pin) = site.pass(json!({})).await?;
    let gate = site.gates[0].clone();
    let ask = |body: serde_json::Value| site.decide_raw(&gate, &site.device_key, body);
    let field =
        |reply: &crate::helpers::Reply, name: &str| reply.json()["error"]["details"]["fields"][name].is_string();

    let r = ask(json!({"credential": {"kind": "pin"}})).await?;
    assert!(r.status == 422 && field(&r, "credential.value"), "{}", r.text());
    let r = ask(json!({"credential": {"kind": "retina", "value": "x"}})).await?;
    assert!(r.status == 422 && field(&r, "credential.kind"), "{}", r.text());
    let r = ask(json!({"credential": pin, "direction": "sideways"})).await?;
    assert!(r.status == 422 && field(&r, "direction"), "{}", r.text());
    let r = ask(json!({"credential": {"kind": "wiegand", "bits": "10x1"}})).await?;
    assert!(r.status == 422 && field(&r, "credential.bits"), "{}", r.text());
    let r = ask(json!({"credential": {"kind": "qr", "value": "https://evil.example"}})).await?;
    assert!(r.status == 422 && field(&r, "credential.value"), "{}", r.text());
    let r = site
        .app
        .send(
            site.app
                .client
                .post(site.app.url(&format!("/api/v1/gates/{gate}/decisions")))
                .insert_header(("authorization", format!("Bearer {}", site.device_key)))
                .insert_header(("content-type", "application/json")),
            Some(b"{not json"),
        )
        .await?;
    assert_eq!((r.status, r.json()["error"]["details"]["fields"]["body"].as_str()), (422, Some("is not valid JSON")));

    let unknown =
        site.decide_raw(&uuid::Uuid::new_v4().to_string(), &site.device_key, json!({"credential": pin})).await?;
    assert_eq!((unknown.status, unknown.error_code().as_deref()), (404, Some("not_found")));

    // A key bound to the first gate only.
    let (_, narrow) = site.app.create_key(&site.root, &site.org, &["gate:decide"], &[&site.gates[0]]).await?;
    let r = site.decide_raw(&site.gates[1], &narrow, json!({"credential": pin})).await?;
    assert_eq!((r.status, r.error_code().as_deref()), (403, Some("key_not_bound_to_gate")));
    assert_eq!(site.decide_raw(&site.gates[0], &narrow, json!({"credential": pin})).await?.status, 200);
    // A key without the scope, and an operator's token.
    let (_, reader) = site.app.create_key(&site.root, &site.org, &["passes:read"], &[]).await?;
    assert_eq!(site.decide_raw(&gate, &reader, json!({"credential": pin})).await?.status, 403);
    assert_eq!(site.decide_raw(&gate, &site.root.access, json!({"credential": pin})).await?.status, 403);
    assert_eq!(site.decide_raw(&gate, "pcl_live_forged", json!({"credential": pin})).await?.status, 401);
    // A blocked organization's gates refuse to decide.
    site.app.call("PATCH", &site.path(""), Some(&site.root.access), Some(json!({"access_mode": "blocked"}))).await?;
    let r = ask(json!({"credential": pin})).await?;
    assert_eq!((r.status, r.error_code().as_deref()), (403, Some("org_blocked")));
    Ok(())
}

#[actix_web::test]
async fn every_decision_is_journaled_and_can_be_read_back() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 2).await?;
    let (pass, pin) = site.pass(json!({"type": "single"})).await?;
    site.decide(0, &pin, "in").await?;
    site.decide(1, &pin, "in").await?;
    site.decide(1, &json!({"kind": "pin", "value": "99999999"}), "in").await?;
    let mut items = Vec::new();
    for _ in 0..50 {
        items = site.get("/checkins").await?["items"].as_array().cloned().unwrap_or_default();
        if items.len() == 3 {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(items.len(), 3);
    let reasons: Vec<&str> = items.iter().filter_map(|c| c["reason"].as_str()).collect();
    assert_eq!(reasons, ["unknown_credential", "uses_exhausted", "allowed"], "newest first");
    assert_eq!(items[2]["pass_id"], pass.as_str());
    assert_eq!(items[2]["gate_id"], site.gates[0].as_str());
    assert_eq!(items[2]["source"], "api");

    let denied = site.get(&format!("/checkins?decision=deny&gate_id={}", site.gates[1])).await?;
    assert_eq!(denied["items"].as_array().map(Vec::len), Some(2));
    let mine = site.get(&format!("/checkins?pass_id={pass}&limit=1")).await?;
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(1));
    let next = mine["next_cursor"].as_str().unwrap_or_default();
    let rest = site.get(&format!("/checkins?pass_id={pass}&limit=1&cursor={next}")).await?;
    assert_eq!(rest["items"][0]["reason"], "allowed");

    // The gate's live queue shows the same, in order.
    let gate = site.get(&format!("/gates/{}", site.gates[1])).await?;
    let queue: Vec<&str> =
        gate["queue"].as_array().into_iter().flatten().filter_map(|e| e["reason"].as_str()).collect();
    assert_eq!(queue, ["uses_exhausted", "unknown_credential"]);
    let metrics = site.app.get("/metrics").await?.text();
    for series in [
        "portcullis_decisions_total{decision=\"deny\",reason=\"uses_exhausted\"}",
        "portcullis_decision_duration_seconds_bucket",
        "portcullis_journal_batch_records",
        "portcullis_journal_commit_seconds",
    ] {
        assert!(metrics.contains(series), "{series} missing");
    }
    // The journal's own connection stands apart from the pool's where an operator looks.
    let journal = site
        .app
        .db()
        .await?
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'portcullis-journal'",
            &[&site.app.dbname],
        )
        .await?
        .try_get::<_, i64>(0)?;
    assert_eq!(journal, 1, "one journal connection, named as such");
    Ok(())
}

#[actix_web::test]
async fn config_changes_are_in_force_at_once() -> TestResult {
    let site = Site::build(spawn_app().await?, 2, 1).await?;
    let (_, pin) = site.pass(json!({})).await?;
    assert_eq!(site.decide(1, &pin, "in").await?, allow());
    // Take the second zone out of the rule: the next swipe there is refused.
    let path = site.path(&format!("/access-rules/{}", site.rule));
    let r = site.app.call("PATCH", &path, Some(&site.root.access), Some(json!({"zone_ids": [site.zones[0]]}))).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(site.decide(1, &pin, "out").await?, deny("zone_not_allowed"));
    // A new gate works as soon as it is created (and its key names it).
    let gate = site.post("/gates", json!({"name": "New door", "zone_id": site.zones[0], "direction": "in"})).await?;
    let gate_id = gate["id"].as_str().unwrap_or_default().to_owned();
    let (_, key) = site.app.create_key(&site.root, &site.org, &["gate:decide"], &[&gate_id]).await?;
    let r = site.decide_raw(&gate_id, &key, json!({"credential": pin})).await?;
    assert_eq!(r.json()["reason"], "allowed");
    let r = site.decide_raw(&gate_id, &key, json!({"credential": pin, "direction": "out"})).await?;
    assert_eq!(r.json()["reason"], "wrong_direction");
    // A zone still used by gates cannot be deleted.
    let r = site
        .app
        .call("DELETE", &site.path(&format!("/zones/{}", site.zones[0])), Some(&site.root.access), None)
        .await?;
    assert_eq!((r.status, r.error_code().as_deref()), (409, Some("in_use")));
    Ok(())
}

#[actix_web::test]
async fn a_consumed_pass_stays_consumed_when_the_engine_is_killed_right_after() -> TestResult {
    use crate::engine_process::{Engine, http};
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let (pass, pin) = site.pass(json!({"type": "single"})).await?;
    let path = format!("/api/v1/gates/{}/decisions", site.gates[0]);
    let body = json!({"credential": pin, "direction": "in"});

    // Another engine process on the same database: admit, then die at once.
    let mut engine = Engine::serve(&site.app.dbname)?;
    let port = engine.wait_for_port()?;
    let (status, reply) = http(port, "POST", &path, Some(&site.device_key), Some(&body))?;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("\"allow\""), "{reply}");
    engine.kill()?;

    let mut engine = Engine::serve(&site.app.dbname)?;
    let port = engine.wait_for_port()?;
    let (_, reply) = http(port, "POST", &path, Some(&site.device_key), Some(&body))?;
    assert!(reply.contains("uses_exhausted"), "the restarted engine must know the pass is used: {reply}");
    let (status, _) = engine.terminate()?;
    assert!(status.success());
    let db = site.app.db().await?;
    let used: i32 =
        db.query_one("SELECT uses_count FROM passes WHERE id = $1", &[&uuid::Uuid::try_parse(&pass)?]).await?.get(0);
    assert_eq!(used, 1);
    Ok(())
}

/// A rotating QR code opens once. The step of the last code used is not stored, so a restarted
/// engine takes any code that could have been used at the pass's last passage as used: the code
/// shown before a `kill -9` opens nothing after it (it would still be within its time window).
#[actix_web::test]
async fn a_used_qr_code_opens_no_gate_again_after_the_engine_restarts() -> TestResult {
    use crate::engine_process::{Engine, http};
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let issued = site
        .post(
            "/passes",
            json!({
                "holder_name": "QR visitor", "access_rule_id": site.rule, "type": "multi", "max_uses": 10,
                "valid_from": (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339(),
                "valid_to": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
                "credential": {"kind": "qr"},
            }),
        )
        .await?;
    let pass = issued["id"].as_str().unwrap_or_default().to_owned();
    let qr = site.get(&format!("/passes/{pass}/qr")).await?;
    let path = format!("/api/v1/gates/{}/decisions", site.gates[0]);
    let ask = |port: u16, direction: &str| -> TestResult<String> {
        let body = json!({"credential": {"kind": "qr", "value": qr["payload"]}, "direction": direction});
        let (status, reply) = http(port, "POST", &path, Some(&site.device_key), Some(&body))?;
        assert_eq!(status, 200, "{reply}");
        Ok(serde_json::from_str::<serde_json::Value>(&reply)?["reason"].as_str().unwrap_or_default().to_owned())
    };
    let mut engine = Engine::serve(&site.app.dbname)?;
    let port = engine.wait_for_port()?;
    assert_eq!(ask(port, "in")?, "allowed");
    assert_eq!(ask(port, "out")?, "allowed");
    engine.kill()?;

    let mut engine = Engine::serve(&site.app.dbname)?;
    let port = engine.wait_for_port()?;
    assert_eq!(ask(port, "in")?, "qr_replayed", "the code was used before the restart");
    let (status, _) = engine.terminate()?;
    assert!(status.success());
    Ok(())
}

/// Pass rows are checkpoints the journal writes behind the check-ins. An engine killed before
/// its checkpoint leaves a row behind; the next start brings it up to date from the check-ins
/// after it (uses, inside, last gate), and decides as the killed engine would have.
#[actix_web::test]
async fn a_pass_row_left_behind_by_a_killed_engine_is_brought_up_to_date_from_its_checkins() -> TestResult {
    use crate::engine_process::{Engine, http};
    let site = Site::build(spawn_app().await?, 1, 2).await?;
    let rule = site.rule_for(&site.zones.clone(), json!({"anti_passback": "hard"})).await?;
    let (pass, credential) = site.pass(json!({"type": "multi", "max_uses": 3, "access_rule_id": rule})).await?;
    let pass_id = uuid::Uuid::try_parse(&pass)?;
    let decide = |port: u16, gate: usize, direction: &str| -> TestResult<String> {
        let path = format!("/api/v1/gates/{}/decisions", site.gates[gate]);
        let body = json!({"credential": credential, "direction": direction});
        let (status, reply) = http(port, "POST", &path, Some(&site.device_key), Some(&body))?;
        assert_eq!(status, 200, "{reply}");
        Ok(reply)
    };
    let db = site.app.db().await?;
    let row = async || -> TestResult<(i32, bool, Option<String>)> {
        let row = db
            .query_one("SELECT uses_count, inside, last_gate_id::text FROM passes WHERE id = $1", &[&pass_id])
            .await?;
        Ok((row.get(0), row.get(1), row.get(2)))
    };
    // A checkpoint an hour away: the kill comes before it.
    let later = [("PORTCULLIS__JOURNAL__CHECKPOINT_MS", "3600000")];

    let mut engine = Engine::serve_with(&site.app.dbname, &later)?;
    let port = engine.wait_for_port()?;
    for (gate, direction) in [(0, "in"), (1, "out"), (1, "in")] {
        let reply = decide(port, gate, direction)?;
        assert!(reply.contains("\"allow\""), "{direction} at gate {gate}: {reply}");
    }
    engine.kill()?;
    // Two uses committed (their check-ins), the row as it was issued.
    assert_eq!(row().await?, (0, false, None));
    let allowed: i64 = db
        .query_one("SELECT count(*) FROM checkins WHERE pass_id = $1 AND decision = 'allow'", &[&pass_id])
        .await?
        .get(0);
    assert_eq!(allowed, 3);

    let mut engine = Engine::serve_with(&site.app.dbname, &later)?;
    let port = engine.wait_for_port()?;
    assert_eq!(row().await?, (2, true, Some(site.gates[1].clone())), "brought up to date at start");
    assert!(engine.output().contains("brought up to date"), "{}", engine.output());
    // Inside, against hard anti-passback, with one use left.
    for (gate, direction, expected) in [
        (0, "in", "anti_passback"),
        (0, "out", "allowed"),
        (0, "in", "allowed"),
        (1, "out", "allowed"),
        (1, "in", "uses_exhausted"),
    ] {
        let reply = decide(port, gate, direction)?;
        assert!(reply.contains(&format!("\"reason\":\"{expected}\"")), "{direction} at gate {gate}: {reply}");
    }
    let (status, _) = engine.terminate()?;
    assert!(status.success());
    // A clean stop writes its checkpoint.
    assert_eq!(row().await?, (3, false, Some(site.gates[1].clone())));
    Ok(())
}

#[actix_web::test]
async fn passes_are_found_by_part_of_the_holders_name() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    for holder in ["Ada Lovelace", "Alan Turing", "100% Guest"] {
        site.pass(json!({"holder_name": holder})).await?;
    }
    let names = |page: serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["holder_name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(names(site.get("/passes?q=ADA").await?), ["Ada Lovelace"], "case-insensitive");
    assert_eq!(names(site.get("/passes?q=%25").await?), ["100% Guest"], "a % is a percent sign, not a wildcard");
    assert!(names(site.get("/passes?q=_").await?).is_empty(), "an underscore is literal too");
    assert_eq!(names(site.get("/passes?limit=2").await?).len(), 2);
    Ok(())
}

/// Turnstiles can have a listener of their own (`server.device_bind`), served by its own
/// workers: decisions and health there, nothing else; the API port keeps deciding too.
#[actix_web::test]
async fn a_device_listener_serves_decisions_and_nothing_else() -> TestResult {
    let app = spawn_app_with(|s| s.server.device_bind = "127.0.0.1:0".parse().ok()).await?;
    let device = app.device_address.clone().ok_or("no device listener")?;
    let site = Site::build(app, 1, 1).await?;
    let (_, pin) = site.pass(json!({})).await?;
    let gate = &site.gates[0];
    let body = serde_json::to_vec(&json!({"credential": pin, "direction": "in"}))?;
    let decide = |base: &str| {
        site.app
            .client
            .post(format!("{base}/api/v1/gates/{gate}/decisions"))
            .insert_header(("authorization", format!("Bearer {}", site.device_key)))
            .insert_header(("content-type", "application/json"))
    };
    let reply = site.app.send(decide(&device), Some(&body)).await?;
    assert_eq!((reply.status, reply.json()["decision"].clone()), (200, json!("allow")), "{}", reply.text());
    let reply = site.app.send(decide(&site.app.address), Some(&body)).await?;
    assert_eq!((reply.status, reply.json()["decision"].clone()), (200, json!("allow")), "{}", reply.text());
    let health = site.app.send(site.app.client.get(format!("{device}/health")), None).await?;
    assert_eq!(health.status, 200);
    for path in ["/api/v1/me", "/api/v1/orgs", "/metrics", "/"] {
        let reply = site.app.send(site.app.client.get(format!("{device}{path}")), None).await?;
        assert_eq!((reply.status, reply.error_code()), (404, Some("not_found".into())), "{path} on the device port");
    }
    // Only the device's decisions and the one on the API port: both journaled.
    let checkins = site.get("/checkins").await?;
    assert_eq!(checkins["items"].as_array().map(Vec::len), Some(2), "{checkins}");
    Ok(())
}

/// Each listener's workers answer under `SCHED_FIFO` at its priority while they answer little
/// (`server.api_priority`, `server.device_priority`), so that a thousand dashboards' streams never
/// hold up an answer, and no other thread of the engine does: not once they have admitted a pass
/// (a commit waited for) and refused a stranger, nor the blocking thread a sign-in's password hash
/// ran on (created by a real-time worker, it starts with its policy). At 0 none does. Where the
/// system refuses real-time priority (no `CAP_SYS_NICE`), the engine says so and serves all the
/// same.
#[actix_web::test]
async fn each_listener_answers_under_its_real_time_priority_and_nothing_else_does() -> TestResult {
    use crate::engine_process::{Engine, http};
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let path = format!("/api/v1/gates/{}/decisions", site.gates[0]);
    for (api_priority, device_priority) in [("2", "3"), ("0", "0")] {
        let env = [
            ("PORTCULLIS__SERVER__DEVICE_BIND", "127.0.0.1:0"),
            ("PORTCULLIS__SERVER__DEVICE_WORKERS", "1"),
            ("PORTCULLIS__SERVER__DEVICE_PRIORITY", device_priority),
            ("PORTCULLIS__SERVER__API_PRIORITY", api_priority),
        ];
        let (_, pin) = site.pass(json!({})).await?;
        let mut engine = Engine::serve_with(&site.app.dbname, &env)?;
        let api = engine.wait_for_port()?;
        let device = engine.device_port().ok_or("no device listener")?;
        let unknown = json!({"kind": "pin", "value": "000000000"});
        for (credential, reason) in [(pin, "allowed"), (unknown, "unknown_credential")] {
            let body = json!({"credential": credential, "direction": "in"});
            let (status, reply) = http(device, "POST", &path, Some(&site.device_key), Some(&body))?;
            assert_eq!(status, 200, "{reply}");
            assert!(reply.contains(reason), "{reason}: {reply}");
        }
        let login = json!({"email": site.root.email, "password": crate::helpers::PASSWORD});
        let (status, reply) = http(api, "POST", "/api/v1/auth/login", None, Some(&login))?;
        assert_eq!(status, 200, "a sign-in on the API port: {reply}");
        // A worker that those first requests kept busy (a debug build's first decision) is back
        // under SCHED_FIFO at its first request after a quiet hold: ask each listener's workers
        // something light until they all are (or the system refuses real-time priority).
        const REFUSED: &str = "real-time priority refused";
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let (threads, fifo) = loop {
            std::thread::sleep(std::time::Duration::from_millis(300));
            for port in [device, api, api] {
                assert_eq!(http(port, "GET", "/health", None, None)?.0, 200);
            }
            let threads = crate::engine_process::threads(engine.pid())?;
            // Each thread under SCHED_FIFO, with its real-time priority.
            let fifo: Vec<(String, String)> =
                threads.iter().filter(|t| t.policy == "1").map(|t| (t.name.clone(), t.rt_priority.clone())).collect();
            let workers = threads.iter().filter(|t| t.name.ends_with("-worker") && t.name != "tokio-rt-worker").count();
            if device_priority == "0" || fifo.len() >= workers || std::time::Instant::now() > deadline {
                break (threads, fifo);
            }
            if fifo.is_empty() && engine.output().contains(REFUSED) {
                break (threads, fifo);
            }
        };
        let output = engine.output();
        if device_priority == "0" {
            assert!(fifo.is_empty() && !output.contains(REFUSED), "{fifo:?}");
        } else if fifo.is_empty() {
            // Refused here (no CAP_SYS_NICE): a worker's warning may still be on its way.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !engine.output().contains(REFUSED) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            assert!(engine.output().contains(REFUSED), "neither real-time nor refused");
        } else {
            let count = |name: &str, priority: &str| fifo.iter().filter(|(n, p)| n == name && p == priority).count();
            let (devices, apis) = (count("device-worker", device_priority), count("api-worker", api_priority));
            assert_eq!(devices, 1, "the device worker: {fifo:?}");
            let api_workers = threads.iter().filter(|t| t.name == "api-worker").count();
            assert_eq!(apis, api_workers, "the API workers: {fifo:?}");
            assert_eq!(
                fifo.len(),
                devices + apis,
                "only the listeners' workers, each at its listener's priority: {fifo:?}"
            );
        }
        // Each thread goes by what it does.
        let named = |name: &str| threads.iter().filter(|t| t.name == name).count();
        assert_eq!(named("device-worker"), 1, "{threads:?}");
        for name in ["api-worker", "engine-actors", "stream"] {
            assert!(named(name) >= 1, "no {name} thread: {threads:?}");
        }
        engine.kill()?;
    }
    Ok(())
}

/// A listener's worker that answering keeps busy (a flood of decisions) leaves real-time
/// scheduling, so that the journal and PostgreSQL keep their share of the machine; once quiet it
/// is real-time again.
#[actix_web::test]
async fn a_worker_kept_busy_leaves_real_time_and_is_real_time_again_once_quiet() -> TestResult {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use crate::engine_process::{Engine, http};
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let path = format!("/api/v1/gates/{}/decisions", site.gates[0]);
    let env = [
        ("PORTCULLIS__SERVER__DEVICE_BIND", "127.0.0.1:0"),
        ("PORTCULLIS__SERVER__DEVICE_WORKERS", "1"),
        ("PORTCULLIS__SERVER__DEVICE_PRIORITY", "3"),
    ];
    let mut engine = Engine::serve_with(&site.app.dbname, &env)?;
    engine.wait_for_port()?;
    let device = engine.device_port().ok_or("no device listener")?;
    let body = json!({"credential": {"kind": "pin", "value": "000000000"}, "direction": "in"});
    let ask = || -> TestResult {
        let (status, reply) = http(device, "POST", &path, Some(&site.device_key), Some(&body))?;
        assert_eq!(status, 200, "{reply}");
        Ok(())
    };
    let pid = engine.pid();
    let policy = move || -> TestResult<String> {
        let threads = crate::engine_process::threads(pid)?;
        let worker = threads.iter().find(|t| t.name == "device-worker").ok_or("no device worker")?;
        Ok(worker.policy.clone())
    };
    ask()?;
    if policy()? != "1" {
        // Refused here (no CAP_SYS_NICE): nothing to leave.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !engine.output().contains("real-time priority refused") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(engine.output().contains("real-time priority refused"), "neither real-time nor refused");
        return engine.kill();
    }
    // Four turnstiles asking as fast as they are answered.
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..4)
        .map(|_| {
            let (stop, path, key, body) = (stop.clone(), path.clone(), site.device_key.clone(), body.clone());
            std::thread::spawn(move || -> Result<u64, String> {
                let mut answered = 0;
                while !stop.load(Ordering::SeqCst) {
                    let (status, reply) =
                        http(device, "POST", &path, Some(&key), Some(&body)).map_err(|e| e.to_string())?;
                    if status != 200 {
                        return Err(format!("{status} {reply}"));
                    }
                    answered += 1;
                }
                Ok(answered)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut busy = policy()?;
    while busy == "1" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        busy = policy()?;
    }
    stop.store(true, Ordering::SeqCst);
    let mut answered = 0;
    for turnstile in flood {
        answered += turnstile.join().map_err(|_| "a turnstile panicked")??;
    }
    assert!(answered > 0, "the flood was never answered");
    assert_eq!(busy, "0", "under a flood the device worker runs under the default scheduling");
    // Quiet: a turnstile every 100 ms.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut quiet = policy()?;
    while quiet != "1" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        ask()?;
        quiet = policy()?;
    }
    assert_eq!(quiet, "1", "once quiet the device worker is real-time again");
    engine.kill()
}

/// A consuming entry waits for its commit; nothing else at its gate waits with it. The commit is
/// held back by a row lock on the pass, taken by the test in its own database: the journal's
/// update of that pass cannot commit until the lock goes.
#[actix_web::test]
async fn a_pass_waiting_for_its_commit_holds_up_no_other_decision_at_its_gate() -> TestResult {
    use std::time::Duration;
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let (slow, slow_pin) = site.pass(json!({})).await?;
    let (_, other_pin) = site.pass(json!({})).await?;
    let db = site.app.db().await?;
    db.batch_execute("BEGIN").await?;
    db.query("SELECT 1 FROM passes WHERE id = $1 FOR UPDATE", &[&uuid::Uuid::parse_str(&slow)?]).await?;

    let entry = site.decide(0, &slow_pin, "in");
    futures_util::pin_mut!(entry);
    let waited = tokio::time::timeout(Duration::from_millis(500), &mut entry).await;
    assert!(waited.is_err(), "the entry cannot be answered before its commit: {waited:?}");
    // Meanwhile the same gate answers an unknown card and another pass's exit.
    let unknown = json!({"kind": "pin", "value": "000000000"});
    let answered = tokio::time::timeout(Duration::from_secs(10), site.decide(0, &unknown, "in")).await;
    assert_eq!(answered.map_err(|_| "the gate waited for another pass's commit")??, deny("unknown_credential"));
    let answered = tokio::time::timeout(Duration::from_secs(10), site.decide(0, &other_pin, "out")).await;
    assert_eq!(answered.map_err(|_| "the gate waited for another pass's commit")??, allow());

    db.batch_execute("COMMIT").await?;
    let admitted = tokio::time::timeout(Duration::from_secs(30), entry).await;
    assert_eq!(admitted.map_err(|_| "the entry never committed")??, allow());
    Ok(())
}
