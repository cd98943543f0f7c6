//! The live snapshot that servers read, the reload status they report, and change events.
//!
//! Readers never block and never see a half-built snapshot: the snapshot sits behind an
//! `ArcSwapOption` and is only ever replaced whole. Status and observers sit behind mutexes
//! that only the reloader and status readers take, never the evaluation path.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;

use crate::diag::Diagnostic;
use crate::diff::FlagChanges;
use crate::snapshot::Snapshot;

/// What a swap changed (possibly nothing), handed to observers with the swap.
///
/// An event names revisions and flag keys, never a snapshot: streams that fall behind
/// keep events queued, and a queued event must not keep a whole snapshot alive.
#[derive(Debug)]
pub struct ChangeEvent {
    /// `None` for the first snapshot.
    pub old_revision: Option<String>,
    pub revision: String,
    pub changes: FlagChanges,
}

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    /// A new snapshot is served.
    Swapped { changes: usize },
    /// The source is at the revision already served (or already tried).
    Unchanged,
    /// The revision has errors; the last good snapshot keeps serving.
    Invalid { diagnostics: Vec<Diagnostic> },
    /// The source could not be read (repository missing, remote unreachable, ref deleted, ...).
    SourceError { message: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub at: SystemTime,
    /// The revision read; `None` when the source could not be read.
    pub revision: Option<String>,
    pub result: AttemptResult,
}

impl Attempt {
    pub fn is_failure(&self) -> bool {
        matches!(
            self.result,
            AttemptResult::Invalid { .. } | AttemptResult::SourceError { .. }
        )
    }
}

/// The snapshot being served.
#[derive(Debug, Clone, PartialEq)]
pub struct Serving {
    pub revision: String,
    pub since: SystemTime,
    pub flags: usize,
    /// Warnings of that revision (expired flags, unused segments, ...).
    pub warnings: Vec<Diagnostic>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub attempts: u64,
    pub swaps: u64,
    pub invalid: u64,
    pub source_errors: u64,
}

/// Whether the reloader can bring new revisions: its thread runs, and since when the read in
/// progress (if any) has been running. Servers turn a dead reloader or a stuck read into
/// unreadiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderState {
    /// The reloader thread is running: false before it starts and if it ever ends without
    /// being asked to stop (a requested stop leaves it as it was: stopping is not failing).
    pub alive: bool,
    /// When the read (and compile) in progress began; `None` between reads.
    pub reading_since: Option<SystemTime>,
    /// Panics the reloader recovered from: in a read or a compile (each also a source error)
    /// or anywhere else in its loop (which then starts afresh).
    pub restarts: u64,
}

/// The served revision was read from the source's cache at start because the source could not
/// be read; cleared by the first read that reaches the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    pub since: SystemTime,
    /// Why, with the revision served: for logs, `/readyz` and the Status API.
    pub reason: String,
}

/// Reload state, for health checks, metrics and the Status API.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// What the flags are read from.
    pub source: String,
    pub serving: Option<Serving>,
    pub last_attempt: Option<Attempt>,
    /// The most recent failed attempt, kept after later successes (with its time).
    pub last_error: Option<Attempt>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    pub counts: Counts,
    pub reader: ReaderState,
    /// Set while the revision served came from the cache because the source was unreachable.
    pub stale: Option<Stale>,
}

type Observer = Box<dyn Fn(&Attempt, Option<Swap<'_>>) + Send + Sync>;

/// A swap as observers see it: the snapshot now served and its change event.
#[derive(Debug, Clone, Copy)]
pub struct Swap<'a> {
    pub snapshot: &'a Arc<Snapshot>,
    pub event: &'a Arc<ChangeEvent>,
}

/// The shared handle: the current snapshot, the status, and observers.
pub struct Live {
    current: ArcSwapOption<Snapshot>,
    status: Mutex<Status>,
    observers: Mutex<Vec<Observer>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field(
                "revision",
                &self.snapshot().map(|s| s.revision().to_owned()),
            )
            .finish_non_exhaustive()
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain data: keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `f` on the callbacks in `list` without the lock held (so a callback may itself
/// observe), then puts them back with any added meanwhile. They are put back even
/// if a callback panics: the reloader recovers from the panic, and one faulty callback must not
/// silently remove all the others.
fn with_taken<T>(list: &Mutex<Vec<T>>, f: impl FnOnce(&mut Vec<T>)) {
    struct Restore<'a, T> {
        list: &'a Mutex<Vec<T>>,
        taken: Vec<T>,
    }
    impl<T> Drop for Restore<'_, T> {
        fn drop(&mut self) {
            let mut list = lock(self.list);
            let added = std::mem::replace(&mut *list, std::mem::take(&mut self.taken));
            list.extend(added);
        }
    }
    let mut restore = Restore {
        list,
        taken: std::mem::take(&mut *lock(list)),
    };
    f(&mut restore.taken);
}

impl Live {
    pub fn new(source: impl Into<String>) -> Live {
        Live {
            current: ArcSwapOption::empty(),
            status: Mutex::new(Status {
                source: source.into(),
                ..Status::default()
            }),
            observers: Mutex::new(Vec::new()),
        }
    }

