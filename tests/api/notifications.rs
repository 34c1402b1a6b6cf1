//! Notifications: a host told that their visitor arrived — by e-mail through a real SMTP
//! conversation (a small SMTP server on 127.0.0.1, in the organization's language) and in the app.

// The SMTP server runs on a thread of its own; what it received is locked briefly.
#![expect(clippy::disallowed_types, reason = "the SMTP server's mailbox, shared with its own thread")]

use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::json;

use crate::helpers::{TestResult, spawn_app_with};
use crate::site::Site;

/// One message as the server received it: the envelope's recipients and the DATA.
#[derive(Debug, Clone)]
struct Mail {
    to: Vec<String>,
    data: String,
}

/// Speaks just enough SMTP (RFC 5321) to take messages: EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
fn smtp_server() -> TestResult<(u16, Arc<Mutex<Vec<Mail>>>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let inbox: Arc<Mutex<Vec<Mail>>> = Arc::default();
    let received = inbox.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let inbox = received.clone();
            std::thread::spawn(move || {
                let Ok(mut writer) = stream.try_clone() else { return };
                let mut reader = BufReader::new(stream);
                let _ = writer.write_all(b"220 test.localhost ESMTP\r\n");
                let mut to = Vec::new();
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let command = line.trim_end().to_ascii_uppercase();
                    let reply: &[u8] = if command.starts_with("EHLO") || command.starts_with("HELO") {
                        b"250 test.localhost\r\n"
                    } else if command.starts_with("RCPT TO:") {
                        to.push(line.trim_end()[8..].trim().to_owned());
                        b"250 OK\r\n"
                    } else if command == "DATA" {
                        let _ = writer.write_all(b"354 end with <CRLF>.<CRLF>\r\n");
                        let mut data = String::new();
                        let mut body_line = String::new();
                        while reader.read_line(&mut body_line).is_ok_and(|n| n > 0) {
                            if body_line == ".\r\n" {
                                break;
                            }
                            data.push_str(&body_line);
                            body_line.clear();
                        }
                        if let Ok(mut inbox) = inbox.lock() {
                            inbox.push(Mail { to: std::mem::take(&mut to), data });
                        }
                        b"250 queued\r\n"
                    } else if command == "QUIT" {
                        let _ = writer.write_all(b"221 bye\r\n");
                        return;
                    } else {
                        b"250 OK\r\n"
                    };
                    let _ = writer.write_all(reply);
                    line.clear();
                }
            });
        }
    });
    Ok((port, inbox))
}

/// The next `notification` frame on a stream, within `wait`.
async fn notification_frame(
    stream: &mut actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>,
    wait: Duration,
) -> TestResult<serde_json::Value> {
    use futures_util::{SinkExt as _, StreamExt as _};
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let frame = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) | Ok(None) => return Err("no notification frame".into()),
            Ok(Some(frame)) => frame?,
        };
        match frame {
            awc::ws::Frame::Text(text) => {
                let event: serde_json::Value = serde_json::from_slice(&text)?;
                if event["type"] == "notification" {
                    return Ok(event);
                }
            }
            awc::ws::Frame::Ping(bytes) => stream.send(awc::ws::Message::Pong(bytes)).await?,
            _ => {}
        }
    }
}

/// The Subject header, decoded (encoded words `=?utf-8?b?…?=`, possibly folded over lines).
fn subject(data: &str) -> Option<String> {
    use base64::Engine as _;
    let start = data.find("\nSubject: ")? + "\nSubject: ".len();
    let mut raw = String::new();
    for (i, line) in data[start..].split("\r\n").enumerate() {
        if i > 0 && !line.starts_with(' ') && !line.starts_with('\t') {
            break;
        }
        raw.push_str(line.trim());
        raw.push(' ');
    }
    let mut bytes = Vec::new();
    for word in raw.split_whitespace() {
        let lower = word.to_ascii_lowercase();
        let encoded = lower.strip_prefix("=?utf-8?b?").and_then(|_| word.get(10..word.len().saturating_sub(2)))?;
        bytes.extend(base64::engine::general_purpose::STANDARD.decode(encoded).ok()?);
    }
    String::from_utf8(bytes).ok()
}

