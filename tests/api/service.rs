//! `/health`, `/ready`, `/version`, `/metrics` and the request id.

use crate::helpers::{TestResult, connect, spawn_app};

#[actix_web::test]
async fn health_answers_ok_with_a_request_id() -> TestResult {
    let app = spawn_app().await?;
    let reply = app.get("/health").await?;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["status"], "ok");
    let id = reply.header("x-request-id").unwrap_or_default();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "request id `{id}` should be a UUID");
    Ok(())
}

#[actix_web::test]
async fn a_sane_client_request_id_is_echoed_and_an_unsafe_one_replaced() -> TestResult {
    let app = spawn_app().await?;
    let reply =
        app.send(app.client.get(app.url("/health")).insert_header(("x-request-id", "turnstile-7.42")), None).await?;
    assert_eq!(reply.header("x-request-id").as_deref(), Some("turnstile-7.42"));
    let reply =
        app.send(app.client.get(app.url("/health")).insert_header(("x-request-id", "a b<script>")), None).await?;
    let id = reply.header("x-request-id").unwrap_or_default();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "unsafe id should be replaced, got `{id}`");
    Ok(())
}

#[actix_web::test]
async fn ready_reports_the_database_and_says_degraded_not_dead_when_it_is_gone() -> TestResult {
    let app = spawn_app().await?;
    let reply = app.get("/ready").await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["status"], "ready");
    assert_eq!(reply.json()["checks"]["database"], "ok");
    assert_eq!(reply.json()["spool"]["records"], 0);

    // Take the database away under the running engine: gates still decide from memory, so the
    // engine is degraded, not dead (a load balancer must not take it out of service).
    connect("postgres").await?.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", app.dbname)).await?;
    let reply = app.get("/ready").await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["status"], "degraded");
    assert_eq!(reply.json()["checks"]["database"], "unreachable");
    // Liveness is not readiness: the process still answers.
    assert_eq!(app.get("/health").await?.status, 200);
    Ok(())
}

#[actix_web::test]
async fn version_names_the_build_and_the_schema() -> TestResult {
    let app = spawn_app().await?;
    let body = app.get("/version").await?.json();
    assert_eq!(body["name"], "portcullis");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["schema_version"].as_i64().is_some_and(|v| v >= 1), "{body}");
    Ok(())
}

#[actix_web::test]
async fn metrics_expose_portcullis_series_for_requests_served() -> TestResult {
    let app = spawn_app().await?;
    app.get("/health").await?;
    app.get("/no-such-route").await?;
    let reply = app.get("/metrics").await?;
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").unwrap_or_default().starts_with("text/plain"));
    let text = reply.text();
    assert!(text.contains(r#"portcullis_http_requests_total{method="GET",route="/health",status="200"}"#), "{text}");
    // Unknown paths are grouped, so scanners cannot blow up the series count.
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    assert!(text.contains("portcullis_http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("portcullis_db_pool_connections"), "{text}");
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        assert!(line.starts_with("portcullis_"), "every metric is portcullis_*: {line}");
    }
    Ok(())
}

#[actix_web::test]
async fn the_api_document_describes_every_route() -> TestResult {
    let app = spawn_app().await?;
    let doc = app.get("/openapi.json").await?;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    for (method, path) in portcullis::http::routes::ROUTES {
        let op = &doc["paths"][path][method.to_lowercase()];
        assert!(op["summary"].is_string(), "{method} {path} is not described");
        assert!(op["description"].as_str().is_some_and(|d| d.starts_with("Who may call it")), "{method} {path}");
    }
    let revoke = &doc["paths"]["/api/v1/orgs/{org}/passes/{pass}/revoke"]["post"];
    assert_eq!(
        revoke["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Revoked"
    );
    assert!(revoke["responses"]["409"].is_object() && revoke["responses"]["403"].is_object());
    assert!(doc["components"]["schemas"]["IssuePass"].is_object());
    Ok(())
}
