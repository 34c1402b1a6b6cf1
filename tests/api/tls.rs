//! HTTPS and WSS with rustls: HTTP/2 offered by ALPN, the certificate reloaded when its files
//! change, and a device that decides with a client certificate signed by the configured CA
//! instead of a key (and one whose certificate is unknown, or signed by another CA, refused).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::helpers::{TestResult, spawn_app, spawn_app_on};
use crate::site::Site;

/// A certificate authority, and certificates it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A signed certificate and its key, as DER.
struct Issued {
    cert: CertificateDer<'static>,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> TestResult<Ca> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate()?;
        Ok(Ca { cert: params.self_signed(&key)?, key })
    }

    fn issue(&self, name: &str, hosts: &[&str]) -> TestResult<Issued> {
        let mut params = CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued { cert: cert.der().clone(), key })
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }
}

fn pem(der: &[u8], label: &str) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = text.as_bytes().chunks(64).filter_map(|c| std::str::from_utf8(c).ok()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

fn write_server_files(dir: &Path, issued: &Issued) -> TestResult {
    // Written aside and renamed, as a certificate manager does: never half a file.
    std::fs::write(dir.join("key.pem.new"), issued.key.serialize_pem())?;
    std::fs::write(dir.join("cert.pem.new"), pem(&issued.cert, "CERTIFICATE"))?;
    std::fs::rename(dir.join("key.pem.new"), dir.join("key.pem"))?;
    std::fs::rename(dir.join("cert.pem.new"), dir.join("cert.pem"))?;
    Ok(())
}

fn client(ca: &Ca, alpn: &[&[u8]], identity: Option<&Issued>) -> TestResult<TlsConnector> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der())?;
    let builder = ClientConfig::builder_with_provider(Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(
            vec![id.cert.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.serialize_der())),
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Every connection a full handshake: a resumed session would show the certificate it began with.
    config.resumption = tokio_rustls::rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One HTTP/1.1 request over TLS; the status, the body, and the server's certificate.
async fn request(
    port: u16,
    connector: &TlsConnector,
    head: &str,
    body: Option<&Value>,
) -> TestResult<(u16, String, Vec<u8>)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut tls = connector.connect(ServerName::try_from("localhost")?, tcp).await?;
    let server_cert =
        tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{head}\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body, server_cert))
}

/// Opens the organization's live stream over TLS: the upgrade's status, and the first frame's
/// opening bytes when it upgraded.
async fn open_stream(port: u16, connector: &TlsConnector, org: &str, token: &str) -> TestResult<(u16, Vec<u8>)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut tls = connector.connect(ServerName::try_from("localhost")?, tcp).await?;
    let request = format!(
        "GET /api/v1/orgs/{org}/stream HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    // The head, then (once upgraded) the snapshot frame that every stream begins with.
    while Instant::now() < deadline {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await??;
        if n == 0 {
            break;
        }
        seen.extend_from_slice(buf.get(..n).unwrap_or_default());
        let text = String::from_utf8_lossy(&seen);
        if let Some((head, _)) = text.split_once("\r\n\r\n") {
            let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let frame = seen.get(head.len() + 4..).unwrap_or_default().to_vec();
            if status != 101 || frame.len() >= 2 {
                return Ok((status, frame));
            }
        }
    }
    Err("no answer to the upgrade".into())
}

