//! The hot path's data and logic: the compiled table, the routing decision
//! and the forwarded-header rules. Nothing here does I/O: instance health
//! and resolved addresses come in as inputs of `RouteTable::compile`.

pub mod buckets;
pub mod decide;
pub mod forwarded;
pub mod matches;
mod observe;
pub mod request;
pub mod table;

pub use decide::{decide, route, Decision, Reason};
pub use request::RequestView;
pub use table::{Health, HostTarget, RouteTable};
