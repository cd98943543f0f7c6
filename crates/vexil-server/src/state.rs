//! What every front shares: the served snapshot with what the server derives from it, the
//! reloader, metrics, limits, change events and the shutdown signal.
//!
//! There is one served snapshot: the core's `Live`. The server's per-snapshot data (counter
//! rows, definitions, mirror tables, the key list) is built by `prepare` on the reloader
//! thread before the swap and travels inside the snapshot, so a reader that sees a snapshot
//! always sees its tables, and one atomic swap replaces both.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use vexil_core::diff::FlagRef;
use vexil_core::{AttemptResult, ChangeEvent, Live, Prepare, ReloadOptions, Reloader, Snapshot};

use crate::conn::ConnLimits;
use crate::context::Limits;
use crate::evaluation::Error;
use crate::grpc::Definitions;
use crate::metrics::{EvalCounters, Metrics};
use crate::mirrors::Tables;

/// What the server derives from a snapshot, once, before it is served.
#[derive(Debug)]
pub struct Derived {
    pub counters: EvalCounters,
    /// Flag and segment definitions as messages, built at the first ListFlags/GetFlag.
    pub definitions: OnceLock<Definitions>,
    /// The Flipper and Unleash mirrors' bodies and ETags.
    pub mirrors: Tables,
    /// Every flag (namespace and key, in snapshot order): what a change stream that fell behind
    /// compares against (a stream keeps this list, never the snapshot).
    pub keys: Arc<[FlagRef]>,
    /// Per namespace (only those with one), the flags whose answer can be drawn at random (a
    /// reachable `percentage_of_time` rule): answers holding one are tagged by their body.
    pub random: HashMap<Box<str>, HashSet<Box<str>>>,
}

impl Derived {
    fn new(snapshot: &Snapshot, previous: Option<&Derived>) -> Derived {
        Derived {
            counters: EvalCounters::new(snapshot, previous.map(|p| &p.counters)),
            mirrors: Tables::build(snapshot),
            keys: flag_keys(snapshot),
            definitions: OnceLock::new(),
            random: random_flags(snapshot),
        }
    }
}

fn random_flags(snapshot: &Snapshot) -> HashMap<Box<str>, HashSet<Box<str>>> {
    snapshot
        .namespaces()
        .iter()
        .filter_map(|ns| {
            let flags: HashSet<Box<str>> = ns
                .flags
                .iter()
                .filter(|f| can_draw(f))
                .map(|f| f.key.clone())
                .collect();
            (!flags.is_empty()).then(|| (ns.name.clone(), flags))
        })
        .collect()
}

/// Whether evaluating `flag` can draw: a `percentage_of_time` rule strictly between 0 and 100 %
/// that no earlier catch-all rule (no matchers, always serving) shadows.
fn can_draw(flag: &vexil_core::Flag) -> bool {
    use vexil_core::snapshot::{Gate, Outcome};
    if !flag.enabled {
        return false;
    }
    for rule in &flag.rules {
        match &rule.outcome {
            Outcome::Serve {
                gate: Gate::PercentageOfTime { threshold },
                ..
            } if *threshold > 0 && *threshold < vexil_core::bucket::BUCKETS => return true,
            Outcome::Serve {
                gate: Gate::Always, ..
            } if rule.matchers.is_empty() => return false,
            _ => {}
        }
    }
    false
}

/// The reloader's hook that builds `Derived` for every new snapshot.
pub fn prepare() -> Prepare {
    Prepare::new(|snapshot, previous| {
        let previous = previous.and_then(Snapshot::derived::<Derived>);
        Arc::new(Derived::new(snapshot, previous))
    })
}

fn flag_keys(snapshot: &Snapshot) -> Arc<[FlagRef]> {
    snapshot
        .namespaces()
        .iter()
        .flat_map(|ns| {
            ns.flags.iter().map(|f| FlagRef {
                namespace: ns.name.clone(),
                key: f.key.clone(),
            })
        })
        .collect()
}

/// The served snapshot and its derived data, borrowed for one request.
#[derive(Debug, Clone, Copy)]
pub struct Served<'a> {
    pub snapshot: &'a Snapshot,
    pub derived: &'a Derived,
}

impl Served<'_> {
    /// Whether an answer with `flag` of `namespace` (`None`: any of its flags) can differ
    /// between two evaluations of the same request.
    pub fn can_draw(&self, namespace: &str, flag: Option<&str>) -> bool {
        self.derived
            .random
            .get(namespace)
            .is_some_and(|flags| flag.is_none_or(|f| flags.contains(f)))
    }
}

