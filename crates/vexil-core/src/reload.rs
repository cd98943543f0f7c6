//! The reloader: one thread per source that reads, validates and compiles new revisions away
//! from the serving path, and swaps in only fully valid snapshots.
//!
//! Reloads are serialized by construction (one thread does them all) and idempotent (a revision
//! already read is not compiled again). Wake-ups from a watching source are coalesced: the read
//! happens once the source has been quiet for its quiet period (or, under a constant stream of
//! events, at most `MAX_BURST_DELAY` after the first), so a burst of changes ends in one read of
//! the final state.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::compile::{CompileOptions, FileCache};
use crate::diag::{Diagnostic, Severity};
use crate::diff::flag_changes;
use crate::live::{Attempt, AttemptResult, Live};
use crate::source::{Fetched, Source, SourceError};

/// Under a constant stream of events, read at the latest this long after the first.
const MAX_BURST_DELAY: Duration = Duration::from_secs(2);
/// How long dropping a `Reloader` waits for a read in progress.
const STOP_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default)]
pub struct ReloadOptions {
    /// Start even if the first read fails or is invalid, serving nothing until a good revision.
    pub start_empty: bool,
    /// The date expiry warnings compare against; `None`: today (UTC) at each reload.
    pub today: Option<jiff::civil::Date>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read the flags source {source_name}: {message}")]
    Source {
        source_name: String,
        message: String,
    },
    #[error("the flags in {source_name} at revision {revision} are invalid ({} errors)", errors(.diagnostics))]
    Invalid {
        source_name: String,
        revision: String,
        diagnostics: Vec<Diagnostic>,
    },
    #[error(transparent)]
    Watch(#[from] SourceError),
    #[error("cannot start the reloader thread: {0}")]
    Thread(std::io::Error),
}

fn errors(diagnostics: &[Diagnostic]) -> usize {
    diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count()
}

/// Called with the outcome of a requested read.
type Reply = Box<dyn FnOnce(Attempt) + Send>;

enum Msg {
    Wake,
    Reload(Reply),
    Stop,
}

/// Keeps a `Live` snapshot current from a source. Dropping it stops the thread.
#[derive(Debug)]
pub struct Reloader {
    live: Arc<Live>,
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl Reloader {
    /// Reads the source once (failing on an unreadable or invalid source unless
    /// `start_empty`), then keeps watching it on a background thread.
    pub fn start(source: Box<dyn Source>, options: ReloadOptions) -> Result<Reloader, StartError> {
        let live = Arc::new(Live::new(source.describe()));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut worker = Worker {
            source,
            live: Arc::clone(&live),
            options,
            known: None,
            known_invalid: None,
            failures: 0,
            cache: FileCache::default(),
        };
        // Watch before the first read, so that nothing changed during it is missed.
        let wake_tx = tx.clone();
        worker.source.watch(Arc::new(move || {
            let _ = wake_tx.send(Msg::Wake);
        }))?;
        let first = worker.reload(true);
        if !worker.options.start_empty {
            let source_name = worker.source.describe();
            match first.result {
                AttemptResult::SourceError { message } => {
                    return Err(StartError::Source {
                        source_name,
                        message,
                    });
                }
                AttemptResult::Invalid { diagnostics } => {
                    return Err(StartError::Invalid {
                        source_name,
                        revision: first.revision.unwrap_or_default(),
                        diagnostics,
                    });
                }
                AttemptResult::Swapped { .. } | AttemptResult::Unchanged => {}
            }
        }
        live.update_reader(|r| r.alive = true);
        let thread = std::thread::Builder::new()
            .name("vexil-reload".into())
            .spawn(move || {
                // However the thread ends, the status says so.
                let _alive = AliveGuard(Arc::clone(&worker.live));
                worker.run(&rx);
            })
            .map_err(|e| {
                live.update_reader(|r| r.alive = false);
                StartError::Thread(e)
            })?;
        Ok(Reloader {
            live,
            tx,
            thread: Some(thread),
        })
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Reads the source now (a fetch for a remote; a rescan for a directory) and waits for the
    /// outcome. Concurrent requests share one read.
    pub fn reload(&self) -> Option<Attempt> {
        let (reply, outcome) = std::sync::mpsc::channel();
        self.reload_then(move |attempt| {
            let _ = reply.send(attempt);
        });
        outcome.recv().ok()
    }

    /// Asks for a read now and returns at once; `done` is called with the outcome from the
    /// reloader thread (so a caller that stops waiting holds no thread), or dropped uncalled if
    /// the reloader has stopped. Concurrent requests share one read.
    pub fn reload_then(&self, done: impl FnOnce(Attempt) + Send + 'static) {
        let _ = self.tx.send(Msg::Reload(Box::new(done)));
    }

    /// Asks for a read now without waiting.
    pub fn trigger(&self) {
        self.reload_then(|_| {});
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(thread) = self.thread.take() {
            // A read in progress finishes first; a fetch hanging on the network is left to
            // finish on its own (detached) rather than hang the caller's shutdown.
            let deadline = after(Instant::now(), STOP_WAIT);
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// Marks the reloader dead when its thread ends (returns or unwinds).
struct AliveGuard(Arc<Live>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.update_reader(|r| r.alive = false);
    }
}

fn attempt_now(revision: Option<String>, result: AttemptResult) -> Attempt {
    Attempt {
        at: std::time::SystemTime::now(),
        revision,
        result,
    }
}

/// `now + d`, saturating far in the future instead of overflowing (a "never" interval).
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

struct Worker {
    source: Box<dyn Source>,
    live: Arc<Live>,
    options: ReloadOptions,
    /// The revision read last (served or not).
    known: Option<String>,
    /// The diagnostics of `known` when it was invalid.
    known_invalid: Option<Vec<Diagnostic>>,
    /// Consecutive source errors, for back-off.
    failures: u32,
    /// The last read's files, decoded: only changed files are parsed again.
    cache: FileCache,
}

impl Worker {
    fn run(mut self, rx: &Receiver<Msg>) {
        let mut next_poll = after(Instant::now(), self.source.next_poll(self.failures));
        // First and last wake-up of the current burst.
        let mut burst: Option<(Instant, Instant)> = None;
        loop {
            let deadline = match burst {
                Some((first, last)) => {
                    after(last, self.source.quiet_period()).min(after(first, MAX_BURST_DELAY))
                }
                None => next_poll,
            };
            let timeout = deadline.saturating_duration_since(Instant::now());
            let repliers = match rx.recv_timeout(timeout) {
                Ok(Msg::Wake) => {
                    let now = Instant::now();
                    burst = Some(burst.map_or((now, now), |(first, _)| (first, now)));
                    continue;
                }
                Ok(Msg::Reload(reply)) => {
                    let mut repliers = vec![reply];
                    // Requests and events already queued are served by the same read.
                    while let Ok(msg) = rx.try_recv() {
                        match msg {
                            Msg::Reload(reply) => repliers.push(reply),
                            Msg::Wake => {}
                            Msg::Stop => return,
                        }
                    }
                    repliers
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => Vec::new(),
            };
            let forced = !repliers.is_empty();
            burst = None;
            let attempt = self.reload(forced);
            for reply in repliers {
                reply(attempt.clone());
            }
            next_poll = after(Instant::now(), self.source.next_poll(self.failures));
        }
    }

    /// One read, shown as in progress in the status while it runs (a stuck read is visible).
    fn reload(&mut self, force: bool) -> Attempt {
        self.live
            .update_reader(|r| r.reading_since = Some(std::time::SystemTime::now()));
        let attempt = self.read_and_apply(force);
        self.live.update_reader(|r| r.reading_since = None);
        attempt
    }

    fn read_and_apply(&mut self, force: bool) -> Attempt {
        let (revision, result) = match self.source.read(self.known.as_deref(), force) {
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                (
                    None,
                    AttemptResult::SourceError {
                        message: e.to_string(),
                    },
                )
            }
            Ok(None) => {
                self.failures = 0;
                if let (Some(revision), Some(diagnostics)) = (&self.known, &self.known_invalid) {
                    self.live.still_invalid(revision, diagnostics);
                    let result = AttemptResult::Invalid {
                        diagnostics: diagnostics.clone(),
                    };
                    return attempt_now(Some(revision.clone()), result);
                }
                (self.known.clone(), AttemptResult::Unchanged)
            }
            Ok(Some(fetched)) => {
                self.failures = 0;
                self.known = Some(fetched.revision.clone());
                let revision = Some(fetched.revision.clone());
                let result = self.apply(fetched);
                self.known_invalid = match &result {
                    AttemptResult::Invalid { diagnostics } => Some(diagnostics.clone()),
                    _ => None,
                };
                (revision, result)
            }
        };
        if !matches!(result, AttemptResult::Swapped { .. }) {
            self.live.record_attempt(revision.clone(), result.clone());
        }
        attempt_now(revision, result)
    }

    /// Compiles a revision and serves it if it is valid and new.
    fn apply(&mut self, fetched: Fetched) -> AttemptResult {
        let current = self.live.snapshot();
        // The revision served, read again (a forced reload, a ref moved back): nothing to do,
        // unless reading met problems (which the content hash does not cover).
        let served = current.as_ref().map(|s| s.revision()) == Some(fetched.revision.as_str());
        if served && fetched.loaded.diagnostics.is_empty() {
            return AttemptResult::Unchanged;
        }
        let options = CompileOptions {
            today: self.options.today.or_else(|| {
                Some(
                    jiff::Timestamp::now()
                        .to_zoned(jiff::tz::TimeZone::UTC)
                        .date(),
                )
            }),
        };
        let compiled = crate::compile_loaded(fetched.loaded, &options, &mut self.cache);
        match compiled.snapshot {
            None => AttemptResult::Invalid {
                diagnostics: compiled.diagnostics,
            },
            Some(mut snapshot) => {
                snapshot.revision = fetched.revision;
                let changes = flag_changes(current.as_deref(), &snapshot);
                let count = changes.len();
                self.live.swap(snapshot, changes, compiled.diagnostics);
                AttemptResult::Swapped { changes: count }
            }
        }
    }
}
