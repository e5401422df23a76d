//! "Run once for the fleet under a lease": a named, exclusive claim.
//!
//! Something that must run on one node of the fleet at a time — a swap of a
//! site (`swap/<site>`), the ramps (`ramps`) — takes a [`Claim`] before it
//! starts and holds it until it ends:
//!
//! ```ignore
//! let claim = control.claim("ramp/shop", &operation_id)?; // 409 if held
//! // ... the work; before an irreversible step:
//! if !claim.held() { /* the lease was lost: stop */ }
//! drop(claim); // released: the next one may start
//! ```
//!
//! Every claim is first a lock in this process ([`LocalClaims`]: the one
//! swap per site of a single node). With a fleet's store it is also a key
//! `<prefix>/claims/<name>` in etcd, created only if absent and bound to a
//! lease the claim keeps alive ([`FleetLease`]): a second node asking gets
//! [`ClaimError::Held`] naming the node that holds it; a node that dies
//! stops keeping the lease alive, etcd deletes the key when it expires, and
//! the other nodes see that the work it named (an activity-log operation)
//! was orphaned (see [`orphaned`]).

use super::StoreError;
use crate::activity::{Operation, Status};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What a claim key in etcd holds: who runs what under it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// The claim's name, e.g. `swap/shop`.
    pub name: String,
    /// The node holding it (its fleet id, `host/listen address`).
    pub node: String,
    /// The activity-log operation running under it.
    pub operation: String,
    /// Unix seconds when it was taken.
    pub since: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Someone holds it: `node` is `None` for this very process.
    #[error("{name} is held {} (operation {operation})", holder_text(.node))]
    Held {
        name: String,
        node: Option<String>,
        operation: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn holder_text(node: &Option<String>) -> String {
    match node {
        Some(n) => format!("by node {n}"),
        None => "on this node".into(),
    }
}

/// The fleet-wide half of a claim: a lease kept alive until released.
pub trait FleetLease: Send + Sync {
    /// Still ours: the lease was kept alive (false once etcd said it expired).
    fn held(&self) -> bool;
    /// Give it up now (revoke the lease: the key goes with it).
    fn release(&mut self);
    /// What a write must find in the store to be made under this claim.
    fn fence(&self) -> Fence;
}

/// A claim as the store sees it: its key, bound to its lease. A write made
/// under a claim ([`super::StateStore::save_fenced`]) lands only if the key
/// is still bound to this lease, in the same transaction as the write: a
/// node whose lease expired (and whose work another node may have taken
/// over) cannot switch production, however late it notices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The claim's name, e.g. `swap/shop`.
    pub name: String,
    /// Its key in the store.
    pub key: String,
    /// The lease the key must still be bound to.
    pub lease: i64,
}

/// An exclusive claim on a name, released on drop (fleet-wide first, then
/// in this process).
pub struct Claim {
    name: String,
    local: Arc<Mutex<HashMap<String, String>>>,
    fleet: Option<Box<dyn FleetLease>>,
}

impl Claim {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the claim still stands. Check it before an irreversible
    /// step: a node cut off from etcd for longer than the lease lost it, and
    /// another node may already have taken over.
    pub fn held(&self) -> bool {
        self.fleet.as_ref().is_none_or(|f| f.held())
    }

    /// What a write under this claim must find in the store; `None` when
    /// the store is not shared (the claim is this process's lock alone).
    pub fn fence(&self) -> Option<Fence> {
        self.fleet.as_ref().map(|f| f.fence())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(mut f) = self.fleet.take() {
            f.release();
        }
        lock(&self.local).remove(&self.name);
    }
}

/// The claims held in this process: a name once, whatever the store.
#[derive(Default)]
pub struct LocalClaims {
    held: Arc<Mutex<HashMap<String, String>>>,
}