/// The snapshot served when a request began (held without touching its reference count).
pub struct Current(arc_swap::Guard<Option<Arc<Snapshot>>>);

impl std::fmt::Debug for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Current(..)")
    }
}

impl Current {
    /// The snapshot with its tables, or `NoSnapshot` before the first valid revision.
    pub fn served(&self) -> Result<Served<'_>, Error> {
        let snapshot = self.0.as_deref().ok_or(Error::NoSnapshot)?;
        let derived = snapshot.derived::<Derived>().ok_or(Error::NoSnapshot)?;
        Ok(Served { snapshot, derived })
    }

    /// The snapshot itself, kept (for streams that outlive the request).
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.0.as_ref().map(Arc::clone)
    }
}

/// How many change events the broadcast keeps for streams that are behind. Events hold flag
/// keys, not snapshots; a stream further behind resyncs from the served snapshot.
pub const CHANGE_BUFFER: usize = 16;

#[derive(Debug, Clone)]
pub struct Options {
    pub limits: Limits,
    /// How long a Watch stream may stay silent before a heartbeat.
    pub heartbeat: Duration,
    /// How long a Reload call waits for the read to finish.
    pub reload_timeout: Duration,
    /// How long shutdown waits for in-flight calls and connections before it stops anyway.
    pub drain_timeout: Duration,
    /// How long a flagd EventStream may stay silent before a `keep_alive`.
    pub flagd_keep_alive: Duration,
    /// Where the flags come from, as read-only fronts tell clients that try to write.
    pub source: String,
    /// Sent to Flipper clients as `poll-interval` (seconds; their poller only slows down).
    pub flipper_poll_interval: Duration,
    /// Timeouts and caps of both ports' connections.
    pub connections: ConnLimits,
    /// A Watch or EventStream whose client takes no event for this long is ended.
    pub stalled_stream_timeout: Duration,
    /// A source read running longer than this makes the server unready (the reloader is stuck).
    pub read_stall_timeout: Duration,
    /// After a shutdown signal, how long readiness fails while the ports still accept.
    pub drain_window: Duration,
    /// Diagnostics in a Status or Reload answer (the rest are counted).
    pub max_status_diagnostics: usize,
    /// `/metrics` open even when tokens are configured.
    pub public_metrics: bool,
    /// The push webhooks' secret (`None`: the `/hooks/*` routes answer 404, not configured).
    pub webhook_secret: Option<crate::hooks::WebhookSecret>,
    /// Which pushes a webhook reads the source for.
    pub served_ref: crate::hooks::ServedRef,
    /// Origins whose pages may call the browser-facing fronts (none: no CORS at all).
    pub cors: crate::cors::CorsOrigins,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            limits: Limits::default(),
            heartbeat: Duration::from_secs(15),
            reload_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
            flagd_keep_alive: Duration::from_secs(20),
            source: "the flag repository".to_owned(),
            flipper_poll_interval: Duration::from_secs(10),
            connections: ConnLimits::default(),
            stalled_stream_timeout: Duration::from_secs(60),
            read_stall_timeout: Duration::from_secs(300),
            drain_window: Duration::ZERO,
            max_status_diagnostics: 100,
            public_metrics: false,
            webhook_secret: None,
            served_ref: crate::hooks::ServedRef::Any,
            cors: crate::cors::CorsOrigins::default(),
        }
    }
}

#[derive(Debug)]
pub struct AppState {
    pub live: Arc<Live>,
    pub reloader: Arc<Reloader>,
    pub metrics: Arc<Metrics>,
    pub options: Options,
    /// Every swap (with its flag changes, possibly none), for change streams.
    pub events: broadcast::Sender<Arc<ChangeEvent>>,
    /// The last changes, for SSE clients that resume with `Last-Event-ID`.
    pub recent: crate::sse::Recent,
    /// True once a snapshot is served (drives health).
    pub ready: watch::Sender<bool>,
    /// True once shutdown has begun (ends streams, fails readiness).
    pub shutdown: watch::Sender<bool>,
}

