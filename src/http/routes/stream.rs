//! `GET /api/v1/orgs/{org}/stream?gates=&since=` — the live entry stream (WebSocket).
//! The token comes in `Authorization` or, since browsers cannot set headers on a WebSocket, in
//! `access_token` (never logged: the request log records the path only).

use std::collections::HashSet;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use uuid::Uuid;

use crate::app::App;
use crate::app::streams::{Credential, Filter, host_passes};
use crate::auth::permissions::Permission;
use crate::auth::principal::{Principal, authorize};
use crate::error::AppError;
use crate::http::auth::{authenticate_with, bearer_token};
use crate::http::stream::session::{Setup, Timing};
use crate::http::stream::threads::StreamThreads;
use crate::http::stream::upgrade::Handover;

#[derive(Deserialize)]
pub struct StreamQuery {
    gates: Option<String>,
    since: Option<u64>,
    access_token: Option<String>,
}

impl StreamQuery {
    /// The `gates` parameter: gate ids separated by commas (absent or empty: every gate).
    pub fn gate_filter(&self) -> Result<Option<HashSet<Uuid>>, AppError> {
        let Some(list) = self.gates.as_deref().filter(|g| !g.is_empty()) else { return Ok(None) };
        list.split(',')
            .map(|id| Uuid::try_parse(id.trim()))
            .collect::<Result<HashSet<_>, _>>()
            .map(Some)
            .map_err(|_| AppError::field("gates", "must be gate ids separated by commas"))
    }
}

/// Answers the handshake; the session runs once the answer is written (`http::stream::upgrade`).
pub async fn stream(
    state: web::Data<App>,
    threads: web::Data<StreamThreads>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, AppError> {
    let token = match bearer_token(&req) {
        Ok(token) => token,
        Err(AppError::MissingToken) => query.access_token.clone().ok_or(AppError::MissingToken)?,
        Err(err) => return Err(err),
    };
    let principal = authenticate_with(&state, &token).await?;
    let org_id = Uuid::try_parse(&path).map_err(|_| AppError::NotFound("organization"))?;
    authorize(&state.pool, &principal, org_id, Permission::StreamWatch).await?;

    let gates = query.gate_filter()?;
    let mut filter = Filter { gates, user_id: principal.user_id(), ..Filter::default() };
    if principal.role_in(org_id) == Some(portcullis_actors::domain::Role::Host) {
        let user = principal.user_id().ok_or(AppError::Forbidden)?;
        filter.host_passes = Some(host_passes(&state.pool, org_id, user).await?);
        filter.host_id = Some(user);
    }
    let credential = match &principal {
        Principal::User(user) => {
            let claims = state.auth.tokens.verify_access(&token)?;
            let now = chrono::Utc::now().timestamp().max(0).unsigned_abs();
            Credential::Session {
                session_id: user.session_id,
                user_id: user.access.user_id,
                role: user.access.role_in(org_id).ok_or(AppError::Forbidden)?,
                expires_in: Duration::from_secs(claims.exp.saturating_sub(now)),
            }
        }
        Principal::Key(key) => Credential::Key { key_id: key.key_id },
    };
    let settings = &state.settings.stream;
    let timing = Timing {
        heartbeat: Duration::from_secs(settings.heartbeat_secs.max(1)),
        client_timeout: Duration::from_secs(settings.client_timeout_secs.max(1)),
    };
    let mut response = actix_http::ws::handshake(req.head())
        .map_err(|e| AppError::field("connection", format!("not a WebSocket upgrade: {e}")))?
        .finish()
        .map_into_boxed_body();
    let setup = Setup {
        org_id,
        engine: state.engine.clone(),
        pool: threads.pool().clone(),
        auth: state.auth.clone(),
        filter,
        since: query.since,
        credential,
        watching: state.watchers.watch(credential, org_id),
        timing,
        max_queued: settings.max_queued_kib.saturating_mul(1024),
    };
    response.extensions_mut().insert(Handover(setup, threads.into_inner()));
    Ok(HttpResponse::from(response))
}
