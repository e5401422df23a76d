//! Handlers for one slot: create, delete, deploy, settings, auto swap,
//! request matches, outlier ejection and the shadow.
//!
//! Every change but delete answers the slot as it is after the change, so
//! they share [`change_slot`]: run the edit through the control plane, log
//! it, render the slot with the revision the write produced.

use super::extract::{ApiError, ApiResult, JsonBody, Path};
use super::AdminState;
use crate::api::{
    AutoSwapConfig, AutoSwapStarted, CreateSlot, Deleted, Deploy, DeployedView, Revised,
    SetMatches, SetSettings, SlotView,
};
use crate::control::{ops, ControlError};
use crate::model::State as Model;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

/// Apply `edit` to slot `slot` of `site`, then answer the slot as it is
/// after the change, with the revision the change produced, and what
/// `edit` returned.
async fn change_slot<T: Send + 'static>(
    st: &AdminState,
    (site, slot): (String, String),
    what: &str,
    mut edit: impl FnMut(&mut Model, &str, &str) -> Result<T, ControlError> + Send + 'static,
) -> ApiResult<(Revised<SlotView>, T)> {
    let (s, n) = (site.clone(), slot.clone());
    let ((out, after), revision) = st
        .write(move |c| {
            c.update_at(|state| {
                let out = edit(state, &s, &n)?;
                Ok((out, state.sites[&s].clone()))
            })
        })
        .await?;
    log::info!("admin: {what} {site}/{slot} (revision {revision})");
    let view = after
        .slots
        .get(&slot)
        .map(|s| SlotView::of(&after, s, &st.control.snapshot().health))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no slot {slot:?}")))?;
    Ok((
        Revised {
            revision,
            body: view,
        },
        out,
    ))
}

