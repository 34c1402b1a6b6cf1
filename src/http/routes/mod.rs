//! Route table.

mod api_keys;
mod audit;
mod auth;
mod checkins;
mod config;
mod dashboard;
mod decisions;
mod orgs;
mod passes;
mod service;
mod stream;
mod users;

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{ResponseError, web};

use crate::error::AppError;

/// Every route of the engine.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").get(dashboard::index))
        .service(web::resource("/app.js").get(dashboard::script))
        .service(web::resource("/app.css").get(dashboard::style))
        .service(web::resource("/health").get(service::health))
        .service(web::resource("/ready").get(service::ready))
        .service(web::resource("/version").get(service::version))
        .service(web::resource("/metrics").get(service::metrics))
        .service(
            web::scope("/api/v1")
                .service(web::resource("/auth/login").post(auth::login))
                .service(web::resource("/auth/refresh").post(auth::refresh))
                .service(web::resource("/auth/logout").post(auth::logout))
                .service(web::resource("/auth/change-password").post(auth::change_password))
                .service(web::resource("/me").get(auth::me))
                .service(web::resource("/orgs").post(orgs::create).get(orgs::list))
                .service(web::resource("/orgs/{org}").get(orgs::get).patch(orgs::update).delete(orgs::delete))
                .service(web::resource("/orgs/{org}/export").get(orgs::export))
                .service(web::resource("/orgs/{org}/audit").get(audit::list))
                .service(web::resource("/orgs/{org}/users").post(users::create).get(users::list))
                .service(web::resource("/orgs/{org}/users/{user}").get(users::get).patch(users::update))
                .service(web::resource("/orgs/{org}/api-keys").post(api_keys::create).get(api_keys::list))
                .service(web::resource("/orgs/{org}/api-keys/{key}").get(api_keys::get))
                .service(web::resource("/orgs/{org}/api-keys/{key}/rotate").post(api_keys::rotate))
                .service(web::resource("/orgs/{org}/api-keys/{key}/revoke").post(api_keys::revoke))
                .service(web::resource("/orgs/{org}/lockdown").post(config::set_lockdown))
                .service(web::resource("/orgs/{org}/zones").post(config::create_zone).get(config::list_zones))
                .service(
                    web::resource("/orgs/{org}/zones/{zone}")
                        .get(config::get_zone)
                        .patch(config::update_zone)
                        .delete(config::delete_zone),
                )
                .service(web::resource("/orgs/{org}/gates").post(config::create_gate).get(config::list_gates))
                .service(
                    web::resource("/orgs/{org}/gates/{gate}")
                        .get(config::get_gate)
                        .patch(config::update_gate)
                        .delete(config::delete_gate),
                )
                .service(web::resource("/orgs/{org}/gates/{gate}/mode").post(config::set_gate_mode))
                .service(web::resource("/orgs/{org}/access-rules").post(config::create_rule).get(config::list_rules))
                .service(
                    web::resource("/orgs/{org}/access-rules/{rule}")
                        .get(config::get_rule)
                        .patch(config::update_rule)
                        .delete(config::delete_rule),
                )
                .service(web::resource("/orgs/{org}/holidays").post(config::create_holiday).get(config::list_holidays))
                .service(
                    web::resource("/orgs/{org}/holidays/{holiday}")
                        .get(config::get_holiday)
                        .patch(config::update_holiday)
                        .delete(config::delete_holiday),
                )
                .service(web::resource("/orgs/{org}/passes").post(passes::issue).get(passes::list))
                .service(web::resource("/orgs/{org}/passes/{pass}").get(passes::get).patch(passes::extend))
                .service(web::resource("/orgs/{org}/passes/{pass}/revoke").post(passes::revoke))
                .service(web::resource("/orgs/{org}/passes/{pass}/suspend").post(passes::suspend))
                .service(web::resource("/orgs/{org}/passes/{pass}/resume").post(passes::resume))
                .service(web::resource("/orgs/{org}/passes/{pass}/qr").get(passes::qr))
                .service(web::resource("/orgs/{org}/checkins").get(checkins::list))
                .service(web::resource("/orgs/{org}/stream").get(stream::stream))
                .service(web::resource("/gates/{gate}/decisions").post(decisions::decide)),
        );
}

/// A query string that does not parse: 422 naming the query.
pub fn query_error(err: actix_web::error::QueryPayloadError, _: &actix_web::HttpRequest) -> actix_web::Error {
    AppError::field("query", err.to_string()).into()
}

/// Anything no route matches.
pub async fn not_found() -> Result<actix_web::HttpResponse, AppError> {
    Err(AppError::NotFound("route"))
}

/// actix answers a known path with the wrong method by an empty 405; give it our error shape.
pub fn method_not_allowed<B: MessageBody>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let (req, _) = res.into_parts();
    let res = ServiceResponse::new(req, AppError::MethodNotAllowed.error_response()).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}
