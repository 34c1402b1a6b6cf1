//! `GET /api/v1/orgs/{org}/audit`: the organization's audit log, newest first.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::Value;

use crate::app::App;
use crate::auth::principal::policy;
use crate::db::pagination::{self, Page};
use crate::db::query_json;
use crate::error::AppError;
use crate::http::auth::Authorized;

#[derive(Deserialize)]
pub struct AuditQuery {
    action: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

pub async fn list(
    state: web::Data<App>,
    auth: Authorized<policy::AuditRead>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, AppError> {
    let limit = pagination::limit(query.limit)?;
    let before: Option<i64> = pagination::decode(query.cursor.as_deref())?;
    let client = state.pool.get().await?;
    let items = query_json(
        &client,
        "SELECT id, at, action, actor_user_id, actor_key_id, target_type, target_id, host(client_addr) AS client_addr, details
         FROM audit_log
         WHERE org_id = $1 AND ($2::text IS NULL OR action = $2) AND ($3::bigint IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4",
        &[&auth.org.id, &query.action, &before, &(limit + 1)],
    )
    .await?;
    let page: Page<Value> = pagination::page(items, limit, |v| v["id"].as_i64().map(|id| id.to_string()));
    Ok(HttpResponse::Ok().json(page))
}
