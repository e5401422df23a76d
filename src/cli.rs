//! The admin-client half of the `slotproxy` binary, shaped after
//! `az webapp deployment slot`: `slot create|list|delete`,
//! `traffic-routing set|show|clear|ramp`, `slot swap|auto-swap`,
//! `slot match add|list|remove` (in `cli/policy.rs`),
//! `slot shadow start|show|stop` (in `cli/shadow.rs`), `activity`,
//! `deploy`, `reload`.
//!
//! Every verb is one call of the admin API; its paths, request bodies and
//! answers are the wire types of [`crate::api`], the same the server parses
//! and renders, so client and server cannot drift apart. Nothing of the
//! server is imported here. Output is a readable table, or the API's JSON with
//! `--output json`. An API error prints its status and message and exits 1.

use crate::api::{
    self, Action, AutoSwapConfig, AutoSwapStarted, CreateSlot, Deleted, Deploy, DeployedView,
    ErrorBody, OnBreach, Operation, RampView, Reloaded, Revised, RoutingView, SiteView, SitesView,
    SlotView, StartRamp, StartSwap, Status, SwapStarted, TrafficRouting, TOKEN_ENV,
};
use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where the admin API is when neither `--admin` nor the environment says.
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:9080";
/// The environment variable for `--admin`.
pub const ADMIN_ENV: &str = "SLOTPROXY_ADMIN_URL";

mod policy;
mod shadow;

