//! Each rule of the decision, over HTTP against the real database: allowed, then denied with
//! its reason.

use chrono::{Datelike, Duration, Timelike, Utc};
use serde_json::json;

use crate::helpers::{TestResult, spawn_app};
use crate::site::{Site, allow, deny};

/// Today and the time in the site's time zone (organizations are created in Europe/Berlin).
fn berlin_now() -> chrono::DateTime<chrono_tz::Tz> {
    Utc::now().with_timezone(&chrono_tz::Europe::Berlin)
}

#[actix_web::test]
async fn pass_status_suspend_resume_and_revoke() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let (pass, pin) = site.pass(json!({})).await?;
    assert_eq!(site.decide(0, &pin, "in").await?, allow());
    site.post(&format!("/passes/{pass}/suspend"), json!({})).await?;
    assert_eq!(site.decide(0, &pin, "in").await?, deny("pass_suspended"));
    site.post(&format!("/passes/{pass}/resume"), json!({})).await?;
    assert_eq!(site.decide(0, &pin, "out").await?, allow());
    let revoked = site.post(&format!("/passes/{pass}/revoke"), json!({"reason": "lost"})).await?;
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_by"], site.root.user_id.as_str());
    assert_eq!(site.decide(0, &pin, "in").await?, deny("pass_revoked"));
    let again = site
        .app
        .call(
            "POST",
            &site.path(&format!("/passes/{pass}/revoke")),
            Some(&site.root.access),
            Some(json!({"reason": "x"})),
        )
        .await?;
    assert_eq!((again.status, again.error_code().as_deref()), (409, Some("pass_not_active")));
    Ok(())
}

#[actix_web::test]
async fn the_validity_window() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let now = Utc::now();
    let (_, future) = site
        .pass(json!({"valid_from": (now + Duration::hours(1)).to_rfc3339(), "valid_to": (now + Duration::hours(2)).to_rfc3339()}))
        .await?;
    assert_eq!(site.decide(0, &future, "in").await?, deny("not_yet_valid"));
    let (_, past) = site
        .pass(json!({"valid_from": (now - Duration::hours(2)).to_rfc3339(), "valid_to": (now - Duration::hours(1)).to_rfc3339()}))
        .await?;
    assert_eq!(site.decide(0, &past, "in").await?, deny("pass_expired"));
    // Extending brings it back.
    let (pass, soon) = site.pass(json!({"valid_to": (now + Duration::seconds(2)).to_rfc3339()})).await?;
    let extended = site
        .app
        .call(
            "PATCH",
            &site.path(&format!("/passes/{pass}")),
            Some(&site.root.access),
            Some(json!({"valid_to": (now + Duration::hours(3)).to_rfc3339()})),
        )
        .await?;
    assert_eq!(extended.status, 200, "{}", extended.text());
    assert_eq!(site.decide(0, &soon, "in").await?, allow());
    Ok(())
}

#[actix_web::test]
async fn a_pass_expires_on_its_own_at_valid_to() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let (pass, pin) = site.pass(json!({"valid_to": (Utc::now() + Duration::seconds(1)).to_rfc3339()})).await?;
    let mut status = String::new();
    for _ in 0..50 {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
        status = site.get(&format!("/passes/{pass}")).await?["status"].as_str().unwrap_or("").to_owned();
        if status == "expired" {
            break;
        }
    }
    assert_eq!(status, "expired", "the sweep marks it without anyone asking");
    assert_eq!(site.decide(0, &pin, "in").await?, deny("pass_expired"));
    Ok(())
}

#[actix_web::test]
async fn zones_of_the_access_rule() -> TestResult {
    let site = Site::build(spawn_app().await?, 2, 1).await?;
    let lobby_only = site.rule_for(&site.zones[..1], json!({})).await?;
    let (_, pin) = site.pass(json!({"access_rule_id": lobby_only})).await?;
    assert_eq!(site.decide(0, &pin, "in").await?, allow());
    assert_eq!(site.decide(1, &pin, "in").await?, deny("zone_not_allowed"));
    Ok(())
}

