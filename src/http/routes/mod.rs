//! Route table.

mod api_keys;
mod audit;
mod auth;
mod orgs;
mod service;
mod users;

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{ResponseError, web};

use crate::error::ApiError;

/// Every route of the engine.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health").get(service::health))
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
                .service(web::resource("/orgs/{org}/api-keys/{key}/revoke").post(api_keys::revoke)),
        );
}

/// A query string that does not parse: 422 naming the query.
pub fn query_error(err: actix_web::error::QueryPayloadError, _: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::field("query", err.to_string()).into()
}

/// Anything no route matches.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound("route"))
}

/// actix answers a known path with the wrong method by an empty 405; give it our error shape.
pub fn method_not_allowed<B: MessageBody>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let (req, _) = res.into_parts();
    let res = ServiceResponse::new(req, ApiError::MethodNotAllowed.error_response()).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}
