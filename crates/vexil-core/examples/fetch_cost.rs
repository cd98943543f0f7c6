//! What a remote source costs on the wire and on disk: a first fetch, an idle poll (the ref has
//! not moved) and the cache size, for `RemoteSource` (one shallow ref, no fetch while unmoved)
//! against the full mirror Vexil fetched before (every branch and tag, full history, a fetch at
//! every poll: the same libgit2 calls with the old refspecs, reproduced here).
//!
//! It builds a repository of `COMMITS` commits and `BRANCHES` branches, serves it with
//! `git daemon` on 127.0.0.1, and counts the bytes through a loopback proxy in front of it.
//!
//! ```sh
//! cargo run --release -p vexil-core --example fetch_cost
//! ```
#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vexil_core::Source as _;
use vexil_core::source::{RemoteOptions, RemoteSource};

const COMMITS: usize = 1000;
const BRANCHES: usize = 50;
const FILES: usize = 20;
const POLLS: usize = 20;

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("flags.git");
    build_repository(&repo);
    let daemon_port = free_port();
    let mut daemon = Command::new("git")
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            &format!("--port={daemon_port}"),
            &format!("--base-path={}", tmp.path().display()),
        ])
        .arg(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("git daemon");
    wait_listening(daemon_port);
    let bytes = Arc::new(AtomicU64::new(0));
    let proxy_port = proxy(daemon_port, Arc::clone(&bytes));
    let url = format!("git://127.0.0.1:{proxy_port}/flags.git");

    println!(
        "repository: {COMMITS} commits, {BRANCHES} branches, {FILES} flag files; `git daemon` behind a byte-counting proxy on 127.0.0.1"
    );
    println!(
        "| | first fetch: bytes | first fetch: ms | idle poll: bytes | idle poll: ms (median of {POLLS}) | cache on disk |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");

    // Today: RemoteSource.
    let caches = tempfile::tempdir().unwrap();
    let mut options = RemoteOptions::new(caches.path());
    options.reference = Some("main".into());
    let mut source = RemoteSource::new(&url, options);
    let (first_bytes, first_ms, revision) = measure(&bytes, || {
        source.read(None, true).unwrap().unwrap().revision
    });
    let (idle_bytes, idle_ms) = idle_polls(&bytes, || {
        let read = source.read(Some(&revision), false).unwrap();
        assert!(read.is_none(), "the ref did not move");
    });
    let size = du(source.cache_path());
    let name = "shallow, one ref, fetch only when moved";
    row(name, (first_bytes, first_ms), (idle_bytes, idle_ms), size);

    // Before: the full mirror, fetched at every poll.
    let mirror = tempfile::tempdir().unwrap();
    let cache = git2::Repository::init_bare(mirror.path()).unwrap();
    let full_fetch = || {
        let mut remote = cache.remote_anonymous(&url).unwrap();
        let mut options = git2::FetchOptions::new();
        options
            .prune(git2::FetchPrune::On)
            .download_tags(git2::AutotagOption::None);
        remote
            .fetch(
                &[
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
                Some(&mut options),
                None,
            )
            .unwrap();
    };
    let (first_bytes, first_ms, ()) = measure(&bytes, full_fetch);
    let (idle_bytes, idle_ms) = idle_polls(&bytes, full_fetch);
    let size = du(mirror.path());
    let name = "full mirror, fetched every poll (before)";
    row(name, (first_bytes, first_ms), (idle_bytes, idle_ms), size);
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// `POLLS` idle polls: the bytes of the last and the median time.
fn idle_polls(bytes: &AtomicU64, mut poll: impl FnMut()) -> (u64, f64) {
    let mut times = Vec::new();
    let mut last = 0;
    for _ in 0..POLLS {
        let (b, ms, ()) = measure(bytes, &mut poll);
        times.push(ms);
        last = b;
    }
    (last, median(times))
}

fn row(
    name: &str,
    (first_bytes, first_ms): (u64, f64),
    (idle_bytes, idle_ms): (u64, f64),
    size: u64,
) {
    println!(
        "| {name} | {first_bytes} | {first_ms:.1} | {idle_bytes} | {idle_ms:.2} | {} KiB |",
        size / 1024
    );
}

/// Bytes through the proxy (both ways) and milliseconds taken by `f`. The proxy's copy threads
/// may still be counting when `f` returns: wait until the count is still.
fn measure<T>(bytes: &AtomicU64, f: impl FnOnce() -> T) -> (u64, f64, T) {
    let before = bytes.load(Ordering::SeqCst);
    let started = Instant::now();
    let out = f();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut last = bytes.load(Ordering::SeqCst);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = bytes.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    (last - before, ms, out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn du(path: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            du(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "git daemon did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback TCP proxy to `target` that adds every byte it copies (both ways) to `bytes`.
fn proxy(target: u16, bytes: Arc<AtomicU64>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let bytes = Arc::clone(&bytes);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        bytes.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    port
}

/// `COMMITS` commits on `main`, each rewriting one of `FILES` flag files (about 2 KiB each),
/// then `BRANCHES` branches, each from an older commit with one commit of its own, and a tag
/// every 100 commits; built with `git fast-import`.
fn build_repository(path: &Path) {
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(args)
            .current_dir(path)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    std::fs::create_dir_all(path).unwrap();
    git(&["init", "-q", "--bare", "-b", "main"]);
    let mut stream = String::new();
    let file = |i: usize, version: usize| -> String {
        let mut text = format!("namespace: team-{i}\nflags:\n");
        for f in 0..24 {
            text.push_str(&format!(
                "  flag-{f}:\n    description: flag {f} of team {i}, version {version}\n    rules:\n      - rollout: {}\n",
                (version * 7 + f) % 100
            ));
        }
        text
    };
    for c in 0..COMMITS {
        let (i, content) = (c % FILES, file(c % FILES, c));
        stream.push_str(&format!(
            "commit refs/heads/main\nmark :{}\ncommitter T <t@example.com> {} +0000\ndata 10\ncommit {c:03}\n",
            c + 1,
            1_700_000_000 + c
        ));
        if c > 0 {
            stream.push_str(&format!("from :{c}\n"));
        }
        stream.push_str(&format!(
            "M 100644 inline flags/team-{i}.yaml\ndata {}\n{content}\n",
            content.len()
        ));
        if c % 100 == 99 {
            stream.push_str(&format!(
                "tag v{}\nfrom :{}\ntagger T <t@example.com> 1700000000 +0000\ndata 3\ntag\n",
                c / 100,
                c + 1
            ));
        }
    }
    for b in 0..BRANCHES {
        let base = COMMITS - 1 - b * (COMMITS / BRANCHES) + 1;
        let content = file(b % FILES, 10_000 + b);
        stream.push_str(&format!(
            "commit refs/heads/feature-{b}\ncommitter T <t@example.com> 1800000000 +0000\ndata 7\nbranch\nfrom :{base}\nM 100644 inline flags/team-{}.yaml\ndata {}\n{content}\n",
            b % FILES,
            content.len()
        ));
    }
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stream.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    git(&["gc", "-q"]);
}
