//! Prometheus metrics, kept in atomics and written in the text exposition format by hand.
//!
//! Evaluation counters are a table per snapshot (one row per flag, one column per reason),
//! built at swap time and indexed by the positions evaluation already looked up, so counting
//! costs one relaxed atomic add and no lookup, lock or allocation.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use vexil_core::Snapshot;
use vexil_core::eval::Reason;

const REASONS: [(Reason, &str); 5] = [
    (Reason::Static, "STATIC"),
    (Reason::TargetingMatch, "TARGETING_MATCH"),
    (Reason::Split, "SPLIT"),
    (Reason::Default, "DEFAULT"),
    (Reason::Disabled, "DISABLED"),
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

type Row = std::sync::Arc<[AtomicU64; 5]>;

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

    pub fn record(&self, namespace: usize, flag: usize, reason: Reason) {
        let row = self.offsets.get(namespace).map(|o| o + flag);
        if let Some(cell) = row.and_then(|r| self.counts.get(r)) {
            if let Some(c) = cell.get(reason_index(reason)) {
                c.fetch_add(1, Relaxed);
            }
        }
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP vexil_evaluations_total Flag evaluations, by namespace, flag and reason.\n# TYPE vexil_evaluations_total counter"
        );
        for ((ns, flag), counts) in self.keys.iter().zip(&self.counts) {
            for ((_, name), c) in REASONS.iter().zip(counts.iter()) {
                let n = c.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "vexil_evaluations_total{{namespace=\"{}\",flag=\"{}\",reason=\"{name}\"}} {n}",
                        escape(ns),
                        escape(flag)
                    );
                }
            }
        }
    }
}

/// The gRPC methods measured.
#[derive(Debug, Clone, Copy)]
pub enum Method {
    Evaluate,
    EvaluateBatch,
    ListFlags,
    GetFlag,
    Watch,
    Reload,
    Status,
    /// flagd's Resolve* calls (v1 and v2).
    FlagdResolve,
    /// OFREP's single and bulk evaluations.
    OfrepEvaluate,
}

const METHODS: [&str; 9] = [
    "Evaluate",
    "EvaluateBatch",
    "ListFlags",
    "GetFlag",
    "Watch",
    "Reload",
    "Status",
    "flagd.Resolve",
    "ofrep.Evaluate",
];

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

