//! Controllers that decide by themselves (UHPPOTE), end to end: a virtual UT0311 on a UDP socket
//! whose card table the engine owns and keeps in step with the passes allowed at its doors, and
//! whose swipes come back to the engine's listener and are journaled.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use portcullis_adapters::uhppote::{Card, Request};
use portcullis_adapters::uhppote_sim::VirtualController;
use serde_json::{Value, json};

use crate::helpers::{TestResult, spawn_app};
use crate::site::Site;

const SERIAL: u32 = 423_187_757;

/// Waits up to `secs` for `check` to hold, polling every 20 ms; how long it took, if it did.
async fn within<F, Fut>(secs: u64, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if check().await {
            return Some(start.elapsed());
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The check-ins from the controllers (decision, reason, pass), oldest first.
async fn swipes(site: &Site) -> TestResult<Vec<(String, String, Option<String>)>> {
    let rows = site
        .app
        .db()
        .await?
        .query("SELECT decision, reason, pass_id::text FROM checkins WHERE source = 'uhppote' ORDER BY decided_at", &[])
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

fn card(facility: u64, number: u64) -> Value {
    json!({"kind": "card", "format": "h10301", "facility_code": facility, "card_number": number})
}

async fn status(site: &Site, id: &str) -> TestResult<Value> {
    let reply = site.app.call("GET", &site.path(&format!("/controllers/{id}")), Some(&site.root.access), None).await?;
    Ok(reply.json()["status"].clone())
}

#[actix_web::test]
async fn a_controller_holds_the_cards_allowed_at_its_doors_and_reports_its_swipes() -> TestResult {
    let site = Site::build(spawn_app().await?, 2, 1).await?;
    let (controller, serve) = VirtualController::start(SERIAL, "127.0.0.1:0".parse()?).await?;
    actix_web::rt::spawn(serve);
    // A card someone left in the controller: the engine owns the table, so it goes.
    let stray = Card { number: 777, from: Utc::now().date_naive(), to: Utc::now().date_naive(), doors: [true; 4] };
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    socket.send_to(&Request::PutCard(stray).encode(SERIAL), controller.addr).await?;
    assert!(within(5, || async { controller.cards().await.contains_key(&777) }).await.is_some());

    // A pass issued before the controller is bound; one for zone 1 only.
    let (alice, _) = site.pass(json!({"holder_name": "Alice", "credential": card(123, 4567)})).await?;
    let zone1 = site.rule_for(&site.zones[1..], json!({})).await?;
    let (_, _) = site.pass(json!({"access_rule_id": zone1, "credential": card(123, 4569)})).await?;

    let id = uuid::Uuid::new_v4().to_string();
    let path = site.path(&format!("/controllers/{id}"));
    let body = json!({
        "protocol": "uhppote",
        "endpoint": format!("udp://{}", controller.addr),
        "serial": SERIAL,
        "gate_doors": [{"gate_id": site.gates[0], "door": 1}, {"gate_id": site.gates[1], "door": 2}],
    });
    let reply = site.app.call("PUT", &path, Some(&site.root.access), Some(body.clone())).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["serial"], SERIAL);
    assert_eq!(reply.json()["gate_doors"][1], json!({"gate_id": site.gates[1], "door": 2}));

    // Emptied, then given both cards: Alice's opens doors 1 and 2, the zone-1 pass door 2 only.
    let synced = within(10, || async {
        let cards = controller.cards().await;
        cards.len() == 2 && cards.get(&12_304_567).is_some_and(|c| c.doors == [true, true, false, false])
    })
    .await;
    assert!(synced.is_some(), "cards: {:?}", controller.cards().await);
    assert_eq!(controller.cards().await.get(&12_304_569).map(|c| c.doors), Some([false, true, false, false]));
    let listener: Option<SocketAddr> = controller.listener().await;
    assert!(listener.is_some(), "the engine set the controller's event listener");
    let online = within(10, || async {
        status(&site, &id).await.is_ok_and(|s| s["online"] == true && s["pending"] == 0 && s["cards"] == 2)
    })
    .await;
    assert!(online.is_some(), "{}", status(&site, &id).await?);
    assert!(status(&site, &id).await?["last_sync"].is_string());

    // A pass issued now reaches the controller at once.
    let (bob, _) = site.pass(json!({"holder_name": "Bob", "credential": card(123, 4568)})).await?;
    assert!(within(5, || async { controller.cards().await.contains_key(&12_304_568) }).await.is_some());

    // Swipes come back to the engine: journaled with the controller's verdict.
    let now = Utc::now().naive_utc();
    assert!(controller.swipe(12_304_567, 1, now).await.granted);
    assert!(!controller.swipe(99_999, 1, now).await.granted);
    let logged = within(10, || async { swipes(&site).await.is_ok_and(|s| s.len() == 2) }).await;
    assert!(logged.is_some(), "{:?}", swipes(&site).await?);
    assert_eq!(
        swipes(&site).await?,
        [
            ("allow".to_owned(), "allowed".to_owned(), Some(alice.clone())),
            ("deny".to_owned(), "unknown_credential".to_owned(), None),
        ]
    );

    // A revocation is confirmed by the controller within moments of the revoke returning.
    let revoke = site.path(&format!("/passes/{alice}/revoke"));
    let reply = site.app.call("POST", &revoke, Some(&site.root.access), Some(json!({"reason": "left early"}))).await?;
    assert_eq!(reply.status, 200);
    let gone = within(10, || async { !controller.cards().await.contains_key(&12_304_567) }).await;
    eprintln!("revocation confirmed by the controller {gone:?} after the revoke returned");
    assert!(gone.is_some(), "the revoked card is still in the controller");
    // Its swipe is refused by the controller now, and the engine says why.
    assert!(!controller.swipe(12_304_567, 1, Utc::now().naive_utc()).await.granted);
    let logged = within(10, || async { swipes(&site).await.is_ok_and(|s| s.len() == 3) }).await;
    assert!(logged.is_some());
    assert_eq!(swipes(&site).await?.last().map(|s| s.1.clone()).as_deref(), Some("pass_revoked"));
    // A controller whose table is behind (the card put back by hand) opens for it: the entry is
    // journaled as what happened, with the engine's reason, and raises an alert.
    let url = format!(
        "{}{}?access_token={}",
        site.app.address.replace("http://", "ws://"),
        site.path("/stream"),
        site.root.access
    );
    let (_, mut stream) = awc::Client::new().ws(url).connect().await.map_err(|e| format!("stream: {e}"))?;
    socket.send_to(&Request::PutCard(Card { number: 12_304_567, ..stray }).encode(SERIAL), controller.addr).await?;
    assert!(within(5, || async { controller.cards().await.contains_key(&12_304_567) }).await.is_some());
    assert!(controller.swipe(12_304_567, 1, Utc::now().naive_utc()).await.granted);
    let logged = within(10, || async { swipes(&site).await.is_ok_and(|s| s.len() == 4) }).await;
    assert!(logged.is_some());
    assert_eq!(
        swipes(&site).await?.last(),
        Some(&("allow".to_owned(), "pass_revoked".to_owned(), Some(alice.clone())))
    );
    let alert = actix_web::rt::time::timeout(Duration::from_secs(10), async {
        use futures_util::StreamExt as _;
        while let Some(Ok(frame)) = stream.next().await {
            if let awc::ws::Frame::Text(text) = frame
                && let Ok(event) = serde_json::from_slice::<Value>(&text)
                && event["type"] == "alert"
                && event["alert"] == "controller_out_of_sync"
            {
                return Some(event);
            }
        }
        None
    })
    .await;
    let alert = alert.ok().flatten().ok_or("no controller_out_of_sync alert on the stream")?;
    assert_eq!(alert["pass_id"], json!(alice));

    // A controller off the network is offline in its status; a change made meanwhile is pending,
    // and reaches it when it is back.
    controller.set_online(false).await;
    let offline = within(15, || async { status(&site, &id).await.is_ok_and(|s| s["online"] == false) }).await;
    assert!(offline.is_some(), "{}", status(&site, &id).await?);
    let suspend = site.path(&format!("/passes/{bob}/suspend"));
    assert_eq!(site.app.call("POST", &suspend, Some(&site.root.access), None).await?.status, 200);
    let pending = within(15, || async { status(&site, &id).await.is_ok_and(|s| s["pending"] == 1) }).await;
    assert!(pending.is_some(), "{}", status(&site, &id).await?);
    assert!(controller.cards().await.contains_key(&12_304_568), "an offline controller was changed");
    controller.set_online(true).await;
    let caught_up = within(20, || async { !controller.cards().await.contains_key(&12_304_568) }).await;
    assert!(caught_up.is_some(), "the suspended pass's card is still in the controller");
    let clean = within(10, || async {
        status(&site, &id).await.is_ok_and(|s| s["online"] == true && s["pending"] == 0 && s["cards"] == 1)
    })
    .await;
    assert!(clean.is_some(), "{}", status(&site, &id).await?);

    // Unbinding empties it: it grants none of our passes any more.
    let reply = site.app.call("DELETE", &path, Some(&site.root.access), None).await?;
    assert_eq!(reply.status, 204);
    assert!(controller.cards().await.is_empty(), "{:?}", controller.cards().await);
    let reply = site.app.call("GET", &path, Some(&site.root.access), None).await?;
    assert_eq!(reply.status, 404);
    Ok(())
}

#[actix_web::test]
async fn a_table_changed_behind_the_engines_back_is_emptied_and_filled_again() -> TestResult {
    let app = crate::helpers::spawn_app_with(|s| s.controllers.resync_secs = 1).await?;
    let site = Site::build(app, 1, 1).await?;
    site.pass(json!({"credential": card(5, 55)})).await?;
    let (controller, serve) = VirtualController::start(SERIAL, "127.0.0.1:0".parse()?).await?;
    actix_web::rt::spawn(serve);
    let body = json!({
        "protocol": "uhppote", "endpoint": format!("udp://{}", controller.addr), "serial": SERIAL,
        "gate_doors": [{"gate_id": site.gates[0], "door": 1}],
    });
    let path = site.path(&format!("/controllers/{}", uuid::Uuid::new_v4()));
    assert_eq!(site.app.call("PUT", &path, Some(&site.root.access), Some(body)).await?.status, 200);
    assert!(within(10, || async { controller.cards().await.contains_key(&500_055) }).await.is_some());

    // Someone adds a card with the vendor's tool.
    let today = Utc::now().date_naive();
    let stray = Card { number: 888, from: today, to: today, doors: [true; 4] };
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    socket.send_to(&Request::PutCard(stray).encode(SERIAL), controller.addr).await?;
    let reowned = within(15, || async {
        let cards = controller.cards().await;
        !cards.contains_key(&888) && cards.contains_key(&500_055)
    })
    .await;
    assert!(reowned.is_some(), "{:?}", controller.cards().await);
    Ok(())
}

#[actix_web::test]
async fn a_wrong_controller_binding_is_a_422_naming_the_field() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let path = site.path(&format!("/controllers/{}", uuid::Uuid::new_v4()));
    let good = json!({
        "protocol": "uhppote", "endpoint": "udp://127.0.0.1:60000", "serial": 1,
        "gate_doors": [{"gate_id": site.gates[0], "door": 1}],
    });
    let cases = [
        ("protocol", json!({"protocol": "zkteco"})),
        ("endpoint", json!({"endpoint": "tcp://127.0.0.1:60000"})),
        ("serial", json!({"serial": 0})),
        ("serial", json!({"serial": 5_000_000_000_u64})),
        ("gate_doors", json!({"gate_doors": []})),
        ("gate_doors[0].door", json!({"gate_doors": [{"gate_id": site.gates[0], "door": 5}]})),
        (
            "gate_doors[1].door",
            json!({"gate_doors": [{"gate_id": site.gates[0], "door": 1}, {"gate_id": site.gates[0], "door": 1}]}),
        ),
        ("gate_doors", json!({"gate_doors": [{"gate_id": uuid::Uuid::new_v4(), "door": 1}]})),
    ];
    for (field, change) in cases {
        let mut body = good.clone();
        if let (Some(body), Some(change)) = (body.as_object_mut(), change.as_object()) {
            body.extend(change.clone());
        }
        let reply = site.app.call("PUT", &path, Some(&site.root.access), Some(body)).await?;
        assert_eq!(reply.status, 422, "{field}: {}", reply.text());
        assert!(reply.json()["error"]["details"]["fields"][field].is_string(), "{field}: {}", reply.text());
    }
    // An unreachable controller is a status, not an error.
    let reply = site.app.call("PUT", &path, Some(&site.root.access), Some(good)).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["status"]["online"], false);
    Ok(())
}

