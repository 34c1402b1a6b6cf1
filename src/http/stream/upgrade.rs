//! WebSocket upgrades, beside the HTTP dispatcher.
//!
//! actix-http hands every request that asks for a WebSocket to this service, with its connection.
//! The request is answered by the application like any other (routing, middleware, request log,
//! authentication and errors unchanged); when the answer is the stream route's `101 Switching
//! Protocols`, it carries a [`Handover`], and the connection is given to a
//! [`SessionActor`](super::session::SessionActor) of its own, on a stream thread
//! ([`super::threads`]), without the dispatcher or its buffers (8 KiB each way, per connection, for
//! as long as it lives). Any other answer is written
//! as the dispatcher would write it, and the connection ends.

use std::rc::Rc;

use actix_codec::Framed;
use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::h1::{self, Message};
use actix_http::{ConnectionType, Request, Response, StatusCode};
use actix_service::{Service, ServiceFactory, fn_factory, fn_service};
use actix_web::dev::{AppConfig, ServiceResponse};
use futures_util::SinkExt;

use super::session::Setup;
use super::threads::{Movable, StreamThreads};

/// Put on its `101 Switching Protocols` answer by the stream route: the session to run on the
/// connection, and the threads to run it on.
pub struct Handover(pub Setup, pub std::sync::Arc<StreamThreads>);

/// The upgrade service over `app` (a second instance of the application, on each worker).
pub fn service<T, S, B>(
    app: S,
) -> impl ServiceFactory<(Request, Framed<T, h1::Codec>), Config = (), Response = (), Error = actix_web::Error, InitError = ()>
where
    T: Movable,
    S: ServiceFactory<
            Request,
            Config = AppConfig,
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    let app = Rc::new(app);
    fn_factory(move || {
        let app = app.clone();
        async move {
            // Nothing of ours reads the `AppConfig` (host, scheme): the default serves.
            let service = Rc::new(app.new_service(AppConfig::default()).await?);
            Ok(fn_service(move |(req, framed)| answer(service.clone(), req, framed)))
        }
    })
}

async fn answer<T, S, B>(app: Rc<S>, req: Request, mut framed: Framed<T, h1::Codec>) -> Result<(), actix_web::Error>
where
    T: Movable,
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    let mut response: Response<BoxBody> = match app.call(req).await {
        Ok(response) => response.map_into_boxed_body().into(),
        Err(err) => err.error_response().into(),
    };
    let handover = response.extensions_mut().remove::<Handover>();
    let (mut head, body) = response.into_parts();
    match handover {
        Some(Handover(setup, threads)) if head.status() == StatusCode::SWITCHING_PROTOCOLS => {
            framed.send(Message::Item((head, BodySize::None))).await?;
            let parts = framed.into_parts();
            // What the peer sent after its handshake is the session's to read.
            threads.run(setup, parts.io, &parts.read_buf);
        }
        _ => {
            let body = actix_http::body::to_bytes(body)
                .await
                .map_err(|err| actix_web::error::ErrorInternalServerError(format!("answer body: {err}")))?;
            head.head_mut().set_connection_type(ConnectionType::Close);
            framed.send(Message::Item((head, BodySize::Sized(body.len() as u64)))).await?;
            framed.send(Message::Chunk(Some(body))).await?;
            framed.send(Message::Chunk(None)).await?;
        }
    }
    Ok(())
}
