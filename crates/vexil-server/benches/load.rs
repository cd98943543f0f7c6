//! Loopback load generator: `cargo bench -p vexil-server --bench load` (`-- --test`: a quick
//! check). The server and the load generator share this process and the machine's cores.
//!
//! 1. unary Evaluate of a targeted flag (a segment of two conditions and a 50 % rollout);
//! 2. EvaluateBatch of all 100 flags of a namespace;
//! 3. OFREP over HTTP/1.1 keep-alive (one connection per request in flight): a single
//!    evaluation of the targeted flag, and the bulk evaluation of the namespace's 100 flags;
//! 4. unary Evaluate while the snapshot is swapped every 50 ms.
//!
//! Every response's status and value is checked; each run is bounded in time and in count, and
//! only 127.0.0.1 is used.
#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::Channel;
use vexil_core::source::{Fetched, from_memory};
use vexil_core::{ReloadOptions, Reloader, Source, SourceError};
use vexil_server::proto::flag_service_client::FlagServiceClient;
use vexil_server::proto::{self, value::Kind};
use vexil_server::{AppState, Options, Tokens};

#[path = "../../vexil-core/benches/common/corpus.rs"]
mod corpus;

/// Concurrent requests in flight (default 32; `VEXIL_LOAD_CONCURRENCY`), spread over HTTP/2
/// connections (default 2; `VEXIL_LOAD_CONNECTIONS`).
fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
/// At most this many requests per run (the time bound usually ends it first).
const MAX_REQUESTS: u64 = 5_000_000;

const TARGETED: &str = "segments:\n  target:\n    all:\n      - { attr: country, in: [DE, FR, IT] }\n      - { attr: plan, equals: pro }\nflags:\n  targeted:\n    rules:\n      - segment: target\n        rollout: 50\n";

/// The generated 100 flags, plus `targeted`, plus `generation` whose value is the number of
/// swaps so far (so a reader can tell the snapshots apart).
#[derive(Debug)]
struct Flags {
    generation: Arc<AtomicU64>,
}

impl Source for Flags {
    fn describe(&self) -> String {
        "bench flags".into()
    }

    fn next_poll(&self, _failures: u32) -> Duration {
        Duration::from_secs(3600)
    }

    fn read(&mut self, known: Option<&str>, _force: bool) -> Result<Option<Fetched>, SourceError> {
        let generation = self.generation.load(Ordering::SeqCst);
        let revision = format!("gen-{generation}");
        if known == Some(revision.as_str()) {
            return Ok(None);
        }
        // 99 generated flags and `targeted`: 100 flags in the default namespace.
        let mut files = corpus::generated_repository(99, 1);
        files.push(("targeted.yaml".into(), TARGETED.into()));
        files.push((
            "ns2/generation.yaml".into(),
            format!("namespace: meta\nflags:\n  generation:\n    type: integer\n    variants: {{ g: {generation} }}\n    default: g\n"),
        ));
        Ok(Some(Fetched {
            revision,
            loaded: from_memory(files),
        }))
    }
}

fn text(s: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(s.into())),
    }
}

fn context() -> Option<proto::Context> {
    Some(proto::Context {
        // Picked so that the 50 % rollout includes it (checked by the first response).
        targeting_key: "user-1".into(),
        attributes: [
            ("country", text("FR")),
            ("plan", text("pro")),
            (
                "seats",
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::NumberValue(12.0)),
                },
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    })
}

/// `context()` as an OpenFeature Struct (`targetingKey` plus the attributes).
fn flagd_context() -> prost_types::Struct {
    let ctx = context().unwrap_or_default();
    let mut fields: std::collections::BTreeMap<String, prost_types::Value> =
        ctx.attributes.into_iter().collect();
    fields.insert("targetingKey".into(), text(&ctx.targeting_key));
    prost_types::Struct { fields }
}

#[derive(Debug, Default)]
struct RunResult {
    requests: u64,
    errors: u64,
    latencies_us: Vec<u32>,
    elapsed: Duration,
}

