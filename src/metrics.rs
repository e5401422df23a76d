//! Prometheus metrics (docs/reference/metrics.md), in a registry of their own, served
//! as text on `[metrics] listen` at `/metrics`.
//!
//! Labels come only from the compiled routing table (site, slot and instance
//! names an operator configured), never from a request: a request whose Host
//! matches no site counts under `site="unknown", slot="unknown"`, so hostile
//! Host headers or paths cannot create series.
//!
//! The request path stays cheap: every time a table is published,
//! [`observe_table`] hands out each slot's [`SlotHandles`], which the table
//! keeps in the slot itself (`RouteTable::attach_metrics`), so a request
//! reaches them through the table it was routed with — no second lookup, no
//! race with a publish — and does only atomic adds. Handles are cached by
//! (site, slot) name across publishes, so counters of an unchanged slot
//! carry over. Gauges that describe the table (routing split, instance
//! health, table version) are rewritten there too, and series of slots or
//! instances that no longer exist are removed.
//!
//! A leaf module: it knows names and numbers, not the routing table, so the
//! table can hold its handles without an import circle.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Label used when a request matched no site (or no slot).
pub const UNKNOWN: &str = "unknown";

/// Status label for a request that ended before any response was written
/// (the client went away), as nginx logs it.
pub const CLIENT_CLOSED: u16 = 499;

/// Request latency buckets, seconds: from sub-millisecond proxying to slow apps.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Swaps include warm-up, which may take minutes.
const SWAP_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Kinds of `slotproxy_upstream_errors_total`. A fixed set, so the label
/// stays bounded whatever pingora reports, and every slot exports each
/// kind at 0 from the start (alerts and `rate()` see the series before the
/// first error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// The instance refused the connection (nothing listens).
    ConnectRefused,
    /// Connecting, or waiting for the answer, took too long.
    Timeout,
    /// Every instance of the slot was tried, or none resolves.
    NoInstance,
    /// The instance closed or reset the connection mid-request.
    Closed,
    Other,
}

impl UpstreamErrorKind {
    pub const ALL: [UpstreamErrorKind; 5] = [
        Self::ConnectRefused,
        Self::Timeout,
        Self::NoInstance,
        Self::Closed,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectRefused => "connect_refused",
            Self::Timeout => "timeout",
            Self::NoInstance => "no_instance",
            Self::Closed => "closed",
            Self::Other => "other",
        }
    }
}

/// Every registered metric.
pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    connect: HistogramVec,
    routing_percent: prometheus::GaugeVec,
    instance_up: IntGaugeVec,
    instance_ejected: IntGaugeVec,
    ejections: IntCounterVec,
    swaps: IntCounterVec,
    swap_duration: Histogram,
    in_flight: IntGauge,
    table_version: IntGauge,
    access_log_dropped: IntCounter,
    connections_open: IntGauge,
    connections_refused: IntCounterVec,
    connections_evicted: IntCounter,
    upstream_discarded: IntCounterVec,
    /// `slotproxy_requests_by_protocol_total`, in [`PROTOCOLS`] order.
    by_protocol: [IntCounter; PROTOCOLS.len()],
    ramp_percent: prometheus::GaugeVec,
    ramp_verdicts: IntCounterVec,
    state_store_up: IntGauge,
    /// Handles of the slots of the last published table, by (site, slot).
    slots: Mutex<HashMap<SlotKey, Arc<SlotHandles>>>,
    /// Label sets of the table gauges written last, to remove stale ones.
    gauge_series: Mutex<GaugeSeries>,
    unknown: SlotHandles,
}

#[derive(Default)]
struct GaugeSeries {
    routing: HashSet<[String; 2]>,
    instances: HashSet<[String; 3]>,
    ejected: HashSet<[String; 3]>,
}

/// (site, slot) names.
type SlotKey = (Box<str>, Box<str>);

/// Status codes whose counters a slot keeps at hand; any other code is
/// looked up in the counter vector (a hash lookup, still no allocation).
const COMMON_CODES: [u16; 16] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 499, 500, 502, 503, 504, 206,
];

