//! The admin API's wire contract: every path, request body and answer of
//! the JSON API, in one place.
//!
//! The server (`admin/`) parses these bodies and renders these answers; the
//! CLI (`cli.rs`) sends and reads the very same types and builds its URLs
//! from the same path templates, so the two cannot drift apart. The CLI
//! depends on this module and on nothing of the server.
//!
//! Plain data only (plus the functions that render a view from the model):
//! no I/O, no handlers, no HTTP client.

use crate::model::{Deployment, Health, Settings, Site, Slot, Warmup};
pub use crate::model::{HealthCheck, InstancesProtocol};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::activity::{Action, Operation, Status};
pub use crate::ramp::{
    CallbackAnswer, CallbackRequest, Gates, OnBreach, RampSpec as StartRamp, RampStatus, Verdict,
    VerdictResult,
};

/// The environment variable the admin token can come from (server and CLI).
pub const TOKEN_ENV: &str = "SLOTPROXY_ADMIN_TOKEN";

// ---- paths ------------------------------------------------------------------

/// Path templates, in the `{name}` syntax the server's router takes as is;
/// the CLI fills them with [`path`].
pub const HEALTHZ: &str = "/healthz";
pub const SITES: &str = "/api/v1/sites";
pub const SITE: &str = "/api/v1/sites/{site}";
pub const SLOT: &str = "/api/v1/sites/{site}/slots/{slot}";
pub const DEPLOYMENT: &str = "/api/v1/sites/{site}/slots/{slot}/deployment";
pub const SETTINGS: &str = "/api/v1/sites/{site}/slots/{slot}/settings";
pub const AUTO_SWAP: &str = "/api/v1/sites/{site}/slots/{slot}/auto-swap";
pub const SWAP: &str = "/api/v1/sites/{site}/slots/{slot}/swap";
pub const TRAFFIC_ROUTING: &str = "/api/v1/sites/{site}/traffic-routing";
pub const ACTIVITY: &str = "/api/v1/sites/{site}/activity";
pub const OPERATION: &str = "/api/v1/operations/{id}";
pub const RELOAD: &str = "/api/v1/reload";
/// `PUT` starts (or replaces) a ramp, `GET` shows it, `DELETE` stops it.
/// `PUT` the slot's request matches (SPEC §16).
pub const MATCH: &str = "/api/v1/sites/{site}/slots/{slot}/match";
/// `PUT` (on) or `DELETE` (off) the slot's outlier ejection (SPEC §16).
pub const OUTLIER: &str = "/api/v1/sites/{site}/slots/{slot}/outlier";
pub const RAMP: &str = "/api/v1/sites/{site}/slots/{slot}/ramp";
/// `PUT` starts (or replaces) the slot's shadow, `GET` shows it with this
/// node's figures, `DELETE` stops it (SPEC §15).
pub const SHADOW: &str = "/api/v1/sites/{site}/slots/{slot}/shadow";

// The dashboard (docs/guide/dashboard.md): its page and static files need no
// token (they hold no data); the two JSON paths below it uses do.
pub const DASHBOARD: &str = "/";
pub const DASHBOARD_FILE: &str = "/dashboard/{file}";
/// What a swap would change, before it starts (Azure's swap dialog).
pub const SWAP_PREVIEW: &str = "/api/v1/sites/{site}/slots/{slot}/swap-preview";
/// Requests and 5xx per second per slot, from the proxy's own counters.
pub const LIVE: &str = "/api/v1/sites/{site}/live";
/// Where the proxy listens, so the dashboard can link slot host names.
pub const LISTENERS: &str = "/api/v1/listeners";
/// The live nodes of a fleet sharing one etcd state (SPEC §9).
pub const FLEET: &str = "/api/v1/fleet";