/// gRPC status codes counted per method: OK and every error code.
const CODES: [&str; 17] = [
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

#[derive(Debug, Default)]
struct MethodStats {
    latency: Histogram,
    codes: [AtomicU64; 17],
}

/// Process-wide request metrics (evaluation counters live with each snapshot).
#[derive(Debug, Default)]
pub struct Metrics {
    methods: [MethodStats; 9],
    batch_items: AtomicU64,
    unauthenticated: AtomicU64,
    connections_opened: AtomicU64,
    /// Per `conn::Closed` kind.
    connections_closed: [AtomicU64; 4],
    accept_errors: AtomicU64,
    streams_stalled: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, method: Method, took: Duration, code: tonic::Code) {
        if let Some(m) = self.methods.get(method as usize) {
            m.latency.observe(took);
            if let Some(c) = m.codes.get(code as usize) {
                c.fetch_add(1, Relaxed);
            }
        }
    }

    /// A call refused for a missing or unknown token (before it reached a method).
    pub fn unauthenticated(&self) {
        self.unauthenticated.fetch_add(1, Relaxed);
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

    pub fn batch_items(&self, n: usize) {
        self.batch_items.fetch_add(n as u64, Relaxed);
    }

    /// The exposition text: request metrics, evaluation counters, reload state and whether the
    /// reloader is healthy (`AppState::reader_health`).
    pub fn render(
        &self,
        counters: Option<&EvalCounters>,
        status: &vexil_core::Status,
        reloader_healthy: bool,
    ) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP vexil_grpc_requests_total gRPC requests, by method and status code.\n# TYPE vexil_grpc_requests_total counter"
        );
        for (name, m) in METHODS.iter().zip(&self.methods) {
            for (code, c) in CODES.iter().zip(&m.codes) {
                let n = c.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "vexil_grpc_requests_total{{method=\"{name}\",code=\"{code}\"}} {n}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP vexil_grpc_request_duration_seconds Time to answer a gRPC request (for Watch: to open the stream).\n# TYPE vexil_grpc_request_duration_seconds histogram"
        );
        for (name, m) in METHODS.iter().zip(&self.methods) {
            let mut cumulative = 0u64;
            for (i, b) in m.latency.buckets.iter().enumerate() {
                cumulative += b.load(Relaxed);
                let le = BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
                let _ = writeln!(
                    out,
                    "vexil_grpc_request_duration_seconds_bucket{{method=\"{name}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum = m.latency.sum_nanos.load(Relaxed) as f64 / 1e9;
            let _ = writeln!(
                out,
                "vexil_grpc_request_duration_seconds_sum{{method=\"{name}\"}} {sum}\nvexil_grpc_request_duration_seconds_count{{method=\"{name}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP vexil_batch_evaluations_total Flags evaluated through EvaluateBatch.\n# TYPE vexil_batch_evaluations_total counter\nvexil_batch_evaluations_total {}",
            self.batch_items.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP vexil_grpc_unauthenticated_total Calls refused for a missing or unknown bearer token.\n# TYPE vexil_grpc_unauthenticated_total counter\nvexil_grpc_unauthenticated_total {}",
            self.unauthenticated.load(Relaxed)
        );
        self.write_connections(&mut out);
        if let Some(counters) = counters {
            counters.write(&mut out);
        }
        write_reload(&mut out, status);
        let _ = writeln!(
            out,
            "# HELP vexil_reloader_healthy 1 while the reloader runs and no read is stuck.\n# TYPE vexil_reloader_healthy gauge\nvexil_reloader_healthy {}",
            u8::from(reloader_healthy)
        );
        out
    }
}

impl Metrics {
    fn write_connections(&self, out: &mut String) {
        let closed: u64 = self
            .connections_closed
            .iter()
            .map(|c| c.load(Relaxed))
            .sum();
        let _ = writeln!(
            out,
            "# HELP vexil_connections_open Open connections on both ports.\n# TYPE vexil_connections_open gauge\nvexil_connections_open {}",
            self.connections_opened.load(Relaxed).saturating_sub(closed)
        );
        let _ = writeln!(
            out,
            "# HELP vexil_connections_closed_total Closed connections, by why.\n# TYPE vexil_connections_closed_total counter"
        );
        for (how, c) in crate::conn::Closed::ALL
            .iter()
            .zip(&self.connections_closed)
        {
            let _ = writeln!(
                out,
                "vexil_connections_closed_total{{reason=\"{}\"}} {}",
                how.label(),
                c.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP vexil_accept_errors_total Failed accepts (out of descriptors, ...), each followed by a back-off.\n# TYPE vexil_accept_errors_total counter\nvexil_accept_errors_total {}",
            self.accept_errors.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP vexil_streams_stalled_total Watch and EventStream streams ended because the client stopped reading.\n# TYPE vexil_streams_stalled_total counter\nvexil_streams_stalled_total {}",
            self.streams_stalled.load(Relaxed)
        );
    }
}

fn write_reload(out: &mut String, s: &vexil_core::Status) {
    let c = &s.counts;
    let _ = writeln!(
        out,
        "# HELP vexil_reloads_total Reads of the flag source, by result.\n# TYPE vexil_reloads_total counter\n\
         vexil_reloads_total{{result=\"swapped\"}} {}\n\
         vexil_reloads_total{{result=\"unchanged\"}} {}\n\
         vexil_reloads_total{{result=\"invalid\"}} {}\n\
         vexil_reloads_total{{result=\"source_error\"}} {}",
        c.swaps,
        c.attempts
            .saturating_sub(c.swaps)
            .saturating_sub(c.invalid)
            .saturating_sub(c.source_errors),
        c.invalid,
        c.source_errors
    );
    let _ = writeln!(
        out,
        "# HELP vexil_reload_errors_total Failed reloads (invalid revisions and source errors).\n# TYPE vexil_reload_errors_total counter\nvexil_reload_errors_total {}",
        c.invalid + c.source_errors
    );
    let _ = writeln!(
        out,
        "# HELP vexil_reload_consecutive_failures Failed reloads since the last success.\n# TYPE vexil_reload_consecutive_failures gauge\nvexil_reload_consecutive_failures {}",
        s.consecutive_failures
    );
    if let Some(a) = &s.last_attempt {
        let _ = writeln!(
            out,
            "# HELP vexil_last_reload_timestamp_seconds When the source was last read.\n# TYPE vexil_last_reload_timestamp_seconds gauge\nvexil_last_reload_timestamp_seconds {}",
            crate::convert::unix_ms(a.at) as f64 / 1000.0
        );
    }
    if let Some(serving) = &s.serving {
        let _ = writeln!(
            out,
            "# HELP vexil_last_swap_timestamp_seconds When the served snapshot was swapped in.\n# TYPE vexil_last_swap_timestamp_seconds gauge\nvexil_last_swap_timestamp_seconds {}\n\
             # HELP vexil_snapshot_info The revision served (value 1).\n# TYPE vexil_snapshot_info gauge\nvexil_snapshot_info{{revision=\"{}\"}} 1\n\
             # HELP vexil_flags Flags in the served snapshot.\n# TYPE vexil_flags gauge\nvexil_flags {}",
            crate::convert::unix_ms(serving.since) as f64 / 1000.0,
            escape(&serving.revision),
            serving.flags
        );
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