impl LocalClaims {
    /// Claim `name` for `operation` here, then fleet-wide through `fleet`
    /// (the store's lease, or `None` when the store is not shared).
    pub fn claim(
        &self,
        name: &str,
        operation: &str,
        fleet: impl FnOnce() -> Result<Option<Box<dyn FleetLease>>, ClaimError>,
    ) -> Result<Claim, ClaimError> {
        {
            let mut held = lock(&self.held);
            if let Some(op) = held.get(name) {
                return Err(ClaimError::Held {
                    name: name.into(),
                    node: None,
                    operation: op.clone(),
                });
            }
            held.insert(name.into(), operation.into());
        }
        let mut claim = Claim {
            name: name.into(),
            local: self.held.clone(),
            fleet: None,
        };
        // on error the local half is released as `claim` drops
        claim.fleet = fleet()?;
        Ok(claim)
    }
}

/// The operations a dead node left `running`: every running operation runs
/// under a live claim naming it (taken before it is recorded, released
/// after its final record), so one that no live claim names has no node
/// running it any more. A candidate only: the node that takes over claims
/// the site and reads the operation again before marking it.
pub fn orphaned<'a>(
    operations: impl IntoIterator<Item = &'a Operation>,
    live: &[ClaimRecord],
) -> Vec<Operation> {
    operations
        .into_iter()
        .filter(|op| op.status == Status::Running)
        // a ramp's operation stays running for the ramp's life; the ramp
        // runner (under its own claim) carries it on, whichever node runs it
        .filter(|op| op.action != crate::activity::Action::Ramp)
        .filter(|op| !live.iter().any(|c| c.operation == op.id))
        .cloned()
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::Action;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Fake(Arc<AtomicBool>);
    impl FleetLease for Fake {
        fn held(&self) -> bool {
            !self.0.load(Ordering::SeqCst)
        }
        fn release(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
        fn fence(&self) -> Fence {
            Fence {
                name: "swap/shop".into(),
                key: "/claims/swap/shop".into(),
                lease: 7,
            }
        }
    }

    #[test]
    fn a_name_is_held_once_and_released_on_drop() {
        let claims = LocalClaims::default();
        let a = claims.claim("swap/shop", "op-1", || Ok(None)).unwrap();
        assert!(a.held());
        match claims.claim("swap/shop", "op-2", || Ok(None)) {
            Err(ClaimError::Held {
                node: None,
                operation,
                ..
            }) => assert_eq!(operation, "op-1"),
            other => panic!("{:?}", other.map(|c| c.name().to_string())),
        }
        let other = claims.claim("swap/blog", "op-3", || Ok(None)).unwrap();
        drop(a);
        drop(other);
        assert!(claims.claim("swap/shop", "op-2", || Ok(None)).is_ok());
    }

    #[test]
    fn the_fleet_half_is_released_with_it_and_a_refusal_frees_the_local_half() {
        let claims = LocalClaims::default();
        let released = Arc::new(AtomicBool::new(false));
        let r = released.clone();
        let c = claims
            .claim("swap/shop", "op-1", move || Ok(Some(Box::new(Fake(r)))))
            .unwrap();
        assert!(c.held());
        drop(c);
        assert!(released.load(Ordering::SeqCst));
        // another node holds it: refused, and nothing stays held here
        let e = claims.claim("swap/shop", "op-2", || {
            Err(ClaimError::Held {
                name: "swap/shop".into(),
                node: Some("vm/127.0.0.1:8080".into()),
                operation: "op-9".into(),
            })
        });
        let text = e.err().unwrap().to_string();
        assert!(text.contains("by node vm/127.0.0.1:8080"), "{text}");
        assert!(claims.claim("swap/shop", "op-3", || Ok(None)).is_ok());
    }

    #[test]
    fn running_operations_no_claim_names_are_orphaned() {
        let op = |status| {
            let mut o = Operation::new("shop", "staging", "production", Action::Swap);
            o.status = status;
            o
        };
        let (mine, dead, done) = (
            op(Status::Running),
            op(Status::Running),
            op(Status::Succeeded),
        );
        let live = vec![ClaimRecord {
            name: "swap/shop".into(),
            node: "a".into(),
            operation: mine.id.clone(),
            since: 0,
        }];
        // a running ramp is carried on by the ramp runner, never orphaned
        let mut ramp = Operation::new("shop", "production", "staging", Action::Ramp);
        ramp.status = Status::Running;
        let found = orphaned([&mine, &dead, &done, &ramp], &live);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, dead.id);
        assert!(orphaned([&mine], &[]).len() == 1);
    }
}
