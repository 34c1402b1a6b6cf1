//! The authorization matrix: every organization route, called by every role, gets exactly what
//! the permission table allows; a caller from another organization gets 403 or 404 and no data.

use serde_json::{Value, json};

use crate::helpers::{Login, TestApp, TestResult, spawn_app};

/// Column order of the expectations below.
const ROLES: [&str; 7] = ["platform_admin", "org_admin", "security_officer", "operator", "host", "guest", "developer"];

/// What a case acts on, made fresh for each caller so that one call cannot spoil the next.
#[derive(Clone, Copy)]
enum Target {
    Org,
    /// A new user of the organization (`{user}`).
    User,
    /// A new API key of the organization (`{key}`) with `org:read` only.
    Key,
    /// A new API key with scopes a developer may not grant (`{key}`).
    StrongKey,
    /// A new pass with a QR credential, issued by the platform admin (`{pass}`).
    Pass,
    /// A new organization in which the caller holds the role (for deleting it).
    OwnOrg,
}

struct Case {
    method: &'static str,
    path: &'static str,
    body: fn() -> Option<Value>,
    target: Target,
    /// One character per role in ROLES order: Y allowed, . denied (403), o allowed on what the
    /// caller owns only (another's object is 404, as if it did not exist).
    expected: &'static str,
}

fn none() -> Option<Value> {
    None
}

const CASES: &[Case] = &[
    Case { method: "GET", path: "/orgs/{org}", body: none, target: Target::Org, expected: "YYYYYYY" },
    Case {
        method: "PATCH",
        path: "/orgs/{org}",
        body: || Some(json!({"name": "Renamed"})),
        target: Target::Org,
        expected: "YY.....",
    },
    Case {
        method: "PATCH",
        path: "/orgs/{org}",
        body: || Some(json!({"access_mode": "active"})),
        target: Target::Org,
        expected: "Y......",
    },
    Case { method: "DELETE", path: "/orgs/{org}", body: none, target: Target::OwnOrg, expected: "Y......" },
    Case { method: "GET", path: "/orgs/{org}/export", body: none, target: Target::Org, expected: "YY....." },
    Case { method: "GET", path: "/orgs/{org}/audit", body: none, target: Target::Org, expected: "YYY...." },
    Case { method: "GET", path: "/orgs/{org}/users", body: none, target: Target::Org, expected: "YYY...." },
    Case {
        method: "POST",
        path: "/orgs/{org}/users",
        body: || {
            let email = format!("new-{}@example.test", uuid::Uuid::new_v4().simple());
            Some(json!({"email": email, "name": "New", "password": crate::helpers::PASSWORD, "role": "guest"}))
        },
        target: Target::Org,
        expected: "YY.....",
    },
    Case { method: "GET", path: "/orgs/{org}/users/{user}", body: none, target: Target::User, expected: "YYY...." },
    Case {
        method: "PATCH",
        path: "/orgs/{org}/users/{user}",
        body: || Some(json!({"role": "host"})),
        target: Target::User,
        expected: "YY.....",
    },
    Case { method: "GET", path: "/orgs/{org}/api-keys", body: none, target: Target::Org, expected: "YY....Y" },
    Case {
        method: "POST",
        path: "/orgs/{org}/api-keys",
        body: || Some(json!({"name": "integration", "scopes": ["org:read"]})),
        target: Target::Org,
        expected: "YY....Y",
    },
    Case { method: "GET", path: "/orgs/{org}/api-keys/{key}", body: none, target: Target::Key, expected: "YY....Y" },
    Case {
        method: "POST",
        path: "/orgs/{org}/api-keys/{key}/rotate",
        body: none,
        target: Target::Key,
        expected: "YY....Y",
    },
    Case {
        method: "POST",
        path: "/orgs/{org}/api-keys/{key}/revoke",
        body: none,
        target: Target::Key,
        expected: "YY....Y",
    },
    // Rotating or revoking a key passes the rule of creating it: a developer may not act on a key
    // that holds scopes they could not grant.
    Case {
        method: "POST",
        path: "/orgs/{org}/api-keys/{key}/rotate",
        body: none,
        target: Target::StrongKey,
        expected: "YY.....",
    },
    Case {
        method: "POST",
        path: "/orgs/{org}/api-keys/{key}/revoke",
        body: none,
        target: Target::StrongKey,
        expected: "YY.....",
    },
    Case { method: "GET", path: "/orgs/{org}/passes", body: none, target: Target::Org, expected: "YYYYY.Y" },
    Case { method: "GET", path: "/orgs/{org}/passes/{pass}", body: none, target: Target::Pass, expected: "YYYYo.Y" },
    // A live QR code opens gates as its holder: for those who issue passes, not for readers.
    Case { method: "GET", path: "/orgs/{org}/passes/{pass}/qr", body: none, target: Target::Pass, expected: "YYYYo.." },
    Case {
        method: "POST",
        path: "/orgs/{org}/passes/{pass}/revoke",
        body: || Some(json!({"reason": "matrix"})),
        target: Target::Pass,
        expected: "YYYY...",
    },
    // The visitor desk: reading and inviting for hosts too (their own), the deny list for security.
    Case { method: "GET", path: "/orgs/{org}/visitors", body: none, target: Target::Org, expected: "YYYYY.." },
    Case {
        method: "POST",
        path: "/orgs/{org}/visitors",
        body: || Some(json!({"name": "Matrix Visitor"})),
        target: Target::Org,
        expected: "YYYYY..",
    },
    Case { method: "GET", path: "/orgs/{org}/visits", body: none, target: Target::Org, expected: "YYYYY.." },
    Case { method: "GET", path: "/orgs/{org}/appointments", body: none, target: Target::Org, expected: "YYYYY.." },
    Case { method: "GET", path: "/orgs/{org}/deny-list", body: none, target: Target::Org, expected: "YYY...." },
    Case { method: "GET", path: "/orgs/{org}/hosts", body: none, target: Target::Org, expected: "YYYYY.." },
    Case { method: "GET", path: "/orgs/{org}/departments", body: none, target: Target::Org, expected: "YYYYY.." },
    Case {
        method: "POST",
        path: "/orgs/{org}/departments",
        body: || Some(json!({"name": uuid::Uuid::new_v4().to_string()})),
        target: Target::Org,
        expected: "YY.....",
    },
    // Who is inside: for those who read check-ins, not for hosts.
    Case { method: "GET", path: "/orgs/{org}/muster", body: none, target: Target::Org, expected: "YYYY..Y" },
    Case {
        method: "POST",
        path: "/orgs/{org}/deny-list",
        body: || Some(json!({"kind": "name", "value": uuid::Uuid::new_v4().to_string(), "reason": "matrix"})),
        target: Target::Org,
        expected: "YYY....",
    },
];

