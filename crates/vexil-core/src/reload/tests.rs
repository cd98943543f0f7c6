//! The reloader driven by a scripted source: panics, slow reads, callbacks, `start_empty`; and
//! a git source whose object is damaged, then repaired.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Msg, ReloadOptions, Reloader};
use crate::live::{AttemptResult, Live};
use crate::source::{Fetched, Source, SourceError, from_memory};

/// Every wait in these tests is a poll for a state, bounded by this.
const PATIENCE: Duration = Duration::from_secs(20);

fn flag_file(value: &str) -> String {
    format!("flags:\n  a:\n    type: string\n    variants: {{ v: \"{value}\" }}\n    default: v\n")
}

/// What the scripted source serves, and what it saw.
#[derive(Debug, Default)]
struct Script {
    /// The flag's value; the revision is `rev-<value>`.
    value: String,
    /// Reads (1-based) that panic.
    panic_on: Vec<usize>,
    reads: usize,
    resets: usize,
    /// While set, a read waits for a message on it (at most `PATIENCE`) before answering.
    gate: Option<Receiver<()>>,
}

#[derive(Debug, Clone)]
struct Scripted(Arc<Mutex<Script>>);

impl Scripted {
    fn new(value: &str) -> Scripted {
        Scripted(Arc::new(Mutex::new(Script {
            value: value.into(),
            ..Script::default()
        })))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Script) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }

    /// Makes the next reads wait until the returned sender sends (one message per read).
    fn close_gate(&self) -> Sender<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.with(|s| s.gate = Some(rx));
        tx
    }
}

impl Source for Scripted {
    fn describe(&self) -> String {
        "scripted".into()
    }

    /// Only requested reads happen during a test.
    fn next_poll(&self, _failures: u32) -> Duration {
        Duration::from_secs(3600)
    }

    fn read(&mut self, known: Option<&str>, force: bool) -> Result<Option<Fetched>, SourceError> {
        // What this read returns is decided when it begins (a test may change it meanwhile).
        let (n, panics, gate, value) = self.with(|s| {
            s.reads += 1;
            let panics = s.panic_on.contains(&s.reads);
            (s.reads, panics, s.gate.take(), s.value.clone())
        });
        if let Some(gate) = gate {
            let _ = gate.recv_timeout(PATIENCE);
            self.with(|s| s.gate = Some(gate));
        }
        if panics {
            panic!("scripted panic in read {n}");
        }
        let revision = format!("rev-{value}");
        if !force && known == Some(revision.as_str()) {
            return Ok(None);
        }
        Ok(Some(Fetched {
            revision,
            loaded: from_memory([("a.yaml", flag_file(&value))]),
        }))
    }

    fn reset(&mut self) {
        self.with(|s| s.resets += 1);
    }
}

fn start(source: &Scripted, start_empty: bool) -> Reloader {
    Reloader::start(
        Box::new(source.clone()),
        ReloadOptions {
            start_empty,
            ..ReloadOptions::default()
        },
    )
    .unwrap()
}

fn served(live: &Live) -> Option<String> {
    live.snapshot().map(|s| s.revision().to_owned())
}

/// Polls `f` until it holds; false if it never did within `PATIENCE`.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

#[test]
fn a_panicking_read_is_a_source_error_and_the_source_starts_afresh() {
    let source = Scripted::new("one");
    source.with(|s| s.panic_on = vec![2]);
    let reloader = start(&source, false);
    assert_eq!(served(reloader.live()).as_deref(), Some("rev-one"));

    let attempt = reloader.reload().unwrap();
    match &attempt.result {
        AttemptResult::SourceError { message } => assert!(
            message.starts_with("reading the source panicked: scripted panic in read 2"),
            "{message}"
        ),
        other => panic!("expected a source error, got {other:?}"),
    }
    assert_eq!(source.with(|s| s.resets), 1);
    let status = reloader.live().status();
    assert_eq!(status.counts.source_errors, 1);
    assert_eq!(status.consecutive_failures, 1);
    assert_eq!(status.reader.restarts, 1);
    assert!(status.reader.alive);
    assert_eq!(status.reader.reading_since, None);

    // The thread still runs: a later good read is served.
    source.with(|s| s.value = "two".into());
    let attempt = reloader.reload().unwrap();
    assert_eq!(attempt.result, AttemptResult::Swapped { changes: 1 });
    assert_eq!(served(reloader.live()).as_deref(), Some("rev-two"));
    assert_eq!(reloader.live().status().consecutive_failures, 0);
}

