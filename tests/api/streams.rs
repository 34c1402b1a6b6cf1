//! Live entry streams over real WebSockets.

use std::time::Duration;

use actix_web::web::Bytes;
use awc::ws::{Frame, Message};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

use actix_web::rt::net::TcpStream;

use crate::helpers::{TestApp, TestResult, spawn_app, spawn_app_with};
use crate::site::{Site, allow};

type Framed = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

/// A stream client that answers pings unless told to stay silent.
struct Viewer {
    framed: Framed,
    answer_pings: bool,
}

enum Received {
    Json(Value),
    Closed(Option<String>),
}

impl Viewer {
    async fn connect(app: &TestApp, org: &str, token: &str, query: &str) -> TestResult<Viewer> {
        Viewer::connect_at(&app.address, org, token, query).await
    }

    /// A viewer of the engine at `address` (`http://host:port`).
    async fn connect_at(address: &str, org: &str, token: &str, query: &str) -> TestResult<Viewer> {
        let url =
            format!("{}/api/v1/orgs/{org}/stream?access_token={token}{query}", address.replace("http://", "ws://"));
        let (_, framed) = awc::Client::new().ws(url).connect().await.map_err(|e| format!("connect: {e}"))?;
        Ok(Viewer { framed, answer_pings: true })
    }

    /// The next JSON frame or the close, within `wait`.
    async fn next(&mut self, wait: Duration) -> TestResult<Option<Received>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.framed.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Ok(Some(Received::Closed(None))),
                Ok(Some(frame)) => frame?,
            };
            match frame {
                Frame::Text(bytes) => return Ok(Some(Received::Json(serde_json::from_slice(&bytes)?))),
                Frame::Close(reason) => return Ok(Some(Received::Closed(reason.and_then(|r| r.description)))),
                Frame::Ping(bytes) if self.answer_pings => self.framed.send(Message::Pong(bytes)).await?,
                _ => {}
            }
        }
    }

    async fn json(&mut self) -> TestResult<Value> {
        match self.next(Duration::from_secs(10)).await? {
            Some(Received::Json(value)) => Ok(value),
            Some(Received::Closed(reason)) => Err(format!("stream closed: {reason:?}").into()),
            None => Err("no frame within 10 s".into()),
        }
    }

    /// Frames until one of `kind` arrives (others are returned too, for order checks).
    async fn until(&mut self, kind: &str) -> TestResult<Vec<Value>> {
        let mut seen = Vec::new();
        loop {
            let frame = self.json().await?;
            let done = frame["type"] == kind;
            seen.push(frame);
            if done {
                return Ok(seen);
            }
        }
    }

    async fn close_reason(&mut self, wait: Duration) -> TestResult<Option<String>> {
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            match self.next(deadline - tokio::time::Instant::now()).await? {
                Some(Received::Closed(reason)) => return Ok(reason),
                Some(Received::Json(_)) => {}
                None => break,
            }
        }
        Err("the stream was not closed".into())
    }
}

async fn operator(site: &Site) -> TestResult<crate::helpers::Login> {
    site.app.create_user(&site.root, &site.org, "operator").await
}

#[actix_web::test]
async fn a_snapshot_comes_first_then_each_decision_with_its_verdict_in_order() -> TestResult {
    let site = Site::build(spawn_app().await?, 2, 2).await?;
    let (pass, pin) = site.pass(json!({"holder_name": "Ada"})).await?;
    site.decide(0, &pin, "in").await?;
    let op = operator(&site).await?;
    let mut viewer = Viewer::connect(&site.app, &site.org, &op.access, "").await?;
    let snapshot = viewer.json().await?;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["gates"].as_array().map(Vec::len), Some(4));
    let gate0 = snapshot["gates"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["id"] == site.gates[0].as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(gate0["mode"], "normal");
    assert_eq!(gate0["queue"][0]["holder_name"], "Ada", "the recent queue is in the snapshot");
    assert_eq!(gate0["health"]["last_seen_at"], gate0["queue"][0]["decided_at"], "the device was last seen asking");
    assert_eq!(snapshot["occupancy"].as_array().map(Vec::len), Some(2));
    let seq = snapshot["seq"].as_u64().unwrap_or(0);

    assert_eq!(site.decide(1, &pin, "out").await?, allow());
    assert_eq!(site.decide(2, &json!({"kind": "pin", "value": "00000000"}), "in").await?.1, "unknown_credential");
    let first = viewer.json().await?;
    let second = viewer.json().await?;
    assert_eq!(
        (first["type"].as_str(), first["decision"].as_str(), first["reason"].as_str()),
        (Some("decision"), Some("allow"), Some("allowed"))
    );
    assert_eq!(first["pass_id"], pass.as_str());
    assert_eq!(first["gate_id"], site.gates[1].as_str());
    assert_eq!((second["decision"].as_str(), second["reason"].as_str()), (Some("deny"), Some("unknown_credential")));
    assert_eq!(first["seq"].as_u64(), Some(seq + 1));
    assert_eq!(second["seq"].as_u64(), Some(seq + 2));
    Ok(())
}

