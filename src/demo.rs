//! Built-in demo app: a tiny real HTTP server standing in for an app
//! instance, so the shipped `config.toml` shows slots working at once and
//! tests have real upstreams to kill and restart.
//!
//! Every answer is plain text, one `key: value` per line: the slot that
//! routed the request (`X-Slot-Name`), the build this instance runs, its
//! address, the forwarded headers it saw and the settings last POSTed to its
//! settings hook (`/settings`). A `delay_ms=N` query parameter (at most 60 s)
//! makes it answer late, to test time-outs and draining.
//!
//! To show outlier ejection (docs/guide/matches-and-outliers.md): `POST /demo/fail`
//! makes the instance answer 500 to every request but `/demo/…` ones,
//! `POST /demo/fail-health` makes `GET /demo/health` answer 500 as well,
//! and `POST /demo/recover` ends both. `GET /demo/health` answers 200
//! otherwise: point `[health] path` at it to see an instance whose check
//! passes while its real requests fail.
//!
//! To show shadow traffic (README, "Shadow traffic"): `GET /demo/json/<name>`
//! answers the same JSON on every instance (`{"name", "items", "total",
//! "requestId"}`, the last one new for every answer — ignore it with
//! `ignore_json_paths = ["$.requestId"]`). `POST /demo/differ` with a path
//! as body (say `/demo/json/cart`) makes this instance's answers on that
//! path alone say another `total`; `POST /demo/reorder` writes its JSON
//! keys in another order (same values); `POST /demo/slow?ms=N` delays all
//! its answers; `POST /demo/recover` ends all of these.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::get;
use axum::routing::post;
use axum::Router;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
struct App {
    version: Arc<str>,
    instance: Arc<str>,
    settings: Arc<Mutex<BTreeMap<String, String>>>,
    /// `/demo/fail`: answer 500 to the app's requests.
    failing: Arc<AtomicBool>,
    /// `/demo/fail-health`: `/demo/health` answers 500 too.
    health_failing: Arc<AtomicBool>,
    /// `/demo/differ`: the path whose JSON answers differ here.
    differ: Arc<Mutex<Option<String>>>,
    /// `/demo/reorder`: JSON keys in reverse order.
    reorder: Arc<AtomicBool>,
    /// `/demo/slow`: every answer this late, ms.
    slow_ms: Arc<std::sync::atomic::AtomicU64>,
    /// Answers so far, for each answer's own `requestId`.
    answered: Arc<std::sync::atomic::AtomicU64>,
}

/// The demo app reporting build `version` and address `instance`.
pub fn router(version: &str, instance: &str) -> Router {
    let app = App {
        version: version.into(),
        instance: instance.into(),
        settings: Default::default(),
        failing: Default::default(),
        health_failing: Default::default(),
        differ: Default::default(),
        reorder: Default::default(),
        slow_ms: Default::default(),
        answered: Default::default(),
    };
    Router::new()
        .route("/settings", post(set_settings))
        .route("/demo/fail", post(fail))
        .route("/demo/fail-health", post(fail_health))
        .route("/demo/recover", post(recover))
        .route("/demo/health", get(health))
        .route("/demo/differ", post(differ))
        .route("/demo/reorder", post(reorder))
        .route("/demo/slow", post(slow))
        .route("/demo/json/{name}", get(json))
        .fallback(answer)
        .with_state(app)
}

/// Serve the demo app on `listener` until the runtime stops.
pub async fn serve(listener: tokio::net::TcpListener, version: &str) -> std::io::Result<()> {
    let instance = listener.local_addr()?.to_string();
    axum::serve(listener, router(version, &instance)).await
}

fn delay_ms(query: &str) -> Option<u64> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("delay_ms="))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| ms.min(60_000))
}

async fn fail(State(app): State<App>) -> String {
    app.failing.store(true, Ordering::Relaxed);
    format!(
        "{} now answers 500 (POST /demo/recover ends it)\n",
        app.instance
    )
}

