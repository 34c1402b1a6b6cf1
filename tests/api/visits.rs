//! The visitor journey through the API: a host invites, the invitation mail carries a single-use
//! link, the guest page's QR code is refused at the gates until reception checks the visitor in,
//! check-out ends it everywhere; the deny list holds a visit for security; hosts see only their
//! own; personal data is sealed at rest; time closes what it ends.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};

use crate::helpers::{Login, TestApp, TestResult, spawn_app, spawn_app_with};
use crate::site::{Site, allow, deny};

/// The `.eml` files the engine wrote (no SMTP configured: its mail sink is `<data_dir>/mail`),
/// decoded enough to read (quoted-printable soft breaks and `=3D`).
fn mails(app: &TestApp) -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("apps").join(&app.dbname).join("mail");
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|m| m.replace("=\r\n", "").replace("=3D", "="))
        .collect()
}

/// Waits for a mail to `address` and returns it.
async fn mail_to(app: &TestApp, address: &str) -> TestResult<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(mail) = mails(app).into_iter().find(|m| m.contains(address)) {
            return Ok(mail);
        }
        if Instant::now() > deadline {
            return Err(format!("no mail to {address} within 20 s").into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The single-use link's token in an invitation.
fn link_token(mail: &str) -> Option<String> {
    let start = mail.find("/guest#link=")? + "/guest#link=".len();
    Some(mail[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect())
}

struct Desk {
    site: Site,
    host: Login,
    reception: Login,
    security: Login,
}

impl Desk {
    async fn new(app: TestApp) -> TestResult<Desk> {
        let site = Site::build(app, 1, 2).await?;
        let reply = site
            .app
            .call(
                "PATCH",
                &site.path(""),
                Some(&site.root.access),
                Some(json!({"visitor_rule_id": site.rule, "address": "1 Main St", "guest_instructions": "Ask at desk B"})),
            )
            .await?;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let host = site.app.create_user(&site.root, &site.org, "host").await?;
        let reception = site.app.create_user(&site.root, &site.org, "operator").await?;
        let security = site.app.create_user(&site.root, &site.org, "security_officer").await?;
        Ok(Desk { site, host, reception, security })
    }

    async fn call(
        &self,
        who: &Login,
        method: &str,
        rest: &str,
        body: Option<Value>,
    ) -> TestResult<crate::helpers::Reply> {
        self.site.app.call(method, &self.site.path(rest), Some(&who.access), body).await
    }

    /// The host invites one new visitor to a meeting now.
    async fn invite(&self, name: &str, email: &str) -> TestResult<Value> {
        let now = Utc::now();
        let body = json!({
            "title": "Design review", "room": "4.12",
            "starts_at": (now - chrono::Duration::minutes(5)).to_rfc3339(),
            "ends_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
            "visitors": [{"name": name, "email": email, "company": "Analytical Engines"}],
        });
        let reply = self.call(&self.host, "POST", "/appointments", Some(body)).await?;
        assert_eq!(reply.status, 201, "{}", reply.text());
        Ok(reply.json())
    }
}

async fn guest(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> TestResult<crate::helpers::Reply> {
    app.call(method, &format!("/api/v1/guest{path}"), token, body).await
}

#[actix_web::test]
async fn the_journey_from_invitation_to_check_out_opens_the_gates_only_between_check_in_and_check_out() -> TestResult {
    let desk = Desk::new(spawn_app().await?).await?;
    let app = &desk.site.app;
    let appointment = desk.invite("Ada Lovelace", "ada@example.test").await?;
    let visit = appointment["visits"][0].clone();
    assert_eq!(visit["status"], "invited", "{appointment}");
    assert_eq!(visit["visitor_name"], "Ada Lovelace");
    assert_eq!(visit["host_id"].as_str(), Some(desk.host.user_id.as_str()));
    let visit_id = visit["id"].as_str().unwrap_or_default().to_owned();

    // The invitation, mailed to the visitor, holds the link; the link works once.
    let mail = mail_to(app, "ada@example.test").await?;
    assert!(mail.contains("Design review") && mail.contains("4.12") && mail.contains("1 Main St"), "{mail}");
    let link = link_token(&mail).ok_or("no link in the invitation")?;
    let session = guest(app, "POST", "/session", None, Some(json!({"link": link}))).await?;
    assert_eq!(session.status, 200, "{}", session.text());
    let token = session.json()["token"].as_str().unwrap_or_default().to_owned();
    let again = guest(app, "POST", "/session", None, Some(json!({"link": link}))).await?;
    assert_eq!((again.status, again.error_code().as_deref()), (401, Some("invalid_token")));

    // The guest sees their meeting and its QR code, and nothing of the organization's API.
    let home = guest(app, "GET", "/me", Some(&token), None).await?;
    assert_eq!(home.status, 200, "{}", home.text());
    let home = home.json();
    assert_eq!(home["visitor_name"], "Ada Lovelace");
    assert_eq!(home["organization"]["instructions"], "Ask at desk B");
    assert_eq!(home["visits"][0]["host_name"], visit["host_name"], "{home}");
    assert_eq!(home["visits"][0]["room"], "4.12");
    let reply = app.call("GET", &desk.site.path("/passes"), Some(&token), None).await?;
    assert_eq!(reply.status, 401, "a guest session opens nothing else");
    let qr = guest(app, "GET", &format!("/visits/{visit_id}/qr"), Some(&token), None).await?;
    assert_eq!(qr.status, 200, "{}", qr.text());
    let code = json!({"kind": "qr", "value": qr.json()["payload"]});
    let svg = guest(app, "GET", &format!("/visits/{visit_id}/qr?format=svg"), Some(&token), None).await?;
    assert!(svg.text().starts_with("<?xml") || svg.text().contains("<svg"), "{}", svg.text());

    // Before check-in the code is refused at every gate.
    assert_eq!(desk.site.decide(0, &code, "in").await?, deny("pass_suspended"));
    assert_eq!(desk.site.decide(1, &code, "in").await?, deny("pass_suspended"));

    // The host watches their stream; reception checks the visitor in.
    let ws = format!(
        "{}{}?access_token={}",
        app.address.replace("http://", "ws://"),
        desk.site.path("/stream"),
        desk.host.access
    );
    let (_, mut host_stream) = awc::Client::new().ws(ws).connect().await.map_err(|e| format!("{e}"))?;
    let reply = desk.call(&desk.reception, "POST", &format!("/visits/{visit_id}/check-in"), None).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["visit"]["status"], "checked_in");
    assert!(reply.json()["qr"]["payload"].is_string(), "the badge's code");
    let frame = frame_where(&mut host_stream, |f| f["type"] == "visit" && f["status"] == "checked_in").await?;
    assert_eq!(frame["visit_id"].as_str(), Some(visit_id.as_str()));

    // Now the same code opens the gate (once: a code that let someone in cannot again).
    assert_eq!(desk.site.decide(0, &code, "in").await?, allow());
    assert_eq!(desk.site.decide(0, &code, "out").await?, allow());
    assert_eq!(desk.site.decide(1, &code, "in").await?, deny("qr_replayed"));
    let twice = desk.call(&desk.reception, "POST", &format!("/visits/{visit_id}/check-in"), None).await?;
    assert_eq!((twice.status, twice.error_code().as_deref()), (409, Some("visit_not_open")));

    // Check-out: the next entry is a deny at every gate.
    let reply = desk.call(&desk.reception, "POST", &format!("/visits/{visit_id}/check-out"), None).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["status"], "checked_out");
    assert_eq!(desk.site.decide(0, &code, "in").await?, deny("pass_revoked"));
    assert_eq!(desk.site.decide(1, &code, "in").await?, deny("pass_revoked"));
    let pass_id = reply.json()["pass_id"].as_str().unwrap_or_default().to_owned();
    let pass = desk.site.get(&format!("/passes/{pass_id}")).await?;
    assert_eq!(
        (pass["status"].as_str(), pass["revoke_reason"].as_str()),
        (Some("revoked"), Some("checked_out")),
        "{pass}"
    );

    // Every transition is audited, and went out as events.
    let db = app.db().await?;
    let actions: Vec<String> = db
        .query("SELECT action FROM audit_log WHERE target_id = $1 ORDER BY id", &[&visit_id])
        .await?
        .iter()
        .filter_map(|r| r.try_get(0).ok())
        .collect();
    assert_eq!(actions, ["visit.checked_in", "visit.checked_out"]);
    let types: Vec<String> = db
        .query("SELECT type FROM outbox WHERE payload->>'visit_id' = $1 ORDER BY seq", &[&visit_id])
        .await?
        .iter()
        .filter_map(|r| r.try_get(0).ok())
        .collect();
    assert_eq!(types, ["visit.invited", "visit.checked_in", "visit.checked_out"]);
    Ok(())
}

/// The next frame on a stream that `wanted` accepts, within 10 s.
async fn frame_where(
    stream: &mut actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>,
    wanted: impl Fn(&Value) -> bool,
) -> TestResult<Value> {
    use futures_util::{SinkExt as _, StreamExt as _};
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let frame = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) | Ok(None) => return Err("no such frame within 10 s".into()),
            Ok(Some(frame)) => frame?,
        };
        match frame {
            awc::ws::Frame::Text(text) => {
                let event: Value = serde_json::from_slice(&text)?;
                if wanted(&event) {
                    return Ok(event);
                }
            }
            awc::ws::Frame::Ping(bytes) => stream.send(awc::ws::Message::Pong(bytes)).await?,
            _ => {}
        }
    }
}

