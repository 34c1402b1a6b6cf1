//! API keys: shown once, stored as HMAC, scoped, bound to gates, rotated atomically, revoked.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{PEPPER, TestResult, connection_string, spawn_app};

#[actix_web::test]
async fn a_key_is_shown_once_works_and_is_stored_only_as_a_hash() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let org = app.create_org(&root, "acme").await?;
    let (id, key) = app.create_key(&root, &org, &["org:read"], &[]).await?;
    assert!(key.starts_with("pcl_live_") && key.len() > 40, "{key}");

    let listed = app.call("GET", &format!("/api/v1/orgs/{org}/api-keys"), Some(&root.access), None).await?;
    assert!(!listed.text().contains(&key) && !listed.text().contains("key_hash"));
    let one = app.call("GET", &format!("/api/v1/orgs/{org}/api-keys/{id}"), Some(&root.access), None).await?.json();
    assert!(one.get("key").is_none());
    assert!(key.starts_with(one["prefix"].as_str().unwrap_or("?")));

    assert_eq!(app.call("GET", &format!("/api/v1/orgs/{org}"), Some(&key), None).await?.status, 200);
    let db = app.db().await?;
    let select = "SELECT key_hash, last_used_at IS NOT NULL FROM api_keys WHERE id = $1";
    let row = db.query_one(select, &[&Uuid::try_parse(&id)?]).await?;
    let hash: Vec<u8> = row.get(0);
    assert_eq!(hash, portcullis::crypto::keyed_hash(&secrecy::SecretString::from(PEPPER.to_owned()), "api-key", &key));
    // The last use is written off the request path (a device never waits for it): soon after.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !db.query_one(select, &[&Uuid::try_parse(&id)?]).await?.get::<_, bool>(1) {
        assert!(std::time::Instant::now() < deadline, "last use is recorded");
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

#[actix_web::test]
async fn rotation_is_atomic_and_revocation_is_final() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let org = app.create_org(&root, "acme").await?;
    let (id, old) = app.create_key(&root, &org, &["org:read"], &[]).await?;
    let org_path = format!("/api/v1/orgs/{org}");

    let rotated = app.call("POST", &format!("{org_path}/api-keys/{id}/rotate"), Some(&root.access), None).await?;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let new = rotated.json()["key"].as_str().unwrap_or_default().to_owned();
    let new_id = rotated.json()["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(rotated.json()["rotated_from"], id.as_str());
    assert_eq!(rotated.json()["scopes"], json!(["org:read"]));
    // When the rotation answered, the old key was already dead and the new one alive.
    assert_eq!(app.call("GET", &org_path, Some(&old), None).await?.status, 401);
    assert_eq!(app.call("GET", &org_path, Some(&new), None).await?.status, 200);
    let again = app.call("POST", &format!("{org_path}/api-keys/{id}/rotate"), Some(&root.access), None).await?;
    assert_eq!((again.status, again.error_code().as_deref()), (409, Some("key_revoked")));

    let revoked = app.call("POST", &format!("{org_path}/api-keys/{new_id}/revoke"), Some(&root.access), None).await?;
    assert!(revoked.json()["revoked_at"].is_string());
    let denied = app.call("GET", &org_path, Some(&new), None).await?;
    assert_eq!((denied.status, denied.error_code().as_deref()), (401, Some("invalid_token")));

    let audit = app.call("GET", &format!("{org_path}/audit"), Some(&root.access), None).await?;
    let actions: Vec<String> = audit.json()["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["action"].as_str().map(str::to_owned))
        .collect();
    for action in ["api_key.created", "api_key.rotated", "api_key.revoked"] {
        assert!(actions.iter().any(|a| a == action), "{action} not audited: {actions:?}");
    }
    assert!(!audit.text().contains(&old) && !audit.text().contains(&new), "no secrets in the audit log");
    Ok(())
}

#[actix_web::test]
async fn an_expired_key_says_so() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let org = app.create_org(&root, "acme").await?;
    let (id, key) = app.create_key(&root, &org, &["org:read"], &[]).await?;
    app.db()
        .await?
        .execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = $1",
            &[&Uuid::try_parse(&id)?],
        )
        .await?;
    let reply = app.call("GET", &format!("/api/v1/orgs/{org}"), Some(&key), None).await?;
    assert_eq!((reply.status, reply.error_code().as_deref()), (401, Some("token_expired")));
    Ok(())
}