/// Runs `CONCURRENCY` loops of `call` for `duration` over the gRPC channels; each call returns
/// whether the answer was right.
async fn run<F, Fut>(channels: &[Channel], duration: Duration, call: F) -> RunResult
where
    F: Fn(Channel, Arc<AtomicU64>) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let clients = (0..setting("VEXIL_LOAD_CONCURRENCY", 32))
        .map(|i| channels[i % channels.len()].clone())
        .collect();
    run_loops(clients, duration, move |channel: Channel, last| {
        let answer = call(channel.clone(), last);
        async move { (channel, answer.await) }
    })
    .await
}

/// Runs one loop per client for `duration`; each call takes its loop's client and gives it back
/// with whether the answer was right.
async fn run_loops<C, F, Fut>(clients: Vec<C>, duration: Duration, call: F) -> RunResult
where
    C: Send + 'static,
    F: Fn(C, Arc<AtomicU64>) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = (C, bool)> + Send,
{
    let deadline = Instant::now() + duration;
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let call = call.clone();
            let issued = Arc::clone(&issued);
            tokio::spawn(async move {
                let mut out = RunResult::default();
                let mut client = Some(client);
                // Per-loop memory for checks across calls (the newest revision seen).
                let last = Arc::new(AtomicU64::new(0));
                while Instant::now() < deadline
                    && issued.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
                {
                    let t = Instant::now();
                    let (back, ok) = call(client.take().unwrap(), Arc::clone(&last)).await;
                    client = Some(back);
                    out.latencies_us
                        .push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                    out.requests += 1;
                    out.errors += u64::from(!ok);
                }
                out
            })
        })
        .collect();
    let mut total = RunResult::default();
    for t in tasks {
        let r = t.await.unwrap();
        total.requests += r.requests;
        total.errors += r.errors;
        total.latencies_us.extend(r.latencies_us);
    }
    total.elapsed = start.elapsed();
    total
}

/// One HTTP/1.1 keep-alive connection: writes a request, reads its response (a body with a
/// `Content-Length`, as the server sends for whole JSON bodies).
struct Http1 {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Http1 {
    async fn connect(addr: std::net::SocketAddr) -> Http1 {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Http1 {
            stream,
            buf: Vec::with_capacity(64 << 10),
        }
    }

    /// `request` is a whole request; the answer is the status and the body (`None`: the
    /// connection failed or the response was not understood).
    async fn exchange(&mut self, request: &[u8]) -> Option<(u16, Vec<u8>)> {
        self.stream.write_all(request).await.ok()?;
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).ok()?;
        let status: u16 = head.get(9..12)?.parse().ok()?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        Some((status, body))
    }

    async fn fill(&mut self) -> Option<()> {
        self.buf.reserve(32 << 10);
        let n = self.stream.read_buf(&mut self.buf).await.ok()?;
        (n > 0).then_some(())
    }
}

/// An OFREP POST of `context()` (as OFREP's JSON context) to `path`.
fn ofrep_request(path: &str) -> Arc<[u8]> {
    let body = serde_json::json!({
        "context": { "targetingKey": "user-1", "country": "FR", "plan": "pro", "seats": 12 }
    })
    .to_string();
    format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into()
}

/// Runs `request` on `CONCURRENCY` HTTP/1.1 keep-alive connections, checking each answer.
async fn run_http1(
    addr: std::net::SocketAddr,
    duration: Duration,
    request: Arc<[u8]>,
    check: fn(u16, &[u8]) -> bool,
) -> RunResult {
    let mut clients = Vec::new();
    for _ in 0..setting("VEXIL_LOAD_CONCURRENCY", 32) {
        clients.push(Http1::connect(addr).await);
    }
    run_loops(clients, duration, move |mut c: Http1, _| {
        let request = Arc::clone(&request);
        async move {
            let ok =
                matches!(c.exchange(&request).await, Some((status, body)) if check(status, &body));
            (c, ok)
        }
    })
    .await
}

/// OFREP's single answer for `targeted`: true, by targeting.
fn ofrep_single_ok(status: u16, body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    status == 200
        && v["key"] == "targeted"
        && v["value"] == true
        && v["reason"] == "TARGETING_MATCH"
}

