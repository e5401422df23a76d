//! Plain data of the control plane: sites, slots, deployments, rules and
//! settings, plus the validation rules every change must pass.
//!
//! `State` is what `config.toml` seeds, what the state directory persists and
//! what `RouteTable::compile` reads. It holds no runtime handles, so it can be
//! cloned, compared, serialized and validated freely off the hot path.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The name of the slot every site has and that weighted routing falls back to.
pub const PRODUCTION: &str = "production";

/// A slot's instances are tracked in a 64-bit mask per request.
pub const MAX_INSTANCES: usize = 64;
pub const MAX_WARMUP_RETRIES: u32 = 100;
pub const MAX_WARMUP_TIMEOUT_SECS: u64 = 3600;

/// Key/value settings handed to the app (like App Service application settings).
pub type Settings = BTreeMap<String, String>;

/// Health of app instances by their `host:port` label, as the active health
/// checks last saw it; a label that is missing has not been checked yet and
/// counts as up.
pub type Health = std::collections::HashMap<String, bool>;

/// Socket addresses of the instances given by name (`host:port` with a DNS
/// name), as last resolved (see `names.rs`). An instance given as an IP
/// address needs no entry; a name with none does not resolve.
pub type Addresses = std::collections::HashMap<String, std::net::SocketAddr>;

/// Everything the control plane knows; the state directory holds one of these.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub sites: BTreeMap<String, Site>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub name: String,
    /// Production host names, lower case, no port.
    pub hostnames: Vec<String>,
    /// Slot host names are `<site>-<slot>.<slot_domain>` when this is set.
    #[serde(default)]
    pub slot_domain: Option<String>,
    /// Peers whose `X-Forwarded-*` headers are trusted and extended.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// `header:<name>` or `cookie:<name>`: the user key whose hash is the
    /// client's bucket (docs/guide/buckets.md); implies bucket assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_key: Option<String>,
    pub slots: BTreeMap<String, Slot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    pub name: String,
    /// Extra host names that always reach this slot (sticky).
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Share of production-host traffic, 0–100. `None` = no rule, which is
    /// different from an explicit `Some(0.0)` (opt-in only).
    #[serde(default)]
    pub traffic_percent: Option<f64>,
    #[serde(default)]
    pub auto_swap_target: Option<String>,
    /// Allowed client networks; empty = everyone (sticky).
    #[serde(default)]
    pub ip_allow: Vec<IpNet>,
    /// Declarative swap: the build the production slot should run.
    #[serde(default)]
    pub target_build_version: Option<String>,
    /// Swappable settings: they travel with the deployment on a swap.
    #[serde(default)]
    pub settings: Settings,
    /// Sticky settings: they stay with the slot on a swap.
    #[serde(default)]
    pub sticky_settings: Settings,
    /// What the slot runs now; `None` answers 503.
    #[serde(default)]
    pub deployment: Option<Deployment>,
    /// Requests that fit one of these entries go to this slot (sticky,
    /// SPEC §16).
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<crate::policy::MatchEntry>,
    /// Passive outlier ejection of its instances; `None`: off (sticky).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<crate::policy::Outlier>,
    /// Copies of production's requests sent here and compared (SPEC §15);
    /// `None`: off (sticky).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<crate::shadow::ShadowSpec>,
}

/// What a slot runs: the content a swap exchanges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    pub build_version: String,
    /// `host:port` of the app servers.
    pub instances: Vec<String>,
    #[serde(default)]
    pub warmup: Warmup,
    /// When set, a swap POSTs the effective settings to this path on every
    /// instance.
    #[serde(default)]
    pub settings_hook_path: Option<String>,
    /// What the instances speak: HTTP/1.1, HTTP/2 without TLS (gRPC), or
    /// HTTP/2 over TLS.
    #[serde(default, skip_serializing_if = "is_default")]
    pub instances_protocol: InstancesProtocol,
    /// With `instances_protocol = "h2"`: a PEM file of the CA certificates
    /// the instances' certificates must chain to, instead of the system's
    /// roots (`upstream_tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances_tls_ca: Option<String>,
    /// How health checks and warm-up ask an instance whether it serves.
    #[serde(default, skip_serializing_if = "is_default")]
    pub health_check: HealthCheck,
    /// Longest wait for an instance to send (more of) its response, over
    /// `[server] upstream_read_timeout_secs` — for WebSockets and
    /// server-sent events that stay quiet longer than ordinary requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_read_timeout_secs: Option<u64>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The protocol between the proxy and a deployment's instances (SPEC §12).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstancesProtocol {
    /// HTTP/1.1 (WebSocket upgrades included).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge, no TLS: what gRPC servers speak.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`), the certificate checked against the
    /// instance's host name and `instances_tls_ca` (or the system's roots).
    H2,
}