#[actix_web::test]
async fn weekdays_time_windows_and_holidays_in_the_organizations_time_zone() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let local = berlin_now();
    let today = i64::from(local.weekday().number_from_monday());
    let other_days: Vec<i64> = (1..=7).filter(|d| *d != today).collect();
    let not_today = site.rule_for(&site.zones, json!({"weekdays": other_days})).await?;
    let (_, pin) = site.pass(json!({"access_rule_id": not_today})).await?;
    assert_eq!(site.decide(0, &pin, "in").await?, deny("outside_schedule"));
    assert_eq!(site.decide(0, &pin, "out").await?, allow(), "leaving is never out of hours");

    // A window that starts two hours from now (local) and lasts one hour.
    let start = (local.hour() + 2) % 24;
    let window = json!([{"from": format!("{start:02}:00"), "to": format!("{:02}:00", (start + 1) % 24)}]);
    let later = site.rule_for(&site.zones, json!({"time_windows": window})).await?;
    let (_, pin) = site.pass(json!({"access_rule_id": later})).await?;
    assert_eq!(site.decide(0, &pin, "in").await?, deny("outside_schedule"));
    // A window around now.
    let around = json!([{"from": format!("{:02}:00", (local.hour() + 23) % 24), "to": format!("{:02}:00", (local.hour() + 2) % 24)}]);
    let now_rule = site.rule_for(&site.zones, json!({"time_windows": around})).await?;
    let (_, pin) = site.pass(json!({"access_rule_id": now_rule})).await?;
    assert_eq!(site.decide(0, &pin, "in").await?, allow());

    // Today becomes a holiday.
    site.post("/holidays", json!({"date": local.date_naive().to_string(), "name": "Founders' day"})).await?;
    assert_eq!(site.decide(0, &pin, "in").await?, deny("outside_schedule"));

    let bad = site
        .app
        .call(
            "POST",
            &site.path("/access-rules"),
            Some(&site.root.access),
            Some(json!({"name": "bad", "zone_ids": site.zones, "time_windows": [{"from": "25:00", "to": "26:00"}]})),
        )
        .await?;
    assert_eq!(bad.status, 422, "{}", bad.text());
    assert!(
        bad.json()["error"]["details"]["fields"]["time_windows"].is_string() || bad.text().contains("time_windows"),
        "{}",
        bad.text()
    );
    Ok(())
}

#[actix_web::test]
async fn single_multi_and_group_passes_run_out() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let (_, single) = site.pass(json!({"type": "single"})).await?;
    assert_eq!(site.decide(0, &single, "in").await?, allow());
    assert_eq!(site.decide(0, &single, "out").await?, allow());
    assert_eq!(site.decide(0, &single, "in").await?, deny("uses_exhausted"));

    let (pass, multi) = site.pass(json!({"type": "multi", "max_uses": 2})).await?;
    for _ in 0..2 {
        assert_eq!(site.decide(0, &multi, "in").await?, allow());
        assert_eq!(site.decide(0, &multi, "out").await?, allow());
    }
    assert_eq!(site.decide(0, &multi, "in").await?, deny("uses_exhausted"));
    let shown = site.get(&format!("/passes/{pass}")).await?;
    assert_eq!((shown["uses_count"].as_i64(), shown["uses_left"].as_i64()), (Some(2), Some(0)));

    let (_, group) = site.pass(json!({"type": "group", "group_size": 3})).await?;
    for _ in 0..3 {
        assert_eq!(site.decide(0, &group, "in").await?, allow(), "each member of the group enters in turn");
    }
    assert_eq!(site.decide(0, &group, "in").await?, deny("uses_exhausted"));
    Ok(())
}

