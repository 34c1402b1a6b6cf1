//! What the server learns of each connection as it is accepted: TCP settings, and the client
//! certificate a TLS peer presented.

use std::any::Any;

use actix_web::dev::Extensions;

/// The verified client certificate of a TLS connection (its SHA-256 fingerprint, hex).
#[derive(Debug, Clone)]
pub struct ClientCert(pub String);

/// Called for every accepted connection (plain or TLS): sets `TCP_NODELAY`, and remembers the
/// client certificate a TLS peer presented (verified against `server.tls.client_ca_file`).
pub fn on_connect<T: Any>(connection: &T, data: &mut Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    let connection = connection as &dyn Any;
    let tcp = match connection.downcast_ref::<Tls>() {
        Some(tls) => {
            let (tcp, session) = tls.get_ref();
            if let Some(cert) = session.peer_certificates().and_then(|chain| chain.first()) {
                data.insert(ClientCert(crate::http::tls::fingerprint(cert)));
            }
            Some(tcp)
        }
        None => connection.downcast_ref::<actix_web::rt::net::TcpStream>(),
    };
    if let Some(tcp) = tcp {
        // Small writes go out at once: a stream's frames (and a turnstile's answer) must not wait
        // for the peer's delayed acknowledgement of the one before (Nagle: up to 40 ms).
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
    }
}
