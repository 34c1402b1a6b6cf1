//! Notifications: the outbox's events turned into messages for the people concerned — in-app
//! (a row they can list and mark read, and a `notification` frame on their own live stream) and
//! e-mail (queued, sent by SMTP or written as `.eml` files, retried with back-off). In the
//! organization's language (English, Russian), plain text and HTML, nothing tracked.
//!
//! | Event | Who |
//! | --- | --- |
//! | `visitpass.checked_in` | the host who issued the pass: their visitor arrived |
//! | `visitpass.revoked` | the host: their visitor's pass was revoked |
//! | `alert.raised` | the organization's security officers and admins |
//! | `webhook.disabled` | the organization's admins and developers |
//!
//! Each user chooses channels and may mute types (`/api/v1/me/notification-preferences`).

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use deadpool_postgres::{GenericClient, Pool};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use portcullis_actors::engine::Engine;
use portcullis_actors::events::Event;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use uuid::Uuid;

/// The event types that notify someone.
pub const NOTIFYING: &[&str] =
    &["visitpass.checked_in", "visitpass.revoked", "alert.raised", "webhook.disabled", "visit.arrived"];

/// The waits after failed sends; then the message has failed.
const MAIL_BACKOFF: &[u64] = &[60, 300, 1800, 7200];

/// A message in one language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub title: String,
    pub text: String,
    pub html: String,
}

/// A mail queued in the caller's transaction (sent by the dispatcher once committed): to `name
/// <email>`, for `event_id` (queued once per event and address), for a user when one is known.
pub struct QueuedMail<'a> {
    pub org_id: Uuid,
    pub user_id: Option<Uuid>,
    pub event_id: Uuid,
    pub name: &'a str,
    pub email: &'a str,
    pub message: &'a Rendered,
}

pub async fn queue_mail(tx: &impl GenericClient, mail: QueuedMail<'_>) -> Result<(), tokio_postgres::Error> {
    // The display name may not break out of its header (quotes, brackets, line breaks, the list
    // separator).
    let to = format!("{} <{}>", mail.name.replace(['<', '>', '"', '\r', '\n', ','], ""), mail.email);
    let message = mail.message;
    tx.execute(
        "INSERT INTO mail_queue (id, org_id, user_id, event_id, to_address, subject, text_body, html_body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id, to_address) DO NOTHING",
        &[
            &Uuid::now_v7(),
            &mail.org_id,
            &mail.user_id,
            &mail.event_id,
            &to,
            &message.title,
            &message.text,
            &message.html,
        ],
    )
    .await?;
    Ok(())
}

