//! The API document (OpenAPI 3.1), served at `GET /openapi.json`.
//!
//! Schemas are generated from the typed requests and responses (`utoipa::ToSchema`, derived on
//! the `app::` inputs and answers and on the domain vocabulary). This module says which route
//! takes and answers which, who may call it and which errors it has; a test checks that every
//! route the server registers (`routes::ROUTES`) is described here.

use std::sync::OnceLock;

use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref, RefOr, Required,
    ResponseBuilder,
};

use crate::app::controllers::{ControllerBody, ControllerView, GateDoor};
use crate::app::decisions::{DecisionRequest, Verdict};
use crate::app::guest::{CodeRequest, GuestHome, GuestSession, GuestVisit, SignIn};
use crate::app::hosts::{Department, DepartmentInput, Host, HostSettings, Inside, Presence};
use crate::app::keys::{ApiKey, CreateKey, NewApiKey};
use crate::app::notifications::{NotificationView, Preferences};
use crate::app::orgs::{CreateOrg, Organization, UpdateOrg};
use crate::app::panels::{BasIpAnswer, BasIpRequest};
use crate::app::passes::{IssuePass, IssuedPass, LiveQr, Pass, PassCredential, Revoked, ShownCredential};
use crate::app::readers::{ReaderBody, ReaderView};
use crate::app::records::{AuditEntry, Checkin};
use crate::app::sessions::{Me, OrgRole, Tokens};
use crate::app::site::{
    AccessRule, Gate, GateBody, Holiday, HolidayBody, Lockdown, LockdownBody, ModeBody, RuleBody, Zone, ZoneBody,
};
use crate::app::users::{CreateUser, Member, UpdateUser};
use crate::app::visitors::{DenyEntry, DenyInput, Details, Visitor, VisitorExport, VisitorInput};
use crate::app::visits::{Appointment, CheckedIn, CreateAppointment, Review, Visit, WalkIn};
use crate::app::webhooks::{
    CreateWebhook, DeliveryView, Queued, RedeliverSince, RotatedSecret, UpdateWebhook, WebhookView,
};
use crate::http::routes::{ChangePasswordRequest, ExtendBody, LoginRequest, RefreshRequest, RevokeBody};
use crate::outbox::EventType;

/// The error body every error answer has (API.md).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// The stable code, e.g. `validation_failed`, `pass_not_active`.
    pub code: String,
    pub message: String,
    /// For `validation_failed`, `fields` names each bad field by its path.
    pub details: serde_json::Value,
}

/// What a route takes and answers.
struct Op {
    summary: &'static str,
    /// Who may call it: a permission of the table in the README (with its key scope), or "anyone".
    who: &'static str,
    body: Option<RefOr<Schema>>,
    /// The success status and its body (`None`: no body, or not JSON).
    ok: (u16, Option<RefOr<Schema>>),
    /// Error statuses besides those every authenticated route has.
    errors: &'static [u16],
    /// Query parameters.
    query: &'static [&'static str],
}

fn named<T: ToSchema>() -> Option<RefOr<Schema>> {
    Some(RefOr::Ref(Ref::from_schema_name(T::name())))
}

/// A JSON object whose fields the README lists (rows as stored, with live fields laid over).
fn object() -> Option<RefOr<Schema>> {
    Some(ObjectBuilder::new().schema_type(Type::Object).into())
}

/// `{items: [T], next_cursor}`.
fn page<T: ToSchema>() -> Option<RefOr<Schema>> {
    let next = ObjectBuilder::new()
        .schema_type([Type::String, Type::Null].into_iter().collect::<utoipa::openapi::schema::SchemaType>())
        .description(Some("Pass it as `cursor` for the next page; null on the last page"));
    Some(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("items", ArrayBuilder::new().items(RefOr::Ref(Ref::from_schema_name(T::name()))))
            .property("next_cursor", next)
            .required("items")
            .required("next_cursor")
            .into(),
    )
}

fn op(summary: &'static str, who: &'static str) -> Op {
    Op { summary, who, body: None, ok: (200, object()), errors: &[], query: &[] }
}

impl Op {
    fn body(mut self, schema: Option<RefOr<Schema>>) -> Self {
        self.body = schema;
        self
    }

    fn ok(mut self, status: u16, schema: Option<RefOr<Schema>>) -> Self {
        self.ok = (status, schema);
        self
    }

    fn errors(mut self, errors: &'static [u16]) -> Self {
        self.errors = errors;
        self
    }

