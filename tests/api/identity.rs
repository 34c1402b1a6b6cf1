//! Operators: login, tokens and their errors, refresh, logout, password change, rate limits.

use serde_json::json;

use crate::helpers::{JWT_SECRET, PASSWORD, TestResult, dump_database, spawn_app, spawn_app_with};

#[actix_web::test]
async fn login_returns_a_token_pair_and_me_shows_the_roles() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let org = app.create_org(&root, "acme").await?;
    let officer = app.create_user(&root, &org, "security_officer").await?;

    let reply = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": officer.email.to_uppercase(), "password": PASSWORD})),
        )
        .await?;
    assert_eq!(reply.status, 200, "emails are case-insensitive: {}", reply.text());
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().is_some_and(|s| s > 0));
    assert!(body["refresh_token"].as_str().is_some_and(|t| t.starts_with("pcr_")));
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));

    let me = app.call("GET", "/api/v1/me", Some(&officer.access), None).await?;
    assert_eq!(me.status, 200);
    let me = me.json();
    assert_eq!(me["email"], officer.email.as_str());
    assert_eq!(me["roles"], json!([{"org_id": org, "role": "security_officer"}]));
    assert!(me.get("password_hash").is_none());
    Ok(())
}

#[actix_web::test]
async fn a_failed_login_does_not_tell_whether_the_account_exists() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let wrong_password = app
        .call("POST", "/api/v1/auth/login", None, Some(json!({"email": root.email, "password": "not it at all"})))
        .await?;
    let unknown = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "nobody@example.test", "password": "not it at all"})),
        )
        .await?;
    assert_eq!(wrong_password.status, 401);
    assert_eq!(unknown.status, 401);
    assert_eq!(wrong_password.error_code().as_deref(), Some("invalid_credentials"));
    assert_eq!(wrong_password.json()["error"], unknown.json()["error"], "identical answers");

    // Both are audited, without the attempted password or email.
    let db = app.db().await?;
    let rows = db
        .query("SELECT details::text, coalesce(target_id, '') FROM audit_log WHERE action = 'auth.login_failed'", &[])
        .await?;
    assert_eq!(rows.len(), 2);
    for row in rows {
        let details: String = row.get(0);
        assert!(!details.contains("not it at all") && !details.contains("nobody@"), "{details}");
    }
    Ok(())
}

#[actix_web::test]
async fn token_errors_have_their_stable_codes() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let code = |reply: crate::helpers::Reply| (reply.status, reply.error_code().unwrap_or_default());

    assert_eq!(code(app.call("GET", "/api/v1/me", None, None).await?), (401, "missing_token".into()));
    assert_eq!(code(app.call("GET", "/api/v1/me", Some("garbage"), None).await?), (401, "invalid_token".into()));
    let basic = app
        .send(app.client.get(app.url("/api/v1/me")).insert_header(("authorization", "Basic cm9vdDpyb290")), None)
        .await?;
    assert_eq!(code(basic), (401, "invalid_token".into()));
    let mut tampered = root.access.clone();
    tampered.insert(tampered.len() / 2, 'x');
    assert_eq!(code(app.call("GET", "/api/v1/me", Some(&tampered), None).await?), (401, "invalid_token".into()));

    // A correctly signed token whose time is up.
    let claims =
        json!({"sub": root.user_id, "sid": uuid::Uuid::new_v4(), "iat": 1_000, "exp": 2_000, "iss": "portcullis"});
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )?;
    let reply = app.call("GET", "/api/v1/me", Some(&expired), None).await?;
    assert_eq!(reply.header("www-authenticate").as_deref(), Some("Bearer"));
    assert_eq!(code(reply), (401, "token_expired".into()));
    Ok(())
}

#[actix_web::test]
async fn a_refresh_token_works_once_and_its_reuse_ends_the_session() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let first = app.call("POST", "/api/v1/auth/refresh", None, Some(json!({"refresh_token": root.refresh}))).await?;
    assert_eq!(first.status, 200, "{}", first.text());
    let new_access = first.json()["access_token"].as_str().unwrap_or_default().to_owned();
    let new_refresh = first.json()["refresh_token"].as_str().unwrap_or_default().to_owned();
    assert_ne!(new_refresh, root.refresh);
    assert_eq!(app.call("GET", "/api/v1/me", Some(&new_access), None).await?.status, 200);

    // The old token again: someone copied it. The whole session ends.
    let reused = app.call("POST", "/api/v1/auth/refresh", None, Some(json!({"refresh_token": root.refresh}))).await?;
    assert_eq!((reused.status, reused.error_code().as_deref()), (401, Some("invalid_token")));
    let after = app.call("POST", "/api/v1/auth/refresh", None, Some(json!({"refresh_token": new_refresh}))).await?;
    assert_eq!(after.status, 401, "the legitimate holder's token dies with the session");
    assert_eq!(app.call("GET", "/api/v1/me", Some(&new_access), None).await?.status, 401);
    let db = app.db().await?;
    let reason: Option<String> = db.query_one("SELECT revoke_reason FROM sessions", &[]).await?.get(0);
    assert_eq!(reason.as_deref(), Some("refresh_token_reused"));
    let audited = db.query("SELECT 1 FROM audit_log WHERE action = 'auth.refresh_reuse_detected'", &[]).await?;
    assert_eq!(audited.len(), 1);

    let junk =
        app.call("POST", "/api/v1/auth/refresh", None, Some(json!({"refresh_token": "pcr_notasession_x"}))).await?;
    assert_eq!(junk.status, 401);
    let missing = app.call("POST", "/api/v1/auth/refresh", None, Some(json!({}))).await?;
    assert_eq!(missing.status, 422);
    assert_eq!(missing.json()["error"]["details"]["fields"]["refresh_token"], "is required");
    Ok(())
}

