//! Re-reading `config.toml` while running (SIGHUP, `POST /api/v1/reload`,
//! `slotproxy reload`): the file is validated and three-way merged into the
//! state ([`super::merge`]), then whatever the new state asks for runs — an
//! auto swap for a deployment the file brought into an auto-swap slot, and
//! the declarative swap of production's `target_build_version`.

use super::swap::SwapEngine;
use super::{ControlError, ControlPlane};
use crate::config::{Config, ConfigError};
use std::path::Path;
use std::sync::Arc;

/// Why a reload was refused; the running state is kept either way.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not parse or validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The file is valid, but merged with the state it is not (or the
    /// state could not be written).
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// Apply the config file at `path` to the running control plane, then run
/// any swap it asks for.
pub fn reload(
    control: &ControlPlane,
    swaps: &Arc<SwapEngine>,
    path: &Path,
) -> Result<(), ReloadError> {
    let (config, seed) = Config::load(path)?;
    crate::names::prefetch_state(&seed);
    // A deployment the file brought into a slot with auto_swap_target lands
    // like any other: it swaps itself in.
    for (site, slot) in control.apply_config(&config, seed)? {
        swaps.auto_swap(&site, &slot);
    }
    swaps.reconcile();
    Ok(())
}