#[test]
fn a_panic_outside_the_read_restarts_the_loop_and_keeps_every_observer() {
    let source = Scripted::new("one");
    let reloader = start(&source, false);
    let live = reloader.live();
    // Two observers: the first panics at the next swap only; the second counts swaps.
    let armed = Arc::new(Mutex::new(true));
    let trap = Arc::clone(&armed);
    live.observe(move |_, swap| {
        if swap.is_some() && std::mem::replace(&mut *trap.lock().unwrap(), false) {
            panic!("observer bug");
        }
    });
    let swaps = Arc::new(Mutex::new(0));
    let counted = Arc::clone(&swaps);
    live.observe(move |_, swap| *counted.lock().unwrap() += usize::from(swap.is_some()));

    source.with(|s| s.value = "two".into());
    let attempt = reloader.reload().unwrap();
    match &attempt.result {
        AttemptResult::SourceError { message } => {
            assert_eq!(message, "the reloader panicked: observer bug");
        }
        other => panic!("expected a source error, got {other:?}"),
    }
    assert_eq!(live.reader().restarts, 1);
    assert!(live.reader().alive);
    assert_eq!(source.with(|s| s.resets), 1);
    // The swap itself had happened before the observer panicked.
    assert_eq!(served(live).as_deref(), Some("rev-two"));
    // After a pause, the restarted loop reads afresh (the same revision: nothing to do).
    let reads = source.with(|s| s.reads);
    assert!(eventually(|| source.with(|s| s.reads) > reads));
    assert!(eventually(|| live.reader().reading_since.is_none()));

    source.with(|s| s.value = "three".into());
    let attempt = reloader.reload().unwrap();
    assert_eq!(attempt.result, AttemptResult::Swapped { changes: 1 });
    assert_eq!(served(live).as_deref(), Some("rev-three"));
    // Both observers are still registered after the panic.
    assert_eq!(
        *swaps.lock().unwrap(),
        1,
        "the counter missed the panicked swap only"
    );
    assert!(!*armed.lock().unwrap());
}

#[test]
fn reading_since_shows_a_read_in_progress() {
    let source = Scripted::new("one");
    let reloader = start(&source, false);
    let live = Arc::clone(reloader.live());
    assert_eq!(live.reader().reading_since, None);
    assert!(live.reader().alive);

    let open = source.close_gate();
    let before = std::time::SystemTime::now();
    let (tx, rx) = std::sync::mpsc::channel();
    reloader.reload_then(move |attempt| {
        let _ = tx.send(attempt);
    });
    assert!(eventually(|| live.reader().reading_since.is_some()));
    let since = live.reader().reading_since.unwrap();
    assert!(since >= before, "{since:?} {before:?}");
    // Still in progress: the read waits for the gate.
    assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    assert!(live.reader().reading_since.is_some());

    open.send(()).unwrap();
    let attempt = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(attempt.result, AttemptResult::Unchanged);
    assert_eq!(live.reader().reading_since, None);
}

#[test]
fn reload_then_answers_from_the_reloader_thread_and_merges_requests() {
    let source = Scripted::new("one");
    let reloader = start(&source, false);
    let reads_before = source.with(|s| s.reads);

    // Hold one read at the gate, and queue three requests behind it.
    let open = source.close_gate();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx0 = tx.clone();
    reloader.reload_then(move |a| tx0.send((0, a, thread_name())).unwrap());
    assert!(eventually(|| source.with(|s| s.reads) > reads_before));
    source.with(|s| s.value = "two".into());
    for i in 1..=3 {
        let tx = tx.clone();
        reloader.reload_then(move |a| tx.send((i, a, thread_name())).unwrap());
    }
    open.send(()).unwrap();
    open.send(()).unwrap();
    let mut answers: Vec<_> = (0..4).map(|_| rx.recv_timeout(PATIENCE).unwrap()).collect();
    answers.sort_by_key(|(i, _, _)| *i);
    assert!(answers.iter().all(|(_, _, name)| name == "vexil-reload"));
    // The first request read "one" (unchanged); the three queued behind it shared one read.
    assert_eq!(answers[0].1.result, AttemptResult::Unchanged);
    for (_, attempt, _) in &answers[1..] {
        assert_eq!(attempt.result, AttemptResult::Swapped { changes: 1 });
        assert_eq!(attempt, &answers[1].1);
    }
    assert_eq!(source.with(|s| s.reads) - reads_before, 2);
}

/// A burst of triggers while a read is held: one more read, which sees the state after the
/// last trigger; the channel holds one queued trigger, not one per call.
#[test]
fn a_burst_of_triggers_during_a_read_costs_one_more_read() {
    let source = Scripted::new("one");
    let reloader = start(&source, false);
    let reads_before = source.with(|s| s.reads);
    assert!(!reloader.trigger_pending());

    let open = source.close_gate();
    reloader.trigger();
    assert!(eventually(|| source.with(|s| s.reads) > reads_before));
    // The held read has begun: the flag is clear, and the next trigger queues one more read.
    assert!(eventually(|| !reloader.trigger_pending()));
    source.with(|s| s.value = "two".into());
    for _ in 0..50 {
        reloader.trigger();
        assert!(reloader.trigger_pending());
    }
    open.send(()).unwrap();
    open.send(()).unwrap();
    assert!(eventually(
        || served(reloader.live()).as_deref() == Some("rev-two")
    ));
    assert!(eventually(|| {
        !reloader.trigger_pending() && reloader.live().reader().reading_since.is_none()
    }));
    assert_eq!(source.with(|s| s.reads) - reads_before, 2);
    assert_eq!(
        reloader.live().status().counts.attempts,
        3,
        "start, held, one more"
    );
}