#[actix_web::test]
async fn anti_passback_hard_and_timed() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 2).await?;
    let hard = site.rule_for(&site.zones, json!({"anti_passback": "hard"})).await?;
    let (_, pin) = site.pass(json!({"access_rule_id": hard})).await?;
    assert_eq!(site.decide(0, &pin, "out").await?, deny("anti_passback"), "no exit without an entry");
    assert_eq!(site.decide(0, &pin, "in").await?, allow());
    assert_eq!(site.decide(1, &pin, "in").await?, deny("anti_passback"), "handing the card back over the turnstile");
    assert_eq!(site.decide(1, &pin, "out").await?, allow());
    assert_eq!(site.decide(0, &pin, "in").await?, allow());

    let timed = site.rule_for(&site.zones, json!({"anti_passback": "timed", "anti_passback_minutes": 10})).await?;
    let (_, pin) = site.pass(json!({"access_rule_id": timed})).await?;
    assert_eq!(site.decide(0, &pin, "in").await?, allow());
    assert_eq!(site.decide(1, &pin, "in").await?, deny("anti_passback"));
    let bad = site
        .app
        .call(
            "POST",
            &site.path("/access-rules"),
            Some(&site.root.access),
            Some(json!({"name": "x", "zone_ids": site.zones, "anti_passback": "timed"})),
        )
        .await?;
    assert_eq!(bad.status, 422);
    assert!(bad.json()["error"]["details"]["fields"]["anti_passback_minutes"].is_string());
    Ok(())
}

#[actix_web::test]
async fn an_escort_must_go_first() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 2).await?;
    let (host_pass, host) = site.pass(json!({"holder_name": "Host"})).await?;
    let escorted = site.rule_for(&site.zones, json!({"escort_required": true})).await?;
    let (_, visitor) =
        site.pass(json!({"holder_name": "Visitor", "access_rule_id": escorted, "escort_pass_id": host_pass})).await?;
    let (_, alone) = site.pass(json!({"holder_name": "Nobody's visitor", "access_rule_id": escorted})).await?;
    assert_eq!(site.decide(0, &visitor, "in").await?, deny("escort_required"));
    assert_eq!(site.decide(0, &host, "in").await?, allow());
    assert_eq!(site.decide(1, &visitor, "in").await?, deny("escort_required"), "the escort passed another gate");
    assert_eq!(site.decide(0, &visitor, "in").await?, allow());
    assert_eq!(site.decide(0, &alone, "in").await?, deny("escort_required"));
    Ok(())
}

#[actix_web::test]
async fn a_full_zone_takes_nobody_more_until_someone_leaves() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let zone = &site.zones[0];
    let patched = site
        .app
        .call("PATCH", &site.path(&format!("/zones/{zone}")), Some(&site.root.access), Some(json!({"capacity": 1})))
        .await?;
    assert_eq!(patched.status, 200, "{}", patched.text());
    let (_, first) = site.pass(json!({})).await?;
    let (_, second) = site.pass(json!({})).await?;
    assert_eq!(site.decide(0, &first, "in").await?, allow());
    assert_eq!(site.decide(0, &second, "in").await?, deny("occupancy_full"));
    assert_eq!(site.get(&format!("/zones/{zone}")).await?["inside"], 1);
    assert_eq!(site.decide(0, &first, "out").await?, allow());
    assert_eq!(site.decide(0, &second, "in").await?, allow());
    Ok(())
}

#[actix_web::test]
async fn gate_modes_and_organization_lockdown() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 2).await?;
    let (_, pin) = site.pass(json!({})).await?;
    let gate = &site.gates[0];
    site.post(&format!("/gates/{gate}/mode"), json!({"mode": "locked_down"})).await?;
    assert_eq!(site.decide(0, &pin, "in").await?, deny("gate_locked_down"));
    assert_eq!(site.decide(1, &pin, "in").await?, allow(), "only that gate");
    site.post(&format!("/gates/{gate}/mode"), json!({"mode": "free_passage"})).await?;
    assert_eq!(
        site.decide(0, &json!({"kind": "pin", "value": "00000000"}), "in").await?,
        ("allow".into(), "free_passage".into())
    );
    site.post(&format!("/gates/{gate}/mode"), json!({"mode": "normal"})).await?;
    assert_eq!(site.decide(0, &pin, "out").await?, allow());

    site.post("/lockdown", json!({"lockdown": true})).await?;
    assert_eq!(site.decide(0, &pin, "in").await?, deny("gate_locked_down"));
    assert_eq!(site.decide(1, &pin, "in").await?, deny("gate_locked_down"));
    site.post("/lockdown", json!({"lockdown": false})).await?;
    assert_eq!(site.decide(1, &pin, "in").await?, allow());
    let bad = site
        .app
        .call(
            "POST",
            &site.path(&format!("/gates/{gate}/mode")),
            Some(&site.root.access),
            Some(json!({"mode": "open_sesame"})),
        )
        .await?;
    assert_eq!(
        (bad.status, bad.json()["error"]["details"]["fields"]["mode"].is_string()),
        (422, true),
        "{}",
        bad.text()
    );
    Ok(())
}