#[actix_web::test]
async fn a_visitor_on_the_deny_list_is_held_for_security_and_cannot_be_checked_in() -> TestResult {
    let desk = Desk::new(spawn_app().await?).await?;
    let app = &desk.site.app;
    // The reception desk may not read or change the deny list.
    let reply = desk.call(&desk.reception, "GET", "/deny-list", None).await?;
    assert_eq!(reply.status, 403);
    let entry = json!({"kind": "email", "value": "  MALLORY@Example.TEST ", "reason": "threatened staff"});
    let reply = desk.call(&desk.security, "POST", "/deny-list", Some(entry)).await?;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let listed = desk.call(&desk.security, "GET", "/deny-list", None).await?.json();
    assert_eq!(listed["items"][0]["value"], "MALLORY@Example.TEST", "{listed}");

    let ws = format!(
        "{}{}?access_token={}",
        app.address.replace("http://", "ws://"),
        desk.site.path("/stream"),
        desk.security.access
    );
    let (_, mut security_stream) = awc::Client::new().ws(ws).connect().await.map_err(|e| format!("{e}"))?;

    // Invited under another spelling of the address: the visit is held as denied, and the
    // security officer is alerted on their own stream (and no invitation goes out).
    let appointment = desk.invite("Mallory", "mallory@example.TEST").await?;
    let visit = &appointment["visits"][0];
    assert_eq!(visit["status"], "denied", "{appointment}");
    assert_eq!(visit["denied_reason"], "deny_list:email");
    let visit_id = visit["id"].as_str().unwrap_or_default().to_owned();
    let frame = frame_where(&mut security_stream, |f| f["type"] == "visit" && f["status"] == "denied").await?;
    assert_eq!(frame["visitor_name"], "Mallory");
    let alert = frame_where(&mut security_stream, |f| f["type"] == "notification").await?;
    assert!(alert["body"].as_str().unwrap_or_default().contains("deny list"), "{alert}");

    // Reception cannot check them in.
    let reply = desk.call(&desk.reception, "POST", &format!("/visits/{visit_id}/check-in"), None).await?;
    assert_eq!((reply.status, reply.error_code().as_deref()), (409, Some("visitor_denied")), "{}", reply.text());
    let reply = desk
        .call(&desk.reception, "POST", &format!("/visits/{visit_id}/review"), Some(json!({"release": true})))
        .await?;
    assert_eq!(reply.status, 403, "only security reviews");

    // A match found only at arrival (the entry added after the invitation) holds the visit too.
    let appointment = desk.invite("Eve Example", "eve@example.test").await?;
    let eve = appointment["visits"][0]["id"].as_str().unwrap_or_default().to_owned();
    let entry = json!({"kind": "name", "value": "eve   EXAMPLE", "reason": "alias of a banned person"});
    assert_eq!(desk.call(&desk.security, "POST", "/deny-list", Some(entry)).await?.status, 201);
    let reply = desk.call(&desk.reception, "POST", &format!("/visits/{eve}/check-in"), None).await?;
    assert_eq!((reply.status, reply.error_code().as_deref()), (409, Some("visitor_denied")), "{}", reply.text());
    let held = desk.call(&desk.reception, "GET", &format!("/visits/{eve}"), None).await?.json();
    assert_eq!(held["status"], "denied");

    // Security judges it a false match and releases it: now reception can check Eve in.
    let reply =
        desk.call(&desk.security, "POST", &format!("/visits/{eve}/review"), Some(json!({"release": true}))).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["status"], "registered");
    let reply = desk.call(&desk.reception, "POST", &format!("/visits/{eve}/check-in"), None).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    Ok(())
}