/// What a template may say.
struct Context<'a> {
    locale: &'a str,
    org: &'a str,
    tz: Tz,
    at: DateTime<Utc>,
    data: &'a Value,
    gate: Option<&'a str>,
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// The message for an event, in the organization's language (`None`: the event notifies nobody).
fn render(kind: &str, c: &Context<'_>) -> Option<Rendered> {
    let field = |key: &str| c.data.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    let holder = field("holder_name");
    let time = c.at.with_timezone(&c.tz).format("%H:%M").to_string();
    let ru = c.locale == "ru";
    let (title, lines): (String, Vec<String>) = match kind {
        "visitpass.checked_in" => {
            let gate = c.gate.unwrap_or("?");
            if ru {
                (
                    format!("{holder} прибыл(а)"),
                    vec![format!("{holder} прошёл(ла) через «{gate}» в {time}."), format!("Организация: {}.", c.org)],
                )
            } else {
                (
                    format!("{holder} has arrived"),
                    vec![format!("{holder} was let in at {gate} at {time}."), format!("Organization: {}.", c.org)],
                )
            }
        }
        "visitpass.revoked" => {
            let reason = field("reason");
            if ru {
                (
                    format!("Пропуск {holder} аннулирован"),
                    vec![
                        format!("Пропуск вашего посетителя {holder} аннулирован в {time}."),
                        format!("Причина: {reason}."),
                    ],
                )
            } else {
                (
                    format!("{holder}'s pass was revoked"),
                    vec![format!("Your visitor {holder}'s pass was revoked at {time}."), format!("Reason: {reason}.")],
                )
            }
        }
        "alert.raised" => {
            let gate = c.gate.unwrap_or("?");
            let (en, ru_text) = match field("alert").as_str() {
                "revoked_pass_inside" => (
                    format!("{holder}'s pass is revoked, and they are still inside (seen at {gate})."),
                    format!("Пропуск {holder} аннулирован, а посетитель всё ещё внутри (замечен у «{gate}»)."),
                ),
                "anti_passback" => (
                    format!("{holder}'s pass was refused at {gate}: it did not leave before coming in again."),
                    format!("Пропуск {holder} не принят у «{gate}»: повторный вход без выхода."),
                ),
                "controller_out_of_sync" => (
                    format!("A controller at {gate} let {holder} in although the pass no longer allows it."),
                    format!("Контроллер у «{gate}» пропустил {holder}, хотя пропуск больше не действует."),
                ),
                "lockdown" => (
                    "The organization was locked down: every gate refuses.".to_owned(),
                    "Объявлена блокировка: все проходы закрыты.".to_owned(),
                ),
                "lockdown_lifted" => ("The lockdown was lifted.".to_owned(), "Блокировка снята.".to_owned()),
                "deny_list_match" => {
                    let matched = field("matched");
                    (
                        format!("{holder} matches the deny list ({matched}); their visit is held for your review."),
                        format!("{holder} совпадает со стоп-листом ({matched}); визит ожидает вашей проверки."),
                    )
                }
                other => (format!("Alert: {other}."), format!("Тревога: {other}.")),
            };
            if ru {
                (format!("Тревога: {}", field("alert")), vec![ru_text, format!("Время: {time}.")])
            } else {
                (format!("Alert: {}", field("alert")), vec![en, format!("Time: {time}.")])
            }
        }
        "visit.arrived" => {
            if ru {
                (
                    format!("{holder} ждёт вас"),
                    vec![format!("{holder} прибыл(а) на ресепшн в {time}."), format!("Организация: {}.", c.org)],
                )
            } else {
                (
                    format!("{holder} is here"),
                    vec![format!("{holder} arrived at reception at {time}."), format!("Organization: {}.", c.org)],
                )
            }
        }
        "webhook.disabled" => {
            let (url, reason) = (field("url"), field("reason"));
            if ru {
                (
                    "Webhook отключён".to_owned(),
                    vec![
                        format!("Адрес {url} отключён: {reason}."),
                        "Включите его снова в консоли разработчика, когда он будет исправлен.".to_owned(),
                    ],
                )
            } else {
                (
                    "A webhook endpoint was disabled".to_owned(),
                    vec![
                        format!("{url} was disabled: {reason}."),
                        "Enable it again in the developer console once it is fixed.".to_owned(),
                    ],
                )
            }
        }
        _ => return None,
    };
    Some(compose(ru, title, &lines, None))
}

/// A message from its title and lines (and a link, shown as a button in HTML).
fn compose(ru: bool, title: String, lines: &[String], link: Option<(&str, &str)>) -> Rendered {
    let mut text = lines.join("\n");
    let mut paragraphs: String = lines.iter().map(|l| format!("<p>{}</p>", escape(l))).collect();
    if let Some((label, url)) = link {
        text.push_str(&format!("\n\n{label}: {url}"));
        paragraphs.push_str(&format!("<p><a href=\"{}\">{}</a></p>", escape(url), escape(label)));
    }
    let html = format!(
        "<!DOCTYPE html><html lang=\"{}\"><head><meta charset=\"utf-8\"><title>{}</title></head><body>{paragraphs}</body></html>",
        if ru { "ru" } else { "en" },
        escape(&title)
    );
    Rendered { title, text, html }
}

/// What an invitation says.
pub struct InvitationText<'a> {
    pub org: &'a str,
    pub visitor: &'a str,
    pub host: &'a str,
    pub title: &'a str,
    pub room: Option<&'a str>,
    pub address: Option<&'a str>,
    /// The first occurrence, in the organization's time zone.
    pub at: String,
    pub occurrences: usize,
    /// The guest page, with the single-use sign-in token.
    pub link: &'a str,
}

