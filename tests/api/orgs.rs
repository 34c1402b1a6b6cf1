//! Organizations: creation rules, access modes, export, deletion, the audit trail.

use serde_json::json;

use crate::helpers::{TestResult, spawn_app};

#[actix_web::test]
async fn only_a_platform_admin_creates_organizations_and_bad_input_is_named() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let org = app.create_org(&root, "acme").await?;
    let admin = app.create_user(&root, &org, "org_admin").await?;

    let body = json!({"name": "Mine", "slug": "mine", "timezone": "UTC"});
    let reply = app.call("POST", "/api/v1/orgs", Some(&admin.access), Some(body)).await?;
    assert_eq!((reply.status, reply.error_code().as_deref()), (403, Some("forbidden")));

    let bad = json!({"name": "", "slug": "Not A Slug", "timezone": "Mars/Olympus_Mons"});
    let reply = app.call("POST", "/api/v1/orgs", Some(&root.access), Some(bad)).await?;
    assert_eq!(reply.status, 422);
    let fields = &reply.json()["error"]["details"]["fields"];
    for field in ["name", "slug", "timezone"] {
        assert!(fields[field].is_string(), "{field} should be named: {fields}");
    }
    let dup = json!({"name": "Again", "slug": "acme", "timezone": "UTC"});
    let reply = app.call("POST", "/api/v1/orgs", Some(&root.access), Some(dup)).await?;
    assert_eq!((reply.status, reply.error_code().as_deref()), (409, Some("already_exists")));
    Ok(())
}

#[actix_web::test]
async fn read_only_refuses_mutations_and_blocked_refuses_everything_until_switched_back() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let org = app.create_org(&root, "acme").await?;
    let admin = app.create_user(&root, &org, "org_admin").await?;
    let org_path = format!("/api/v1/orgs/{org}");
    let set_mode =
        |mode: &'static str| app.call("PATCH", &org_path, Some(&root.access), Some(json!({"access_mode": mode})));

    assert_eq!(set_mode("read_only").await?.json()["access_mode"], "read_only");
    assert_eq!(app.call("GET", &org_path, Some(&admin.access), None).await?.status, 200);
    let rename = app.call("PATCH", &org_path, Some(&admin.access), Some(json!({"name": "New name"}))).await?;
    assert_eq!((rename.status, rename.error_code().as_deref()), (403, Some("read_only")));
    let new_user =
        json!({"email": "x@example.test", "name": "X", "password": crate::helpers::PASSWORD, "role": "guest"});
    let create = app.call("POST", &format!("{org_path}/users"), Some(&admin.access), Some(new_user)).await?;
    assert_eq!(create.error_code().as_deref(), Some("read_only"));

    assert_eq!(set_mode("blocked").await?.json()["access_mode"], "blocked");
    let read = app.call("GET", &org_path, Some(&admin.access), None).await?;
    assert_eq!((read.status, read.error_code().as_deref()), (403, Some("org_blocked")));

    assert_eq!(set_mode("active").await?.status, 200, "the platform admin can always switch back");
    let rename = app.call("PATCH", &org_path, Some(&admin.access), Some(json!({"name": "New name"}))).await?;
    assert_eq!(rename.status, 200);

    let audit =
        app.call("GET", &format!("{org_path}/audit?action=org.access_mode_changed"), Some(&admin.access), None).await?;
    let changes: Vec<(String, String)> = audit.json()["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["details"]["from"].as_str().unwrap_or("").into(), e["details"]["to"].as_str().unwrap_or("").into()))
        .collect();
    let expected = [("blocked", "active"), ("read_only", "blocked"), ("active", "read_only")];
    assert_eq!(changes, expected.map(|(a, b)| (a.to_owned(), b.to_owned())), "newest first");
    Ok(())
}

#[actix_web::test]
async fn a_stale_version_is_a_conflict() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let org = app.create_org(&root, "acme").await?;
    let path = format!("/api/v1/orgs/{org}");
    let version = app.call("GET", &path, Some(&root.access), None).await?.json()["version"].as_i64().unwrap_or(0);
    let first = app.call("PATCH", &path, Some(&root.access), Some(json!({"name": "One", "version": version}))).await?;
    assert_eq!(first.status, 200);
    let second = app.call("PATCH", &path, Some(&root.access), Some(json!({"name": "Two", "version": version}))).await?;
    assert_eq!((second.status, second.error_code().as_deref()), (409, Some("version_conflict")));
    Ok(())
}