impl InstancesProtocol {
    /// HTTP/2, with or without TLS.
    pub fn is_h2(self) -> bool {
        matches!(self, InstancesProtocol::H2c | InstancesProtocol::H2)
    }
}

/// How health checks and warm-up reach a deployment's instances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    pub protocol: InstancesProtocol,
    pub check: HealthCheck,
    /// The deployment's `instances_tls_ca`.
    pub tls_ca: Option<Arc<str>>,
}

impl Deployment {
    /// A deployment of `build_version` on `instances`, every other key at
    /// its default (as a config slot with only those two keys).
    pub fn of(build_version: &str, instances: Vec<String>) -> Deployment {
        Deployment {
            build_version: build_version.into(),
            instances,
            warmup: Warmup::default(),
            settings_hook_path: None,
            instances_protocol: InstancesProtocol::default(),
            instances_tls_ca: None,
            health_check: HealthCheck::default(),
            upstream_read_timeout_secs: None,
        }
    }

    pub fn probe(&self) -> Probe {
        Probe {
            protocol: self.instances_protocol,
            check: self.health_check,
            tls_ca: self.instances_tls_ca.as_deref().map(Arc::from),
        }
    }

    /// What [`State::validate`] cannot see without reading files, checked
    /// where a deployment comes in (config file, admin API): the CA file
    /// must hold certificates. Not part of `validate`, so that a CA file
    /// lost later does not block unrelated writes (it is logged instead,
    /// and trusted as nothing: `upstream_tls::trusted`).
    pub fn check_files(&self, key: &str) -> Vec<Problem> {
        match &self.instances_tls_ca {
            Some(ca) if !ca.trim().is_empty() => match crate::upstream_tls::read_ca(ca) {
                Ok(_) => vec![],
                Err(why) => vec![problem(format!("{key}.instances_tls_ca"), why)],
            },
            _ => vec![],
        }
    }
}

/// How an instance is asked whether it can serve (health checks, warm-up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheck {
    /// `GET [health] path` (warm-up: `warmup_path`); any status below 500
    /// is healthy.
    #[default]
    Http,
    /// The standard gRPC health service (`grpc.health.v1.Health/Check`,
    /// the server as a whole): healthy when it answers `SERVING`.
    Grpc,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Warmup {
    pub path: String,
    /// Statuses that pass; empty = any response.
    pub statuses: Vec<u16>,
    pub timeout_secs: u64,
    pub retries: u32,
}

impl Default for Warmup {
    fn default() -> Self {
        Warmup {
            path: "/".into(),
            statuses: Vec::new(),
            timeout_secs: 90,
            retries: 5,
        }
    }
}

impl Warmup {
    /// Warm-up settings where the ones not given take their defaults.
    pub fn with_defaults(
        path: Option<String>,
        statuses: Option<Vec<u16>>,
        timeout_secs: Option<u64>,
        retries: Option<u32>,
    ) -> Warmup {
        let d = Warmup::default();
        Warmup {
            path: path.unwrap_or(d.path),
            statuses: statuses.unwrap_or(d.statuses),
            timeout_secs: timeout_secs.unwrap_or(d.timeout_secs),
            retries: retries.unwrap_or(d.retries),
        }
    }
}

impl Slot {
    /// A slot with nothing in it but its name.
    pub fn empty(name: &str) -> Slot {
        Slot {
            name: name.to_string(),
            hostnames: Vec::new(),
            traffic_percent: None,
            auto_swap_target: None,
            ip_allow: Vec::new(),
            target_build_version: None,
            settings: Settings::new(),
            sticky_settings: Settings::new(),
            deployment: None,
            matches: Vec::new(),
            outlier: None,
            shadow: None,
        }
    }

    /// The settings this slot's content runs with when it serves `host`:
    /// its own swappable settings with `host`'s sticky settings on top. In
    /// its own slot (`host` = self) that is its effective configuration;
    /// during a swap, `host` is the slot it is about to serve.
    pub fn settings_in(&self, host: &Slot) -> Settings {
        let mut s = self.settings.clone();
        s.extend(host.sticky_settings.clone());
        s
    }