/// The metric handles of one slot, attached to it in the routing table.
pub struct SlotHandles {
    site: Box<str>,
    slot: Box<str>,
    duration: Histogram,
    connect: Histogram,
    /// `slotproxy_upstream_errors_total` by kind, in `UpstreamErrorKind::ALL`
    /// order; created with the handles, so each series exists at 0.
    upstream_errors: [IntCounter; UpstreamErrorKind::ALL.len()],
    /// Counters of `COMMON_CODES`, resolved on first use.
    codes: [OnceLock<IntCounter>; COMMON_CODES.len()],
    /// 5xx responses, for [`slot_figures`] (the ramp's judge and the
    /// dashboard) without reading the counter vector; the number of all
    /// responses is the duration histogram's sample count.
    errors_5xx: AtomicU64,
}

impl std::fmt::Debug for SlotHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotHandles({}/{})", self.site, self.slot)
    }
}

impl SlotHandles {
    fn new(m: &MetricVecs<'_>, site: &str, slot: &str) -> SlotHandles {
        SlotHandles {
            site: site.into(),
            slot: slot.into(),
            duration: m.duration.with_label_values(&[site, slot]),
            connect: m.connect.with_label_values(&[site, slot]),
            upstream_errors: UpstreamErrorKind::ALL.map(|k| {
                m.upstream_errors
                    .with_label_values(&[site, slot, k.as_str()])
            }),
            codes: Default::default(),
            errors_5xx: AtomicU64::new(0),
        }
    }

    /// Count one failure talking to an instance of this slot.
    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        // ALL lists every variant, so the position always exists
        if let Some(i) = UpstreamErrorKind::ALL.iter().position(|&k| k == kind) {
            self.upstream_errors[i].inc();
        }
    }

    fn count(&self, requests: &IntCounterVec, code: u16) {
        let code = if (100..=599).contains(&code) {
            code
        } else {
            CLIENT_CLOSED
        };
        if (500..=599).contains(&code) {
            self.errors_5xx.fetch_add(1, Ordering::Relaxed);
        }
        let buf = itoa_buf(code);
        let text = std::str::from_utf8(&buf).unwrap_or("0");
        let labels = [&*self.site, &*self.slot, text];
        match COMMON_CODES.iter().position(|&c| c == code) {
            Some(i) => self.codes[i]
                .get_or_init(|| requests.with_label_values(&labels))
                .inc(),
            None => requests.with_label_values(&labels).inc(),
        }
    }
}

/// A 3-digit status code as text without allocating.
fn itoa_buf(code: u16) -> [u8; 3] {
    [
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]
}

struct MetricVecs<'a> {
    duration: &'a HistogramVec,
    connect: &'a HistogramVec,
    upstream_errors: &'a IntCounterVec,
}