#[actix_web::test]
async fn https_with_http2_is_served_and_the_certificate_is_reloaded_when_its_files_change() -> TestResult {
    let ca = Ca::new("Portcullis test CA")?;
    let dir = tempfile::tempdir()?;
    write_server_files(dir.path(), &ca.issue("first", &["localhost", "127.0.0.1"])?)?;
    let tls = portcullis::config::TlsSettings {
        cert_file: dir.path().join("cert.pem"),
        key_file: dir.path().join("key.pem"),
        client_ca_file: None,
    };
    let app = crate::helpers::spawn_app_with(|s| s.server.tls = Some(tls)).await?;
    let port: u16 = app.address.rsplit(':').next().unwrap_or_default().parse()?;

    // HTTP/2 is offered; HTTP/1.1 answers.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let h2 = client(&ca, &[b"h2", b"http/1.1"], None)?.connect(ServerName::try_from("localhost")?, tcp).await?;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let http1 = client(&ca, &[b"http/1.1"], None)?;
    let (status, body, first) = request(port, &http1, "GET /health HTTP/1.1", None).await?;
    assert_eq!((status, body.contains("ok")), (200, true), "{body}");

    // A new certificate in place of the old: new connections get it, with no restart.
    write_server_files(dir.path(), &ca.issue("second", &["localhost", "127.0.0.1"])?)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, now) = request(port, &http1, "GET /health HTTP/1.1", None).await?;
        assert_eq!(status, 200);
        if now != first {
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate was not picked up");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

#[actix_web::test]
async fn a_device_decides_with_a_client_certificate_bound_to_its_key_and_operators_watch_over_wss() -> TestResult {
    // The site is set up over plain HTTP; a second engine on the same database serves TLS.
    let site = Site::build(spawn_app().await?, 1, 1).await?;
    let (_, pin) = site.pass(json!({"type": "multi"})).await?;
    let (ca, stranger_ca) = (Ca::new("Devices CA")?, Ca::new("Someone else")?);
    let device = ca.issue("turnstile-1", &[])?;
    let unbound = ca.issue("turnstile-2", &[])?;
    let forged = stranger_ca.issue("turnstile-1", &[])?;
    let fingerprint = portcullis::http::tls::fingerprint(&device.cert);
    let key = site
        .post(
            "/api-keys",
            json!({"name": "Turnstile 1 (certificate)", "scopes": ["gate:decide"], "gate_ids": [site.gates[0]],
                   "client_cert_sha256": fingerprint.to_uppercase()}),
        )
        .await?;
    assert_eq!(key["client_cert_sha256"], fingerprint.as_str(), "{key}");

    let dir = tempfile::tempdir()?;
    write_server_files(dir.path(), &ca.issue("server", &["localhost", "127.0.0.1"])?)?;
    std::fs::write(dir.path().join("devices-ca.pem"), pem(&ca.der(), "CERTIFICATE"))?;
    let tls = portcullis::config::TlsSettings {
        cert_file: dir.path().join("cert.pem"),
        key_file: dir.path().join("key.pem"),
        client_ca_file: Some(dir.path().join("devices-ca.pem")),
    };
    let data_dir = dir.path().join("var");
    let tls_app = spawn_app_on(site.app.dbname.clone(), |s| {
        s.server.tls = Some(tls);
        s.data_dir = data_dir;
    })
    .await?;
    let port: u16 = tls_app.address.rsplit(':').next().unwrap_or_default().parse()?;
    let decide = format!("POST /api/v1/gates/{}/decisions HTTP/1.1", site.gates[0]);
    let body = json!({"credential": pin, "direction": "in"});

    let (status, answer, _) = request(port, &client(&ca, &[b"http/1.1"], Some(&device))?, &decide, Some(&body)).await?;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"allow\""), "{answer}");
    // A certificate from the CA that no key names, and none at all: no identity.
    let (status, answer, _) =
        request(port, &client(&ca, &[b"http/1.1"], Some(&unbound))?, &decide, Some(&body)).await?;
    assert_eq!(status, 401, "{answer}");
    let (status, _, _) = request(port, &client(&ca, &[b"http/1.1"], None)?, &decide, Some(&body)).await?;
    assert_eq!(status, 401);
    // WSS: an operator's live stream over TLS; its first frame is a text frame (the snapshot).
    let (status, frame) = open_stream(port, &client(&ca, &[b"http/1.1"], None)?, &site.org, &site.root.access).await?;
    assert_eq!(status, 101);
    assert_eq!(frame.first(), Some(&0x81), "a final text frame");
    let (status, _) = open_stream(port, &client(&ca, &[b"http/1.1"], None)?, &site.org, "not-a-token").await?;
    assert_eq!(status, 401);
    // Another CA's certificate with the same name never gets through the handshake.
    let refused = request(port, &client(&ca, &[b"http/1.1"], Some(&forged))?, &decide, Some(&body)).await;
    assert!(refused.is_err() || refused.as_ref().is_ok_and(|(s, _, _)| *s == 0), "{:?}", refused.map(|r| r.0));
    Ok(())
}
