//! Prometheus metrics: counted in atomics on the request path (pre-registered label sets: an
//! endpoint and a status code index a fixed table, so counting costs a relaxed atomic add and
//! no lookup, lock or allocation), written by prometheus-client at scrape time.
//!
//! Evaluation counters are a table per snapshot (one row per flag, one column per reason),
//! built before the swap (`state::Derived`) and indexed by the `FlagId` lookup returned.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::http::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use vexil_core::Snapshot;
use vexil_core::eval::Reason;

use crate::evaluation::FlagId;
use crate::hooks::{Host, Outcome};
use crate::state::Derived;

const REASONS: [Reason; 5] = [
    Reason::Static,
    Reason::TargetingMatch,
    Reason::Split,
    Reason::Default,
    Reason::Disabled,
];

fn reason_index(r: Reason) -> usize {
    match r {
        Reason::Static => 0,
        Reason::TargetingMatch => 1,
        Reason::Split => 2,
        Reason::Default => 3,
        Reason::Disabled => 4,
    }
}

type Row = Arc<[AtomicU64; 5]>;

/// Evaluation counts of one snapshot's flags.
#[derive(Debug, Default)]
pub struct EvalCounters {
    /// Where each namespace's rows start.
    offsets: Vec<usize>,
    /// (namespace, flag) of each row.
    keys: Vec<(Box<str>, Box<str>)>,
    /// Shared with the previous snapshot's table for flags both have: requests still answering
    /// from the old snapshot count into the same cells, so counters never go backwards.
    counts: Vec<Row>,
}

impl EvalCounters {
    /// A table for `snapshot`, sharing the rows of flags that `previous` also had.
    pub fn new(snapshot: &Snapshot, previous: Option<&EvalCounters>) -> EvalCounters {
        let old: std::collections::HashMap<(&str, &str), &Row> = previous
            .map(|p| {
                p.keys
                    .iter()
                    .zip(&p.counts)
                    .map(|((ns, f), c)| ((&**ns, &**f), c))
                    .collect()
            })
            .unwrap_or_default();
        let mut table = EvalCounters::default();
        for ns in snapshot.namespaces() {
            table.offsets.push(table.keys.len());
            for flag in &ns.flags {
                let counts = old.get(&(&*ns.name, &*flag.key)).map_or_else(
                    || Row::new(std::array::from_fn(|_| AtomicU64::new(0))),
                    |row| Row::clone(row),
                );
                table.keys.push((ns.name.clone(), flag.key.clone()));
                table.counts.push(counts);
            }
        }
        table
    }

    pub fn record(&self, id: FlagId, reason: Reason) {
        let row = self.offsets.get(id.namespace).map(|o| o + id.flag);
        if let Some(cell) = row.and_then(|r| self.counts.get(r)) {
            if let Some(c) = cell.get(reason_index(reason)) {
                c.fetch_add(1, Relaxed);
            }
        }
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let mut metric = encoder.encode_descriptor(
            "vexil_evaluations",
            "Flag evaluations from every front, by namespace, flag and reason.",
            None,
            MetricType::Counter,
        )?;
        for ((ns, flag), counts) in self.keys.iter().zip(&self.counts) {
            for (reason, c) in REASONS.iter().zip(counts.iter()) {
                let n = c.load(Relaxed);
                if n > 0 {
                    let labels = [
                        ("namespace", &**ns),
                        ("flag", &**flag),
                        ("reason", reason.as_str()),
                    ];
                    metric
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
                }
            }
        }
        Ok(())
    }
}

/// The protocols Vexil speaks, as metrics name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Vexil = 0,
    Flagd,
    Ofrep,
    Flipper,
    Unleash,
    /// The Unleash frontend API (`/api/frontend`), evaluated by Vexil.
    Frontend,
    /// `/mirrors/diagnostics` and `/metrics`: the HTTP port's own reads.
    Http,
    /// The push webhooks (`/hooks/*`).
    Hooks,
    /// flagd's sync service (`flagd.sync.v1.FlagSyncService`), for in-process providers.
    FlagdSync,
}

