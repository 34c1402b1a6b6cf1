//! The security review's findings (issue 8), each as an attack that must fail.

use serde_json::json;

use crate::helpers::{TestResult, spawn_app};
use crate::site::{Site, allow};

/// Finding 1: a developer may not rotate (and so take over) or revoke a key stronger than
/// themselves; the key keeps working for its integration.
#[actix_web::test]
async fn a_developer_cannot_take_over_a_stronger_key_by_rotating_it() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let org = app.create_org(&root, "escalation").await?;
    let admin = app.create_user(&root, &org, "org_admin").await?;
    let developer = app.create_user(&root, &org, "developer").await?;
    let scopes = ["audit:read", "passes:write", "config:write", "events:read"];
    let (strong_id, strong) = app.create_key(&admin, &org, &scopes, &[]).await?;
    let keys = format!("/api/v1/orgs/{org}/api-keys");

    for action in ["rotate", "revoke"] {
        let reply = app.call("POST", &format!("{keys}/{strong_id}/{action}"), Some(&developer.access), None).await?;
        assert_eq!(
            (reply.status, reply.error_code().as_deref()),
            (403, Some("forbidden")),
            "{action}: {}",
            reply.text()
        );
        assert!(reply.json().get("key").is_none(), "no secret in a refusal");
    }
    // The integration using the key is untouched.
    let audit = app.call("GET", &format!("/api/v1/orgs/{org}/audit"), Some(&strong), None).await?;
    assert_eq!(audit.status, 200, "{}", audit.text());

    // The same developer acts on a key within their own permissions, and the admin on the strong one.
    let (weak_id, _) = app.create_key(&developer, &org, &["org:read", "passes:read"], &[]).await?;
    let rotated = app.call("POST", &format!("{keys}/{weak_id}/rotate"), Some(&developer.access), None).await?;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let rotated = app.call("POST", &format!("{keys}/{strong_id}/rotate"), Some(&admin.access), None).await?;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    assert_eq!(app.call("GET", &format!("/api/v1/orgs/{org}/audit"), Some(&strong), None).await?.status, 401);
    Ok(())
}

/// Finding 2: issuing a pass tells nobody whether another pass holds a credential.
#[actix_web::test]
async fn issuing_a_pass_is_no_oracle_for_live_credentials() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let host = site.app.create_user(&site.root, &site.org, "host").await?;
    let now = chrono::Utc::now();
    let body = |credential: serde_json::Value| {
        json!({
            "holder_name": "Guest", "access_rule_id": site.rule, "type": "multi", "max_uses": 5,
            "valid_from": now.to_rfc3339(), "valid_to": (now + chrono::Duration::hours(2)).to_rfc3339(),
            "credential": credential,
        })
    };
    let passes = site.path("/passes");
    let issue = |token: String, credential: serde_json::Value| {
        let (app, passes, body) = (&site.app, passes.clone(), body(credential));
        async move { app.call("POST", &passes, Some(&token), Some(body)).await }
    };

    // Someone else's guest holds a PIN and a card.
    let (_, their_pin) = site.pass(json!({})).await?;
    let their_card = json!({"kind": "card", "format": "h10301", "facility_code": 12, "card_number": 3456});
    assert_eq!(issue(site.root.access.clone(), their_card.clone()).await?.status, 201);

    // A host cannot choose a PIN (so cannot probe one), and gets a fresh one that works.
    let chosen = issue(host.access.clone(), json!({"kind": "pin", "value": their_pin["value"]})).await?;
    assert_eq!(chosen.status, 422, "{}", chosen.text());
    assert!(chosen.json()["error"]["details"]["fields"]["credential.value"].is_string(), "{}", chosen.text());
    let mut pins = Vec::new();
    for _ in 0..3 {
        let issued = issue(host.access.clone(), json!({"kind": "pin"})).await?;
        assert_eq!(issued.status, 201, "{}", issued.text());
        assert_eq!(issued.header("cache-control").as_deref(), Some("no-store"));
        let pin = issued.json()["credential"]["value"].as_str().unwrap_or_default().to_owned();
        assert!(pin.len() >= 6 && pin.bytes().all(|b| b.is_ascii_digit()), "{pin}");
        assert_eq!(site.decide(0, &json!({"kind": "pin", "value": pin}), "in").await?, allow());
        let again = site
            .app
            .call("GET", &format!("{passes}/{}", issued.json()["id"].as_str().unwrap_or("")), Some(&host.access), None)
            .await?;
        assert!(!again.text().contains(&pin), "the PIN is shown only once");
        pins.push(pin);
    }
    pins.sort();
    pins.dedup();
    assert_eq!(pins.len(), 3);

    // A host may not assign cards at all: whatever the number, the answer is the same refusal.
    for number in [3456, 3457] {
        let card = json!({"kind": "card", "format": "h10301", "facility_code": 12, "card_number": number});
        let reply = issue(host.access.clone(), card).await?;
        assert_eq!((reply.status, reply.error_code().as_deref()), (403, Some("forbidden")), "{}", reply.text());
    }
    // Reception, who can read every pass anyway, is told of a clash.
    let operator = site.app.create_user(&site.root, &site.org, "operator").await?;
    let clash = issue(operator.access.clone(), their_card).await?;
    assert_eq!((clash.status, clash.error_code().as_deref()), (409, Some("already_exists")));
    Ok(())
}

