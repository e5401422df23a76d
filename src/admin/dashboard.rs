//! The dashboard (docs/guide/dashboard.md): one web page on the admin listener,
//! like the portal's "Deployment slots" blade, and the two small JSON paths
//! only it needs (live rates, the proxy's listeners).
//!
//! The page and its files are embedded in the binary (no build step, no
//! CDN) and served without a token: they hold no data. Everything the page
//! shows comes from the admin API with the token the user types in, so the
//! page can do nothing a `curl` with that token could not.

use super::extract::{ApiResult, Path};
use super::sites::site_of;
use super::AdminState;
use crate::api::{ListenersView, LiveView};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::BTreeMap;
use std::time::Instant;

const INDEX: &str = include_str!("dashboard/index.html");

/// The page's other files: name under `/dashboard/`, content type, bytes.
const FILES: &[(&str, &str, &str)] = &[
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/api.js"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/style.css"),
    ),
];

/// Only the page's own files run, talk to the API, or style it; nothing can
/// frame it (clickjacking the swap button).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; form-action 'none'; \
    frame-ancestors 'none'; base-uri 'none'";

/// A file of the page by name: its content type and text.
pub fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, ctype, body)| (ctype, body))
}

fn serve(ctype: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, ctype),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        // a new binary brings a new page: never run a stale one
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// `GET /`
pub(super) async fn page() -> Response {
    serve("text/html; charset=utf-8", INDEX)
}

/// `GET /dashboard/{file}`
pub(super) async fn file(Path(name): Path<String>) -> Response {
    match asset(&name) {
        Some((ctype, body)) => serve(ctype, body),
        None => (StatusCode::NOT_FOUND, "no such dashboard file\n").into_response(),
    }
}

/// `GET /api/v1/sites/{site}/live`
pub(super) async fn live(
    State(st): State<AdminState>,
    Path(site): Path<String>,
) -> ApiResult<Json<LiveView>> {
    let state = st.control.state();
    let slots: Vec<String> = site_of(&state, &site)?
        .slots_in_order()
        .map(|s| s.name.clone())
        .collect();
    let figures: BTreeMap<String, _> = slots
        .iter()
        .filter_map(|slot| Some((slot.clone(), crate::metrics::slot_figures(&site, slot)?)))
        .collect();
    let mut sampler = st.live.lock().unwrap_or_else(|p| p.into_inner());
    sampler.retain_sites(|s| state.sites.contains_key(s));
    Ok(Json(sampler.observe(
        &site,
        &slots,
        Instant::now(),
        figures,
    )))
}

/// `GET /api/v1/listeners`
pub(super) async fn listeners(State(st): State<AdminState>) -> Json<ListenersView> {
    Json(st.listeners.as_ref().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_files_are_embedded_and_linked() {
        let (ctype, js) = asset("api.js").unwrap();
        assert!(ctype.starts_with("text/javascript"));
        assert!(js.contains("sessionStorage"), "the token is kept per tab");
        assert!(asset("style.css").is_some());
        assert!(asset("../Cargo.toml").is_none());
        assert!(asset("").is_none());
        // every file is loaded by the page or by app.js
        let (_, app) = asset("app.js").unwrap();
        for (name, _, _) in FILES {
            assert!(
                INDEX.contains(&format!("/dashboard/{name}")) || app.contains(&format!("./{name}")),
                "{name}"
            );
        }
        // the CSP forbids inline scripts and styles: the page has none
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="));
    }
}
