//! The HTTP side of authentication: the bearer token of a request, and the extractors every route
//! uses — `Authorized<policy::X>` resolves `{org}` from the path and authorizes the caller there
//! (`auth::principal::authorize`), `Authenticated`, `PlatformAdmin`, and `ClientAddr`.

use std::future::Future;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use uuid::Uuid;

use crate::app::App;
use crate::auth::principal::{OrgContext, Policy, Principal, authenticate, authorize};
use crate::error::AppError;

/// The bearer token of a request.
fn bearer(req: &HttpRequest) -> Result<String, AppError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else { return Err(AppError::MissingToken) };
    let value = value.to_str().map_err(|_| AppError::InvalidToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(AppError::InvalidToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AppError::InvalidToken);
    }
    Ok(token.trim().to_owned())
}

/// The bearer token of a request, for routes that authenticate by hand.
pub fn bearer_token(req: &HttpRequest) -> Result<String, AppError> {
    bearer(req)
}

/// How a request proves who sent it: a bearer token, or else a verified TLS client certificate.
pub enum Credential {
    Token(String),
    Certificate(String),
}

/// The request's credential. A token, when sent, is what counts (even beside a certificate).
pub fn credential(req: &HttpRequest) -> Result<Credential, AppError> {
    match bearer(req) {
        Err(AppError::MissingToken) => match req.conn_data::<crate::http::stream::connection::ClientCert>() {
            Some(cert) => Ok(Credential::Certificate(cert.0.clone())),
            None => Err(AppError::MissingToken),
        },
        other => other.map(Credential::Token),
    }
}

/// Resolves a request's credential with the application's handles.
pub async fn authenticate_credential(
    app: &App,
    credential: Result<Credential, AppError>,
) -> Result<Principal, AppError> {
    match credential? {
        Credential::Token(token) => authenticate(&app.pool, &app.auth, &token).await,
        Credential::Certificate(fingerprint) => {
            crate::auth::principal::authenticate_certificate(&app.pool, &app.auth, &fingerprint).await
        }
    }
}

fn app_state(req: &HttpRequest) -> Result<web::Data<App>, AppError> {
    req.app_data::<web::Data<App>>().cloned().ok_or_else(|| AppError::internal("application state missing"))
}

/// Resolves a bearer token with the application's handles.
pub async fn authenticate_with(app: &App, token: &str) -> Result<Principal, AppError> {
    authenticate(&app.pool, &app.auth, token).await
}

type Boxed<T> = Pin<Box<dyn Future<Output = Result<T, AppError>>>>;

/// Any authenticated caller.
pub struct Authenticated(pub Principal);

impl FromRequest for Authenticated {
    type Error = AppError;
    type Future = Boxed<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let (state, credential) = (app_state(req), credential(req));
        Box::pin(async move { Ok(Authenticated(authenticate_credential(&*state?, credential).await?)) })
    }
}

/// An authenticated platform administrator.
pub struct PlatformAdmin(pub Principal);

impl FromRequest for PlatformAdmin {
    type Error = AppError;
    type Future = Boxed<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let (state, credential) = (app_state(req), credential(req));
        Box::pin(async move {
            let principal = authenticate_credential(&*state?, credential).await?;
            let allowed = principal.is_platform_admin();
            metrics::counter!("portcullis_authz_checks_total", "outcome" => if allowed { "allowed" } else { "denied" })
                .increment(1);
            if allowed { Ok(PlatformAdmin(principal)) } else { Err(AppError::Forbidden) }
        })
    }
}

/// A caller allowed `P::PERMISSION` in the organization named by the `{org}` path segment.
pub struct Authorized<P: Policy> {
    pub principal: Principal,
    pub org: OrgContext,
    _policy: PhantomData<P>,
}

impl<P: Policy + 'static> FromRequest for Authorized<P> {
    type Error = AppError;
    type Future = Boxed<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let (state, credential) = (app_state(req), credential(req));
        let org_id = req.match_info().get("org").map(Uuid::try_parse);
        Box::pin(async move {
            let state = state?;
            let principal = authenticate_credential(&state, credential).await?;
            let Some(Ok(org_id)) = org_id else { return Err(AppError::NotFound("organization")) };
            let org = authorize(&state.pool, &principal, org_id, P::PERMISSION).await?;
            Ok(Authorized { principal, org, _policy: PhantomData })
        })
    }
}

/// The peer address of the connection (not a client-supplied header, which anyone can forge).
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequest for ClientAddr {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ok(ClientAddr(req.peer_addr().map(|a| a.ip()))))
    }
}

/// A signed-in guest (a `pcg_` session token): opens the `/api/v1/guest/` routes only.
pub struct GuestAuth(pub crate::app::guest::Guest);

impl FromRequest for GuestAuth {
    type Error = AppError;
    type Future = Boxed<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let (state, token) = (app_state(req), bearer(req));
        Box::pin(async move {
            let token = token?;
            if !token.starts_with("pcg_") {
                return Err(AppError::InvalidToken);
            }
            Ok(GuestAuth(crate::app::guest::authenticate(&*state?, &token).await?))
        })
    }
}