async fn fail_health(State(app): State<App>) -> String {
    app.health_failing.store(true, Ordering::Relaxed);
    format!("{} now fails /demo/health too\n", app.instance)
}

async fn recover(State(app): State<App>) -> String {
    app.failing.store(false, Ordering::Relaxed);
    app.health_failing.store(false, Ordering::Relaxed);
    app.reorder.store(false, Ordering::Relaxed);
    app.slow_ms.store(0, Ordering::Relaxed);
    *app.differ.lock().unwrap_or_else(|p| p.into_inner()) = None;
    format!("{} answers normally again\n", app.instance)
}

async fn differ(State(app): State<App>, body: Bytes) -> String {
    let path = String::from_utf8_lossy(&body).trim().to_string();
    let msg = format!(
        "{} now answers another total on {path} (POST /demo/recover ends it)\n",
        app.instance
    );
    *app.differ.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
    msg
}

async fn reorder(State(app): State<App>) -> String {
    app.reorder.store(true, Ordering::Relaxed);
    format!(
        "{} now writes its JSON keys in reverse order\n",
        app.instance
    )
}

async fn slow(State(app): State<App>, uri: Uri) -> String {
    let ms = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("ms="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1000)
        .min(60_000);
    app.slow_ms.store(ms, Ordering::Relaxed);
    format!("{} now answers {ms} ms late\n", app.instance)
}

/// The same JSON on every instance, but for `requestId` (and what
/// `/demo/differ` and `/demo/reorder` change).
async fn json(
    State(app): State<App>,
    axum::extract::Path(name): axum::extract::Path<String>,
    uri: Uri,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let late = app.slow_ms.load(Ordering::Relaxed);
    if late > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(late)).await;
    }
    let differs = app
        .differ
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_deref()
        == Some(uri.path());
    let total = if differs { 7 } else { 6 };
    let n = app.answered.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}-{n}", app.instance);
    let name = serde_json::Value::String(name).to_string();
    let id = serde_json::Value::String(id).to_string();
    let body = if app.reorder.load(Ordering::Relaxed) {
        format!("{{\"requestId\":{id},\"total\":{total},\"items\":[1,2,3],\"name\":{name}}}\n")
    } else {
        format!("{{\"name\":{name},\"items\":[1,2,3],\"total\":{total},\"requestId\":{id}}}\n")
    };
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}

async fn health(State(app): State<App>) -> (StatusCode, &'static str) {
    if app.health_failing.load(Ordering::Relaxed) {
        (StatusCode::INTERNAL_SERVER_ERROR, "failing\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn set_settings(State(app): State<App>, body: Bytes) -> (StatusCode, String) {
    match serde_json::from_slice::<BTreeMap<String, String>>(&body) {
        Ok(s) => {
            *app.settings.lock().unwrap_or_else(|p| p.into_inner()) = s;
            (StatusCode::OK, "settings applied\n".into())
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("settings must be a JSON object of strings: {e}\n"),
        ),
    }
}

async fn answer(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let status = if app.failing.load(Ordering::Relaxed) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    if let Some(ms) = delay_ms(uri.query().unwrap_or("")) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let late = app.slow_ms.load(Ordering::Relaxed);
    if late > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(late)).await;
    }
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let settings = serde_json::to_string(&*app.settings.lock().unwrap_or_else(|p| p.into_inner()))
        .unwrap_or_default();
    let text = format!(
        "slot: {}\nversion: {}\ninstance: {}\nmethod: {method}\npath: {uri}\nbody-bytes: {}\nhost: {}\nx-forwarded-for: {}\nx-forwarded-proto: {}\nx-forwarded-host: {}\nsettings: {settings}\n",
        h("x-slot-name"),
        app.version,
        app.instance,
        body.len(),
        h("host"),
        h("x-forwarded-for"),
        h("x-forwarded-proto"),
        h("x-forwarded-host"),
    );
    (status, text)
}
