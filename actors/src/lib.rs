//! Portcullis domain and live state.
//!
//! The bottom layer: it imports no other Portcullis crate and knows nothing of HTTP or SQL (the
//! journal's records are handed to a writer in the `portcullis` crate). Everything above may
//! import it.
//!
//! - [`domain`] — the vocabulary every layer shares: roles, organization access modes, gate
//!   directions and modes, pass types and statuses, credential kinds and card formats. Each is
//!   parsed from its stable wire/database spelling and printed back the same way, so the schema's
//!   `CHECK` constraints, the HTTP API and the decision all speak one language.
//!
//! - [`schedule`] — weekdays and time windows in an organization's time zone, with holidays.
//! - [`decision`] — the pure decision: `decide(&Request) -> Verdict`, and the state after a passage.
//! - [`engine`] — the registry of actors and the engine's public face (`Engine`).
//! - [`org_actor`], [`gate_actor`], [`pass_actor`] — the actors.
//! - [`messages`] — the messages the actors exchange (and `Outcome`, a decision as everyone sees it).
//! - [`journal`] — what the actors hand to the PostgreSQL writer, and how.
//! - [`events`] — the EventHub: numbered, retained, broadcast events per organization.
//! - [`sched`] — threads that wake many others without being held by them.
//!
//! The supervision tree (org, gate and pass actors are spread over one thread per core, each
//! placed by its id; what needs no pass is decided on the caller's thread, see [`gate_actor`]):
//!
//! ```text
//! System
//! ├── OrgActor ×orgs      rules, zones, gates, occupancy, lockdown; sole writer of the credential index
//! │   ├── GateActor ×gates   keeps a gate's entry queue in order (its inbox), publishes its decisions
//! │   └── PassActor ×active  the one place a pass is consumed or revoked
//! ├── Journal             group-commits check-ins and pass changes to PostgreSQL (portcullis crate)
//! └── EventHub            fans events out to SessionActor ×connections
//! ```

pub mod decision;
pub mod domain;
pub mod engine;
pub mod events;
pub mod gate_actor;
pub mod journal;
pub mod messages;
pub mod org_actor;
pub mod pass_actor;
pub mod sched;
pub mod schedule;
