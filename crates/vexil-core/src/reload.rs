//! The reloader: one thread per source that reads, validates and compiles new revisions away
//! from the serving path, and swaps in only fully valid snapshots.
//!
//! Reloads are serialized by construction (one thread does them all) and idempotent (a revision
//! already read is not compiled again). Wake-ups from a watching source are coalesced: the read
//! happens once the source has been quiet for its quiet period (or, under a constant stream of
//! events, at most `MAX_BURST_DELAY` after the first), so a burst of changes ends in one read of
//! the final state.
//!
//! The thread is supervised: a panic in a read or a compile (git2 panics on some damaged
//! repositories) is a source error, after which the source starts afresh; a panic anywhere else
//! in the loop restarts the loop. Only a requested stop ends the thread. `Status::reader` shows
//! whether it runs and since when the read in progress has been running.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::compile::{CompileOptions, FileCache};
use crate::diag::{Diagnostic, Severity};
use crate::diff::flag_changes;
use crate::live::{Attempt, AttemptResult, Live};
use crate::snapshot::Snapshot;
use crate::source::{Fetched, Source, SourceError};

/// Under a constant stream of events, read at the latest this long after the first.
const MAX_BURST_DELAY: Duration = Duration::from_secs(2);
/// How long dropping a `Reloader` waits for a read in progress.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// After a panic, the wait before the next read (or the loop's restart), doubled while panics
/// follow one another, up to `MAX_PANIC_PAUSE`: a panic that recurs at once must not spin.
const PANIC_PAUSE: Duration = Duration::from_millis(100);
const MAX_PANIC_PAUSE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default)]
pub struct ReloadOptions {
    /// Builds what a server derives from each snapshot (see `Snapshot::derived`), on the
    /// reloader thread, before the snapshot is swapped in.
    pub prepare: Option<Prepare>,
    /// Start even if the first read fails or is invalid, serving nothing until a good revision.
    /// `Reloader::start` then returns at once, and the first read happens on the reloader
    /// thread (a source that hangs must not hold up start-up).
    pub start_empty: bool,
    /// The date expiry warnings compare against; `None`: today (UTC) at each reload.
    pub today: Option<jiff::civil::Date>,
    /// Never serve the revision a source's cache recorded as served by an earlier process
    /// (`Source::last_served`): with nothing served yet, an unreadable or invalid source
    /// serves nothing (and fails `start`, unless `start_empty`).
    pub require_fresh_start: bool,
    /// The client names the repository config may declare (`CompileOptions::clients`).
    pub clients: Option<&'static [&'static str]>,
}

type PrepareFn = dyn Fn(&Snapshot, Option<&Snapshot>) -> Arc<dyn Any + Send + Sync> + Send + Sync;

/// Derives a server's per-snapshot data from a new snapshot and the one it replaces (whose own
/// derived data it may reuse, such as counters that must not restart).
#[derive(Clone)]
pub struct Prepare(Arc<PrepareFn>);

impl Prepare {
    pub fn new(
        f: impl Fn(&Snapshot, Option<&Snapshot>) -> Arc<dyn Any + Send + Sync> + Send + Sync + 'static,
    ) -> Prepare {
        Prepare(Arc::new(f))
    }
}

impl std::fmt::Debug for Prepare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prepare(..)")
    }
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
    /// A read asked for by `trigger` (at most one is queued: `Reloader::pending`).
    Trigger,
    Stop,
}

