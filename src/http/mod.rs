//! The HTTP edge: extractors, middleware, the error mapping and the routes. It is the only module
//! that knows HTTP. Handlers are thin: extract, call one `app::` function, respond.

pub mod auth;
pub mod error;
pub mod extract;
pub mod middleware;
pub mod openapi;
pub mod priority;
pub mod routes;
pub mod stream;
pub mod tls;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_http::HttpService;
use actix_service::{IntoServiceFactory, map_config};
use actix_web::dev::{AppConfig, Server};
use actix_web::http::StatusCode;
use actix_web::middleware::{ErrorHandlers, from_fn};
use actix_web::web;

use crate::app::App;
use stream::threads::StreamThreads;

/// An answer that carries a secret shown once (a key, a PIN, a QR seed) or personal data: no
/// cache may keep it.
pub fn no_store(mut response: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    response.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
    response
}

/// The HTTP server over `app`, on a bound listener (with TLS when `tls` is given), its streams run
/// on `streams`; it serves once awaited.
pub fn server(
    app: App,
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
    streams: Arc<StreamThreads>,
) -> std::io::Result<Server> {
    let workers =
        Workers { count: app.settings.server.workers, name: API_WORKER, priority: app.settings.server.api_priority };
    build(app, listener, tls, routes::configure, workers, Some(streams))
}

/// The device listener over `app`: the decision route and `/health` only, on workers of its own.
pub fn device_server(app: App, listener: TcpListener, tls: Option<rustls::ServerConfig>) -> std::io::Result<Server> {
    let workers = app.settings.server.device_workers.max(1);
    let priority = app.settings.server.device_priority;
    let workers = Workers { count: workers, name: DEVICE_WORKER, priority };
    build(app, listener, tls, routes::configure_devices, workers, None)
}

/// The API listener's worker threads, by name (`top -H`, `ps -L`, `/proc/<pid>/task/*/comm`).
pub const API_WORKER: &std::ffi::CStr = c"api-worker";

/// The device listener's worker threads, by name.
pub const DEVICE_WORKER: &std::ffi::CStr = c"device-worker";

/// A listener's worker threads: how many (0: one a core), their name, and their `SCHED_FIFO`
/// priority while they answer little (0: the default scheduling; see [`priority`]).
struct Workers {
    count: usize,
    name: &'static std::ffi::CStr,
    priority: u8,
}

/// How long a client has to close its side once the server has answered and is closing (what
/// actix-web's `HttpServer` uses).
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The server: actix-web's `HttpServer`, assembled from its parts (actix-server and actix-http)
/// for one thing it does not offer — the WebSocket upgrade service (`stream::upgrade`), through
/// which a stream leaves the HTTP dispatcher once its handshake is answered.
fn build(
    app: App,
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
    configure: fn(&mut web::ServiceConfig),
    Workers { count: workers, name, priority }: Workers,
    streams: Option<Arc<StreamThreads>>,
) -> std::io::Result<Server> {
    let settings = app.settings.clone();
    let body_limit = settings.server.body_limit_bytes;
    let data = web::Data::new(app);
    let streams = streams.map(web::Data::from);
    let addr = listener.local_addr()?;
    // Twice on each worker: the application, and its twin behind the upgrade service.
    let new_app = move || {
        let mut app = actix_web::App::new().app_data(data.clone());
        if let Some(streams) = &streams {
            app = app.app_data(streams.clone());
        }
        app.app_data(web::PayloadConfig::new(body_limit))
            .app_data(web::QueryConfig::default().error_handler(routes::query_error))
            .wrap(ErrorHandlers::new().handler(StatusCode::METHOD_NOT_ALLOWED, routes::method_not_allowed))
            .wrap(from_fn(middleware::request_context))
            .configure(configure)
            .default_service(web::to(routes::not_found))
            .into_factory()
    };
    // Called once on each worker's thread, as it starts.
    let on_worker = move || {
        crate::telemetry::name_thread(name);
        // The passes this worker asks about first get their actors here.
        portcullis_actors::engine::place_passes_here();
        crate::http::priority::start(name.to_str().unwrap_or("listener"), priority);
    };
    // Nothing of ours reads the `AppConfig` (host, scheme, for URL generation): the default serves.
    macro_rules! http_service {
        () => {
            HttpService::build()
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                .local_addr(addr)
                .on_connect_ext(stream::connection::on_connect)
                .upgrade(stream::upgrade::service(new_app()))
                .finish(map_config(new_app(), |_| AppConfig::default()))
        };
    }
    let mut server = actix_server::Server::build().shutdown_timeout(settings.server.shutdown_timeout_secs);
    if workers > 0 {
        server = server.workers(workers);
    }
    let name = format!("portcullis-{addr}");
    server = match tls {
        Some(config) => server.listen(name, listener, move || {
            on_worker();
            http_service!().rustls_0_23(config.clone())
        })?,
        None => server.listen(name, listener, move || {
            on_worker();
            http_service!().tcp()
        })?,
    };
    Ok(server.run())
}