/// The invitation mailed to a visitor, in the organization's language.
pub fn invitation(locale: &str, i: &InvitationText<'_>) -> Rendered {
    let ru = locale == "ru";
    let mut lines = Vec::new();
    if ru {
        lines.push(format!("Здравствуйте, {}!", i.visitor));
        lines.push(format!("{} приглашает вас: «{}», {}.", i.host, i.title, i.at));
        if i.occurrences > 1 {
            lines.push(format!("Встреча повторяется ({} раз).", i.occurrences));
        }
        if let Some(room) = i.room {
            lines.push(format!("Помещение: {room}."));
        }
        if let Some(address) = i.address {
            lines.push(format!("Адрес: {address}."));
        }
        lines.push("Откройте ссылку, чтобы увидеть свой пропуск (QR-код). Ссылка одноразовая.".to_owned());
        compose(true, format!("Приглашение: {} — {}", i.title, i.org), &lines, Some(("Мой пропуск", i.link)))
    } else {
        lines.push(format!("Hello {},", i.visitor));
        lines.push(format!("{} invites you to \"{}\" on {}.", i.host, i.title, i.at));
        if i.occurrences > 1 {
            lines.push(format!("The meeting repeats ({} times).", i.occurrences));
        }
        if let Some(room) = i.room {
            lines.push(format!("Room: {room}."));
        }
        if let Some(address) = i.address {
            lines.push(format!("Address: {address}."));
        }
        lines.push("Open the link to see your pass (a QR code). The link works once.".to_owned());
        compose(false, format!("Invitation: {} at {}", i.title, i.org), &lines, Some(("My pass", i.link)))
    }
}

/// A one-time sign-in code for the guest page.
pub fn guest_code(locale: &str, org: &str, code: &str, minutes: i64) -> Rendered {
    if locale == "ru" {
        let lines = [format!("Ваш код для входа: {code}"), format!("Код действует {minutes} минут, один раз.")];
        compose(true, format!("Код входа — {org}"), &lines, None)
    } else {
        let lines = [format!("Your sign-in code: {code}"), format!("It works once, for {minutes} minutes.")];
        compose(false, format!("Your sign-in code for {org}"), &lines, None)
    }
}

/// Someone to tell.
struct Recipient {
    user_id: Uuid,
    email: String,
    name: String,
    by_email: bool,
    in_app: bool,
}

/// The people an event concerns, with their preferences (muted types left out).
async fn recipients(
    client: &impl GenericClient,
    org_id: Uuid,
    kind: &str,
    data: &Value,
) -> Result<Vec<Recipient>, tokio_postgres::Error> {
    let prefs = "coalesce(np.email, true), coalesce(np.in_app, true)";
    let muted = |kind_param: u8| format!("NOT (coalesce(np.muted_types, '{{}}') @> ARRAY[${kind_param}::text])");
    let rows = match kind {
        "visitpass.checked_in" | "visitpass.revoked" => {
            let pass_id = data.get("pass_id").and_then(Value::as_str).and_then(|s| Uuid::try_parse(s).ok());
            client
                .query(
                    &format!(
                        "SELECT u.id, u.email, u.name, {prefs} FROM passes p
                         JOIN users u ON u.id = p.issued_by AND u.disabled_at IS NULL
                         JOIN memberships m ON m.org_id = p.org_id AND m.user_id = u.id AND m.disabled_at IS NULL
                         LEFT JOIN notification_preferences np ON np.user_id = u.id
                         WHERE p.org_id = $1 AND p.id = $2 AND {}",
                        muted(3)
                    ),
                    &[&org_id, &pass_id, &kind],
                )
                .await?
        }
        "visit.arrived" => {
            let host_id = data.get("host_id").and_then(Value::as_str).and_then(|s| Uuid::try_parse(s).ok());
            client
                .query(
                    &format!(
                        "SELECT u.id, u.email, u.name, {prefs} FROM users u
                         JOIN memberships m ON m.org_id = $1 AND m.user_id = u.id AND m.disabled_at IS NULL
                         LEFT JOIN notification_preferences np ON np.user_id = u.id
                         WHERE u.id = $2 AND u.disabled_at IS NULL AND {}",
                        muted(3)
                    ),
                    &[&org_id, &host_id, &kind],
                )
                .await?
        }
        "webhook.disabled" | "alert.raised" => {
            let roles: &[&str] =
                if kind == "alert.raised" { &["org_admin", "security_officer"] } else { &["org_admin", "developer"] };
            let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
            client
                .query(
                    &format!(
                        "SELECT u.id, u.email, u.name, {prefs} FROM memberships m
                         JOIN users u ON u.id = m.user_id AND u.disabled_at IS NULL
                         LEFT JOIN notification_preferences np ON np.user_id = u.id
                         WHERE m.org_id = $1 AND m.disabled_at IS NULL AND m.role = ANY($3)
                           AND {}",
                        muted(2)
                    ),
                    &[&org_id, &kind, &roles],
                )
                .await?
        }
        _ => Vec::new(),
    };
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(Recipient {
                user_id: r.try_get(0).ok()?,
                email: r.try_get(1).ok()?,
                name: r.try_get(2).ok()?,
                by_email: r.try_get(3).ok()?,
                in_app: r.try_get(4).ok()?,
            })
        })
        .collect())
}

