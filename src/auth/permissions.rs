//! Who may do what: the permission table, in code, in one place.
//!
//! Users hold a [`Role`] per organization; API keys hold [`Scope`]s. Both are answered by
//! [`Permission`]: a role allows a fixed set of permissions (the table in [`role_allows`]), a scope
//! grants the permissions that name it ([`Permission::scope`]).

use std::fmt;
use std::str::FromStr;

use portcullis_actors::domain::{Role, UnknownVariantError};
use serde::{Deserialize, Serialize};

/// Everything a route can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read the organization's settings.
    OrgRead,
    /// Change the organization's name and time zone.
    OrgUpdate,
    /// Change the access mode, delete the organization (platform operators).
    OrgAdminister,
    /// Export everything the organization owns.
    OrgExport,
    UsersRead,
    UsersManage,
    /// Read zones, gates, access rules, holidays.
    ConfigRead,
    /// Change zones, gates, access rules, holidays.
    ConfigWrite,
    /// Lock a gate down or open it (security desk).
    GateModeSet,
    PassesRead,
    PassesIssue,
    /// Show a pass's live QR code: it opens gates as the holder, so it is for those who issue
    /// passes, never for read-only callers.
    PassesShowQr,
    /// Revoke, suspend, resume.
    PassesRevoke,
    CheckinsRead,
    /// Watch live entry streams.
    StreamWatch,
    KeysManage,
    /// Webhook endpoints, their secrets and deliveries (the developer console).
    WebhooksManage,
    AuditRead,
    /// Ask for a decision at a gate (device keys only).
    GateDecide,
    /// Read visitors, appointments and visits (hosts: their own).
    VisitorsRead,
    /// Register visitors, make appointments, invite (hosts: their own).
    VisitorsInvite,
    /// The reception desk: check visitors in and out, walk-ins.
    VisitsCheckIn,
    /// Read and change the deny list, review denied visits (security).
    DenyListManage,
}

impl Permission {
    pub const ALL: &'static [Permission] = &[
        Permission::OrgRead,
        Permission::OrgUpdate,
        Permission::OrgAdminister,
        Permission::OrgExport,
        Permission::UsersRead,
        Permission::UsersManage,
        Permission::ConfigRead,
        Permission::ConfigWrite,
        Permission::GateModeSet,
        Permission::PassesRead,
        Permission::PassesIssue,
        Permission::PassesShowQr,
        Permission::PassesRevoke,
        Permission::CheckinsRead,
        Permission::StreamWatch,
        Permission::KeysManage,
        Permission::WebhooksManage,
        Permission::AuditRead,
        Permission::GateDecide,
        Permission::VisitorsRead,
        Permission::VisitorsInvite,
        Permission::VisitsCheckIn,
        Permission::DenyListManage,
    ];

    /// Whether using this permission changes data (and so is refused in a read-only organization).
    pub fn is_mutation(self) -> bool {
        use Permission::*;
        matches!(
            self,
            OrgUpdate
                | OrgAdminister
                | UsersManage
                | ConfigWrite
                | GateModeSet
                | PassesIssue
                | PassesRevoke
                | KeysManage
                | WebhooksManage
                | VisitorsInvite
                | VisitsCheckIn
                | DenyListManage
        )
    }

    /// Permissions that still work in a read-only or blocked organization: the ones that change
    /// its access mode back, or delete it.
    pub fn ignores_access_mode(self) -> bool {
        self == Permission::OrgAdminister
    }

    /// The API-key scope that grants this permission; `None` for user-only permissions.
    pub fn scope(self) -> Option<Scope> {
        use Permission::*;
        Some(match self {
            OrgRead => Scope::OrgRead,
            OrgUpdate | ConfigWrite | GateModeSet => Scope::ConfigWrite,
            ConfigRead => Scope::ConfigRead,
            PassesRead => Scope::PassesRead,
            PassesIssue | PassesShowQr | PassesRevoke => Scope::PassesWrite,
            CheckinsRead => Scope::CheckinsRead,
            StreamWatch => Scope::EventsRead,
            AuditRead => Scope::AuditRead,
            GateDecide => Scope::GateDecide,
            // Users only: a key cannot make keys, nor point events (and their secrets) elsewhere.
            OrgAdminister | OrgExport | UsersRead | UsersManage | KeysManage | WebhooksManage => return None,
            // Visitors' personal data is for people at the desk, not for keys (yet).
            VisitorsRead | VisitorsInvite | VisitsCheckIn | DenyListManage => return None,
        })
    }
}

/// The permission table. `platform_admin` holds every permission in every organization.
pub fn role_allows(role: Role, permission: Permission) -> bool {
    use Permission::*;
    use Role::*;
    match role {
        PlatformAdmin => permission != GateDecide,
        OrgAdmin => !matches!(permission, OrgAdminister | GateDecide),
        SecurityOfficer => matches!(
            permission,
            OrgRead
                | UsersRead
                | ConfigRead
                | GateModeSet
                | PassesRead
                | PassesIssue
                | PassesShowQr
                | PassesRevoke
                | CheckinsRead
                | StreamWatch
                | AuditRead
                | VisitorsRead
                | VisitorsInvite
                | VisitsCheckIn
                | DenyListManage
        ),
        Operator => matches!(
            permission,
            OrgRead
                | ConfigRead
                | PassesRead
                | PassesIssue
                | PassesShowQr
                | PassesRevoke
                | CheckinsRead
                | StreamWatch
                | VisitorsRead
                | VisitorsInvite
                | VisitsCheckIn
        ),
        // A host's reads, QR codes and streams are narrowed to their own visitors by the queries
        // themselves.
        Host => matches!(
            permission,
            OrgRead | PassesRead | PassesIssue | PassesShowQr | StreamWatch | VisitorsRead | VisitorsInvite
        ),
        Guest => matches!(permission, OrgRead),
        Developer => {
            matches!(permission, OrgRead | ConfigRead | PassesRead | CheckinsRead | KeysManage | WebhooksManage)
        }
    }
}

