//! The admin HTTP API (SPEC §5): JSON over its own listener, served on the
//! control runtime, never on the proxy's worker threads.
//!
//! Handlers are thin: they parse, hand a pure function from
//! [`control::ops`](crate::control::ops) to [`ControlPlane::update_at`]
//! (validate → persist → publish), and render the result. So when a handler
//! answers 2xx, the change is on disk and the next proxied request sees it.
//! The admin layer never touches the routing table.
//!
//! Every path but `/healthz` needs `Authorization: Bearer <token>`; the token
//! comes from `[admin] token`, `[admin] token_file` or
//! `SLOTPROXY_ADMIN_TOKEN`, in that order. Without a token the API is open,
//! which [`check_exposure`] allows on a loopback listener only.

use crate::activity::{Action, Operation};
use crate::config::AdminSection;
use crate::control::ops::{self, CreateSlot, Deploy, RoutingView, SetSettings, TrafficRouting};
use crate::control::swap::{SwapEngine, SwapRequest};
use crate::control::{ControlError, ControlPlane};
use crate::model::{Site, Slot, PRODUCTION};
use crate::routing::Health;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Request bodies larger than this are refused with 413: every body the API
/// takes is a few hundred bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The environment variable the token can come from (server and CLI).
pub const TOKEN_ENV: &str = "SLOTPROXY_ADMIN_TOKEN";

/// Everything a handler needs. Built in `server::start`.
#[derive(Clone)]
pub struct AdminState {
    pub control: Arc<ControlPlane>,
    pub swaps: Arc<SwapEngine>,
    /// `None` = no auth (only allowed on loopback, see [`check_exposure`]).
    token: Option<Arc<str>>,
    /// The file `POST /api/v1/reload` re-reads.
    pub config_path: PathBuf,
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
        }
    }
}

/// The token the API requires: `[admin] token`, else the contents of
/// `[admin] token_file` (trailing newline trimmed), else `env_token`
/// (`SLOTPROXY_ADMIN_TOKEN`). Errors name the key to fix.
pub fn resolve_token(
    admin: &AdminSection,
    env_token: Option<String>,
) -> anyhow::Result<Option<String>> {
    if admin.token.is_some() && admin.token_file.is_some() {
        anyhow::bail!("admin.token and admin.token_file are both set; keep one");
    }
    if let Some(t) = &admin.token {
        return Ok(Some(t.clone()));
    }
    if let Some(path) = &admin.token_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("admin.token_file: cannot read {}: {e}", path.display())
        })?;
        let t = text.trim();
        if t.is_empty() {
            anyhow::bail!("admin.token_file: {} is empty", path.display());
        }
        return Ok(Some(t.to_string()));
    }
    Ok(env_token.filter(|t| !t.trim().is_empty()))
}

/// Refuse an admin listener reachable from other machines without a token.
pub fn check_exposure(listen: &str, token: Option<&str>) -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|_| anyhow::anyhow!("admin.listen: {listen:?} is not a socket address"))?;
    if token.is_none() && !addr.ip().is_loopback() {
        anyhow::bail!(
            "admin.listen = {listen:?} is not a loopback address and no admin token is set: \
             anyone who can reach it could change routing. Set [admin] token or token_file, \
             or {TOKEN_ENV}, or listen on 127.0.0.1"
        );
    }
    Ok(())
}

/// The whole API. Routes for swaps, operations and activity go in the
/// marked place below.
pub fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/api/v1/sites", get(list_sites))
        .route("/api/v1/sites/{site}", get(show_site))
        .route(
            "/api/v1/sites/{site}/slots/{slot}",
            put(create_slot).delete(delete_slot),
        )
        .route("/api/v1/sites/{site}/slots/{slot}/deployment", put(deploy))
        .route(
            "/api/v1/sites/{site}/slots/{slot}/settings",
            put(set_settings),
        )
        .route(
            "/api/v1/sites/{site}/traffic-routing",
            get(show_routing).put(set_routing).delete(clear_routing),
        )
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/sites/{site}/slots/{slot}/swap", post(swap))
        .route(
            "/api/v1/sites/{site}/slots/{slot}/auto-swap",
            put(set_auto_swap),
        )
        .route("/api/v1/operations/{id}", get(operation))
        .route("/api/v1/sites/{site}/activity", get(activity))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Auth wraps the fallbacks too: an unauthenticated client learns
        // nothing about which paths exist.
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    api.route("/healthz", get(healthz)).with_state(state)
}

