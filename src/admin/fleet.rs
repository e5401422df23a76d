//! `GET /api/v1/fleet`: the nodes sharing this node's etcd state, from the
//! entries each keeps under its own lease (a node that stops is gone from
//! the list once its lease expires).

use super::extract::{ApiError, ApiResult};
use super::AdminState;
use crate::api::{FleetNodeView, FleetView};
use crate::control::ControlError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use std::time::{Duration, UNIX_EPOCH};

pub(super) async fn list(State(st): State<AdminState>) -> ApiResult<Json<FleetView>> {
    let Some(store) = st.fleet.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no fleet: this node keeps its state in [state] dir (backend = \"file\"); set backend = \"etcd\" to share it",
        ));
    };
    let nodes = super::blocking(move || store.nodes().map_err(ControlError::Store)).await?;
    Ok(Json(FleetView {
        nodes: nodes
            .into_iter()
            .map(|n| FleetNodeView {
                id: n.id,
                address: n.address,
                revision: n.revision,
                last_seen: humantime::format_rfc3339_seconds(
                    UNIX_EPOCH + Duration::from_secs(n.last_seen),
                )
                .to_string(),
            })
            .collect(),
    }))
}