fn build() -> prometheus::Result<Metrics> {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new(
            "slotproxy_requests_total",
            "Requests answered, by site, slot and HTTP status code.",
        ),
        &["site", "slot", "code"],
    )?;
    let duration = HistogramVec::new(
        HistogramOpts::new(
            "slotproxy_request_duration_seconds",
            "Time from the request header read to the end of the response, by site and slot.",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["site", "slot"],
    )?;
    let upstream_errors = IntCounterVec::new(
        Opts::new(
            "slotproxy_upstream_errors_total",
            "Failures talking to app instances, by site, slot and kind \
             (connect_refused, timeout, no_instance, closed, other).",
        ),
        &["site", "slot", "kind"],
    )?;
    let connect = HistogramVec::new(
        HistogramOpts::new(
            "slotproxy_upstream_connect_duration_seconds",
            "Time to open a new connection to an app instance, by site and slot.",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["site", "slot"],
    )?;
    let routing_percent = prometheus::GaugeVec::new(
        Opts::new(
            "slotproxy_routing_percent",
            "Share of new (unpinned) visitors of a site's production host names each slot \
             gets now; production gets the rest, and a slot with no live instance gives its \
             share to production.",
        ),
        &["site", "slot"],
    )?;
    let instance_up = IntGaugeVec::new(
        Opts::new(
            "slotproxy_instance_up",
            "1 if the app instance passes its health checks, 0 if it is marked down.",
        ),
        &["site", "slot", "address"],
    )?;
    let instance_ejected = IntGaugeVec::new(
        Opts::new(
            "slotproxy_instance_ejected",
            "1 while outlier ejection keeps the app instance out of its slot's pool, 0 \
             otherwise (slots with [sites.slots.outlier] only).",
        ),
        &["site", "slot", "address"],
    )?;
    let ejections = IntCounterVec::new(
        Opts::new(
            "slotproxy_ejections_total",
            "Instances taken out of a slot's pool by outlier ejection (slots with \
             [sites.slots.outlier] only).",
        ),
        &["site", "slot"],
    )?;
    let swaps = IntCounterVec::new(
        Opts::new(
            "slotproxy_swaps_total",
            "Finished swap operations, by site and result (succeeded, failed, cancelled, ...).",
        ),
        &["site", "result"],
    )?;
    let swap_duration = Histogram::with_opts(
        HistogramOpts::new(
            "slotproxy_swap_duration_seconds",
            "Duration of finished swap operations, all phases included.",
        )
        .buckets(SWAP_BUCKETS.to_vec()),
    )?;
    let in_flight = IntGauge::new(
        "slotproxy_requests_in_flight",
        "Requests being served right now.",
    )?;
    let table_version = IntGauge::new(
        "slotproxy_routing_table_version",
        "Version of the routing table in use; it goes up on every change published.",
    )?;
    let access_log_dropped = IntCounter::new(
        "slotproxy_access_log_dropped_total",
        "Access log lines dropped because the log writer could not keep up.",
    )?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(duration.clone()))?;
    registry.register(Box::new(upstream_errors.clone()))?;
    registry.register(Box::new(connect.clone()))?;
    registry.register(Box::new(routing_percent.clone()))?;
    registry.register(Box::new(instance_up.clone()))?;
    registry.register(Box::new(instance_ejected.clone()))?;
    registry.register(Box::new(ejections.clone()))?;
    registry.register(Box::new(swaps.clone()))?;
    registry.register(Box::new(swap_duration.clone()))?;
    registry.register(Box::new(in_flight.clone()))?;
    registry.register(Box::new(table_version.clone()))?;
    registry.register(Box::new(access_log_dropped.clone()))?;
    let connections_open = IntGauge::new(
        "slotproxy_connections_open",
        "Client connections open on the proxy listeners now.",
    )?;
    let connections_refused = IntCounterVec::new(
        Opts::new(
            "slotproxy_connections_refused_total",
            "Client connections closed at accept, by reason \
             (max_connections, max_connections_per_ip).",
        ),
        &["reason"],
    )?;
    let connections_evicted = IntCounter::new(
        "slotproxy_connections_evicted_total",
        "Idle keep-alive client connections closed to make room for a new \
         connection at max_connections (oldest idle first, as nginx does).",
    )?;
    registry.register(Box::new(connections_evicted.clone()))?;
    let upstream_discarded = IntCounterVec::new(
        Opts::new(
            "slotproxy_upstream_connections_discarded_total",
            "Connections to instances not reused because the instance sent bytes \
             no request asked for (reason unasked_bytes: seen while idle or before \
             the next request; bytes_after_response: more than the response it \
             framed). Rising: an app writes past its responses.",
        ),
        &["site", "reason"],
    )?;
    registry.register(Box::new(upstream_discarded.clone()))?;
    let by_protocol_vec = IntCounterVec::new(
        Opts::new(
            "slotproxy_requests_by_protocol_total",
            "Requests answered, by the client's protocol (HTTP/1.0, HTTP/1.1, HTTP/2.0).",
        ),
        &["protocol"],
    )?;
    registry.register(Box::new(by_protocol_vec.clone()))?;
    let by_protocol = PROTOCOLS.map(|p| by_protocol_vec.with_label_values(&[p]));
    let ramp_percent = prometheus::GaugeVec::new(
        Opts::new(
            "slotproxy_ramp_percent",
            "The share a running ramp last set for the slot (its routing rule).",
        ),
        &["site", "slot"],
    )?;
    let ramp_verdicts = IntCounterVec::new(
        Opts::new(
            "slotproxy_ramp_verdicts_total",
            "Ramp verdicts, by result (step, hold, wait, breach, callback).",
        ),
        &["result"],
    )?;
    let state_store_up = IntGauge::new(
        "slotproxy_state_store_up",
        "1 while the state store (file or etcd) can be written; 0 while etcd is unreachable.",
    )?;
    registry.register(Box::new(ramp_percent.clone()))?;
    registry.register(Box::new(ramp_verdicts.clone()))?;
    registry.register(Box::new(state_store_up.clone()))?;
    registry.register(Box::new(connections_open.clone()))?;
    registry.register(Box::new(connections_refused.clone()))?;
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let unknown = SlotHandles::new(
        &MetricVecs {
            duration: &duration,
            connect: &connect,
            upstream_errors: &upstream_errors,
        },
        UNKNOWN,
        UNKNOWN,
    );
    Ok(Metrics {
        registry,
        requests,
        duration,
        upstream_errors,
        connect,
        routing_percent,
        instance_up,
        instance_ejected,
        ejections,
        swaps,
        swap_duration,
        in_flight,
        table_version,
        access_log_dropped,
        connections_open,
        connections_refused,
        connections_evicted,
        upstream_discarded,
        by_protocol,
        ramp_percent,
        ramp_verdicts,
        state_store_up,
        slots: Mutex::new(HashMap::new()),
        gauge_series: Mutex::new(GaugeSeries::default()),
        unknown,
    })
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    // The names and labels are fixed above; registering them cannot fail.
    METRICS.get_or_init(|| build().expect("metric definitions are valid"))
}