/// Keeps a `Live` snapshot current from a source. Dropping it stops the thread.
#[derive(Debug)]
pub struct Reloader {
    live: Arc<Live>,
    tx: Sender<Msg>,
    /// A triggered read is queued and has not begun: further triggers join it. Cleared by the
    /// reloader thread as a read begins (a trigger during a read asks for one more).
    pending: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reloader {
    /// Starts watching the source and reading it on a background thread. Without
    /// `start_empty`, the first read happens before this returns, and an unreadable or invalid
    /// source is an error; with it, this returns at once and the first read happens on the
    /// thread (`Status::reader.reading_since` shows it in progress).
    pub fn start(source: Box<dyn Source>, options: ReloadOptions) -> Result<Reloader, StartError> {
        let live = Arc::new(Live::new(source.describe()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pending = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            source,
            live: Arc::clone(&live),
            pending: Arc::clone(&pending),
            options,
            known: None,
            known_invalid: None,
            failures: 0,
            panics: 0,
            cache: FileCache::default(),
        };
        // Watch before the first read, so that nothing changed during it is missed.
        let wake_tx = tx.clone();
        worker.source.watch(Arc::new(move || {
            let _ = wake_tx.send(Msg::Wake);
        }))?;
        if worker.options.start_empty {
            // The thread's first message: a forced read, shared with any requested meanwhile.
            let _ = tx.send(Msg::Reload(Box::new(|_| {})));
        } else {
            let first = worker.reload(true);
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
        // Alive from here: `start` returns a running reloader (no moment of "dead" at start-up).
        live.update_reader(|r| r.alive = true);
        let thread = std::thread::Builder::new()
            .name("vexil-reload".into())
            .spawn(move || {
                let mut alive = AliveGuard {
                    live: Arc::clone(&worker.live),
                    stopped: false,
                };
                worker.run(&rx);
                alive.stopped = true;
            })
            .map_err(|e| {
                live.update_reader(|r| r.alive = false);
                StartError::Thread(e)
            })?;
        Ok(Reloader {
            live,
            tx,
            pending,
            thread: Some(thread),
        })
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Reads the source now (a fetch for a remote; a rescan for a directory) and waits for the
    /// outcome; `None` if the reloader has stopped. Concurrent requests share one read.
    pub fn reload(&self) -> Option<Attempt> {
        let (reply, outcome) = std::sync::mpsc::channel();
        self.reload_then(move |attempt| {
            let _ = reply.send(attempt);
        });
        outcome.recv().ok()
    }

    /// Asks for a read now and returns at once; `done` is called with the outcome from the
    /// reloader thread (so a caller that stops waiting holds no thread), or dropped uncalled if
    /// the reloader has stopped. Concurrent requests share one read. `done` must be quick.
    pub fn reload_then(&self, done: impl FnOnce(Attempt) + Send + 'static) {
        let _ = self.tx.send(Msg::Reload(Box::new(done)));
    }

    /// Asks for a read now without waiting (a webhook, SIGHUP). Triggers coalesce: while a
    /// triggered read is queued and has not begun, more triggers join it, so a burst of any
    /// size costs at most the read in progress and one more (which begins after the last
    /// trigger that found none queued, so it sees what every trigger announced).
    pub fn trigger(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) && self.tx.send(Msg::Trigger).is_err() {
            // The reloader has stopped: nothing is queued.
            self.pending.store(false, Ordering::SeqCst);
        }
    }

    /// Whether a triggered read is queued and has not begun. Cleared when a read begins, after
    /// `Status::reader.reading_since` is set and before the read's attempt is recorded: a
    /// caller that sees it clear, then no read in progress, sees the triggered read counted.
    pub fn trigger_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
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

/// Marks the reloader dead if its thread ends without being asked to (it unwinds): a stopped
/// reloader was not failing, so a requested stop leaves the state as it was.
struct AliveGuard {
    live: Arc<Live>,
    stopped: bool,
}

impl Drop for AliveGuard {
    fn drop(&mut self) {
        if !self.stopped {
            self.live.update_reader(|r| r.alive = false);
        }
    }
}

/// Shows a read in progress in the status, and clears it however the read ends.
struct Reading(Arc<Live>);

impl Reading {
    fn start(live: &Arc<Live>) -> Reading {
        live.update_reader(|r| r.reading_since = Some(SystemTime::now()));
        Reading(Arc::clone(live))
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.update_reader(|r| r.reading_since = None);
    }
}

fn attempt_now(revision: Option<String>, result: AttemptResult) -> Attempt {
    Attempt {
        at: SystemTime::now(),
        revision,
        result,
    }
}

/// `now + d`, saturating far in the future instead of overflowing (a "never" interval).
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

/// The text of a panic's payload (`panic!` gives a `&str` or a `String`).
fn panic_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The pause after `panics` consecutive panics: `PANIC_PAUSE`, doubling, capped.
fn panic_pause(panics: u32) -> Duration {
    PANIC_PAUSE
        .saturating_mul(1 << panics.saturating_sub(1).min(16))
        .min(MAX_PANIC_PAUSE)
}

/// Calls each reply with the attempt. A reply that panics is counted as a recovered panic and
/// the others are still called.
fn answer(live: &Live, replies: &mut Vec<Reply>, attempt: &Attempt) {
    for done in replies.drain(..) {
        let attempt = attempt.clone();
        if catch_unwind(AssertUnwindSafe(move || done(attempt))).is_err() {
            live.update_reader(|r| r.restarts += 1);
        }
    }
}

/// The loop's state between iterations (kept across a restart, so no request is lost).
struct Loop {
    next_poll: Instant,
    /// First and last wake-up of the current burst.
    burst: Option<(Instant, Instant)>,
    /// Requests waiting for the read in progress.
    replies: Vec<Reply>,
}

enum Step {
    Continue,
    Stop,
}

struct Worker {
    source: Box<dyn Source>,
    live: Arc<Live>,
    /// `Reloader::pending`.
    pending: Arc<AtomicBool>,
    options: ReloadOptions,
    /// The revision read last (served or not).
    known: Option<String>,
    /// The diagnostics of `known` when it was invalid.
    known_invalid: Option<Vec<Diagnostic>>,
    /// Consecutive source errors, for back-off.
    failures: u32,
    /// Consecutive attempts (or loop iterations) that panicked, for a pause.
    panics: u32,
    /// The last read's files, decoded: only changed files are parsed again.
    cache: FileCache,
}

impl Worker {
    /// Serves wake-ups, polls and requests until asked to stop. A panic that escapes an
    /// iteration (from a change subscriber, an observer, or the loop itself) restarts the loop
    /// with the source and the caches reset, after a pause; the requests waiting are answered
    /// with a source error.
    fn run(mut self, rx: &Receiver<Msg>) {
        let mut state = Loop {
            next_poll: after(Instant::now(), self.next_poll()),
            burst: None,
            replies: Vec::new(),
        };
        loop {
            match catch_unwind(AssertUnwindSafe(|| self.step(rx, &mut state))) {
                Ok(Step::Stop) => return,
                Ok(Step::Continue) => {}
                Err(payload) => {
                    self.panics = self.panics.saturating_add(1);
                    self.live.update_reader(|r| {
                        r.restarts += 1;
                        r.reading_since = None;
                    });
                    // Whatever was half done is suspect: read and compile afresh.
                    self.source.reset();
                    self.cache = FileCache::default();
                    self.known = None;
                    self.known_invalid = None;
                    let message = format!("the reloader panicked: {}", panic_text(&*payload));
                    let attempt = attempt_now(None, AttemptResult::SourceError { message });
                    answer(&self.live, &mut state.replies, &attempt);
                    state.burst = None;
                    // Pause (still stopping on request), then read afresh at once.
                    let resume = after(Instant::now(), panic_pause(self.panics));
                    while Instant::now() < resume {
                        let wait = resume.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(wait) {
                            Ok(Msg::Reload(reply)) => state.replies.push(reply),
                            // `pending` stays set: the read after the pause answers it.
                            Ok(Msg::Trigger | Msg::Wake) => {}
                            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                            Err(RecvTimeoutError::Timeout) => break,
                        }
                    }
                    state.next_poll = Instant::now();
                }
            }
        }
    }

    /// One wait and, when it is time, one read.
    fn step(&mut self, rx: &Receiver<Msg>, state: &mut Loop) -> Step {
        let deadline = match state.burst {
            Some((first, last)) => {
                after(last, self.source.quiet_period()).min(after(first, MAX_BURST_DELAY))
            }
            None => state.next_poll,
        };
        let timeout = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(timeout) {
            Ok(Msg::Wake) => {
                let now = Instant::now();
                state.burst = Some(state.burst.map_or((now, now), |(first, _)| (first, now)));
                return Step::Continue;
            }
            Ok(first @ (Msg::Reload(_) | Msg::Trigger)) => {
                // Requests, triggers and events already queued are served by the same read.
                let mut next = Some(first);
                while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
                    match msg {
                        Msg::Reload(reply) => state.replies.push(reply),
                        Msg::Trigger | Msg::Wake => {}
                        Msg::Stop => return Step::Stop,
                    }
                }
                if state.replies.is_empty() && !self.pending.load(Ordering::SeqCst) {
                    // Only triggers, and a read that began after them (a poll) answered them.
                    return Step::Continue;
                }
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return Step::Stop,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let forced = !state.replies.is_empty();
        state.burst = None;
        let attempt = self.reload(forced);
        answer(&self.live, &mut state.replies, &attempt);
        state.next_poll = after(Instant::now(), self.next_poll());
        Step::Continue
    }

    /// The wait before the next poll: the source's, or longer after panics.
    fn next_poll(&self) -> Duration {
        let poll = self.source.next_poll(self.failures);
        if self.panics == 0 {
            poll
        } else {
            poll.max(panic_pause(self.panics))
        }
    }

    /// One read and compile, shown as in progress in the status while it runs (so a stuck
    /// read is visible).
    fn reload(&mut self, force: bool) -> Attempt {
        let _reading = Reading::start(&self.live);
        // After `reading_since` is set (see `Reloader::trigger_pending`): a trigger from now on
        // asks for another read, since this one may already be past what it announces. A
        // triggered read is forced, as a requested one is.
        let triggered = self.pending.swap(false, Ordering::SeqCst);
        self.read_and_apply(force || triggered)
    }

    fn read_and_apply(&mut self, force: bool) -> Attempt {
        let panics = self.panics;
        let attempt = self.read_and_apply_once(force);
        if self.panics == panics {
            // This attempt did not panic: the next one comes at the usual time.
            self.panics = 0;
        }
        attempt
    }

    fn read_and_apply_once(&mut self, force: bool) -> Attempt {
        let known = self.known.clone();
        let source = &mut self.source;
        let read = match catch_unwind(AssertUnwindSafe(|| source.read(known.as_deref(), force))) {
            Ok(read) => read.map_err(|e| e.to_string()),
            Err(payload) => {
                // git2 panics on some damaged repositories (a truncated pack): what the source
                // holds (an open repository) is suspect, so it starts afresh.
                self.source.reset();
                self.note_panic();
                Err(format!(
                    "reading the source panicked: {}",
                    panic_text(&*payload)
                ))
            }
        };
        let (revision, result) = match read {
            Err(message) => {
                self.failures = self.failures.saturating_add(1);
                (None, AttemptResult::SourceError { message })
            }
            Ok(None) => {
                self.failures = 0;
                self.live.set_stale(None);
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
                self.live.set_stale(None);
                self.known = Some(fetched.revision.clone());
                let revision = Some(fetched.revision.clone());
                let result = self.apply(fetched);
                self.known_invalid = match &result {
                    AttemptResult::Invalid { diagnostics } => Some(diagnostics.clone()),
                    _ => None,
                };
                if matches!(result, AttemptResult::SourceError { .. }) {
                    // The compile panicked: no verdict on this revision; read it again.
                    self.known = None;
                    self.failures = self.failures.saturating_add(1);
                }
                (revision, result)
            }
        };
        if !matches!(result, AttemptResult::Swapped { .. }) {
            self.live.record_attempt(revision.clone(), result.clone());
        }
        if let (AttemptResult::Swapped { .. }, Some(revision)) = (&result, &revision) {
            self.record_served(revision);
        }
        let attempt = attempt_now(revision, result);
        if attempt.is_failure()
            && self.live.snapshot().is_none()
            && !self.options.require_fresh_start
        {
            if let Some(fallback) = self.serve_last_served(&attempt) {
                return fallback;
            }
        }
        attempt
    }

    /// With nothing served yet and the source unreadable or invalid (`failed`): serves the
    /// revision the source's cache recorded as served by an earlier process, if it is still
    /// valid. An unreadable source is then marked stale until a read reaches it.
    fn serve_last_served(&mut self, failed: &Attempt) -> Option<Attempt> {
        let source = &mut self.source;
        let fetched = match catch_unwind(AssertUnwindSafe(|| source.last_served())) {
            Ok(Some(Ok(fetched))) => fetched,
            Ok(None | Some(Err(_))) => return None,
            Err(_) => {
                self.source.reset();
                self.note_panic();
                return None;
            }
        };
        let revision = fetched.revision.clone();
        let result = self.apply(fetched);
        if !matches!(result, AttemptResult::Swapped { .. }) {
            // No longer valid (or it did not compile): the failure stands.
            return None;
        }
        if let AttemptResult::SourceError { message } = &failed.result {
            self.live.set_stale(Some(format!(
                "the source cannot be read ({message}); serving revision {revision}, the last one this cache served, until it can"
            )));
        }
        self.record_served(&revision);
        Some(attempt_now(Some(revision), result))
    }

    /// Tells the source `revision` is served. Best effort: the record only serves a later
    /// start (a cache that cannot be written fails the fetches themselves, with the path), and
    /// a panic in it (git2) only costs the record.
    fn record_served(&mut self, revision: &str) {
        let source = &mut self.source;
        if catch_unwind(AssertUnwindSafe(|| source.served(revision))).is_err() {
            self.source.reset();
            self.note_panic();
        }
    }

    fn note_panic(&mut self) {
        self.panics = self.panics.saturating_add(1);
        self.live.update_reader(|r| r.restarts += 1);
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
            clients: self.options.clients,
        };
        let cache = &mut self.cache;
        let compiled = match catch_unwind(AssertUnwindSafe(|| {
            crate::compile_loaded(fetched.loaded, &options, cache)
        })) {
            Ok(compiled) => compiled,
            Err(payload) => {
                // A bug, not the files' fault; the per-file cache may be half updated.
                self.cache = FileCache::default();
                self.note_panic();
                return AttemptResult::SourceError {
                    message: format!("compiling the flags panicked: {}", panic_text(&*payload)),
                };
            }
        };
        match compiled.snapshot {
            None => AttemptResult::Invalid {
                diagnostics: compiled.diagnostics,
            },
            Some(mut snapshot) => {
                snapshot.revision = fetched.revision;
                let changes = flag_changes(current.as_deref(), &snapshot);
                let count = changes.len();
                if let Some(prepare) = &self.options.prepare {
                    let previous = current.as_deref();
                    match catch_unwind(AssertUnwindSafe(|| (prepare.0)(&snapshot, previous))) {
                        Ok(derived) => snapshot.derived = crate::snapshot::Derived(Some(derived)),
                        Err(payload) => {
                            self.note_panic();
                            return AttemptResult::SourceError {
                                message: format!(
                                    "preparing the snapshot for serving panicked: {}",
                                    panic_text(&*payload)
                                ),
                            };
                        }
                    }
                }
                self.live.swap(snapshot, changes, compiled.diagnostics);
                AttemptResult::Swapped { changes: count }
            }
        }
    }
}

#[cfg(test)]
mod tests;
