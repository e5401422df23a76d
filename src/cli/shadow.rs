//! `slotproxy slot shadow start|show|stop`: a slot's shadow (SPEC §15)
//! through `PUT|GET|DELETE …/slots/{slot}/shadow`. `show` prints this
//! node's figures (the node the admin API answering is on) and the last
//! differing pairs.

use super::{table, Api};
use crate::api::{self, Revised, ShadowView, SlotView};
use crate::shadow::{Compare, ShadowSpec};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum ShadowCmd {
    /// Start (or replace) the shadow: copy a share of production's requests
    /// to the slot, compare its answers with production's, throw them away.
    Start {
        #[arg(long)]
        site: String,
        #[arg(long)]
        slot: String,
        /// Share of production's requests copied, 0-100.
        #[arg(long, default_value_t = 100.0)]
        percent: f64,
        /// A method to copy (repeatable; default GET, HEAD, OPTIONS).
        #[arg(long = "method")]
        methods: Vec<String>,
        /// Larger request bodies are not copied; larger answers are
        /// compared by digest only.
        #[arg(long, default_value_t = 65536)]
        max_body_bytes: usize,
        /// A response field not compared (repeatable; default date).
        #[arg(long = "ignore-header")]
        ignore_headers: Vec<String>,
        /// A JSON path not compared, e.g. '$.requestId' (repeatable).
        #[arg(long = "ignore-json-path")]
        ignore_json_paths: Vec<String>,
        /// Copies waiting at most; more are dropped (counted).
        #[arg(long, default_value_t = 1000)]
        queue: usize,
        /// Copies in flight at most.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Show the shadow with this node's figures and the last differences.
    Show {
        #[arg(long)]
        site: String,
        #[arg(long)]
        slot: String,
    },
    /// Stop the shadow.
    Stop {
        #[arg(long)]
        site: String,
        #[arg(long)]
        slot: String,
    },
}

/// The text `show` and `start` print.
pub fn describe(v: &ShadowView) -> String {
    let s = &v.shadow;
    let f = &v.figures;
    let pct = |r: Option<f64>| r.map_or("-".into(), |r| format!("{:.1}%", r * 100.0));
    let mut out = format!(
        "shadow of {}/{}: {}% of production's {} (bodies up to {} bytes), queue {}, {} at a time\n\
         ignored: headers {}; JSON paths {}\n\
         figures of {}: {} compared, {} matched ({}), status_differs {}, headers_differ {}, \
         body_differs {}, error {}, dropped {}; slot/production time {}\n",
        v.site,
        v.slot,
        s.percent,
        s.methods.join(", "),
        s.max_body_bytes,
        s.queue,
        s.concurrency,
        list(&s.compare.ignore_headers),
        list(&s.compare.ignore_json_paths),
        v.figures_of,
        f.compared,
        f.matched,
        pct(f.match_ratio),
        f.status_differs,
        f.headers_differ,
        f.body_differs,
        f.error,
        f.dropped,
        f.latency_ratio_mean
            .map_or("-".into(), |r| format!("{r:.2}x on average")),
    );
    if v.last_differences.is_empty() {
        out.push_str("no differences yet\n");
        return out;
    }
    out.push_str("last differences (newest first):\n");
    let rows: Vec<Vec<String>> = v
        .last_differences
        .iter()
        .map(|d| {
            vec![
                d.at.clone(),
                format!("{} {}", d.method, d.path),
                d.result.clone(),
                format!(
                    "{} / {}",
                    d.production_status,
                    d.slot_status.map_or("-".into(), |s| s.to_string())
                ),
                d.first_difference.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "AT",
            "REQUEST",
            "RESULT",
            "STATUS (PROD / SLOT)",
            "FIRST DIFFERENCE",
        ],
        &rows,
    ));
    out
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

pub fn run(api: &Api, cmd: ShadowCmd) -> anyhow::Result<()> {
    match cmd {
        ShadowCmd::Start {
            site,
            slot,
            percent,
            methods,
            max_body_bytes,
            ignore_headers,
            ignore_json_paths,
            queue,
            concurrency,
        } => {
            let defaults: ShadowSpec = serde_json::from_str("{}")?;
            let body = ShadowSpec {
                percent,
                methods: if methods.is_empty() {
                    defaults.methods
                } else {
                    methods.iter().map(|m| m.to_ascii_uppercase()).collect()
                },
                max_body_bytes,
                compare: Compare {
                    ignore_headers: if ignore_headers.is_empty() {
                        defaults.compare.ignore_headers
                    } else {
                        ignore_headers
                    },
                    ignore_json_paths,
                },
                queue,
                concurrency,
            };
            let path = api::path(api::SHADOW, &[&site, &slot]);
            let (raw, v): (_, Revised<ShadowView>) = api.call("PUT", &path, Some(&body))?;
            api.print(&raw, || describe(&v.body))
        }
        ShadowCmd::Show { site, slot } => {
            let path = api::path(api::SHADOW, &[&site, &slot]);
            let (raw, v): (_, Revised<ShadowView>) = api.call::<(), _>("GET", &path, None)?;
            api.print(&raw, || describe(&v.body))
        }
        ShadowCmd::Stop { site, slot } => {
            let path = api::path(api::SHADOW, &[&site, &slot]);
            let (raw, _): (_, Revised<SlotView>) = api.call::<(), _>("DELETE", &path, None)?;
            api.print(&raw, || format!("shadow of {site}/{slot} stopped\n"))
        }
    }
}