#[actix_web::test]
async fn export_has_the_organizations_data_and_no_secrets() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let org = app.create_org(&root, "acme").await?;
    let admin = app.create_user(&root, &org, "org_admin").await?;
    let (_, key) = app.create_key(&admin, &org, &["org:read"], &[]).await?;
    let other = app.create_org(&root, "other").await?;
    let stranger = app.create_user(&root, &other, "operator").await?;

    let reply = app.call("GET", &format!("/api/v1/orgs/{org}/export"), Some(&admin.access), None).await?;
    assert_eq!(reply.status, 200);
    let export = reply.json();
    assert_eq!(export["organization"]["id"], org.as_str());
    let emails: Vec<&str> =
        export["users"].as_array().into_iter().flatten().filter_map(|u| u["email"].as_str()).collect();
    assert_eq!(emails, [admin.email.as_str()], "its own users, and only them");
    assert_eq!(export["api_keys"].as_array().map(Vec::len), Some(1));
    assert!(export["audit_log"].as_array().is_some_and(|a| !a.is_empty()));
    let text = reply.text();
    for secret in ["password_hash", "key_hash", "lookup_hash", "$argon2", key.as_str(), &stranger.email] {
        assert!(!text.contains(secret), "the export must not contain `{secret}`");
    }
    Ok(())
}

#[actix_web::test]
async fn deleting_an_organization_removes_what_it_owns_and_keeps_the_audit_trail() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let org = app.create_org(&root, "doomed").await?;
    let member = app.create_user(&root, &org, "operator").await?;
    let (_, key) = app.create_key(&root, &org, &["org:read"], &[]).await?;
    let path = format!("/api/v1/orgs/{org}");

    assert_eq!(app.call("DELETE", &path, Some(&root.access), None).await?.status, 204);
    assert_eq!(app.call("GET", &path, Some(&root.access), None).await?.status, 404);
    assert_eq!(app.call("GET", &path, Some(&key), None).await?.status, 401, "its keys are gone");
    assert!(app.login(&member.email, crate::helpers::PASSWORD).await.is_err(), "its own accounts are gone");

    let db = app.db().await?;
    let left: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM memberships) + (SELECT count(*) FROM api_keys) + (SELECT count(*) FROM users WHERE NOT is_platform_admin)",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(left, 0);
    let trail = db.query("SELECT 1 FROM audit_log WHERE action = 'org.deleted' AND target_id = $1", &[&org]).await?;
    assert_eq!(trail.len(), 1);
    Ok(())
}

#[actix_web::test]
async fn role_changes_apply_at_once_and_disabled_members_lose_access() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let org = app.create_org(&root, "acme").await?;
    let user = app.create_user(&root, &org, "guest").await?;
    let users = format!("/api/v1/orgs/{org}/users");
    let me_path = format!("{users}/{}", user.user_id);

    // Prime the permission cache, then promote: the new role applies on the next request.
    assert_eq!(app.call("GET", &users, Some(&user.access), None).await?.status, 403);
    let promoted = app.call("PATCH", &me_path, Some(&root.access), Some(json!({"role": "security_officer"}))).await?;
    assert_eq!(promoted.json()["role"], "security_officer");
    assert_eq!(app.call("GET", &users, Some(&user.access), None).await?.status, 200);

    let disabled = app.call("PATCH", &me_path, Some(&root.access), Some(json!({"disabled": true}))).await?;
    assert_eq!(disabled.json()["disabled"], true);
    assert_eq!(app.call("GET", &format!("/api/v1/orgs/{org}"), Some(&user.access), None).await?.status, 404);

    let bad = app.call("PATCH", &me_path, Some(&root.access), Some(json!({"role": "platform_admin"}))).await?;
    assert_eq!(bad.status, 422);
    let unknown = app.call("PATCH", &me_path, Some(&root.access), Some(json!({"role": "overlord"}))).await?;
    assert_eq!(unknown.status, 422);
    assert!(unknown.json()["error"]["details"]["fields"]["role"].is_string(), "{}", unknown.text());

    let audit = app.call("GET", &format!("/api/v1/orgs/{org}/audit"), Some(&root.access), None).await?.json();
    let actions: Vec<&str> =
        audit["items"].as_array().into_iter().flatten().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"user.role_changed") && actions.contains(&"user.disabled"), "{actions:?}");
    Ok(())
}

#[actix_web::test]
async fn lists_are_cursor_paginated() -> TestResult {
    let app = spawn_app().await?;
    let root = app.platform_admin().await?;
    let org = app.create_org(&root, "acme").await?;
    for _ in 0..3 {
        app.create_user(&root, &org, "guest").await?;
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app
            .call("GET", &format!("/api/v1/orgs/{org}/users?limit=2&cursor={cursor}"), Some(&root.access), None)
            .await?;
        assert_eq!(page.status, 200, "{}", page.text());
        let body = page.json();
        seen.extend(body["items"].as_array().into_iter().flatten().filter_map(|u| u["id"].as_str().map(str::to_owned)));
        match body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (3, 3));
    let bad = app.call("GET", &format!("/api/v1/orgs/{org}/users?cursor=zzz"), Some(&root.access), None).await?;
    assert_eq!((bad.status, bad.json()["error"]["details"]["fields"]["cursor"].is_string()), (422, true));
    let bad = app.call("GET", &format!("/api/v1/orgs/{org}/users?limit=many"), Some(&root.access), None).await?;
    assert_eq!(bad.status, 422);
    Ok(())
}
