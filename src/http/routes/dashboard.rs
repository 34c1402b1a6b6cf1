//! The operator dashboard: one page and its script and style, compiled into the binary.
//! The Content-Security-Policy allows nothing but this origin: `connect-src 'self'` also covers
//! its own WebSocket (`ws:`/`wss:` on the same host and port), and no other host.

use actix_web::HttpResponse;
use actix_web::http::header;

const INDEX: &str = include_str!("../static/index.html");
const SCRIPT: &str = include_str!("../static/app.js");
const STYLE: &str = include_str!("../static/app.css");
const GUEST: &str = include_str!("../static/guest.html");
const GUEST_SCRIPT: &str = include_str!("../static/guest.js");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

pub async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// The guest page: a visitor's meeting, host, directions and rotating QR code.
pub async fn guest_page() -> HttpResponse {
    asset("text/html; charset=utf-8", GUEST)
}

pub async fn guest_script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", GUEST_SCRIPT)
}
