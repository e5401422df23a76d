//! Handlers for the API as a whole and its sites: `/healthz`, the site list,
//! one site, and `POST /api/v1/reload`.

use super::extract::{ApiError, ApiResult, Path};
use super::AdminState;
use crate::api::{Reloaded, Revised, SiteView, SitesView};
use crate::model::{Site, State as Model};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

/// The site named `site`, or 404.
pub(super) fn site_of<'a>(state: &'a Model, site: &str) -> ApiResult<&'a Site> {
    state.sites.get(site).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("site {site:?} does not exist"),
        )
    })
}

/// 200 whenever the node serves: with a fleet's etcd unreachable it still
/// does (from its last state), so load balancers must keep it — the body
/// says `degraded` and why. 503 `starting` until the proxy's listeners
/// exist (`readiness`): an admin API that answers is not a node that
/// serves.
pub(super) async fn healthz(State(st): State<AdminState>) -> (StatusCode, Json<serde_json::Value>) {
    if !crate::readiness::proxy_up() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "starting",
                "proxy": "its listeners are not up yet",
            })),
        );
    }
    let body = match st.control.store_health() {
        Ok(()) => serde_json::json!({"status": "ok"}),
        Err(why) => serde_json::json!({
            "status": "degraded",
            "state_store": format!("unavailable: {why}"),
            "writes": "refused until the state store answers",
        }),
    };
    (StatusCode::OK, Json(body))
}

pub(super) async fn list(State(st): State<AdminState>) -> Json<Revised<SitesView>> {
    let snap = st.control.snapshot();
    let sites = snap
        .state
        .sites
        .values()
        .map(|s| SiteView::of(s, &snap.health))
        .collect();
    Json(Revised {
        revision: snap.revision,
        body: SitesView { sites },
    })
}

pub(super) async fn show(
    State(st): State<AdminState>,
    Path(site): Path<String>,
) -> ApiResult<Json<Revised<SiteView>>> {
    let snap = st.control.snapshot();
    let s = site_of(&snap.state, &site)?;
    Ok(Json(Revised {
        revision: snap.revision,
        body: SiteView::of(s, &snap.health),
    }))
}

pub(super) async fn reload(State(st): State<AdminState>) -> ApiResult<Json<Revised<Reloaded>>> {
    let path = st.config_path.clone();
    let (control, swaps) = (st.control.clone(), st.swaps.clone());
    let result = tokio::task::spawn_blocking(move || {
        crate::control::reload::reload(&control, &swaps, &path)
    })
    .await
    .map_err(ApiError::internal)?;
    if let Err(e) = result {
        log::error!("admin: reload refused, running state kept: {e}");
        // a bad file is the caller's (400); the rest as any other write
        // (503 while a fleet's etcd is unreachable, 409 on conflicts)
        let status = match &e {
            crate::control::reload::ReloadError::Config(_) => StatusCode::BAD_REQUEST,
            crate::control::reload::ReloadError::Control(c) => super::extract::status_of(c),
        };
        return Err(ApiError::new(
            status,
            format!("reload refused, running state kept: {e}"),
        ));
    }
    let revision = st.control.snapshot().revision;
    log::info!(
        "admin: reloaded {} (revision {revision})",
        st.config_path.display()
    );
    Ok(Json(Revised {
        revision,
        body: Reloaded {
            reloaded: st.config_path.display().to_string(),
        },
    }))
}