/// A triggered read is forced (a remote fetches even when its ref was read last) and is seen
/// as pending, then in progress, then counted: never none of the three.
#[test]
fn a_trigger_is_pending_then_reading_then_counted() {
    let source = Scripted::new("one");
    let reloader = start(&source, false);
    let live = Arc::clone(reloader.live());
    let attempts = live.status().counts.attempts;
    let open = source.close_gate();
    reloader.trigger();
    // Observed in the order the reloader moves on: pending, reading, counted.
    let mut seen = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let pending = reloader.trigger_pending();
        let reading = live.reader().reading_since.is_some();
        let counted = live.status().counts.attempts > attempts;
        assert!(pending || reading || counted, "the trigger vanished");
        if seen.last() != Some(&(pending, reading, counted)) {
            seen.push((pending, reading, counted));
        }
        if reading && !pending {
            let _ = open.send(());
        }
        if counted && !reading {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(seen.last(), Some(&(false, false, true)), "{seen:?}");
    assert_eq!(
        live.status().last_attempt.map(|a| a.result),
        Some(AttemptResult::Unchanged)
    );
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_owned()
}

#[test]
fn a_stopped_reloader_drops_callbacks_uncalled() {
    let source = Scripted::new("one");
    let reloader = start(&source, false);
    reloader.tx.send(Msg::Stop).unwrap();
    let thread = reloader.thread.as_ref().unwrap();
    assert!(eventually(|| thread.is_finished()));

    let (tx, rx) = std::sync::mpsc::channel::<()>();
    reloader.reload_then(move |_| tx.send(()).unwrap());
    // Dropped, not called: the channel is closed without a message.
    assert_eq!(
        rx.recv_timeout(PATIENCE),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
    );
    assert_eq!(reloader.reload(), None);
    // A requested stop is not a death.
    assert!(reloader.live().reader().alive);
}

#[test]
fn start_empty_returns_before_the_first_read() {
    let source = Scripted::new("one");
    let open = source.close_gate();
    // The first read waits at the gate, yet start returns.
    let reloader = start(&source, true);
    let live = Arc::clone(reloader.live());
    assert!(eventually(|| live.reader().reading_since.is_some()));
    assert!(live.reader().alive);
    assert_eq!(served(&live), None);
    assert_eq!(live.status().last_attempt, None);

    open.send(()).unwrap();
    assert!(eventually(|| served(&live).as_deref() == Some("rev-one")));
    assert_eq!(live.reader().reading_since, None);
}

#[test]
fn before_its_thread_runs_a_reader_is_not_alive() {
    assert!(!Live::new("x").reader().alive);
}

/// A verdict on a commit is remembered for its id; one that came from a damaged object must not
/// be, or the commit stays judged after the object is repaired.
#[test]
fn a_damaged_blob_is_read_again_once_repaired() {
    use crate::source::{GitOptions, GitSource};
    let dir = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init(dir.path()).unwrap();
    let blob = repo.blob(flag_file("fine").as_bytes()).unwrap();
    let mut tree = repo.treebuilder(None).unwrap();
    tree.insert("a.yaml", blob, 0o100_644).unwrap();
    let tree = repo.find_tree(tree.write().unwrap()).unwrap();
    let who = git2::Signature::now("t", "t@example.com").unwrap();
    let commit = repo
        .commit(Some("HEAD"), &who, &who, "flags", &tree, &[])
        .unwrap();

    // The loose object now claims a size over the limit (its content no longer matches its id).
    let hex = blob.to_string();
    let object = dir
        .path()
        .join(".git/objects")
        .join(&hex[..2])
        .join(&hex[2..]);
    let good = std::fs::read(&object).unwrap();
    let damaged = zlib_stored(b"blob 99999999\0flags: {}\n");
    let mut writable = std::fs::metadata(&object).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    writable.set_readonly(false);
    std::fs::set_permissions(&object, writable).unwrap();
    std::fs::write(&object, &damaged).unwrap();

    let source = GitSource::new(
        dir.path(),
        GitOptions {
            poll_interval: Duration::from_millis(10),
            ..GitOptions::default()
        },
    );
    let reloader = Reloader::start(
        Box::new(source),
        ReloadOptions {
            start_empty: true,
            ..ReloadOptions::default()
        },
    )
    .unwrap();
    let live = Arc::clone(reloader.live());
    assert!(eventually(|| live.status().last_attempt.is_some()));
    match live.status().last_attempt.unwrap().result {
        AttemptResult::SourceError { message } => {
            assert!(message.contains("cannot read a.yaml"), "{message}");
        }
        other => panic!("a damaged object is a source error, not a verdict: {other:?}"),
    }

    // Repaired: the next poll (not a forced reload) serves the same commit.
    std::fs::write(&object, &good).unwrap();
    assert!(eventually(|| served(&live) == Some(commit.to_string())));
}

/// A zlib stream holding `data` in one stored (uncompressed) block: how a loose object is
/// written, without a compression library.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).unwrap();
    let mut out = vec![0x78, 0x01, 0x01];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}
