//! OrgActor: one per organization. Owns its configuration (published as an immutable snapshot the
//! decision path reads without a mailbox), starts and stops its GateActors, is the only writer of
//! its part of the credential index, and tells the dashboards when a gate's mode or the
//! organization's lockdown changes.

use actix::prelude::*;
use dashmap::DashMap;
use uuid::Uuid;

use crate::engine::{CredentialRef, Engine, GateEntry};
use crate::events::Event;
use crate::gate_actor::{GateActor, Inbox};

pub use crate::messages::{Configure, IndexCredentials, Remove};

/// The credential index: read by every gate, written only by OrgActor handlers (this module), so
/// that an organization's entries change in one place, in order with its configuration.
#[derive(Default)]
pub struct CredentialIndex(DashMap<(Uuid, [u8; 32]), CredentialRef>);

impl CredentialIndex {
    /// The credential an organization holds under a lookup key.
    pub fn get(&self, org_id: Uuid, key: &[u8; 32]) -> Option<CredentialRef> {
        self.0.get(&(org_id, *key)).map(|c| *c)
    }

    fn insert(&self, org_id: Uuid, key: [u8; 32], credential: CredentialRef) {
        self.0.insert((org_id, key), credential);
    }

    fn remove_org(&self, org_id: Uuid) {
        self.0.retain(|(org, _), _| *org != org_id);
    }
}

pub struct OrgActor {
    org_id: Uuid,
    engine: Engine,
}

impl OrgActor {
    pub fn new(org_id: Uuid, engine: Engine) -> Self {
        OrgActor { org_id, engine }
    }
}

impl Actor for OrgActor {
    type Context = Context<Self>;
}

impl Handler<Configure> for OrgActor {
    type Result = ();

    fn handle(&mut self, Configure(snapshot): Configure, _: &mut Context<Self>) {
        let shared = &self.engine.shared;
        // Gates that left the configuration stop when their address is dropped.
        shared.gates.retain(|id, gate| gate.org_id != self.org_id || snapshot.gates.contains_key(id));
        for gate_id in snapshot.gates.keys() {
            if !shared.gates.contains_key(gate_id) {
                let inbox = std::sync::Arc::new(Inbox::default());
                let actor = GateActor::new(self.org_id, self.engine.clone(), inbox.clone());
                let addr = self.engine.start(*gate_id, actor);
                shared.gates.insert(*gate_id, GateEntry { org_id: self.org_id, addr, inbox });
            }
        }
        // What changed for the dashboards, published here, where the change takes effect.
        let before = shared.snapshots.insert(self.org_id, snapshot.clone());
        if let Some(before) = before {
            for (gate_id, gate) in &snapshot.gates {
                if before.gates.get(gate_id).is_some_and(|old| old.mode != gate.mode) {
                    self.engine.publish(self.org_id, Event::GateMode { gate_id: *gate_id, mode: gate.mode });
                }
            }
            if before.policy.lockdown != snapshot.policy.lockdown {
                self.engine.publish(self.org_id, Event::Lockdown { lockdown: snapshot.policy.lockdown });
            }
        }
    }
}

impl Handler<IndexCredentials> for OrgActor {
    type Result = ();

    fn handle(&mut self, IndexCredentials(entries): IndexCredentials, _: &mut Context<Self>) {
        for (hash, credential) in entries {
            self.engine.shared.credentials.insert(self.org_id, hash, credential);
        }
    }
}

impl Handler<Remove> for OrgActor {
    type Result = ();

    fn handle(&mut self, _: Remove, ctx: &mut Context<Self>) {
        let (shared, org_id) = (&self.engine.shared, self.org_id);
        shared.snapshots.remove(&org_id);
        shared.gates.retain(|_, gate| gate.org_id != org_id);
        shared.credentials.remove_org(org_id);
        // Active pass actors of the organization passivate on their own once idle.
        shared.dormant.retain(|_, pass| pass.org_id != org_id);
        ctx.stop();
    }
}