/// What a table about to be published shows of one slot.
pub struct SlotView<'a> {
    pub site: &'a str,
    pub slot: &'a str,
    /// Share of new visitors it gets, as routed.
    pub routing_percent: f64,
    /// Its instances and whether each can take requests.
    pub instances: Vec<(&'a str, bool)>,
    /// With outlier ejection on: its instances and whether each is ejected.
    pub ejected: Option<Vec<(&'a str, bool)>>,
}

/// Refresh everything derived from a table about to be published: the
/// handles of each slot (returned in the order of `slots`), and
/// `slotproxy_routing_percent`, `slotproxy_instance_up` and the table
/// version. Series of removed slots and instances disappear.
pub fn observe_table(version: u64, slots: &[SlotView<'_>]) -> Vec<Arc<SlotHandles>> {
    let m = metrics();
    let vecs = MetricVecs {
        duration: &m.duration,
        connect: &m.connect,
        upstream_errors: &m.upstream_errors,
    };
    let mut cache = m.slots.lock().unwrap_or_else(|p| p.into_inner());
    let mut kept = HashMap::with_capacity(cache.len());
    let mut routing = HashSet::new();
    let mut instances = HashSet::new();
    let mut ejected = HashSet::new();
    let mut handed = Vec::with_capacity(slots.len());
    for s in slots {
        // Swap counters exist from the start, so `increase()` in alert
        // rules sees the first failure.
        for result in ["succeeded", "failed"] {
            m.swaps.with_label_values(&[s.site, result]);
        }
        let key: SlotKey = (s.site.into(), s.slot.into());
        // an unchanged slot keeps the counters it already resolved
        let handles = cache
            .remove(&key)
            .or_else(|| kept.get(&key).cloned())
            .unwrap_or_else(|| Arc::new(SlotHandles::new(&vecs, s.site, s.slot)));
        handed.push(handles.clone());
        kept.insert(key, handles);
        m.routing_percent
            .with_label_values(&[s.site, s.slot])
            .set(s.routing_percent);
        routing.insert([s.site.to_string(), s.slot.to_string()]);
        for &(inst, up) in &s.instances {
            m.instance_up
                .with_label_values(&[s.site, s.slot, inst])
                .set(i64::from(up));
            instances.insert([s.site.to_string(), s.slot.to_string(), inst.to_string()]);
        }
        if let Some(list) = &s.ejected {
            m.ejections.with_label_values(&[s.site, s.slot]);
            for &(inst, out) in list {
                m.instance_ejected
                    .with_label_values(&[s.site, s.slot, inst])
                    .set(i64::from(out));
                ejected.insert([s.site.to_string(), s.slot.to_string(), inst.to_string()]);
            }
        }
    }
    *cache = kept;
    drop(cache);
    m.table_version.set(version as i64);

    let mut last = m.gauge_series.lock().unwrap_or_else(|p| p.into_inner());
    for gone in last.routing.difference(&routing) {
        let _ = m.routing_percent.remove_label_values(&[&gone[0], &gone[1]]);
    }
    for gone in last.instances.difference(&instances) {
        let _ = m
            .instance_up
            .remove_label_values(&[&gone[0], &gone[1], &gone[2]]);
    }
    for gone in last.ejected.difference(&ejected) {
        let _ = m
            .instance_ejected
            .remove_label_values(&[&gone[0], &gone[1], &gone[2]]);
    }
    *last = GaugeSeries {
        routing,
        instances,
        ejected,
    };
    handed
}

/// `slotproxy_instance_ejected` of one instance (an ejection or a return).
pub fn instance_ejected(site: &str, slot: &str, address: &str, out: bool) {
    metrics()
        .instance_ejected
        .with_label_values(&[site, slot, address])
        .set(i64::from(out));
}

/// Count one ejection in `slotproxy_ejections_total`.
pub fn ejection(site: &str, slot: &str) {
    metrics().ejections.with_label_values(&[site, slot]).inc();
}

/// Count one finished request of the slot whose handles are `slot` (none:
/// the request matched no site), and under its client protocol.
pub fn request_finished(
    slot: Option<&SlotHandles>,
    code: u16,
    elapsed: Duration,
    version: http::Version,
) {
    let m = metrics();
    m.by_protocol[protocol_index(version)].inc();
    let h = slot.unwrap_or(&m.unknown);
    h.count(&m.requests, code);
    h.duration.observe(elapsed.as_secs_f64());
}

/// The client protocols requests are counted and logged under.
pub const PROTOCOLS: [&str; 3] = ["HTTP/1.0", "HTTP/1.1", "HTTP/2.0"];

/// Where a request's HTTP version is in [`PROTOCOLS`] (HTTP/0.9 and
/// HTTP/3 never reach the proxy; they would count as HTTP/1.1).
fn protocol_index(v: http::Version) -> usize {
    match v {
        http::Version::HTTP_10 => 0,
        http::Version::HTTP_2 => 2,
        _ => 1,
    }
}

/// The name a request's HTTP version is logged under.
pub fn protocol_name(v: http::Version) -> &'static str {
    PROTOCOLS[protocol_index(v)]
}

/// Time to open a new upstream connection.
pub fn upstream_connected(slot: Option<&SlotHandles>, elapsed: Duration) {
    slot.unwrap_or(&metrics().unknown)
        .connect
        .observe(elapsed.as_secs_f64());
}

/// Count one failure talking to an instance of the slot whose handles are
/// `slot` (none: a request that was never routed).
pub fn upstream_error(slot: Option<&SlotHandles>, kind: UpstreamErrorKind) {
    slot.unwrap_or(&metrics().unknown).upstream_error(kind);
}

/// For the swap engine: a swap operation of `site` ended with `result`
/// (the operation status: succeeded, failed, cancelled, interrupted).
pub fn swap_finished(site: &str, result: &str, duration: Duration) {
    let m = metrics();
    m.swaps.with_label_values(&[site, result]).inc();
    m.swap_duration.observe(duration.as_secs_f64());
}

/// Counts requests in flight while it lives.
pub struct InFlight(());

impl InFlight {
    pub fn start() -> InFlight {
        metrics().in_flight.inc();
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics().in_flight.dec();
    }
}

/// Export every refusal reason at 0, so alerts see the series from the start.
pub fn connections_init(reasons: [&str; 2]) {
    for r in reasons {
        metrics().connections_refused.with_label_values(&[r]);
    }
}

/// A client connection closed at accept (see `limits`).
pub fn connection_refused(reason: &str) {
    metrics()
        .connections_refused
        .with_label_values(&[reason])
        .inc();
}

/// An idle client connection was told to close to make room (`admission`).
pub fn connection_evicted() {
    metrics().connections_evicted.inc();
}

/// A connection to an instance of `site` was not reused: `reason` is
/// `unasked_bytes` or `bytes_after_response` (`idle_pool`, `lean`).
pub fn upstream_discarded(site: &str, reason: &str) {
    metrics()
        .upstream_discarded
        .with_label_values(&[site, reason])
        .inc();
}

/// A client connection was admitted (see `admission::Admitted`).
pub fn connection_opened() {
    metrics().connections_open.inc();
}

/// An admitted client connection closed.
pub fn connection_closed() {
    metrics().connections_open.dec();
}

pub fn access_log_dropped() {
    metrics().access_log_dropped.inc();
}

/// What one slot has answered since the process started (or since the slot
/// appeared). Two snapshots taken an interval apart give that interval's
/// [`Window`]: this is how the ramp judges a slot and how the dashboard
/// shows requests per second, from the proxy's own counters rather than
/// from a Prometheus scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotFigures {
    pub responses: u64,
    pub errors_5xx: u64,
    /// Cumulative counts of `slotproxy_request_duration_seconds` per bucket
    /// of the request-duration buckets (the `+Inf` bucket is `responses`).
    pub duration_buckets: Vec<u64>,
}

