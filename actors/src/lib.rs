//! Portcullis domain and live state.
//!
//! - [`domain`] — the vocabulary every layer shares: roles, organization access modes, gate
//!   directions and modes, pass types and statuses, credential kinds and card formats. Each is
//!   parsed from its stable wire/database spelling and printed back the same way, so the schema's
//!   `CHECK` constraints, the HTTP API and the decision all speak one language.
//!
//! The decision function and the actors (OrgActor, GateActor, PassActor, SessionActor) build on
//! these types; see `../shared/DESIGN.md` for the supervision tree they will form:
//!
//! ```text
//! System
//! ├── OrgActor ×orgs      rules, zones, gates, occupancy, lockdown; sole writer of the credential index
//! │   ├── GateActor ×gates   serializes a gate's decisions, keeps its entry queue and mode
//! │   └── PassActor ×active  the one place a pass is consumed or revoked
//! ├── Journal             group-commits check-ins and pass changes to PostgreSQL
//! └── EventHub            fans events out to SessionActor ×connections
//! ```

pub mod decision;
pub mod domain;
pub mod schedule;