#[actix_web::test]
async fn the_deny_list_check_fails_closed() -> TestResult {
    let desk = Desk::new(spawn_app().await?).await?;
    let appointment = desk.invite("Walter", "walter@example.test").await?;
    let visit = appointment["visits"][0]["id"].as_str().unwrap_or_default().to_owned();
    // The deny list cannot be read (its table is gone): nobody is let in by the check.
    let db = desk.site.app.db().await?;
    db.execute("ALTER TABLE deny_list RENAME TO deny_list_away", &[]).await?;
    let reply = desk.call(&desk.reception, "POST", &format!("/visits/{visit}/check-in"), None).await?;
    db.execute("ALTER TABLE deny_list_away RENAME TO deny_list", &[]).await?;
    assert!(reply.status >= 500, "{} {}", reply.status, reply.text());
    let visit = desk.call(&desk.reception, "GET", &format!("/visits/{visit}"), None).await?.json();
    assert_eq!(visit["status"], "invited", "{visit}");
    assert!(visit["pass_id"].is_null(), "no pass was made: {visit}");
    Ok(())
}

#[actix_web::test]
async fn hosts_see_and_act_on_their_own_visitors_only() -> TestResult {
    let desk = Desk::new(spawn_app().await?).await?;
    let other = desk.site.app.create_user(&desk.site.root, &desk.site.org, "host").await?;
    let appointment = desk.invite("Grace Hopper", "grace@example.test").await?;
    let visit = appointment["visits"][0]["id"].as_str().unwrap_or_default().to_owned();
    let visitor = appointment["visits"][0]["visitor_id"].as_str().unwrap_or_default().to_owned();
    let appointment_id = appointment["id"].as_str().unwrap_or_default().to_owned();
    for path in [format!("/visits/{visit}"), format!("/visitors/{visitor}"), format!("/appointments/{appointment_id}")]
    {
        assert_eq!(desk.call(&desk.host, "GET", &path, None).await?.status, 200, "{path}");
        assert_eq!(desk.call(&other, "GET", &path, None).await?.status, 404, "{path}");
    }
    let list = desk.call(&other, "GET", "/visits", None).await?.json();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    let list = desk.call(&other, "GET", "/visitors?q=grace", None).await?.json();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    let reply = desk.call(&other, "POST", &format!("/visits/{visit}/cancel"), None).await?;
    assert_eq!(reply.status, 404);
    // A host cannot check anyone in, nor make an appointment for another host.
    let reply = desk.call(&desk.host, "POST", &format!("/visits/{visit}/check-in"), None).await?;
    assert_eq!(reply.status, 403);
    let now = Utc::now();
    let body = json!({"title": "x", "starts_at": now.to_rfc3339(), "ends_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
                      "host_id": desk.host.user_id, "visitors": [{"visitor_id": visitor}]});
    assert_eq!(desk.call(&other, "POST", "/appointments", Some(body)).await?.status, 403);
    // The host's own cancellation works.
    let reply = desk.call(&desk.host, "POST", &format!("/visits/{visit}/cancel"), None).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["status"], "cancelled");
    Ok(())
}