/// What an API key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "gate:decide")]
    GateDecide,
    #[serde(rename = "events:read")]
    EventsRead,
    #[serde(rename = "passes:read")]
    PassesRead,
    #[serde(rename = "passes:write")]
    PassesWrite,
    #[serde(rename = "checkins:read")]
    CheckinsRead,
    #[serde(rename = "config:read")]
    ConfigRead,
    #[serde(rename = "config:write")]
    ConfigWrite,
    #[serde(rename = "org:read")]
    OrgRead,
    #[serde(rename = "audit:read")]
    AuditRead,
}

impl Scope {
    pub const ALL: &'static [Scope] = &[
        Scope::GateDecide,
        Scope::EventsRead,
        Scope::PassesRead,
        Scope::PassesWrite,
        Scope::CheckinsRead,
        Scope::ConfigRead,
        Scope::ConfigWrite,
        Scope::OrgRead,
        Scope::AuditRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::GateDecide => "gate:decide",
            Scope::EventsRead => "events:read",
            Scope::PassesRead => "passes:read",
            Scope::PassesWrite => "passes:write",
            Scope::CheckinsRead => "checkins:read",
            Scope::ConfigRead => "config:read",
            Scope::ConfigWrite => "config:write",
            Scope::OrgRead => "org:read",
            Scope::AuditRead => "audit:read",
        }
    }

    /// The permissions this scope grants.
    pub fn permissions(self) -> impl Iterator<Item = Permission> {
        Permission::ALL.iter().copied().filter(move |p| p.scope() == Some(self))
    }

    /// Whether a user with `role` may put this scope on a key: only what they could do themselves
    /// (device keys for deciding are granted by whoever manages keys).
    pub fn grantable_by(self, role: Role) -> bool {
        match self {
            Scope::GateDecide => role_allows(role, Permission::KeysManage),
            _ => self.permissions().all(|p| role_allows(role, p)),
        }
    }

    /// The one rule for acting on a key (creating, rotating, revoking it): the caller must be able
    /// to grant every scope the key holds. Returns the first scope `role` may not grant.
    pub fn first_beyond(role: Role, scopes: &[Scope]) -> Option<Scope> {
        scopes.iter().copied().find(|scope| !scope.grantable_by(role))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = UnknownVariantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL.iter().copied().find(|scope| scope.as_str() == s).ok_or_else(|| UnknownVariantError {
            what: "scope",
            value: s.to_owned(),
            expected: Scope::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_admin_may_do_everything_but_decide() {
        for p in Permission::ALL {
            assert_eq!(role_allows(Role::PlatformAdmin, *p), *p != Permission::GateDecide, "{p:?}");
        }
    }

    #[test]
    fn no_role_below_platform_admin_may_change_access_mode_or_decide() {
        for role in Role::ALL.iter().filter(|r| **r != Role::PlatformAdmin) {
            assert!(!role_allows(*role, Permission::OrgAdminister), "{role}");
            assert!(!role_allows(*role, Permission::GateDecide), "{role}");
        }
    }

    #[test]
    fn guests_only_read_the_organization() {
        let allowed: Vec<_> = Permission::ALL.iter().filter(|p| role_allows(Role::Guest, **p)).collect();
        assert_eq!(allowed, [&Permission::OrgRead]);
    }

    #[test]
    fn scopes_round_trip_and_cover_their_permissions() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(*scope));
            assert!(scope.permissions().count() >= 1, "{scope} grants nothing");
        }
        assert!("admin:*".parse::<Scope>().is_err());
    }

    #[test]
    fn a_developer_cannot_mint_a_key_stronger_than_themselves() {
        assert!(Scope::PassesRead.grantable_by(Role::Developer));
        assert!(Scope::GateDecide.grantable_by(Role::Developer));
        assert!(!Scope::PassesWrite.grantable_by(Role::Developer));
        assert!(!Scope::AuditRead.grantable_by(Role::Developer));
        assert!(Scope::AuditRead.grantable_by(Role::OrgAdmin));
    }

    #[test]
    fn reading_a_pass_does_not_show_its_live_qr_code() {
        for role in [Role::Developer, Role::Guest] {
            assert!(!role_allows(role, Permission::PassesShowQr), "{role}");
        }
        for role in [Role::OrgAdmin, Role::SecurityOfficer, Role::Operator, Role::Host] {
            assert!(role_allows(role, Permission::PassesShowQr), "{role}");
        }
        assert_eq!(Permission::PassesShowQr.scope(), Some(Scope::PassesWrite));
        assert!(Scope::PassesRead.permissions().all(|p| p != Permission::PassesShowQr));
    }

    #[test]
    fn acting_on_a_key_needs_every_one_of_its_scopes() {
        let strong = [Scope::OrgRead, Scope::AuditRead, Scope::PassesWrite];
        assert_eq!(Scope::first_beyond(Role::Developer, &strong), Some(Scope::AuditRead));
        assert_eq!(Scope::first_beyond(Role::Developer, &[Scope::OrgRead, Scope::GateDecide]), None);
        assert_eq!(Scope::first_beyond(Role::OrgAdmin, &strong), None);
    }
}