/// Finding 3: reading a pass does not yield its working QR code.
#[actix_web::test]
async fn reading_a_pass_does_not_yield_its_qr_code() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let (pass, _) = site.pass(json!({"credential": {"kind": "qr"}})).await?;
    let qr = site.path(&format!("/passes/{pass}/qr"));
    let developer = site.app.create_user(&site.root, &site.org, "developer").await?;
    let (_, reader) = site.app.create_key(&site.root, &site.org, &["passes:read"], &[]).await?;
    let (_, writer) = site.app.create_key(&site.root, &site.org, &["passes:write"], &[]).await?;
    for token in [&developer.access, &reader] {
        // They may read the pass itself…
        let read = site.app.call("GET", &site.path(&format!("/passes/{pass}")), Some(token), None).await?;
        assert_eq!(read.status, 200, "{}", read.text());
        // …but not show its live code.
        let reply = site.app.call("GET", &qr, Some(token), None).await?;
        assert_eq!((reply.status, reply.error_code().as_deref()), (403, Some("forbidden")), "{}", reply.text());
        assert!(!reply.text().contains("PCL1"));
    }
    let shown = site.app.call("GET", &qr, Some(&writer), None).await?;
    assert_eq!(shown.status, 200, "{}", shown.text());
    assert!(shown.json()["payload"].as_str().is_some_and(|p| p.starts_with("PCL1.")));
    Ok(())
}

/// A login from a chosen loopback address (127.0.0.0/8 is all ours), so tests can play an
/// attacker and the account's owner on different addresses.
async fn login_from(
    app: &crate::helpers::TestApp,
    from: [u8; 4],
    email: &str,
    password: &str,
) -> TestResult<crate::helpers::Reply> {
    let client = awc::Client::builder().local_address(std::net::IpAddr::from(from)).finish();
    let body = serde_json::to_vec(&json!({"email": email, "password": password}))?;
    let request = client.post(app.url("/api/v1/auth/login")).insert_header(("content-type", "application/json"));
    app.send(request, Some(&body)).await
}

/// Finding 5: an attacker guessing passwords slows themselves, not the account's owner.
#[actix_web::test]
async fn guessing_passwords_does_not_lock_the_owner_out() -> TestResult {
    let app = crate::helpers::spawn_app_with(|s| {
        s.auth.login_attempts_per_account = std::num::NonZeroU32::MIN.saturating_add(1); // 2 free failures
    })
    .await?;
    let root = app.platform_admin().await?;
    let org = app.create_org(&root, "lockout").await?;
    let owner = app.create_user(&root, &org, "operator").await?; // signed in from 127.0.0.1
    let shouted = format!("  {}  ", owner.email.to_uppercase());

    // One attacker address: two wrong guesses, then it waits, with a growing wait.
    assert_eq!(login_from(&app, [127, 0, 0, 2], &owner.email, "wrong password 1").await?.status, 401);
    assert_eq!(login_from(&app, [127, 0, 0, 2], &shouted, "wrong password 2").await?.status, 401);
    let limited = login_from(&app, [127, 0, 0, 2], &owner.email, crate::helpers::PASSWORD).await?;
    assert_eq!((limited.status, limited.error_code().as_deref()), (429, Some("rate_limited")), "{}", limited.text());
    let wait: u64 = limited.header("retry-after").and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!((1..=2).contains(&wait), "the first back-off is short: {wait}");

    // Many attacker addresses: the account backs off for addresses it never signed in from.
    for last in 3..=7 {
        for guess in 0..2 {
            let reply = login_from(&app, [127, 0, 0, last], &owner.email, &format!("guess {guess}")).await?;
            assert!(matches!(reply.status, 401 | 429), "{}", reply.text());
        }
    }
    let stranger = login_from(&app, [127, 0, 0, 9], &owner.email, crate::helpers::PASSWORD).await?;
    assert_eq!(stranger.status, 429, "a new address waits while the account is under attack");
    assert!(stranger.header("retry-after").and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s <= 60), "no wall");

    // The owner, from the address they always use, gets in.
    let back = login_from(&app, [127, 0, 0, 1], &owner.email, crate::helpers::PASSWORD).await?;
    assert_eq!(back.status, 200, "{}", back.text());
    Ok(())
}