    fn query(mut self, query: &'static [&'static str]) -> Self {
        self.query = query;
        self
    }
}

const LIST: &[&str] = &["cursor", "limit"];

const WEBHOOKS: &str = "manage webhooks (org_admin, developer; not API keys)";

/// The description of one route; `None` for a route nobody described (the test catches it).
fn describe(method: &str, path: &str) -> Option<Op> {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    Some(match (method, path) {
        ("GET", "/") => op("The operator dashboard (HTML)", "anyone").ok(200, None),
        ("GET", "/app.js") => op("The dashboard's script", "anyone").ok(200, None),
        ("GET", "/app.css") => op("The dashboard's style", "anyone").ok(200, None),
        ("GET", "/health") => op("The process is up", "anyone"),
        ("GET", "/ready") => {
            op("Ready, or degraded (the database is away: gates decide, the journal spools)", "anyone")
        }
        ("GET", "/version") => op("Name, version, schema version", "anyone"),
        ("GET", "/metrics") => op("Prometheus text exposition", "anyone").ok(200, None),
        ("GET", "/openapi.json") => op("This document", "anyone"),
        ("POST", "/auth/login") => op("Sign in: an access and a refresh token", "anyone")
            .body(named::<LoginRequest>())
            .ok(200, named::<Tokens>())
            .errors(&[401, 422, 429]),
        ("POST", "/auth/refresh") => op("A new token pair; the refresh token is spent", "anyone")
            .body(named::<RefreshRequest>())
            .ok(200, named::<Tokens>())
            .errors(&[401]),
        ("POST", "/auth/logout") => op("End this session", "a signed-in user").ok(204, None),
        ("POST", "/auth/change-password") => op("Change the password; other sessions end", "a signed-in user")
            .body(named::<ChangePasswordRequest>())
            .ok(204, None)
            .errors(&[401, 422, 429]),
        ("GET", "/me") => op("The signed-in user and their roles", "a signed-in user").ok(200, named::<Me>()),
        ("GET", "/me/notifications") => {
            op("The user's notifications, newest first (`unread=true`: only unread)", "a signed-in user")
                .ok(200, page::<NotificationView>())
                .query(&["cursor", "limit", "unread"])
        }
        ("POST", "/me/notifications/{notification}/read") => {
            op("Mark a notification read", "a signed-in user").ok(204, None)
        }
        ("GET", "/me/notification-preferences") => {
            op("Which notifications the user wants, and where", "a signed-in user").ok(200, named::<Preferences>())
        }
        ("PUT", "/me/notification-preferences") => op("Choose channels and mute types", "a signed-in user")
            .body(named::<Preferences>())
            .ok(200, named::<Preferences>()),
        ("POST", "/orgs") => op("Create an organization", "platform_admin")
            .body(named::<CreateOrg>())
            .ok(201, named::<Organization>())
            .errors(&[409]),
        ("GET", "/orgs") => {
            op("The organizations the caller can see", "any caller").ok(200, page::<Organization>()).query(LIST)
        }
        ("GET", "/orgs/{org}") => {
            op("An organization", "read organization (`org:read`)").ok(200, named::<Organization>())
        }
        ("PATCH", "/orgs/{org}") => {
            op("Rename, change time zone or access mode", "update organization; access mode: platform_admin")
                .body(named::<UpdateOrg>())
                .ok(200, named::<Organization>())
                .errors(&[409])
        }
        ("DELETE", "/orgs/{org}") => op("Delete the organization and all it owns", "platform_admin").ok(204, None),
        ("GET", "/orgs/{org}/export") => op("Everything the organization owns", "export"),
        ("GET", "/orgs/{org}/audit") => op("The audit log, newest first", "read audit log (`audit:read`)")
            .ok(200, page::<AuditEntry>())
            .query(&["action", "cursor", "limit"]),
        ("POST", "/orgs/{org}/users") => op("Create a user with a role", "manage users")
            .body(named::<CreateUser>())
            .ok(201, named::<Member>())
            .errors(&[409]),
        ("GET", "/orgs/{org}/users") => {
            op("The organization's users", "read users").ok(200, page::<Member>()).query(LIST)
        }
        ("GET", "/orgs/{org}/users/{user}") => op("A user", "read users").ok(200, named::<Member>()),
        ("PATCH", "/orgs/{org}/users/{user}") => op("Change a user's role or disable them", "manage users")
            .body(named::<UpdateUser>())
            .ok(200, named::<Member>()),
        ("POST", "/orgs/{org}/api-keys") => {
            op("Create an API key; the secret is shown once", "manage API keys (only scopes the caller holds)")
                .body(named::<CreateKey>())
                .ok(201, named::<NewApiKey>())
        }
        ("GET", "/orgs/{org}/api-keys") => {
            op("The organization's keys", "manage API keys").ok(200, page::<ApiKey>()).query(LIST)
        }
        ("GET", "/orgs/{org}/api-keys/{key}") => {
            op("A key, without its secret", "manage API keys").ok(200, named::<ApiKey>())
        }
        ("POST", "/orgs/{org}/api-keys/{key}/rotate") => {
            op("Replace a key; the new secret is shown once", "manage API keys, holding every scope of the key")
                .ok(200, named::<NewApiKey>())
                .errors(&[409])
        }
        ("POST", "/orgs/{org}/api-keys/{key}/revoke") => {
            op("Revoke a key", "manage API keys, holding every scope of the key")
                .ok(200, named::<ApiKey>())
                .errors(&[409])
        }
        ("POST", "/orgs/{org}/lockdown") => op("Lock every gate down, or lift it", "set gate mode (`config:write`)")
            .body(named::<LockdownBody>())
            .ok(200, named::<Lockdown>()),
        ("POST", "/orgs/{org}/zones") => create::<Zone>("Create a zone", named::<ZoneBody>()),
        ("GET", "/orgs/{org}/zones") => list::<Zone>("The zones"),
        ("GET", "/orgs/{org}/zones/{zone}") => read::<Zone>("A zone, with `inside`"),
        ("PATCH", "/orgs/{org}/zones/{zone}") => update::<Zone>("Change a zone", named::<ZoneBody>()),
        ("DELETE", "/orgs/{org}/zones/{zone}") => delete("Delete a zone"),
        ("POST", "/orgs/{org}/gates") => create::<Gate>("Create a gate", named::<GateBody>()),
        ("GET", "/orgs/{org}/gates") => list::<Gate>("The gates"),
        ("GET", "/orgs/{org}/gates/{gate}") => read::<Gate>("A gate, with its live queue"),
        ("PATCH", "/orgs/{org}/gates/{gate}") => update::<Gate>("Change a gate", named::<GateBody>()),
        ("DELETE", "/orgs/{org}/gates/{gate}") => delete("Delete a gate"),
        ("POST", "/orgs/{org}/gates/{gate}/mode") => {
            op("Set a gate's mode", "set gate mode (`config:write`)").body(named::<ModeBody>()).ok(200, named::<Gate>())
        }
        ("PUT", "/orgs/{org}/gates/{gate}/reader") => {
            op("Bind an OSDP reader to the gate (in force at once)", "change set-up (`config:write`)")
                .body(named::<ReaderBody>())
                .ok(200, named::<ReaderView>())
                .errors(&[409])
        }
        ("GET", "/orgs/{org}/gates/{gate}/reader") => {
            op("The gate's reader binding and its live status", "read set-up (`config:read`)")
                .ok(200, named::<ReaderView>())
        }
        ("DELETE", "/orgs/{org}/gates/{gate}/reader") => {
            op("Unbind the gate's reader", "change set-up (`config:write`)").ok(204, None)
        }
        ("PUT", "/orgs/{org}/controllers/{controller}") => op(
            "Bind a UHPPOTE controller to gates (its card table kept in sync at once)",
            "change set-up (`config:write`)",
        )
        .body(named::<ControllerBody>())
        .ok(200, named::<ControllerView>())
        .errors(&[409]),
        ("GET", "/orgs/{org}/controllers/{controller}") => {
            op("A controller: its doors, online state, last sync, pending changes", "read set-up (`config:read`)")
                .ok(200, named::<ControllerView>())
        }
        ("DELETE", "/orgs/{org}/controllers/{controller}") => {
            op("Unbind a controller (its table is emptied)", "change set-up (`config:write`)").ok(204, None)
        }
        ("POST", "/orgs/{org}/webhooks") => op("Add a webhook endpoint; its `whsec_` secret is shown once", WEBHOOKS)
            .body(named::<CreateWebhook>())
            .ok(201, named::<WebhookView>()),
        ("GET", "/orgs/{org}/webhooks") => op("The webhook endpoints", WEBHOOKS).ok(200, page::<WebhookView>()),
        ("GET", "/orgs/{org}/webhooks/{webhook}") => op("A webhook endpoint", WEBHOOKS).ok(200, named::<WebhookView>()),
        ("PATCH", "/orgs/{org}/webhooks/{webhook}") => op("Change an endpoint, disable or re-enable it", WEBHOOKS)
            .body(named::<UpdateWebhook>())
            .ok(200, named::<WebhookView>()),
        ("DELETE", "/orgs/{org}/webhooks/{webhook}") => op("Delete an endpoint", WEBHOOKS).ok(204, None),
        ("POST", "/orgs/{org}/webhooks/{webhook}/rotate-secret") => {
            op("A new secret, shown once; the old one signs too for 24 h", WEBHOOKS).ok(200, named::<RotatedSecret>())
        }
        ("POST", "/orgs/{org}/webhooks/{webhook}/test") => {
            op("Send a `webhook.test` event to this endpoint", WEBHOOKS).ok(202, named::<Queued>())
        }
        ("GET", "/orgs/{org}/webhooks/{webhook}/deliveries") => {
            op("The delivery log, newest attempt first", WEBHOOKS).ok(200, page::<DeliveryView>()).query(LIST)
        }
        ("POST", "/orgs/{org}/webhooks/{webhook}/deliveries/{event}/redeliver") => {
            op("Deliver one event again", WEBHOOKS).ok(202, named::<Queued>())
        }
        ("POST", "/orgs/{org}/webhooks/{webhook}/redeliver") => op("Deliver again every event since a time", WEBHOOKS)
            .body(named::<RedeliverSince>())
            .ok(202, named::<Queued>()),
        ("GET", "/event-types") => {
            op("Every event type, with an example payload", "any caller").ok(200, page::<EventType>())
        }
        ("POST", "/orgs/{org}/access-rules") => create::<AccessRule>("Create an access rule", named::<RuleBody>()),
        ("GET", "/orgs/{org}/access-rules") => list::<AccessRule>("The access rules"),
        ("GET", "/orgs/{org}/access-rules/{rule}") => read::<AccessRule>("An access rule"),
        ("PATCH", "/orgs/{org}/access-rules/{rule}") => {
            update::<AccessRule>("Change an access rule", named::<RuleBody>())
        }
        ("DELETE", "/orgs/{org}/access-rules/{rule}") => delete("Delete an access rule"),
        ("POST", "/orgs/{org}/holidays") => create::<Holiday>("Create a holiday", named::<HolidayBody>()),
        ("GET", "/orgs/{org}/holidays") => list::<Holiday>("The holidays"),
        ("GET", "/orgs/{org}/holidays/{holiday}") => read::<Holiday>("A holiday"),
        ("PATCH", "/orgs/{org}/holidays/{holiday}") => update::<Holiday>("Change a holiday", named::<HolidayBody>()),
        ("DELETE", "/orgs/{org}/holidays/{holiday}") => delete("Delete a holiday"),
        ("POST", "/orgs/{org}/passes") => op(
            "Issue a pass; a QR seed or PIN is shown once",
            "issue passes (`passes:write`); cards: who reads every pass",
        )
        .body(named::<IssuePass>())
        .ok(201, named::<IssuedPass>())
        .errors(&[409]),
        ("GET", "/orgs/{org}/passes") => op("Passes (hosts: their own)", "read passes (`passes:read`)")
            .ok(200, page::<Pass>())
            .query(&["status", "q", "cursor", "limit"]),
        ("GET", "/orgs/{org}/passes/{pass}") => {
            op("A pass, with its live state", "read passes (`passes:read`)").ok(200, named::<Pass>())
        }
        ("PATCH", "/orgs/{org}/passes/{pass}") => op("Move `valid_to`", "issue passes (`passes:write`)")
            .body(named::<ExtendBody>())
            .ok(200, named::<Pass>())
            .errors(&[409]),
        ("POST", "/orgs/{org}/passes/{pass}/revoke") => {
            op("Revoke: in force at every gate when this answers", "revoke passes (`passes:write`)")
                .body(named::<RevokeBody>())
                .ok(200, named::<Revoked>())
                .errors(&[409])
        }
        ("POST", "/orgs/{org}/passes/{pass}/suspend") => {
            op("Suspend a pass", "revoke passes (`passes:write`)").ok(200, named::<Pass>()).errors(&[409])
        }
        ("POST", "/orgs/{org}/passes/{pass}/resume") => {
            op("Resume a pass", "revoke passes (`passes:write`)").ok(200, named::<Pass>()).errors(&[409])
        }
        ("GET", "/orgs/{org}/passes/{pass}/qr") => {
            op("The live QR code (`?format=svg`: an image)", "show QR codes (`passes:write`)")
                .ok(200, named::<LiveQr>())
                .query(&["format"])
        }
        ("GET", "/orgs/{org}/checkins") => op("Decisions, newest first", "read check-ins (`checkins:read`)")
            .ok(200, page::<Checkin>())
            .query(&["gate_id", "pass_id", "decision", "from", "to", "cursor", "limit"]),
        ("GET", "/orgs/{org}/stream") => {
            op("The live entry stream (WebSocket upgrade)", "watch live streams (`events:read`)")
                .ok(101, None)
                .query(&["gates", "since", "access_token"])
        }
        ("POST", "/gates/{gate}/decisions") => {
            op("May this credential pass this gate now?", "a `gate:decide` key bound to the gate")
                .body(named::<DecisionRequest>())
                .ok(200, named::<Verdict>())
        }
        ("POST", "/gates/{gate}/bas-ip") => op(
            "The same, in a BAS-IP panel's \"remote access server\" dialect",
            "a `gate:decide` key bound to the gate",
        )
        .body(named::<BasIpRequest>())
        .ok(200, named::<BasIpAnswer>()),
        ("GET", "/guest") => op("The guest page (HTML)", "anyone").ok(200, None),
        ("GET", "/guest.js") => op("The guest page's script", "anyone").ok(200, None),
        ("POST", "/orgs/{org}/departments") => op("Create a department (`parent_id`: under another)", "manage users")
            .body(named::<DepartmentInput>())
            .ok(201, named::<Department>())
            .errors(&[409]),
        ("GET", "/orgs/{org}/departments") => {
            op("The departments", VISITORS_READ).ok(200, page::<Department>()).query(LIST)
        }
        ("DELETE", "/orgs/{org}/departments/{department}") => {
            op("Delete a department nobody belongs to", "manage users").ok(204, None).errors(&[409])
        }
        ("GET", "/orgs/{org}/hosts") => op("The hosts, with department and presence now", VISITORS_READ)
            .ok(200, page::<Host>())
            .query(&["q", "cursor", "limit"]),
        ("PUT", "/orgs/{org}/hosts/{user}") => {
            op("Set a host's department and presence schedule", "the host themselves, or who manages users")
                .body(named::<HostSettings>())
                .ok(200, named::<Host>())
        }
        ("GET", "/orgs/{org}/muster") => {
            op("Who is inside now, each with their zone", "read check-ins (`checkins:read`)")
                .ok(200, page::<Inside>())
                .query(LIST)
        }
        ("POST", "/orgs/{org}/visitors") => {
            op("Register a visitor (200 and `recognised` for a returning one, by e-mail)", VISITORS_INVITE)
                .body(named::<VisitorInput>())
                .ok(201, named::<Visitor>())
                .errors(&[409])
        }
        ("GET", "/orgs/{org}/visitors") => op("Visitors, by e-mail or name words (`q`)", VISITORS_READ)
            .ok(200, page::<Visitor>())
            .query(&["q", "cursor", "limit"]),
        ("GET", "/orgs/{org}/visitors/{visitor}") => op("A visitor", VISITORS_READ).ok(200, named::<Visitor>()),
        ("DELETE", "/orgs/{org}/visitors/{visitor}") => {
            op("Erase a visitor's personal data (on request)", "export (org_admin)").ok(204, None).errors(&[409])
        }
        ("GET", "/orgs/{org}/visitors/{visitor}/export") => {
            op("Everything held about a visitor", "export (org_admin)").ok(200, named::<VisitorExport>())
        }
        ("POST", "/orgs/{org}/deny-list") => {
            op("Add a deny-list entry", DENY).body(named::<DenyInput>()).ok(201, named::<DenyEntry>()).errors(&[409])
        }
        ("GET", "/orgs/{org}/deny-list") => op("The deny list", DENY).ok(200, page::<DenyEntry>()).query(LIST),
        ("DELETE", "/orgs/{org}/deny-list/{entry}") => op("Remove a deny-list entry", DENY).ok(204, None),
        ("POST", "/orgs/{org}/appointments") => op(
            "Make an appointment: its visitors are checked against the deny list and invited by e-mail",
            VISITORS_INVITE,
        )
        .body(named::<CreateAppointment>())
        .ok(201, named::<Appointment>()),
        ("GET", "/orgs/{org}/appointments") => op("Appointments with visits from a day on", VISITORS_READ)
            .ok(200, page::<Appointment>())
            .query(&["from", "cursor", "limit"]),
        ("GET", "/orgs/{org}/appointments/{appointment}") => {
            op("An appointment and its visits", VISITORS_READ).ok(200, named::<Appointment>())
        }
        ("POST", "/orgs/{org}/appointments/{appointment}/cancel") => {
            op("Cancel an appointment and its open visits", VISITORS_INVITE)
                .ok(200, named::<Appointment>())
                .errors(&[409])
        }
        ("GET", "/orgs/{org}/visits") => op("A day's visits (reception's list)", VISITORS_READ)
            .ok(200, page::<Visit>())
            .query(&["date", "status", "host_id", "appointment_id", "cursor", "limit"]),
        ("POST", "/orgs/{org}/visits/walk-in") => op("Register and check in a walk-in, in one step", CHECK_IN)
            .body(named::<WalkIn>())
            .ok(201, named::<CheckedIn>())
            .errors(&[409]),
        ("GET", "/orgs/{org}/visits/{visit}") => op("A visit", VISITORS_READ).ok(200, named::<Visit>()),
        ("POST", "/orgs/{org}/visits/{visit}/arrive") => {
            op("The visitor is at the desk (their host is told)", CHECK_IN).ok(200, named::<Visit>()).errors(&[409])
        }
        ("POST", "/orgs/{org}/visits/{visit}/check-in") => {
            op("Check in: deny list checked again, the pass in force at every gate on return", CHECK_IN)
                .ok(200, named::<CheckedIn>())
                .errors(&[409])
        }
        ("POST", "/orgs/{org}/visits/{visit}/check-out") => {
            op("Check out: the pass revoked at every gate on return", CHECK_IN).ok(200, named::<Visit>()).errors(&[409])
        }
        ("POST", "/orgs/{org}/visits/{visit}/cancel") => {
            op("Cancel a visit", VISITORS_INVITE).ok(200, named::<Visit>()).errors(&[409])
        }
        ("POST", "/orgs/{org}/visits/{visit}/review") => op("Release or uphold a denied visit", DENY)
            .body(named::<Review>())
            .ok(200, named::<Visit>())
            .errors(&[409]),
        ("POST", "/guest/session") => op("A guest session, for an invitation link or a mailed code", "anyone")
            .body(named::<SignIn>())
            .ok(200, named::<GuestSession>())
            .errors(&[401, 422, 429]),
        ("POST", "/guest/code") => op("Mail a one-time code (answers the same for any address)", "anyone")
            .body(named::<CodeRequest>())
            .ok(202, None)
            .errors(&[422, 429]),
        ("GET", "/guest/me") => {
            op("The guest's organization and visits", GUEST).ok(200, named::<GuestHome>()).errors(&[401])
        }
        ("GET", "/guest/visits/{visit}/qr") => op("The visit's live QR code (`?format=svg`: an image)", GUEST)
            .ok(200, named::<LiveQr>())
            .query(&["format"])
            .errors(&[401, 404, 409]),
        ("POST", "/guest/visits/{visit}/register") => op("Complete the registration: details and consents", GUEST)
            .body(named::<Details>())
            .ok(200, named::<GuestVisit>())
            .errors(&[401, 404, 409]),
        ("POST", "/guest/visits/{visit}/arrive") => {
            op("Tell the host the guest is here", GUEST).ok(200, named::<GuestVisit>()).errors(&[401, 404, 409])
        }
        _ => return None,
    })
}

