//! Handlers for a site's traffic routing: show, replace every rule, clear.

use super::extract::{ApiResult, JsonBody, Path};
use super::sites::site_of;
use super::AdminState;
use crate::api::{Revised, RoutingView, TrafficRouting};
use crate::control::{ops, ControlError};
use crate::model::State as Model;
use axum::extract::State;
use axum::Json;

pub(super) async fn show(
    State(st): State<AdminState>,
    Path(site): Path<String>,
) -> ApiResult<Json<Revised<RoutingView>>> {
    let snap = st.control.snapshot();
    let s = site_of(&snap.state, &site)?;
    Ok(Json(Revised {
        revision: snap.revision,
        body: RoutingView::of(s),
    }))
}

pub(super) async fn set(
    State(st): State<AdminState>,
    Path(site): Path<String>,
    JsonBody(req): JsonBody<TrafficRouting>,
) -> ApiResult<Json<Revised<RoutingView>>> {
    change_rules(&st, site, "set", move |s, site| {
        ops::set_traffic_routing(s, site, &req)
    })
    .await
}

pub(super) async fn clear(
    State(st): State<AdminState>,
    Path(site): Path<String>,
) -> ApiResult<Json<Revised<RoutingView>>> {
    change_rules(&st, site, "cleared", ops::clear_traffic_routing).await
}

async fn change_rules(
    st: &AdminState,
    site: String,
    what: &str,
    mut edit: impl FnMut(&mut Model, &str) -> Result<(), ControlError> + Send + 'static,
) -> ApiResult<Json<Revised<RoutingView>>> {
    let s = site.clone();
    let (view, revision) = st
        .write(move |c| {
            c.update_at(|state| {
                edit(state, &s)?;
                Ok(RoutingView::of(&state.sites[&s]))
            })
        })
        .await?;
    log::info!(
        "admin: traffic routing of {site} {what}: {:?} (revision {revision})",
        view.distribution
    );
    Ok(Json(Revised {
        revision,
        body: view,
    }))
}