/// Finding 6: a refresh token forged from a session id (readable in any access token) does not
/// end that session; only the replay of a really spent token does.
#[actix_web::test]
async fn a_forged_refresh_token_does_not_log_the_victim_out() -> TestResult {
    let app = spawn_app().await?;
    let victim = app.platform_admin().await?;
    let session = victim.refresh.split('_').nth(1).unwrap_or_default().to_owned();
    assert_eq!(session.len(), 32, "{}", victim.refresh);
    let refresh = |token: String| {
        let app = &app;
        async move { app.call("POST", "/api/v1/auth/refresh", None, Some(json!({"refresh_token": token}))).await }
    };
    for forged in [format!("pcr_{session}_anything"), format!("pcr_{session}_{}", "A".repeat(43))] {
        let reply = refresh(forged).await?;
        assert_eq!((reply.status, reply.error_code().as_deref()), (401, Some("invalid_token")));
    }
    // The victim's session is alive: their token works and refreshes.
    assert_eq!(app.call("GET", "/api/v1/me", Some(&victim.access), None).await?.status, 200);
    let renewed = refresh(victim.refresh.clone()).await?;
    assert_eq!(renewed.status, 200, "{}", renewed.text());
    let audit =
        app.db().await?.query("SELECT 1 FROM audit_log WHERE action = 'auth.refresh_reuse_detected'", &[]).await?;
    assert!(audit.is_empty(), "a forgery is not a reuse");

    // A replay of the token just spent is a reuse: the session ends.
    assert_eq!(refresh(victim.refresh.clone()).await?.status, 401);
    let new_access = renewed.json()["access_token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(app.call("GET", "/api/v1/me", Some(&new_access), None).await?.status, 401);
    Ok(())
}

/// Finding 9: the smaller holes.
#[actix_web::test]
async fn another_organizations_gate_unknown_headers_and_caching() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    // Another organization's device key learns nothing of this gate's existence: the same 404 as
    // a gate that does not exist.
    let (_, pin) = site.pass(json!({})).await?;
    let body = json!({"credential": pin});
    let stranger_org = site.app.create_org(&site.root, "stranger").await?;
    let stranger_zone = site
        .app
        .call(
            "POST",
            &format!("/api/v1/orgs/{stranger_org}/zones"),
            Some(&site.root.access),
            Some(json!({"name": "Z"})),
        )
        .await?;
    let zone = stranger_zone.json()["id"].as_str().unwrap_or_default().to_owned();
    let gate = site
        .app
        .call(
            "POST",
            &format!("/api/v1/orgs/{stranger_org}/gates"),
            Some(&site.root.access),
            Some(json!({"name": "G", "zone_id": zone, "direction": "both"})),
        )
        .await?;
    let stranger_gate = gate.json()["id"].as_str().unwrap_or_default().to_owned();
    let (_, stranger_key) = site.app.create_key(&site.root, &stranger_org, &["gate:decide"], &[&stranger_gate]).await?;
    let foreign = site.decide_raw(&site.gates[0], &stranger_key, body.clone()).await?;
    assert_eq!((foreign.status, foreign.error_code().as_deref()), (404, Some("not_found")), "{}", foreign.text());
    let random = site.decide_raw(&uuid::Uuid::new_v4().to_string(), &stranger_key, body).await?;
    assert_eq!(
        foreign.json(),
        json!({"error": {"code": "not_found", "message": random.json()["error"]["message"], "details": {}}})
    );

    // Every response says nosniff; the export is never cached; the dashboard talks only to its origin.
    for path in ["/health", "/api/v1/nowhere"] {
        assert_eq!(site.app.get(path).await?.header("x-content-type-options").as_deref(), Some("nosniff"), "{path}");
    }
    let export = site.app.call("GET", &site.path("/export"), Some(&site.root.access), None).await?;
    assert_eq!(export.status, 200);
    assert_eq!(export.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(export.header("x-content-type-options").as_deref(), Some("nosniff"));
    let csp = site.app.get("/").await?.header("content-security-policy").unwrap_or_default();
    let connect = csp.split(';').map(str::trim).find(|d| d.starts_with("connect-src")).unwrap_or_default();
    assert_eq!(connect, "connect-src 'self'", "{csp}");
    Ok(())
}