/// The difference between two [`SlotFigures`] of one slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    pub responses: u64,
    pub errors_5xx: u64,
    /// Per-bucket cumulative counts over the window, as in `SlotFigures`.
    pub duration_buckets: Vec<u64>,
}

impl SlotFigures {
    /// What happened between `earlier` and `self`. Counters never go down
    /// while a slot exists; a slot that was removed and created again
    /// starts over, which reads as a window from zero.
    pub fn since(&self, earlier: &SlotFigures) -> Window {
        let restarted = self.responses < earlier.responses;
        let base = |i: usize| {
            if restarted {
                0
            } else {
                earlier.duration_buckets.get(i).copied().unwrap_or(0)
            }
        };
        Window {
            responses: self.responses - if restarted { 0 } else { earlier.responses },
            errors_5xx: self.errors_5xx.saturating_sub(if restarted {
                0
            } else {
                earlier.errors_5xx
            }),
            duration_buckets: (self.duration_buckets.iter().enumerate())
                .map(|(i, &c)| c.saturating_sub(base(i)))
                .collect(),
        }
    }
}

impl Window {
    /// Share of the responses that were 5xx (0 when there were none).
    pub fn error_ratio(&self) -> f64 {
        if self.responses == 0 {
            0.0
        } else {
            self.errors_5xx as f64 / self.responses as f64
        }
    }