#[actix_web::test]
async fn bad_appointments_get_a_422_naming_each_field() -> TestResult {
    let desk = Desk::new(spawn_app().await?).await?;
    let other_org = desk.site.app.create_org(&desk.site.root, &format!("o-{}", uuid::Uuid::new_v4().simple())).await?;
    let stranger = desk
        .site
        .app
        .call(
            "POST",
            &format!("/api/v1/orgs/{other_org}/visitors"),
            Some(&desk.site.root.access),
            Some(json!({"name": "Stranger"})),
        )
        .await?;
    assert_eq!(stranger.status, 201, "{}", stranger.text());
    let now = Utc::now();
    let body = json!({
        "title": "",
        "starts_at": now.to_rfc3339(), "ends_at": (now - chrono::Duration::hours(1)).to_rfc3339(),
        "rrule": "FREQ=MONTHLY;COUNT=3",
        "visitors": [{"visitor_id": stranger.json()["id"]}, {"name": "Bob", "email": "not an address"}],
    });
    let reply = desk.call(&desk.host, "POST", "/appointments", Some(body)).await?;
    assert_eq!(reply.status, 422, "{}", reply.text());
    let fields = reply.json()["error"]["details"]["fields"].clone();
    for field in ["title", "ends_at", "rrule", "visitors[0].visitor_id", "visitors[1].email"] {
        assert!(fields[field].is_string(), "{field} not named: {fields}");
    }
    Ok(())
}

#[actix_web::test]
async fn a_weekly_appointment_invites_each_occurrence_and_a_returning_visitor_is_recognised() -> TestResult {
    let desk = Desk::new(spawn_app().await?).await?;
    let start = Utc::now() + chrono::Duration::days(1);
    let body = json!({
        "title": "Standup", "starts_at": start.to_rfc3339(), "ends_at": (start + chrono::Duration::minutes(15)).to_rfc3339(),
        "rrule": "FREQ=DAILY;INTERVAL=2;COUNT=3",
        "visitors": [{"name": "Linus", "email": "linus@example.test"}],
    });
    let reply = desk.call(&desk.host, "POST", "/appointments", Some(body)).await?;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let visits = reply.json()["visits"].as_array().cloned().unwrap_or_default();
    assert_eq!(visits.len(), 3);
    let starts: Vec<chrono::DateTime<Utc>> =
        visits.iter().filter_map(|v| v["starts_at"].as_str()?.parse().ok()).collect();
    assert_eq!(starts.len(), 3);
    assert_eq!(starts[1] - starts[0], chrono::Duration::days(2));
    assert_eq!(starts[2] - starts[1], chrono::Duration::days(2));
    // The same address registers the same visitor.
    let again = desk
        .call(&desk.reception, "POST", "/visitors", Some(json!({"name": "Linus T.", "email": "LINUS@example.test"})))
        .await?;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["recognised"], true);
    assert_eq!(again.json()["id"], visits[0]["visitor_id"]);
    let found = desk.call(&desk.reception, "GET", "/visitors?q=linus@example.test", None).await?.json();
    assert_eq!(found["items"].as_array().map(Vec::len), Some(1), "{found}");
    let found = desk.call(&desk.reception, "GET", "/visitors?q=t.%20LINUS", None).await?.json();
    assert_eq!(found["items"].as_array().map(Vec::len), Some(1), "{found}");
    Ok(())
}

