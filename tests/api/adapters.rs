//! The adapters' edges, end to end: a BAS-IP panel asking in its own dialect.

use serde_json::json;

use crate::helpers::{TestResult, spawn_app};
use crate::site::Site;

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

    // Journaled with its source, like any decision (a deny within moments of its answer).
    let db = site.app.db().await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let logged = loop {
        let rows = db
            .query(
                "SELECT decision, reason, pass_id::text FROM checkins WHERE source = 'bas-ip' ORDER BY decided_at",
                &[],
            )
            .await?;
        let logged: Vec<(String, String, Option<String>)> =
            rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        if logged.len() >= 3 || std::time::Instant::now() > deadline {
            break logged;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    };
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