/// Fill the `{…}` parameters of `template` in order with `args`, each
/// percent-encoded: names are validated server-side, but a typo with `/` or
/// `?` must not turn into a different path.
pub fn path(template: &str, args: &[&str]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut args = args.iter();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        if let Some(arg) = args.next() {
            push_segment(&mut out, arg);
        }
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

fn push_segment(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

// ---- request bodies ---------------------------------------------------------

/// `PUT /api/v1/sites/{site}/slots/{slot}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSlot {
    /// Copy `settings` and `sticky_settings` from this slot (like
    /// `az webapp deployment slot create --configuration-source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_from: Option<String>,
    /// Request matches of the new slot (SPEC §16).
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<crate::policy::MatchEntry>,
    /// Outlier ejection of the new slot; absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<crate::policy::Outlier>,
}

/// `PUT …/slots/{slot}/match`: the slot's whole list of match entries
/// (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetMatches {
    #[serde(rename = "match")]
    pub matches: Vec<crate::policy::MatchEntry>,
}

/// A deployment in its flat shape: the `PUT …/deployment` body, what the
/// CLI's `deploy` sends, and what a `[[sites.slots]]` table of the config
/// file holds. Warm-up keys left out take their defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub build_version: String,
    pub instances: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_statuses: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings_hook_path: Option<String>,
    /// `http1` (default), `h2c` or `h2` (HTTP/2 over TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances_protocol: Option<InstancesProtocol>,
    /// With `h2`: a PEM file (on the proxy's machine) of the CA
    /// certificates to trust instead of the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances_tls_ca: Option<String>,
    /// `http` (default) or `grpc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_read_timeout_secs: Option<u64>,
}

impl Deploy {
    /// The model's deployment, defaults filled in.
    pub fn to_deployment(&self) -> Deployment {
        Deployment {
            build_version: self.build_version.clone(),
            instances: self.instances.clone(),
            warmup: Warmup::with_defaults(
                self.warmup_path.clone(),
                self.warmup_statuses.clone(),
                self.warmup_timeout_secs,
                self.warmup_retries,
            ),
            settings_hook_path: self.settings_hook_path.clone(),
            instances_protocol: self.instances_protocol.unwrap_or_default(),
            instances_tls_ca: self.instances_tls_ca.clone(),
            health_check: self.health_check.unwrap_or_default(),
            upstream_read_timeout_secs: self.upstream_read_timeout_secs,
        }
    }
}

/// `PUT /api/v1/sites/{site}/slots/{slot}/settings`: a map that is given
/// replaces that map whole; one left out is kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Settings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_settings: Option<Settings>,
}

/// `PUT /api/v1/sites/{site}/traffic-routing`: every rule of the site.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficRouting {
    pub distribution: BTreeMap<String, f64>,
}

/// `PUT …/slots/{slot}/auto-swap` body: the slot to swap into after each new
/// deployment, or `null` to turn auto swap off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoSwapConfig {
    pub target_slot: Option<String>,
}

/// `POST /api/v1/sites/{site}/slots/{slot}/swap` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartSwap {
    /// Defaults to production.
    #[serde(default)]
    pub target_slot: Option<String>,
    /// `swap` (default), `preview` or `reset`.
    #[serde(default, deserialize_with = "swap_action")]
    pub action: Option<Action>,
}

/// A swap's `action`: one of the three a swap takes. `Action` also has
/// `ramp` (an operation's kind), which serde would list as allowed here
/// and the swap then refuse.
fn swap_action<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Action>, D::Error> {
    use serde::de::Error;
    let Some(name) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    match name.as_str() {
        "swap" => Ok(Some(Action::Swap)),
        "preview" => Ok(Some(Action::Preview)),
        "reset" => Ok(Some(Action::Reset)),
        "ramp" => Err(D::Error::custom(
            "a ramp is not a swap action: use swap, preview or reset (a ramp is PUT on …/slots/{slot}/ramp)",
        )),
        other => Err(D::Error::custom(format!(
            "unknown action {other:?}: use swap, preview or reset"
        ))),
    }
}

// ---- answers ------------------------------------------------------------------

