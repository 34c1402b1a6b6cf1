//! A user's own notifications (`/api/v1/me/notifications…`) and which they want
//! (`/api/v1/me/notification-preferences`). Made by `outbox::notify`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::App;
use crate::db::pagination::{self, Page};
use crate::error::AppError;
use crate::outbox::notify::NOTIFYING;

#[derive(Debug, Deserialize)]
pub struct NotificationQuery {
    pub cursor: Option<String>,
    pub limit: Option<u32>,
    /// `true`: only those not read yet.
    pub unread: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationView {
    pub id: Uuid,
    pub org_id: Uuid,
    /// The event type it was made from (`visitpass.checked_in`…).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Notifications by e-mail.
    pub email: bool,
    /// Notifications in the app (and on the live stream).
    pub in_app: bool,
    /// Event types not wanted at all.
    pub muted_types: Vec<String>,
}

/// The user's notifications, newest first.
pub async fn list(app: &App, user_id: Uuid, query: &NotificationQuery) -> Result<Page<NotificationView>, AppError> {
    let limit = pagination::limit(query.limit)?;
    let before: Option<Uuid> = pagination::decode(query.cursor.as_deref())?;
    let unread = query.unread.unwrap_or(false);
    let client = app.pool.get().await?;
    let rows = client
        .query(
            "SELECT id, org_id, type, title, body, created_at, read_at FROM notifications
             WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2) AND (NOT $3 OR read_at IS NULL)
             ORDER BY id DESC LIMIT $4",
            &[&user_id, &before, &unread, &(limit + 1)],
        )
        .await?;
    let items = rows
        .iter()
        .map(|r| {
            Ok(NotificationView {
                id: r.try_get(0)?,
                org_id: r.try_get(1)?,
                kind: r.try_get(2)?,
                title: r.try_get(3)?,
                body: r.try_get(4)?,
                created_at: r.try_get(5)?,
                read_at: r.try_get(6)?,
            })
        })
        .collect::<Result<Vec<_>, AppError>>()?;
    Ok(pagination::page(items, limit, |n| Some(n.id.to_string())))
}

/// Marks one of the user's notifications read (another user's is not found).
pub async fn mark_read(app: &App, user_id: Uuid, id: Uuid) -> Result<(), AppError> {
    let client = app.pool.get().await?;
    let found = client
        .execute(
            "UPDATE notifications SET read_at = coalesce(read_at, now()) WHERE user_id = $1 AND id = $2",
            &[&user_id, &id],
        )
        .await?;
    if found == 0 {
        return Err(AppError::NotFound("notification"));
    }
    Ok(())
}

pub async fn preferences(app: &App, user_id: Uuid) -> Result<Preferences, AppError> {
    let client = app.pool.get().await?;
    let row = client
        .query_opt("SELECT email, in_app, muted_types FROM notification_preferences WHERE user_id = $1", &[&user_id])
        .await?;
    Ok(match row {
        Some(r) => Preferences { email: r.try_get(0)?, in_app: r.try_get(1)?, muted_types: r.try_get(2)? },
        None => Preferences { email: true, in_app: true, muted_types: Vec::new() },
    })
}

pub async fn set_preferences(app: &App, user_id: Uuid, body: Preferences) -> Result<Preferences, AppError> {
    if let Some((i, bad)) = body.muted_types.iter().enumerate().find(|(_, t)| !NOTIFYING.contains(&t.as_str())) {
        return Err(AppError::field(
            format!("muted_types[{i}]"),
            format!("`{bad}` is not a notification type ({})", NOTIFYING.join(", ")),
        ));
    }
    let mut muted = body.muted_types.clone();
    muted.sort();
    muted.dedup();
    let client = app.pool.get().await?;
    client
        .execute(
            "INSERT INTO notification_preferences (user_id, email, in_app, muted_types) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email, in_app = EXCLUDED.in_app,
                 muted_types = EXCLUDED.muted_types, updated_at = now()",
            &[&user_id, &body.email, &body.in_app, &muted],
        )
        .await?;
    Ok(Preferences { muted_types: muted, ..body })
}