    /// The settings the app in this slot should see now.
    pub fn effective_settings(&self) -> Settings {
        self.settings_in(self)
    }
}

impl Site {
    /// Production first, then the other slots by name: the order routing
    /// indexes them in and the API lists them in.
    pub fn slots_in_order(&self) -> impl Iterator<Item = &Slot> {
        self.slots
            .get(PRODUCTION)
            .into_iter()
            .chain(self.slots.values().filter(|s| s.name != PRODUCTION))
    }

    /// All host names that reach `slot` directly, generated one first.
    pub fn slot_hostnames(&self, slot: &Slot) -> Vec<String> {
        let mut out = Vec::with_capacity(slot.hostnames.len() + 1);
        if let Some(domain) = &self.slot_domain {
            out.push(format!("{}-{}.{}", self.name, slot.name, domain));
        }
        out.extend(slot.hostnames.iter().cloned());
        out
    }
}

/// One thing wrong with a state or config: the key it concerns and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

fn problem(key: String, reason: impl Into<String>) -> Problem {
    Problem {
        key,
        reason: reason.into(),
    }
}

/// Site and slot names: what Azure allows, and what fits in a host label.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 59
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(format!(
            "{name:?} is not a valid name: use 1-59 lower-case letters, digits and inner dashes"
        ));
    }
    if name == "self" {
        return Err("\"self\" is reserved for the production opt-out cookie".into());
    }
    Ok(())
}

/// Host names: lower case, no port, no scheme.
pub fn check_hostname(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !host.starts_with('.')
        && !host.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is not a host name (lower-case letters, digits, dots and dashes; no port or scheme)"
        ))
    }
}

/// `host:port` of an app instance.
pub fn check_instance(addr: &str) -> Result<(), String> {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    match addr.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !host.contains(['/', ' '])
                && port.parse::<u16>().is_ok_and(|p| p > 0) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{addr:?} is not a socket address: write host:port, e.g. 127.0.0.1:3000"
        )),
    }
}

/// Where a site's user key comes from (`[[sites]] assignment_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource<'a> {
    /// A request header, e.g. `header:X-User-Id` (matched case-insensitively).
    Header(&'a str),
    /// A cookie, e.g. `cookie:uid`.
    Cookie(&'a str),
}

/// Parse `header:<name>` or `cookie:<name>`.
pub fn parse_assignment_key(s: &str) -> Result<KeySource<'_>, String> {
    let bad =
        || format!("{s:?}: write \"header:<name>\" (e.g. header:X-User-Id) or \"cookie:<name>\"");
    let (kind, name) = s.split_once(':').ok_or_else(bad)?;
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    match kind {
        "header" if token && http::HeaderName::from_bytes(name.as_bytes()).is_ok() => {
            Ok(KeySource::Header(name))
        }
        "cookie" if token => Ok(KeySource::Cookie(name)),
        _ => Err(bad()),
    }
}

/// Parse a CIDR, accepting a bare address as a single-host network.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "{s:?} is not a CIDR: write e.g. 10.0.0.0/8, 2001:db8::/32 or a single address"
    ))
}

