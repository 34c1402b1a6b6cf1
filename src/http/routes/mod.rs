//! Route table.

mod api_keys;
mod audit;
mod auth;
mod checkins;
mod dashboard;
mod decisions;
mod orgs;
mod passes;
mod service;
mod site;
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
                .service(web::resource("/orgs/{org}/lockdown").post(site::set_lockdown))
                .service(web::resource("/orgs/{org}/zones").post(site::zones::create).get(site::zones::list))
                .service(
                    web::resource("/orgs/{org}/zones/{zone}")
                        .get(site::zones::get)
                        .patch(site::zones::update)
                        .delete(site::zones::delete),
                )
                .service(web::resource("/orgs/{org}/gates").post(site::gates::create).get(site::gates::list))
                .service(
                    web::resource("/orgs/{org}/gates/{gate}")
                        .get(site::gates::get)
                        .patch(site::gates::update)
                        .delete(site::gates::delete),
                )
                .service(web::resource("/orgs/{org}/gates/{gate}/mode").post(site::set_gate_mode))
                .service(web::resource("/orgs/{org}/access-rules").post(site::rules::create).get(site::rules::list))
                .service(
                    web::resource("/orgs/{org}/access-rules/{rule}")
                        .get(site::rules::get)
                        .patch(site::rules::update)
                        .delete(site::rules::delete),
                )
                .service(web::resource("/orgs/{org}/holidays").post(site::holidays::create).get(site::holidays::list))
                .service(
                    web::resource("/orgs/{org}/holidays/{holiday}")
                        .get(site::holidays::get)
                        .patch(site::holidays::update)
                        .delete(site::holidays::delete),
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
