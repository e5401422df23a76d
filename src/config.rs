//! `config.toml`: its schema, defaults and validation.
//!
//! Parsing refuses unknown keys (a typo must not pass silently) and every
//! error names the file, the key and the reason. The `[[sites]]` part becomes
//! a `model::State` (the seed of the control plane); the rest configures the
//! process (listeners, cookie names, health checks, demo apps).

use crate::model::{self, Problem, Site, Slot, State};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A config that cannot be used, with everything found wrong in it.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config {}:", self.file.display())?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub state: StateSection,
    #[serde(default)]
    pub routing: RoutingSection,
    #[serde(default)]
    pub health: HealthSection,
    #[serde(default)]
    pub demo: DemoSection,
    #[serde(default)]
    pub access_log: AccessLogSection,
    #[serde(default)]
    pub sites: Vec<SiteConfig>,
}

/// Longest drain window: an old process lingering longer than this holds
/// memory and file descriptors for clients that will not come back.
pub const MAX_DRAIN_SECS: u64 = 600;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub listen: Vec<String>,
    /// HTTPS listeners, terminated here with `tls_cert_path`/`tls_key_path`.
    pub tls_listen: Vec<String>,
    /// PEM certificate chain for `tls_listen`.
    pub tls_cert_path: Option<PathBuf>,
    /// PEM private key for `tls_listen`.
    pub tls_key_path: Option<PathBuf>,
    pub threads: usize,
    /// SIGTERM: how long to keep serving in-flight requests before exit.
    pub grace_period_secs: u64,
    pub graceful_shutdown_timeout_secs: u64,
    /// SIGQUIT/SIGTERM: how long kept-alive client connections stay open,
    /// every response on them saying `Connection: close`, before the idle
    /// ones are closed (see `drain`).
    pub drain_secs: u64,
    /// Unix socket the listening sockets pass over on `serve --upgrade`.
    pub upgrade_sock: String,
    pub pid_file: String,
    /// Connect timeout to an app instance before its next instance is tried.
    pub connect_timeout_ms: u64,
    /// Longest wait for an instance to send (more of) its response.
    pub upstream_read_timeout_secs: u64,
    /// Longest wait for an instance to accept (more of) the request.
    pub upstream_write_timeout_secs: u64,
    /// Pooled idle connections to instances are closed after this long. Keep
    /// it below the apps' own keep-alive time-out (Node's is 5 s): a request
    /// that is not idempotent cannot be retried on a connection the app
    /// closed under it.
    pub upstream_idle_timeout_secs: u64,
    /// Limits (enforced in `limits`): an idle client keep-alive
    /// connection is closed after this long.
    pub keepalive_timeout_secs: u64,
    /// The whole request header must arrive within this long (else 408).
    pub header_timeout_secs: u64,
    /// Longest pause while a client sends its body (else 408).
    pub body_timeout_secs: u64,
    /// The mean rate a request body must keep after a 5 s grace (else
    /// 408); 0: none (`request_body::Pace`).
    pub body_min_bytes_per_sec: u64,
    /// Longest wait for a client to take more of its answer; a client that
    /// stops reading is let go, and so is its instance connection.
    pub send_timeout_secs: u64,
    /// A larger response header from an app is refused with 502.
    pub max_response_header_bytes: usize,
    /// Pass request fields whose names hold `_` to the apps (nginx's
    /// `underscores_in_headers`); off: they are dropped.
    pub underscores_in_headers: bool,
    /// Larger request headers get 431.
    pub max_header_bytes: usize,
    /// Longer request targets get 414.
    pub max_uri_bytes: usize,
    /// Open client connections per process; absent: half the open-file limit.
    pub max_connections: Option<usize>,
    /// Open connections per client address (IPv6: per /64); 0 = no limit;
    /// absent: a quarter of `max_connections`, at least 64.
    pub max_connections_per_ip: Option<usize>,
    /// Plain listeners accept HTTP/2 with prior knowledge (h2c) beside
    /// HTTP/1.x; TLS listeners offer `h2` by ALPN whatever this says.
    pub h2c: bool,
    /// Most concurrent streams one HTTP/2 client connection may open.
    pub h2_max_concurrent_streams: u32,
    /// No longer does anything (every request takes the one engine):
    /// `false` is accepted with a warning, so an older config still starts.
    pub lean_http1: bool,
    /// No longer does anything, as `lean_http1`.
    pub lean_http2: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: vec!["0.0.0.0:8080".into()],
            tls_listen: Vec::new(),
            tls_cert_path: None,
            tls_key_path: None,
            threads: 2,
            grace_period_secs: 5,
            graceful_shutdown_timeout_secs: 5,
            drain_secs: 10,
            upgrade_sock: "/tmp/slotproxy_upgrade.sock".into(),
            pid_file: "/tmp/slotproxy.pid".into(),
            connect_timeout_ms: 2000,
            upstream_read_timeout_secs: 60,
            upstream_write_timeout_secs: 60,
            upstream_idle_timeout_secs: 4,
            keepalive_timeout_secs: 75,
            header_timeout_secs: 60,
            body_timeout_secs: 60,
            body_min_bytes_per_sec: 240,
            send_timeout_secs: 60,
            max_response_header_bytes: crate::h1::DEFAULT_MAX_RESPONSE_HEAD,
            underscores_in_headers: false,
            max_header_bytes: 32768,
            max_uri_bytes: 8192,
            max_connections: None,
            max_connections_per_ip: None,
            h2c: true,
            h2_max_concurrent_streams: 128,
            lean_http1: true,
            lean_http2: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub listen: String,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: "127.0.0.1:9080".into(),
            token: None,
            token_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    pub listen: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            listen: "127.0.0.1:9091".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSection {
    /// The file backend's state; with etcd, this node's local snapshot.
    pub dir: PathBuf,
    /// Where the state lives: this node's `dir`, or etcd shared by a fleet
    /// (SPEC §9).
    pub backend: StateBackend,
    pub etcd_endpoints: Vec<String>,
    pub etcd_prefix: String,
    pub etcd_username: Option<String>,
    pub etcd_password: Option<String>,
    pub etcd_ca_path: Option<PathBuf>,
    pub etcd_cert_path: Option<PathBuf>,
    pub etcd_key_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    File,
    Etcd,
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection {
            dir: PathBuf::from("./state"),
            backend: StateBackend::File,
            etcd_endpoints: Vec::new(),
            etcd_prefix: "/slotproxy".into(),
            etcd_username: None,
            etcd_password: None,
            etcd_ca_path: None,
            etcd_cert_path: None,
            etcd_key_path: None,
        }
    }
}

