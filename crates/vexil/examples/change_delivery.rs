//! What change delivery costs and how fast it is (issue 16), against a `vexil serve` process on a
//! local git ref, all on 127.0.0.1:
//!
//! 1. commit -> notification received (a `--notify-url` receiver here) and commit -> SSE event
//!    received (one `/events` stream), p50/p99 over `--commits` commits; the clock starts when
//!    `git commit` is started (its own run time is counted);
//! 2. `--streams` idle `/events` streams (HTTP/1.1, one connection each): the server's resident
//!    memory per stream, then one commit fanned out to all of them: commit -> first stream,
//!    commit -> last stream.
//!
//! ```sh
//! ulimit -n 20000   # the streams' sockets, on this side too
//! cargo run --release -p vexil --example change_delivery -- --bin target/release/vexil
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Parser)]
struct Args {
    /// The `vexil` binary to measure (also VEXIL_BIN).
    #[arg(long, env = "VEXIL_BIN", default_value = "target/release/vexil")]
    bin: PathBuf,
    #[arg(long, default_value_t = 100)]
    commits: usize,
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// The server's `--poll-interval` (how often it reads the local ref).
    #[arg(long, default_value = "100ms")]
    poll_interval: String,
}

type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new("git")
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Vexil Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@vexil.invalid")
        .env("GIT_COMMITTER_NAME", "Vexil Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@vexil.invalid")
        .output()?;
    if !output.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// Commits generation `generation`; returns the commit and when `git commit` started (the ref
/// moves before the command exits, so the clock starts with the command: its own run time is
/// counted, an upper bound).
fn commit(repo: &Path, generation: usize) -> anyhow::Result<(String, Instant)> {
    std::fs::create_dir_all(repo.join("flags"))?;
    std::fs::write(
        repo.join("flags/a.yaml"),
        format!(
            "flags:\n  a:\n    type: string\n    variants: {{ v: \"g{generation}\" }}\n    default: v\n"
        ),
    )?;
    git(repo, &["add", "-A"])?;
    let at = Instant::now();
    git(repo, &["commit", "-q", "-m", "next"])?;
    Ok((git(repo, &["rev-parse", "HEAD"])?, at))
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

/// A receiver that notes when each revision's notification arrived.
async fn receiver(seen: Seen) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(stream);
                let mut length = 0;
                let mut line = String::new();
                while reader.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).await.is_err() {
                    return;
                }
                let at = Instant::now();
                if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&body) {
                    if let Some(r) = doc.get("revision").and_then(|r| r.as_str()) {
                        seen.lock().map(|mut s| s.insert(r.to_owned(), at)).ok();
                    }
                }
                let _ = reader
                    .get_mut()
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    Ok(addr)
}

/// An `/events` stream (HTTP/1.1) that notes when each `id:` arrives; returns once the opening
/// event has.
async fn stream(addr: SocketAddr, seen: Seen) -> anyhow::Result<()> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
        .await?;
    let mut lines = tokio::io::BufReader::new(tcp).lines();
    while let Some(line) = lines.next_line().await? {
        if line.starts_with("id: ") {
            break;
        }
    }
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(id) = line.strip_prefix("id: ") {
                let at = Instant::now();
                seen.lock().map(|mut s| s.insert(id.to_owned(), at)).ok();
            }
        }
    });
    Ok(())
}

async fn wait_for(seen: &Seen, revision: &str) -> anyhow::Result<Instant> {
    for _ in 0..20_000 {
        if let Some(at) = seen.lock().ok().and_then(|s| s.get(revision).copied()) {
            return Ok(at);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bail!("{revision} never arrived")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let repo = tempfile::tempdir()?;
    git(repo.path(), &["init", "-q", "-b", "main"])?;
    commit(repo.path(), 0)?;
    let notified: Seen = Arc::default();
    let hook = receiver(Arc::clone(&notified)).await?;
    let mut child = tokio::process::Command::new(&args.bin)
        .arg("serve")
        .arg(repo.path())
        .args(["--ref", "main", "--flags-dir", "flags"])
        .args(["--poll-interval", &args.poll_interval])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--sync-addr", "127.0.0.1:0"])
        .args(["--notify-url", &format!("http://{hook}/")])
        .args(["--max-connections", &(args.streams + 1000).to_string()])
        .args(["--stalled-stream-timeout", "600s", "--idle-timeout", "600s"])
        .env("VEXIL_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start vexil serve")?;
    let pid = child.id().context("no pid")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let line = tokio::io::BufReader::new(stdout)
        .lines()
        .next_line()
        .await?
        .context("vexil serve printed nothing")?;
    let http: SocketAddr = line
        .split("HTTP on ")
        .nth(1)
        .and_then(|r| r.split([',', ' ']).next())
        .context("no HTTP address")?
        .parse()?;

    // 1. Latency, one commit at a time.
    let streamed: Seen = Arc::default();
    stream(http, Arc::clone(&streamed)).await?;
    let (mut to_hook, mut to_sse) = (Vec::new(), Vec::new());
    for generation in 1..=args.commits {
        // Commits at spread-out moments, not in step with the server's poll timer (a commit
        // right after a delivery would land just after a poll every time).
        tokio::time::sleep(Duration::from_millis((generation as u64 * 37) % 101)).await;
        let (revision, start) = commit(repo.path(), generation)?;
        to_hook.push(
            wait_for(&notified, &revision)
                .await?
                .saturating_duration_since(start),
        );
        to_sse.push(
            wait_for(&streamed, &revision)
                .await?
                .saturating_duration_since(start),
        );
    }
    to_hook.sort();
    to_sse.sort();
    println!(
        "commit -> notification received ({} commits, --poll-interval {}): p50 {}, p99 {}, max {}",
        args.commits,
        args.poll_interval,
        ms(percentile(&to_hook, 0.5)),
        ms(percentile(&to_hook, 0.99)),
        ms(*to_hook.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "commit -> SSE event received: p50 {}, p99 {}, max {}",
        ms(percentile(&to_sse, 0.5)),
        ms(percentile(&to_sse, 0.99)),
        ms(*to_sse.last().unwrap_or(&Duration::ZERO))
    );

    // 2. Many idle streams, and one event to all of them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid)?;
    let all: Vec<Seen> = (0..args.streams).map(|_| Seen::default()).collect();
    for seen in &all {
        stream(http, Arc::clone(seen)).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid)?;
    println!(
        "{} idle /events streams: server RSS {} -> {} KiB, {:.1} KiB per stream",
        args.streams,
        before,
        after,
        (after.saturating_sub(before)) as f64 / args.streams as f64
    );
    let (revision, start) = commit(repo.path(), args.commits + 1)?;
    let mut arrivals = Vec::with_capacity(all.len());
    for seen in &all {
        arrivals.push(
            wait_for(seen, &revision)
                .await?
                .saturating_duration_since(start),
        );
    }
    arrivals.sort();
    let first = arrivals.first().copied().unwrap_or_default();
    let last = arrivals.last().copied().unwrap_or_default();
    println!(
        "one commit to {} streams: commit -> first {}, p50 {}, p99 {}, last {} (fan-out first -> last {})",
        args.streams,
        ms(first),
        ms(percentile(&arrivals, 0.5)),
        ms(percentile(&arrivals, 0.99)),
        ms(last),
        ms(last - first)
    );
    child.start_kill()?;
    Ok(())
}
