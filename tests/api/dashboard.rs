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