impl Deployment {
    fn validate(&self, key: &str, out: &mut Vec<Problem>) {
        if self.health_check == HealthCheck::Grpc && !self.instances_protocol.is_h2() {
            out.push(problem(
                format!("{key}.health_check"),
                "gRPC health checks need HTTP/2: set instances_protocol = \"h2c\" (or \"h2\" for TLS)",
            ));
        }
        if let Some(ca) = &self.instances_tls_ca {
            if self.instances_protocol != InstancesProtocol::H2 {
                out.push(problem(
                    format!("{key}.instances_tls_ca"),
                    "is only used over TLS: set instances_protocol = \"h2\" or remove it",
                ));
            } else if ca.trim().is_empty() {
                out.push(problem(
                    format!("{key}.instances_tls_ca"),
                    "must name a PEM file",
                ));
            }
        }
        if self.upstream_read_timeout_secs == Some(0) {
            out.push(problem(
                format!("{key}.upstream_read_timeout_secs"),
                "must be at least 1 second",
            ));
        }
        if self.build_version.trim().is_empty() {
            out.push(problem(format!("{key}.build_version"), "must not be empty"));
        }
        if self.instances.is_empty() {
            out.push(problem(
                format!("{key}.instances"),
                "a deployment needs at least one instance",
            ));
        }
        if self.instances.len() > MAX_INSTANCES {
            out.push(problem(
                format!("{key}.instances"),
                format!(
                    "{} instances; a slot can have at most {MAX_INSTANCES}",
                    self.instances.len()
                ),
            ));
        }
        if self.warmup.retries > MAX_WARMUP_RETRIES {
            out.push(problem(
                format!("{key}.warmup_retries"),
                format!(
                    "{} is over the limit of {MAX_WARMUP_RETRIES}",
                    self.warmup.retries
                ),
            ));
        }
        if self.warmup.timeout_secs > MAX_WARMUP_TIMEOUT_SECS {
            out.push(problem(
                format!("{key}.warmup_timeout_secs"),
                format!(
                    "{} is over the limit of {MAX_WARMUP_TIMEOUT_SECS} (one hour)",
                    self.warmup.timeout_secs
                ),
            ));
        }
        for (i, inst) in self.instances.iter().enumerate() {
            if let Err(e) = check_instance(inst) {
                out.push(problem(format!("{key}.instances[{i}]"), e));
            }
        }
        if !self.warmup.path.starts_with('/') {
            out.push(problem(
                format!("{key}.warmup_path"),
                format!("{:?} must start with /", self.warmup.path),
            ));
        }
        for s in &self.warmup.statuses {
            if !(100..=599).contains(s) {
                out.push(problem(
                    format!("{key}.warmup_statuses"),
                    format!("{s} is not an HTTP status"),
                ));
            }
        }
        if self.warmup.timeout_secs == 0 {
            out.push(problem(
                format!("{key}.warmup_timeout_secs"),
                "must be at least 1",
            ));
        }
        if let Some(p) = &self.settings_hook_path {
            if !p.starts_with('/') {
                out.push(problem(
                    format!("{key}.settings_hook_path"),
                    format!("{p:?} must start with /"),
                ));
            }
        }
    }
}

impl State {
    /// Every rule a state must satisfy, reported all at once so a user can
    /// fix a config file in one go. Keys read like `sites[shop].slots[staging].traffic_percent`.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        // host name -> who owns it, to find duplicates across sites and slots
        let mut owners: BTreeMap<String, String> = BTreeMap::new();
        let mut claim = |host: &str, owner: String, key: String, out: &mut Vec<Problem>| {
            if let Some(prev) = owners.get(host) {
                out.push(problem(
                    key,
                    format!("host name {host:?} is already used by {prev}"),
                ));
            } else {
                owners.insert(host.to_string(), owner);
            }
        };