/// Every error answer: `{"error": "..."}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// An answer tagged with the state revision it produced or shows.
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
    /// `header:<name>` or `cookie:<name>` when the site assigns by user key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_key: Option<String>,
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
    pub settings: Settings,
    pub sticky_settings: Settings,
    /// `null` = nothing deployed (the slot answers 503).
    pub deployment: Option<DeploymentView>,
    /// Requests that go to this slot whatever the split (SPEC §16).
    #[serde(default, rename = "match")]
    pub matches: Vec<crate::policy::MatchEntry>,
    /// Outlier ejection of its instances; `null`: off.
    #[serde(default)]
    pub outlier: Option<crate::policy::Outlier>,
    /// Its shadow (copies of production's requests); `null`: off.
    #[serde(default)]
    pub shadow: Option<crate::shadow::ShadowSpec>,
}

/// `GET …/slots/{slot}/shadow` (and the answer to `PUT`): the shadow as
/// set, and what this node found so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowView {
    pub site: String,
    pub slot: String,
    pub shadow: crate::shadow::ShadowSpec,
    /// Whose figures these are: always `"this node"` — in a fleet each
    /// node copies and compares its own share.
    pub figures_of: String,
    pub figures: crate::shadow::FiguresView,
    /// The last differing pairs, newest first (at most 20).
    pub last_differences: Vec<crate::shadow::Difference>,
}

/// A deployment as shown: the flat shape of [`Deploy`] with every default
/// filled in and each instance's health.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentView {
    pub build_version: String,
    pub instances: Vec<InstanceView>,
    pub warmup_path: String,
    pub warmup_statuses: Vec<u16>,
    pub warmup_timeout_secs: u64,
    pub warmup_retries: u32,
    pub settings_hook_path: Option<String>,
    pub instances_protocol: InstancesProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances_tls_ca: Option<String>,
    pub health_check: HealthCheck,
    /// `null`: the server's `upstream_read_timeout_secs`.
    pub upstream_read_timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceView {
    pub address: String,
    /// `up` or `down`, as the active health checks last saw it and as
    /// routing treats it; `unknown` before its first check (routing counts
    /// it as up until a check fails).
    pub health: String,
}

/// The rules of a site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingView {
    pub site: String,
    /// Slots with a rule (an explicit 0 included).
    pub distribution: BTreeMap<String, f64>,
    /// What production gets: the rest.
    pub production_percent: f64,
}

/// `DELETE …/slots/{slot}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Deleted {
    pub site: String,
    pub deleted: String,
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

/// `POST …/swap` → 202.
#[derive(Debug, Serialize, Deserialize)]
pub struct SwapStarted {
    pub operation_id: String,
}

/// `POST /api/v1/reload`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reloaded {
    pub reloaded: String,
}

/// `GET …/swap-preview?target_slot=…`: the settings a swap of `source`
/// into `target` would change and keep, as Azure's swap dialog shows them.
/// Answered only for a swap that could start now (else the error the
/// swap itself would get: 404, 400 or 409).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwapPreview {
    pub site: String,
    pub source: String,
    pub target: String,
    /// The operation of a preview of this pair that is pending (so the
    /// swap would complete it), if any.
    pub pending_preview: Option<String>,
    /// Azure's "Source Changes": what phase 1 does to the source's
    /// instances — they get the target's sticky settings, and keep running
    /// their build.
    pub source_changes: SlotChanges,
    /// Azure's "Target Changes": what the target slot serves after the
    /// switch compared with now — the source's build and swappable
    /// settings, with the target's sticky settings kept.
    pub target_changes: SlotChanges,
}

/// One side of a [`SwapPreview`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotChanges {
    pub slot: String,
    pub build_version_before: Option<String>,
    pub build_version_after: Option<String>,
    /// Settings added, removed or given another value, by key.
    pub changed: Vec<SettingChange>,
    /// Settings that keep their value, by key.
    pub unchanged: Vec<SettingChange>,
}

/// One setting before and after (`null`: not set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingChange {
    pub key: String,
    pub before: Option<String>,
    pub after: Option<String>,
    /// After the swap, the value comes from the target's sticky settings.
    pub sticky: bool,
}

/// The query of `GET …/swap-preview`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SwapPreviewQuery {
    /// Defaults to production.
    #[serde(default)]
    pub target_slot: Option<String>,
}