/// OFREP's bulk answer: the namespace's 100 flags, each with a value and no error.
fn ofrep_bulk_ok(status: u16, body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let Some(flags) = v["flags"].as_array() else {
        return false;
    };
    status == 200
        && flags.len() == 100
        && flags
            .iter()
            .all(|f| f.get("errorCode").is_none() && f.get("value").is_some())
        && flags
            .iter()
            .any(|f| f["key"] == "targeted" && f["value"] == true)
}

fn report(name: &str, r: &mut RunResult, per_request: u64) {
    r.latencies_us.sort_unstable();
    let pick = |q: f64| {
        let n = r.latencies_us.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        f64::from(r.latencies_us[rank - 1]) / 1000.0
    };
    let rate = r.requests as f64 / r.elapsed.as_secs_f64();
    println!(
        "  {name}: {} requests in {:.2} s = {:.0} req/s ({:.0} flag evaluations/s); p50 {:.2} ms, p99 {:.2} ms; errors {}",
        r.requests,
        r.elapsed.as_secs_f64(),
        rate,
        rate * per_request as f64,
        pick(0.5),
        pick(0.99),
        r.errors
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let seconds = setting("VEXIL_LOAD_SECONDS", 10);
    let duration = if quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(seconds as u64)
    };
    // The server runs on its own runtime, as in production; the load generator on another, as
    // if it were a separate process (both share the machine's cores).
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("server")
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("load")
        .build()
        .unwrap();
    let server_handle = server_runtime.handle().clone();
    runtime.block_on(async move {
        let generation = Arc::new(AtomicU64::new(0));
        let reloader = Reloader::start(
            Box::new(Flags { generation: Arc::clone(&generation) }),
            ReloadOptions {
                prepare: Some(vexil_server::state::prepare()),
                ..ReloadOptions::default()
            },
        )
        .unwrap();
        let state = AppState::new(reloader, Options::default());
        // Bound on the server's runtime, so that their IO is driven there.
        let (grpc, http) = server_handle
            .spawn(async {
                let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                (grpc, http)
            })
            .await
            .unwrap();
        let addr = grpc.local_addr().unwrap();
        let http_addr = http.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = server_handle.spawn(vexil_server::serve(
            Arc::clone(&state),
            Tokens::default(),
            vexil_server::TlsConfig::default(),
            grpc,
            http,
            async move {
                let _ = stopped.await;
            },
        ));
        let mut channels = Vec::new();
        let connections = setting("VEXIL_LOAD_CONNECTIONS", 2);
        let concurrency = setting("VEXIL_LOAD_CONCURRENCY", 32);
        for _ in 0..connections {
            channels.push(
                Channel::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .tcp_nodelay(true)
                    .initial_connection_window_size(Some(1 << 20))
                    .initial_stream_window_size(Some(256 << 10))
                    .connect()
                    .await
                    .unwrap(),
            );
        }
        println!("load benchmark: {concurrency} concurrent requests over {connections} connections, {duration:?} per run");

        let unary = |channel: Channel, _: Arc<AtomicU64>| async move {
            let mut client = FlagServiceClient::new(channel);
            let r = client
                .evaluate(proto::EvaluateRequest {
                    flag: "targeted".into(),
                    context: context(),
                    ..Default::default()
                })
                .await;
            matches!(r, Ok(r) if r.get_ref().value.as_ref().and_then(|v| v.kind.clone()) == Some(Kind::BoolValue(true)))
        };
        // Warm-up (connections, allocator, caches): not reported.
        let warm = run(&channels, duration / 5, unary).await;
        assert_eq!(warm.errors, 0);
        let mut r = run(&channels, duration, unary).await;
        report("unary Evaluate", &mut r, 1);
        assert_eq!(r.errors, 0);
        let native_rate = r.requests as f64 / r.elapsed.as_secs_f64();

        // The same flag and context through flagd's API (what OpenFeature flagd providers call).
        let flagd = |channel: Channel, _: Arc<AtomicU64>| async move {
            let mut c = vexil_server::flagd::v2::service_client::ServiceClient::new(channel);
            let r = c
                .resolve_boolean(vexil_server::flagd::v2::ResolveBooleanRequest {
                    flag_key: "targeted".into(),
                    context: Some(flagd_context()),
                })
                .await;
            matches!(r, Ok(r) if r.get_ref().value == Some(true) && r.get_ref().reason == "TARGETING_MATCH")
        };
        let mut r = run(&channels, duration, flagd).await;
        report("flagd ResolveBoolean (same flag and context)", &mut r, 1);
        assert_eq!(r.errors, 0);
        let flagd_rate = r.requests as f64 / r.elapsed.as_secs_f64();
        println!(
            "  flagd ResolveBoolean / native Evaluate throughput: {:.2} (cost of the compatibility layer: {:.1} %)",
            flagd_rate / native_rate,
            (1.0 - flagd_rate / native_rate) * 100.0
        );

        let batch = |channel: Channel, _: Arc<AtomicU64>| async move {
            let mut client = FlagServiceClient::new(channel);
            let r = client
                .evaluate_batch(proto::EvaluateBatchRequest {
                    context: context(),
                    ..Default::default()
                })
                .await;
            matches!(r, Ok(r) if r.get_ref().items.len() == 100 && r.get_ref().items.iter().all(|i| i.error == 0))
        };
        let mut r = run(&channels, duration, batch).await;
        report("EvaluateBatch of 100 flags", &mut r, 100);
        assert_eq!(r.errors, 0);

        // OFREP over HTTP/1.1: the same flag and context, then the whole namespace.
        let request = ofrep_request("/ofrep/v1/evaluate/flags/targeted");
        let mut r = run_http1(http_addr, duration, request, ofrep_single_ok).await;
        report("OFREP single evaluation (HTTP/1.1)", &mut r, 1);
        assert_eq!(r.errors, 0);
        let request = ofrep_request("/ofrep/v1/evaluate/flags");
        let mut r = run_http1(http_addr, duration, request, ofrep_bulk_ok).await;
        report("OFREP bulk evaluation of 100 flags (HTTP/1.1)", &mut r, 100);
        assert_eq!(r.errors, 0);

        // Swaps every 50 ms under load; each reader checks that the revision it is answered from
        // never goes backwards.
        let swapping = Arc::new(AtomicBool::new(true));
        let swapper = {
            let state = Arc::clone(&state);
            let swapping = Arc::clone(&swapping);
            let generation = Arc::clone(&generation);
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                let start = Instant::now();
                while swapping.load(Ordering::SeqCst) {
                    generation.fetch_add(1, Ordering::SeqCst);
                    let attempt = state.reloader.reload().unwrap();
                    assert!(matches!(attempt.result, vexil_core::AttemptResult::Swapped { .. }), "{attempt:?}");
                    swaps += 1;
                    // On a 50 ms grid, whatever the reload took.
                    let next = start + Duration::from_millis(50) * u32::try_from(swaps).unwrap();
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                swaps
            })
        };
        // Each loop's client remembers the newest generation it was answered from.
        let unary_checked = |channel: Channel, last: Arc<AtomicU64>| async move {
            let mut client = FlagServiceClient::new(channel);
            let a = client
                .evaluate(proto::EvaluateRequest {
                    flag: "targeted".into(),
                    context: context(),
                    ..Default::default()
                })
                .await;
            let Ok(r) = a else { return false };
            let r = r.into_inner();
            let generation: Option<u64> = r.revision.strip_prefix("gen-").and_then(|g| g.parse().ok());
            let Some(generation) = generation else { return false };
            let previous = last.fetch_max(generation, Ordering::Relaxed);
            r.value.and_then(|v| v.kind) == Some(Kind::BoolValue(true)) && generation >= previous
        };
        let mut r = run(&channels, duration, unary_checked).await;
        swapping.store(false, Ordering::SeqCst);
        let swaps = swapper.join().unwrap();
        report(&format!("unary Evaluate during {swaps} swaps (every 50 ms)"), &mut r, 1);
        assert_eq!(r.errors, 0);
        assert!(swaps > 0);

        let _ = stop.send(());
        server.await.unwrap().unwrap();
    });
}