impl Front {
    pub const ALL: [Front; 9] = [
        Front::Vexil,
        Front::Flagd,
        Front::Ofrep,
        Front::Flipper,
        Front::Unleash,
        Front::Frontend,
        Front::Http,
        Front::Hooks,
        Front::FlagdSync,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Front::Vexil => "vexil",
            Front::Flagd => "flagd",
            Front::Ofrep => "ofrep",
            Front::Flipper => "flipper",
            Front::Unleash => "unleash",
            Front::Frontend => "frontend",
            Front::Http => "http",
            Front::Hooks => "hooks",
            Front::FlagdSync => "flagd-sync",
        }
    }
}

/// Every measured endpoint: a front and a method name, fixed at compile time.
pub const ENDPOINTS: [(Front, &str); 46] = [
    (Front::Vexil, "Evaluate"),
    (Front::Vexil, "EvaluateBatch"),
    (Front::Vexil, "ListFlags"),
    (Front::Vexil, "GetFlag"),
    (Front::Vexil, "Watch"),
    (Front::Vexil, "Reload"),
    (Front::Vexil, "Status"),
    (Front::Vexil, "ServerReflectionInfo"),
    (Front::Vexil, "other"),
    (Front::Flagd, "ResolveBoolean"),
    (Front::Flagd, "ResolveString"),
    (Front::Flagd, "ResolveFloat"),
    (Front::Flagd, "ResolveInt"),
    (Front::Flagd, "ResolveObject"),
    (Front::Flagd, "ResolveAll"),
    (Front::Flagd, "EventStream"),
    (Front::FlagdSync, "SyncFlags"),
    (Front::FlagdSync, "FetchAllFlags"),
    (Front::FlagdSync, "GetMetadata"),
    (Front::Ofrep, "evaluate"),
    (Front::Ofrep, "bulk"),
    (Front::Ofrep, "events"),
    (Front::Flipper, "features"),
    (Front::Flipper, "feature"),
    (Front::Flipper, "actor"),
    (Front::Flipper, "other"),
    (Front::Unleash, "features"),
    (Front::Unleash, "feature"),
    (Front::Unleash, "register"),
    (Front::Unleash, "metrics"),
    (Front::Unleash, "other"),
    (Front::Frontend, "toggles"),
    (Front::Frontend, "all"),
    (Front::Frontend, "feature"),
    (Front::Frontend, "register"),
    (Front::Frontend, "metrics"),
    (Front::Frontend, "other"),
    (Front::Http, "diagnostics"),
    (Front::Http, "metrics"),
    (Front::Http, "events"),
    (Front::Http, "other"),
    (Front::Hooks, "github"),
    (Front::Hooks, "gitlab"),
    (Front::Hooks, "gitea"),
    (Front::Hooks, "generic"),
    (Front::Hooks, "other"),
];

/// An index into `ENDPOINTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint(usize);

impl Endpoint {
    /// The endpoint named `method` of `front` (its `other` endpoint for unknown names).
    pub fn of(front: Front, method: &str) -> Endpoint {
        let known = ENDPOINTS
            .iter()
            .position(|(f, m)| *f == front && *m == method);
        let other = || {
            ENDPOINTS
                .iter()
                .position(|(f, m)| *f == front && *m == "other")
        };
        Endpoint(known.or_else(other).unwrap_or(ENDPOINTS.len() - 1))
    }

    pub fn front(self) -> Front {
        ENDPOINTS.get(self.0).map_or(Front::Http, |(f, _)| *f)
    }
}

/// gRPC status codes, by `tonic::Code` number.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// HTTP statuses the fronts answer with; anything else is counted as `other`.
const HTTP_CODES: [(u16, &str); 13] = [
    (200, "200"),
    (202, "202"),
    (204, "204"),
    (304, "304"),
    (400, "400"),
    (401, "401"),
    (404, "404"),
    (405, "405"),
    (413, "413"),
    (422, "422"),
    (500, "500"),
    (503, "503"),
    (0, "other"),
];

const CODES: usize = GRPC_CODES.len() + HTTP_CODES.len();

/// A response's status, as a column of the request table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code(usize);

impl Code {
    pub fn grpc(code: tonic::Code) -> Code {
        Code((code as usize).min(GRPC_CODES.len() - 1))
    }

