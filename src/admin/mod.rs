//! The admin HTTP API: JSON over its own listener, served on the control
//! runtime, never on the proxy's worker threads. Its wire types and paths
//! are [`crate::api`]; this folder is the server side:
//!
//! - `auth`: the token and the middleware that checks it;
//! - `extract`: strict JSON bodies, path parameters, error answers;
//! - `sites`, `slots`, `routing`, `swaps`, `ramp`, `fleet`: the handlers, by resource;
//! - `dashboard`: the web page on `/` and the JSON only it needs.
//!
//! Handlers are thin: they parse, hand a pure function from
//! [`control::ops`](crate::control::ops) to [`ControlPlane::update_at`]
//! (validate → persist → publish), and render the result. So when a handler
//! answers 2xx, the change is on disk and the next proxied request sees it.
//! The admin layer never touches the routing table.

mod auth;
mod dashboard;
mod extract;
mod fleet;
mod ramp;
mod routing;
mod sites;
mod slots;
mod swaps;

pub use auth::{check_exposure, resolve_token};
pub use extract::{parse_body, ApiError};

use crate::api;
use crate::control::swap::SwapEngine;
use crate::control::{ControlError, ControlPlane};
use crate::store::EtcdStore;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post, put};
use axum::Router;
use extract::ApiResult;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Request bodies larger than this are refused with 413: every body the API
/// takes is a few hundred bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Everything a handler needs. Built in `server::start`.
#[derive(Clone)]
pub struct AdminState {
    pub control: Arc<ControlPlane>,
    pub swaps: Arc<SwapEngine>,
    /// `None` = no auth (only allowed on loopback, see [`check_exposure`]).
    token: Option<Arc<str>>,
    /// The file `POST /api/v1/reload` re-reads.
    pub config_path: PathBuf,
    /// The dashboard's live rates: snapshots of the proxy's counters.
    live: Arc<Mutex<crate::live::Sampler>>,
    /// The proxy's listeners, for the dashboard's links.
    listeners: Arc<api::ListenersView>,
    /// The fleet's store, when the state is in etcd (`GET /api/v1/fleet`).
    pub fleet: Option<Arc<EtcdStore>>,
}

impl AdminState {
    pub fn new(
        control: Arc<ControlPlane>,
        swaps: Arc<SwapEngine>,
        token: Option<String>,
        config_path: PathBuf,
    ) -> Self {
        AdminState {
            control,
            swaps,
            token: token.map(Arc::from),
            config_path,
            live: Default::default(),
            listeners: Default::default(),
            fleet: None,
        }
    }

    /// Tell the dashboard where the proxy listens (`[server] listen`,
    /// `tls_listen`).
    pub fn with_listeners(mut self, http: Vec<String>, https: Vec<String>) -> Self {
        self.listeners = Arc::new(api::ListenersView { http, https });
        self
    }

    /// Serve `GET /api/v1/fleet` from this etcd store.
    pub fn with_fleet(mut self, fleet: Option<Arc<EtcdStore>>) -> Self {
        self.fleet = fleet;
        self
    }

    /// Run a control-plane write off the async worker: it fsyncs.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ControlPlane) -> Result<T, ControlError> + Send + 'static,
    ) -> ApiResult<T> {
        let control = self.control.clone();
        blocking(move || f(&control)).await
    }
}

/// Run blocking work (the state store's fsyncs, etcd round trips) off the
/// async workers; its error becomes the API's answer.
async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> ApiResult<T>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
        .map_err(Into::into)
}

/// The whole API.
pub fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route(api::SITES, get(sites::list))
        .route(api::SITE, get(sites::show))
        .route(api::SLOT, put(slots::create).delete(slots::delete))
        .route(api::DEPLOYMENT, put(slots::deploy))
        .route(api::SETTINGS, put(slots::set_settings))
        .route(api::AUTO_SWAP, put(slots::set_auto_swap))
        .route(api::MATCH, put(slots::set_matches))
        .route(
            api::OUTLIER,
            put(slots::set_outlier).delete(slots::clear_outlier),
        )
        .route(
            api::TRAFFIC_ROUTING,
            get(routing::show).put(routing::set).delete(routing::clear),
        )
        .route(api::SWAP, post(swaps::start))
        .route(api::SWAP_PREVIEW, get(swaps::preview))
        .route(api::LIVE, get(dashboard::live))
        .route(api::LISTENERS, get(dashboard::listeners))
        .route(api::OPERATION, get(swaps::operation))
        .route(api::ACTIVITY, get(swaps::activity))
        .route(api::RELOAD, post(sites::reload))
        .route(
            api::RAMP,
            get(ramp::show).put(ramp::start).delete(ramp::stop),
        )
        .route(
            api::SHADOW,
            get(slots::show_shadow)
                .put(slots::start_shadow)
                .delete(slots::stop_shadow),
        )
        .route(api::FLEET, get(fleet::list))
        .fallback(extract::not_found)
        .method_not_allowed_fallback(extract::method_not_allowed)
        // Auth wraps the fallbacks too: an unauthenticated client learns
        // nothing about which paths exist.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    // No token for these: health, and the dashboard's page and files,
    // which hold no data (the page asks for the token to call the API).
    api.route(api::HEALTHZ, get(sites::healthz))
        .route(api::DASHBOARD, get(dashboard::page))
        .route(api::DASHBOARD_FILE, get(dashboard::file))
        .with_state(state)
}