pub(super) async fn create(
    State(st): State<AdminState>,
    Path(names): Path<(String, String)>,
    JsonBody(req): JsonBody<CreateSlot>,
) -> ApiResult<(StatusCode, Json<Revised<SlotView>>)> {
    let (view, ()) = change_slot(&st, names, "created slot", move |s, site, slot| {
        ops::create_slot(s, site, slot, &req)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

pub(super) async fn delete(
    State(st): State<AdminState>,
    Path((site, slot)): Path<(String, String)>,
) -> ApiResult<Json<Revised<Deleted>>> {
    let (s, n) = (site.clone(), slot.clone());
    let ((), revision) = st
        .write(move |c| c.update_at(|state| ops::delete_slot(state, &s, &n)))
        .await?;
    log::info!("admin: deleted slot {site}/{slot} (revision {revision})");
    Ok(Json(Revised {
        revision,
        body: Deleted {
            site,
            deleted: slot,
        },
    }))
}

pub(super) async fn deploy(
    State(st): State<AdminState>,
    Path(names): Path<(String, String)>,
    JsonBody(req): JsonBody<Deploy>,
) -> ApiResult<Json<Revised<DeployedView>>> {
    let (site, slot) = names.clone();
    // new instance names resolve before the control lock is taken
    let labels = req.instances.clone();
    let _ = tokio::task::spawn_blocking(move || crate::names::prefetch(&labels)).await;
    let what = format!("deployed {} to", req.build_version);
    let (view, deployed) = change_slot(&st, names, &what, move |s, site, slot| {
        ops::deploy(s, site, slot, &req)
    })
    .await?;
    // The deploy is committed; an auto swap runs after it, in the
    // background (warm-up can take minutes). Starting it records its
    // operation durably, so off the async worker.
    let auto_swap = match deployed.auto_swap_target {
        Some(_) => {
            let swaps = st.swaps.clone();
            let started = tokio::task::spawn_blocking(move || swaps.auto_swap(&site, &slot))
                .await
                .ok()
                .flatten();
            started.map(|r| match r {
                Ok(id) => AutoSwapStarted {
                    operation_id: Some(id),
                    error: None,
                },
                Err(e) => AutoSwapStarted {
                    operation_id: None,
                    error: Some(e.to_string()),
                },
            })
        }
        None => None,
    };
    Ok(Json(Revised {
        revision: view.revision,
        body: DeployedView {
            slot: view.body,
            auto_swap,
        },
    }))
}

pub(super) async fn set_auto_swap(
    State(st): State<AdminState>,
    Path(names): Path<(String, String)>,
    JsonBody(req): JsonBody<AutoSwapConfig>,
) -> ApiResult<Json<Revised<SlotView>>> {
    let (view, ()) = change_slot(&st, names, "changed auto swap of", move |s, site, slot| {
        ops::set_auto_swap(s, site, slot, &req)
    })
    .await?;
    Ok(Json(view))
}

pub(super) async fn set_settings(
    State(st): State<AdminState>,
    Path(names): Path<(String, String)>,
    JsonBody(req): JsonBody<SetSettings>,
) -> ApiResult<Json<Revised<SlotView>>> {
    let (view, ()) = change_slot(&st, names, "changed settings of", move |s, site, slot| {
        ops::set_settings(s, site, slot, &req)
    })
    .await?;
    Ok(Json(view))
}

pub(super) async fn set_matches(
    State(st): State<AdminState>,
    Path(names): Path<(String, String)>,
    JsonBody(req): JsonBody<SetMatches>,
) -> ApiResult<Json<Revised<SlotView>>> {
    let (view, ()) = change_slot(&st, names, "changed matches of", move |s, site, slot| {
        ops::set_matches(s, site, slot, &req)
    })
    .await?;
    Ok(Json(view))
}

pub(super) async fn set_outlier(
    State(st): State<AdminState>,
    Path(names): Path<(String, String)>,
    JsonBody(req): JsonBody<crate::policy::Outlier>,
) -> ApiResult<Json<Revised<SlotView>>> {
    let (view, ()) = change_slot(
        &st,
        names,
        "turned on outlier ejection of",
        move |s, site, slot| ops::set_outlier(s, site, slot, Some(req)),
    )
    .await?;
    Ok(Json(view))
}

pub(super) async fn clear_outlier(
    State(st): State<AdminState>,
    Path(names): Path<(String, String)>,
) -> ApiResult<Json<Revised<SlotView>>> {
    let (view, ()) = change_slot(
        &st,
        names,
        "turned off outlier ejection of",
        move |s, site, slot| ops::set_outlier(s, site, slot, None),
    )
    .await?;
    Ok(Json(view))
}

/// The shadow of `site`/`slot` as set in `state`, with this node's figures.
fn shadow_view(
    st: &AdminState,
    state: &Model,
    site: &str,
    slot: &str,
) -> ApiResult<crate::api::ShadowView> {
    let s = state
        .sites
        .get(site)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no site {site:?}")))?;
    let sl = s.slots.get(slot).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("site {site:?} has no slot {slot:?}"),
        )
    })?;
    let spec = sl.shadow.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "slot {slot:?} of site {site:?} has no shadow (PUT {} starts one)",
                crate::api::path(crate::api::SHADOW, &[site, slot])
            ),
        )
    })?;
    let route = st.control.shadow(site, slot).filter(|r| r.raw == spec);
    Ok(crate::api::ShadowView {
        site: site.into(),
        slot: slot.into(),
        shadow: spec,
        figures_of: "this node".into(),
        figures: route.as_ref().map(|r| r.figures.view()).unwrap_or_default(),
        last_differences: route
            .as_ref()
            .map(|r| r.figures.last_differences())
            .unwrap_or_default(),
    })
}

pub(super) async fn show_shadow(
    State(st): State<AdminState>,
    Path((site, slot)): Path<(String, String)>,
) -> ApiResult<Json<Revised<crate::api::ShadowView>>> {
    let snap = st.control.snapshot();
    let view = shadow_view(&st, &snap.state, &site, &slot)?;
    Ok(Json(Revised {
        revision: snap.revision,
        body: view,
    }))
}

pub(super) async fn start_shadow(
    State(st): State<AdminState>,
    Path(names): Path<(String, String)>,
    JsonBody(req): JsonBody<crate::shadow::ShadowSpec>,
) -> ApiResult<Json<Revised<crate::api::ShadowView>>> {
    let (site, slot) = names.clone();
    let (view, ()) = change_slot(&st, names, "started the shadow of", move |s, site, slot| {
        ops::set_shadow(s, site, slot, Some(req.clone()))
    })
    .await?;
    let state = st.control.state();
    Ok(Json(Revised {
        revision: view.revision,
        body: shadow_view(&st, &state, &site, &slot)?,
    }))
}

pub(super) async fn stop_shadow(
    State(st): State<AdminState>,
    Path(names): Path<(String, String)>,
) -> ApiResult<Json<Revised<SlotView>>> {
    let (view, ()) = change_slot(&st, names, "stopped the shadow of", move |s, site, slot| {
        ops::set_shadow(s, site, slot, None)
    })
    .await?;
    Ok(Json(view))
}