        for (site_key, site) in &self.sites {
            let sk = format!("sites[{site_key}]");
            if site_key != &site.name {
                out.push(problem(format!("{sk}.name"), "does not match its key"));
            }
            if let Err(e) = check_name(&site.name) {
                out.push(problem(format!("{sk}.name"), e));
            }
            if site.hostnames.is_empty() {
                out.push(problem(
                    format!("{sk}.hostnames"),
                    "a site needs at least one production host name",
                ));
            }
            for (i, h) in site.hostnames.iter().enumerate() {
                let key = format!("{sk}.hostnames[{i}]");
                match check_hostname(h) {
                    Ok(()) => claim(h, format!("site {:?}", site.name), key, &mut out),
                    Err(e) => out.push(problem(key, e)),
                }
            }
            if let Some(d) = &site.slot_domain {
                if let Err(e) = check_hostname(d) {
                    out.push(problem(format!("{sk}.slot_domain"), e));
                }
            }
            if let Some(k) = &site.assignment_key {
                if let Err(e) = parse_assignment_key(k) {
                    out.push(problem(format!("{sk}.assignment_key"), e));
                }
            }
            if !site.slots.contains_key(PRODUCTION) {
                out.push(problem(
                    format!("{sk}.slots"),
                    "every site needs a slot named \"production\"",
                ));
            }

            let mut sum = 0.0;
            for (slot_key, slot) in &site.slots {
                let k = format!("{sk}.slots[{slot_key}]");
                if slot_key != &slot.name {
                    out.push(problem(format!("{k}.name"), "does not match its key"));
                }
                if let Err(e) = check_name(&slot.name) {
                    out.push(problem(format!("{k}.name"), e));
                }
                for (i, h) in site.slot_hostnames(slot).iter().enumerate() {
                    let key = if site.slot_domain.is_some() && i == 0 {
                        format!("{sk}.slot_domain")
                    } else {
                        let listed = i - usize::from(site.slot_domain.is_some());
                        format!("{k}.hostnames[{listed}]")
                    };
                    match check_hostname(h) {
                        Ok(()) => claim(
                            h,
                            format!("slot {:?} of site {:?}", slot.name, site.name),
                            key,
                            &mut out,
                        ),
                        Err(e) => out.push(problem(key, e)),
                    }
                }
                if let Some(p) = slot.traffic_percent {
                    if slot.name == PRODUCTION {
                        out.push(problem(
                            format!("{k}.traffic_percent"),
                            "production takes the rest of the traffic; a rule on it is not allowed",
                        ));
                    } else if !(0.0..=100.0).contains(&p) {
                        out.push(problem(
                            format!("{k}.traffic_percent"),
                            format!("{p} is out of range 0-100"),
                        ));
                    } else {
                        sum += p;
                    }
                }
                if let Some(t) = &slot.auto_swap_target {
                    if t == &slot.name {
                        out.push(problem(
                            format!("{k}.auto_swap_target"),
                            "a slot cannot auto-swap into itself",
                        ));
                    } else if !site.slots.contains_key(t) {
                        out.push(problem(
                            format!("{k}.auto_swap_target"),
                            format!("names slot {t:?}, which site {:?} does not have", site.name),
                        ));
                    }
                }
                if let Some(v) = &slot.target_build_version {
                    if slot.name != PRODUCTION {
                        out.push(problem(
                            format!("{k}.target_build_version"),
                            "only the production slot can have a target build version",
                        ));
                    } else if v.trim().is_empty() {
                        out.push(problem(
                            format!("{k}.target_build_version"),
                            "must not be empty",
                        ));
                    }
                }
                if let Some(d) = &slot.deployment {
                    d.validate(&k, &mut out);
                }
                for (key, reason) in crate::policy::check_matches(&k, &slot.matches) {
                    out.push(problem(key, reason));
                }
                if let Some(o) = &slot.outlier {
                    for (key, reason) in o.check(&format!("{k}.outlier")) {
                        out.push(problem(key, reason));
                    }
                }
                if let Some(sh) = &slot.shadow {
                    if slot_key == PRODUCTION {
                        out.push(problem(
                            format!("{k}.shadow"),
                            "production is what a shadow copies: put the shadow on the slot that gets the copies",
                        ));
                    }
                    for (key, reason) in sh.check(&format!("{k}.shadow")) {
                        out.push(problem(key, reason));
                    }
                }
            }
            if sum > 100.0 + 1e-9 {
                out.push(problem(
                    format!("{sk}.slots"),
                    format!("traffic_percent of the slots sums to {sum}, over 100"),
                ));
            }
        }
        out
    }
}

impl State {
    /// Declarative swap targets that no slot runs. Checked when a config is
    /// applied (the file asks for something that does not exist), not on
    /// every change: a deploy or a swap must not be refused because the
    /// config's target is not running somewhere right now.
    pub fn unrunnable_targets(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for site in self.sites.values() {
            let Some(v) = site
                .slots
                .get(PRODUCTION)
                .and_then(|p| p.target_build_version.as_ref())
            else {
                continue;
            };
            let runs = site
                .slots
                .values()
                .any(|s| s.deployment.as_ref().is_some_and(|d| &d.build_version == v));
            if !runs {
                out.push(problem(
                    format!(
                        "sites[{}].slots[{PRODUCTION}].target_build_version",
                        site.name
                    ),
                    format!("no slot of site {:?} runs build {v:?}", site.name),
                ));
            }
        }
        out
    }

    /// Files the state names that cannot be used (today: each deployment's
    /// `instances_tls_ca`), checked where a state comes in from a file;
    /// the admin API checks the one deployment it writes
    /// ([`Deployment::check_files`]).
    pub fn unreadable_files(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for site in self.sites.values() {
            for slot in site.slots.values() {
                if let Some(d) = &slot.deployment {
                    out.extend(d.check_files(&slot_key(&site.name, &slot.name)));
                }
            }
        }
        out
    }
}