#[actix_web::test]
async fn a_snapshot_larger_than_the_connection_buffer_arrives_whole_and_events_follow_it() -> TestResult {
    // Recent entries at every gate make the first frame several times the 4 KiB pieces a stream
    // hands its connection at once (`http::stream::pieces`).
    let site = Site::build(spawn_app().await?, 2, 2).await?;
    for round in 0..25 {
        for gate in 0..site.gates.len() {
            site.decide(gate, &json!({"kind": "pin", "value": format!("{:08}", round * 10 + gate)}), "in").await?;
        }
    }
    let op = operator(&site).await?;
    let mut viewer = Viewer::connect(&site.app, &site.org, &op.access, "").await?;
    let snapshot = viewer.json().await?;
    assert_eq!(snapshot["type"], "snapshot");
    assert!(snapshot.to_string().len() > 3 * 4096, "a snapshot of {} bytes", snapshot.to_string().len());
    let gates = snapshot["gates"].as_array().cloned().unwrap_or_default();
    assert_eq!(gates.len(), 4);
    for gate in &gates {
        let queue = gate["queue"].as_array().map_or(0, Vec::len);
        assert!(queue >= 10, "gate {} shows {queue} recent entries", gate["id"]);
    }
    site.decide(3, &json!({"kind": "pin", "value": "99999999"}), "in").await?;
    let next = viewer.json().await?;
    assert_eq!((next["type"].as_str(), next["gate_id"].as_str()), (Some("decision"), Some(site.gates[3].as_str())));
    assert_eq!(next["seq"].as_u64(), snapshot["seq"].as_u64().map(|s| s + 1));
    Ok(())
}

#[actix_web::test]
async fn a_revocation_reaches_every_stream_of_the_organization_and_no_other() -> TestResult {
    let app = spawn_app().await?;
    let site = Site::build(app, 1, 2).await?;
    let (pass, _) = site.pass(json!({})).await?;
    let op = operator(&site).await?;
    let officer = site.app.create_user(&site.root, &site.org, "security_officer").await?;
    let other_org = site.app.create_org(&site.root, "elsewhere").await?;
    let stranger = site.app.create_user(&site.root, &other_org, "operator").await?;
    let mut a = Viewer::connect(&site.app, &site.org, &op.access, "").await?;
    let mut b = Viewer::connect(&site.app, &site.org, &officer.access, "").await?;
    let mut other = Viewer::connect(&site.app, &other_org, &stranger.access, "").await?;
    for viewer in [&mut a, &mut b, &mut other] {
        assert_eq!(viewer.json().await?["type"], "snapshot");
    }
    site.post(&format!("/passes/{pass}/revoke"), json!({"reason": "tailgating"})).await?;
    for viewer in [&mut a, &mut b] {
        let frame = viewer.until("pass.revoked").await?.pop().unwrap_or_default();
        assert_eq!(frame["pass_id"], pass.as_str());
        assert_eq!(frame["reason"], "tailgating");
    }
    assert!(other.next(Duration::from_millis(700)).await?.is_none(), "another organization hears nothing");
    Ok(())
}

#[actix_web::test]
async fn a_viewer_that_reconnects_with_since_loses_nothing() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 4).await?;
    let (_, pin) = site.pass(json!({})).await?;
    let op = operator(&site).await?;
    let mut viewer = Viewer::connect(&site.app, &site.org, &op.access, "").await?;
    let seq = viewer.json().await?["seq"].as_u64().unwrap_or(0);
    assert_eq!(site.decide(0, &pin, "in").await?, allow());
    let last_seen = viewer.json().await?["seq"].as_u64().unwrap_or(0);
    assert_eq!(last_seen, seq + 1);
    drop(viewer);

    // While it is away, decisions keep coming from four gates at once.
    let burst = futures_util::future::join_all(
        (0..40).map(|i| site.decide(i % 4, &pin, if i % 2 == 0 { "out" } else { "in" })),
    )
    .await;
    assert!(burst.iter().all(Result::is_ok));
    let mut viewer = Viewer::connect(&site.app, &site.org, &op.access, &format!("&since={last_seen}")).await?;
    let mut seqs = Vec::new();
    for _ in 0..40 {
        let frame = viewer.json().await?;
        assert_eq!(frame["type"], "decision", "a replay, not a snapshot: {frame}");
        seqs.push(frame["seq"].as_u64().unwrap_or(0));
    }
    let expected: Vec<u64> = (last_seen + 1..=last_seen + 40).collect();
    assert_eq!(seqs, expected, "every missed event, once, in order");
    // And it is live again.
    site.decide(0, &pin, "out").await?;
    assert_eq!(viewer.json().await?["seq"].as_u64(), Some(last_seen + 41));
    Ok(())
}