    pub fn http(status: StatusCode) -> Code {
        let i = HTTP_CODES
            .iter()
            .position(|(n, _)| *n == status.as_u16())
            .unwrap_or(HTTP_CODES.len() - 1);
        Code(GRPC_CODES.len() + i)
    }

    fn label(i: usize) -> &'static str {
        GRPC_CODES.get(i).copied().unwrap_or_else(|| {
            HTTP_CODES
                .get(i - GRPC_CODES.len())
                .map_or("other", |(_, l)| l)
        })
    }
}

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default)]
struct Histogram {
    /// Per bucket (not cumulative), plus one for +Inf.
    buckets: [AtomicU64; 15],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Relaxed);
        }
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }
}

#[derive(Debug)]
struct EndpointStats {
    latency: Histogram,
    codes: [AtomicU64; CODES],
}

impl Default for EndpointStats {
    fn default() -> EndpointStats {
        EndpointStats {
            latency: Histogram::default(),
            codes: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Process-wide request metrics (evaluation counters live with each snapshot).
#[derive(Debug)]
pub struct Metrics {
    endpoints: [EndpointStats; ENDPOINTS.len()],
    unauthenticated: [AtomicU64; Front::ALL.len()],
    batch_items: AtomicU64,
    connections_opened: AtomicU64,
    /// Per `conn::Closed` kind.
    connections_closed: [AtomicU64; 4],
    accept_errors: AtomicU64,
    streams_stalled: AtomicU64,
    /// Per `hooks::Host`, per `hooks::Outcome`.
    webhooks: [[AtomicU64; Outcome::ALL.len()]; Host::ALL.len()],
    /// The change notifications' receivers (their counts are theirs), once started.
    notifier: std::sync::OnceLock<std::sync::Arc<crate::notify::Notifier>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            endpoints: std::array::from_fn(|_| EndpointStats::default()),
            unauthenticated: Default::default(),
            batch_items: AtomicU64::new(0),
            connections_opened: AtomicU64::new(0),
            connections_closed: Default::default(),
            accept_errors: AtomicU64::new(0),
            streams_stalled: AtomicU64::new(0),
            webhooks: Default::default(),
            notifier: std::sync::OnceLock::new(),
        }
    }
}

impl Metrics {
    /// One answered request (for streams: the stream opened).
    pub fn observe(&self, endpoint: Endpoint, took: Duration, code: Code) {
        if let Some(m) = self.endpoints.get(endpoint.0) {
            m.latency.observe(took);
            if let Some(c) = m.codes.get(code.0) {
                c.fetch_add(1, Relaxed);
            }
        }
    }