impl AppState {
    /// Starts the reloader on `source` with the server's `prepare` hook (so every snapshot is
    /// served with its tables) and the mirrors' names as the clients a repository config may
    /// declare, and wires the state to it.
    pub fn start(
        source: Box<dyn vexil_core::Source>,
        reload: ReloadOptions,
        options: Options,
    ) -> Result<Arc<AppState>, vexil_core::StartError> {
        let reloader = Reloader::start(
            source,
            ReloadOptions {
                prepare: Some(prepare()),
                clients: Some(vexil_mirror::Mirror::names()),
                ..reload
            },
        )?;
        Ok(AppState::new(reloader, options))
    }

    /// Wires the state to a reloader started with `prepare()` in its options (snapshots read
    /// without it are never served: they lack their tables): every change is broadcast to
    /// change streams, every attempt is logged.
    pub fn new(reloader: Reloader, options: Options) -> Arc<AppState> {
        let reloader = Arc::new(reloader);
        let live = Arc::clone(reloader.live());
        let (events, _) = broadcast::channel(CHANGE_BUFFER);
        let state = Arc::new(AppState {
            live: Arc::clone(&live),
            reloader,
            metrics: Arc::new(Metrics::default()),
            options,
            events,
            recent: crate::sse::Recent::default(),
            ready: watch::channel(false).0,
            shutdown: watch::channel(false).0,
        });
        let weak = Arc::downgrade(&state);
        // A start from the cache happened before this observer existed: said here, once.
        let stale_log = StaleLog::default();
        stale_log.note(&live);
        live.observe(move |attempt, swap| {
            let Some(state) = weak.upgrade() else { return };
            stale_log.note(&state.live);
            if let Some(swap) = swap {
                state.ready.send_replace(true);
                // Every swap, in order, after it is served. No receivers is fine: nobody
                // is watching right now.
                state.recent.push(swap.event);
                let _ = state.events.send(Arc::clone(swap.event));
            }
            log_attempt(attempt);
        });
        // The first snapshot may have been loaded before the observer existed.
        if live.load().is_some() {
            state.ready.send_replace(true);
        }
        state
    }

    /// The snapshot served now.
    pub fn current(&self) -> Current {
        Current(self.live.load())
    }

    /// The revision served now, if any.
    pub fn revision(&self) -> Option<String> {
        self.live.load().as_ref().map(|s| s.revision().to_owned())
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Whether the reloader can still bring new revisions: `Err` says why not (its thread is
    /// gone, or a read has been running for longer than the read-stall timeout).
    pub fn reader_health(&self) -> Result<(), String> {
        let reader = self.live.reader();
        if !reader.alive {
            return Err("the reloader has stopped: new revisions are not read".into());
        }
        if let Some(since) = reader.reading_since {
            let running = since.elapsed().unwrap_or_default();
            if running > self.options.read_stall_timeout {
                return Err(format!(
                    "a read of the source has been running for {}s (longer than the read-stall timeout of {}s): new revisions are not read",
                    running.as_secs(),
                    self.options.read_stall_timeout.as_secs()
                ));
            }
        }
        Ok(())
    }
}

/// Logs the source turning stale (with why) and fresh again, once per change.
#[derive(Debug, Default)]
struct StaleLog {
    was_stale: std::sync::atomic::AtomicBool,
}

impl StaleLog {
    fn note(&self, live: &vexil_core::Live) {
        let stale = live.inspect(|s| s.stale.is_some());
        if stale
            == self
                .was_stale
                .swap(stale, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        if stale {
            let reason = live.inspect(|s| s.stale.as_ref().map(|x| x.reason.clone()));
            let reason = reason.unwrap_or_default();
            tracing::warn!(reason = %reason, "source stale: serving the revision the cache served last");
        } else {
            tracing::info!("source reachable again: no longer stale");
        }
    }
}

fn log_attempt(attempt: &vexil_core::Attempt) {
    let revision = attempt.revision.as_deref().unwrap_or("");
    match &attempt.result {
        AttemptResult::Swapped { changes } => {
            tracing::info!(revision, changes, "serving a new revision");
        }
        AttemptResult::Unchanged => tracing::debug!(revision, "source unchanged"),
        AttemptResult::Invalid { diagnostics } => {
            let errors: Vec<String> = diagnostics
                .iter()
                .filter(|d| d.severity == vexil_core::Severity::Error)
                .take(20)
                .map(ToString::to_string)
                .collect();
            tracing::warn!(
                revision,
                errors = errors.len(),
                first_errors = ?errors,
                "invalid revision not served; the last good snapshot keeps serving"
            );
        }
        AttemptResult::SourceError { message } => {
            tracing::warn!(error = %message, "cannot read the flag source; the last good snapshot keeps serving");
        }
    }
}
