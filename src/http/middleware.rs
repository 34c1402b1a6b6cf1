//! Request context: every request gets an id (the client's `x-request-id` when it is sane, a new
//! UUID otherwise), runs inside a tracing span carrying it, is counted and timed in metrics, and
//! its response — success or error — carries the id back in `x-request-id`.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Instrument;

use crate::error::AppError;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the current request, available to handlers through request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn incoming_id(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(REQUEST_ID)?.to_str().ok()?;
    let sane = !value.is_empty()
        && value.len() <= 64
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    sane.then(|| value.to_owned())
}

pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let id = incoming_id(&req).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    // The path only: query strings may carry tokens (`access_token` on WebSocket upgrades).
    let span = tracing::info_span!("request", method = %req.method(), path = %req.path(), request_id = %id);
    let started = Instant::now();
    crate::http::priority::pace(started);
    // Handler errors arrive here as responses (AppError is a ResponseError); an `Err` can only
    // come from a middleware and is answered by actix itself.
    // INVARIANT: no clone of the HttpRequest may be held across `next.call`: routing needs it
    // uniquely owned to record the matched path.
    // An encoded NUL in the path or query is refused before any route: PostgreSQL text cannot
    // hold it, and no identifier or search has a use for it.
    let limit =
        req.app_data::<actix_web::web::Data<crate::app::App>>().map(|app| app.settings.server.request_timeout_secs);
    let mut res = match crate::http::extract::nul_in_uri(req.uri()) {
        Some(field) => req.error_response(AppError::field(field, crate::http::extract::NUL_REASON)),
        None => {
            let call = next.call(req).instrument(span.clone());
            match limit {
                // A request that outlives the bound (the database hangs) is answered 503 `timeout`
                // and dropped, with whatever it held.
                Some(secs) => match tokio::time::timeout(std::time::Duration::from_secs(secs), call).await {
                    Ok(res) => res?.map_into_boxed_body(),
                    Err(_) => {
                        span.in_scope(|| tracing::warn!(timeout_s = secs, "request timed out"));
                        metrics::counter!("portcullis_http_timeouts_total").increment(1);
                        return Err(AppError::Timeout { secs }.into());
                    }
                },
                None => call.await?.map_into_boxed_body(),
            }
        }
    };
    // No response is to be sniffed into another type (an SVG or JSON rendered as HTML).
    res.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let elapsed = started.elapsed();
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, value);
    }

    let status = res.status();
    let route = res.request().app_data::<crate::http::routes::RoutePattern>().map_or("unmatched", |r| r.0);
    let method = res.request().method().to_string();
    metrics::counter!("portcullis_http_requests_total",
        "method" => method.clone(), "route" => route, "status" => status.as_u16().to_string())
    .increment(1);
    metrics::histogram!("portcullis_http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), latency_ms, "request finished");
        } else {
            tracing::info!(status = status.as_u16(), latency_ms, "request finished");
        }
    });
    Ok(res)
}
