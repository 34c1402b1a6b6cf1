//! Migrations: applied once, idempotent, safe to run concurrently, and a schema that enforces
//! tenancy by itself.

use portcullis::db::Database;
use uuid::Uuid;

use crate::helpers::{TestResult, connect, fresh_database, test_settings};

/// The newest migration shipped in schema/ (files are V<n>__name.sql).
fn newest_shipped_version() -> i32 {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/schema"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix('V')?.split("__").next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

const DOMAIN_TABLES: &[&str] = &[
    "organizations",
    "departments",
    "users",
    "memberships",
    "sessions",
    "visitors",
    "appointments",
    "visits",
    "deny_list",
    "guest_tokens",
    "zones",
    "gates",
    "access_rules",
    "access_rule_zones",
    "holidays",
    "passes",
    "credentials",
    "checkins",
    "pass_events",
    "api_keys",
    "audit_log",
    "outbox",
];

#[actix_web::test]
async fn migrations_create_the_domain_and_are_idempotent() -> TestResult {
    let dbname = fresh_database().await?;
    let settings = test_settings(&dbname)?;
    let first = Database::open(&settings.database, &settings.data_dir).await?;
    assert_eq!(first.schema_version(), newest_shipped_version());
    first.close().await?;
    let second = Database::open(&settings.database, &settings.data_dir).await?;
    assert_eq!(second.schema_version(), newest_shipped_version());
    second.close().await?;

    let db = connect(&dbname).await?;
    let applied: i64 = db.query_one("SELECT count(*) FROM refinery_schema_history", &[]).await?.get(0);
    assert_eq!(applied, i64::from(newest_shipped_version()), "each migration is recorded once");
    for table in DOMAIN_TABLES {
        let found =
            db.query_opt("SELECT 1 FROM pg_tables WHERE schemaname = 'public' AND tablename = $1", &[table]).await?;
        assert!(found.is_some(), "table {table} should exist");
    }
    Ok(())
}

#[actix_web::test]
async fn engines_starting_together_migrate_once() -> TestResult {
    let dbname = fresh_database().await?;
    let settings = test_settings(&dbname)?;
    let (a, b) = futures_util::future::join(
        Database::open(&settings.database, &settings.data_dir),
        Database::open(&settings.database, &settings.data_dir),
    )
    .await;
    let (a, b) = (a?, b?);
    assert_eq!(a.schema_version(), b.schema_version());
    a.close().await?;
    b.close().await?;
    Ok(())
}

#[actix_web::test]
async fn every_tenant_table_has_an_index_led_by_org_id() -> TestResult {
    let dbname = fresh_database().await?;
    let settings = test_settings(&dbname)?;
    Database::open(&settings.database, &settings.data_dir).await?.close().await?;
    let db = connect(&dbname).await?;
    let rows = db
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attname = 'org_id'
               AND NOT EXISTS (
                 SELECT 1 FROM pg_index i
                 WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum)",
            &[],
        )
        .await?;
    let unindexed: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(unindexed.is_empty(), "tenant tables without an org_id-led index: {unindexed:?}");
    Ok(())
}

#[actix_web::test]
async fn the_schema_refuses_to_link_rows_across_organizations() -> TestResult {
    let dbname = fresh_database().await?;
    let settings = test_settings(&dbname)?;
    Database::open(&settings.database, &settings.data_dir).await?.close().await?;
    let db = connect(&dbname).await?;
    let (org_a, org_b, zone_a) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    db.execute(
        "INSERT INTO organizations (id, name, slug, timezone) VALUES ($1, 'A', 'org-a', 'UTC'), ($2, 'B', 'org-b', 'UTC')",
        &[&org_a, &org_b],
    )
    .await?;
    db.execute("INSERT INTO zones (id, org_id, name) VALUES ($1, $2, 'Lobby')", &[&zone_a, &org_a]).await?;
    // A gate of organization B pointing at organization A's zone.
    let crossed = db
        .execute(
            "INSERT INTO gates (id, org_id, zone_id, name, direction) VALUES ($1, $2, $3, 'Sneaky', 'in')",
            &[&Uuid::now_v7(), &org_b, &zone_a],
        )
        .await;
    let code = crossed.err().and_then(|e| e.code().cloned());
    assert_eq!(
        code,
        Some(tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION),
        "cross-tenant link must be rejected"
    );
    // The same gate in its own organization is fine.
    db.execute(
        "INSERT INTO gates (id, org_id, zone_id, name, direction) VALUES ($1, $2, $3, 'Front', 'in')",
        &[&Uuid::now_v7(), &org_a, &zone_a],
    )
    .await?;
    Ok(())
}