    /// The `q` quantile (0..=1) of the request duration in seconds,
    /// interpolated inside its bucket as Prometheus' `histogram_quantile`
    /// does; `None` with no responses. Above the last bucket it answers
    /// the last bucket's bound, which is a lower bound of the truth.
    pub fn quantile_secs(&self, q: f64) -> Option<f64> {
        if self.responses == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.responses as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for (i, &upper) in LATENCY_BUCKETS.iter().enumerate() {
            let count = self.duration_buckets.get(i).copied().unwrap_or(0);
            if count as f64 >= rank && count > below {
                let in_bucket = (count - below) as f64;
                return Some(lower + (upper - lower) * (rank - below as f64) / in_bucket);
            }
            below = count;
            lower = upper;
        }
        LATENCY_BUCKETS.last().copied()
    }
}

/// The figures of one slot of the current table; `None` if no published
/// table has it.
pub fn slot_figures(site: &str, slot: &str) -> Option<SlotFigures> {
    let m = metrics();
    let handles = {
        let cache = m.slots.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(&(Box::from(site), Box::from(slot))).cloned()?
    };
    Some(handles.figures())
}

impl SlotHandles {
    fn figures(&self) -> SlotFigures {
        use prometheus::core::Metric;
        let proto = self.duration.metric();
        let h = proto.get_histogram();
        SlotFigures {
            responses: h.get_sample_count(),
            errors_5xx: self.errors_5xx.load(Ordering::Relaxed),
            duration_buckets: h
                .get_bucket()
                .iter()
                .map(|b| b.cumulative_count())
                .collect(),
        }
    }
}