#[actix_web::test]
async fn a_since_older_than_what_is_retained_gets_a_reset_and_a_fresh_snapshot() -> TestResult {
    let app = spawn_app_with(|s| s.engine.retained_events = 4).await?;
    let site = Site::build(app, 1, 1).await?;
    let (_, pin) = site.pass(json!({})).await?;
    for i in 0..10 {
        site.decide(0, &pin, if i % 2 == 0 { "in" } else { "out" }).await?;
    }
    let op = operator(&site).await?;
    let mut viewer = Viewer::connect(&site.app, &site.org, &op.access, "&since=1").await?;
    assert_eq!(viewer.json().await?["type"], "reset");
    let snapshot = viewer.json().await?;
    assert_eq!(snapshot["type"], "snapshot");
    assert!(snapshot["seq"].as_u64().is_some_and(|s| s >= 10));
    Ok(())
}

#[actix_web::test]
async fn a_host_sees_only_their_own_visitors() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let host = site.app.create_user(&site.root, &site.org, "host").await?;
    let issued = site.app.call("POST", &site.path("/passes"), Some(&host.access), Some(json!({
        "holder_name": "Host's guest", "access_rule_id": site.rule, "type": "multi", "max_uses": 5,
        "valid_from": chrono::Utc::now().to_rfc3339(), "valid_to": (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339(),
        "credential": {"kind": "pin"}}))).await?;
    assert_eq!(issued.status, 201, "{}", issued.text());
    let own = json!({"kind": "pin", "value": issued.json()["credential"]["value"]});
    let (_, stranger) = site.pass(json!({"holder_name": "Someone else's guest"})).await?;
    let mut viewer = Viewer::connect(&site.app, &site.org, &host.access, "").await?;
    assert_eq!(viewer.json().await?["type"], "snapshot");
    site.decide(0, &stranger, "in").await?;
    site.decide(0, &own, "in").await?;
    let frame = viewer.json().await?;
    assert_eq!(frame["holder_name"], "Host's guest", "the other visitor's entry is not shown: {frame}");
    // A host does not see other passes through the API either.
    let listed = site.app.call("GET", &site.path("/passes"), Some(&host.access), None).await?.json();
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    Ok(())
}

#[actix_web::test]
async fn a_stuck_viewer_is_dropped_and_slows_no_one() -> TestResult {
    let app = spawn_app_with(|s| s.engine.retained_events = 16).await?;
    let site = Site::build(app, 1, 1).await?;
    let (_, pin) = site.pass(json!({})).await?;
    let op = operator(&site).await?;
    let mut stuck = Viewer::connect(&site.app, &site.org, &op.access, "").await?;
    let mut healthy = Viewer::connect(&site.app, &site.org, &op.access, "").await?;
    assert_eq!(stuck.json().await?["type"], "snapshot");
    assert_eq!(healthy.json().await?["type"], "snapshot");
    // Enough traffic to fill every socket buffer between the server and a viewer that reads nothing.
    let org = uuid::Uuid::try_parse(&site.org)?;
    let reason = "x".repeat(4096);
    let total = 6000u64;
    let mut healthy_seen = 0u64;
    for i in 0..total {
        site.app.engine.publish(
            org,
            portcullis_actors::events::Event::PassRevoked {
                pass_id: uuid::Uuid::nil(),
                revoked_by: None,
                reason: reason.clone(),
            },
        );
        if i % 8 == 7 {
            // The healthy viewer keeps up (chunks smaller than the 16 events the hub retains).
            while healthy_seen <= i {
                match healthy.next(Duration::from_secs(10)).await? {
                    Some(Received::Json(_)) => healthy_seen += 1,
                    other => {
                        return Err(
                            format!("healthy viewer lost: {}", matches!(other, Some(Received::Closed(_)))).into()
                        );
                    }
                }
            }
        }
    }
    // Gates still answer at once.
    assert_eq!(site.decide(0, &pin, "in").await?, allow());
    // The stuck one, once it reads, finds it was dropped with a reason it can act on.
    stuck.answer_pings = false;
    assert_eq!(stuck.close_reason(Duration::from_secs(60)).await?.as_deref(), Some("slow_consumer"));
    let metrics = site.app.get("/metrics").await?.text();
    assert!(
        metrics.contains("portcullis_stream_sessions_dropped_total{reason=\"slow_consumer\"}"),
        "dropped sessions are counted"
    );
    Ok(())
}

#[actix_web::test]
async fn signing_out_closes_the_stream() -> TestResult {
    let app = spawn_app_with(|s| s.stream.session_check_secs = 1).await?;
    let site = Site::build(app, 1, 1).await?;
    let op = operator(&site).await?;
    let mut viewer = Viewer::connect(&site.app, &site.org, &op.access, "").await?;
    assert_eq!(viewer.json().await?["type"], "snapshot");
    assert_eq!(site.app.call("POST", "/api/v1/auth/logout", Some(&op.access), None).await?.status, 204);
    assert_eq!(viewer.close_reason(Duration::from_secs(10)).await?.as_deref(), Some("token_revoked"));
    Ok(())
}

