//! Where the control plane's state lives between restarts.
//!
//! `StateStore` is the seam: the embedded default is [`FileStore`] (one JSON
//! document, replaced atomically), and [`EtcdStore`] shares one state among
//! a fleet of proxies (SPEC §9). The `ControlPlane` does not know which: it
//! retries a write the store reports as [`StoreError::Conflict`], and takes
//! what a shared store reports through [`StoreListener`].

pub mod claim;
mod endpoints;
mod etcd;
mod file;

pub use claim::{Claim, ClaimError, ClaimRecord, Fence, FleetLease};
pub use etcd::{EtcdStore, FleetNode};
pub use file::FileStore;

use crate::activity::Operation;
use crate::model::{Deployment, State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The whole persisted document. Fields added later must have serde
/// defaults so older state directories keep loading.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    /// Bumped on every save; a fleet store would use it for compare-and-set.
    pub revision: u64,
    pub state: State,
    /// The `[[sites]]` of the config last applied, so a reload applies what
    /// changed in the file and leaves run-time changes alone.
    pub applied_config: State,
    /// Previews waiting for `swap` or `reset`, by site.
    #[serde(default)]
    pub previews: BTreeMap<String, Preview>,
    /// Ramps by site, then slot (`control::ramp`); stopped and finished
    /// ones stay, to be shown, until replaced or their slot is deleted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ramps: BTreeMap<String, BTreeMap<String, crate::ramp::Ramp>>,
}

/// A preview (swap phases 1–2 done, paused) waiting to be completed or reset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    pub source: String,
    pub target: String,
    pub operation_id: String,
    /// What the two slots ran when the preview was taken: a preview only
    /// stands while they still do (a deploy or delete in between ends it).
    #[serde(default)]
    pub source_deployment: Option<Deployment>,
    #[serde(default)]
    pub target_deployment: Option<Deployment>,
}