#[actix_web::test]
async fn personal_data_is_sealed_at_rest_exported_and_erased_on_request() -> TestResult {
    let desk = Desk::new(spawn_app().await?).await?;
    let appointment = desk.invite("Katherine Johnson", "katherine@example.test").await?;
    let visitor = appointment["visits"][0]["visitor_id"].as_str().unwrap_or_default().to_owned();
    let visit = appointment["visits"][0]["id"].as_str().unwrap_or_default().to_owned();
    let reply = desk.call(&desk.reception, "POST", &format!("/visits/{visit}/check-in"), None).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // Nothing in the visitors table reads as the name, the address or the company.
    let db = desk.site.app.db().await?;
    let dump: String = db
        .query_one("SELECT string_agg(encode(v::text::bytea, 'escape'), '') FROM visitors v", &[])
        .await?
        .try_get(0)?;
    for secret in ["Katherine", "katherine@example.test", "Analytical"] {
        assert!(!dump.contains(secret), "`{secret}` is stored in clear");
    }

    // Export (admin only), then erasure; a checked-in visitor is not erased.
    assert_eq!(desk.call(&desk.reception, "GET", &format!("/visitors/{visitor}/export"), None).await?.status, 403);
    let export = desk.site.get(&format!("/visitors/{visitor}/export")).await?;
    assert_eq!(export["visitor"]["email"], "katherine@example.test");
    assert_eq!(export["visits"].as_array().map(Vec::len), Some(1), "{export}");
    let path = desk.site.path(&format!("/visitors/{visitor}"));
    let reply = desk.site.app.call("DELETE", &path, Some(&desk.site.root.access), None).await?;
    assert_eq!((reply.status, reply.error_code().as_deref()), (409, Some("in_use")));
    desk.call(&desk.reception, "POST", &format!("/visits/{visit}/check-out"), None).await?;
    let reply = desk.site.app.call("DELETE", &path, Some(&desk.site.root.access), None).await?;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert_eq!(desk.site.app.call("GET", &path, Some(&desk.site.root.access), None).await?.status, 404);
    // The check-in facts stay, anonymous.
    let holder: String = db
        .query_one(
            "SELECT holder_name FROM passes WHERE org_id::text = $1 AND appointment_id::text = $2",
            &[&desk.site.org, &appointment["id"].as_str().unwrap_or_default()],
        )
        .await?
        .try_get(0)?;
    assert_eq!(holder, "Visitor");
    Ok(())
}