const VISITORS_READ: &str = "read visitors (hosts: their own)";
const VISITORS_INVITE: &str = "invite visitors (hosts: their own)";
const CHECK_IN: &str = "reception: check visitors in and out";
const DENY: &str = "manage the deny list (security)";
const GUEST: &str = "a guest session (`pcg_` token)";

fn create<T: ToSchema>(summary: &'static str, body: Option<RefOr<Schema>>) -> Op {
    op(summary, "change set-up (`config:write`)").body(body).ok(201, named::<T>()).errors(&[409])
}

fn list<T: ToSchema>(summary: &'static str) -> Op {
    op(summary, "read set-up (`config:read`)").ok(200, page::<T>()).query(LIST)
}

fn read<T: ToSchema>(summary: &'static str) -> Op {
    op(summary, "read set-up (`config:read`)").ok(200, named::<T>())
}

fn update<T: ToSchema>(summary: &'static str, body: Option<RefOr<Schema>>) -> Op {
    op(summary, "change set-up (`config:write`)").body(body).ok(200, named::<T>()).errors(&[409])
}

fn delete(summary: &'static str) -> Op {
    op(summary, "change set-up (`config:write`)").ok(204, None).errors(&[409])
}

/// Adds `T`'s schema and every schema it refers to.
fn with<T: ToSchema>(components: ComponentsBuilder) -> ComponentsBuilder {
    let mut nested = Vec::new();
    T::schemas(&mut nested);
    components.schema_from::<T>().schemas_from_iter(nested)
}

