//! OrgActor: one per organization. Owns its configuration (published as an immutable snapshot the
//! decision path reads without a mailbox), starts and stops its GateActors, is the only writer of
//! its part of the credential index, and tells the dashboards when a gate's mode or the
//! organization's lockdown changes.

use std::sync::Arc;

use actix::prelude::*;
use uuid::Uuid;

use crate::engine::{CredentialRef, Engine, OrgSnapshot};
use crate::events::Event;
use crate::gate_actor::GateActor;

/// Replace the organization's configuration.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Configure(pub Arc<OrgSnapshot>);

/// Add credentials to the index.
#[derive(Message)]
#[rtype(result = "()")]
pub struct IndexCredentials(pub Vec<([u8; 32], CredentialRef)>);

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
        shared.gates.retain(|id, (org, _)| *org != self.org_id || snapshot.gates.contains_key(id));
        for gate_id in snapshot.gates.keys() {
            if !shared.gates.contains_key(gate_id) {
                let actor = GateActor::new(*gate_id, self.org_id, self.engine.clone());
                shared.gates.insert(*gate_id, (self.org_id, actor.start()));
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
            self.engine.shared.credentials.insert((self.org_id, hash), credential);
        }
    }
}