// ---- errors ---------------------------------------------------------------

/// An error answer: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match &e {
            ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such API path")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this path",
    )
}

async fn require_token(State(st): State<AdminState>, req: Request, next: Next) -> Response {
    let Some(want) = &st.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    // Constant time over the token bytes, so timing does not reveal how much
    // of a guess was right (only its length can leak).
    if given.is_some_and(|g| bool::from(g.ct_eq(want.as_bytes()))) {
        return next.run(req).await;
    }
    let mut resp = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong token: send Authorization: Bearer <token>",
    )
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

// ---- request bodies ---------------------------------------------------------

/// A JSON body, whatever its Content-Type (so `curl -d` works), with errors
/// as JSON: bad JSON or unknown fields → 400 naming the problem, too big →
/// 413. An empty body reads as `{}`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                let status = r.status();
                let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    format!("request body is over the limit of {BODY_LIMIT} bytes")
                } else {
                    r.body_text()
                };
                ApiError::new(status, msg)
            })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(JsonBody)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("request body: {e}")))
    }
}

/// Path parameters whose rejection (e.g. a segment that does not decode to
/// UTF-8) is a JSON error like every other, not axum's plain text.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|r| ApiError::new(r.status(), format!("request path: {}", r.body_text())))
    }
}

// ---- views ------------------------------------------------------------------

/// A response tagged with the state revision it shows.
#[derive(Debug, Serialize, Deserialize)]
pub struct Revised<T> {
    pub revision: u64,
    #[serde(flatten)]
    pub body: T,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SitesView {
    pub sites: Vec<SiteView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteView {
    pub name: String,
    pub hostnames: Vec<String>,
    pub slot_domain: Option<String>,
    pub trusted_proxies: Vec<String>,
    /// Production first, then the others by name.
    pub slots: Vec<SlotView>,
    pub routing: RoutingView,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotView {
    pub name: String,
    /// Every host name that reaches this slot directly, generated one first.
    pub hostnames: Vec<String>,
    /// `null` = no rule; `0` = an explicit rule (opt-in by link only).
    pub traffic_percent: Option<f64>,
    pub auto_swap_target: Option<String>,
    pub ip_allow: Vec<String>,
    pub target_build_version: Option<String>,
    pub settings: BTreeMap<String, String>,
    pub sticky_settings: BTreeMap<String, String>,
    /// `null` = nothing deployed (the slot answers 503).
    pub deployment: Option<DeploymentView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentView {
    pub build_version: String,
    pub instances: Vec<InstanceView>,
    pub warmup_path: String,
    pub warmup_statuses: Vec<u16>,
    pub warmup_timeout_secs: u64,
    pub warmup_retries: u32,
    pub settings_hook_path: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceView {
    pub address: String,
    /// `up` or `down`, as the active health checks last saw it and as
    /// routing treats it (an instance not seen failing counts as up).
    pub health: String,
}

pub fn site_view(site: &Site, health: &Health) -> SiteView {
    let ordered = site.slots_in_order();
    SiteView {
        name: site.name.clone(),
        hostnames: site.hostnames.clone(),
        slot_domain: site.slot_domain.clone(),
        trusted_proxies: site.trusted_proxies.iter().map(|n| n.to_string()).collect(),
        slots: ordered.map(|s| slot_view(site, s, health)).collect(),
        routing: ops::routing_view(site),
    }
}

pub fn slot_view(site: &Site, slot: &Slot, health: &Health) -> SlotView {
    SlotView {
        name: slot.name.clone(),
        hostnames: site.slot_hostnames(slot),
        traffic_percent: slot.traffic_percent,
        auto_swap_target: slot.auto_swap_target.clone(),
        ip_allow: slot.ip_allow.iter().map(|n| n.to_string()).collect(),
        target_build_version: slot.target_build_version.clone(),
        settings: slot.settings.clone(),
        sticky_settings: slot.sticky_settings.clone(),
        deployment: slot.deployment.as_ref().map(|d| DeploymentView {
            build_version: d.build_version.clone(),
            instances: d
                .instances
                .iter()
                .map(|i| InstanceView {
                    address: i.clone(),
                    health: if health.get(i).copied().unwrap_or(true) {
                        "up"
                    } else {
                        "down"
                    }
                    .into(),
                })
                .collect(),
            warmup_path: d.warmup.path.clone(),
            warmup_statuses: d.warmup.statuses.clone(),
            warmup_timeout_secs: d.warmup.timeout_secs,
            warmup_retries: d.warmup.retries,
            settings_hook_path: d.settings_hook_path.clone(),
        }),
    }
}

// ---- handlers ---------------------------------------------------------------

type ApiResult<T> = Result<T, ApiError>;

/// Run a control-plane write off the async worker: it fsyncs.
async fn write<T: Send + 'static>(
    st: &AdminState,
    f: impl FnOnce(&ControlPlane) -> Result<T, ControlError> + Send + 'static,
) -> ApiResult<T> {
    let control = st.control.clone();
    tokio::task::spawn_blocking(move || f(&control))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

fn site_of<'a>(state: &'a crate::model::State, site: &str) -> ApiResult<&'a Site> {
    state.sites.get(site).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("site {site:?} does not exist"),
        )
    })
}

