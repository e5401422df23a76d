//! Handlers for swaps and the activity log: preview what a swap would
//! change, start a swap, one operation, a site's operations.

use super::extract::{ApiError, ApiResult, JsonBody, Path, Query};
use super::AdminState;
use crate::api::{Action, Operation, StartSwap, SwapPreview, SwapPreviewQuery, SwapStarted};
use crate::control::swap::{swap_preview, SwapRequest};
use crate::model::PRODUCTION;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

pub(super) async fn start(
    State(st): State<AdminState>,
    Path((site, slot)): Path<(String, String)>,
    JsonBody(req): JsonBody<StartSwap>,
) -> ApiResult<(StatusCode, Json<SwapStarted>)> {
    let request = SwapRequest {
        site,
        source: slot,
        target: req.target_slot.unwrap_or_else(|| PRODUCTION.to_string()),
        action: req.action.unwrap_or(Action::Swap),
    };
    let swaps = st.swaps.clone();
    // start() records the operation durably (fsync) before it answers
    let operation_id = super::blocking(move || swaps.start(request)).await?;
    Ok((StatusCode::ACCEPTED, Json(SwapStarted { operation_id })))
}

/// What a swap of `slot` into `target_slot` would change; the error the
/// swap itself would get if it could not start now.
pub(super) async fn preview(
    State(st): State<AdminState>,
    Path((site, slot)): Path<(String, String)>,
    Query(q): Query<SwapPreviewQuery>,
) -> ApiResult<Json<SwapPreview>> {
    let request = SwapRequest {
        target: q.target_slot.unwrap_or_else(|| PRODUCTION.to_string()),
        site,
        source: slot,
        action: Action::Swap,
    };
    let pending = st.control.preview(&request.site);
    Ok(Json(swap_preview(
        &st.control.state(),
        pending.as_ref(),
        &request,
    )?))
}

pub(super) async fn operation(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Operation>> {
    st.control
        .operation(&id)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no operation {id:?}")))
}

pub(super) async fn activity(
    State(st): State<AdminState>,
    Path(site): Path<String>,
) -> ApiResult<Json<Vec<Operation>>> {
    let ops = st.control.activity(&site);
    if ops.is_empty() && !st.control.state().sites.contains_key(&site) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("site {site:?} does not exist"),
        ));
    }
    Ok(Json(ops))
}
