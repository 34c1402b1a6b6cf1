//! Stable, parsed vocabulary of the access-control domain.
//!
//! Every enum here has exactly one spelling on the wire, in configuration and in the database
//! (`snake_case`). `FromStr` is the only way in from text, so an unknown spelling is an error at the
//! edge rather than a surprise in the decision.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A value that is not one of an enum's stable spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {what}; expected one of: {expected}")]
pub struct UnknownVariantError {
    /// What was being parsed, e.g. "role".
    pub what: &'static str,
    /// The rejected input.
    pub value: String,
    /// The accepted spellings, comma separated.
    pub expected: String,
}

/// Declares a fieldless enum with one stable text spelling per variant, plus `as_str`, `ALL`,
/// `Display`, `FromStr` and serde in that spelling.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident as $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable spelling used on the wire and in the database.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariantError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownVariantError {
                        what: $what,
                        value: s.to_owned(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }
    };
}

string_enum! {
    /// A user's role within one organization (platform_admin spans all of them).
    Role as "role" {
        PlatformAdmin = "platform_admin",
        OrgAdmin = "org_admin",
        SecurityOfficer = "security_officer",
        Operator = "operator",
        Host = "host",
        Guest = "guest",
        Developer = "developer",
    }
}

string_enum! {
    /// Whether an organization may be changed, only read, or not used at all.
    AccessMode as "access mode" {
        Active = "active",
        ReadOnly = "read_only",
        Blocked = "blocked",
    }
}

string_enum! {
    /// The direction of travel through a gate.
    Direction as "direction" {
        In = "in",
        Out = "out",
    }
}

string_enum! {
    /// Which directions a gate serves.
    GateDirection as "gate direction" {
        In = "in",
        Out = "out",
        Both = "both",
    }
}

string_enum! {
    /// A gate's operating mode, set by operators.
    GateMode as "gate mode" {
        Normal = "normal",
        LockedDown = "locked_down",
        FreePassage = "free_passage",
    }
}

string_enum! {
    /// What a gate does with a consuming admit whose commit does not come in time (the database
    /// is away): `closed` refuses it (`journal_unavailable`), `open` admits it from memory and
    /// lets the journal spool the consumption.
    FailMode as "fail mode" {
        Closed = "closed",
        Open = "open",
    }
}

string_enum! {
    /// Where a decision was asked: the JSON API, or one of the adapters' protocols.
    Source as "source" {
        Api = "api",
        Osdp = "osdp",
        BasIp = "bas-ip",
        Uhppote = "uhppote",
    }
}

string_enum! {
    /// What happened to a pass, as its event history records it.
    PassEventKind as "pass event" {
        Issued = "issued",
        Revoked = "revoked",
        Suspended = "suspended",
        Resumed = "resumed",
        Extended = "extended",
        Expired = "expired",
    }
}

string_enum! {
    /// How many entries a pass allows.
    PassType as "pass type" {
        Single = "single",
        Multi = "multi",
        Group = "group",
    }
}

string_enum! {
    /// A pass's lifecycle state.
    PassStatus as "pass status" {
        Draft = "draft",
        Active = "active",
        Suspended = "suspended",
        Revoked = "revoked",
        Expired = "expired",
    }
}

string_enum! {
    /// The kind of credential a pass is presented with.
    CredentialKind as "credential kind" {
        Qr = "qr",
        Card = "card",
        Pin = "pin",
    }
}

string_enum! {
    /// Wiegand card formats (see PROTOCOLS.md).
    CardFormat as "card format" {
        H10301 = "h10301",
        H10306 = "h10306",
        H10304 = "h10304",
        H10302 = "h10302",
    }
}

string_enum! {
    /// Anti-passback policy of an access rule.
    AntiPassback as "anti-passback mode" {
        Off = "off",
        Hard = "hard",
        Timed = "timed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_round_trips_through_its_spelling() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(*role));
        }
        for mode in AccessMode::ALL {
            assert_eq!(mode.to_string().parse::<AccessMode>(), Ok(*mode));
        }
        for format in CardFormat::ALL {
            assert_eq!(format.as_str().parse::<CardFormat>(), Ok(*format));
        }
    }

    #[test]
    fn unknown_spelling_names_what_was_expected() {
        let err = "superuser".parse::<Role>().err();
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("`superuser` is not a valid role"), "{message}");
        assert!(message.contains("platform_admin"), "{message}");
    }

    #[test]
    fn spellings_are_case_sensitive() {
        assert!("Active".parse::<AccessMode>().is_err());
        assert!("LOCKED_DOWN".parse::<GateMode>().is_err());
    }

    #[test]
    fn serde_uses_the_same_spelling() {
        assert_eq!(serde_json::to_string(&GateMode::LockedDown).ok().as_deref(), Some("\"locked_down\""));
        assert_eq!(serde_json::from_str::<PassType>("\"group\"").ok(), Some(PassType::Group));
    }
}

string_enum! {
    /// Why a decision came out as it did. Stable: turnstiles and dashboards key on these.
    Reason as "reason" {
        /// Every rule passed.
        Allowed = "allowed",
        /// The gate is in free-passage mode.
        FreePassage = "free_passage",
        /// A revoked pass leaving (when the organization lets revoked passes exit).
        RevokedExit = "revoked_exit",
        UnknownCredential = "unknown_credential",
        /// The credential could not be read (bad Wiegand parity, malformed QR).
        InvalidCredential = "invalid_credential",
        PassRevoked = "pass_revoked",
        PassSuspended = "pass_suspended",
        PassExpired = "pass_expired",
        PassNotActive = "pass_not_active",
        NotYetValid = "not_yet_valid",
        OutsideSchedule = "outside_schedule",
        ZoneNotAllowed = "zone_not_allowed",
        UsesExhausted = "uses_exhausted",
        AntiPassback = "anti_passback",
        EscortRequired = "escort_required",
        OccupancyFull = "occupancy_full",
        GateLockedDown = "gate_locked_down",
        /// The gate only serves the other direction.
        WrongDirection = "wrong_direction",
        StaleQr = "stale_qr",
        QrReplayed = "qr_replayed",
        /// The admit could not be made durable, so it was refused (fail closed).
        JournalUnavailable = "journal_unavailable",
    }
}

string_enum! {
    /// The outcome of a decision.
    Decision as "decision" {
        Allow = "allow",
        Deny = "deny",
    }
}

impl Decision {
    pub fn is_allow(self) -> bool {
        self == Decision::Allow
    }
}

string_enum! {
    /// What a deny-list entry matches.
    DenyKind as "deny-list kind" {
        Name = "name",
        Email = "email",
        Phone = "phone",
        Document = "document",
    }
}

string_enum! {
    /// Where a visit stands: `invited → registered → arrived → checked_in → checked_out`, or
    /// `cancelled`, `no_show`, `denied` (held by the deny list for security's review).
    VisitStatus as "visit status" {
        Invited = "invited",
        Registered = "registered",
        Arrived = "arrived",
        CheckedIn = "checked_in",
        CheckedOut = "checked_out",
        Cancelled = "cancelled",
        NoShow = "no_show",
        Denied = "denied",
    }
}

impl VisitStatus {
    /// Still to come or under way: the visitor may yet be let in.
    pub const OPEN: &[VisitStatus] = &[VisitStatus::Invited, VisitStatus::Registered, VisitStatus::Arrived];

    /// Whether the visit is [`OPEN`](Self::OPEN).
    pub fn is_open(self) -> bool {
        Self::OPEN.contains(&self)
    }
}
