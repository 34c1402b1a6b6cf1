//! The operator dashboard in a real browser (Debian's Chromium, driven by playwright-core).

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{PASSWORD, TestResult, spawn_app};
use crate::site::Site;

#[actix_web::test]
async fn the_desk_sees_decisions_live_and_revokes_a_pass() -> TestResult {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let browser_tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !Path::new(&chromium).exists() || !browser_tests.join("node_modules/playwright-core").exists() {
        return Err(format!(
            "the dashboard test needs Chromium at {chromium} (apt-get install chromium) and \
             `npm ci --prefix tests/browser` (see .ci/run)"
        )
        .into());
    }
    let site = Site::build(spawn_app().await?, 1, 2).await?;
    let operator = site.app.create_user(&site.root, &site.org, "operator").await?;
    let (_, credential) = site.pass(json!({"holder_name": "Marie Curie"})).await?;
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");

    // Async, so the engine (on this test's runtime) keeps answering while the browser runs.
    let run = tokio::process::Command::new("node")
        .arg(browser_tests.join("dashboard.mjs"))
        .env("BASE_URL", &site.app.address)
        .env("EMAIL", &operator.email)
        .env("PASSWORD", PASSWORD)
        .env("GATE_ID", &site.gates[0])
        .env("DEVICE_KEY", &site.device_key)
        .env("CREDENTIAL", credential.to_string())
        .env("HOLDER", "Marie Curie")
        .env("SCREENSHOT", &screenshot)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run).await??;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the dashboard scenario failed:\n{text}");
    assert!(text.contains("dashboard: ok"), "{text}");
    assert!(screenshot.exists());
    Ok(())
}

#[actix_web::test]
async fn the_visitor_journey_in_the_browser_from_invitation_to_check_out() -> TestResult {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let browser_tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !Path::new(&chromium).exists() || !browser_tests.join("node_modules/playwright-core").exists() {
        return Err("the journey test needs Chromium and `npm ci --prefix tests/browser` (see .ci/run)".into());
    }
    let site = Site::build(spawn_app().await?, 1, 2).await?;
    let body = json!({"visitor_rule_id": site.rule});
    let reply = site.app.call("PATCH", &site.path(""), Some(&site.root.access), Some(body)).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let host = site.app.create_user(&site.root, &site.org, "host").await?;
    let reception = site.app.create_user(&site.root, &site.org, "operator").await?;
    let security = site.app.create_user(&site.root, &site.org, "security_officer").await?;
    let entry = json!({"kind": "email", "value": "mallory@example.test", "reason": "banned after an incident"});
    site.post("/deny-list", entry).await?;
    let mail_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("apps").join(&site.app.dbname).join("mail");
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("journey");
    std::fs::create_dir_all(&screenshots)?;

    let run = tokio::process::Command::new("node")
        .arg(browser_tests.join("journey.mjs"))
        .env("BASE_URL", &site.app.address)
        .env("HOST_EMAIL", &host.email)
        .env("RECEPTION_EMAIL", &reception.email)
        .env("SECURITY_EMAIL", &security.email)
        .env("PASSWORD", PASSWORD)
        .env("GATE_IDS", site.gates.join(","))
        .env("DEVICE_KEY", &site.device_key)
        .env("MAIL_DIR", &mail_dir)
        .env("SCREENSHOTS", &screenshots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), run).await??;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the journey failed:\n{text}");
    assert!(text.contains("journey: ok"), "{text}");
    assert!(screenshots.join("guest.png").exists() && screenshots.join("badge.png").exists());
    Ok(())
}
