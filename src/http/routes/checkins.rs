//! `GET /api/v1/orgs/{org}/checkins`: the journal of decisions, newest first.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use portcullis_actors::domain::Decision;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::app::App;
use crate::auth::principal::policy;
use crate::db::pagination::{self, Page};
use crate::db::query_json;
use crate::error::AppError;
use crate::http::auth::Authorized;

#[derive(Deserialize)]
pub struct CheckinQuery {
    gate_id: Option<Uuid>,
    pass_id: Option<Uuid>,
    decision: Option<Decision>,
    #[serde(default, deserialize_with = "crate::app::input::opt_timestamp")]
    from: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "crate::app::input::opt_timestamp")]
    to: Option<DateTime<Utc>>,
    cursor: Option<String>,
    limit: Option<u32>,
}

pub async fn list(
    state: web::Data<App>,
    auth: Authorized<policy::CheckinsRead>,
    q: web::Query<CheckinQuery>,
) -> Result<HttpResponse, AppError> {
    let limit = pagination::limit(q.limit)?;
    // Check-in ids are time-ordered (UUIDv7), so the id is the cursor.
    let before: Option<Uuid> = pagination::decode(q.cursor.as_deref())?;
    let client = state.pool.get().await?;
    let items = query_json(
        &client,
        "SELECT id, gate_id, pass_id, direction, decision, reason, source, credential_kind, decided_at FROM checkins
         WHERE org_id = $1 AND ($2::uuid IS NULL OR gate_id = $2) AND ($3::uuid IS NULL OR pass_id = $3)
           AND ($4::text IS NULL OR decision = $4) AND ($5::timestamptz IS NULL OR decided_at >= $5)
           AND ($6::timestamptz IS NULL OR decided_at < $6) AND ($7::uuid IS NULL OR id < $7)
         ORDER BY id DESC LIMIT $8",
        &[
            &auth.org.id,
            &q.gate_id,
            &q.pass_id,
            &q.decision.map(Decision::as_str),
            &q.from,
            &q.to,
            &before,
            &(limit + 1),
        ],
    )
    .await?;
    let page: Page<Value> = pagination::page(items, limit, |v| v["id"].as_str().map(str::to_owned));
    Ok(HttpResponse::Ok().json(page))
}