    /// The snapshot served now (`None` until the first valid revision loads).
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// The snapshot served now, without touching its reference count (for hot paths).
    pub fn load(&self) -> arc_swap::Guard<Option<Arc<Snapshot>>> {
        self.current.load()
    }

    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    /// Reads the status in place (no copy of its diagnostics, which may be tens of thousands):
    /// for metrics and bounded Status answers. `f` runs under the status lock: keep it short.
    pub fn inspect<R>(&self, f: impl FnOnce(&Status) -> R) -> R {
        f(&lock(&self.status))
    }

    /// The reloader's state alone (cheap: probes call it; `status` copies diagnostics).
    pub fn reader(&self) -> ReaderState {
        lock(&self.status).reader
    }

    pub(crate) fn update_reader(&self, f: impl FnOnce(&mut ReaderState)) {
        f(&mut lock(&self.status).reader);
    }

    /// Marks the source stale (keeping the first `since` while it stays so), or fresh.
    pub(crate) fn set_stale(&self, reason: Option<String>) {
        let mut status = lock(&self.status);
        status.stale = match (status.stale.take(), reason) {
            (_, None) => None,
            (Some(old), Some(reason)) => Some(Stale { reason, ..old }),
            (None, Some(reason)) => Some(Stale {
                since: SystemTime::now(),
                reason,
            }),
        };
    }

    /// Calls `f` after every reload attempt, from the reloader thread. A swap comes with its
    /// event (the new snapshot, already served, and the flag changes, which may be empty). For
    /// servers: logs, health and change streams. `f` must be quick.
    pub fn observe(&self, f: impl Fn(&Attempt, Option<Swap<'_>>) + Send + Sync + 'static) {
        lock(&self.observers).push(Box::new(f));
    }

    fn notify(&self, attempt: &Attempt, swap: Option<Swap<'_>>) {
        with_taken(&self.observers, |observers| {
            for f in observers.iter() {
                f(attempt, swap);
            }
        });
    }

    /// Serves `snapshot` (its revision must differ from the one served), then tells observers.
    pub(crate) fn swap(&self, snapshot: Snapshot, changes: FlagChanges, warnings: Vec<Diagnostic>) {
        let snapshot = Arc::new(snapshot);
        let old = self.current.swap(Some(Arc::clone(&snapshot)));
        let revision = snapshot.revision().to_owned();
        let count = changes.len();
        let now = SystemTime::now();
        let attempt = Attempt {
            at: now,
            revision: Some(revision.clone()),
            result: AttemptResult::Swapped { changes: count },
        };
        {
            let mut status = lock(&self.status);
            status.serving = Some(Serving {
                revision: revision.clone(),
                since: now,
                flags: snapshot.flag_count(),
                warnings,
            });
            status.counts.swaps += 1;
            status.consecutive_failures = 0;
            record(&mut status, attempt.clone());
        }
        let event = Arc::new(ChangeEvent {
            old_revision: old.map(|o| o.revision().to_owned()),
            revision,
            changes,
        });
        self.notify(
            &attempt,
            Some(Swap {
                snapshot: &snapshot,
                event: &event,
            }),
        );
    }

    pub(crate) fn record_attempt(&self, revision: Option<String>, result: AttemptResult) {
        let mut status = lock(&self.status);
        match result {
            AttemptResult::Invalid { .. } => status.counts.invalid += 1,
            AttemptResult::SourceError { .. } => status.counts.source_errors += 1,
            AttemptResult::Unchanged | AttemptResult::Swapped { .. } => {}
        }
        let attempt = Attempt {
            at: SystemTime::now(),
            revision,
            result,
        };
        if attempt.is_failure() {
            status.consecutive_failures = status.consecutive_failures.saturating_add(1);
        } else {
            status.consecutive_failures = 0;
        }
        record(&mut status, attempt.clone());
        drop(status);
        self.notify(&attempt, None);
    }

    /// The source still holds `revision`, which was found invalid before: that stays the state
    /// (not a success, not a new failure to count).
    pub(crate) fn still_invalid(&self, revision: &str, diagnostics: &[Diagnostic]) {
        let mut status = lock(&self.status);
        status.counts.attempts += 1;
        status.consecutive_failures = status.consecutive_failures.max(1);
        let now = SystemTime::now();
        match status.last_attempt.as_mut() {
            Some(last)
                if last.revision.as_deref() == Some(revision)
                    && matches!(last.result, AttemptResult::Invalid { .. }) =>
            {
                last.at = now;
            }
            _ => {
                // Something else (a source error) came between: show the invalid revision again.
                status.last_attempt = Some(Attempt {
                    at: now,
                    revision: Some(revision.to_owned()),
                    result: AttemptResult::Invalid {
                        diagnostics: diagnostics.to_vec(),
                    },
                });
            }
        }
    }
}

fn record(status: &mut Status, attempt: Attempt) {
    status.counts.attempts += 1;
    if attempt.is_failure() {
        status.last_error = Some(attempt.clone());
    }
    status.last_attempt = Some(attempt);
}