/// How to reach the admin API; accepted after any client verb.
///
/// The environment fallbacks are read here, not by clap: clap counts a
/// value from the environment as given, and its usage lines then show
/// `--admin <ADMIN> --token <TOKEN>` as if they were required.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Base URL of the admin API, e.g. http://127.0.0.1:9080 (a bare
    /// host:port means http) [env: SLOTPROXY_ADMIN_URL] [default:
    /// http://127.0.0.1:9080]
    #[arg(long, global = true)]
    pub admin: Option<String>,
    /// Bearer token of the admin API [env: SLOTPROXY_ADMIN_TOKEN]
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// `table` for people, `json` for scripts (the API's own answer).
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Create, list and delete deployment slots.
    Slot {
        #[command(subcommand)]
        cmd: SlotCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show or change how production traffic is split between slots.
    TrafficRouting {
        #[command(subcommand)]
        cmd: RoutingCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Deploy a build (its app instances) into a slot.
    Deploy {
        #[command(flatten)]
        args: DeployArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// List a site's swap and ramp operations, newest first (a ramp with
    /// its steps).
    Activity {
        #[arg(long)]
        site: String,
        /// Show at most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        conn: Conn,
    },
    /// Make the running proxy re-read its config file (like SIGHUP).
    Reload {
        #[command(flatten)]
        conn: Conn,
    },
    /// The nodes of a fleet sharing one etcd state.
    Fleet {
        #[command(subcommand)]
        cmd: FleetCmd,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand, Debug)]
pub enum FleetCmd {
    /// Live nodes: id, listen address, state revision served, last seen.
    List,
}

#[derive(Subcommand, Debug)]
pub enum SlotCmd {
    /// Create a slot: no deployment (it answers 503 until one is deployed)
    /// and no traffic.
    Create {
        #[arg(long)]
        site: String,
        #[arg(long)]
        slot: String,
        /// Copy settings and sticky settings from this slot.
        #[arg(long, alias = "configuration-source")]
        clone_from: Option<String>,
    },
    /// List the slots of a site (of every site without --site).
    List {
        #[arg(long)]
        site: Option<String>,
    },
    /// Delete a slot and its routing rule (production cannot be deleted).
    Delete {
        #[arg(long)]
        site: String,
        #[arg(long)]
        slot: String,
    },
    /// Swap a slot into another (production by default) after warm-up, and
    /// follow the phases until it is done. Swapping the same two slots again
    /// is the rollback.
    Swap {
        #[arg(long)]
        site: String,
        /// The source slot.
        #[arg(long)]
        slot: String,
        #[arg(long, default_value = "production")]
        target_slot: String,
        /// `preview` stops after the source runs with the target's settings;
        /// `swap` completes it (or swaps at once); `reset` cancels it.
        #[arg(long, value_enum, default_value_t = SwapAction::Swap)]
        action: SwapAction,
        /// Print the operation id and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// Route requests by header or cookie to a slot (SPEC §16).
    Match {
        #[command(subcommand)]
        cmd: policy::MatchCmd,
    },
    /// Copy production's requests to a slot and compare its answers
    /// (SPEC §15).
    Shadow {
        #[command(subcommand)]
        cmd: shadow::ShadowCmd,
    },
    /// Turn auto swap on (swap into --auto-swap-slot after each new
    /// deployment) or off (--disable); one of the two is required.
    #[command(group(clap::ArgGroup::new("turn").required(true).args(["auto_swap_slot", "disable"])))]
    AutoSwap {
        #[arg(long)]
        site: String,
        #[arg(long)]
        slot: String,
        /// The slot to swap into, e.g. production.
        #[arg(long)]
        auto_swap_slot: Option<String>,
        #[arg(long)]
        disable: bool,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum SwapAction {
    Swap,
    Preview,
    Reset,
}

impl From<SwapAction> for Action {
    fn from(a: SwapAction) -> Action {
        match a {
            SwapAction::Swap => Action::Swap,
            SwapAction::Preview => Action::Preview,
            SwapAction::Reset => Action::Reset,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum RoutingCmd {
    /// Replace every rule of the site: slots not listed lose theirs.
    Set {
        #[arg(long)]
        site: String,
        /// `slot=percent`, repeatable or comma-separated
        /// (`--distribution staging=20,canary=5`). `slot=0` is an explicit
        /// rule: the slot gets no random share but can be opted into with
        /// `?x-ms-routing-name=slot`.
        #[arg(long, required = true, num_args = 1.., value_delimiter = ',', value_parser = parse_share)]
        distribution: Vec<(String, f64)>,
    },
    /// Show the rules of a site.
    Show {
        #[arg(long)]
        site: String,
    },
    /// Remove every rule: all traffic to production.
    Clear {
        #[arg(long)]
        site: String,
    },
    /// Raise a slot's share step by step, judged every interval by the
    /// proxy's own counters (5xx share, p99), rolled back on a breach.
    Ramp {
        #[command(subcommand)]
        cmd: RampCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum RampCmd {
    /// Start (or replace) the ramp of a slot, from its current percent.
    Start(Box<RampStartArgs>),
    /// Show a slot's ramp, its last verdict and every step so far.
    Show {
        #[arg(long)]
        site: String,
        #[arg(long)]
        slot: String,
    },
    /// Stop a slot's ramp; its rule stays where the ramp left it.
    Stop {
        #[arg(long)]
        site: String,
        #[arg(long)]
        slot: String,
    },
}

#[derive(Args, Debug)]
pub struct RampStartArgs {
    #[arg(long)]
    site: String,
    #[arg(long)]
    slot: String,
    /// Percentage points per interval [default: 10].
    #[arg(long)]
    step: Option<f64>,
    /// Seconds between verdicts [default: 60].
    #[arg(long)]
    interval_secs: Option<f64>,
    /// Start at least here; a rollback goes back here [default: 0].
    #[arg(long)]
    min_percent: Option<f64>,
    /// Hold here [default: 100].
    #[arg(long)]
    max_percent: Option<f64>,
    /// Highest 5xx share per interval, 0-1 [default: 0.02].
    #[arg(long)]
    max_error_ratio: Option<f64>,
    /// Highest p99 request time per interval, ms [default: not judged].
    #[arg(long)]
    max_p99_ms: Option<f64>,
    /// Fewer responses in an interval: wait, no verdict [default: 100].
    #[arg(long)]
    min_requests: Option<u64>,
    /// Highest share of the slot's shadow answers that differ, 0-1; above
    /// it the ramp waits [default: not judged].
    #[arg(long)]
    max_shadow_diff_ratio: Option<f64>,
    /// POSTed the figures every interval; may answer {"percent": N}.
    #[arg(long)]
    decision_callback_url: Option<String>,
    /// What a breach does.
    #[arg(long, value_enum, default_value_t = BreachAction::Rollback)]
    on_breach: BreachAction,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum BreachAction {
    Rollback,
    Pause,
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    #[arg(long)]
    pub site: String,
    #[arg(long)]
    pub slot: String,
    #[arg(long)]
    pub build_version: String,
    /// `host:port` of an app instance; repeatable or comma-separated.
    #[arg(long = "instance", required = true, value_delimiter = ',')]
    pub instances: Vec<String>,
    /// Path a swap warms up with (default /).
    #[arg(long)]
    pub warmup_path: Option<String>,
    /// A status that passes warm-up; repeatable (default: any response).
    #[arg(long = "warmup-status", value_delimiter = ',')]
    pub warmup_statuses: Vec<u16>,
    #[arg(long)]
    pub warmup_timeout_secs: Option<u64>,
    #[arg(long)]
    pub warmup_retries: Option<u32>,
    /// Path a swap POSTs the effective settings to on every instance.
    #[arg(long)]
    pub settings_hook_path: Option<String>,
    /// What the instances speak: http1 (default), h2c (HTTP/2 without
    /// TLS, as gRPC servers) or h2 (HTTP/2 over TLS).
    #[arg(long, value_parser = parse_protocol)]
    pub instances_protocol: Option<api::InstancesProtocol>,
    /// With h2: a PEM file on the proxy's machine of the CA certificates
    /// the instances' certificates must chain to (default: system roots).
    #[arg(long)]
    pub instances_tls_ca: Option<String>,
    /// How instances are health-checked and warmed up: http (default) or
    /// grpc (the standard gRPC health service; needs h2c or h2).
    #[arg(long, value_parser = parse_health_check)]
    pub health_check: Option<api::HealthCheck>,
    /// Longest quiet time of a response (WebSockets, server-sent events),
    /// over the proxy's upstream_read_timeout_secs.
    #[arg(long)]
    pub upstream_read_timeout_secs: Option<u64>,
}

/// A value named as in the API's JSON (its serde name).
fn by_serde_name<T: serde::de::DeserializeOwned>(s: &str, allowed: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?} is not one of {allowed}"))
}

fn parse_protocol(s: &str) -> Result<api::InstancesProtocol, String> {
    by_serde_name(s, "http1, h2c, h2")
}

fn parse_health_check(s: &str) -> Result<api::HealthCheck, String> {
    by_serde_name(s, "http, grpc")
}

fn parse_share(s: &str) -> Result<(String, f64), String> {
    let (slot, pct) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: write slot=percent, e.g. staging=20"))?;
    let pct: f64 = pct
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {pct:?} is not a number"))?;
    Ok((slot.trim().to_string(), pct))
}

/// Run one client verb.
pub fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Slot { cmd, conn } => {
            let api = Api::new(&conn)?;
            match cmd {
                SlotCmd::Create {
                    site,
                    slot,
                    clone_from,
                } => {
                    let body = CreateSlot {
                        clone_from,
                        ..Default::default()
                    };
                    let (raw, v): (_, Revised<SlotView>) =
                        api.call("PUT", &api::path(api::SLOT, &[&site, &slot]), Some(&body))?;
                    api.print(&raw, || {
                        format!(
                            "created slot {site}/{slot} (revision {})\n{}",
                            v.revision,
                            slots_table(None, std::slice::from_ref(&v.body))
                        )
                    })
                }
                SlotCmd::List { site } => match site {
                    Some(site) => {
                        let (raw, v): (_, Revised<SiteView>) =
                            api.call::<(), _>("GET", &api::path(api::SITE, &[&site]), None)?;
                        api.print(&raw, || slots_table(None, &v.body.slots))
                    }
                    None => {
                        let (raw, v): (_, Revised<SitesView>) =
                            api.call::<(), _>("GET", api::SITES, None)?;
                        // one table, a SITE column first
                        api.print(&raw, || {
                            let rows: Vec<Vec<String>> = v
                                .body
                                .sites
                                .iter()
                                .flat_map(|s| slots_rows(Some(&s.name), &s.slots))
                                .collect();
                            table(&slots_header(true), &rows)
                        })
                    }
                },
                SlotCmd::Delete { site, slot } => {
                    let (raw, v): (_, Revised<Deleted>) =
                        api.call::<(), _>("DELETE", &api::path(api::SLOT, &[&site, &slot]), None)?;
                    api.print(&raw, || {
                        let b = &v.body;
                        format!(
                            "deleted slot {}/{} (revision {})\n",
                            b.site, b.deleted, v.revision
                        )
                    })
                }
                SlotCmd::Swap {
                    site,
                    slot,
                    target_slot,
                    action,
                    no_wait,
                } => swap(&api, &site, &slot, target_slot, action.into(), no_wait),
                SlotCmd::Match { cmd } => policy::run(&api, cmd),
                SlotCmd::Shadow { cmd } => shadow::run(&api, cmd),
                SlotCmd::AutoSwap {
                    site,
                    slot,
                    auto_swap_slot,
                    disable,
                } => {
                    let body = AutoSwapConfig {
                        target_slot: if disable { None } else { auto_swap_slot },
                    };
                    let path = api::path(api::AUTO_SWAP, &[&site, &slot]);
                    let (raw, v): (_, Revised<SlotView>) = api.call("PUT", &path, Some(&body))?;
                    api.print(&raw, || match &v.body.auto_swap_target {
                        Some(t) => {
                            format!("{site}/{slot} now swaps into {t} after each deployment\n")
                        }
                        None => format!("auto swap of {site}/{slot} is off\n"),
                    })
                }
            }
        }
        ClientCommand::TrafficRouting {
            cmd: RoutingCmd::Ramp { cmd },
            conn,
        } => ramp(&Api::new(&conn)?, cmd),
        ClientCommand::TrafficRouting { cmd, conn } => {
            let api = Api::new(&conn)?;
            let (raw, v): (_, Revised<RoutingView>) = match cmd {
                RoutingCmd::Set { site, distribution } => {
                    let mut map = BTreeMap::new();
                    for (slot, pct) in distribution {
                        if map.insert(slot.clone(), pct).is_some() {
                            bail!("--distribution names slot {slot:?} twice");
                        }
                    }
                    let body = TrafficRouting { distribution: map };
                    api.call(
                        "PUT",
                        &api::path(api::TRAFFIC_ROUTING, &[&site]),
                        Some(&body),
                    )?
                }
                RoutingCmd::Show { site } => {
                    api.call::<(), _>("GET", &api::path(api::TRAFFIC_ROUTING, &[&site]), None)?
                }
                RoutingCmd::Clear { site } => {
                    api.call::<(), _>("DELETE", &api::path(api::TRAFFIC_ROUTING, &[&site]), None)?
                }
                RoutingCmd::Ramp { .. } => unreachable!("handled above"),
            };
            api.print(&raw, || routing_table(&v.body))
        }
        ClientCommand::Deploy { args, conn } => {
            let api = Api::new(&conn)?;
            let body = Deploy {
                build_version: args.build_version,
                instances: args.instances,
                warmup_path: args.warmup_path,
                warmup_statuses: (!args.warmup_statuses.is_empty()).then_some(args.warmup_statuses),
                warmup_timeout_secs: args.warmup_timeout_secs,
                warmup_retries: args.warmup_retries,
                settings_hook_path: args.settings_hook_path,
                instances_protocol: args.instances_protocol,
                instances_tls_ca: args.instances_tls_ca,
                health_check: args.health_check,
                upstream_read_timeout_secs: args.upstream_read_timeout_secs,
            };
            let path = api::path(api::DEPLOYMENT, &[&args.site, &args.slot]);
            let (raw, v): (_, Revised<DeployedView>) = api.call("PUT", &path, Some(&body))?;
            api.print(&raw, || {
                let mut out = format!(
                    "deployed {} to {}/{} (revision {})\n{}",
                    body.build_version,
                    args.site,
                    args.slot,
                    v.revision,
                    slots_table(None, std::slice::from_ref(&v.body.slot))
                );
                let target = v.body.slot.auto_swap_target.as_deref().unwrap_or("");
                match &v.body.auto_swap {
                    Some(AutoSwapStarted {
                        operation_id: Some(id),
                        ..
                    }) => out.push_str(&format!(
                        "auto swap into {target} started: {id} (slotproxy activity --site {})\n",
                        args.site
                    )),
                    Some(AutoSwapStarted { error: Some(e), .. }) => {
                        out.push_str(&format!("auto swap into {target} did not start: {e}\n"))
                    }
                    _ => {}
                }
                out
            })
        }
        ClientCommand::Activity { site, limit, conn } => {
            let api = Api::new(&conn)?;
            let path = api::path(api::ACTIVITY, &[&site]);
            let (raw, ops): (_, Vec<Operation>) = api.call::<(), _>("GET", &path, None)?;
            api.print(&raw, || activity_table(&ops[..ops.len().min(limit)]))
        }
        ClientCommand::Fleet {
            cmd: FleetCmd::List,
            conn,
        } => {
            let api = Api::new(&conn)?;
            let (raw, fleet): (_, api::FleetView) = api.call::<(), _>("GET", api::FLEET, None)?;
            api.print(&raw, || {
                let rows: Vec<Vec<String>> = fleet
                    .nodes
                    .iter()
                    .map(|n| {
                        vec![
                            n.id.clone(),
                            n.address.clone(),
                            n.revision.to_string(),
                            n.last_seen.clone(),
                        ]
                    })
                    .collect();
                table(&["NODE", "ADDRESS", "REVISION", "LAST SEEN"], &rows)
            })
        }
        ClientCommand::Reload { conn } => {
            let api = Api::new(&conn)?;
            let (raw, v): (_, Revised<Reloaded>) = api.call::<(), _>("POST", api::RELOAD, None)?;
            api.print(&raw, || {
                format!("reloaded {} (revision {})\n", v.body.reloaded, v.revision)
            })
        }
    }
}

/// `traffic-routing ramp start|show|stop`.
fn ramp(api: &Api, cmd: RampCmd) -> anyhow::Result<()> {
    let (site, slot, method, body) = match cmd {
        RampCmd::Start(args) => {
            let RampStartArgs {
                site,
                slot,
                step,
                interval_secs,
                min_percent,
                max_percent,
                max_error_ratio,
                max_p99_ms,
                min_requests,
                max_shadow_diff_ratio,
                decision_callback_url,
                on_breach,
            } = *args;
            // the API's defaults for whatever is not given
            let mut b: StartRamp = serde_json::from_str("{}")?;
            b.step = step.unwrap_or(b.step);
            b.interval_secs = interval_secs.unwrap_or(b.interval_secs);
            b.min_percent = min_percent.unwrap_or(b.min_percent);
            b.max_percent = max_percent.unwrap_or(b.max_percent);
            b.gates.max_error_ratio = max_error_ratio.or(b.gates.max_error_ratio);
            b.gates.max_p99_ms = max_p99_ms;
            b.gates.min_requests = min_requests.unwrap_or(b.gates.min_requests);
            b.gates.max_shadow_diff_ratio = max_shadow_diff_ratio;
            b.decision_callback_url = decision_callback_url;
            b.on_breach = match on_breach {
                BreachAction::Rollback => OnBreach::Rollback,
                BreachAction::Pause => OnBreach::Pause,
            };
            (site, slot, "PUT", Some(b))
        }
        RampCmd::Show { site, slot } => (site, slot, "GET", None),
        RampCmd::Stop { site, slot } => (site, slot, "DELETE", None),
    };
    let path = api::path(api::RAMP, &[&site, &slot]);
    let (raw, v): (_, Revised<RampView>) = api.call(method, &path, body.as_ref())?;
    let op = if api.output == Output::Table {
        let op_path = api::path(api::OPERATION, &[&v.body.operation_id]);
        api.call::<(), Operation>("GET", &op_path, None)
            .ok()
            .map(|o| o.1)
    } else {
        None
    };
    api.print(&raw, || ramp_text(&v.body, op.as_ref()))
}

fn ramp_text(r: &RampView, op: Option<&Operation>) -> String {
    let mut out = format!(
        "ramp of {}/{}: {} at {} (from {}% to {}% by {} every {} s), operation {}\n",
        r.site,
        r.slot,
        r.status.as_str(),
        r.percent.map_or("no rule".into(), percent),
        r.spec.min_percent,
        r.spec.max_percent,
        r.spec.step,
        r.spec.interval_secs,
        r.operation_id
    );
    if let Some(op) = op {
        out.push_str(&phases_text(op));
    }
    out
}

/// The phases of an operation, one line each.
fn phases_text(op: &Operation) -> String {
    op.phases
        .iter()
        .map(|p| {
            let at = p.ended_at.as_deref().unwrap_or(&p.started_at);
            format!("  {at}  {:<9} {:<9} {}\n", p.name, p.result, p.detail)
        })
        .collect()
}

/// Start a swap and, unless `no_wait`, print its phases as they end until
/// the operation settles. A swap that does not succeed exits non-zero.
fn swap(
    api: &Api,
    site: &str,
    slot: &str,
    target: String,
    action: Action,
    no_wait: bool,
) -> anyhow::Result<()> {
    let body = StartSwap {
        target_slot: Some(target.clone()),
        action: Some(action),
    };
    let path = api::path(api::SWAP, &[site, slot]);
    let (raw, started): (_, SwapStarted) = api.call("POST", &path, Some(&body))?;
    if no_wait {
        return api.print(&raw, || format!("started {}\n", started.operation_id));
    }
    if api.output == Output::Table {
        println!(
            "{} {slot} into {target} of {site}: operation {}",
            action.as_str(),
            started.operation_id
        );
    }
    let op_path = api::path(api::OPERATION, &[&started.operation_id]);
    let mut shown = 0;
    loop {
        let (raw, op): (_, Operation) = api.call::<(), _>("GET", &op_path, None)?;
        if api.output == Output::Table {
            for p in op
                .phases
                .iter()
                .skip(shown)
                .take_while(|p| p.ended_at.is_some())
            {
                println!("  {:<22} {:<9} {}", p.name, p.result, p.detail);
                shown += 1;
            }
        }
        if op.status != Status::Running {
            match api.output {
                Output::Json => api.print(&raw, String::new)?,
                Output::Table => {
                    println!(
                        "{}{}",
                        op.status.as_str(),
                        op.error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    );
                }
            }
            return match op.status {
                Status::Succeeded | Status::Previewing => Ok(()),
                s => bail!("operation {} {}", op.id, s.as_str()),
            };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn activity_table(ops: &[Operation]) -> String {
    if ops.is_empty() {
        return "no operations\n".into();
    }
    let rows: Vec<Vec<String>> = ops
        .iter()
        .map(|o| {
            vec![
                o.id.clone(),
                o.started_at.clone(),
                o.action.as_str().into(),
                format!("{} -> {}", o.source, o.target),
                o.status.as_str().into(),
                o.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = table(
        &["OPERATION", "STARTED", "ACTION", "SLOTS", "STATUS", "ERROR"],
        &rows,
    );
    // a ramp's steps are its phases: show them (a swap's are shown by
    // `slot swap` as it runs)
    for o in ops.iter().filter(|o| o.action == Action::Ramp) {
        out.push_str(&format!(
            "\nramp {} ({} -> {}):\n",
            o.id, o.source, o.target
        ));
        out.push_str(&phases_text(o));
    }
    out
}

struct Api {
    client: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
    output: Output,
}

impl Api {
    fn new(conn: &Conn) -> anyhow::Result<Api> {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot build an HTTP client")?;
        let admin = conn
            .admin
            .clone()
            .or_else(|| {
                std::env::var(ADMIN_ENV)
                    .ok()
                    .filter(|v| !v.trim().is_empty())
            })
            .unwrap_or_else(|| DEFAULT_ADMIN.to_string());
        let token = conn
            .token
            .clone()
            .or_else(|| std::env::var(TOKEN_ENV).ok().filter(|v| !v.is_empty()));
        Ok(Api {
            client,
            base: admin_base(&admin)?,
            token,
            output: conn.output,
        })
    }

    /// One API call: the raw JSON answer and it parsed as `T`. A non-2xx
    /// answer becomes an error with the status and the API's message.
    fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<(String, T)> {
        let url = format!("{}{}", self.base, path);
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self.client.request(method.clone(), &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().with_context(|| {
            format!(
                "cannot reach the admin API at {}: is `slotproxy serve` running? \
                 (set --admin or SLOTPROXY_ADMIN_URL)",
                self.base
            )
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .with_context(|| format!("{method} {url}: reading the answer"))?;
        if !status.is_success() {
            let msg = serde_json::from_str::<ErrorBody>(&text)
                .map(|e| e.error)
                .unwrap_or_else(|_| text.trim().to_string());
            bail!("{method} {path}: {status}: {msg}");
        }
        let parsed = serde_json::from_str(&text)
            .with_context(|| format!("{method} {url}: unexpected answer {text:?}"))?;
        Ok((text, parsed))
    }

    /// Print the API's JSON (pretty) or the table `table` renders.
    fn print(&self, raw: &str, table: impl FnOnce() -> String) -> anyhow::Result<()> {
        match self.output {
            Output::Json => {
                let v: serde_json::Value = serde_json::from_str(raw)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            Output::Table => print!("{}", table()),
        }
        Ok(())
    }
}

/// The admin API's base URL from `--admin`: `http(s)://host:port[/prefix]`,
/// or a bare `host:port`, which means http.
pub fn admin_base(given: &str) -> anyhow::Result<String> {
    let given = given.trim();
    let with_scheme = if given.contains("://") {
        given.to_string()
    } else {
        format!("http://{given}")
    };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| {
        anyhow::anyhow!(
            "--admin {given:?} is not an address ({e}); write e.g. http://127.0.0.1:9080"
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        bail!("--admin {given:?}: write http://host:port or https://host:port");
    }
    Ok(with_scheme.trim_end_matches('/').to_string())
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

fn percent(p: f64) -> String {
    format!("{p}%")
}

fn slots_table(site: Option<&str>, slots: &[SlotView]) -> String {
    table(&slots_header(site.is_some()), &slots_rows(site, slots))
}

fn slots_header(with_site: bool) -> Vec<&'static str> {
    let mut header = vec!["SLOT", "BUILD", "TRAFFIC", "INSTANCES", "HOSTNAMES"];
    if with_site {
        header.insert(0, "SITE");
    }
    header
}

fn slots_rows(site: Option<&str>, slots: &[SlotView]) -> Vec<Vec<String>> {
    slots
        .iter()
        .map(|s| {
            let traffic = match (s.name.as_str(), s.traffic_percent) {
                ("production", _) => "rest".to_string(),
                (_, Some(p)) => percent(p),
                (_, None) => "-".to_string(),
            };
            let (build, instances) = match &s.deployment {
                Some(d) => (
                    d.build_version.clone(),
                    d.instances
                        .iter()
                        .map(|i| format!("{} ({})", i.address, i.health))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                None => ("-".into(), "(nothing deployed)".into()),
            };
            let mut row = vec![
                s.name.clone(),
                build,
                traffic,
                instances,
                s.hostnames.join(", "),
            ];
            if let Some(site) = site {
                row.insert(0, site.to_string());
            }
            row
        })
        .collect()
}

fn routing_table(v: &RoutingView) -> String {
    let mut rows = vec![vec![
        "production".to_string(),
        format!("{} (rest)", percent(v.production_percent)),
    ]];
    for (slot, p) in &v.distribution {
        let note = if *p == 0.0 { " (opt-in only)" } else { "" };
        rows.push(vec![slot.clone(), format!("{}{note}", percent(*p))]);
    }
    table(&["SLOT", "TRAFFIC"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_parse() {
        assert_eq!(parse_share("staging=20"), Ok(("staging".into(), 20.0)));
        assert_eq!(parse_share(" canary = 0.5"), Ok(("canary".into(), 0.5)));
        assert!(parse_share("staging").is_err());
        assert!(parse_share("staging=lots").is_err());
    }

    #[test]
    fn admin_urls_take_a_bare_host_and_port_as_http() {
        assert_eq!(
            admin_base("127.0.0.1:17190").unwrap(),
            "http://127.0.0.1:17190"
        );
        assert_eq!(
            admin_base(" https://admin.example:9443/ ").unwrap(),
            "https://admin.example:9443"
        );
        assert_eq!(
            admin_base("http://[::1]:9080/slots").unwrap(),
            "http://[::1]:9080/slots"
        );
        for bad in ["ftp://h:1", "http://", "exa mple:80", ""] {
            let e = admin_base(bad).unwrap_err().to_string();
            assert!(e.starts_with("--admin "), "{bad:?}: {e}");
        }
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["SLOT", "TRAFFIC"],
            &[
                vec!["production".into(), "80% (rest)".into()],
                vec!["qa".into(), "20%".into()],
            ],
        );
        assert_eq!(
            t,
            "SLOT        TRAFFIC\nproduction  80% (rest)\nqa          20%\n"
        );
    }
}
