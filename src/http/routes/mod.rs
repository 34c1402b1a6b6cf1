//! Route table.

mod service;

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
        .service(web::resource("/metrics").get(service::metrics));
}

/// Anything no route matches.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound("route"))
}

/// actix answers a known path with the wrong method by an empty 405; give it our error shape.
pub fn method_not_allowed<B: MessageBody>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let (req, _) = res.into_parts();
    let res = ServiceResponse::new(req, ApiError::MethodNotAllowed.error_response())
        .map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}
