//! The route table: every route once, registered by `configure` and listed in `ROUTES`.

mod api_keys;
mod audit;
mod auth;
mod checkins;
mod controllers;
mod dashboard;
mod decisions;
mod guest;
mod notifications;
mod orgs;
mod passes;
mod readers;
mod service;
mod site;
pub mod stream;
mod users;
mod visits;
mod webhooks;

pub use auth::{ChangePasswordRequest, LoginRequest, RefreshRequest};
pub use passes::{ExtendBody, RevokeBody};

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::Method;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{ResponseError, web};

use crate::error::AppError;

/// The pattern a request matched, for metrics and logs (read back from the request without
/// matching the path again).
#[derive(Debug, Clone, Copy)]
pub struct RoutePattern(pub &'static str);

/// Declares the route table once: `configure` registers it, and [`ROUTES`] lists it for the API
/// document (whose test fails when a registered route is not described).
macro_rules! routes {
    ($( $path:literal => { $( $method:ident $handler:path ),+ $(,)? } ),+ $(,)?) => {
        /// Every (method, path) the server registers.
        pub const ROUTES: &[(&str, &str)] = &[ $( $( (stringify!($method), $path) ),+ ),+ ];

        /// Every route of the engine.
        pub fn configure(cfg: &mut web::ServiceConfig) {
            $( cfg.service(web::resource($path).app_data(RoutePattern($path)) $( .route(web::method(Method::$method).to($handler)) )+ ); )+
        }
    };
}

// Matched in this order, each path by a regular expression: the turnstiles' route comes first, so a
// decision is not matched against every other route before its own. (actix-web's `unicode` feature
// matches them with `regex`'s automata: without it `regex-lite` took 12 % of the engine's CPU on the
// deny path.)
routes! {
    "/api/v1/gates/{gate}/decisions" => { POST decisions::decide },
    "/api/v1/gates/{gate}/bas-ip" => { POST decisions::bas_ip },
    "/" => { GET dashboard::index },
    "/app.js" => { GET dashboard::script },
    "/app.css" => { GET dashboard::style },
    "/guest" => { GET dashboard::guest_page },
    "/guest.js" => { GET dashboard::guest_script },
    "/health" => { GET service::health },
    "/ready" => { GET service::ready },
    "/version" => { GET service::version },
    "/metrics" => { GET service::metrics },
    "/openapi.json" => { GET service::openapi },
    "/api/v1/auth/login" => { POST auth::login },
    "/api/v1/auth/refresh" => { POST auth::refresh },
    "/api/v1/auth/logout" => { POST auth::logout },
    "/api/v1/auth/change-password" => { POST auth::change_password },
    "/api/v1/me" => { GET auth::me },
    "/api/v1/me/notifications" => { GET notifications::list },
    "/api/v1/me/notifications/{notification}/read" => { POST notifications::read },
    "/api/v1/me/notification-preferences" => { GET notifications::preferences, PUT notifications::set_preferences },
    "/api/v1/orgs" => { POST orgs::create, GET orgs::list },
    "/api/v1/orgs/{org}" => { GET orgs::get, PATCH orgs::update, DELETE orgs::delete },
    "/api/v1/orgs/{org}/export" => { GET orgs::export },
    "/api/v1/orgs/{org}/audit" => { GET audit::list },
    "/api/v1/orgs/{org}/users" => { POST users::create, GET users::list },
    "/api/v1/orgs/{org}/users/{user}" => { GET users::get, PATCH users::update },
    "/api/v1/orgs/{org}/api-keys" => { POST api_keys::create, GET api_keys::list },
    "/api/v1/orgs/{org}/api-keys/{key}" => { GET api_keys::get },
    "/api/v1/orgs/{org}/api-keys/{key}/rotate" => { POST api_keys::rotate },
    "/api/v1/orgs/{org}/api-keys/{key}/revoke" => { POST api_keys::revoke },
    "/api/v1/orgs/{org}/lockdown" => { POST site::set_lockdown },
    "/api/v1/orgs/{org}/zones" => { POST site::zones::create, GET site::zones::list },
    "/api/v1/orgs/{org}/zones/{zone}" => { GET site::zones::get, PATCH site::zones::update, DELETE site::zones::delete },
    "/api/v1/orgs/{org}/gates" => { POST site::gates::create, GET site::gates::list },
    "/api/v1/orgs/{org}/gates/{gate}" => { GET site::gates::get, PATCH site::gates::update, DELETE site::gates::delete },
    "/api/v1/orgs/{org}/gates/{gate}/mode" => { POST site::set_gate_mode },
    "/api/v1/orgs/{org}/gates/{gate}/reader" => { PUT readers::put, GET readers::get, DELETE readers::delete },
    "/api/v1/orgs/{org}/controllers/{controller}" => {
        PUT controllers::put, GET controllers::get, DELETE controllers::delete,
    },
    "/api/v1/orgs/{org}/access-rules" => { POST site::rules::create, GET site::rules::list },
    "/api/v1/orgs/{org}/access-rules/{rule}" => { GET site::rules::get, PATCH site::rules::update, DELETE site::rules::delete },
    "/api/v1/orgs/{org}/holidays" => { POST site::holidays::create, GET site::holidays::list },
    "/api/v1/orgs/{org}/holidays/{holiday}" => {
        GET site::holidays::get, PATCH site::holidays::update, DELETE site::holidays::delete,
    },
    "/api/v1/orgs/{org}/passes" => { POST passes::issue, GET passes::list },
    "/api/v1/orgs/{org}/passes/{pass}" => { GET passes::get, PATCH passes::extend },
    "/api/v1/orgs/{org}/passes/{pass}/revoke" => { POST passes::revoke },
    "/api/v1/orgs/{org}/passes/{pass}/suspend" => { POST passes::suspend },
    "/api/v1/orgs/{org}/passes/{pass}/resume" => { POST passes::resume },
    "/api/v1/orgs/{org}/passes/{pass}/qr" => { GET passes::qr },
    "/api/v1/orgs/{org}/checkins" => { GET checkins::list },
    "/api/v1/orgs/{org}/webhooks" => { POST webhooks::create, GET webhooks::list },
    "/api/v1/orgs/{org}/webhooks/{webhook}" => { GET webhooks::get, PATCH webhooks::update, DELETE webhooks::delete },
    "/api/v1/orgs/{org}/webhooks/{webhook}/rotate-secret" => { POST webhooks::rotate_secret },
    "/api/v1/orgs/{org}/webhooks/{webhook}/test" => { POST webhooks::test },
    "/api/v1/orgs/{org}/webhooks/{webhook}/deliveries" => { GET webhooks::deliveries },
    "/api/v1/orgs/{org}/webhooks/{webhook}/deliveries/{event}/redeliver" => { POST webhooks::redeliver },
    "/api/v1/orgs/{org}/webhooks/{webhook}/redeliver" => { POST webhooks::redeliver_since },
    "/api/v1/event-types" => { GET webhooks::event_types },
    "/api/v1/orgs/{org}/departments" => { POST visits::create_department, GET visits::list_departments },
    "/api/v1/orgs/{org}/departments/{department}" => { DELETE visits::delete_department },
    "/api/v1/orgs/{org}/hosts" => { GET visits::list_hosts },
    "/api/v1/orgs/{org}/hosts/{user}" => { PUT visits::set_host },
    "/api/v1/orgs/{org}/muster" => { GET visits::muster },
    "/api/v1/orgs/{org}/visitors" => { POST visits::create_visitor, GET visits::list_visitors },
    "/api/v1/orgs/{org}/visitors/{visitor}" => { GET visits::get_visitor, DELETE visits::delete_visitor },
    "/api/v1/orgs/{org}/visitors/{visitor}/export" => { GET visits::export_visitor },
    "/api/v1/orgs/{org}/deny-list" => { POST visits::add_denial, GET visits::list_denials },
    "/api/v1/orgs/{org}/deny-list/{entry}" => { DELETE visits::delete_denial },
    "/api/v1/orgs/{org}/appointments" => { POST visits::create_appointment, GET visits::list_appointments },
    "/api/v1/orgs/{org}/appointments/{appointment}" => { GET visits::get_appointment },
    "/api/v1/orgs/{org}/appointments/{appointment}/cancel" => { POST visits::cancel_appointment },
    "/api/v1/orgs/{org}/visits" => { GET visits::list_visits },
    "/api/v1/orgs/{org}/visits/walk-in" => { POST visits::walk_in },
    "/api/v1/orgs/{org}/visits/{visit}" => { GET visits::get_visit },
    "/api/v1/orgs/{org}/visits/{visit}/arrive" => { POST visits::arrive },
    "/api/v1/orgs/{org}/visits/{visit}/check-in" => { POST visits::check_in },
    "/api/v1/orgs/{org}/visits/{visit}/check-out" => { POST visits::check_out },
    "/api/v1/orgs/{org}/visits/{visit}/cancel" => { POST visits::cancel_visit },
    "/api/v1/orgs/{org}/visits/{visit}/review" => { POST visits::review },
    "/api/v1/guest/session" => { POST guest::sign_in },
    "/api/v1/guest/code" => { POST guest::request_code },
    "/api/v1/guest/me" => { GET guest::me },
    "/api/v1/guest/visits/{visit}/qr" => { GET guest::qr },
    "/api/v1/guest/visits/{visit}/arrive" => { POST guest::arrive },
    "/api/v1/guest/visits/{visit}/register" => { POST guest::register },
    "/api/v1/orgs/{org}/stream" => { GET stream::stream },
}

/// The device listener's routes: what turnstiles and readers call, nothing else.
pub fn configure_devices(cfg: &mut web::ServiceConfig) {
    const DECIDE: &str = "/api/v1/gates/{gate}/decisions";
    const BAS_IP: &str = "/api/v1/gates/{gate}/bas-ip";
    cfg.service(web::resource(DECIDE).app_data(RoutePattern(DECIDE)).route(web::post().to(decisions::decide)));
    cfg.service(web::resource(BAS_IP).app_data(RoutePattern(BAS_IP)).route(web::post().to(decisions::bas_ip)));
    cfg.service(web::resource("/health").app_data(RoutePattern("/health")).route(web::get().to(service::health)));
}

/// An id in a path: one that does not parse names nothing there is (404 for `what`).
pub(crate) fn path_id(text: &str, what: &'static str) -> Result<uuid::Uuid, AppError> {
    uuid::Uuid::try_parse(text).map_err(|_| AppError::NotFound(what))
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