/// How problems name a slot: `sites[shop].slots[staging]`.
pub fn slot_key(site: &str, slot: &str) -> String {
    format!("sites[{site}].slots[{slot}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        let mut slots = BTreeMap::new();
        let mut prod = Slot::empty("production");
        prod.deployment = Some(Deployment {
            build_version: "v1".into(),
            instances: vec!["127.0.0.1:3000".into()],
            warmup: Warmup::default(),
            settings_hook_path: None,
            instances_protocol: InstancesProtocol::Http1,
            instances_tls_ca: None,
            health_check: HealthCheck::Http,
            upstream_read_timeout_secs: None,
        });
        slots.insert("production".into(), prod);
        let mut staging = Slot::empty("staging");
        staging.traffic_percent = Some(20.0);
        slots.insert("staging".into(), staging);
        Site {
            name: "shop".into(),
            hostnames: vec!["shop.example.com".into()],
            slot_domain: Some("slots.example.com".into()),
            trusted_proxies: vec![],
            assignment_key: None,
            slots,
        }
    }

    fn state(site: Site) -> State {
        State {
            sites: [(site.name.clone(), site)].into(),
        }
    }

    #[test]
    fn valid_state_has_no_problems() {
        assert_eq!(state(site()).validate(), vec![]);
    }

    #[test]
    fn rules_are_checked() {
        let mut s = site();
        s.slots.get_mut("staging").unwrap().traffic_percent = Some(101.0);
        s.slots.get_mut("production").unwrap().traffic_percent = Some(1.0);
        let p = state(s).validate();
        assert!(p
            .iter()
            .any(|p| p.key == "sites[shop].slots[staging].traffic_percent"
                && p.reason.contains("out of range")));
        assert!(p
            .iter()
            .any(|p| p.key == "sites[shop].slots[production].traffic_percent"));
    }

    #[test]
    fn sum_over_100_is_refused() {
        let mut s = site();
        let mut qa = Slot::empty("qa");
        qa.traffic_percent = Some(90.5);
        s.slots.insert("qa".into(), qa);
        let p = state(s).validate();
        assert!(
            p.iter().any(|p| p.reason.contains("sums to 110.5")),
            "{p:?}"
        );
    }

    #[test]
    fn duplicate_hosts_are_refused() {
        let mut s = site();
        s.slots.get_mut("staging").unwrap().hostnames = vec!["shop.example.com".into()];
        let p = state(s).validate();
        assert!(p
            .iter()
            .any(|p| p.key == "sites[shop].slots[staging].hostnames[0]"
                && p.reason.contains("already used by site \"shop\"")));
    }

    #[test]
    fn dangling_references_are_refused() {
        let mut s = site();
        s.slots.get_mut("staging").unwrap().auto_swap_target = Some("nope".into());
        s.slots.get_mut("production").unwrap().target_build_version = Some("v9".into());
        let st = state(s);
        assert_eq!(st.validate().len(), 1, "{:?}", st.validate());
        assert_eq!(st.unrunnable_targets().len(), 1);
    }

    #[test]
    fn names_and_addresses() {
        assert_eq!(
            parse_assignment_key("header:X-User-Id"),
            Ok(KeySource::Header("X-User-Id"))
        );
        assert_eq!(
            parse_assignment_key("cookie:uid"),
            Ok(KeySource::Cookie("uid"))
        );
        for bad in [
            "X-User-Id",
            "header:",
            "query:u",
            "cookie:a;b",
            "header:a b",
        ] {
            assert!(parse_assignment_key(bad).is_err(), "{bad}");
        }
        assert!(check_name("staging-2").is_ok());
        assert!(check_name("Staging").is_err());
        assert!(check_name("self").is_err());
        assert!(check_instance("app.internal:8080").is_ok());
        assert!(check_instance("[::1]:80").is_ok());
        assert!(check_instance("127.0.0.1").is_err());
        assert!(check_instance("host:99999").is_err());
        let d = Deployment {
            build_version: "v".into(),
            instances: (0..65).map(|i| format!("127.0.0.1:{}", 1000 + i)).collect(),
            warmup: Warmup {
                retries: u32::MAX,
                timeout_secs: u64::MAX,
                ..Warmup::default()
            },
            settings_hook_path: None,
            instances_protocol: InstancesProtocol::Http1,
            instances_tls_ca: None,
            health_check: HealthCheck::Http,
            upstream_read_timeout_secs: None,
        };
        let mut p = Vec::new();
        d.validate("d", &mut p);
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["d.instances", "d.warmup_retries", "d.warmup_timeout_secs"]
        );
        assert_eq!(parse_cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert!(parse_cidr("10.0.0.0/33").is_err());
    }
}