#[actix_web::test]
async fn a_host_is_told_their_visitor_arrived_by_mail_in_the_organizations_language_and_in_the_app() -> TestResult {
    let (port, inbox) = smtp_server()?;
    let url = format!("smtp://127.0.0.1:{port}");
    let app = spawn_app_with(move |s| s.mail.smtp_url = Some(SecretString::from(url))).await?;
    let site = Site::build(app, 1, 1).await?;
    let reply = site.app.call("PATCH", &site.path(""), Some(&site.root.access), Some(json!({"locale": "ru"}))).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["locale"], "ru");
    let host = site.app.create_user(&site.root, &site.org, "host").await?;
    // The host watches their own stream; the admin watches theirs.
    let ws = |token: &str| {
        format!("{}{}?access_token={token}", site.app.address.replace("http://", "ws://"), site.path("/stream"))
    };
    let (_, mut host_stream) = awc::Client::new().ws(ws(&host.access)).connect().await.map_err(|e| format!("{e}"))?;
    let (_, mut admin_stream) =
        awc::Client::new().ws(ws(&site.root.access)).connect().await.map_err(|e| format!("{e}"))?;

    // The host issues a pass; the visitor comes in.
    let path = site.path("/passes");
    let now = chrono::Utc::now();
    let body = json!({
        "holder_name": "Ада Лавлейс", "access_rule_id": site.rule, "type": "multi", "max_uses": 5,
        "valid_from": (now - chrono::Duration::hours(1)).to_rfc3339(), "valid_to": (now + chrono::Duration::hours(4)).to_rfc3339(),
        "credential": {"kind": "pin"},
    });
    let pass = site.app.call("POST", &path, Some(&host.access), Some(body)).await?;
    assert_eq!(pass.status, 201, "{}", pass.text());
    let credential = json!({"kind": "pin", "value": pass.json()["credential"]["value"]});
    assert_eq!(site.decide(0, &credential, "in").await?, crate::site::allow());

    // The mail, in Russian, to the host alone.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mail = loop {
        if let Some(mail) = inbox.lock().ok().and_then(|m| m.first().cloned()) {
            break mail;
        }
        if Instant::now() > deadline {
            return Err("no mail within 15 s".into());
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(mail.to, [format!("<{}>", host.email)], "{mail:?}");
    let data = mail.data.to_lowercase();
    assert!(data.contains("content-type: multipart/alternative"), "{}", mail.data);
    assert!(data.contains("text/plain") && data.contains("text/html"), "{}", mail.data);
    // The subject, RFC 2047-encoded, says it in Russian.
    assert_eq!(subject(&mail.data).as_deref(), Some("Ада Лавлейс прибыл(а)"), "{}", mail.data);
    assert!(!data.contains("<img"), "no tracking pixel");

    // On the host's own stream, a notification frame; never on anyone else's.
    let frame = notification_frame(&mut host_stream, Duration::from_secs(10)).await?;
    assert_eq!(frame["type"], "notification");
    assert_eq!(frame["title"], "Ада Лавлейс прибыл(а)");
    assert_eq!(frame["user_id"].as_str(), Some(host.user_id.as_str()));
    assert!(notification_frame(&mut admin_stream, Duration::from_secs(2)).await.is_err(), "another user saw it");

    // In the app: the host's own list, unread, then read.
    let list = site.app.call("GET", "/api/v1/me/notifications?unread=true", Some(&host.access), None).await?.json();
    let items = list["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["type"], "visitpass.checked_in");
    assert_eq!(items[0]["title"], "Ада Лавлейс прибыл(а)");
    let id = items[0]["id"].as_str().unwrap_or_default();
    // Nobody else's.
    let others = site.app.call("GET", "/api/v1/me/notifications", Some(&site.root.access), None).await?.json();
    assert_eq!(others["items"].as_array().map(Vec::len), Some(0), "{others}");
    let reply =
        site.app.call("POST", &format!("/api/v1/me/notifications/{id}/read"), Some(&site.root.access), None).await?;
    assert_eq!(reply.status, 404, "another user's notification is not found");
    let reply = site.app.call("POST", &format!("/api/v1/me/notifications/{id}/read"), Some(&host.access), None).await?;
    assert_eq!(reply.status, 204);
    let unread = site.app.call("GET", "/api/v1/me/notifications?unread=true", Some(&host.access), None).await?.json();
    assert_eq!(unread["items"].as_array().map(Vec::len), Some(0));

    // Muted: the next arrival is told to nobody.
    let prefs = json!({"email": true, "in_app": true, "muted_types": ["visitpass.checked_in"]});
    let reply = site.app.call("PUT", "/api/v1/me/notification-preferences", Some(&host.access), Some(prefs)).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let bad = json!({"email": true, "in_app": true, "muted_types": ["pass.teleported"]});
    let reply = site.app.call("PUT", "/api/v1/me/notification-preferences", Some(&host.access), Some(bad)).await?;
    assert_eq!(reply.status, 422);
    assert!(reply.json()["error"]["details"]["fields"]["muted_types[0]"].is_string());
    assert_eq!(site.decide(0, &credential, "out").await?, crate::site::allow());
    assert_eq!(site.decide(0, &credential, "in").await?, crate::site::allow());
    actix_web::rt::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(inbox.lock().map(|m| m.len()).unwrap_or(0), 1, "a muted type was sent");
    Ok(())
}

#[actix_web::test]
async fn security_officers_are_told_of_alerts_and_integrations_receive_them() -> TestResult {
    let site = Site::build(crate::helpers::spawn_app().await?, 1, 1).await?;
    let officer = site.app.create_user(&site.root, &site.org, "security_officer").await?;
    let operator = site.app.create_user(&site.root, &site.org, "operator").await?;
    let receiver = crate::webhooks::Receiver::start(&[])?;
    site.post("/webhooks", json!({"url": receiver.url, "event_types": ["alert.raised"]})).await?;

    // An anti-passback refusal, then a lockdown.
    let strict = site.rule_for(&site.zones, json!({"anti_passback": "hard"})).await?;
    let (pass, credential) = site.pass(json!({"access_rule_id": strict, "holder_name": "Grace"})).await?;
    assert_eq!(site.decide(0, &credential, "in").await?, crate::site::allow());
    assert_eq!(site.decide(0, &credential, "in").await?, crate::site::deny("anti_passback"));
    site.post("/lockdown", json!({"lockdown": true})).await?;

    let alert = receiver
        .wait_for(10, |r| r.json()["data"]["alert"] == "anti_passback")
        .await
        .ok_or("no alert.raised for the anti-passback refusal")?;
    assert_eq!(alert.json()["data"]["pass_id"], json!(pass));
    receiver
        .wait_for(10, |r| r.json()["data"]["alert"] == "lockdown")
        .await
        .ok_or("no alert.raised for the lockdown")?;

    let deadline = Instant::now() + Duration::from_secs(10);
    let titles = loop {
        let list = site.app.call("GET", "/api/v1/me/notifications", Some(&officer.access), None).await?.json();
        let titles: Vec<String> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["title"].as_str().map(str::to_owned))
            .collect();
        if titles.len() >= 2 || Instant::now() > deadline {
            break titles;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    let mut titles = titles;
    // In the order their events were committed (the refusal's by the journal, just after it).
    titles.sort();
    assert_eq!(titles, ["Alert: anti_passback", "Alert: lockdown"]);
    // An operator is not told.
    let list = site.app.call("GET", "/api/v1/me/notifications", Some(&operator.access), None).await?.json();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    Ok(())
}