impl StateSection {
    /// What is wrong with the `[state]` keys, each named by its key path.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key: &str, reason: String| {
            out.push(Problem {
                key: format!("state.{key}"),
                reason,
            })
        };
        let etcd_keys_set = !self.etcd_endpoints.is_empty()
            || self.etcd_username.is_some()
            || self.etcd_password.is_some()
            || self.etcd_ca_path.is_some()
            || self.etcd_cert_path.is_some()
            || self.etcd_key_path.is_some();
        if self.backend == StateBackend::File {
            if etcd_keys_set {
                bad(
                    "backend",
                    "etcd_* keys are set but backend is \"file\" (write backend = \"etcd\" to use them)".into(),
                );
            }
            return out;
        }
        if self.etcd_endpoints.is_empty() {
            bad(
                "etcd_endpoints",
                "backend is \"etcd\", so at least one endpoint is needed (e.g. [\"http://127.0.0.1:2379\"])".into(),
            );
        }
        let tls = self.etcd_ca_path.is_some();
        for (i, e) in self.etcd_endpoints.iter().enumerate() {
            let key = format!("etcd_endpoints[{i}]");
            match e.split_once("://") {
                Some(("http", rest)) | Some(("https", rest)) if !rest.is_empty() => {
                    if e.starts_with("http://") && tls {
                        bad(&key, format!("{e:?} is plain http, but etcd_ca_path asks for TLS (write https://)"));
                    }
                }
                _ => bad(
                    &key,
                    format!("{e:?} is not an etcd URL (write e.g. http://127.0.0.1:2379)"),
                ),
            }
        }
        if !self.etcd_prefix.starts_with('/')
            || self.etcd_prefix.len() < 2
            || self.etcd_prefix.ends_with('/')
        {
            bad(
                "etcd_prefix",
                format!(
                    "{:?} must start with / and not end with / (e.g. \"/slotproxy\")",
                    self.etcd_prefix
                ),
            );
        }
        if self.etcd_username.is_some() != self.etcd_password.is_some() {
            bad(
                "etcd_username",
                "etcd_username and etcd_password go together".into(),
            );
        }
        if self.etcd_cert_path.is_some() != self.etcd_key_path.is_some() {
            bad(
                "etcd_cert_path",
                "etcd_cert_path and etcd_key_path (a client certificate) go together".into(),
            );
        }
        if (self.etcd_cert_path.is_some()
            || self
                .etcd_endpoints
                .iter()
                .any(|e| e.starts_with("https://")))
            && !tls
        {
            bad(
                "etcd_ca_path",
                "TLS to etcd (https endpoints or a client certificate) needs the CA that signed etcd's certificate".into(),
            );
        }
        for (key, path) in [
            ("etcd_ca_path", &self.etcd_ca_path),
            ("etcd_cert_path", &self.etcd_cert_path),
            ("etcd_key_path", &self.etcd_key_path),
        ] {
            if let Some(p) = path {
                if let Err(e) = std::fs::read(p) {
                    bad(key, format!("cannot read {}: {e}", p.display()));
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSection {
    pub cookie_name: String,
    pub query_param: String,
    pub cookie_max_age_secs: u64,
    /// What the pin cookie holds: the slot name (Azure's way) or a sticky
    /// bucket (`routing::buckets`).
    pub assignment: Assignment,
}

/// `[routing] assignment`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Assignment {
    /// The cookie holds the slot name (`x-ms-routing-name=staging`).
    #[default]
    Slot,
    /// The cookie holds a bucket `b.<0..9999>`; slots own bucket ranges.
    Bucket,
}

impl Default for RoutingSection {
    fn default() -> Self {
        RoutingSection {
            cookie_name: "x-ms-routing-name".into(),
            query_param: "x-ms-routing-name".into(),
            cookie_max_age_secs: 3600,
            assignment: Assignment::Slot,
        }
    }
}

/// Active health checks of every instance.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub path: String,
    /// Consecutive failures before an instance is marked down.
    pub unhealthy_threshold: u32,
    /// Consecutive successes before a down instance is marked up.
    pub healthy_threshold: u32,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            interval_ms: 2000,
            timeout_ms: 1000,
            path: "/".into(),
            unhealthy_threshold: 2,
            healthy_threshold: 1,
        }
    }
}

