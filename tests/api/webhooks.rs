//! Events out through webhooks, end to end: a real HTTP receiver on 127.0.0.1 that checks every
//! delivery with an independent Standard Webhooks verifier (the `standardwebhooks` crate), and
//! answers as each test scripts it.

// The receiver runs on a thread of its own; its state is locked briefly, never across an await.
#![expect(clippy::disallowed_types, reason = "the receiver's state, shared with its own thread")]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestResult, spawn_app, spawn_app_with};
use crate::site::Site;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    /// What the receiver answered.
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn id(&self) -> String {
        self.headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    }

    /// Whether `secret` signed this request (the independent verifier's word).
    pub fn signed_by(&self, secret: &str) -> bool {
        standardwebhooks::Webhook::new(secret).is_ok_and(|w| w.verify(&self.body, &self.headers).is_ok())
    }
}

/// A webhook receiver: answers with the scripted statuses in turn, then 200.
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    pub fn start(script: &[u16]) -> TestResult<Receiver> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://127.0.0.1:{}/hooks/portcullis", listener.local_addr()?.port());
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<u16>>()));
        let (log, answers) = (received.clone(), script.clone());
        std::thread::spawn(move || {
            let server = actix_web::HttpServer::new(move || {
                let (log, answers) = (log.clone(), answers.clone());
                actix_web::App::new().default_service(actix_web::web::to(
                    move |request: actix_web::HttpRequest, body: actix_web::web::Bytes| {
                        let (log, answers) = (log.clone(), answers.clone());
                        async move {
                            let mut headers = http::HeaderMap::new();
                            for (name, value) in request.headers() {
                                if let (Ok(name), Ok(value)) = (
                                    http::header::HeaderName::from_bytes(name.as_str().as_bytes()),
                                    http::header::HeaderValue::from_bytes(value.as_bytes()),
                                ) {
                                    headers.append(name, value);
                                }
                            }
                            let status = answers.lock().ok().and_then(|mut a| a.pop_front()).unwrap_or(200);
                            if let Ok(mut log) = log.lock() {
                                log.push(Received { at: Instant::now(), status, headers, body: body.to_vec() });
                            }
                            let status = actix_web::http::StatusCode::from_u16(status)
                                .unwrap_or(actix_web::http::StatusCode::OK);
                            actix_web::HttpResponse::build(status).body(format!("answered {status}"))
                        }
                    },
                ))
            })
            .workers(1)
            .listen(listener);
            if let Ok(server) = server {
                let _ = actix_web::rt::System::new().block_on(server.run());
            }
        });
        Ok(Receiver { url, received, script })
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits up to `secs` for a request `matches` accepts.
    pub async fn wait_for(&self, secs: u64, matches: impl Fn(&Received) -> bool) -> Option<Received> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(found) = self.received().into_iter().find(|r| matches(r)) {
                return Some(found);
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

fn of_type<'a>(kind: &'a str, pass: &'a str) -> impl Fn(&Received) -> bool + 'a {
    move |r| {
        let body = r.json();
        body["type"] == kind && body["data"]["pass_id"] == pass
    }
}

async fn add_endpoint(site: &Site, url: &str, types: Value) -> TestResult<(String, String)> {
    let created = site.post("/webhooks", json!({"url": url, "event_types": types, "description": "tests"})).await?;
    let (id, secret) = (created["id"].as_str(), created["secret"].as_str());
    Ok((id.unwrap_or_default().to_owned(), secret.unwrap_or_default().to_owned()))
}

#[actix_web::test]
async fn issued_entered_and_revoked_passes_reach_a_receiver_signed() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let receiver = Receiver::start(&[])?;
    let (endpoint, secret) = add_endpoint(&site, &receiver.url, json!(["*"])).await?;
    assert!(secret.starts_with("whsec_"), "{secret}");

    let issued_at = Instant::now();
    let (pass, credential) = site.pass(json!({"holder_name": "Grace"})).await?;
    let issued = receiver.wait_for(10, of_type("visitpass.issued", &pass)).await.ok_or("no visitpass.issued")?;
    eprintln!("visitpass.issued received {:?} after the issue call started", issued.at - issued_at);
    assert!(issued.signed_by(&secret), "the signature does not verify: {:?}", issued.headers);
    assert!(!issued.signed_by("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"), "any secret verifies?");
    let body = issued.json();
    assert_eq!(body["data"]["holder_name"], "Grace");
    assert!(body["timestamp"].is_string());
    let timestamp: i64 =
        issued.headers.get("webhook-timestamp").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 60);

    // An entry, then the revocation.
    assert_eq!(site.decide(0, &credential, "in").await?, crate::site::allow());
    let entered =
        receiver.wait_for(10, of_type("visitpass.checked_in", &pass)).await.ok_or("no visitpass.checked_in")?;
    assert!(entered.signed_by(&secret));
    let revoked_at = Instant::now();
    site.post(&format!("/passes/{pass}/revoke"), json!({"reason": "badge lost"})).await?;
    let revoked = receiver.wait_for(10, of_type("visitpass.revoked", &pass)).await.ok_or("no visitpass.revoked")?;
    eprintln!("visitpass.revoked received {:?} after the revoke call started", revoked.at - revoked_at);
    assert!(revoked.signed_by(&secret));
    assert_eq!(revoked.json()["data"]["reason"], "badge lost");
    // Three events, three ids.
    let ids: std::collections::HashSet<String> = [&issued, &entered, &revoked].iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), 3);

    // A rotated secret: both sign for a while, so a receiver switching over verifies either.
    let rotated = site.post(&format!("/webhooks/{endpoint}/rotate-secret"), json!({})).await?;
    let new_secret = rotated["secret"].as_str().unwrap_or_default().to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    let tested = site.post(&format!("/webhooks/{endpoint}/test"), json!({})).await?;
    let test_id = tested["event_id"].as_str().unwrap_or_default().to_owned();
    let test = receiver.wait_for(10, |r| r.id() == test_id).await.ok_or("no test event")?;
    assert_eq!(test.json()["type"], "webhook.test");
    assert!(test.signed_by(&new_secret) && test.signed_by(&secret), "{:?}", test.headers.get("webhook-signature"));
    Ok(())
}