#[actix_web::test]
async fn a_walk_in_is_checked_in_at_once_and_checked_out_when_their_time_is_up() -> TestResult {
    let app = spawn_app_with(|s| s.visits.sweep_secs = 1).await?;
    let desk = Desk::new(app).await?;
    let reply = desk
        .site
        .app
        .call("PATCH", &desk.site.path(""), Some(&desk.site.root.access), Some(json!({"auto_checkout_minutes": 0})))
        .await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = json!({
        "visitor": {"name": "Courier", "company": "Fast Parcels"},
        "host_id": desk.host.user_id,
        "ends_at": (Utc::now() + chrono::Duration::seconds(3)).to_rfc3339(),
    });
    let reply = desk.call(&desk.reception, "POST", "/visits/walk-in", Some(body)).await?;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let checked_in = reply.json();
    assert_eq!(checked_in["visit"]["status"], "checked_in");
    let code = json!({"kind": "qr", "value": checked_in["qr"]["payload"]});
    assert_eq!(desk.site.decide(0, &code, "in").await?, allow());
    let visit = checked_in["visit"]["id"].as_str().unwrap_or_default().to_owned();
    // Past its end (and the margin of 0 minutes), housekeeping checks the courier out.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = desk.call(&desk.reception, "GET", &format!("/visits/{visit}"), None).await?.json();
        if now["status"] == "checked_out" {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("not checked out: {now}").into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    // They may still leave (a revoked pass never traps anyone inside), but not come back in.
    assert_eq!(desk.site.decide(0, &code, "out").await?, ("allow".to_owned(), "revoked_exit".to_owned()));
    assert_eq!(desk.site.decide(1, &code, "in").await?, deny("pass_revoked"));
    Ok(())
}

#[actix_web::test]
async fn a_guest_signs_in_with_a_mailed_code_and_their_arrival_tells_the_host() -> TestResult {
    let desk = Desk::new(spawn_app().await?).await?;
    let app = &desk.site.app;
    let appointment = desk.invite("Barbara Liskov", "barbara@example.test").await?;
    let visit = appointment["visits"][0]["id"].as_str().unwrap_or_default().to_owned();
    let slug: String = app
        .db()
        .await?
        .query_one("SELECT slug FROM organizations WHERE id::text = $1", &[&desk.site.org])
        .await?
        .try_get(0)?;
    // Unknown addresses are answered the same (no oracle), and get no mail.
    let reply = guest(app, "POST", "/code", None, Some(json!({"org": slug, "email": "nobody@example.test"}))).await?;
    assert_eq!(reply.status, 202);
    let reply = guest(app, "POST", "/code", None, Some(json!({"org": slug, "email": "barbara@example.test"}))).await?;
    assert_eq!(reply.status, 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        let found = mails(app).into_iter().find_map(|m| {
            let start = m.find("sign-in code: ")? + "sign-in code: ".len();
            Some(m[start..].chars().take(6).collect::<String>())
        });
        if let Some(code) = found {
            break code;
        }
        if Instant::now() > deadline {
            return Err("no code mailed".into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(mails(app).iter().all(|m| !m.contains("nobody@example.test")));
    let wrong = json!({"org": slug, "email": "barbara@example.test", "code": "000000x"});
    assert_eq!(guest(app, "POST", "/session", None, Some(wrong)).await?.status, 401);
    let body = json!({"org": slug, "email": "BARBARA@example.test", "code": code});
    let session = guest(app, "POST", "/session", None, Some(body.clone())).await?;
    assert_eq!(session.status, 200, "{}", session.text());
    assert_eq!(guest(app, "POST", "/session", None, Some(body)).await?.status, 401, "a code works once");
    let token = session.json()["token"].as_str().unwrap_or_default().to_owned();

    // Another visitor's visit does not exist for this guest.
    let other = desk.invite("Someone Else", "else@example.test").await?;
    let other_visit = other["visits"][0]["id"].as_str().unwrap_or_default().to_owned();
    let reply = guest(app, "GET", &format!("/visits/{other_visit}/qr"), Some(&token), None).await?;
    assert_eq!(reply.status, 404);

    // The guest completes their registration; a bad phone is named.
    let path = format!("/visits/{visit}/register");
    let bad = json!({"phone": "call me maybe", "consents": [{"kind": "visitor_policy", "text_version": "v1"}]});
    let reply = guest(app, "POST", &path, Some(&token), Some(bad)).await?;
    assert_eq!(reply.status, 422, "{}", reply.text());
    assert!(reply.json()["error"]["details"]["fields"]["phone"].is_string(), "{}", reply.text());
    let good = json!({"phone": "+1 555 0100", "company": "CLU", "consents": [{"kind": "visitor_policy", "text_version": "v1"}]});
    let reply = guest(app, "POST", &path, Some(&token), Some(good.clone())).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["status"], "registered");
    let again = guest(app, "POST", &path, Some(&token), Some(good)).await?;
    assert_eq!((again.status, again.error_code().as_deref()), (409, Some("visit_not_open")));
    let visitor = appointment["visits"][0]["visitor_id"].as_str().unwrap_or_default();
    let export = desk.site.get(&format!("/visitors/{visitor}/export")).await?;
    assert_eq!(export["visitor"]["company"], "CLU");
    assert_eq!(export["visitor"]["consents"][0]["text_version"], "v1", "{export}");
    assert!(export["visitor"]["consents"][0]["given_at"].is_string());

    // "I have arrived": the host is told (in the app), and the desk sees `arrived`.
    let reply = guest(app, "POST", &format!("/visits/{visit}/arrive"), Some(&token), None).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["status"], "arrived");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = app.call("GET", "/api/v1/me/notifications", Some(&desk.host.access), None).await?.json();
        let told = list["items"].as_array().into_iter().flatten().any(|n| n["type"] == "visit.arrived");
        if told {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the host was not told: {list}").into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[actix_web::test]
async fn hosts_have_departments_and_presence_and_security_sees_who_is_inside() -> TestResult {
    let desk = Desk::new(spawn_app().await?).await?;
    let root = &desk.site.root;
    let sales = desk.call(root, "POST", "/departments", Some(json!({"name": "Sales"}))).await?;
    assert_eq!(sales.status, 201, "{}", sales.text());
    let sales = sales.json()["id"].as_str().unwrap_or_default().to_owned();
    let emea = desk.call(root, "POST", "/departments", Some(json!({"name": "Sales EMEA", "parent_id": sales}))).await?;
    assert_eq!(emea.json()["parent_id"].as_str(), Some(sales.as_str()));
    let bad =
        desk.call(root, "POST", "/departments", Some(json!({"name": "X", "parent_id": uuid::Uuid::new_v4()}))).await?;
    assert_eq!(bad.status, 422);

    // The host sets their own department and presence (always in); not another's.
    let body = json!({"department_id": sales, "presence": {"weekdays": [1, 2, 3, 4, 5, 6, 7]}});
    let path = format!("/hosts/{}", desk.host.user_id);
    let reply = desk.call(&desk.host, "PUT", &path, Some(body.clone())).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        (reply.json()["department"].as_str(), reply.json()["present_now"].as_bool()),
        (Some("Sales"), Some(true))
    );
    let other = desk.site.app.create_user(root, &desk.site.org, "host").await?;
    assert_eq!(desk.call(&other, "PUT", &path, Some(body)).await?.status, 403);
    let bad = json!({"presence": {"weekdays": [9]}});
    assert_eq!(desk.call(&desk.host, "PUT", &path, Some(bad)).await?.status, 422);
    let hosts = desk.call(&desk.reception, "GET", "/hosts", None).await?.json();
    assert_eq!(hosts["items"].as_array().map(Vec::len), Some(2), "{hosts}");
    // A department with members is in use.
    let reply = desk.call(root, "DELETE", &format!("/departments/{sales}"), None).await?;
    assert_eq!((reply.status, reply.error_code().as_deref()), (409, Some("in_use")));

    // The muster list: a visitor checked in and through the gate is inside.
    let appointment = desk.invite("Hedy Lamarr", "hedy@example.test").await?;
    let visit = appointment["visits"][0]["id"].as_str().unwrap_or_default().to_owned();
    let checked_in = desk.call(&desk.reception, "POST", &format!("/visits/{visit}/check-in"), None).await?.json();
    let code = json!({"kind": "qr", "value": checked_in["qr"]["payload"]});
    assert_eq!(desk.site.decide(0, &code, "in").await?, allow());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let muster = desk.call(&desk.security, "GET", "/muster", None).await?.json();
        let inside = muster["items"].as_array().into_iter().flatten().any(|p| p["holder_name"] == "Hedy Lamarr");
        if inside {
            assert_eq!(muster["items"][0]["zone_id"].as_str(), Some(desk.site.zones[0].as_str()));
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("not on the muster list: {muster}").into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(desk.call(&desk.host, "GET", "/muster", None).await?.status, 403);
    Ok(())
}

#[actix_web::test]
async fn visitor_data_is_purged_after_the_retention_keeping_the_facts() -> TestResult {
    let app = spawn_app_with(|s| s.visits.sweep_secs = 1).await?;
    let desk = Desk::new(app).await?;
    let appointment = desk.invite("Old Visitor", "old@example.test").await?;
    let visitor = appointment["visits"][0]["visitor_id"].as_str().unwrap_or_default().to_owned();
    let visit = appointment["visits"][0]["id"].as_str().unwrap_or_default().to_owned();
    let checked_in = desk.call(&desk.reception, "POST", &format!("/visits/{visit}/check-in"), None).await?.json();
    let code = json!({"kind": "qr", "value": checked_in["qr"]["payload"]});
    assert_eq!(desk.site.decide(0, &code, "in").await?, allow());
    assert_eq!(desk.call(&desk.reception, "POST", &format!("/visits/{visit}/check-out"), None).await?.status, 200);
    let recent = desk.invite("Recent Visitor", "recent@example.test").await?;
    let recent = recent["visits"][0]["visitor_id"].as_str().unwrap_or_default().to_owned();
    // Forty days pass for the first visitor (the organization keeps 30).
    let db = desk.site.app.db().await?;
    db.execute(
        "UPDATE visits SET starts_at = starts_at - interval '40 days', ends_at = ends_at - interval '40 days'
         WHERE visitor_id::text = $1",
        &[&visitor],
    )
    .await?;
    db.execute("UPDATE visitors SET created_at = now() - interval '41 days' WHERE id::text = $1", &[&visitor]).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let gone: bool = db
            .query_one("SELECT NOT EXISTS (SELECT 1 FROM visitors WHERE id::text = $1)", &[&visitor])
            .await?
            .try_get(0)?;
        if gone {
            break;
        }
        if Instant::now() > deadline {
            return Err("the visitor was not purged".into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    let kept: i64 = db.query_one("SELECT count(*) FROM visitors WHERE id::text = $1", &[&recent]).await?.try_get(0)?;
    assert_eq!(kept, 1, "a visitor within the retention is kept");
    // The check-in facts stay, anonymous.
    let facts: i64 = db
        .query_one(
            "SELECT count(*) FROM checkins c JOIN passes p ON p.id = c.pass_id
             WHERE p.appointment_id::text = $1 AND p.holder_name = 'Visitor'",
            &[&appointment["id"].as_str().unwrap_or_default()],
        )
        .await?
        .try_get(0)?;
    let passes: i64 = db
        .query_one(
            "SELECT count(*) FROM passes WHERE appointment_id::text = $1 AND holder_name = 'Visitor'",
            &[&appointment["id"].as_str().unwrap_or_default()],
        )
        .await?
        .try_get(0)?;
    assert_eq!((passes, facts), (1, 1), "the pass and its entry stay, anonymous");
    Ok(())
}

#[actix_web::test]
async fn raising_the_data_key_version_re_seals_personal_data_that_still_reads() -> TestResult {
    let desk = Desk::new(spawn_app().await?).await?;
    let appointment = desk.invite("Rosalind Franklin", "rosalind@example.test").await?;
    let visitor = appointment["visits"][0]["visitor_id"].as_str().unwrap_or_default().to_owned();
    let entry = json!({"kind": "phone", "value": "+44 20 7946 0000", "reason": "test"});
    assert_eq!(desk.call(&desk.security, "POST", "/deny-list", Some(entry)).await?.status, 201);
    let db = desk.site.app.db().await?;
    let before: Vec<u8> =
        db.query_one("SELECT sealed FROM visitors WHERE id::text = $1", &[&visitor]).await?.try_get(0)?;

    // A second engine on the same database, with the key version raised.
    let dbname = desk.site.app.dbname.clone();
    let data_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("apps").join(format!("{dbname}-rekeyed"));
    let rekeyed = crate::helpers::spawn_app_on(dbname, move |s| {
        s.visits.data_key_version = 2;
        s.visits.sweep_secs = 1;
        s.data_dir = data_dir;
    })
    .await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let versions: Vec<i16> = db
            .query("SELECT key_version FROM visitors UNION ALL SELECT key_version FROM deny_list", &[])
            .await?
            .iter()
            .filter_map(|r| r.try_get(0).ok())
            .collect();
        if !versions.is_empty() && versions.iter().all(|v| *v == 2) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("not re-sealed: {versions:?}").into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    let after: Vec<u8> =
        db.query_one("SELECT sealed FROM visitors WHERE id::text = $1", &[&visitor]).await?.try_get(0)?;
    assert_ne!(before, after, "the box is sealed anew");
    let path = format!("/api/v1/orgs/{}/visitors/{visitor}", desk.site.org);
    let read = rekeyed.call("GET", &path, Some(&desk.reception.access), None).await?;
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.json()["name"], "Rosalind Franklin");
    let listed = rekeyed
        .call("GET", &format!("/api/v1/orgs/{}/deny-list", desk.site.org), Some(&desk.security.access), None)
        .await?;
    assert_eq!(listed.json()["items"][0]["value"], "+44 20 7946 0000");
    Ok(())
}

#[actix_web::test]
async fn visitors_still_in_at_the_end_of_the_organizations_day_are_checked_out() -> TestResult {
    let app = spawn_app_with(|s| s.visits.sweep_secs = 1).await?;
    let desk = Desk::new(app).await?;
    let bad = desk
        .site
        .app
        .call("PATCH", &desk.site.path(""), Some(&desk.site.root.access), Some(json!({"day_ends_at": "25:00"})))
        .await?;
    assert_eq!(bad.status, 422);
    assert!(bad.json()["error"]["details"]["fields"]["day_ends_at"].is_string());
    // A walk-in for four hours; the day "ends" at the start of today, long past: housekeeping checks
    // them out although their four hours are not over.
    let body = json!({"visitor": {"name": "Late Stayer"}, "host_id": desk.host.user_id});
    let reply = desk.call(&desk.reception, "POST", "/visits/walk-in", Some(body)).await?;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let visit = reply.json()["visit"]["id"].as_str().unwrap_or_default().to_owned();
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    let still = desk.call(&desk.reception, "GET", &format!("/visits/{visit}"), None).await?.json();
    assert_eq!(still["status"], "checked_in", "no end of day set yet");
    let reply = desk
        .site
        .app
        .call("PATCH", &desk.site.path(""), Some(&desk.site.root.access), Some(json!({"day_ends_at": "00:00"})))
        .await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["day_ends_at"], "00:00");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = desk.call(&desk.reception, "GET", &format!("/visits/{visit}"), None).await?.json();
        if now["status"] == "checked_out" {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("not checked out at the end of the day: {now}").into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}