fn http_method(method: &str) -> Option<HttpMethod> {
    Some(match method {
        "GET" => HttpMethod::Get,
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        _ => return None,
    })
}

fn error_response(status: u16) -> utoipa::openapi::Response {
    let text = match status {
        401 => "missing_token, invalid_token, token_expired or invalid_credentials",
        403 => "forbidden, read_only, org_blocked or key_not_bound_to_gate",
        404 => "not_found (also for what the caller may not see)",
        405 => "method_not_allowed",
        409 => {
            "a specific conflict code: already_exists, in_use, key_revoked, pass_not_active, pass_not_suspended, version_conflict"
        }
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "validation_failed, with details.fields",
        429 => "rate_limited, with Retry-After",
        503 => "database_unavailable or timeout (the database is away or hangs), with Retry-After; not_ready",
        _ => "internal: nothing about the cause (the log has it under x-request-id)",
    };
    ResponseBuilder::new()
        .description(text)
        .content("application/json", ContentBuilder::new().schema(named::<ErrorBody>()).build())
        .build()
}

/// Builds the document from the route table.
fn build() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for (method, path) in crate::http::routes::ROUTES {
        let (Some(op), Some(http)) = (describe(method, path), http_method(method)) else { continue };
        let public = op.who == "anyone";
        let has_body = op.body.is_some();
        let mut operation = OperationBuilder::new()
            .summary(Some(op.summary))
            .description(Some(format!("Who may call it: {}.", op.who)))
            .operation_id(Some(format!("{} {}", method, path)));
        for name in path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))) {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        for name in op.query {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(*name)
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        if let Some(body) = op.body {
            let content = ContentBuilder::new().schema(Some(body)).build();
            operation = operation.request_body(Some(
                RequestBodyBuilder::new().content("application/json", content).required(Some(Required::True)).build(),
            ));
        }
        let (status, schema) = op.ok;
        let mut ok = ResponseBuilder::new().description("success");
        if let Some(schema) = schema {
            ok = ok.content("application/json", ContentBuilder::new().schema(Some(schema)).build());
        }
        operation = operation.response(status.to_string(), ok.build());
        let mut errors: Vec<u16> = op.errors.to_vec();
        if !public {
            errors.extend([401, 403, 404]);
            operation = operation.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        }
        if has_body || !op.query.is_empty() || path.contains('{') {
            errors.push(422);
        }
        if has_body {
            errors.extend([413, 415]);
        }
        errors.extend([405, 500, 503]);
        errors.sort_unstable();
        errors.dedup();
        for status in errors {
            operation = operation.response(status.to_string(), error_response(status));
        }
        paths = paths.path(*path, PathItem::new(http, operation));
    }
    let mut components = ComponentsBuilder::new();
    components = with::<ErrorBody>(components);
    components = with::<ErrorDetail>(components);
    components = with::<LoginRequest>(components);
    components = with::<RefreshRequest>(components);
    components = with::<ChangePasswordRequest>(components);
    components = with::<CreateOrg>(components);
    components = with::<UpdateOrg>(components);
    components = with::<CreateUser>(components);
    components = with::<UpdateUser>(components);
    components = with::<CreateKey>(components);
    components = with::<LockdownBody>(components);
    components = with::<Lockdown>(components);
    components = with::<ZoneBody>(components);
    components = with::<GateBody>(components);
    components = with::<ModeBody>(components);
    components = with::<RuleBody>(components);
    components = with::<HolidayBody>(components);
    components = with::<IssuePass>(components);
    components = with::<ExtendBody>(components);
    components = with::<RevokeBody>(components);
    components = with::<Revoked>(components);
    components = with::<LiveQr>(components);
    components = with::<DecisionRequest>(components);
    components = with::<Verdict>(components);
    components = with::<BasIpRequest>(components);
    components = with::<BasIpAnswer>(components);
    components = with::<ReaderBody>(components);
    components = with::<ReaderView>(components);
    components = with::<ControllerBody>(components);
    components = with::<ControllerView>(components);
    components = with::<GateDoor>(components);
    components = with::<CreateWebhook>(components);
    components = with::<UpdateWebhook>(components);
    components = with::<WebhookView>(components);
    components = with::<RotatedSecret>(components);
    components = with::<DeliveryView>(components);
    components = with::<Queued>(components);
    components = with::<RedeliverSince>(components);
    components = with::<EventType>(components);
    components = with::<Preferences>(components);
    components = with::<NotificationView>(components);
    components = with::<Organization>(components);
    components = with::<Member>(components);
    components = with::<ApiKey>(components);
    components = with::<NewApiKey>(components);
    components = with::<Zone>(components);
    components = with::<Gate>(components);
    components = with::<AccessRule>(components);
    components = with::<Holiday>(components);
    components = with::<Pass>(components);
    components = with::<PassCredential>(components);
    components = with::<IssuedPass>(components);
    components = with::<ShownCredential>(components);
    components = with::<AuditEntry>(components);
    components = with::<Checkin>(components);
    components = with::<VisitorInput>(components);
    components = with::<DepartmentInput>(components);
    components = with::<Department>(components);
    components = with::<Host>(components);
    components = with::<HostSettings>(components);
    components = with::<Presence>(components);
    components = with::<Inside>(components);
    components = with::<Visitor>(components);
    components = with::<VisitorExport>(components);
    components = with::<DenyInput>(components);
    components = with::<DenyEntry>(components);
    components = with::<CreateAppointment>(components);
    components = with::<Appointment>(components);
    components = with::<Visit>(components);
    components = with::<WalkIn>(components);
    components = with::<CheckedIn>(components);
    components = with::<Review>(components);
    components = with::<SignIn>(components);
    components = with::<GuestSession>(components);
    components = with::<CodeRequest>(components);
    components = with::<GuestHome>(components);
    components = with::<GuestVisit>(components);
    components = with::<Details>(components);
    components = with::<Tokens>(components);
    components = with::<Me>(components);
    components = with::<OrgRole>(components);
    let components = components
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An access token (JWT) or an API key (`pcl_live_…`)"))
                    .build(),
            ),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Portcullis")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("Realtime access control: gate decisions, passes, live streams.")),
        )
        .paths(paths.build())
        .components(Some(components))
        .build()
}