/// One line per request (see `access_log`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogSection {
    pub enabled: bool,
    pub format: AccessLogFormat,
    /// A file (appended to) or "-" for stdout.
    pub path: String,
}

impl Default for AccessLogSection {
    fn default() -> Self {
        AccessLogSection {
            enabled: false,
            format: AccessLogFormat::Text,
            path: "-".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    Text,
    Json,
}

/// Built-in demo app servers, so the shipped config shows slots at once.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoSection {
    pub apps: Vec<DemoApp>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoApp {
    pub listen: String,
    /// The build this demo app reports it runs.
    pub version: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub name: String,
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub slot_domain: Option<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// `header:<name>` or `cookie:<name>`: bucket by this user key.
    #[serde(default)]
    pub assignment_key: Option<String>,
    #[serde(default)]
    pub slots: Vec<SlotConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotConfig {
    pub name: String,
    #[serde(default)]
    pub hostnames: Vec<String>,
    pub traffic_percent: Option<f64>,
    pub auto_swap_target: Option<String>,
    #[serde(default)]
    pub ip_allow: Vec<String>,
    pub build_version: Option<String>,
    pub target_build_version: Option<String>,
    pub instances: Option<Vec<String>>,
    pub warmup_path: Option<String>,
    pub warmup_statuses: Option<Vec<u16>>,
    pub warmup_timeout_secs: Option<u64>,
    pub warmup_retries: Option<u32>,
    pub settings_hook_path: Option<String>,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    #[serde(default)]
    pub sticky_settings: BTreeMap<String, String>,
    pub instances_protocol: Option<crate::model::InstancesProtocol>,
    pub instances_tls_ca: Option<String>,
    pub health_check: Option<crate::model::HealthCheck>,
    pub upstream_read_timeout_secs: Option<u64>,
    /// `[[sites.slots.match]]`: requests that go to this slot (SPEC §16).
    #[serde(default, rename = "match")]
    pub matches: Vec<crate::policy::MatchEntry>,
    /// `[sites.slots.outlier]`: passive outlier ejection (SPEC §16).
    pub outlier: Option<crate::policy::Outlier>,
    /// `[sites.slots.shadow]`: copies of production's requests (SPEC §15).
    pub shadow: Option<crate::shadow::ShadowSpec>,
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<(Config, State), ConfigError> {
        let fail = |key: &str, reason: String| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem {
                key: key.into(),
                reason,
            }],
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail("(file)", format!("cannot read: {e}")))?;
        Config::parse(&text, path)
    }

    /// Parse and validate config text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<(Config, State), ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![toml_problem(&e, text)],
        })?;
        let mut problems = config.validate_process();
        let state = config.to_state(&mut problems);
        problems.extend(state.validate());
        problems.extend(state.unrunnable_targets());
        problems.extend(state.unreadable_files());
        if problems.is_empty() {
            Ok((config, state))
        } else {
            Err(ConfigError {
                file: path.to_path_buf(),
                problems,
            })
        }
    }

    fn validate_process(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut addr = |key: String, v: &str| {
            if v.parse::<SocketAddr>().is_err() {
                out.push(Problem {
                    key,
                    reason: format!("{v:?} is not a socket address (write e.g. 0.0.0.0:8080)"),
                });
            }
        };
        if self.server.listen.is_empty() && self.server.tls_listen.is_empty() {
            addr("server.listen".into(), "");
        }
        for (i, l) in self.server.listen.iter().enumerate() {
            addr(format!("server.listen[{i}]"), l);
        }
        for (i, l) in self.server.tls_listen.iter().enumerate() {
            addr(format!("server.tls_listen[{i}]"), l);
        }
        addr("admin.listen".into(), &self.admin.listen);
        addr("metrics.listen".into(), &self.metrics.listen);
        for (i, app) in self.demo.apps.iter().enumerate() {
            addr(format!("demo.apps[{i}].listen"), &app.listen);
        }
        let mut bad = |key: &str, reason: &str| {
            out.push(Problem {
                key: key.into(),
                reason: reason.into(),
            })
        };
        if self.server.threads == 0 {
            bad("server.threads", "must be at least 1");
        }
        if !self.server.tls_listen.is_empty() {
            for (key, path) in [
                ("server.tls_cert_path", &self.server.tls_cert_path),
                ("server.tls_key_path", &self.server.tls_key_path),
            ] {
                match path {
                    None => bad(key, "tls_listen is set, so this PEM file is needed"),
                    Some(p) if std::fs::File::open(p).is_err() => {
                        bad(key, &format!("cannot read {}", p.display()))
                    }
                    Some(_) => {}
                }
            }
        }
        for (key, v) in [
            ("server.connect_timeout_ms", self.server.connect_timeout_ms),
            (
                "server.upstream_read_timeout_secs",
                self.server.upstream_read_timeout_secs,
            ),
            (
                "server.upstream_write_timeout_secs",
                self.server.upstream_write_timeout_secs,
            ),
            (
                "server.upstream_idle_timeout_secs",
                self.server.upstream_idle_timeout_secs,
            ),
            (
                "server.keepalive_timeout_secs",
                self.server.keepalive_timeout_secs,
            ),
            (
                "server.header_timeout_secs",
                self.server.header_timeout_secs,
            ),
            ("server.body_timeout_secs", self.server.body_timeout_secs),
            ("server.send_timeout_secs", self.server.send_timeout_secs),
            (
                "server.h2_max_concurrent_streams",
                u64::from(self.server.h2_max_concurrent_streams),
            ),
        ] {
            if v == 0 {
                bad(key, "must be at least 1");
            }
        }
        if self.server.drain_secs > MAX_DRAIN_SECS {
            bad(
                "server.drain_secs",
                &format!("{} is more than {MAX_DRAIN_SECS}", self.server.drain_secs),
            );
        }
        // pingora itself refuses headers over 1 MB (with a bare 400)
        const PINGORA_MAX_HEADER: usize = 1_048_575;
        let s = &self.server;
        if !(1024..=PINGORA_MAX_HEADER).contains(&s.max_header_bytes) {
            bad(
                "server.max_header_bytes",
                &format!(
                    "{} is out of range 1024-{PINGORA_MAX_HEADER}",
                    s.max_header_bytes
                ),
            );
        }
        if !(1024..=PINGORA_MAX_HEADER).contains(&s.max_response_header_bytes) {
            bad(
                "server.max_response_header_bytes",
                &format!(
                    "{} is out of range 1024-{PINGORA_MAX_HEADER}",
                    s.max_response_header_bytes
                ),
            );
        }
        if s.max_uri_bytes < 16 || s.max_uri_bytes > s.max_header_bytes {
            bad(
                "server.max_uri_bytes",
                &format!(
                    "{} is out of range 16-{} (server.max_header_bytes: the request line is part of the header)",
                    s.max_uri_bytes, s.max_header_bytes
                ),
            );
        }
        if s.max_connections == Some(0) {
            bad(
                "server.max_connections",
                "must be at least 1 (leave it out for half the open-file limit)",
            );
        }
        if self.health.interval_ms == 0 {
            bad("health.interval_ms", "must be at least 1");
        }
        if self.health.timeout_ms == 0 {
            bad("health.timeout_ms", "must be at least 1");
        }
        if !self.health.path.starts_with('/') {
            bad("health.path", "must start with /");
        }
        if self.health.unhealthy_threshold == 0 || self.health.healthy_threshold == 0 {
            bad("health", "thresholds must be at least 1");
        }
        if self.access_log.enabled && self.access_log.path.is_empty() {
            bad("access_log.path", "must be a file or \"-\" for stdout");
        }
        let token_ok = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic());
        if !token_ok(&self.routing.cookie_name)
            || self.routing.cookie_name.contains([';', '=', ',', '"'])
        {
            bad(
                "routing.cookie_name",
                "must be a non-empty cookie name without ; = , or quotes",
            );
        }
        if !token_ok(&self.routing.query_param) || self.routing.query_param.contains(['&', '=']) {
            bad(
                "routing.query_param",
                "must be a non-empty parameter name without & or =",
            );
        }
        if let Some(t) = &self.admin.token {
            if t.trim().is_empty() {
                bad("admin.token", "must not be empty (leave it out instead)");
            }
        }
        out.extend(self.state.problems());
        out
    }

    /// The `[[sites]]` part as a control-plane state. Problems that the
    /// schema cannot express (CIDRs, case of host names, keys that need a
    /// deployment) are added to `problems`.
    fn to_state(&self, problems: &mut Vec<Problem>) -> State {
        let mut state = State::default();
        for (si, sc) in self.sites.iter().enumerate() {
            let sk = format!("sites[{}]", key_name(&sc.name, si));
            let mut trusted = Vec::new();
            for (i, c) in sc.trusted_proxies.iter().enumerate() {
                match model::parse_cidr(c) {
                    Ok(n) => trusted.push(n),
                    Err(e) => problems.push(Problem {
                        key: format!("{sk}.trusted_proxies[{i}]"),
                        reason: e,
                    }),
                }
            }
            let mut site = Site {
                name: sc.name.clone(),
                hostnames: sc
                    .hostnames
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                slot_domain: sc.slot_domain.as_ref().map(|d| d.to_ascii_lowercase()),
                trusted_proxies: trusted,
                assignment_key: sc.assignment_key.clone(),
                slots: BTreeMap::new(),
            };
            for (li, slc) in sc.slots.iter().enumerate() {
                let k = format!("{sk}.slots[{}]", key_name(&slc.name, li));
                let slot = slot_from_config(slc, &k, problems);
                if site.slots.insert(slot.name.clone(), slot).is_some() {
                    problems.push(Problem {
                        key: format!("{k}.name"),
                        reason: format!(
                            "slot {:?} is listed twice in site {:?}",
                            slc.name, sc.name
                        ),
                    });
                }
            }
            if state.sites.contains_key(&site.name) {
                problems.push(Problem {
                    key: format!("{sk}.name"),
                    reason: format!("site {:?} is listed twice", sc.name),
                });
            }
            state.sites.insert(site.name.clone(), site);
        }
        state
    }
}