/// Export every ramp verdict result at 0 (the names of
/// `ramp::VerdictResult`), so alerts see the series before any ramp runs.
pub fn ramp_init(results: impl IntoIterator<Item = &'static str>) {
    for r in results {
        metrics().ramp_verdicts.with_label_values(&[r]);
    }
}

/// A ramp of `site`/`slot` set its rule to `percent`; `None`: the ramp
/// ended, its series goes.
pub fn ramp_percent(site: &str, slot: &str, percent: Option<f64>) {
    let m = &metrics().ramp_percent;
    match percent {
        Some(p) => m.with_label_values(&[site, slot]).set(p),
        None => {
            let _ = m.remove_label_values(&[site, slot]);
        }
    }
}

/// Count one ramp verdict (`result`: a `ramp::VerdictResult` name).
pub fn ramp_verdict(result: &str) {
    metrics().ramp_verdicts.with_label_values(&[result]).inc();
}

/// Result labels of `slotproxy_shadow_requests_total` (SPEC §15).
pub const SHADOW_RESULTS: [&str; 6] = [
    "match",
    "status_differs",
    "headers_differ",
    "body_differs",
    "error",
    "dropped",
];

/// Buckets of `slotproxy_shadow_latency_ratio`: slot time / production time.
const SHADOW_RATIO_BUCKETS: &[f64] = &[0.25, 0.5, 0.8, 1.0, 1.25, 1.5, 2.0, 4.0, 10.0];

/// `slotproxy_shadow_requests_total{site,slot,result}` and
/// `slotproxy_shadow_latency_ratio{site,slot}`, registered with the rest on
/// first use (a process that never shadows does not pay for them; their
/// series appear when a shadow starts, every result at 0).
pub fn shadow_vecs() -> &'static (IntCounterVec, HistogramVec) {
    static VECS: OnceLock<(IntCounterVec, HistogramVec)> = OnceLock::new();
    VECS.get_or_init(|| {
        let requests = IntCounterVec::new(
            Opts::new(
                "slotproxy_shadow_requests_total",
                "Copies of production's requests sent to a slot by its shadow, by result \
                 (match, status_differs, headers_differ, body_differs, error, dropped); \
                 this node's copies only.",
            ),
            &["site", "slot", "result"],
        )
        .expect("metric definition is valid");
        let ratio = HistogramVec::new(
            HistogramOpts::new(
                "slotproxy_shadow_latency_ratio",
                "The slot's time to answer a shadow copy over production's time to answer \
                 the same request.",
            )
            .buckets(SHADOW_RATIO_BUCKETS.to_vec()),
            &["site", "slot"],
        )
        .expect("metric definition is valid");
        let registry = &metrics().registry;
        if let Err(e) = registry
            .register(Box::new(requests.clone()))
            .and_then(|()| registry.register(Box::new(ratio.clone())))
        {
            log::error!("cannot register the shadow metrics: {e}");
        }
        (requests, ratio)
    })
}