/// A notification made in the notifier's transaction, to publish once committed.
pub struct Made {
    org_id: Uuid,
    event: Event,
}

/// Makes the notifications of events just claimed (rows of `id, org_id, type, payload,
/// occurred_at`), in the dispatcher's transaction: in-app rows and queued mail. Returns what to
/// publish on the streams once committed.
pub async fn make(
    tx: &impl GenericClient,
    events: Vec<tokio_postgres::Row>,
) -> Result<Vec<Made>, tokio_postgres::Error> {
    let mut made = Vec::new();
    for row in events {
        let (Ok(event_id), Ok(org_id), Ok(kind), Ok(data), Ok(at)) = (
            row.try_get::<_, Uuid>(0),
            row.try_get::<_, Uuid>(1),
            row.try_get::<_, String>(2),
            row.try_get::<_, Value>(3),
            row.try_get::<_, DateTime<Utc>>(4),
        ) else {
            continue;
        };
        if !NOTIFYING.contains(&kind.as_str()) {
            continue;
        }
        let Some(org) =
            tx.query_opt("SELECT name, locale, timezone FROM organizations WHERE id = $1", &[&org_id]).await?
        else {
            continue;
        };
        let (org_name, locale, tz): (String, String, String) = (org.try_get(0)?, org.try_get(1)?, org.try_get(2)?);
        let gate_id = data.get("gate_id").and_then(Value::as_str).and_then(|s| Uuid::try_parse(s).ok());
        let gate: Option<String> = match gate_id {
            Some(gate_id) => tx
                .query_opt("SELECT name FROM gates WHERE org_id = $1 AND id = $2", &[&org_id, &gate_id])
                .await?
                .and_then(|r| r.try_get(0).ok()),
            None => None,
        };
        let context = Context {
            locale: &locale,
            org: &org_name,
            tz: tz.parse().unwrap_or(chrono_tz::UTC),
            at,
            data: &data,
            gate: gate.as_deref(),
        };
        let Some(message) = render(&kind, &context) else { continue };
        for recipient in recipients(tx, org_id, &kind, &data).await? {
            if recipient.in_app {
                let id = Uuid::now_v7();
                let inserted = tx
                    .execute(
                        "INSERT INTO notifications (id, org_id, user_id, event_id, type, title, body)
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, event_id) DO NOTHING",
                        &[&id, &org_id, &recipient.user_id, &event_id, &kind, &message.title, &message.text],
                    )
                    .await?;
                if inserted > 0 {
                    made.push(Made {
                        org_id,
                        event: Event::Notification {
                            user_id: recipient.user_id,
                            id,
                            kind: kind.clone(),
                            title: message.title.clone(),
                            body: message.text.clone(),
                        },
                    });
                }
            }
            if recipient.by_email {
                let mail = QueuedMail {
                    org_id,
                    user_id: Some(recipient.user_id),
                    event_id,
                    name: &recipient.name,
                    email: &recipient.email,
                    message: &message,
                };
                queue_mail(tx, mail).await?;
            }
        }
    }
    Ok(made)
}

/// Publishes committed in-app notifications on their organization's stream (each shown only to
/// its user).
pub fn publish(engine: &Engine, made: Vec<Made>) {
    for Made { org_id, event } in made {
        engine.publish(org_id, event);
    }
}

/// Where mail goes: an SMTP server, or `.eml` files.
pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(PathBuf),
}

impl Mailer {
    /// From the configuration (checked at start: a bad URL never gets here).
    pub fn new(smtp_url: Option<&SecretString>, data_dir: &std::path::Path) -> Mailer {
        match smtp_url.map(|u| u.expose_secret()).filter(|u| !u.is_empty()) {
            Some(url) => match AsyncSmtpTransport::<Tokio1Executor>::from_url(url) {
                Ok(builder) => Mailer::Smtp(builder.timeout(Some(Duration::from_secs(20))).build()),
                Err(_) => {
                    tracing::error!("mail.smtp_url cannot be used; writing mail to files instead");
                    Mailer::Files(data_dir.join("mail"))
                }
            },
            None => Mailer::Files(data_dir.join("mail")),
        }
    }

    async fn send(&self, message: Message) -> Result<Option<PathBuf>, String> {
        match self {
            Mailer::Smtp(transport) => transport.send(message).await.map(|_| None).map_err(|e| e.to_string()),
            Mailer::Files(dir) => {
                tokio::fs::create_dir_all(dir).await.map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let id =
                    AsyncFileTransport::<Tokio1Executor>::new(dir).send(message).await.map_err(|e| e.to_string())?;
                Ok(Some(dir.join(format!("{id}.eml"))))
            }
        }
    }
}