/// Keys name sites and slots as `State::validate` does (`sites[shop]`),
/// falling back to the position when the name itself is unusable.
fn key_name(name: &str, index: usize) -> String {
    if model::check_name(name).is_ok() {
        name.to_string()
    } else {
        index.to_string()
    }
}

fn slot_from_config(c: &SlotConfig, key: &str, problems: &mut Vec<Problem>) -> Slot {
    let mut ip_allow = Vec::new();
    for (i, cidr) in c.ip_allow.iter().enumerate() {
        match model::parse_cidr(cidr) {
            Ok(n) => ip_allow.push(n),
            Err(e) => problems.push(Problem {
                key: format!("{key}.ip_allow[{i}]"),
                reason: e,
            }),
        }
    }
    let deployment = match &c.instances {
        // the one flat deployment shape, so the config file and the API
        // fill in the same defaults
        Some(instances) => Some(
            crate::api::Deploy {
                build_version: c
                    .build_version
                    .clone()
                    .unwrap_or_else(|| "unversioned".into()),
                instances: instances.clone(),
                warmup_path: c.warmup_path.clone(),
                warmup_statuses: c.warmup_statuses.clone(),
                warmup_timeout_secs: c.warmup_timeout_secs,
                warmup_retries: c.warmup_retries,
                settings_hook_path: c.settings_hook_path.clone(),
                instances_protocol: c.instances_protocol,
                instances_tls_ca: c.instances_tls_ca.clone(),
                health_check: c.health_check,
                upstream_read_timeout_secs: c.upstream_read_timeout_secs,
            }
            .to_deployment(),
        ),
        None => {
            let deployment_keys = [
                ("build_version", c.build_version.is_some()),
                ("warmup_path", c.warmup_path.is_some()),
                ("warmup_statuses", c.warmup_statuses.is_some()),
                ("warmup_timeout_secs", c.warmup_timeout_secs.is_some()),
                ("warmup_retries", c.warmup_retries.is_some()),
                ("settings_hook_path", c.settings_hook_path.is_some()),
                ("instances_protocol", c.instances_protocol.is_some()),
                ("instances_tls_ca", c.instances_tls_ca.is_some()),
                ("health_check", c.health_check.is_some()),
                (
                    "upstream_read_timeout_secs",
                    c.upstream_read_timeout_secs.is_some(),
                ),
            ];
            for (name, set) in deployment_keys {
                if set {
                    problems.push(Problem {
                        key: format!("{key}.{name}"),
                        reason: format!(
                            "slot {:?} has no instances, so it has no deployment to apply this to; add instances or remove it",
                            c.name
                        ),
                    });
                }
            }
            None
        }
    };
    Slot {
        name: c.name.clone(),
        hostnames: c.hostnames.iter().map(|h| h.to_ascii_lowercase()).collect(),
        traffic_percent: c.traffic_percent,
        auto_swap_target: c.auto_swap_target.clone(),
        ip_allow,
        target_build_version: c.target_build_version.clone(),
        settings: c.settings.clone(),
        sticky_settings: c.sticky_settings.clone(),
        deployment,
        matches: c.matches.clone(),
        outlier: c.outlier,
        shadow: c.shadow.clone(),
    }
}