#[actix_web::test]
async fn a_silent_viewer_is_pinged_then_closed() -> TestResult {
    let app = spawn_app_with(|s| {
        s.stream.heartbeat_secs = 1;
        s.stream.client_timeout_secs = 2;
    })
    .await?;
    let site = Site::build(app, 1, 1).await?;
    let op = operator(&site).await?;
    let mut viewer = Viewer::connect(&site.app, &site.org, &op.access, "").await?;
    viewer.answer_pings = false;
    let mut pinged = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let reason = loop {
        let frame = tokio::time::timeout_at(deadline, viewer.framed.next()).await?;
        match frame {
            Some(Ok(Frame::Ping(_))) => pinged = true,
            Some(Ok(Frame::Close(reason))) => break reason.and_then(|r| r.description),
            None => break None,
            _ => {}
        }
    };
    assert!(pinged, "the server pings");
    assert_eq!(reason.as_deref(), Some("heartbeat_timeout"));
    // A viewer that answers stays.
    let mut lively = Viewer::connect(&site.app, &site.org, &op.access, "").await?;
    assert_eq!(lively.json().await?["type"], "snapshot");
    assert!(lively.next(Duration::from_secs(4)).await?.is_none(), "still open after two timeouts' worth");
    let _ = lively.framed.send(Message::Close(None)).await;
    let _ = Bytes::new();
    Ok(())
}

#[actix_web::test]
async fn streams_are_authorized_like_every_route() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let guest = site.app.create_user(&site.root, &site.org, "guest").await?;
    let other_org = site.app.create_org(&site.root, "elsewhere").await?;
    let stranger = site.app.create_user(&site.root, &other_org, "org_admin").await?;
    let url = |org: &str, token: &str| {
        format!("{}/api/v1/orgs/{org}/stream?access_token={token}", site.app.address.replace("http://", "ws://"))
    };
    let status = |result: Result<_, awc::error::WsClientError>| match result {
        Err(awc::error::WsClientError::InvalidResponseStatus(status)) => status.as_u16(),
        Ok(_) => 101,
        Err(_) => 0,
    };
    assert_eq!(status(awc::Client::new().ws(url(&site.org, "")).connect().await.map(|_| ())), 401);
    assert_eq!(status(awc::Client::new().ws(url(&site.org, &guest.access)).connect().await.map(|_| ())), 403);
    assert_eq!(status(awc::Client::new().ws(url(&site.org, &stranger.access)).connect().await.map(|_| ())), 404);
    // Header authentication works too, and an events:read key may watch.
    let (_, key) = site.app.create_key(&site.root, &site.org, &["events:read"], &[]).await?;
    let ws_url = format!("{}/api/v1/orgs/{}/stream", site.app.address.replace("http://", "ws://"), site.org);
    let (_, mut framed) = awc::Client::new().ws(ws_url).bearer_auth(&key).connect().await.map_err(|e| e.to_string())?;
    let first = framed.next().await.ok_or("no frame")??;
    assert!(
        matches!(first, Frame::Text(ref t) if t.starts_with(b"{") && String::from_utf8_lossy(t).contains("snapshot"))
    );
    Ok(())
}

#[actix_web::test]
async fn a_stream_ends_when_its_access_token_expires() -> TestResult {
    let app = spawn_app_with(|s| s.auth.access_token_ttl_secs = 2).await?;
    let site = Site::build(app, 1, 1).await?;
    let op = operator(&site).await?;
    let mut viewer = Viewer::connect(&site.app, &site.org, &op.access, "").await?;
    assert_eq!(viewer.json().await?["type"], "snapshot");
    assert_eq!(viewer.close_reason(Duration::from_secs(10)).await?.as_deref(), Some("token_expired"));
    let metrics = site.app.get("/metrics").await?.text();
    for series in ["portcullis_stream_sessions_open", "portcullis_stream_frames_total", "portcullis_pass_actors_active"]
    {
        assert!(metrics.contains(series), "{series} missing");
    }
    Ok(())
}

/// Security finding 4: a member disabled or downgraded, or an organization blocked, stops
/// receiving frames at once, not when the access token expires. The periodic check is set far
/// off, so only the change itself can close these streams in time.
#[actix_web::test]
async fn losing_access_ends_the_stream_at_once() -> TestResult {
    let app = spawn_app_with(|s| s.stream.session_check_secs = 600).await?;
    let site = Site::build(app, 1, 1).await?;
    for change in [json!({"disabled": true}), json!({"role": "guest"}), json!({"role": "host"})] {
        let member = operator(&site).await?;
        let mut viewer = Viewer::connect(&site.app, &site.org, &member.access, "").await?;
        assert_eq!(viewer.json().await?["type"], "snapshot");
        let path = site.path(&format!("/users/{}", member.user_id));
        let changed = site.app.call("PATCH", &path, Some(&site.root.access), Some(change.clone())).await?;
        assert_eq!(changed.status, 200, "{}", changed.text());
        let (_, pin) = site.pass(json!({"holder_name": "Not for them"})).await?;
        site.decide(0, &pin, "in").await?;
        let reason = viewer.close_reason(Duration::from_secs(3)).await;
        assert_eq!(reason?.as_deref(), Some("access_revoked"), "after {change}");
    }
    // Blocking the organization ends members' and keys' streams alike.
    let member = operator(&site).await?;
    let (_, key) = site.app.create_key(&site.root, &site.org, &["events:read"], &[]).await?;
    let mut viewers = vec![
        Viewer::connect(&site.app, &site.org, &member.access, "").await?,
        Viewer::connect(&site.app, &site.org, &key, "").await?,
    ];
    for viewer in &mut viewers {
        assert_eq!(viewer.json().await?["type"], "snapshot");
    }
    let blocked = site
        .app
        .call("PATCH", &site.path(""), Some(&site.root.access), Some(json!({"access_mode": "blocked"})))
        .await?;
    assert_eq!(blocked.status, 200, "{}", blocked.text());
    for viewer in &mut viewers {
        assert_eq!(viewer.close_reason(Duration::from_secs(3)).await?.as_deref(), Some("access_revoked"));
    }
    Ok(())
}