impl Preview {
    /// The preview still describes `state`: both slots exist and run what
    /// they ran when it was taken.
    pub fn stands(&self, state: &State, site: &str) -> bool {
        let Some(site) = state.sites.get(site) else {
            return false;
        };
        match (site.slots.get(&self.source), site.slots.get(&self.target)) {
            (Some(s), Some(t)) => {
                s.deployment == self.source_deployment && t.deployment == self.target_deployment
            }
            _ => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("state directory {path} is in use by another slotproxy{holder}; stop it, or start this one with --upgrade to take over from it")]
    Locked { path: String, holder: String },
    #[error("this process handed the state over to its successor (graceful upgrade); it no longer writes")]
    HandedOver,
    #[error("state file {path} is not valid state ({source}); fix or move it away, slotproxy will not overwrite it")]
    Corrupt {
        path: String,
        source: serde_json::Error,
    },
    /// A shared store cannot be reached (or answers with an error): nothing
    /// was written. The admin API answers 503 with this text.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// Another node wrote first: the document was not saved; this is the
    /// store's current one, to apply the change to again.
    #[error("the state was changed by another node (revision {})", .0.revision)]
    Conflict(Box<Persisted>),
    /// A write made under a claim found the claim gone or another node's:
    /// nothing was written. The admin API answers 409 with this text.
    #[error("{name} is no longer this node's ({why}): another node may have taken it over, so nothing was written")]
    ClaimLost { name: String, why: String },
}

/// What a shared store tells the control plane about changes made by other
/// nodes. Each call carries the store's whole current view of what changed.
pub trait StoreListener: Send + Sync {
    /// The state document changed (another node's write).
    fn state_changed(&self, doc: Persisted);
    /// An activity-log entry was written.
    fn operation_changed(&self, op: Operation);
    /// An activity-log entry was deleted (retention).
    fn operation_deleted(&self, id: &str);
    /// Everything, read anew (after a reconnect, a compaction or a restored
    /// store): replace what is held, whatever its revision.
    fn reloaded(&self, doc: Option<Persisted>, ops: Vec<Operation>);
    /// The claims held in the fleet now: after one ended (released, or its
    /// node died and its lease expired) and after everything was read anew.
    /// Delivered in order with the rest, so an operation's final record
    /// arrives before the release of its claim.
    fn claims_seen(&self, live: Vec<ClaimRecord>);
}

pub trait StateStore: Send + Sync {
    /// The last saved document, or `None` on first start.
    fn load(&self) -> Result<Option<Persisted>, StoreError>;
    /// Durably replace the document: when this returns `Ok`, a crash or
    /// `kill -9` cannot lose it, and a crash during it leaves the old one.
    fn save(&self, doc: &Persisted) -> Result<(), StoreError>;
    /// [`StateStore::save`], only if the claim `fence` describes still
    /// stands, checked in the same write ([`StoreError::ClaimLost`] if
    /// not). A store that is not shared has no fences: a plain save.
    fn save_fenced(&self, doc: &Persisted, _fence: &Fence) -> Result<(), StoreError> {
        self.save(doc)
    }
    /// Durably write one activity-log entry (replacing an older version).
    fn save_operation(&self, op: &Operation) -> Result<(), StoreError>;
    /// Every stored activity-log entry, in no particular order.
    fn load_operations(&self) -> Result<Vec<Operation>, StoreError>;
    /// Forget an entry (retention).
    fn delete_operation(&self, id: &str) -> Result<(), StoreError>;
    /// Stop writing for good and let a successor process take the store
    /// (graceful upgrade). Every later write fails with `HandedOver`.
    fn release(&self) {}
    /// Where the state lives, for messages.
    fn describe(&self) -> String;
    /// Shared by a fleet: config seeds it only when it is empty, and a swap
    /// found `running` at start may be running on another node.
    fn shared(&self) -> bool {
        false
    }
    /// `Err(why)` while the store cannot be written (the node serves from
    /// its last state: `/healthz` says degraded).
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
    /// The fleet-wide half of a [`Claim`] on `name` for `operation`: `None`
    /// when the store is not shared (the claim is then this process's lock
    /// alone); [`ClaimError::Held`] naming the holder when another node has
    /// it.
    fn lease(
        &self,
        _name: &str,
        _operation: &str,
    ) -> Result<Option<Box<dyn FleetLease>>, ClaimError> {
        Ok(None)
    }
    /// One activity-log entry as stored now (not as this node last saw it).
    fn load_operation(&self, id: &str) -> Result<Option<Operation>, StoreError> {
        Ok(self.load_operations()?.into_iter().find(|o| o.id == id))
    }
    /// Write `op` only if the stored entry is still `expected` (as
    /// [`StateStore::load_operation`] read it): `Ok(false)`, nothing
    /// written, when another writer changed it meanwhile. A node taking over
    /// an operation it read as running must not overwrite the final record
    /// its (presumed dead, but slow) runner wrote since.
    fn save_operation_if(&self, op: &Operation, expected: &Operation) -> Result<bool, StoreError> {
        if self.load_operation(&op.id)?.as_ref() != Some(expected) {
            return Ok(false);
        }
        self.save_operation(op)?;
        Ok(true)
    }
}

impl<S: StateStore + ?Sized> StateStore for std::sync::Arc<S> {
    fn load(&self) -> Result<Option<Persisted>, StoreError> {
        (**self).load()
    }
    fn save(&self, doc: &Persisted) -> Result<(), StoreError> {
        (**self).save(doc)
    }
    fn save_fenced(&self, doc: &Persisted, fence: &Fence) -> Result<(), StoreError> {
        (**self).save_fenced(doc, fence)
    }
    fn save_operation(&self, op: &Operation) -> Result<(), StoreError> {
        (**self).save_operation(op)
    }
    fn load_operations(&self) -> Result<Vec<Operation>, StoreError> {
        (**self).load_operations()
    }
    fn delete_operation(&self, id: &str) -> Result<(), StoreError> {
        (**self).delete_operation(id)
    }
    fn release(&self) {
        (**self).release()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn shared(&self) -> bool {
        (**self).shared()
    }
    fn health(&self) -> Result<(), String> {
        (**self).health()
    }
    fn lease(
        &self,
        name: &str,
        operation: &str,
    ) -> Result<Option<Box<dyn FleetLease>>, ClaimError> {
        (**self).lease(name, operation)
    }
    fn load_operation(&self, id: &str) -> Result<Option<Operation>, StoreError> {
        (**self).load_operation(id)
    }
    fn save_operation_if(&self, op: &Operation, expected: &Operation) -> Result<bool, StoreError> {
        (**self).save_operation_if(op, expected)
    }
}