/// The document, built once.
pub fn document() -> &'static OpenApi {
    static DOCUMENT: OnceLock<OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

/// The routes the document does not describe (none, or the test fails).
pub fn undescribed() -> Vec<String> {
    crate::http::routes::ROUTES
        .iter()
        .filter(|(method, path)| describe(method, path).is_none() || http_method(method).is_none())
        .map(|(method, path)| format!("{method} {path}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_route_is_described() {
        assert_eq!(undescribed(), Vec::<String>::new());
    }

    #[test]
    fn the_document_names_every_route_and_schema_it_refers_to() {
        let doc = serde_json::to_value(document()).unwrap_or_default();
        for (method, path) in crate::http::routes::ROUTES {
            let op = &doc["paths"][path][method.to_lowercase()];
            assert!(op.is_object(), "{method} {path} missing");
        }
        let text = doc.to_string();
        for reference in text.split("#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap_or_default();
            assert!(doc["components"]["schemas"][name].is_object(), "schema `{name}` is referred to but missing");
        }
    }

    /// Every JSON answer of the API is a named type (or a page of one), not a bare object, except
    /// the service documents and the export (an open document of every table).
    #[test]
    fn every_api_answer_has_its_type() {
        const OPEN: &[&str] = &["/health", "/ready", "/version", "/openapi.json", "/api/v1/orgs/{org}/export"];
        let doc = serde_json::to_value(document()).unwrap_or_default();
        let mut untyped = Vec::new();
        for (method, path) in crate::http::routes::ROUTES {
            if OPEN.contains(path) {
                continue;
            }
            let responses = &doc["paths"][path][method.to_lowercase()]["responses"];
            let Some((status, ok)) = responses.as_object().and_then(|r| r.iter().find(|(s, _)| s.starts_with('2')))
            else {
                continue;
            };
            let Some(schema) = ok["content"]["application/json"].get("schema") else { continue };
            let typed = schema.get("$ref").is_some() || schema["properties"]["items"]["items"].get("$ref").is_some();
            if !typed {
                untyped.push(format!("{method} {path} ({status})"));
            }
        }
        assert_eq!(untyped, Vec::<String>::new(), "answers without a type");
    }
}
