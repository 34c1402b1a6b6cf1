//! `GET /api/v1/orgs/{org}/checkins`: the journal of decisions, newest first.

use actix_web::{HttpResponse, web};

use crate::app::App;
use crate::app::records::{self, CheckinQuery};
use crate::auth::principal::policy;
use crate::error::AppError;
use crate::http::auth::Authorized;

pub async fn list(
    state: web::Data<App>,
    auth: Authorized<policy::CheckinsRead>,
    q: web::Query<CheckinQuery>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(records::checkins(&state, auth.org.id, &q).await?))
}