/// Changes another node makes (here: straight in the database) reach no stream as they are made:
/// the node's one periodic check for all open streams finds them, and the streams concerned end
/// with the reason they would have had; a stream nothing changed for goes on.
#[actix_web::test]
async fn access_taken_away_elsewhere_ends_the_streams_concerned_within_the_check() -> TestResult {
    let app = spawn_app_with(|s| s.stream.session_check_secs = 1).await?;
    let site = Site::build(app, 1, 1).await?;
    let (signed_out, demoted, bystander) = (operator(&site).await?, operator(&site).await?, operator(&site).await?);
    let (key_id, key) = site.app.create_key(&site.root, &site.org, &["events:read"], &[]).await?;
    let mut viewers = Vec::new();
    for token in [&signed_out.access, &key, &demoted.access, &bystander.access] {
        let mut viewer = Viewer::connect(&site.app, &site.org, token, "").await?;
        assert_eq!(viewer.json().await?["type"], "snapshot");
        viewers.push(viewer);
    }
    let db = site.app.db().await?;
    let uuid = |s: &str| uuid::Uuid::parse_str(s);
    db.execute("UPDATE sessions SET revoked_at = now() WHERE user_id = $1", &[&uuid(&signed_out.user_id)?]).await?;
    db.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", &[&uuid(&key_id)?]).await?;
    db.execute(
        "UPDATE memberships SET role = 'guest' WHERE user_id = $1 AND org_id = $2",
        &[&uuid(&demoted.user_id)?, &uuid(&site.org)?],
    )
    .await?;
    let mut bystander_viewer = viewers.pop().ok_or("no viewer")?;
    let expected = ["token_revoked", "token_revoked", "access_revoked"];
    for (viewer, reason) in viewers.iter_mut().zip(expected) {
        assert_eq!(viewer.close_reason(Duration::from_secs(5)).await?.as_deref(), Some(reason));
    }
    // The bystander still receives every decision.
    let (_, pin) = site.pass(json!({"holder_name": "Still watched"})).await?;
    site.decide(0, &pin, "in").await?;
    let frames = bystander_viewer.until("decision").await?;
    assert_eq!(frames.last().and_then(|f| f["holder_name"].as_str()), Some("Still watched"));
    // Blocking the organization elsewhere ends it too.
    db.execute("UPDATE organizations SET access_mode = 'blocked' WHERE id = $1", &[&uuid(&site.org)?]).await?;
    assert_eq!(bystander_viewer.close_reason(Duration::from_secs(5)).await?.as_deref(), Some("access_revoked"));
    Ok(())
}

/// Once its handshake is answered, a stream runs on a thread of its own, apart from the HTTP
/// workers, under `SCHED_IDLE` by default (`stream.scheduling`): it gives its core up to any other
/// thread that wants it. An engine in a process of its own has one such thread per core
/// (`stream.threads` 0) or as many as configured, and no other thread under that policy; with
/// `normal`, none. Either way its viewers get their snapshot and every decision, in order, and the
/// stream still ends when its viewer's access does.
#[actix_web::test]
async fn streams_run_on_threads_of_their_own_that_yield_to_everything_else() -> TestResult {
    use crate::engine_process::{Engine, http, idle_threads};
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let path = format!("/api/v1/gates/{}/decisions", site.gates[0]);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    for (scheduling, threads, idle_under) in [("idle", "0", cores), ("idle", "3", 3), ("normal", "0", 0)] {
        let env = [("PORTCULLIS__STREAM__SCHEDULING", scheduling), ("PORTCULLIS__STREAM__THREADS", threads)];
        let mut engine = Engine::serve_with(&site.app.dbname, &env)?;
        let port = engine.wait_for_port()?;
        let address = format!("http://127.0.0.1:{port}");
        let op = operator(&site).await?;
        let mut viewers = Vec::new();
        for _ in 0..4 {
            let mut viewer = Viewer::connect_at(&address, &site.org, &op.access, "").await?;
            assert_eq!(viewer.json().await?["type"], "snapshot", "{scheduling}");
            viewers.push(viewer);
        }
        for value in ["000000001", "000000002"] {
            let body = json!({"credential": {"kind": "pin", "value": value}, "direction": "in"});
            let (status, reply) = http(port, "POST", &path, Some(&site.device_key), Some(&body))?;
            assert_eq!(status, 200, "{reply}");
        }
        for viewer in &mut viewers {
            let frames = [viewer.json().await?, viewer.json().await?];
            let reasons: Vec<_> = frames.iter().map(|f| (f["type"].as_str(), f["reason"].as_str())).collect();
            let denied = (Some("decision"), Some("unknown_credential"));
            assert_eq!(reasons, [denied, denied], "{scheduling}");
            assert_eq!(frames[1]["seq"].as_u64(), frames[0]["seq"].as_u64().map(|s| s + 1), "in order");
        }
        assert_eq!(idle_threads(engine.pid())?, idle_under, "{scheduling}, {threads} threads");
        // Signing out ends every stream of the session, wherever it runs.
        let (status, reply) = http(port, "POST", "/api/v1/auth/logout", Some(&op.access), None)?;
        assert_eq!(status, 204, "{reply}");
        for viewer in &mut viewers {
            let reason = viewer.close_reason(Duration::from_secs(10)).await?;
            assert_eq!(reason.as_deref(), Some("token_revoked"), "{scheduling}");
        }
        engine.kill()?;
    }
    Ok(())
}