/// Turn a TOML/serde error into a problem naming the line and the key.
fn toml_problem(e: &toml::de::Error, text: &str) -> Problem {
    let mut column = None;
    let key = match e.span() {
        Some(span) => {
            // a span off a character boundary must not panic here
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            column = Some(before.rsplit('\n').next().unwrap_or("").chars().count() + 1);
            let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line} ({snippet})")
        }
        None => "(document)".into(),
    };
    // the TOML parser leaves some syntax errors without a message (e.g. a
    // stray character at the start of a line): say at least where
    let reason = match e.message().trim() {
        "" => match column {
            Some(c) => format!("not valid TOML at column {c}"),
            None => "not valid TOML".to_string(),
        },
        m => m.to_string(),
    };
    Problem { key, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = ["127.0.0.1:0"]
[[sites]]
name = "shop"
hostnames = ["Shop.Example.com"]
slot_domain = "slots.local"
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["127.0.0.1:3001"]
target_build_version = "v1"
[[sites.slots]]
name = "staging"
traffic_percent = 10
ip_allow = ["10.0.0.0/8", "127.0.0.1"]
"#;

    fn parse(t: &str) -> Result<(Config, State), ConfigError> {
        Config::parse(t, Path::new("test.toml"))
    }

    #[test]
    fn good_config_parses() {
        let (_, state) = parse(GOOD).unwrap();
        let site = &state.sites["shop"];
        assert_eq!(site.hostnames, vec!["shop.example.com"]);
        assert_eq!(site.slots["staging"].traffic_percent, Some(10.0));
        assert!(site.slots["staging"].deployment.is_none());
        assert_eq!(site.slots["staging"].ip_allow.len(), 2);
    }

    fn error_of(t: &str) -> String {
        parse(t).unwrap_err().to_string()
    }

    #[test]
    fn unknown_key_is_an_error_with_line() {
        let e = error_of(&GOOD.replace("traffic_percent = 10", "trafic_percent = 10"));
        assert!(e.contains("test.toml"), "{e}");
        assert!(e.contains("unknown field `trafic_percent`"), "{e}");
        assert!(e.contains("line "), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let e = error_of(&GOOD.replace("traffic_percent = 10", "traffic_percent = 150"));
        assert!(
            e.contains("sites[shop].slots[staging].traffic_percent: 150 is out of range"),
            "{e}"
        );
        let e = error_of(&GOOD.replace("10.0.0.0/8", "10.0.0.0/40"));
        assert!(e.contains("sites[shop].slots[staging].ip_allow[0]"), "{e}");
        let e = error_of(&GOOD.replace("127.0.0.1:0", "localhost"));
        assert!(e.contains("server.listen[0]"), "{e}");
        let e = error_of(&GOOD.replace(
            "target_build_version = \"v1\"",
            "target_build_version = \"v7\"",
        ));
        assert!(
            e.contains("no slot of site \"shop\" runs build \"v7\""),
            "{e}"
        );
    }

    #[test]
    fn drain_secs_defaults_to_ten_and_is_bounded() {
        let (config, _) = parse(GOOD).unwrap();
        assert_eq!(config.server.drain_secs, 10);
        let with = |v: &str| GOOD.replace("[server]\n", &format!("[server]\ndrain_secs = {v}\n"));
        assert_eq!(parse(&with("0")).unwrap().0.server.drain_secs, 0);
        let e = error_of(&with("601"));
        assert!(e.contains("server.drain_secs: 601 is more than 600"), "{e}");
    }

    #[test]
    fn tls_listeners_need_readable_pem_files() {
        let e = error_of(&GOOD.replace(
            "listen = [\"127.0.0.1:0\"]",
            "listen = []\ntls_listen = [\"127.0.0.1:8443\"]\ntls_key_path = \"/nonexistent/key.pem\"",
        ));
        assert!(e.contains("server.tls_cert_path: tls_listen is set"), "{e}");
        assert!(
            e.contains("server.tls_key_path: cannot read /nonexistent/key.pem"),
            "{e}"
        );
    }

    #[test]
    fn limits_have_nginx_like_defaults_and_are_checked() {
        let (cfg, _) = parse(GOOD).unwrap();
        assert_eq!(cfg.server.keepalive_timeout_secs, 75);
        assert_eq!(cfg.server.max_header_bytes, 32768);
        assert_eq!(cfg.server.max_uri_bytes, 8192);
        assert_eq!(cfg.server.max_connections, None);
        assert_eq!(cfg.server.max_connections_per_ip, None);
        assert_eq!(cfg.server.send_timeout_secs, 60);
        let with = |extra: &str| {
            error_of(&GOOD.replace(
                "listen = [\"127.0.0.1:0\"]",
                &format!("listen = [\"127.0.0.1:0\"]\n{extra}"),
            ))
        };
        let e = with("h2_max_concurrent_streams = 0");
        assert!(
            e.contains("server.h2_max_concurrent_streams: must be at least 1"),
            "{e}"
        );
        let e = with("keepalive_timeout_secs = 0");
        assert!(
            e.contains("server.keepalive_timeout_secs: must be at least 1"),
            "{e}"
        );
        let e = with("max_header_bytes = 100");
        assert!(
            e.contains("server.max_header_bytes: 100 is out of range"),
            "{e}"
        );
        let e = with("max_header_bytes = 4096\nmax_uri_bytes = 8192");
        assert!(
            e.contains("server.max_uri_bytes: 8192 is out of range 16-4096"),
            "{e}"
        );
        let e = with("max_connections = 0");
        assert!(
            e.contains("server.max_connections: must be at least 1"),
            "{e}"
        );
        let (cfg, _) = parse(&GOOD.replace(
            "listen = [\"127.0.0.1:0\"]",
            "listen = [\"127.0.0.1:0\"]\nmax_connections = 5\nmax_connections_per_ip = 2",
        ))
        .unwrap();
        assert_eq!(cfg.server.max_connections, Some(5));
        assert_eq!(cfg.server.max_connections_per_ip, Some(2));
    }

    #[test]
    fn deployment_keys_without_instances_are_errors() {
        let e = error_of(&format!("{GOOD}warmup_path = \"/ready\"\n"));
        assert!(e.contains("sites[shop].slots[staging].warmup_path"), "{e}");
    }

    #[test]
    fn slot_protocol_keys_are_checked() {
        let slot = |extra: &str| format!("{GOOD}instances = [\"127.0.0.1:9\"]\n{extra}\n");
        let e = error_of(&slot("health_check = \"grpc\""));
        assert!(
            e.contains("health_check") && e.contains("instances_protocol = \"h2c\""),
            "{e}"
        );
        let e = error_of(&slot("upstream_read_timeout_secs = 0"));
        assert!(
            e.contains("upstream_read_timeout_secs: must be at least 1"),
            "{e}"
        );
        let e = error_of(&slot("instances_protocol = \"h3\""));
        assert!(
            e.contains("h3") && e.contains("http1") && e.contains("h2c") && e.contains("`h2`"),
            "{e}"
        );
        // a CA file only over TLS, and one that holds certificates
        let e = error_of(&slot(
            "instances_protocol = \"h2c\"\ninstances_tls_ca = \"ca.pem\"",
        ));
        assert!(e.contains("instances_tls_ca: is only used over TLS"), "{e}");
        let e = error_of(&slot(
            "instances_protocol = \"h2\"\ninstances_tls_ca = \"/nonexistent/ca.pem\"",
        ));
        assert!(
            e.contains("sites[shop].slots[staging].instances_tls_ca: cannot read CA file \"/nonexistent/ca.pem\""),
            "{e}"
        );
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls-cert.pem");
        let (_, state) = parse(&slot(&format!(
            "instances_protocol = \"h2\"\nhealth_check = \"grpc\"\ninstances_tls_ca = \"{ca}\""
        )))
        .unwrap();
        let d = state.sites["shop"].slots["staging"]
            .deployment
            .as_ref()
            .unwrap();
        assert_eq!(d.instances_protocol, crate::model::InstancesProtocol::H2);
        assert_eq!(d.instances_tls_ca.as_deref(), Some(ca));
        let (cfg, state) = parse(&slot(
            "instances_protocol = \"h2c\"\nhealth_check = \"grpc\"\nupstream_read_timeout_secs = 3600",
        ))
        .unwrap();
        let _ = cfg;
        let d = state.sites["shop"].slots["staging"]
            .deployment
            .clone()
            .unwrap();
        assert_eq!(d.instances_protocol, crate::model::InstancesProtocol::H2c);
        assert_eq!(d.health_check, crate::model::HealthCheck::Grpc);
        assert_eq!(d.upstream_read_timeout_secs, Some(3600));
    }

    fn with_state(state: &str) -> String {
        GOOD.replacen("[[sites]]", &format!("[state]\n{state}\n[[sites]]"), 1)
    }

    #[test]
    fn file_backend_is_the_default_and_etcd_keys_need_etcd() {
        let (c, _) = parse(GOOD).unwrap();
        assert_eq!(c.state.backend, StateBackend::File);
        assert_eq!(c.state.etcd_prefix, "/slotproxy");
        let e = error_of(&with_state("etcd_endpoints = [\"http://127.0.0.1:2379\"]"));
        assert!(e.contains("state.backend: etcd_* keys are set"), "{e}");
        let e = error_of(&with_state("backend = \"zookeeper\""));
        assert!(e.contains("unknown variant `zookeeper`"), "{e}");
        let e = error_of(&with_state("etcd_endpoint = []"));
        assert!(e.contains("unknown field `etcd_endpoint`"), "{e}");
    }

    #[test]
    fn etcd_backend_keys_are_checked_each_by_name() {
        let ok = with_state(
            "backend = \"etcd\"\netcd_endpoints = [\"http://127.0.0.1:2379\", \"http://10.0.0.2:2379\"]\netcd_prefix = \"/edge\"",
        );
        let (c, _) = parse(&ok).unwrap();
        assert_eq!(c.state.backend, StateBackend::Etcd);
        assert_eq!(c.state.etcd_endpoints.len(), 2);
        let e = error_of(&with_state("backend = \"etcd\""));
        assert!(
            e.contains("state.etcd_endpoints: backend is \"etcd\""),
            "{e}"
        );
        let e = error_of(&with_state(
            "backend = \"etcd\"\netcd_endpoints = [\"127.0.0.1:2379\"]\netcd_prefix = \"/x/\"\netcd_username = \"u\"",
        ));
        assert!(
            e.contains("state.etcd_endpoints[0]: \"127.0.0.1:2379\" is not an etcd URL"),
            "{e}"
        );
        assert!(
            e.contains("state.etcd_prefix: \"/x/\" must start with /"),
            "{e}"
        );
        assert!(
            e.contains("state.etcd_username: etcd_username and etcd_password go together"),
            "{e}"
        );
        let e = error_of(&with_state(
            "backend = \"etcd\"\netcd_endpoints = [\"https://e:2379\"]\netcd_cert_path = \"/nonexistent/c.pem\"",
        ));
        assert!(e.contains("state.etcd_ca_path: TLS to etcd"), "{e}");
        assert!(
            e.contains("state.etcd_cert_path: etcd_cert_path and etcd_key_path"),
            "{e}"
        );
        assert!(
            e.contains("state.etcd_cert_path: cannot read /nonexistent/c.pem"),
            "{e}"
        );
    }
}
