//! The hot path's data and logic: the compiled table, the routing decision
//! and the forwarded-header rules. Nothing here does I/O.

pub mod decide;
pub mod forwarded;
pub mod table;

pub use decide::{decide, Decision, Reason};
pub use table::{Health, HostTarget, RouteTable};