#[actix_web::test]
async fn keys_are_checked_for_scopes_gates_and_who_grants_them() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let org = app.create_org(&root, "acme").await?;
    let other = app.create_org(&root, "other").await?;
    let developer = app.create_user(&root, &org, "developer").await?;
    let path = format!("/api/v1/orgs/{org}/api-keys");
    let create = |token: String, body: serde_json::Value| {
        let path = path.clone();
        let app = &app;
        async move { app.call("POST", &path, Some(&token), Some(body)).await }
    };
    let field =
        |reply: &crate::helpers::Reply, name: &str| reply.json()["error"]["details"]["fields"][name].is_string();

    let r = create(developer.access.clone(), json!({"name": "k", "scopes": ["passes:write"]})).await?;
    assert!(r.status == 422 && field(&r, "scopes"), "a developer cannot grant what they cannot do: {}", r.text());
    let r = create(root.access.clone(), json!({"name": "k", "scopes": ["root:*"]})).await?;
    assert!(r.status == 422 && field(&r, "scopes[0]"), "{}", r.text());
    let r = create(root.access.clone(), json!({"name": "k", "scopes": ["gate:decide"]})).await?;
    assert!(r.status == 422 && field(&r, "gate_ids"), "{}", r.text());
    // A gate of another organization.
    let db = app.db().await?;
    let (zone, gate) = (Uuid::now_v7(), Uuid::now_v7());
    let other_id = Uuid::try_parse(&other)?;
    db.execute("INSERT INTO zones (id, org_id, name) VALUES ($1, $2, 'Lobby')", &[&zone, &other_id]).await?;
    db.execute(
        "INSERT INTO gates (id, org_id, zone_id, name, direction) VALUES ($1, $2, $3, 'G', 'in')",
        &[&gate, &other_id, &zone],
    )
    .await?;
    let r = create(root.access.clone(), json!({"name": "k", "scopes": ["gate:decide"], "gate_ids": [gate]})).await?;
    assert!(r.status == 422 && field(&r, "gate_ids"), "{}", r.text());
    let r =
        create(root.access.clone(), json!({"name": "k", "scopes": ["org:read"], "expires_at": "2001-01-01T00:00:00Z"}))
            .await?;
    assert!(r.status == 422 && field(&r, "expires_at"), "{}", r.text());
    let r = create(root.access.clone(), json!({"name": "k", "scopes": ["org:read"], "env": "test"})).await?;
    assert_eq!(r.status, 201);
    assert!(r.json()["key"].as_str().is_some_and(|k| k.starts_with("pcl_test_")));
    Ok(())
}

#[actix_web::test]
async fn an_installer_can_create_a_device_key_from_the_command_line() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let org = app.create_org(&root, "site-7").await?;
    let out = std::process::Command::new(crate::helpers::engine_binary())
        .args(["api-key", "create", "--org", "site-7", "--name", "Lobby reader", "--scope", "org:read"])
        .env("PORTCULLIS__DATABASE__URL", connection_string(&app.dbname))
        .env("PORTCULLIS__AUTH__JWT_SECRET", crate::helpers::JWT_SECRET)
        .env("PORTCULLIS__AUTH__API_KEY_PEPPER", PEPPER)
        .env("PORTCULLIS__LOG__LEVEL", "warn")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let created: serde_json::Value = serde_json::from_str(&stdout)?;
    let key = created["key"].as_str().unwrap_or_default();
    assert_eq!(app.call("GET", &format!("/api/v1/orgs/{org}"), Some(key), None).await?.status, 200);

    let bad = std::process::Command::new(crate::helpers::engine_binary())
        .args(["api-key", "create", "--org", "site-7", "--name", "x", "--scope", "gate:decide"])
        .env("PORTCULLIS__DATABASE__URL", connection_string(&app.dbname))
        .env("PORTCULLIS__AUTH__JWT_SECRET", crate::helpers::JWT_SECRET)
        .env("PORTCULLIS__AUTH__API_KEY_PEPPER", PEPPER)
        .output()?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("gate_ids"), "{}", String::from_utf8_lossy(&bad.stderr));
    Ok(())
}
