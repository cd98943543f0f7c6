//! What connections and streams cost a `vexil serve` process (issue 12): resident memory per idle
//! connection (HTTP/1.1 keep-alive after one request; HTTP/2 on the gRPC port after one call),
//! per stalled Watch stream (an h2 client with a stream window of 0: it answers pings but never
//! takes an event), and RSS growth per swap of a 3,000-flag repository, without and then with
//! the stalled streams open.
//!
//! ```sh
//! cargo run --release -p vexil --example connection_memory -- --bin target/release/vexil
//! ```
//!
//! An example rather than a bench: it measures another process (any build: `--bin` may be a
//! binary built from an older commit), its figures are memory, not time, and it opens thousands
//! of sockets, which a `cargo bench` pass should not do unasked. Everything runs on 127.0.0.1;
//! RSS is the server's `VmRSS` from /proc.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use vexil_server::proto;
use vexil_server::proto::flag_service_client::FlagServiceClient;

#[derive(Debug, Parser)]
struct Args {
    /// The `vexil` binary to measure (also VEXIL_BIN).
    #[arg(long, env = "VEXIL_BIN", default_value = "target/release/vexil")]
    bin: PathBuf,
    /// Idle connections of each kind.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Stalled Watch streams (each pinned about 0.3 MiB a swap before the fix: keep it modest).
    #[arg(long, default_value_t = 100)]
    stalled: usize,
    /// Stalled streams per HTTP/2 connection (at most the server's max concurrent streams).
    #[arg(long, default_value_t = 100)]
    streams_per_connection: usize,
    /// Swaps in each swap phase.
    #[arg(long, default_value_t = 40)]
    swaps: usize,
    /// Flags in the repository (in 6 files); every swap changes every flag.
    #[arg(long, default_value_t = 3000)]
    flags: usize,
}

const FILES: usize = 6;

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