/// Sends the mail that is due (leased while it is sent); how many were tried.
pub async fn send_due(pool: &Pool, mailer: &Mailer, from: &Mailbox) -> Result<usize, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let rows = client
        .query(
            "UPDATE mail_queue SET next_at = now() + interval '2 minutes'
             WHERE id IN (SELECT id FROM mail_queue WHERE state = 'pending' AND next_at <= now()
                          ORDER BY next_at LIMIT 10 FOR UPDATE SKIP LOCKED)
             RETURNING id, to_address, subject, text_body, html_body, attempts",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    let tried = rows.len();
    for row in rows {
        let (Ok(id), Ok(to), Ok(subject), Ok(text), Ok(html), Ok(attempts)) = (
            row.try_get::<_, Uuid>(0),
            row.try_get::<_, String>(1),
            row.try_get::<_, String>(2),
            row.try_get::<_, String>(3),
            row.try_get::<_, String>(4),
            row.try_get::<_, i32>(5),
        ) else {
            continue;
        };
        let sent = match to.parse::<Mailbox>() {
            Ok(to) => match Message::builder()
                .from(from.clone())
                .to(to)
                .subject(subject)
                .multipart(MultiPart::alternative_plain_html(text, html))
            {
                Ok(message) => mailer.send(message).await,
                Err(err) => Err(format!("cannot build the message: {err}")),
            },
            Err(err) => Err(format!("not an address: {err}")),
        };
        let result = match &sent {
            Ok(path) => {
                metrics::counter!("portcullis_mail_total", "outcome" => "sent").increment(1);
                if let Some(path) = path {
                    tracing::info!(mail = %id, path = %path.display(), "mail written");
                }
                client.execute("UPDATE mail_queue SET state = 'sent', sent_at = now(), attempts = attempts + 1, last_error = NULL WHERE id = $1", &[&id]).await
            }
            Err(err) => {
                metrics::counter!("portcullis_mail_total", "outcome" => "failed").increment(1);
                let wait = MAIL_BACKOFF.get(usize::try_from(attempts).unwrap_or(usize::MAX)).copied();
                tracing::warn!(mail = %id, error = %err, retry_in_secs = ?wait, "mail not sent");
                let state = if wait.is_some() { "pending" } else { "failed" };
                let wait = f64::from(u32::try_from(wait.unwrap_or(0)).unwrap_or(u32::MAX));
                client
                    .execute(
                        "UPDATE mail_queue SET attempts = attempts + 1, state = $2, last_error = $3,
                             next_at = now() + make_interval(secs => $4) WHERE id = $1",
                        &[&id, &state, &err, &wait],
                    )
                    .await
            }
        };
        if let Err(err) = result {
            tracing::warn!(mail = %id, error = %err, "a mail's outcome was not recorded (it may be sent again)");
        }
    }
    Ok(tried)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context<'a>(locale: &'a str, data: &'a Value) -> Context<'a> {
        Context {
            locale,
            org: "Acme",
            tz: chrono_tz::Europe::Moscow,
            at: DateTime::<Utc>::UNIX_EPOCH,
            data,
            gate: Some("Lobby"),
        }
    }

    #[test]
    fn arrivals_are_told_in_the_organizations_language_and_escaped_in_html() {
        let data = serde_json::json!({"holder_name": "Ada <script>", "direction": "in"});
        let en = render("visitpass.checked_in", &context("en", &data)).unwrap_or_else(|| unreachable!());
        assert_eq!(en.title, "Ada <script> has arrived");
        assert!(en.text.contains("let in at Lobby at 03:00"), "{}", en.text);
        assert!(en.html.contains("Ada &lt;script&gt;") && !en.html.contains("<script>"), "{}", en.html);
        assert!(!en.html.contains("<img"), "no tracking pixel");
        let ru = render("visitpass.checked_in", &context("ru", &data)).unwrap_or_else(|| unreachable!());
        assert!(ru.title.contains("прибыл") && ru.text.contains("«Lobby»"), "{}", ru.text);
        assert!(ru.html.starts_with("<!DOCTYPE html><html lang=\"ru\">"));
    }

    #[test]
    fn events_that_notify_nobody_render_nothing() {
        let data = serde_json::json!({});
        assert_eq!(render("visitpass.issued", &context("en", &data)), None);
        assert!(
            render("webhook.disabled", &context("en", &serde_json::json!({"url": "https://x", "reason": "410"})))
                .is_some()
        );
    }
}
