//! The API document against the running server: schemathesis (from PyPI) generates requests from
//! `/openapi.json` for every operation, as an organization's admin, and checks that none answers
//! with a 5xx and every answer conforms to the document (security finding 7).

use tokio::process::Command;

use crate::helpers::{TestResult, spawn_app};
use crate::site::Site;

#[actix_web::test]
async fn generated_requests_get_no_5xx_and_answers_conform_to_the_document() -> TestResult {
    let st = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "st".to_owned());
    if Command::new(&st).arg("--version").output().await.is_err() {
        return Err(format!(
            "this test needs schemathesis (`pip install schemathesis`, see .ci/run); `{st}` not found"
        )
        .into());
    }
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let admin = site.app.create_user(&site.root, &site.org, "org_admin").await?;
    let (pass, _) = site.pass(serde_json::json!({"credential": {"kind": "qr"}})).await?;
    // Real identifiers, so that operations reach their logic instead of 404.
    let config = std::env::temp_dir().join(format!("pcl-schemathesis-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(
        &config,
        format!(
            "[parameters]\n\"path.org\" = \"{}\"\n\"path.gate\" = \"{}\"\n\"path.zone\" = \"{}\"\n\"path.pass\" = \"{}\"\n\"path.rule\" = \"{}\"\n",
            site.org, site.gates[0], site.zones[0], pass, site.rule
        ),
    )?;
    let output = Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &site.app.url("/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {}", admin.access)])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--max-examples", "25"])
        // Signing out, changing the password and the WebSocket stream end or leave the test's
        // own session; the organization itself is left standing.
        .args(["--exclude-path", "/api/v1/auth/logout", "--exclude-path", "/api/v1/auth/change-password"])
        .args(["--exclude-path-regex", r"/stream$|/orgs/\{org\}$"])
        .env("NO_COLOR", "1")
        .output()
        .await?;
    let _ = std::fs::remove_file(&config);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis found problems:\n{text}");
    assert!(text.contains("passed"), "{text}");
    Ok(())
}