/// Scopes beyond a developer's own permissions.
const STRONG_SCOPES: [&str; 4] = ["audit:read", "passes:write", "config:write", "events:read"];

struct World {
    app: TestApp,
    root: Login,
    org: String,
    /// An access rule of the organization, for passes.
    rule: String,
    /// One signed-in user per role of ROLES (the platform admin first).
    members: Vec<Login>,
}

impl World {
    async fn new() -> TestResult<World> {
        let app = spawn_app().await?;
        let root = app.platform_admin().await?;
        let org = app.create_org(&root, "matrix").await?;
        let mut members = vec![root.clone()];
        for role in &ROLES[1..] {
            members.push(app.create_user(&root, &org, role).await?);
        }
        let zones = format!("/api/v1/orgs/{org}/zones");
        let zone = app.call("POST", &zones, Some(&root.access), Some(json!({"name": "Lobby"}))).await?;
        let zone = zone.json()["id"].as_str().unwrap_or_default().to_owned();
        let rule = json!({"name": "Always", "zone_ids": [zone]});
        let rule =
            app.call("POST", &format!("/api/v1/orgs/{org}/access-rules"), Some(&root.access), Some(rule)).await?;
        let rule = rule.json()["id"].as_str().unwrap_or_default().to_owned();
        Ok(World { app, root, org, rule, members })
    }

    /// A pass with a QR credential, issued by the platform admin.
    async fn issue_pass(&self) -> TestResult<String> {
        let now = chrono::Utc::now();
        let body = json!({
            "holder_name": "Matrix visitor", "access_rule_id": self.rule, "type": "multi", "max_uses": 3,
            "valid_from": now.to_rfc3339(), "valid_to": (now + chrono::Duration::hours(1)).to_rfc3339(),
            "credential": {"kind": "qr"},
        });
        let reply = self
            .app
            .call("POST", &format!("/api/v1/orgs/{}/passes", self.org), Some(&self.root.access), Some(body))
            .await?;
        if reply.status != 201 {
            return Err(format!("issue pass failed: {} {}", reply.status, reply.text()).into());
        }
        Ok(reply.json()["id"].as_str().unwrap_or_default().to_owned())
    }

    /// The path and caller for one case and role, with a fresh target.
    async fn prepare(&self, case: &Case, role_index: usize) -> TestResult<(String, Login)> {
        let mut path = format!("/api/v1{}", case.path);
        let mut caller = self.members[role_index].clone();
        let mut org = self.org.clone();
        match case.target {
            Target::Org => {}
            Target::User => {
                let user = self.app.create_user(&self.root, &self.org, "guest").await?;
                path = path.replace("{user}", &user.user_id);
            }
            Target::Key => {
                let (key_id, _) = self.app.create_key(&self.root, &self.org, &["org:read"], &[]).await?;
                path = path.replace("{key}", &key_id);
            }
            Target::StrongKey => {
                let (key_id, _) = self.app.create_key(&self.root, &self.org, &STRONG_SCOPES, &[]).await?;
                path = path.replace("{key}", &key_id);
            }
            Target::Pass => path = path.replace("{pass}", &self.issue_pass().await?),
            Target::OwnOrg => {
                org = self.app.create_org(&self.root, &format!("own-{}", uuid::Uuid::new_v4().simple())).await?;
                if role_index > 0 {
                    caller = self.app.create_user(&self.root, &org, ROLES[role_index]).await?;
                }
            }
        }
        Ok((path.replace("{org}", &org), caller))
    }
}