#[actix_web::test]
async fn logout_ends_this_session_only() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let other = app.login(&root.email, PASSWORD).await?;
    assert_eq!(app.call("POST", "/api/v1/auth/logout", Some(&root.access), None).await?.status, 204);
    assert_eq!(
        app.call("GET", "/api/v1/me", Some(&root.access), None).await?.error_code().as_deref(),
        Some("invalid_token")
    );
    let refresh = app.call("POST", "/api/v1/auth/refresh", None, Some(json!({"refresh_token": root.refresh}))).await?;
    assert_eq!(refresh.status, 401);
    assert_eq!(app.call("GET", "/api/v1/me", Some(&other.access), None).await?.status, 200);
    Ok(())
}

#[actix_web::test]
async fn changing_the_password_ends_the_other_sessions() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let laptop = app.login(&root.email, PASSWORD).await?;
    let path = "/api/v1/auth/change-password";

    let wrong = app
        .call(
            "POST",
            path,
            Some(&root.access),
            Some(json!({"current_password": "nope nope nope", "new_password": "a much better passphrase"})),
        )
        .await?;
    assert_eq!((wrong.status, wrong.error_code().as_deref()), (401, Some("invalid_credentials")));
    let short = app
        .call("POST", path, Some(&root.access), Some(json!({"current_password": PASSWORD, "new_password": "short"})))
        .await?;
    assert_eq!(short.status, 422);
    assert!(short.json()["error"]["details"]["fields"]["new_password"].is_string());

    let ok = app
        .call(
            "POST",
            path,
            Some(&root.access),
            Some(json!({"current_password": PASSWORD, "new_password": "a much better passphrase"})),
        )
        .await?;
    assert_eq!(ok.status, 204, "{}", ok.text());
    assert_eq!(app.call("GET", "/api/v1/me", Some(&root.access), None).await?.status, 200, "this session stays");
    assert_eq!(app.call("GET", "/api/v1/me", Some(&laptop.access), None).await?.status, 401, "the others end");
    assert!(app.login(&root.email, PASSWORD).await.is_err());
    assert!(app.login(&root.email, "a much better passphrase").await.is_ok());
    Ok(())
}

#[actix_web::test]
async fn logins_are_rate_limited_per_account_and_per_address() -> TestResult {
    let app = spawn_app_with(|s| {
        s.auth.login_attempts_per_account = std::num::NonZeroU32::MIN.saturating_add(2); // 3 a minute
        s.auth.login_attempts_per_address = std::num::NonZeroU32::MIN.saturating_add(5); // 6 a minute
    })
    .await?;
    let attempt = |email: &str| {
        app.call("POST", "/api/v1/auth/login", None, Some(json!({"email": email, "password": "guess guess guess"})))
    };
    for _ in 0..3 {
        assert_eq!(attempt("victim@example.test").await?.status, 401);
    }
    let limited = attempt("victim@example.test").await?;
    assert_eq!((limited.status, limited.error_code().as_deref()), (429, Some("rate_limited")));
    assert!(limited.header("retry-after").and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s >= 1));

    // Other accounts from the same address: the address limit (6) catches the spray.
    let mut statuses = Vec::new();
    for i in 0..4 {
        statuses.push(attempt(&format!("spray{i}@example.test")).await?.status);
    }
    assert_eq!(statuses, [401, 401, 429, 429], "4 attempts used before, 6 allowed per address");
    Ok(())
}

#[actix_web::test]
async fn nothing_in_the_database_recovers_a_password_token_or_key() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let org = app.create_org(&root, "acme").await?;
    let user = app.create_user(&root, &org, "operator").await?;
    let refreshed =
        app.call("POST", "/api/v1/auth/refresh", None, Some(json!({"refresh_token": user.refresh}))).await?.json();
    let (_, key) = app.create_key(&root, &org, &["org:read"], &[]).await?;
    let everything = dump_database(&app.db().await?).await?;
    assert!(everything.contains(&user.email), "the dump holds the rows");
    let secrets = [
        PASSWORD.to_owned(),
        root.access.clone(),
        root.refresh.clone(),
        user.refresh.clone(),
        refreshed["refresh_token"].as_str().unwrap_or("missing").to_owned(),
        key.clone(),
    ];
    for secret in &secrets {
        // Any 16 consecutive characters would be a leak, not only the whole value.
        let probe: String = secret.chars().rev().take(16).collect::<Vec<_>>().into_iter().rev().collect();
        assert!(!everything.contains(&probe), "a secret can be read from the database");
    }
    Ok(())
}