#[actix_web::test]
async fn a_revoked_pass_may_still_leave_and_raises_an_alert() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let (pass, pin) = site.pass(json!({})).await?;
    assert_eq!(site.decide(0, &pin, "in").await?, allow());
    site.post(&format!("/passes/{pass}/revoke"), json!({"reason": "left the company"})).await?;
    assert_eq!(site.decide(0, &pin, "in").await?, deny("pass_revoked"));
    assert_eq!(site.decide(0, &pin, "out").await?, ("allow".into(), "revoked_exit".into()));
    Ok(())
}

#[actix_web::test]
async fn rotating_qr_codes_open_once_and_cards_read_from_wiegand() -> TestResult {
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let issued = site.post("/passes", json!({
        "holder_name": "QR visitor", "access_rule_id": site.rule, "type": "multi", "max_uses": 10,
        "valid_from": (Utc::now() - Duration::hours(1)).to_rfc3339(), "valid_to": (Utc::now() + Duration::hours(1)).to_rfc3339(),
        "credential": {"kind": "qr"},
    })).await?;
    assert!(issued["credential"]["seed"].is_string(), "the seed is shown once: {issued}");
    let pass = issued["id"].as_str().unwrap_or_default();
    let qr = site.get(&format!("/passes/{pass}/qr")).await?;
    let code = json!({"kind": "qr", "value": qr["payload"]});
    assert!(qr["expires_in"].as_i64().is_some_and(|s| s > 0 && s <= 60));
    assert_eq!(site.decide(0, &code, "in").await?, allow());
    assert_eq!(site.decide(0, &code, "out").await?, allow());
    assert_eq!(site.decide(0, &code, "in").await?, deny("qr_replayed"), "a used code cannot open again");
    let svg = site
        .app
        .call("GET", &site.path(&format!("/passes/{pass}/qr?format=svg")), Some(&site.root.access), None)
        .await?;
    assert!(svg.header("content-type").is_some_and(|c| c.starts_with("image/svg+xml")) && svg.text().contains("<svg"));
    let again = site.get(&format!("/passes/{pass}")).await?;
    assert!(!again.to_string().contains("seed"), "the seed is never shown again");

    let (_, card) = site
        .pass(json!({"credential": {"kind": "card", "format": "h10301", "facility_code": 123, "card_number": 4567}}))
        .await?;
    assert_eq!(site.decide(0, &json!({"kind": "wiegand", "bits": "10111101100010001110101110"}), "in").await?, allow());
    assert_eq!(
        site.decide(0, &json!({"kind": "wiegand", "bits": "10111101100010001110101111"}), "in").await?,
        deny("invalid_credential"),
        "bad parity"
    );
    assert_eq!(site.decide(0, &card, "out").await?, allow());
    assert_eq!(
        site.decide(0, &json!({"kind": "card", "value": "4567"}), "in").await?,
        allow(),
        "number without facility"
    );
    let dup = site
        .app
        .call(
            "POST",
            &site.path("/passes"),
            Some(&site.root.access),
            Some(json!({
        "holder_name": "Copy", "access_rule_id": site.rule, "type": "single",
        "valid_from": Utc::now().to_rfc3339(), "valid_to": (Utc::now() + Duration::hours(1)).to_rfc3339(),
        "credential": {"kind": "card", "format": "h10301", "facility_code": 123, "card_number": 4567}})),
        )
        .await?;
    assert_eq!((dup.status, dup.error_code().as_deref()), (409, Some("already_exists")));
    Ok(())
}