/// The view of one slot of `site` after a change, tagged with its revision.
fn slot_answer(
    st: &AdminState,
    site: &Site,
    slot: &str,
    revision: u64,
) -> ApiResult<Json<Revised<SlotView>>> {
    let s = site
        .slots
        .get(slot)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no slot {slot:?}")))?;
    let health = st.control.snapshot().health;
    Ok(Json(Revised {
        revision,
        body: slot_view(site, s, &health),
    }))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn list_sites(State(st): State<AdminState>) -> Json<Revised<SitesView>> {
    let snap = st.control.snapshot();
    let sites = snap
        .state
        .sites
        .values()
        .map(|s| site_view(s, &snap.health))
        .collect();
    Json(Revised {
        revision: snap.revision,
        body: SitesView { sites },
    })
}

async fn show_site(
    State(st): State<AdminState>,
    Path(site): Path<String>,
) -> ApiResult<Json<Revised<SiteView>>> {
    let snap = st.control.snapshot();
    let s = site_of(&snap.state, &site)?;
    Ok(Json(Revised {
        revision: snap.revision,
        body: site_view(s, &snap.health),
    }))
}

async fn create_slot(
    State(st): State<AdminState>,
    Path((site, slot)): Path<(String, String)>,
    JsonBody(req): JsonBody<CreateSlot>,
) -> ApiResult<(StatusCode, Json<Revised<SlotView>>)> {
    let (s, n) = (site.clone(), slot.clone());
    let (after, rev) = write(&st, move |c| {
        c.update_at(|state| {
            ops::create_slot(state, &s, &n, &req)?;
            Ok(state.sites[&s].clone())
        })
    })
    .await?;
    log::info!("admin: created slot {site}/{slot} (revision {rev})");
    Ok((StatusCode::CREATED, slot_answer(&st, &after, &slot, rev)?))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Deleted {
    pub site: String,
    pub deleted: String,
}

async fn delete_slot(
    State(st): State<AdminState>,
    Path((site, slot)): Path<(String, String)>,
) -> ApiResult<Json<Revised<Deleted>>> {
    let (s, n) = (site.clone(), slot.clone());
    let ((), rev) = write(&st, move |c| {
        c.update_at(|state| ops::delete_slot(state, &s, &n))
    })
    .await?;
    log::info!("admin: deleted slot {site}/{slot} (revision {rev})");
    Ok(Json(Revised {
        revision: rev,
        body: Deleted {
            site,
            deleted: slot,
        },
    }))
}

/// A deploy's answer: the slot, and what became of its auto swap.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeployedView {
    #[serde(flatten)]
    pub slot: SlotView,
    /// Present when the slot has `auto_swap_target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_swap: Option<AutoSwapStarted>,
}

/// The auto swap a deploy started (`operation_id`), or why none started
/// (`error`, e.g. another swap of the site is running).
#[derive(Debug, Serialize, Deserialize)]
pub struct AutoSwapStarted {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

async fn deploy(
    State(st): State<AdminState>,
    Path((site, slot)): Path<(String, String)>,
    JsonBody(req): JsonBody<Deploy>,
) -> ApiResult<Json<Revised<DeployedView>>> {
    let (s, n) = (site.clone(), slot.clone());
    let version = req.build_version.clone();
    let ((deployed, after), rev) = write(&st, move |c| {
        c.update_at(|state| {
            let d = ops::deploy(state, &s, &n, &req)?;
            Ok((d, state.sites[&s].clone()))
        })
    })
    .await?;
    log::info!("admin: deployed {version} to {site}/{slot} (revision {rev})");
    // The deploy is committed; an auto swap runs after it, in the
    // background (warm-up can take minutes). Starting it records its
    // operation durably, so off the async worker.
    let auto_swap = match deployed.auto_swap_target {
        Some(_) => {
            let (swaps, site, slot) = (st.swaps.clone(), site.clone(), slot.clone());
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
    let Json(Revised { revision, body }) = slot_answer(&st, &after, &slot, rev)?;
    Ok(Json(Revised {
        revision,
        body: DeployedView {
            slot: body,
            auto_swap,
        },
    }))
}

async fn set_auto_swap(
    State(st): State<AdminState>,
    Path((site, slot)): Path<(String, String)>,
    JsonBody(req): JsonBody<ops::AutoSwapConfig>,
) -> ApiResult<Json<Revised<SlotView>>> {
    let (s, n) = (site.clone(), slot.clone());
    let (after, rev) = write(&st, move |c| {
        c.update_at(|state| {
            ops::set_auto_swap(state, &s, &n, &req)?;
            Ok(state.sites[&s].clone())
        })
    })
    .await?;
    log::info!("admin: changed auto swap of {site}/{slot} (revision {rev})");
    slot_answer(&st, &after, &slot, rev)
}

async fn set_settings(
    State(st): State<AdminState>,
    Path((site, slot)): Path<(String, String)>,
    JsonBody(req): JsonBody<SetSettings>,
) -> ApiResult<Json<Revised<SlotView>>> {
    let (s, n) = (site.clone(), slot.clone());
    let (after, rev) = write(&st, move |c| {
        c.update_at(|state| {
            ops::set_settings(state, &s, &n, &req)?;
            Ok(state.sites[&s].clone())
        })
    })
    .await?;
    log::info!("admin: changed settings of {site}/{slot} (revision {rev})");
    slot_answer(&st, &after, &slot, rev)
}

async fn show_routing(
    State(st): State<AdminState>,
    Path(site): Path<String>,
) -> ApiResult<Json<Revised<RoutingView>>> {
    let snap = st.control.snapshot();
    let s = site_of(&snap.state, &site)?;
    Ok(Json(Revised {
        revision: snap.revision,
        body: ops::routing_view(s),
    }))
}

async fn set_routing(
    State(st): State<AdminState>,
    Path(site): Path<String>,
    JsonBody(req): JsonBody<TrafficRouting>,
) -> ApiResult<Json<Revised<RoutingView>>> {
    let s = site.clone();
    let (view, rev) = write(&st, move |c| {
        c.update_at(|state| {
            ops::set_traffic_routing(state, &s, &req)?;
            Ok(ops::routing_view(&state.sites[&s]))
        })
    })
    .await?;
    log::info!(
        "admin: traffic routing of {site} set to {:?} (revision {rev})",
        view.distribution
    );
    Ok(Json(Revised {
        revision: rev,
        body: view,
    }))
}

async fn clear_routing(
    State(st): State<AdminState>,
    Path(site): Path<String>,
) -> ApiResult<Json<Revised<RoutingView>>> {
    let s = site.clone();
    let (view, rev) = write(&st, move |c| {
        c.update_at(|state| {
            ops::clear_traffic_routing(state, &s)?;
            Ok(ops::routing_view(&state.sites[&s]))
        })
    })
    .await?;
    log::info!("admin: traffic routing of {site} cleared (revision {rev})");
    Ok(Json(Revised {
        revision: rev,
        body: view,
    }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Reloaded {
    pub reloaded: String,
}

async fn reload(State(st): State<AdminState>) -> ApiResult<Json<Revised<Reloaded>>> {
    let path = st.config_path.clone();
    let (control, swaps) = (st.control.clone(), st.swaps.clone());
    let result =
        tokio::task::spawn_blocking(move || crate::server::reload(&control, &swaps, &path))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Err(e) = result {
        log::error!("admin: reload refused, running state kept: {e:#}");
        let status = match e.downcast_ref::<ControlError>() {
            Some(ControlError::Store(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            // invalid file, or a file that would make the state invalid
            _ => StatusCode::BAD_REQUEST,
        };
        return Err(ApiError::new(
            status,
            format!("reload refused, running state kept: {e:#}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn section(token: Option<&str>, file: Option<PathBuf>) -> AdminSection {
        AdminSection {
            listen: "127.0.0.1:9080".into(),
            token: token.map(String::from),
            token_file: file,
        }
    }

    #[test]
    fn token_sources_in_order() {
        let t =
            |s: &AdminSection, env: Option<&str>| resolve_token(s, env.map(String::from)).unwrap();
        assert_eq!(t(&section(Some("a"), None), Some("env")), Some("a".into()));
        assert_eq!(t(&section(None, None), Some("env")), Some("env".into()));
        assert_eq!(t(&section(None, None), Some("  ")), None);
        assert_eq!(t(&section(None, None), None), None);

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "from-file\n").unwrap();
        assert_eq!(
            t(&section(None, Some(f.clone())), Some("env")),
            Some("from-file".into())
        );
        assert!(resolve_token(&section(Some("a"), Some(f)), None).is_err());
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let e = resolve_token(&section(None, Some(dir.path().join("empty"))), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin.token_file"), "{e}");
        let e = resolve_token(&section(None, Some(dir.path().join("missing"))), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn exposure_needs_a_token_off_loopback() {
        assert!(check_exposure("127.0.0.1:9080", None).is_ok());
        assert!(check_exposure("[::1]:9080", None).is_ok());
        assert!(check_exposure("0.0.0.0:9080", Some("t")).is_ok());
        let e = check_exposure("0.0.0.0:9080", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a loopback address"), "{e}");
        assert!(check_exposure("10.1.2.3:9080", None).is_err());
    }

    #[test]
    fn control_errors_map_to_statuses() {
        let s = |e: ControlError| ApiError::from(e).status;
        assert_eq!(s(ControlError::Invalid(vec![])), StatusCode::BAD_REQUEST);
        assert_eq!(s(ControlError::NotFound("x".into())), StatusCode::NOT_FOUND);
        assert_eq!(s(ControlError::Conflict("x".into())), StatusCode::CONFLICT);
    }
}

// ---- swaps and the activity log --------------------------------------------

/// `POST /api/v1/sites/{site}/slots/{slot}/swap` body.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StartSwap {
    /// Defaults to production.
    #[serde(default)]
    pub target_slot: Option<String>,
    /// `swap` (default), `preview` or `reset`.
    #[serde(default)]
    pub action: Option<Action>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SwapStarted {
    pub operation_id: String,
}

async fn swap(
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
    let operation_id = tokio::task::spawn_blocking(move || swaps.start(request))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)?;
    Ok((StatusCode::ACCEPTED, Json(SwapStarted { operation_id })))
}

async fn operation(
    State(st): State<AdminState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Operation>> {
    st.control
        .operation(&id)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no operation {id:?}")))
}

async fn activity(
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