#[actix_web::test]
async fn a_failing_receiver_is_retried_with_the_same_id_and_the_log_shows_every_attempt() -> TestResult {
    let app = spawn_app_with(|s| s.webhooks.retry_schedule_secs = vec![1, 1, 1]).await?;
    let site = Site::build(app, 1, 1).await?;
    let receiver = Receiver::start(&[500, 500])?;
    let (endpoint, secret) = add_endpoint(&site, &receiver.url, json!(["visitpass.issued"])).await?;
    let (pass, _) = site.pass(json!({})).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let attempts = loop {
        let got: Vec<Received> =
            receiver.received().into_iter().filter(|r| of_type("visitpass.issued", &pass)(r)).collect();
        if got.len() >= 3 || Instant::now() > deadline {
            break got;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(attempts.len(), 3, "three attempts");
    assert!(
        attempts.iter().all(|a| a.signed_by(&secret) && a.id() == attempts[0].id()),
        "one id, every attempt signed"
    );
    assert!(attempts[1].at - attempts[0].at >= Duration::from_millis(700), "the retry waited its schedule");

    let log = loop {
        let log = site.get(&format!("/webhooks/{endpoint}/deliveries")).await?;
        let items = log["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= 3 || Instant::now() > deadline {
            break items;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    let summary: Vec<(i64, String, i64)> = log
        .iter()
        .map(|d| {
            (
                d["attempt"].as_i64().unwrap_or(0),
                d["outcome"].as_str().unwrap_or("").to_owned(),
                d["status_code"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [(3, "delivered".to_owned(), 200), (2, "failed".to_owned(), 500), (1, "failed".to_owned(), 500)],
        "newest first"
    );
    assert!(log[1]["next_retry_at"].is_string() && log[0]["next_retry_at"].is_null());
    assert_eq!(log[2]["response"], "answered 500 Internal Server Error");

    // Redelivery on demand: the same event, the same id.
    let event = log[0]["event_id"].as_str().unwrap_or_default().to_owned();
    site.post(&format!("/webhooks/{endpoint}/deliveries/{event}/redeliver"), json!({})).await?;
    let again = receiver.wait_for(10, |r| r.id() == event && r.at > attempts[2].at).await.ok_or("no redelivery")?;
    assert!(again.signed_by(&secret));

    // Everything since a time, again: the same event, the same id once more.
    let since = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    let queued = site.post(&format!("/webhooks/{endpoint}/redeliver"), json!({"since": since})).await?;
    assert_eq!(queued["events"], 1, "{queued}");
    receiver.wait_for(10, |r| r.id() == event && r.at > again.at).await.ok_or("no redelivery of everything since")?;
    let future = (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339();
    let none = site.post(&format!("/webhooks/{endpoint}/redeliver"), json!({"since": future})).await?;
    assert_eq!(none["events"], 0);
    Ok(())
}

#[actix_web::test]
async fn a_410_disables_the_endpoint_and_the_console_refuses_what_it_must() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let receiver = Receiver::start(&[410])?;
    let (endpoint, _) = add_endpoint(&site, &receiver.url, json!(["*"])).await?;
    site.post(&format!("/webhooks/{endpoint}/test"), json!({})).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let hook = loop {
        let hook = site.get(&format!("/webhooks/{endpoint}")).await?;
        if hook["enabled"] == false || Instant::now() > deadline {
            break hook;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(hook["enabled"], false, "{hook}");
    assert_eq!(hook["disabled_reason"], "the endpoint answered 410 Gone");
    assert!(hook.get("secret").is_none(), "a secret is shown once");

    // Bad input: a 422 naming the field.
    let path = site.path("/webhooks");
    for (field, body) in [
        ("url", json!({"url": "ftp://example.com", "event_types": ["*"]})),
        ("url", json!({"url": "https://user:pw@example.com/", "event_types": ["*"]})),
        ("event_types", json!({"url": receiver.url, "event_types": []})),
        ("event_types[1]", json!({"url": receiver.url, "event_types": ["visitpass.issued", "pass.teleported"]})),
    ] {
        let reply = site.app.call("POST", &path, Some(&site.root.access), Some(body)).await?;
        assert_eq!(reply.status, 422, "{field}: {}", reply.text());
        assert!(reply.json()["error"]["details"]["fields"][field].is_string(), "{field}: {}", reply.text());
    }
    // Operators and API keys cannot manage webhooks.
    let operator = site.app.create_user(&site.root, &site.org, "operator").await?;
    let reply = site.app.call("GET", &path, Some(&operator.access), None).await?;
    assert_eq!(reply.status, 403);
    let (_, key) = site.app.create_key(&site.root, &site.org, &["config:write"], &[]).await?;
    let reply =
        site.app.call("POST", &path, Some(&key), Some(json!({"url": receiver.url, "event_types": ["*"]}))).await?;
    assert_eq!(reply.status, 403, "{}", reply.text());
    // The catalogue, with examples.
    let types = site.app.call("GET", "/api/v1/event-types", Some(&operator.access), None).await?.json();
    let names: Vec<&str> = types["items"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"visitpass.issued") && names.contains(&"visitpass.revoked"), "{names:?}");
    Ok(())
}

#[actix_web::test]
async fn an_engine_killed_mid_backlog_loses_no_event_and_retries_with_the_same_ids() -> TestResult {
    use crate::engine_process::Engine;
    // This engine writes events but delivers none: the engines under test, other processes, do.
    let site = Site::build(spawn_app_with(|s| s.webhooks.deliver = false).await?, 1, 1).await?;
    let receiver = Receiver::start(&[503; 10_000])?;
    let (_, secret) = add_endpoint(&site, &receiver.url, json!(["visitpass.issued"])).await?;
    let env = [
        ("PORTCULLIS__WEBHOOKS__ALLOW_PRIVATE_ADDRESSES", "true"),
        // A short attempt timeout: a delivery the killed engine was trying is leased for two of
        // them (and 5 s).
        ("PORTCULLIS__WEBHOOKS__ATTEMPT_TIMEOUT_SECS", "2"),
        ("PORTCULLIS__WEBHOOKS__RETRY_SCHEDULE_SECS", "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"),
    ];
    let mut engine = Engine::serve_with(&site.app.dbname, &env)?;
    engine.wait_for_port()?;
    let mut passes = Vec::new();
    for _ in 0..5 {
        passes.push(site.pass(json!({})).await?.0);
    }
    // Every event tried (and refused) at least once, then the engine is killed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while passes.iter().any(|p| !receiver.received().iter().any(|r| of_type("visitpass.issued", p)(r))) {
        if Instant::now() > deadline {
            return Err(format!("not every event was tried:\n{}", engine.output()).into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    engine.sigkill()?;
    // More events while no engine delivers; then the receiver is back, and another engine.
    for _ in 0..3 {
        passes.push(site.pass(json!({})).await?.0);
    }
    if let Ok(mut script) = receiver.script.lock() {
        script.clear();
    }
    let mut engine = Engine::serve_with(&site.app.dbname, &env)?;
    engine.wait_for_port()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let delivered =
        |pass: &str| receiver.received().iter().any(|r| r.status == 200 && of_type("visitpass.issued", pass)(r));
    while !passes.iter().all(|p| delivered(p)) {
        if Instant::now() > deadline {
            return Err(format!("events lost:\n{}", engine.output()).into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    engine.kill()?;
    // Every attempt of an event carried its one id, and every one was signed.
    for pass in &passes {
        let attempts: Vec<Received> =
            receiver.received().into_iter().filter(|r| of_type("visitpass.issued", pass)(r)).collect();
        let ids: std::collections::HashSet<String> = attempts.iter().map(Received::id).collect();
        assert_eq!(ids.len(), 1, "{pass}: {ids:?}");
        assert!(attempts.iter().all(|a| a.signed_by(&secret)));
    }
    Ok(())
}

#[actix_web::test]
async fn private_targets_are_refused_unless_allowed() -> TestResult {
    let app = spawn_app_with(|s| s.webhooks.allow_private_addresses = false).await?;
    let site = Site::build(app, 1, 1).await?;
    for url in [
        "http://127.0.0.1:9/x",
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:8080/",
    ] {
        let reply = site
            .app
            .call(
                "POST",
                &site.path("/webhooks"),
                Some(&site.root.access),
                Some(json!({"url": url, "event_types": ["*"]})),
            )
            .await?;
        assert_eq!(reply.status, 422, "{url}: {}", reply.text());
        assert!(reply.json()["error"]["details"]["fields"]["url"].is_string());
    }
    Ok(())
}

#[actix_web::test]
async fn events_done_with_are_pruned_after_their_retention_and_pending_ones_are_kept() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let receiver = Receiver::start(&[])?;
    add_endpoint(&site, &receiver.url, json!(["visitpass.issued"])).await?;
    for _ in 0..2 {
        let (delivered, _) = site.pass(json!({})).await?;
        receiver.wait_for(10, of_type("visitpass.issued", &delivered)).await.ok_or("not delivered")?;
    }
    let before: i64 = site.app.db().await?.query_one("SELECT count(*) FROM outbox", &[]).await?.get(0);
    assert_eq!(before, 2);
    let db = site.app.db().await?;
    // Wait for the notifier too (it marks events notified), then age everything past retention.
    let deadline = Instant::now() + Duration::from_secs(10);
    let behind = "SELECT count(*) FROM outbox o, outbox_cursor c WHERE (o.txid, o.seq) > (c.txid, c.seq)";
    while db.query_one(behind, &[]).await?.get::<_, i64>(0) > 0 {
        if Instant::now() > deadline {
            return Err("the outbox was not worked through".into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    db.batch_execute(
        "UPDATE outbox SET occurred_at = now() - interval '40 days';
         UPDATE webhook_attempts SET at = now() - interval '40 days';",
    )
    .await?;
    // One event still pending for an endpoint: kept, however old.
    db.execute(
        "UPDATE webhook_deliveries SET state = 'pending', next_at = now() + interval '1 day'
         WHERE event_id = (SELECT id FROM outbox ORDER BY seq LIMIT 1)",
        &[],
    )
    .await?;
    let settings = crate::helpers::test_settings(&site.app.dbname)?;
    let database = portcullis::db::Database::open(&settings.database, &settings.data_dir).await?;
    let removed = portcullis::outbox::prune(database.pool()).await?;
    assert!(removed >= 2, "{removed}");
    let left: i64 = db.query_one("SELECT count(*) FROM outbox", &[]).await?.get(0);
    let pending: i64 =
        db.query_one("SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'", &[]).await?.get(0);
    assert_eq!((left, pending), (1, 1), "only the pending event is kept");
    let attempts: i64 = db.query_one("SELECT count(*) FROM webhook_attempts", &[]).await?.get(0);
    assert_eq!(attempts, 0);
    database.close().await?;
    Ok(())
}