/// Commits generation `generation` of the flags (every flag's rule names it); returns the id.
fn commit_generation(repo: &Path, flags: usize, generation: usize) -> anyhow::Result<String> {
    let dir = repo.join("flags");
    std::fs::create_dir_all(&dir)?;
    for file in 0..FILES {
        let mut text = String::from("flags:\n");
        for i in (file..flags).step_by(FILES) {
            text.push_str(&format!(
                "  flag-{i}:\n    rules:\n      - when: [{{ attr: plan, equals: \"g{generation}\" }}]\n        serve: true\n"
            ));
        }
        std::fs::write(dir.join(format!("part-{file}.yaml")), text)?;
    }
    git(repo, &["add", "-A"])?;
    git(
        repo,
        &["commit", "-q", "-m", &format!("generation {generation}")],
    )?;
    git(repo, &["rev-parse", "HEAD"])
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

/// RSS once it stopped moving (two samples 300 ms apart within 64 KiB), at most 3 s.
async fn settled_rss(pid: u32) -> anyhow::Result<u64> {
    let mut last = rss_kib(pid)?;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = rss_kib(pid)?;
        if now.abs_diff(last) < 64 {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

async fn wait_served(grpc: SocketAddr, revision: &str) -> anyhow::Result<()> {
    let mut client = FlagServiceClient::connect(format!("http://{grpc}")).await?;
    for _ in 0..1200 {
        let status = client.status(proto::StatusRequest {}).await?.into_inner();
        if status.revision == revision {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("revision {revision} not served within 60 s")
}

/// An HTTP/1.1 keep-alive connection with one request answered.
async fn idle_http1(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    let mut buf = [0u8; 512];
    while !response.ends_with(b"ok\n") {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            bail!("closed before answering");
        }
        response.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    Ok(tcp)
}

/// An h2 connection (its task answers pings) with the handle that keeps it open.
struct H2 {
    send: h2::client::SendRequest<Bytes>,
    _task: tokio::task::JoinHandle<()>,
}

async fn h2_connection(addr: SocketAddr, window: Option<u32>) -> anyhow::Result<H2> {
    let tcp = TcpStream::connect(addr).await?;
    let mut builder = h2::client::Builder::new();
    if let Some(window) = window {
        builder.initial_window_size(window);
    }
    let (send, connection) = builder.handshake::<_, Bytes>(tcp).await?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(H2 { send, _task: task })
}

/// Starts a gRPC call with an empty request message; returns the response head.
async fn grpc_call(
    h2: &mut H2,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<http::Response<h2::RecvStream>> {
    let mut send = h2.send.clone().ready().await?;
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    let (response, mut body) = send.send_request(request, false)?;
    body.send_data(Bytes::from_static(&[0; 5]), true)?;
    let response = tokio::time::timeout(Duration::from_secs(30), response).await??;
    if response.status() != 200 {
        bail!("{path}: HTTP {}", response.status());
    }
    Ok(response)
}

/// An HTTP/2 connection on the gRPC port with one health check answered.
async fn idle_h2(addr: SocketAddr) -> anyhow::Result<H2> {
    let mut h2 = h2_connection(addr, None).await?;
    let mut body = grpc_call(&mut h2, addr, "/grpc.health.v1.Health/Check")
        .await?
        .into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(h2)
}

struct Report {
    rows: Vec<(String, String)>,
}

impl Report {
    fn row(&mut self, what: &str, value: String) {
        println!("{what}: {value}");
        self.rows.push((what.to_owned(), value));
    }
}

fn per(delta_kib: i64, count: usize) -> String {
    format!(
        "{:.1} KiB ({delta_kib} KiB for {count})",
        delta_kib as f64 / count.max(1) as f64
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let repo = tempfile::tempdir()?;
    git(repo.path(), &["init", "-q", "-b", "main"])?;
    let mut generation = 0;
    let first = commit_generation(repo.path(), args.flags, generation)?;
    let mut child = tokio::process::Command::new(&args.bin)
        .arg("serve")
        .arg(repo.path())
        .args([
            "--ref",
            "main",
            "--flags-dir",
            "flags",
            "--poll-interval",
            "50ms",
        ])
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--sync-addr",
            "127.0.0.1:0",
        ])
        // No connection of this program may be closed as idle or stalled while it measures
        // (builds without these options ignore the variables; hyper's HTTP/1 header read
        // timeout also runs while a keep-alive connection waits for its next request).
        .env("VEXIL_IDLE_TIMEOUT", "1h")
        .env("VEXIL_HEADER_READ_TIMEOUT", "1h")
        .env("VEXIL_STALLED_STREAM_TIMEOUT", "1h")
        .env("VEXIL_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", args.bin.display()))?;
    let pid = child.id().context("no pid")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let line = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::io::BufReader::new(stdout).lines().next_line(),
    )
    .await??
    .context("the server printed nothing")?;
    let addr = |label: &str| -> anyhow::Result<SocketAddr> {
        line.split(label)
            .nth(1)
            .and_then(|rest| rest.split([',', ' ']).next())
            .context("no address")?
            .parse()
            .context("bad address")
    };
    let (grpc, http) = (addr("gRPC on ")?, addr("HTTP on ")?);
    wait_served(grpc, &first).await?;
    let mut report = Report { rows: Vec::new() };
    report.row("binary", args.bin.display().to_string());
    report.row(
        "repository",
        format!(
            "{} flags in {FILES} files; every swap changes every flag",
            args.flags
        ),
    );

    let mut swap = |count: usize| {
        let repo = repo.path().to_owned();
        let flags = args.flags;
        let start = generation + 1;
        generation += count;
        async move {
            for g in start..start + count {
                let revision = commit_generation(&repo, flags, g)?;
                wait_served(grpc, &revision).await?;
            }
            anyhow::Ok(())
        }
    };
    swap(1).await?;
    let start = settled_rss(pid).await?;
    report.row("RSS after start and one swap", format!("{start} KiB"));
    swap(args.swaps).await?;
    let control = settled_rss(pid).await?;
    report.row(
        "RSS growth per swap, no stalled stream",
        format!(
            "{:.0} KiB ({start} -> {control} KiB over {} swaps)",
            (control as f64 - start as f64) / args.swaps as f64,
            args.swaps
        ),
    );

    let n = args.connections;
    let mut http1 = Vec::with_capacity(n);
    for _ in 0..n {
        http1.push(idle_http1(http).await?);
    }
    let after_http1 = settled_rss(pid).await?;
    report.row(
        "per idle HTTP/1.1 keep-alive connection",
        per(after_http1 as i64 - control as i64, n),
    );
    let mut h2s = Vec::with_capacity(n);
    for _ in 0..n {
        h2s.push(idle_h2(grpc).await?);
    }
    let after_h2 = settled_rss(pid).await?;
    report.row(
        "per idle HTTP/2 connection (gRPC port)",
        per(after_h2 as i64 - after_http1 as i64, n),
    );

    let m = args.stalled;
    let mut stalled = Vec::with_capacity(m);
    let mut carriers = Vec::new();
    while stalled.len() < m {
        let mut carrier = h2_connection(grpc, Some(0)).await?;
        for _ in 0..args.streams_per_connection.min(m - stalled.len()) {
            stalled.push(grpc_call(&mut carrier, grpc, "/vexil.v1.FlagService/Watch").await?);
        }
        carriers.push(carrier);
    }
    let after_streams = settled_rss(pid).await?;
    report.row(
        "per stalled Watch stream",
        format!(
            "{} over {} connections",
            per(after_streams as i64 - after_h2 as i64, m),
            carriers.len()
        ),
    );
    // In quarters, to tell a bounded buffer (growth that stops) from pinning (growth that
    // does not).
    let quarter = (args.swaps / 4).max(1);
    let mut done = 0;
    let mut steps = vec![format!("{after_streams}")];
    while done < args.swaps {
        let count = quarter.min(args.swaps - done);
        swap(count).await?;
        done += count;
        steps.push(format!("{} ({done})", settled_rss(pid).await?));
    }
    let after_swaps = settled_rss(pid).await?;
    report.row(
        "RSS growth per swap, streams stalled",
        format!(
            "{:.0} KiB over {} swaps",
            (after_swaps as f64 - after_streams as f64) / args.swaps as f64,
            args.swaps
        ),
    );
    report.row(
        "RSS with streams stalled (KiB, after N swaps)",
        steps.join(" -> "),
    );
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    report.row(
        "server descriptors open at the end",
        format!(
            "{open} (this program holds {} connections)",
            2 * n + carriers.len()
        ),
    );

    println!();
    println!("| measure | value |");
    println!("| --- | --- |");
    for (what, value) in &report.rows {
        println!("| {what} | {value} |");
    }
    drop((http1, h2s, stalled, carriers));
    child.kill().await?;
    Ok(())
}
