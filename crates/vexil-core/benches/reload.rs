//! Reload benchmarks: `cargo bench -p vexil-core --bench reload` (`-- --test` for a quick check).
//!
//! 1. Directory source: from a file save until evaluation returns the new value (default options:
//!    250 ms quiet period).
//! 2. Local git source: from starting `git commit` until evaluation returns the new value
//!    (default options: the ref is read every 100 ms).
//! 3. Rebuilding a 10,000-flag snapshot from a directory after one file changed: read, hash,
//!    compile, diff and swap (`Reloader::reload`).
//! 4. Resident memory of a fresh process holding a 10,000-flag snapshot (a child process).
//!
//! Every loop is bounded in count and each wait in time; only temp directories are touched.
#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vexil_core::source::{DirOptions, DirSource, GitOptions, GitSource};
use vexil_core::{AttemptResult, Context, Live, ReloadOptions, Reloader};

#[path = "common/corpus.rs"]
mod corpus;

/// A single wait longer than this fails the benchmark (something is broken, not slow).
const MAX_WAIT: Duration = Duration::from_secs(10);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--rss-child") {
        return rss_child(args.last().unwrap());
    }
    // `cargo bench -- --test` (as in ./test.sh) only checks that every part works.
    let quick = args.iter().any(|a| a == "--test");
    let changes = if quick { 3 } else { 100 };
    let rebuilds = if quick { 2 } else { 20 };

    println!("reload benchmarks ({changes} changes each; {rebuilds} rebuilds)");
    report(
        "directory: file save -> new value",
        &directory_latency(changes),
    );
    report("local git: git commit -> new value", &git_latency(changes));
    report(
        "rebuild 10,000 flags (one file changed)",
        &rebuild_10k(rebuilds),
    );
    rss_10k();
}

fn flag_text(value: usize) -> String {
    format!("flags:\n  a:\n    type: integer\n    variants: {{ v: {value} }}\n    default: v\n")
}

fn value(live: &Live) -> Option<i64> {
    let snapshot = live.load();
    let eval = snapshot
        .as_ref()?
        .evaluate("default", "a", &Context::new())
        .ok()?;
    match eval.variant.value {
        vexil_core::Value::Integer(i) => Some(i),
        _ => None,
    }
}

/// A random pause before a change, so that changes do not fall in step with the source's
/// poll or rescan timer (which would show one fixed phase instead of the distribution).
fn jitter(max_ms: u64) {
    std::thread::sleep(Duration::from_millis(fastrand::u64(0..=max_ms)));
}

/// Spins (yielding) until the flag serves `expected`; returns the time since `start`.
fn wait_value(live: &Live, expected: usize, start: Instant) -> Duration {
    let expected = i64::try_from(expected).unwrap();
    loop {
        if value(live) == Some(expected) {
            return start.elapsed();
        }
        assert!(start.elapsed() < MAX_WAIT, "value {expected} never served");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn directory_latency(changes: usize) -> Vec<Duration> {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a.yaml");
    std::fs::write(&file, flag_text(0)).unwrap();
    let source = DirSource::new(tmp.path(), DirOptions::default());
    let reloader = Reloader::start(Box::new(source), ReloadOptions::default()).unwrap();
    (1..=changes)
        .map(|i| {
            jitter(100);
            let start = Instant::now();
            std::fs::write(&file, flag_text(i)).unwrap();
            wait_value(reloader.live(), i, start)
        })
        .collect()
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@vexil.invalid")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@vexil.invalid")
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

fn git_latency(changes: usize) -> Vec<Duration> {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    git(repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("a.yaml"), flag_text(0)).unwrap();
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "0"]);
    let source = GitSource::new(
        repo,
        GitOptions {
            reference: "main".into(),
            ..GitOptions::default()
        },
    );
    let reloader = Reloader::start(Box::new(source), ReloadOptions::default()).unwrap();
    (1..=changes)
        .map(|i| {
            std::fs::write(repo.join("a.yaml"), flag_text(i)).unwrap();
            jitter(100);
            let start = Instant::now();
            git(repo, &["commit", "-q", "-a", "-m", &i.to_string()]);
            wait_value(reloader.live(), i, start)
        })
        .collect()
}

fn write_corpus(dir: &Path) {
    for (path, text) in corpus::generated_repository(10_000, 20) {
        std::fs::write(dir.join(path), text).unwrap();
    }
}

fn rebuild_10k(rebuilds: usize) -> Vec<Duration> {
    let tmp = tempfile::tempdir().unwrap();
    write_corpus(tmp.path());
    // Long quiet period and rescan: reads come from the explicit reloads below (a watch wake-up
    // may still cause a background read 2 s after a write, which only finds the state current).
    let options = DirOptions {
        quiet_period: Duration::from_secs(3600),
        rescan_interval: Duration::from_secs(3600),
    };
    let source = DirSource::new(tmp.path(), options);
    let reloader = Reloader::start(Box::new(source), ReloadOptions::default()).unwrap();
    assert_eq!(reloader.live().snapshot().unwrap().flag_count(), 10_000);
    let extra = tmp.path().join("team-0.yaml");
    let base = std::fs::read_to_string(&extra).unwrap();
    (1..=rebuilds)
        .map(|i| {
            // One flag's description changes in one of the 20 files.
            let text = base.replace("static flag 0\n", &format!("static flag 0 (edit {i})\n"));
            std::fs::write(&extra, text).unwrap();
            let start = Instant::now();
            let attempt = reloader.reload().unwrap();
            let took = start.elapsed();
            assert_eq!(attempt.result, AttemptResult::Swapped { changes: 1 });
            took
        })
        .collect()
}

/// Runs this binary again to load 10,000 flags in a fresh process, and prints its memory.
fn rss_10k() {
    let tmp = tempfile::tempdir().unwrap();
    write_corpus(tmp.path());
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--rss-child", tmp.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

fn rss_child(dir: &str) {
    let before = proc_status_kib("VmRSS");
    let source = DirSource::new(dir, DirOptions::default());
    let reloader = Reloader::start(Box::new(source), ReloadOptions::default()).unwrap();
    assert_eq!(reloader.live().snapshot().unwrap().flag_count(), 10_000);
    println!(
        "  resident memory with 10,000 flags loaded: {:.1} MiB (peak {:.1} MiB; {:.1} MiB before loading)",
        mib(proc_status_kib("VmRSS")),
        mib(proc_status_kib("VmHWM")),
        mib(before),
    );
}

fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/self/status"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn report(name: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let pick = |q: f64| {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  {name}: n={} p50={:.1} ms p99={:.1} ms min={:.1} ms max={:.1} ms",
        sorted.len(),
        ms(pick(0.50)),
        ms(pick(0.99)),
        ms(sorted[0]),
        ms(sorted[sorted.len() - 1]),
    );
}