/// Under `SCHED_IDLE` a stream thread runs only while no other thread wants a core, but it is not
/// starved: on a machine kept busy by ordinary threads (here, one spinning per core and one more),
/// a stream thread that has not run for a tenth of a second is given the default scheduling for a
/// while (`portcullis_stream_threads_raised_total`), its viewer gets the decision, and once the
/// machine is quiet again every stream thread is back under `SCHED_IDLE`.
#[actix_web::test]
async fn a_stream_thread_kept_off_a_busy_machine_is_given_its_turn() -> TestResult {
    use crate::engine_process::{Engine, http, idle_threads};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let op = operator(&site).await?;
    let mut engine = Engine::serve_with(&site.app.dbname, &[("PORTCULLIS__STREAM__THREADS", "1")])?;
    let port = engine.wait_for_port()?;
    let mut viewer = Viewer::connect_at(&format!("http://127.0.0.1:{port}"), &site.org, &op.access, "").await?;
    assert_eq!(viewer.json().await?["type"], "snapshot");
    assert_eq!(idle_threads(engine.pid())?, 1);

    let busy = Arc::new(AtomicBool::new(true));
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let spinners: Vec<_> = (0..=cores)
        .map(|_| {
            let busy = busy.clone();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                while busy.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(20) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let path = format!("/api/v1/gates/{}/decisions", site.gates[0]);
    let body = json!({"credential": {"kind": "pin", "value": "000000003"}, "direction": "in"});
    let asked = http(port, "POST", &path, Some(&site.device_key), Some(&body));
    let frame = viewer.json().await;
    // The guard's counter, read while the machine is still busy.
    let raised = (|| -> TestResult<f64> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, metrics) = http(port, "GET", "/metrics", None, None)?;
            let count = metrics
                .lines()
                .find(|l| l.starts_with("portcullis_stream_threads_raised_total"))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            if count >= 1.0 || std::time::Instant::now() > deadline {
                return Ok(count);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })();
    busy.store(false, Ordering::Relaxed);
    for spinner in spinners {
        let _ = spinner.join();
    }
    assert_eq!(asked?.0, 200);
    assert_eq!(frame?["reason"], "unknown_credential");
    assert!(raised? >= 1.0, "the starved stream thread was given its turn");
    // Quiet again: back under SCHED_IDLE.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while idle_threads(engine.pid())? != 1 {
        assert!(std::time::Instant::now() < deadline, "the stream thread went back under SCHED_IDLE");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    engine.kill()?;
    Ok(())
}

/// A raw WebSocket client that completes the handshake and then never reads, with a small
/// receive buffer: what a hung dashboard or a hostile viewer looks like to the server.
/// (Async socket calls throughout: the engine's own tasks share this test's thread.)
async fn never_reading_viewer(app: &TestApp, org: &str, token: &str) -> TestResult<TcpStream> {
    let addr = app.address.trim_start_matches("http://").to_owned();
    let socket = TcpStream::connect(&addr).await?;
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBuf, &4096)?;
    let request = format!(
        "GET /api/v1/orgs/{org}/stream?access_token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut written = 0;
    while written < request.len() {
        socket.writable().await?;
        match socket.try_write(&request.as_bytes()[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Only the response head, a byte at a time, so nothing of the stream is consumed.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        socket.readable().await?;
        match socket.try_read(&mut byte) {
            Ok(0) => return Err("closed during the handshake".into()),
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!("no upgrade: {head}").into());
    }
    Ok(socket)
}

/// Publishes about `bytes` of events to the organization's viewers.
fn flood(app: &TestApp, org: &str, bytes: usize) -> TestResult {
    let org = uuid::Uuid::try_parse(org)?;
    let reason = "x".repeat(1000);
    for _ in 0..bytes / 1000 {
        let event = portcullis_actors::events::Event::PassRevoked {
            pass_id: uuid::Uuid::nil(),
            revoked_by: None,
            reason: reason.clone(),
        };
        app.engine.publish(org, event);
    }
    Ok(())
}

/// The client's and the server's ports of a connection, read while it is up (once the server has
/// reset it, the client's socket no longer knows its peer).
fn ends(client: &TcpStream) -> TestResult<(u16, u16)> {
    Ok((client.local_addr()?.port(), client.peer_addr()?.port()))
}

/// Whether the server still holds its end of a connection: a socket that some process has open
/// has an inode in /proc/net/tcp; one the server closed has none (or is gone).
fn server_holds((local, peer): (u16, u16)) -> TestResult<bool> {
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    let port = |field: &str| field.rsplit(':').next().and_then(|hex| u16::from_str_radix(hex, 16).ok());
    Ok(table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 9 && port(f[1]) == Some(peer) && port(f[2]) == Some(local) && f[9] != "0"
    }))
}

/// Waits until the server has let go of `client`'s connection; the seconds it took.
async fn until_released(ends: (u16, u16), within: Duration) -> TestResult<f64> {
    let started = tokio::time::Instant::now();
    while started.elapsed() < within {
        if !server_holds(ends)? {
            return Ok(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the server still holds the connection after {within:?}").into())
}

/// A site with a 2 s heartbeat timeout, an operator, and their never-reading viewer with
/// several megabytes of events queued for it (more than loopback's socket buffers hold).
async fn stuck_viewer() -> TestResult<(Site, crate::helpers::Login, TcpStream, (u16, u16))> {
    let app = spawn_app_with(|s| {
        s.stream.heartbeat_secs = 1;
        s.stream.client_timeout_secs = 2;
        s.engine.retained_events = 100_000;
    })
    .await?;
    let site = Site::build(app, 1, 1).await?;
    let op = operator(&site).await?;
    let socket = never_reading_viewer(&site.app, &site.org, &op.access).await?;
    let ends = ends(&socket)?;
    assert!(server_holds(ends)?, "the stream is open");
    flood(&site.app, &site.org, 8 << 20)?;
    Ok((site, op, socket, ends))
}

/// Security finding 8: a viewer that never reads (its socket buffer full) is not kept forever:
/// it is silent, so its session closes (`heartbeat_timeout`), and a socket that takes nothing
/// for the heartbeat timeout while frames wait is dropped, close frame or not.
#[actix_web::test]
async fn a_viewer_that_never_reads_is_cut_off_by_the_heartbeat_timeout() -> TestResult {
    let (site, op, _socket, ends) = stuck_viewer().await?;
    // The server closes its socket (what the kernel still holds for the peer is the kernel's).
    let took = until_released(ends, Duration::from_secs(6)).await?;
    assert!(took > 0.5, "not before the timeout: {took}");
    // A reading viewer meanwhile is unaffected.
    let mut lively = Viewer::connect(&site.app, &site.org, &op.access, "").await?;
    assert_eq!(lively.json().await?["type"], "snapshot");
    Ok(())
}

/// A viewer that keeps sending (unasked pongs) but never reads is cut off all the same: what it
/// says is read and heeded (it is not silent), but its socket takes nothing of what waits for it
/// for the heartbeat timeout.
#[actix_web::test]
async fn a_viewer_that_talks_but_never_reads_is_cut_off_too() -> TestResult {
    let (site, _, socket, ends) = stuck_viewer().await?;
    // A masked, empty pong frame every 300 ms for as long as the server lets it.
    let talker = async {
        for _ in 0..40 {
            if socket.try_write(&[0x8a, 0x80, 0, 0, 0, 0]).is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    // The bound is generous, for a loaded machine where pushing the flood into the socket takes
    // a while.
    let (_, released) = tokio::join!(talker, until_released(ends, Duration::from_secs(20)));
    released?;
    let metrics = site.app.get("/metrics").await?.text();
    assert!(metrics.contains("portcullis_stream_connections_shut_down_total"));
    Ok(())
}

/// A viewer that reads slower than events come (a burst while it looks away, or a long replay
/// after `since`) is served at its socket's pace: while `stream.max_queued_kib` waits for it,
/// the events wait in the hub's retained window, and it gets every one, whole and in order.
#[actix_web::test]
async fn a_slow_reader_is_served_at_its_pace_from_the_retained_window() -> TestResult {
    let app = spawn_app_with(|s| {
        s.stream.max_queued_kib = 16;
        s.engine.retained_events = 100_000;
    })
    .await?;
    let site = Site::build(app, 1, 1).await?;
    let op = operator(&site).await?;
    let mut viewer = Viewer::connect(&site.app, &site.org, &op.access, "").await?;
    let start = viewer.json().await?["seq"].as_u64().ok_or("snapshot without seq")?;
    // Far more than the socket buffers between the server and a viewer that reads nothing.
    let events = 16_000u64;
    flood(&site.app, &site.org, events as usize * 1000)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for seq in start + 1..=start + events / 2 {
        assert_eq!(viewer.json().await?["seq"].as_u64(), Some(seq));
    }
    drop(viewer);
    // Half of it again, as a replay.
    let since = start + events / 4;
    let mut resumed = Viewer::connect(&site.app, &site.org, &op.access, &format!("&since={since}")).await?;
    for seq in since + 1..=start + events {
        assert_eq!(resumed.json().await?["seq"].as_u64(), Some(seq));
    }
    Ok(())
}

/// A close sent in the same packet as the handshake is read (what came after the handshake is
/// the session's) and answered with the same code, and the connection ends.
#[actix_web::test]
async fn a_close_sent_with_the_handshake_is_answered_and_the_connection_ends() -> TestResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let op = operator(&site).await?;
    let addr = site.app.address.trim_start_matches("http://").to_owned();
    let mut socket = TcpStream::connect(&addr).await?;
    let mut request = format!(
        "GET /api/v1/orgs/{}/stream?access_token={} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        site.org, op.access
    )
    .into_bytes();
    // A masked close frame (mask 0), code 1000.
    request.extend_from_slice(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
    socket.write_all(&request).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await??;
    assert!(answer.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&answer));
    assert!(answer.ends_with(&[0x88, 0x02, 0x03, 0xe8]), "the close answered last, with its code");
    Ok(())
}

/// A WebSocket handshake anywhere else is answered like any request (and the connection ends);
/// a refused stream says why, with its code.
#[actix_web::test]
async fn a_handshake_off_the_stream_route_is_answered_like_any_request() -> TestResult {
    let app = spawn_app().await?;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let answer = |path: String| {
        let addr = addr.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut socket = TcpStream::connect(&addr).await?;
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            );
            socket.write_all(request.as_bytes()).await?;
            let mut answer = Vec::new();
            // To the end: the server closes the connection after its answer.
            tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await??;
            TestResult::Ok(String::from_utf8_lossy(&answer).into_owned())
        }
    };
    let health = answer("/health".into()).await?;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\r\n\r\n{"), "with its JSON body: {health}");
    let refused = answer(format!("/api/v1/orgs/{}/stream?access_token=nonsense", uuid::Uuid::new_v4())).await?;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(refused.contains("\"code\":\""), "a stable code: {refused}");
    Ok(())
}

/// Passes expire when their `valid_to` comes, from the engine's own schedule (the longest sleep
/// is set to a minute, so only the timer for the next expiry can do it in time); an extension
/// moves the expiry.
#[actix_web::test]
async fn a_pass_expires_when_its_time_comes_and_an_extension_moves_it() -> TestResult {
    let app = spawn_app_with(|s| s.engine.expiry_sweep_secs = 60).await?;
    let site = Site::build(app, 1, 1).await?;
    let op = operator(&site).await?;
    let mut viewer = Viewer::connect(&site.app, &site.org, &op.access, "").await?;
    assert_eq!(viewer.json().await?["type"], "snapshot");
    let now = chrono::Utc::now();
    let soon = (now + chrono::Duration::seconds(2)).to_rfc3339();
    let (expiring, _) = site.pass(json!({"valid_to": soon})).await?;
    let (extended, _) = site.pass(json!({"valid_to": soon})).await?;
    let later = json!({"valid_to": (now + chrono::Duration::hours(1)).to_rfc3339()});
    let path = site.path(&format!("/passes/{extended}"));
    assert_eq!(site.app.call("PATCH", &path, Some(&site.root.access), Some(later)).await?.status, 200);
    let frames = tokio::time::timeout(Duration::from_secs(8), viewer.until("pass.expired")).await??;
    let expired = frames.last().map(|f| f["pass_id"].clone()).unwrap_or_default();
    assert_eq!(expired, json!(expiring));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(site.get(&format!("/passes/{expiring}")).await?["status"], "expired");
    assert_eq!(site.get(&format!("/passes/{extended}")).await?["status"], "active");
    Ok(())
}

/// Mode and lockdown changes reach the dashboards from where they take effect (the OrgActor).
#[actix_web::test]
async fn gate_modes_and_lockdown_are_streamed_as_they_take_effect() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let op = operator(&site).await?;
    let mut viewer = Viewer::connect(&site.app, &site.org, &op.access, "").await?;
    assert_eq!(viewer.json().await?["type"], "snapshot");
    site.post(&format!("/gates/{}/mode", site.gates[0]), json!({"mode": "locked_down"})).await?;
    let mode = viewer.until("gate.mode").await?;
    assert_eq!(mode.last().map(|f| f["mode"].clone()), Some(json!("locked_down")));
    site.post("/lockdown", json!({"lockdown": true})).await?;
    let lockdown = viewer.until("org.lockdown").await?;
    assert_eq!(lockdown.last().map(|f| f["lockdown"].clone()), Some(json!(true)));
    Ok(())
}