/// `GET /api/v1/sites/{site}/live`: each slot's rates over the last few
/// seconds (the window between two snapshots of its counters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveView {
    pub site: String,
    /// Seconds the rates are measured over; `null` on the first call,
    /// which only takes the snapshot the next one is measured from.
    pub window_secs: Option<f64>,
    pub slots: Vec<SlotLive>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotLive {
    pub slot: String,
    /// Responses per second (every status, 499 included).
    pub requests_per_sec: Option<f64>,
    pub errors_5xx_per_sec: Option<f64>,
    /// Responses since the slot's counters started.
    pub responses_total: u64,
    pub errors_5xx_total: u64,
}

/// `GET /api/v1/listeners`: the proxy's listening addresses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListenersView {
    pub http: Vec<String>,
    pub https: Vec<String>,
}

/// `GET`/`PUT`/`DELETE …/slots/{slot}/ramp`: the ramp, its state and its
/// last verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RampView {
    pub site: String,
    pub slot: String,
    pub status: RampStatus,
    /// The slot's routing rule now (`null`: none).
    pub percent: Option<f64>,
    #[serde(flatten)]
    pub spec: StartRamp,
    /// Its activity-log operation (action `ramp`, one phase per verdict).
    pub operation_id: String,
    pub started_at: String,
    pub updated_at: String,
    pub last_verdict: Option<Verdict>,
}

impl RampView {
    pub fn of(site: &str, slot: &str, ramp: &crate::ramp::Ramp, percent: Option<f64>) -> RampView {
        RampView {
            site: site.into(),
            slot: slot.into(),
            status: ramp.status,
            percent,
            spec: ramp.spec.clone(),
            operation_id: ramp.operation_id.clone(),
            started_at: ramp.started_at.clone(),
            updated_at: ramp.updated_at.clone(),
            last_verdict: ramp.last_verdict.clone(),
        }
    }
}

// ---- rendering views from the model -------------------------------------------

impl SiteView {
    pub fn of(site: &Site, health: &Health) -> SiteView {
        SiteView {
            name: site.name.clone(),
            hostnames: site.hostnames.clone(),
            slot_domain: site.slot_domain.clone(),
            trusted_proxies: site.trusted_proxies.iter().map(|n| n.to_string()).collect(),
            assignment_key: site.assignment_key.clone(),
            slots: site
                .slots_in_order()
                .map(|s| SlotView::of(site, s, health))
                .collect(),
            routing: RoutingView::of(site),
        }
    }
}

impl SlotView {
    pub fn of(site: &Site, slot: &Slot, health: &Health) -> SlotView {
        SlotView {
            name: slot.name.clone(),
            hostnames: site.slot_hostnames(slot),
            traffic_percent: slot.traffic_percent,
            auto_swap_target: slot.auto_swap_target.clone(),
            ip_allow: slot.ip_allow.iter().map(|n| n.to_string()).collect(),
            target_build_version: slot.target_build_version.clone(),
            settings: slot.settings.clone(),
            sticky_settings: slot.sticky_settings.clone(),
            deployment: slot
                .deployment
                .as_ref()
                .map(|d| DeploymentView::of(d, health)),
            matches: slot.matches.clone(),
            outlier: slot.outlier,
            shadow: slot.shadow.clone(),
        }
    }
}

impl DeploymentView {
    pub fn of(d: &Deployment, health: &Health) -> DeploymentView {
        let seen = |i: &String| match health.get(i) {
            Some(true) => "up",
            Some(false) => "down",
            None => "unknown",
        };
        DeploymentView {
            build_version: d.build_version.clone(),
            instances: d
                .instances
                .iter()
                .map(|i| InstanceView {
                    address: i.clone(),
                    health: seen(i).into(),
                })
                .collect(),
            warmup_path: d.warmup.path.clone(),
            warmup_statuses: d.warmup.statuses.clone(),
            warmup_timeout_secs: d.warmup.timeout_secs,
            warmup_retries: d.warmup.retries,
            settings_hook_path: d.settings_hook_path.clone(),
            instances_protocol: d.instances_protocol,
            instances_tls_ca: d.instances_tls_ca.clone(),
            health_check: d.health_check,
            upstream_read_timeout_secs: d.upstream_read_timeout_secs,
        }
    }
}

