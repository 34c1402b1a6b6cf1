//! Organization set-up routes: zones, gates and their modes, access rules, holidays, lockdown
//! (the use cases are in `app::site`). Each collection has the same five routes, made by `crud!`.

use actix_web::{HttpResponse, web};
use uuid::Uuid;

use crate::app::site::{self, GateBody, HolidayBody, LockdownBody, ModeBody, Resource, RuleBody, ZoneBody};
use crate::app::{App, Caller};
use crate::auth::principal::policy;
use crate::db::pagination::ListQuery;
use crate::error::AppError;
use crate::http::auth::{Authorized, ClientAddr};
use crate::http::extract::Json;

fn object_id(path: &(String, String), what: Resource) -> Result<Uuid, AppError> {
    Uuid::try_parse(&path.1).map_err(|_| AppError::NotFound(what.name()))
}

/// `POST` and `GET` on the collection, `GET`, `PATCH` and `DELETE` on one of its objects.
macro_rules! crud {
    ($module:ident, $resource:expr, $body:ty, $create:path, $list:path, $get:path, $update:path) => {
        pub mod $module {
            use super::*;

            pub async fn create(
                state: web::Data<App>,
                auth: Authorized<policy::ConfigWrite>,
                Json(body): Json<$body>,
            ) -> Result<HttpResponse, AppError> {
                Ok(HttpResponse::Created().json($create(&state, auth.org.id, body).await?))
            }

            pub async fn list(
                state: web::Data<App>,
                auth: Authorized<policy::ConfigRead>,
                q: web::Query<ListQuery>,
            ) -> Result<HttpResponse, AppError> {
                Ok(HttpResponse::Ok().json($list(&state, auth.org.id, &q).await?))
            }

            pub async fn get(
                state: web::Data<App>,
                auth: Authorized<policy::ConfigRead>,
                path: web::Path<(String, String)>,
            ) -> Result<HttpResponse, AppError> {
                Ok(HttpResponse::Ok().json($get(&state, auth.org.id, object_id(&path, $resource)?).await?))
            }

            pub async fn update(
                state: web::Data<App>,
                auth: Authorized<policy::ConfigWrite>,
                path: web::Path<(String, String)>,
                Json(body): Json<$body>,
            ) -> Result<HttpResponse, AppError> {
                let id = object_id(&path, $resource)?;
                Ok(HttpResponse::Ok().json($update(&state, auth.org.id, id, body).await?))
            }

            pub async fn delete(
                state: web::Data<App>,
                auth: Authorized<policy::ConfigWrite>,
                path: web::Path<(String, String)>,
            ) -> Result<HttpResponse, AppError> {
                site::remove(&state, auth.org.id, $resource, object_id(&path, $resource)?).await?;
                Ok(HttpResponse::NoContent().finish())
            }
        }
    };
}

crud!(zones, Resource::Zone, ZoneBody, site::create_zone, site::list_zones, site::get_zone, site::update_zone);
crud!(gates, Resource::Gate, GateBody, site::create_gate, site::list_gates, site::get_gate, site::update_gate);
crud!(rules, Resource::AccessRule, RuleBody, site::create_rule, site::list_rules, site::get_rule, site::update_rule);
crud!(
    holidays,
    Resource::Holiday,
    HolidayBody,
    site::create_holiday,
    site::list_holidays,
    site::get_holiday,
    site::update_holiday
);

pub async fn set_gate_mode(
    state: web::Data<App>,
    auth: Authorized<policy::GateModeSet>,
    path: web::Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<ModeBody>,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    let gate_id = object_id(&path, Resource::Gate)?;
    Ok(HttpResponse::Ok().json(site::set_gate_mode(&state, &caller, auth.org.id, gate_id, body).await?))
}

/// Organization-wide lockdown: every gate refuses every credential until lifted.
pub async fn set_lockdown(
    state: web::Data<App>,
    auth: Authorized<policy::GateModeSet>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<LockdownBody>,
) -> Result<HttpResponse, AppError> {
    let caller = Caller { principal: &auth.principal, addr };
    Ok(HttpResponse::Ok().json(site::set_lockdown(&state, &caller, auth.org.id, body).await?))
}
