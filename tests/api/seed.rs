//! The demo seed: the shape API.md promises, idempotent, and no secret stored in the clear.

use portcullis::config::Secrets;
use portcullis::crypto;
use portcullis::db::Database;
use portcullis::demo::{self, DemoCredentials};
use secrecy::SecretString;
use serde_json::Value;

use crate::helpers::{JWT_SECRET, PEPPER, TestResult, connect, dump_database, fresh_database, test_settings};

fn secrets() -> Secrets {
    Secrets {
        jwt_secret: SecretString::from(JWT_SECRET.to_owned()),
        api_key_pepper: SecretString::from(PEPPER.to_owned()),
    }
}

async fn seeded(previous: Option<DemoCredentials>, dbname: &str) -> TestResult<DemoCredentials> {
    let settings = test_settings(dbname)?;
    let db = Database::open(&settings.database, &settings.data_dir).await?;
    let credentials = demo::seed(db.pool(), &secrets(), previous).await;
    db.close().await?;
    Ok(credentials?)
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> TestResult<i64> {
    Ok(db.query_one(sql, &[]).await?.get(0))
}

#[actix_web::test]
async fn demo_credentials_have_the_documented_shape_and_usable_passes() -> TestResult {
    let dbname = fresh_database().await?;
    let creds = seeded(None, &dbname).await?;
    let json = serde_json::to_value(&creds)?;
    for key in ["org_id", "platform_admin", "admin", "gates", "passes"] {
        assert!(json.get(key).is_some(), "demo-credentials.json lacks `{key}`");
    }
    assert!(creds.gates.len() >= 2 && creds.gates.iter().all(|g| g.device_key.starts_with("pcl_live_")));
    let kinds: Vec<&Value> = creds.passes.iter().map(|p| &p.credential["kind"]).collect();
    assert!(kinds.contains(&&Value::from("qr")), "{kinds:?}");
    let card = creds.passes.iter().find(|p| p.credential["kind"] == "card").map(|p| &p.credential);
    let card = card.cloned().unwrap_or_default();
    assert_eq!(card["format"], "h10301");
    assert!(card["facility_code"].is_u64() && card["card_number"].is_u64(), "{card}");
    assert!(creds.passes.iter().any(|p| json_type(&p.pass_type) == "single"));

    // Every pass is active and valid now, and its rule opens the zone of every demo gate.
    let db = connect(&dbname).await?;
    for pass in &creds.passes {
        let row = db
            .query_one(
                "SELECT p.status, p.valid_from <= now() AND now() < p.valid_to,
                        (SELECT count(*) FROM gates g WHERE g.org_id = p.org_id AND NOT EXISTS (
                            SELECT 1 FROM access_rule_zones z
                            WHERE z.rule_id = p.access_rule_id AND z.zone_id = g.zone_id))
                 FROM passes p WHERE p.id = $1 AND p.org_id = $2",
                &[&pass.id, &creds.org_id],
            )
            .await?;
        assert_eq!(row.get::<_, String>(0), "active", "{}", pass.holder_name);
        assert!(row.get::<_, bool>(1), "{} should be valid now", pass.holder_name);
        assert_eq!(row.get::<_, i64>(2), 0, "{} should open every demo gate", pass.holder_name);
    }
    Ok(())
}

fn json_type(t: &portcullis_actors::domain::PassType) -> &'static str {
    t.as_str()
}

#[actix_web::test]
async fn seeding_twice_changes_nothing() -> TestResult {
    let dbname = fresh_database().await?;
    let first = seeded(None, &dbname).await?;
    let db = connect(&dbname).await?;
    let tally = "SELECT (SELECT count(*) FROM organizations) * 1000000 + (SELECT count(*) FROM gates) * 10000
                 + (SELECT count(*) FROM passes) * 100 + (SELECT count(*) FROM credentials WHERE revoked_at IS NULL)";
    let before = count(&db, tally).await?;
    let keys_before = count(&db, "SELECT count(*) FROM api_keys").await?;
    let second = seeded(Some(first.clone()), &dbname).await?;
    assert_eq!(count(&db, tally).await?, before);
    assert_eq!(count(&db, "SELECT count(*) FROM api_keys").await?, keys_before, "no key re-issued");
    assert_eq!(first.org_id, second.org_id);
    assert_eq!(serde_json::to_value(&first.gates)?, serde_json::to_value(&second.gates)?);
    assert_eq!(serde_json::to_value(&first.passes)?, serde_json::to_value(&second.passes)?);
    assert_eq!(first.admin.password, second.admin.password);
    Ok(())
}

#[actix_web::test]
async fn without_the_previous_file_secrets_are_reissued_and_the_old_ones_die() -> TestResult {
    let dbname = fresh_database().await?;
    let first = seeded(None, &dbname).await?;
    let second = seeded(None, &dbname).await?;
    assert_eq!(first.org_id, second.org_id);
    let db = connect(&dbname).await?;
    let pepper = SecretString::from(PEPPER.to_owned());
    for (old, new) in first.gates.iter().zip(&second.gates) {
        assert_eq!(old.id, new.id);
        assert_ne!(old.device_key, new.device_key);
        let live = |key: &str| crypto::keyed_hash(&pepper, crypto::API_KEY_PURPOSE, key);
        let sql = "SELECT count(*) FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL";
        assert_eq!(db.query_one(sql, &[&live(&old.device_key)]).await?.get::<_, i64>(0), 0, "old key revoked");
        assert_eq!(db.query_one(sql, &[&live(&new.device_key)]).await?.get::<_, i64>(0), 1, "new key live");
    }
    let hash: String =
        db.query_one("SELECT password_hash FROM users WHERE email = $1", &[&second.admin.email]).await?.get(0);
    assert!(crypto::verify_password(&second.admin.password, &hash));
    assert!(!crypto::verify_password(&first.admin.password, &hash));
    Ok(())
}

#[actix_web::test]
async fn no_password_or_key_is_stored_in_the_clear() -> TestResult {
    let dbname = fresh_database().await?;
    let creds = seeded(None, &dbname).await?;
    let everything = dump_database(&connect(&dbname).await?).await?;
    assert!(everything.contains(&creds.org_id.to_string()), "the dump should contain the seeded rows");
    let mut secrets: Vec<&str> = creds.gates.iter().map(|g| g.device_key.as_str()).collect();
    secrets.push(&creds.admin.password);
    secrets.push(&creds.platform_admin.password);
    secrets.extend(creds.users.iter().map(|u| u.password.as_str()));
    for secret in secrets {
        assert!(!everything.contains(secret), "a secret is stored in the clear");
    }
    let seed = creds.passes.iter().find_map(|p| p.credential["seed"].as_str()).unwrap_or_default();
    assert!(!seed.is_empty() && !everything.contains(seed), "QR seeds are derived, never stored");
    Ok(())
}