impl RoutingView {
    pub fn of(site: &Site) -> RoutingView {
        let distribution: BTreeMap<String, f64> = site
            .slots
            .values()
            .filter_map(|s| Some((s.name.clone(), s.traffic_percent?)))
            .collect();
        let rest = 100.0 - distribution.values().sum::<f64>();
        RoutingView {
            site: site.name.clone(),
            distribution,
            production_percent: rest.max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fill_and_escape_segments() {
        assert_eq!(
            path(SLOT, &["shop", "a/b?c"]),
            "/api/v1/sites/shop/slots/a%2Fb%3Fc"
        );
        assert_eq!(
            path(SWAP, &["shop", "staging"]),
            "/api/v1/sites/shop/slots/staging/swap"
        );
        assert_eq!(path(OPERATION, &["op-1"]), "/api/v1/operations/op-1");
        assert_eq!(path(SITES, &[]), SITES);
    }

    #[test]
    fn a_swap_takes_three_actions_and_names_only_those() {
        let action = |j: &str| serde_json::from_str::<StartSwap>(j).map(|b| b.action);
        assert_eq!(action("{}").unwrap(), None);
        assert_eq!(action(r#"{"action": null}"#).unwrap(), None);
        assert_eq!(
            action(r#"{"action": "preview"}"#).unwrap(),
            Some(Action::Preview)
        );
        let e = action(r#"{"action": "ramp"}"#).unwrap_err().to_string();
        assert!(e.contains("a ramp is PUT on"), "{e}");
        let e = action(r#"{"action": "swapp"}"#).unwrap_err().to_string();
        assert!(e.contains("use swap, preview or reset"), "{e}");
        assert!(!e.contains("`ramp`"), "{e}");
        // what the CLI sends still reads back
        let sent = StartSwap {
            target_slot: None,
            action: Some(Action::Reset),
        };
        let text = serde_json::to_string(&sent).unwrap();
        assert_eq!(serde_json::from_str::<StartSwap>(&text).unwrap(), sent);
    }

    #[test]
    fn request_bodies_refuse_unknown_fields() {
        let e = serde_json::from_str::<Deploy>(
            r#"{"build_version":"v1","instances":["127.0.0.1:1"],"warmup_pth":"/"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `warmup_pth`"), "{e}");
        assert!(serde_json::from_str::<TrafficRouting>(r#"{"distribution":{},"x":1}"#).is_err());
        assert!(serde_json::from_str::<CreateSlot>(r#"{"clone":"production"}"#).is_err());
        assert!(serde_json::from_str::<SetSettings>(r#"{"setting":{}}"#).is_err());
        assert!(serde_json::from_str::<StartSwap>(r#"{"target":"production"}"#).is_err());
    }

    #[test]
    fn deploy_fills_warmup_defaults() {
        let d = Deploy {
            build_version: "v3".into(),
            instances: vec!["127.0.0.1:7".into()],
            warmup_path: Some("/ready".into()),
            warmup_statuses: None,
            warmup_timeout_secs: None,
            warmup_retries: Some(2),
            ..Deploy::default()
        }
        .to_deployment();
        assert_eq!(d.warmup.path, "/ready");
        assert_eq!(d.warmup.timeout_secs, 90);
        assert_eq!(d.warmup.retries, 2);
        assert!(d.warmup.statuses.is_empty());
    }
}

/// `GET /api/v1/fleet`: the live nodes sharing this node's etcd state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetView {
    pub nodes: Vec<FleetNodeView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetNodeView {
    /// Host name and proxy address.
    pub id: String,
    /// The proxy's listen address.
    pub address: String,
    /// The state revision the node serves.
    pub revision: u64,
    /// When the node last refreshed its lease entry (RFC 3339, UTC).
    pub last_seen: String,
}