#[actix_web::test]
async fn every_role_gets_exactly_what_the_permission_table_says() -> TestResult {
    let world = World::new().await?;
    let mut mismatches = Vec::new();
    for case in CASES {
        for (i, role) in ROLES.iter().enumerate() {
            let (path, caller) = world.prepare(case, i).await?;
            let reply = world.app.call(case.method, &path, Some(&caller.access), (case.body)()).await?;
            let ok = match case.expected.as_bytes()[i] {
                b'Y' => (200..300).contains(&reply.status),
                b'o' => reply.status == 404 && reply.error_code().as_deref() == Some("not_found"),
                _ => reply.status == 403 && reply.error_code().as_deref() == Some("forbidden"),
            };
            if !ok {
                mismatches.push(format!("{role} {} {}: {} {}", case.method, case.path, reply.status, reply.text()));
            }
        }
    }
    assert!(mismatches.is_empty(), "permission table violated:\n{}", mismatches.join("\n"));
    Ok(())
}

#[actix_web::test]
async fn a_caller_from_another_organization_gets_no_data_from_any_route() -> TestResult {
    let world = World::new().await?;
    let other_org = world.app.create_org(&world.root, "elsewhere").await?;
    let outsider = world.app.create_user(&world.root, &other_org, "org_admin").await?;
    let every_scope = [
        "events:read",
        "passes:read",
        "passes:write",
        "checkins:read",
        "config:read",
        "config:write",
        "org:read",
        "audit:read",
    ];
    let (_, outsider_key) = world.app.create_key(&world.root, &other_org, &every_scope, &[]).await?;

    let mut leaks = Vec::new();
    for case in CASES {
        for token in [&outsider.access, &outsider_key] {
            // Targets in the victim organization (an own org would be the outsider's own).
            let (path, _) = world.prepare(case, 0).await?;
            let reply = world.app.call(case.method, &path, Some(token), (case.body)()).await?;
            let body = reply.json();
            let only_error = body.as_object().is_some_and(|o| o.len() == 1 && o.contains_key("error"));
            if !matches!(reply.status, 403 | 404) || !only_error || reply.text().contains(&world.org) {
                leaks.push(format!("{} {}: {} {}", case.method, path, reply.status, reply.text()));
            }
        }
    }
    assert!(leaks.is_empty(), "cross-tenant access:\n{}", leaks.join("\n"));

    // And the victim organization is unchanged.
    let org = world.app.call("GET", &format!("/api/v1/orgs/{}", world.org), Some(&world.root.access), None).await?;
    assert_eq!(org.json()["name"], "Org matrix");
    Ok(())
}

#[actix_web::test]
async fn an_api_key_acts_only_within_its_scopes_and_organization() -> TestResult {
    let world = World::new().await?;
    let (app, org) = (&world.app, &world.org);
    let (_, reader) = app.create_key(&world.root, org, &["org:read"], &[]).await?;
    let (_, auditor) = app.create_key(&world.root, org, &["audit:read"], &[]).await?;
    let get = |path: String, key: String| async move { app.call("GET", &path, Some(&key), None).await };

    assert_eq!(get(format!("/api/v1/orgs/{org}"), reader.clone()).await?.status, 200);
    assert_eq!(get(format!("/api/v1/orgs/{org}/users"), reader.clone()).await?.status, 403);
    assert_eq!(get(format!("/api/v1/orgs/{org}/audit"), reader.clone()).await?.status, 403);
    assert_eq!(get(format!("/api/v1/orgs/{org}/audit"), auditor.clone()).await?.status, 200);
    // Keys never manage keys, whatever their scopes.
    assert_eq!(get(format!("/api/v1/orgs/{org}/api-keys"), auditor.clone()).await?.status, 403);
    // /me is for people.
    assert_eq!(get("/api/v1/me".into(), reader.clone()).await?.status, 403);
    let listed = get("/api/v1/orgs".into(), reader).await?.json();
    let ids: Vec<&str> = listed["items"].as_array().into_iter().flatten().filter_map(|o| o["id"].as_str()).collect();
    assert_eq!(ids, [org.as_str()], "a key sees only its own organization");
    Ok(())
}

#[actix_web::test]
async fn authorization_decisions_and_cache_use_are_counted() -> TestResult {
    let world = World::new().await?;
    let guest = &world.members[5];
    world.app.call("GET", &format!("/api/v1/orgs/{}", world.org), Some(&guest.access), None).await?;
    world.app.call("GET", &format!("/api/v1/orgs/{}/users", world.org), Some(&guest.access), None).await?;
    let metrics = world.app.get("/metrics").await?.text();
    for series in [
        r#"portcullis_authz_checks_total{outcome="allowed"}"#,
        r#"portcullis_authz_checks_total{outcome="denied"}"#,
        r#"portcullis_authz_cache_total{result="hit"}"#,
        r#"portcullis_authz_cache_total{result="miss"}"#,
    ] {
        assert!(metrics.contains(series), "missing {series}");
    }
    Ok(())
}