/// Everything in the registry, in the Prometheus text format.
pub fn render() -> String {
    let mut buf = Vec::new();
    let families = metrics().registry.gather();
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        log::error!("cannot encode metrics: {e}");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// The `/metrics` endpoint.
pub fn router() -> axum::Router {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;
    axum::Router::new().route(
        "/metrics",
        get(|| async { ([(CONTENT_TYPE, prometheus::TEXT_FORMAT)], render()) }),
    )
}

/// `slotproxy_state_store_up`: 1 while the state store can be written, 0
/// while a fleet's etcd is unreachable (the node serves its last table).
pub fn set_state_store_up(up: bool) {
    metrics().state_store_up.set(i64::from(up));
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The value of one series in a scrape.
    pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn every_upstream_error_kind_is_exported_at_zero() {
        let view = SlotView {
            site: "metrics-zero",
            slot: "production",
            routing_percent: 100.0,
            instances: vec![],
            ejected: None,
        };
        let handles = observe_table(1, &[view]);
        let text = render();
        for kind in UpstreamErrorKind::ALL {
            let series = format!(
                r#"slotproxy_upstream_errors_total{{kind="{}",site="metrics-zero",slot="production"}}"#,
                kind.as_str()
            );
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        handles[0].upstream_error(UpstreamErrorKind::Timeout);
        let text = render();
        assert_eq!(
            sample(
                &text,
                r#"slotproxy_upstream_errors_total{kind="timeout",site="metrics-zero",slot="production"}"#
            ),
            Some(1.0)
        );
    }

    #[test]
    fn slot_figures_give_the_window_between_two_snapshots() {
        let view = SlotView {
            site: "metrics-figures",
            slot: "staging",
            routing_percent: 10.0,
            instances: vec![],
            ejected: None,
        };
        let handles = observe_table(1, &[view]);
        let h = Some(&*handles[0]);
        request_finished(h, 200, Duration::from_millis(1), http::Version::HTTP_11);
        let before = slot_figures("metrics-figures", "staging").unwrap();
        assert_eq!(before.responses, 1);
        for _ in 0..97 {
            request_finished(h, 200, Duration::from_micros(300), http::Version::HTTP_11);
        }
        request_finished(h, 503, Duration::from_millis(3), http::Version::HTTP_11);
        request_finished(h, 500, Duration::from_secs(2), http::Version::HTTP_11);
        let window = slot_figures("metrics-figures", "staging")
            .unwrap()
            .since(&before);
        assert_eq!((window.responses, window.errors_5xx), (99, 2));
        assert!((window.error_ratio() - 2.0 / 99.0).abs() < 1e-9);
        // 97 of 99 under 0.5 ms: the median sits in the first bucket, the
        // p99 (rank 98.01) in the 1-2.5 s bucket that holds the slow one
        let p50 = window.quantile_secs(0.5).unwrap();
        assert!(p50 > 0.0 && p50 <= 0.0005, "{p50}");
        let p99 = window.quantile_secs(0.99).unwrap();
        assert!((1.0..=2.5).contains(&p99), "{p99}");
        assert_eq!(Window::default().quantile_secs(0.99), None);
        assert_eq!(Window::default().error_ratio(), 0.0);
        assert!(slot_figures("metrics-figures", "absent").is_none());
    }

    #[test]
    fn a_window_across_a_restarted_slot_counts_from_zero() {
        let later = SlotFigures {
            responses: 3,
            errors_5xx: 1,
            duration_buckets: vec![3; LATENCY_BUCKETS.len()],
        };
        let earlier = SlotFigures {
            responses: 10,
            errors_5xx: 5,
            duration_buckets: vec![10; LATENCY_BUCKETS.len()],
        };
        let w = later.since(&earlier);
        assert_eq!((w.responses, w.errors_5xx), (3, 1));
        assert_eq!(w.duration_buckets[0], 3);
    }

    #[test]
    fn status_codes_out_of_range_count_as_client_closed() {
        let before = metrics()
            .requests
            .with_label_values(&[UNKNOWN, UNKNOWN, "499"])
            .get();
        request_finished(None, 0, Duration::ZERO, http::Version::HTTP_11);
        request_finished(None, 404, Duration::ZERO, http::Version::HTTP_11);
        let after = metrics()
            .requests
            .with_label_values(&[UNKNOWN, UNKNOWN, "499"])
            .get();
        assert!(after > before);
        assert_eq!(&itoa_buf(404), b"404");
    }
}
