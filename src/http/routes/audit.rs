//! `GET /api/v1/orgs/{org}/audit`: the organization's audit log, newest first.

use actix_web::{HttpResponse, web};

use crate::app::App;
use crate::app::records::{self, AuditQuery};
use crate::auth::principal::policy;
use crate::error::AppError;
use crate::http::auth::Authorized;

pub async fn list(
    state: web::Data<App>,
    auth: Authorized<policy::AuditRead>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(records::audit_log(&state, auth.org.id, &query).await?))
}