    /// A request refused for a missing or unknown token.
    pub fn unauthenticated(&self, front: Front) {
        if let Some(c) = self.unauthenticated.get(front as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn connection_opened(&self) {
        self.connections_opened.fetch_add(1, Relaxed);
    }

    pub fn connection_closed(&self, how: crate::conn::Closed) {
        if let Some(c) = self.connections_closed.get(how as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Relaxed);
    }

    /// A change stream ended because its client stopped reading.
    pub fn stream_stalled(&self) {
        self.streams_stalled.fetch_add(1, Relaxed);
    }

    /// A webhook answered.
    pub fn webhook(&self, host: Host, outcome: Outcome) {
        let cell = self
            .webhooks
            .get(host as usize)
            .and_then(|row| row.get(outcome as usize));
        if let Some(c) = cell {
            c.fetch_add(1, Relaxed);
        }
    }

    /// The notifier whose receivers scrapes and `Status` report.
    pub fn set_notifier(&self, notifier: std::sync::Arc<crate::notify::Notifier>) {
        let _ = self.notifier.set(notifier);
    }

    pub fn notifier(&self) -> Option<&crate::notify::Notifier> {
        self.notifier.get().map(|n| &**n)
    }

    pub fn batch_items(&self, n: usize) {
        self.batch_items.fetch_add(n as u64, Relaxed);
    }
}

/// The reload figures a scrape reports (copied out of the status, without its diagnostics).
#[derive(Debug, Clone, Default)]
pub struct ReloadFigures {
    pub counts: vexil_core::live::Counts,
    pub consecutive_failures: u32,
    pub last_attempt_unix_ms: Option<i64>,
    /// When the served snapshot was swapped in, its revision and flag count.
    pub serving: Option<(i64, String, usize)>,
    pub reloader_healthy: bool,
    pub source_stale: bool,
}

impl ReloadFigures {
    pub fn of(s: &vexil_core::Status, reloader_healthy: bool) -> ReloadFigures {
        ReloadFigures {
            counts: s.counts,
            consecutive_failures: s.consecutive_failures,
            last_attempt_unix_ms: s
                .last_attempt
                .as_ref()
                .map(|a| crate::convert::unix_ms(a.at)),
            serving: s.serving.as_ref().map(|v| {
                (
                    crate::convert::unix_ms(v.since),
                    v.revision.clone(),
                    v.flags,
                )
            }),
            reloader_healthy,
            source_stale: s.stale.is_some(),
        }
    }
}

/// One scrape: everything `/metrics` writes.
#[derive(Debug)]
pub struct Scrape {
    pub metrics: Arc<Metrics>,
    /// The served snapshot (its evaluation counters travel with it).
    pub snapshot: Option<Arc<Snapshot>>,
    pub reload: ReloadFigures,
}

impl Scrape {
    /// The exposition in Prometheus' text format (0.0.4).
    pub fn render(self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail; a collector error would leave a partial text.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

fn plain(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    value: u64,
) -> std::fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, kind)?;
    match kind {
        MetricType::Counter => {
            prometheus_client::metrics::counter::ConstCounter::new(value).encode(metric)
        }
        _ => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric),
    }
}

fn gauge_f64(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> std::fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.metrics;
        let mut requests = encoder.encode_descriptor(
            "vexil_requests",
            "Requests, by front, method and status code (for streams: opened).",
            None,
            MetricType::Counter,
        )?;
        for ((front, method), stats) in ENDPOINTS.iter().zip(&m.endpoints) {
            for (i, c) in stats.codes.iter().enumerate() {
                let n = c.load(Relaxed);
                if n > 0 {
                    let labels = [
                        ("front", front.label()),
                        ("method", method),
                        ("code", Code::label(i)),
                    ];
                    requests
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
                }
            }
        }
        let mut durations = encoder.encode_descriptor(
            "vexil_request_duration_seconds",
            "Time to answer a request (for streams: to open them), by front and method.",
            None,
            MetricType::Histogram,
        )?;
        for ((front, method), stats) in ENDPOINTS.iter().zip(&m.endpoints) {
            let counts: Vec<u64> = stats
                .latency
                .buckets
                .iter()
                .map(|b| b.load(Relaxed))
                .collect();
            let count: u64 = counts.iter().sum();
            if count == 0 {
                continue;
            }
            let buckets: Vec<(f64, u64)> = BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(counts)
                .collect();
            let sum = stats.latency.sum_nanos.load(Relaxed) as f64 / 1e9;
            let labels = [("front", front.label()), ("method", *method)];
            durations
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        let mut refused = encoder.encode_descriptor(
            "vexil_unauthenticated",
            "Requests refused for a missing or unknown token, by front.",
            None,
            MetricType::Counter,
        )?;
        for (front, c) in Front::ALL.iter().zip(&m.unauthenticated) {
            refused
                .encode_family(&[("front", front.label())])?
                .encode_counter::<NoLabelSet, _, u64>(&c.load(Relaxed), None)?;
        }
        plain(
            &mut encoder,
            "vexil_batch_evaluations",
            "Flags evaluated through EvaluateBatch.",
            MetricType::Counter,
            m.batch_items.load(Relaxed),
        )?;
        let closed: u64 = m.connections_closed.iter().map(|c| c.load(Relaxed)).sum();
        plain(
            &mut encoder,
            "vexil_connections_open",
            "Open connections on both ports.",
            MetricType::Gauge,
            m.connections_opened.load(Relaxed).saturating_sub(closed),
        )?;
        let mut by_reason = encoder.encode_descriptor(
            "vexil_connections_closed",
            "Closed connections, by why.",
            None,
            MetricType::Counter,
        )?;
        for (how, c) in crate::conn::Closed::ALL.iter().zip(&m.connections_closed) {
            by_reason
                .encode_family(&[("reason", how.label())])?
                .encode_counter::<NoLabelSet, _, u64>(&c.load(Relaxed), None)?;
        }
        plain(
            &mut encoder,
            "vexil_accept_errors",
            "Failed accepts (out of descriptors, ...), each followed by a back-off.",
            MetricType::Counter,
            m.accept_errors.load(Relaxed),
        )?;
        plain(
            &mut encoder,
            "vexil_streams_stalled",
            "Watch, EventStream and SSE streams ended because the client stopped reading.",
            MetricType::Counter,
            m.streams_stalled.load(Relaxed),
        )?;
        let mut hooks = encoder.encode_descriptor(
            "vexil_webhooks",
            "Push webhooks answered, by git host and outcome.",
            None,
            MetricType::Counter,
        )?;
        for (host, row) in Host::ALL.iter().zip(&m.webhooks) {
            for (outcome, c) in Outcome::ALL.iter().zip(row) {
                let n = c.load(Relaxed);
                if n > 0 {
                    hooks
                        .encode_family(&[("host", host.label()), ("outcome", outcome.label())])?
                        .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
                }
            }
        }
        let mut notes = encoder.encode_descriptor(
            "vexil_notifications",
            "Change notifications, by receiver (url0, slack0, ...) and outcome (delivered, retried, failed, dropped).",
            None,
            MetricType::Counter,
        )?;
        for receiver in m.notifier().map_or(&[][..], |n| n.receivers()) {
            for outcome in crate::notify::Outcome::ALL {
                let n = receiver.counted(outcome);
                notes
                    .encode_family(&[
                        ("receiver", receiver.name.as_str()),
                        ("outcome", outcome.label()),
                    ])?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
        if let Some(derived) = self
            .snapshot
            .as_deref()
            .and_then(Snapshot::derived::<Derived>)
        {
            derived.counters.encode(&mut encoder)?;
        }
        self.encode_reload(&mut encoder)
    }
}

impl Scrape {
    fn encode_reload(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let r = &self.reload;
        let c = &r.counts;
        let mut reloads = encoder.encode_descriptor(
            "vexil_reloads",
            "Reads of the flag source, by result.",
            None,
            MetricType::Counter,
        )?;
        let unchanged = c
            .attempts
            .saturating_sub(c.swaps)
            .saturating_sub(c.invalid)
            .saturating_sub(c.source_errors);
        for (result, n) in [
            ("swapped", c.swaps),
            ("unchanged", unchanged),
            ("invalid", c.invalid),
            ("source_error", c.source_errors),
        ] {
            reloads
                .encode_family(&[("result", result)])?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        plain(
            encoder,
            "vexil_reload_errors",
            "Failed reloads (invalid revisions and source errors).",
            MetricType::Counter,
            c.invalid + c.source_errors,
        )?;
        plain(
            encoder,
            "vexil_reload_consecutive_failures",
            "Failed reloads since the last success.",
            MetricType::Gauge,
            u64::from(r.consecutive_failures),
        )?;
        if let Some(at) = r.last_attempt_unix_ms {
            gauge_f64(
                encoder,
                "vexil_last_reload_timestamp_seconds",
                "When the source was last read.",
                at as f64 / 1000.0,
            )?;
        }
        if let Some((since, revision, flags)) = &r.serving {
            gauge_f64(
                encoder,
                "vexil_last_swap_timestamp_seconds",
                "When the served snapshot was swapped in.",
                *since as f64 / 1000.0,
            )?;
            let info = encoder.encode_descriptor(
                "vexil_snapshot_info",
                "The revision served (value 1).",
                None,
                MetricType::Gauge,
            )?;
            let mut info = info;
            ConstGauge::new(1i64)
                .encode(info.encode_family(&[("revision", revision.as_str())])?)?;
            plain(
                encoder,
                "vexil_flags",
                "Flags in the served snapshot.",
                MetricType::Gauge,
                *flags as u64,
            )?;
        }
        plain(
            encoder,
            "vexil_source_stale",
            "1 while the revision served came from the cache at start because the source cannot be read.",
            MetricType::Gauge,
            u64::from(r.source_stale),
        )?;
        plain(
            encoder,
            "vexil_reloader_healthy",
            "1 while the reloader runs and no read is stuck.",
            MetricType::Gauge,
            u64::from(r.reloader_healthy),
        )
    }
}
