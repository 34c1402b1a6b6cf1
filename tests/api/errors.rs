//! The one error shape of API.md.

use crate::helpers::{TestResult, spawn_app};

#[actix_web::test]
async fn unknown_route_is_a_shaped_404() -> TestResult {
    let app = spawn_app().await?;
    let reply = app.get("/api/v1/nothing-here").await?;
    assert_eq!(reply.status, 404);
    let body = reply.json();
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(body["error"]["details"].is_object(), "{body}");
    assert!(reply.header("x-request-id").is_some());
    Ok(())
}

#[actix_web::test]
async fn wrong_method_is_a_shaped_405() -> TestResult {
    let app = spawn_app().await?;
    let reply = app.send(app.client.post(app.url("/health")), Some(b"{}")).await?;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.error_code().as_deref(), Some("method_not_allowed"));
    assert!(reply.header("x-request-id").is_some());
    Ok(())
}
