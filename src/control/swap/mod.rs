//! Swaps: warm-up-gated exchanges of what two slots run, with preview,
//! reset, auto swap and declarative swap, each recorded in the activity log
//! (docs/guide/swaps.md).
//!
//! A swap runs off the hot path on the control runtime. Phases 1–3 only talk
//! to the source's instances; production is untouched until phase 4, which is
//! one `ControlPlane::update_doc` — one durable write and one `ArcSwap::store`
//! of a table where the two slots have exchanged deployments and swappable
//! settings. Requests in flight keep the table they started with, so no
//! request fails because of a swap; a failure before phase 4 puts the
//! source's own settings back and leaves production as it was.
//!
//! - `plan`: pure — may a swap start, and the switch itself;
//! - `preview`: pure — what a swap would change, before it starts;
//! - `engine`: runs the phases, talking to the instances through
//!   [`InstanceClient`](crate::instance_client::InstanceClient).

mod engine;
mod plan;
mod preview;

pub use engine::SwapEngine;
pub use plan::SwapRequest;
pub use preview::swap_preview;