/// A virtual controller on a thread of its own (the engines under test are other processes, and
/// the test's own thread blocks on their HTTP).
fn controller_on_a_thread() -> TestResult<VirtualController> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async move {
            let Ok(addr) = "127.0.0.1:0".parse() else { return };
            match VirtualController::start(SERIAL, addr).await {
                Ok((controller, serve)) => {
                    let _ = tx.send(controller);
                    serve.await;
                }
                Err(err) => eprintln!("virtual controller: {err}"),
            }
        });
    });
    Ok(rx.recv_timeout(Duration::from_secs(10))?)
}

#[actix_web::test]
async fn a_revocation_made_while_the_controller_is_away_reaches_it_after_an_engine_kill_9() -> TestResult {
    use crate::engine_process::{Engine, http};
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let (pass, _) = site.pass(json!({"credential": card(12, 345)})).await?;
    let controller = controller_on_a_thread()?;
    let token = site.root.access.clone();

    let mut engine = Engine::serve(&site.app.dbname)?;
    let port = engine.wait_for_port()?;
    let body = json!({
        "protocol": "uhppote", "endpoint": format!("udp://{}", controller.addr), "serial": SERIAL,
        "gate_doors": [{"gate_id": site.gates[0], "door": 1}],
    });
    let path = site.path(&format!("/controllers/{}", uuid::Uuid::new_v4()));
    let (status, reply) = http(port, "PUT", &path, Some(&token), Some(&body))?;
    assert_eq!(status, 200, "{reply}");
    let held = within(20, || async { controller.cards().await.contains_key(&1_200_345) }).await;
    assert!(held.is_some(), "{}", engine.output());

    // The controller goes away; the pass is revoked; the engine is killed before it is back.
    controller.set_online(false).await;
    let revoke = site.path(&format!("/passes/{pass}/revoke"));
    let (status, reply) = http(port, "POST", &revoke, Some(&token), Some(&json!({"reason": "badge lost"})))?;
    assert_eq!(status, 200, "{reply}");
    engine.sigkill()?;
    assert!(controller.cards().await.contains_key(&1_200_345));

    // Another engine, and the controller back: the revocation reaches it.
    let mut engine = Engine::serve(&site.app.dbname)?;
    engine.wait_for_port()?;
    controller.set_online(true).await;
    let gone = within(30, || async { !controller.cards().await.contains_key(&1_200_345) }).await;
    assert!(gone.is_some(), "the revoked card survived the restart:\n{}", engine.output());
    engine.kill()?;
    Ok(())
}
