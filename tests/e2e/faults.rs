//! The fault suite (issue 12): the real `vexil serve` binary, on 127.0.0.1:0, against clients and
//! sources that misbehave: HTTP/2 clients that never read, slowloris sockets under a lowered
//! descriptor limit (`prlimit`), idle and ping-deaf connections, a silent git server, a damaged
//! pack, deep and oddly named files, a Status with 20,000 diagnostics, oversized bodies, deep
//! contexts, the drain window after SIGTERM and `/metrics` behind tokens.
//!
//! Each test failed on the build before the fixes. `VEXIL_FAULTS_BIN=/path/to/vexil` runs the
//! suite against another build (that is how it was checked); options that build may not know are
//! passed through their `VEXIL_*` variables, which an older build ignores, so it shows its defect
//! instead of refusing an option. Memory, threads, CPU time and descriptors are those of the server
//! process alone (`/proc/PID`). Every wait is a bounded poll for a state, never a timing assertion.

use std::ffi::OsStr;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic::transport::Channel;
use vexil_server::proto::flag_service_client::FlagServiceClient;
use vexil_server::proto::{self, reload_attempt::Result as AttemptResult};

use crate::helpers::git;

/// The bound of every wait for a state in this module.
const PATIENCE: Duration = Duration::from_secs(30);

/// The binary under test: this build's, or `VEXIL_FAULTS_BIN`.
fn vexil_bin() -> PathBuf {
    std::env::var_os("VEXIL_FAULTS_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vexil")), PathBuf::from)
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// A `vexil serve` process (killed when dropped), its stderr kept in a file.
struct Process {
    child: tokio::process::Child,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    log: tempfile::NamedTempFile,
}

impl Process {
    /// `vexil serve ARGS` on 127.0.0.1:0 with `env`, under `prlimit --nofile=N:N` if given.
    fn spawn(args: &[&str], env: &[(&str, &str)], nofile: Option<u32>) -> Process {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut command = match nofile {
            Some(n) => {
                let mut c = tokio::process::Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(vexil_bin());
                c
            }
            None => tokio::process::Command::new(vexil_bin()),
        };
        command
            .arg("serve")
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(args)
            .env("VEXIL_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log.reopen().unwrap())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start vexil serve");
        let stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        Process { child, stdout, log }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("the server runs")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The server once it printed its `vexil: serving ...` line (its ports are bound), or why not.
    async fn serving(mut self) -> Result<Server, String> {
        match tokio::time::timeout(PATIENCE, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => {
                let addr = |label: &str| -> SocketAddr {
                    line.split(label)
                        .nth(1)
                        .and_then(|rest| rest.split([',', ' ']).next())
                        .and_then(|a| a.parse().ok())
                        .unwrap_or_else(|| panic!("no address after `{label}` in {line:?}"))
                };
                let (grpc, http) = (addr("gRPC on "), addr("HTTP on "));
                Ok(Server {
                    process: self,
                    grpc,
                    http,
                })
            }
            Ok(_) => {
                let status = tokio::time::timeout(PATIENCE, self.child.wait()).await;
                Err(format!(
                    "exited ({status:?}) without serving; stderr:\n{}",
                    self.log()
                ))
            }
            Err(_) => Err(format!(
                "no `vexil: serving` line within {PATIENCE:?} (not serving); stderr:\n{}",
                self.log()
            )),
        }
    }

    /// The exit status and stderr once the process ends, or an error if it still runs after
    /// `within`.
    async fn exited(
        mut self,
        within: Duration,
    ) -> Result<(std::process::ExitStatus, String), String> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => Ok((status.unwrap(), self.log())),
            Err(_) => Err(format!(
                "still running after {within:?}; stderr:\n{}",
                self.log()
            )),
        }
    }
}

struct Server {
    process: Process,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Server {
    async fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        Process::spawn(args, env, None)
            .serving()
            .await
            .unwrap_or_else(|e| panic!("vexil serve {args:?}: {e}"))
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    async fn client(&self) -> FlagServiceClient<Channel> {
        FlagServiceClient::new(channel(self.grpc).await)
    }

    async fn status(&self) -> Result<proto::StatusResponse, tonic::Status> {
        self.client()
            .await
            .status(proto::StatusRequest {})
            .await
            .map(tonic::Response::into_inner)
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        get(self.http, path, &[]).await
    }
}

/// A gRPC channel with bounded connect and request times.
async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(PATIENCE)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("gRPC connect to {addr}: {e}"))
}

/// GET over a fresh HTTP/1.1 connection: (status, body), or `None` if no answer came within
/// 10 s (refused, reset or silent).
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    let request = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let response = String::from_utf8_lossy(&response).into_owned();
        let code = response.split(' ').nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Some((code, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .ok()
        .flatten()
}

/// POST `body` over HTTP/1.1, writing while reading (a server may answer before it read the
/// body): the status code, or why there was none within 10 s.
async fn post_status(addr: SocketAddr, path: &str, body: Vec<u8>) -> Result<u16, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut read, mut write) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let writer = tokio::spawn(async move {
        // The server may close before taking the whole body: a write error is no answer.
        let _ = write.write_all(head.as_bytes()).await;
        let _ = write.write_all(&body).await;
        write
    });
    let mut response = Vec::new();
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(line_end) = response.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&response[..line_end]).into_owned();
                return line
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse::<u16>().ok())
                    .ok_or(format!("not a status line: {line:?}"));
            }
            match read.read(&mut buf).await {
                Ok(0) => return Err("closed without an answer".to_owned()),
                Ok(n) => response.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("no answer: {e}")),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err("no answer within 10 s".into()));
    writer.abort();
    status
}

/// Polls `probe` until it yields a value, for at most `within` (each probe bounded by what is
/// left of it).
async fn poll<T, F, Fut>(within: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        let left = within.saturating_sub(start.elapsed());
        if let Ok(Some(value)) = tokio::time::timeout(left, probe()).await {
            return Some(value);
        }
        if start.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Failed checks, collected so that one run reports every defect of a scenario.
#[derive(Default)]
struct Verdicts(Vec<String>);

impl Verdicts {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn check_result(&mut self, result: Result<(), String>) {
        if let Err(e) = result {
            self.0.push(e);
        }
    }

    fn fail(&mut self, what: String) {
        self.0.push(what);
    }

    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} check(s) failed:\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// /proc of the server process
// ---------------------------------------------------------------------------------------------

/// A `Name: value` line of /proc/PID/status, as a number (VmRSS in KiB, Threads).
fn proc_status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn rss_mib(pid: u32) -> f64 {
    proc_status(pid, "VmRSS") as f64 / 1024.0
}

/// User plus system CPU time of the process so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second: u64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / per_second)
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/2 (RFC 9113) for clients that misbehave on purpose
// ---------------------------------------------------------------------------------------------

mod wire {
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const ACK: u8 = 0x1;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const REFUSED_STREAM: u32 = 0x7;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap();
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// The client preface and an empty SETTINGS frame.
    pub fn hello() -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        out
    }

    /// A request's HEADERS (HPACK literals without indexing; names and values under 127 bytes).
    pub fn request(stream: u32, method: &str, path: &str, grpc: bool, end_stream: bool) -> Vec<u8> {
        let mut fields = vec![
            (":method", method),
            (":scheme", "http"),
            (":path", path),
            (":authority", "127.0.0.1"),
        ];
        if grpc {
            fields.extend([("content-type", "application/grpc"), ("te", "trailers")]);
        } else {
            fields.push(("content-type", "application/json"));
        }
        let mut block = Vec::new();
        for (name, value) in fields {
            block.push(0x00);
            for s in [name, value] {
                block.push(u8::try_from(s.len()).unwrap());
                block.extend_from_slice(s.as_bytes());
            }
        }
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        frame(HEADERS, flags, stream, &block)
    }

    /// A unary or server-streaming gRPC call with an empty request message.
    pub fn grpc_call(stream: u32, path: &str) -> Vec<u8> {
        let mut out = request(stream, "POST", path, true, false);
        out.extend(frame(DATA, END_STREAM, stream, &[0; 5]));
        out
    }

    #[derive(Debug)]
    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    impl Frame {
        /// A SETTINGS parameter of this (SETTINGS) frame.
        pub fn setting(&self, id: u16) -> Option<u32> {
            self.payload.chunks_exact(6).find_map(|p| {
                (u16::from_be_bytes([p[0], p[1]]) == id)
                    .then(|| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
            })
        }

        /// The error code of a RST_STREAM or GOAWAY frame.
        pub fn error_code(&self) -> u32 {
            let at = if self.kind == GOAWAY { 4 } else { 0 };
            self.payload
                .get(at..at + 4)
                .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
    }

    /// The next frame, or `None` at end of stream.
    pub async fn read(
        r: &mut (impl tokio::io::AsyncRead + Unpin),
    ) -> std::io::Result<Option<Frame>> {
        use tokio::io::AsyncReadExt as _;
        let mut head = [0u8; 9];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        Ok(Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        }))
    }
}

/// Reads frames until the server ends the connection (GOAWAY, end of stream or an error),
/// acknowledging SETTINGS, and PINGs only if `answer_pings`. Returns how it ended (`None` if it
/// still runs after `within`) and how many PINGs the server sent.
async fn until_closed(
    tcp: &mut TcpStream,
    answer_pings: bool,
    within: Duration,
) -> (Option<String>, usize) {
    let mut pings = 0;
    let ended = tokio::time::timeout(within, async {
        loop {
            match wire::read(tcp).await {
                Ok(None) => return "end of stream".to_owned(),
                Err(e) => return format!("read error: {e}"),
                Ok(Some(f)) if f.kind == wire::GOAWAY => {
                    return format!("GOAWAY ({})", f.error_code());
                }
                Ok(Some(f)) if f.kind == wire::SETTINGS && f.flags & wire::ACK == 0 => {
                    let _ = tcp
                        .write_all(&wire::frame(wire::SETTINGS, wire::ACK, 0, &[]))
                        .await;
                }
                Ok(Some(f)) if f.kind == wire::PING && f.flags & wire::ACK == 0 => {
                    pings += 1;
                    if answer_pings {
                        let ack = wire::frame(wire::PING, wire::ACK, 0, &f.payload);
                        let _ = tcp.write_all(&ack).await;
                    }
                }
                Ok(Some(_)) => {}
            }
        }
    })
    .await
    .ok();
    (ended, pings)
}

/// Reads until EOF or an error (the server closed the connection); `false` if it is still open
/// after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// An HTTP/2 call whose client never takes an event: a real h2 client (it answers pings and
/// settings) with a stream window of 0, so the server may send headers but no data.
struct StalledStream {
    _send: h2::client::SendRequest<bytes::Bytes>,
    response: http::Response<h2::RecvStream>,
    connection: tokio::task::JoinHandle<()>,
}

impl StalledStream {
    /// Neither the stream nor its connection was ended by the server.
    fn is_open(&self) -> bool {
        !self.connection.is_finished() && !self.response.body().is_end_stream()
    }
}

async fn stalled_stream(addr: SocketAddr, path: &str) -> StalledStream {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut send = send.ready().await.unwrap();
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = send.send_request(request, false).unwrap();
    body.send_data(bytes::Bytes::from_static(&[0; 5]), true)
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .expect("response headers")
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    StalledStream {
        _send: send,
        response,
        connection,
    }
}

// ---------------------------------------------------------------------------------------------
// Flag files
// ---------------------------------------------------------------------------------------------

/// A boolean flag with one rule; `generation` changes the rule (so the flag changes).
fn bool_flag(key: &str, generation: usize) -> String {
    format!(
        "  {key}:\n    rules:\n      - when: [{{ attr: plan, equals: \"g{generation}\" }}]\n        serve: true\n"
    )
}

fn flags_file(keys: impl IntoIterator<Item = String>, generation: usize) -> String {
    let mut text = String::from("flags:\n");
    for key in keys {
        text.push_str(&bool_flag(&key, generation));
    }
    text
}

/// A flags directory with one string flag `a` of value `value`.
fn write_a(dir: &Path, value: &str) {
    std::fs::write(
        dir.join("a.yaml"),
        format!(
            "flags:\n  a:\n    type: string\n    variants: {{ v: \"{value}\" }}\n    default: v\n"
        ),
    )
    .unwrap();
}

fn small_dir(value: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_a(dir.path(), value);
    dir
}

fn commit_all(repo: &Path, message: &str) -> String {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"]).trim().to_owned()
}

async fn evaluate_a(client: &mut FlagServiceClient<Channel>) -> Option<String> {
    let response = client
        .evaluate(proto::EvaluateRequest {
            flag: "a".into(),
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    match response.value?.kind? {
        proto::value::Kind::StringValue(s) => Some(s),
        _ => None,
    }
}

/// Waits until the server serves `revision`.
async fn served(server: &Server, revision: &str, within: Duration) -> bool {
    poll(within, || async {
        (server.status().await.ok()?.revision == revision).then_some(())
    })
    .await
    .is_some()
}

// ---------------------------------------------------------------------------------------------
// 1. Streams whose clients never read pin no snapshots
// ---------------------------------------------------------------------------------------------

/// Before the fix every change event held its snapshot, and a stream that stopped reading kept
/// up to 1,024 events: RSS grew with every swap for as long as the client stayed. A stream may
/// still hold a bounded number of events, so the first swaps fill whatever it buffers (and warm
/// the allocator) and only the growth after them is measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_never_read_pin_no_snapshots() {
    const FILES: usize = 6;
    const PER_FILE: usize = 500;
    /// Swaps that fill every bounded buffer of the stalled streams.
    const FILL: usize = 20;
    /// Swaps over which RSS growth is measured.
    const SWAPS: usize = 30;
    // Measured (debug builds): 238 MiB (7.9 MiB a swap) before the fix, 8 MiB after it.
    const BOUND_MIB: f64 = 60.0;
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    let write_generation = |generation: usize| {
        std::fs::create_dir_all(repo.path().join("flags")).unwrap();
        for file in 0..FILES {
            let keys = (0..PER_FILE).map(|i| format!("flag-{file}-{i}"));
            std::fs::write(
                repo.path().join(format!("flags/part-{file}.yaml")),
                flags_file(keys, generation),
            )
            .unwrap();
        }
        commit_all(repo.path(), &format!("generation {generation}"))
    };
    let first = write_generation(0);
    let server = Server::start(
        &[
            repo.path().to_str().unwrap(),
            "--ref",
            "main",
            "--flags-dir",
            "flags",
            "--poll-interval",
            "50ms",
        ],
        // The streams stay stalled for the whole test (the stalled-stream timeout would end
        // them after a minute): what is measured is what a stalled stream holds.
        &[("VEXIL_STALLED_STREAM_TIMEOUT", "1h")],
    )
    .await;
    assert!(served(&server, &first, PATIENCE).await);

    // A Watch and a flagd EventStream with a stream window of 0 (their h2 client still answers
    // pings), and a raw client that sends a Watch and never reads its socket.
    let watch = stalled_stream(server.grpc, "/vexil.v1.FlagService/Watch").await;
    let events = stalled_stream(server.grpc, "/flagd.evaluation.v1.Service/EventStream").await;
    let mut deaf = TcpStream::connect(server.grpc).await.unwrap();
    let mut hello = wire::hello();
    hello.extend(wire::grpc_call(1, "/vexil.v1.FlagService/Watch"));
    deaf.write_all(&hello).await.unwrap();

    let start = rss_mib(server.pid());
    let swap_through = |generations: std::ops::Range<usize>| {
        let (server, write_generation) = (&server, &write_generation);
        async move {
            for generation in generations {
                let revision = write_generation(generation);
                assert!(
                    served(server, &revision, PATIENCE).await,
                    "generation {generation} not served within {PATIENCE:?}"
                );
            }
        }
    };
    swap_through(1..1 + FILL).await;
    let before = rss_mib(server.pid());
    swap_through(1 + FILL..1 + FILL + SWAPS).await;
    let after = rss_mib(server.pid());
    let growth = after - before;
    assert!(
        growth < BOUND_MIB,
        "RSS grew {growth:.0} MiB ({:.1} MiB a swap) over {SWAPS} swaps of {} flags after {FILL} swaps with 3 streams that never read ({start:.0} -> {before:.0} -> {after:.0} MiB)",
        growth / SWAPS as f64,
        FILES * PER_FILE
    );
    assert!(
        watch.is_open() && events.is_open(),
        "the stalled streams were ended: the measure is void"
    );
    drop((watch, events, deaf));
}

// ---------------------------------------------------------------------------------------------
// 2. Slowloris under a lowered descriptor limit; streams per connection
// ---------------------------------------------------------------------------------------------

/// Before the fix half-sent headers and silent gRPC connections stayed open for good; at the
/// descriptor limit new clients were locked out, the directory reloader judged a valid revision
/// invalid ("Too many open files") and the gRPC accept loop spun on a core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_under_a_lowered_descriptor_limit() {
    const SOCKETS: usize = 300;
    let dir = small_dir("one");
    let server = Process::spawn(
        &[dir.path().to_str().unwrap(), "--quiet-period", "100ms"],
        &[("VEXIL_HEADER_READ_TIMEOUT", "2s")],
        Some(256),
    )
    .serving()
    .await
    .unwrap();
    let pid = server.pid();
    // A client connected before the flood (to read Status while it lasts).
    let mut control = server.client().await;
    assert_eq!(evaluate_a(&mut control).await.as_deref(), Some("one"));

    // 250 sockets send half a request header to the HTTP port, 50 open the gRPC port and send
    // nothing (no HTTP/2 preface).
    let mut sockets = Vec::new();
    for i in 0..SOCKETS {
        let to_grpc = i % 6 == 5;
        let addr = if to_grpc { server.grpc } else { server.http };
        let mut socket = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .expect("connect within 10 s (the listen backlog holds unaccepted ones)")
            .unwrap();
        if !to_grpc {
            socket
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .await
                .unwrap();
        }
        sockets.push(socket);
    }
    write_a(dir.path(), "two");
    let descriptors = open_descriptors(pid);

    let mut verdicts = Verdicts::default();
    let cpu_before = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = cpu_time(pid) - cpu_before;
    verdicts.check(cpu < Duration::from_millis(500), || {
        format!("the server used {cpu:?} of CPU in 3 s with {descriptors} descriptors open (a spinning accept loop?)")
    });

    let closing: Vec<_> = sockets
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move { closed_within(&mut s, Duration::from_secs(60)).await })
        })
        .collect();
    let mut closed = 0;
    for c in closing {
        closed += usize::from(c.await.unwrap());
    }
    verdicts.check(closed == SOCKETS, || {
        format!("the server closed {closed} of {SOCKETS} slowloris connections within 60 s")
    });

    let healthz = poll(PATIENCE, || server.get("/healthz")).await;
    verdicts.check(healthz.as_ref().is_some_and(|(c, _)| *c == 200), || {
        format!("a new client got no /healthz 200 within {PATIENCE:?}: {healthz:?}")
    });
    let fresh = poll(PATIENCE, || async {
        let channel = tokio::time::timeout(Duration::from_secs(10), channel(server.grpc))
            .await
            .ok()?;
        evaluate_a(&mut FlagServiceClient::new(channel)).await
    })
    .await;
    verdicts.check(fresh.is_some(), || {
        format!("a new gRPC client got no Evaluate answer within {PATIENCE:?}")
    });
    // The change made while the descriptors were taken is served, not judged invalid.
    let two = poll(PATIENCE, || async {
        (evaluate_a(&mut control.clone()).await.as_deref() == Some("two")).then_some(())
    })
    .await;
    verdicts.check(two.is_some(), || {
        format!("the directory change was not served within {PATIENCE:?}")
    });
    match control.status(proto::StatusRequest {}).await {
        Ok(status) => {
            let status = status.into_inner();
            let last_error = format!("{:?}", status.last_error);
            verdicts.check(
                status.invalid == 0 && !last_error.contains("open files"),
                || {
                    format!(
                        "a valid revision was judged invalid: {} invalid, last error {last_error}",
                        status.invalid
                    )
                },
            );
        }
        Err(e) => verdicts.check(false, || format!("Status failed: {e}")),
    }
    verdicts.finish();
}

/// Opens `max + 1` streams on one raw HTTP/2 connection without waiting for answers: the last
/// must be refused (RST_STREAM) and no other. Returns the SETTINGS_MAX_CONCURRENT_STREAMS the
/// server advertised, or what went wrong.
async fn over_the_stream_limit(
    addr: SocketAddr,
    request: impl Fn(u32) -> Vec<u8>,
) -> Result<u32, String> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&wire::hello()).await.unwrap();
    let settings = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match wire::read(&mut tcp).await {
                Ok(Some(f)) if f.kind == wire::SETTINGS && f.flags & wire::ACK == 0 => {
                    return Some(f);
                }
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
    .ok_or("no SETTINGS from the server")?;
    tcp.write_all(&wire::frame(wire::SETTINGS, wire::ACK, 0, &[]))
        .await
        .unwrap();
    let advertised = settings.setting(wire::MAX_CONCURRENT_STREAMS);
    let max = advertised.unwrap_or(200);
    let mut requests = Vec::new();
    for i in 0..=max {
        requests.extend(request(2 * i + 1));
    }
    let last = 2 * max + 1;
    let (mut read, mut write) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&requests).await;
        write
    });
    let outcome = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match wire::read(&mut read).await {
                Ok(Some(f)) if f.kind == wire::RST_STREAM && f.stream == last => {
                    return Ok(f.error_code());
                }
                Ok(Some(f)) if f.kind == wire::RST_STREAM => {
                    return Err(format!("stream {} of {last} was reset ({})", f.stream, f.error_code()));
                }
                Ok(Some(f)) if f.kind == wire::GOAWAY => {
                    return Err(format!("GOAWAY ({}) instead of refusing stream {last}", f.error_code()));
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err("connection closed".into()),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(format!(
            "stream {last} (number {}) was not refused within 15 s; the server advertised {advertised:?}",
            max + 1
        ))
    });
    writer.abort();
    let code = outcome?;
    if code != wire::REFUSED_STREAM {
        return Err(format!(
            "stream {last} reset with {code}, not REFUSED_STREAM"
        ));
    }
    advertised.ok_or_else(|| "no SETTINGS_MAX_CONCURRENT_STREAMS advertised".to_owned())
}

/// Before the fix one gRPC connection could open 20,000 streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_opens_at_most_max_concurrent_streams() {
    let dir = small_dir("one");
    let server = Server::start(&[dir.path().to_str().unwrap()], &[]).await;
    let mut verdicts = Verdicts::default();
    // Watch streams stay open; so do OFREP requests whose body never comes.
    let grpc = over_the_stream_limit(server.grpc, |s| {
        wire::grpc_call(s, "/vexil.v1.FlagService/Watch")
    })
    .await;
    verdicts.check(grpc == Ok(200), || format!("gRPC port: {grpc:?}"));
    let http = over_the_stream_limit(server.http, |s| {
        wire::request(s, "POST", "/ofrep/v1/evaluate/flags/a", false, false)
    })
    .await;
    verdicts.check(http == Ok(200), || format!("HTTP port: {http:?}"));
    verdicts.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. Idle and ping-deaf connections
// ---------------------------------------------------------------------------------------------

/// Before the fix idle keep-alive and HTTP/2 connections stayed open for good, and nothing
/// pinged a client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_ping_deaf_connections_are_closed() {
    let dir = small_dir("one");
    let server = Server::start(
        &[dir.path().to_str().unwrap()],
        &[
            ("VEXIL_IDLE_TIMEOUT", "2s"),
            ("VEXIL_HTTP2_KEEPALIVE_INTERVAL", "1s"),
            ("VEXIL_HTTP2_KEEPALIVE_TIMEOUT", "1s"),
        ],
    )
    .await;

    // HTTP/1.1 keep-alive: one request answered, then nothing.
    let http1 = async {
        let mut tcp = TcpStream::connect(server.http).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        let mut buf = [0u8; 1024];
        while !response.ends_with(b"ok\n") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering");
            response.extend_from_slice(&buf[..n]);
        }
        closed_within(&mut tcp, PATIENCE).await
    };
    // HTTP/2 on the gRPC port: one health check answered (pings answered too), then nothing.
    let http2 = async {
        let mut tcp = TcpStream::connect(server.grpc).await.unwrap();
        let mut hello = wire::hello();
        hello.extend(wire::grpc_call(1, "/grpc.health.v1.Health/Check"));
        tcp.write_all(&hello).await.unwrap();
        until_closed(&mut tcp, true, PATIENCE).await
    };
    // A Watch in flight (so the connection is not idle) on a client that never answers pings.
    let deaf = async {
        let mut tcp = TcpStream::connect(server.grpc).await.unwrap();
        let mut hello = wire::hello();
        hello.extend(wire::grpc_call(1, "/vexil.v1.FlagService/Watch"));
        tcp.write_all(&hello).await.unwrap();
        until_closed(&mut tcp, false, PATIENCE).await
    };
    let (http1, http2, deaf) = tokio::join!(http1, http2, deaf);
    let mut verdicts = Verdicts::default();
    verdicts.check(http1, || {
        format!("an idle HTTP/1.1 keep-alive connection was still open after {PATIENCE:?} (idle timeout 2 s)")
    });
    verdicts.check(http2.0.is_some(), || {
        format!("an idle HTTP/2 connection was still open after {PATIENCE:?} (idle timeout 2 s)")
    });
    verdicts.check(deaf.0.is_some() && deaf.1 > 0, || {
        format!(
            "a client that never answers pings: {:?} after {} ping(s) within {PATIENCE:?} (keepalive 1 s + 1 s)",
            deaf.0, deaf.1
        )
    });
    verdicts.finish();
}

// ---------------------------------------------------------------------------------------------
// 4. Remote reads that hang
// ---------------------------------------------------------------------------------------------

/// A git:// server on 127.0.0.1: `git daemon --inetd` on each connection for the repositories
/// under `base`, or, once silenced, a server that accepts and never writes.
struct GitServer {
    addr: SocketAddr,
    silent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<std::net::TcpStream>>>,
    daemons: Arc<Mutex<Vec<std::process::Child>>>,
}

impl GitServer {
    fn start(base: Option<&Path>) -> GitServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = GitServer {
            addr: listener.local_addr().unwrap(),
            silent: Arc::new(AtomicBool::new(base.is_none())),
            stop: Arc::new(AtomicBool::new(false)),
            held: Arc::default(),
            daemons: Arc::default(),
        };
        let (silent, stop, held, daemons) = (
            Arc::clone(&server.silent),
            Arc::clone(&server.stop),
            Arc::clone(&server.held),
            Arc::clone(&server.daemons),
        );
        let base = base.map(Path::to_path_buf);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                match (&base, silent.load(Ordering::SeqCst)) {
                    (Some(base), false) => {
                        let input = std::os::fd::OwnedFd::from(conn.try_clone().unwrap());
                        let output = std::os::fd::OwnedFd::from(conn);
                        let daemon = std::process::Command::new("git")
                            .args(["daemon", "--inetd", "--export-all"])
                            .arg(format!("--base-path={}", base.display()))
                            .arg(base)
                            .stdin(input)
                            .stdout(output)
                            .stderr(std::process::Stdio::null())
                            .spawn()
                            .unwrap();
                        daemons.lock().unwrap().push(daemon);
                    }
                    _ => held.lock().unwrap().push(conn),
                }
            }
        });
        server
    }

    fn url(&self) -> String {
        format!("git://{}/flags.git", self.addr)
    }

    fn silence(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees `stop`.
        let _ = std::net::TcpStream::connect(self.addr);
        for mut daemon in self.daemons.lock().unwrap().drain(..) {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
}

fn names_a_timeout(text: &str) -> bool {
    let text = text.to_lowercase();
    text.contains("timed out") || text.contains("timeout")
}

/// Before the fix a git:// server that accepts and never answers blocked start-up for good,
/// even with `--start-empty` (the first read came before the ports were bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_git_server_is_a_timeout_not_a_hang() {
    let git_server = GitServer::start(None);
    let url = git_server.url();
    let caches = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let cache = |i: usize| caches[i].path().to_str().unwrap();
    let short = [
        ("VEXIL_GIT_TIMEOUT", "2s"),
        ("VEXIL_GIT_CONNECT_TIMEOUT", "2s"),
    ];

    // With --start-empty the server answers while the first read hangs (a timeout far beyond
    // the wait: the read is still running) ...
    let hanging = async {
        let server = Process::spawn(
            &[&url, "--start-empty", "--cache-dir", cache(0)],
            &[("VEXIL_GIT_TIMEOUT", "300s")],
            None,
        )
        .serving()
        .await
        .map_err(|e| format!("with --start-empty, while the first read hangs: {e}"))?;
        match server.get("/readyz").await {
            Some((503, _)) => Ok(()),
            other => Err(format!("/readyz while the first read hangs: {other:?}")),
        }
    };
    // ... and reports the timeout once it passes ...
    let timing_out = async {
        let server = Process::spawn(
            &[&url, "--start-empty", "--cache-dir", cache(1)],
            &short,
            None,
        )
        .serving()
        .await
        .map_err(|e| format!("with --start-empty and --git-timeout 2s: {e}"))?;
        let named = poll(PATIENCE, || async {
            let error = server.status().await.ok()?.last_error?;
            names_a_timeout(&error.message).then_some(())
        })
        .await;
        named.ok_or_else(|| {
            format!("Status named no timeout within {PATIENCE:?} (--git-timeout 2s)")
        })
    };
    // ... and without it start-up fails, naming the timeout.
    let strict = async {
        let process = Process::spawn(&[&url, "--cache-dir", cache(2)], &short, None);
        let (status, log) = process
            .exited(PATIENCE)
            .await
            .map_err(|e| format!("without --start-empty (--git-timeout 2s): {e}"))?;
        if !status.success() && names_a_timeout(&log) {
            Ok(())
        } else {
            Err(format!("without --start-empty: {status}, stderr:\n{log}"))
        }
    };
    let (hanging, timing_out, strict) = tokio::join!(hanging, timing_out, strict);
    let mut verdicts = Verdicts::default();
    for result in [hanging, timing_out, strict] {
        verdicts.check_result(result);
    }
    verdicts.finish();
}

/// Before the fix a read that hung while serving was invisible (ready, Status SWAPPED) and
/// every abandoned Reload call kept a blocking thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_hangs_while_serving_shows_and_pins_no_threads() {
    let base = tempfile::tempdir().unwrap();
    let repo = base.path().join("flags.git");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    write_a(&repo, "one");
    commit_all(&repo, "one");
    let git_server = GitServer::start(Some(base.path()));
    let cache = tempfile::tempdir().unwrap();
    let server = Server::start(
        &[
            &git_server.url(),
            "--cache-dir",
            cache.path().to_str().unwrap(),
            "--fetch-interval",
            "500ms",
        ],
        &[
            ("VEXIL_GIT_TIMEOUT", "120s"),
            ("VEXIL_READ_STALL_TIMEOUT", "2s"),
        ],
    )
    .await;
    assert_eq!(server.get("/readyz").await.map(|r| r.0), Some(200));
    git_server.silence();
    let mut verdicts = Verdicts::default();

    let readyz = poll(PATIENCE, || async {
        server.get("/readyz").await.filter(|(code, _)| *code == 503)
    })
    .await;
    verdicts.check(readyz.is_some(), || {
        format!("/readyz still 200 {PATIENCE:?} after the source hung (read stall timeout 2 s)")
    });
    if let Some((_, body)) = &readyz {
        verdicts.check(body.trim().len() > "not ready".len(), || {
            format!("/readyz gave no reason: {body:?}")
        });
        let metrics = server
            .get("/metrics")
            .await
            .map(|r| r.1)
            .unwrap_or_default();
        verdicts.check(metrics.contains("vexil_reloader_healthy 0"), || {
            "no `vexil_reloader_healthy 0` in /metrics".into()
        });
        // Health follows (it is re-checked every second or so).
        let not_serving = poll(PATIENCE, || async {
            let mut health =
                tonic_health::pb::health_client::HealthClient::new(channel(server.grpc).await);
            let status = health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .ok()?
                .into_inner()
                .status;
            (status == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32)
                .then_some(())
        })
        .await;
        verdicts.check(not_serving.is_some(), || {
            format!("health stayed SERVING {PATIENCE:?} after /readyz turned 503")
        });
    }

    let threads = proc_status(server.pid(), "Threads");
    let mut client = server.client().await;
    for _ in 0..50 {
        let mut request = tonic::Request::new(proto::ReloadRequest {});
        request.set_timeout(Duration::from_millis(100));
        let _ = client.reload(request).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = proc_status(server.pid(), "Threads");
    verdicts.check(after <= threads + 4, || {
        format!("50 abandoned Reload calls took the server from {threads} to {after} threads")
    });
    verdicts.finish();
}

// ---------------------------------------------------------------------------------------------
// 5. A damaged pack
// ---------------------------------------------------------------------------------------------

/// Before the fix a damaged pack made git2 panic in the reloader thread (`Odb::read_header`
/// unwraps the object type), which ended reloading for good with Status unchanged.
///
/// A pack cut short is rejected by libgit2 as a whole ("does not match index"), an ordinary
/// source error; this pack keeps its size, header and trailer but has its objects zeroed, so
/// libgit2 reads an object header of type 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_pack_is_a_source_error_and_reloading_goes_on() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    git(root, &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(root.join("flags")).unwrap();
    for i in 0..5 {
        std::fs::write(
            root.join(format!("flags/f{i}.yaml")),
            flags_file([format!("f{i}")], 0),
        )
        .unwrap();
    }
    let first = commit_all(root, "one");
    git(root, &["repack", "-adq"]);
    let server = Server::start(
        &[
            root.to_str().unwrap(),
            "--ref",
            "main",
            "--flags-dir",
            "flags",
            "--poll-interval",
            "50ms",
        ],
        &[],
    )
    .await;
    assert!(served(&server, &first, PATIENCE).await);

    // The next commit (loose objects) changes f0; f1..f4 stay in the pack. It is made on a side
    // ref, the pack is damaged in place, then `main` is pointed at it.
    std::fs::write(root.join("flags/f0.yaml"), flags_file(["f0".to_owned()], 1)).unwrap();
    git(root, &["add", "-A"]);
    let tree = git(root, &["write-tree"]).trim().to_owned();
    let second = git(root, &["commit-tree", &tree, "-p", "HEAD", "-m", "two"])
        .trim()
        .to_owned();
    let packs = crate::helpers::sorted_entries(&root.join(".git/objects/pack"), |p| {
        p.extension() == Some(OsStr::new("pack"))
    });
    let [pack] = packs.as_slice() else {
        panic!("one pack expected: {packs:?}")
    };
    let original = std::fs::read(pack).unwrap();
    let mut permissions = std::fs::metadata(pack).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(pack, permissions).unwrap();
    let mut damaged = original.clone();
    let len = damaged.len();
    damaged[12..len - 20].fill(0);
    // In place (same file, not a rename): the server may have the pack mapped.
    {
        use std::io::{Seek as _, Write as _};
        let mut file = std::fs::OpenOptions::new().write(true).open(pack).unwrap();
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        file.write_all(&damaged).unwrap();
    }
    std::fs::write(root.join(".git/refs/heads/main"), format!("{second}\n")).unwrap();

    let mut verdicts = Verdicts::default();
    let failing = poll(Duration::from_secs(15), || async {
        let status = server.status().await.ok()?;
        (status.consecutive_failures > 0).then_some(status)
    })
    .await;
    if failing.is_none() {
        let status = status_text(&server).await;
        verdicts.fail(format!(
            "Status showed no failure within 15 s of the damaged read: {status}"
        ));
    }

    // Repaired, and a new commit on top: it is served.
    {
        use std::io::{Seek as _, Write as _};
        let mut file = std::fs::OpenOptions::new().write(true).open(pack).unwrap();
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        file.write_all(&original).unwrap();
    }
    std::fs::write(root.join("flags/f0.yaml"), flags_file(["f0".to_owned()], 2)).unwrap();
    let third = commit_all(root, "three");
    if !served(&server, &third, PATIENCE).await {
        let status = status_text(&server).await;
        verdicts.fail(format!(
            "the commit after the repair was not served within {PATIENCE:?}: {status}"
        ));
    }
    verdicts.finish();
}

/// Status in a line, for a failure message.
async fn status_text(server: &Server) -> String {
    match server.status().await {
        Ok(s) => format!(
            "revision {}, {} consecutive failures, {} attempts, last error {:?}",
            s.revision, s.consecutive_failures, s.attempts, s.last_error
        ),
        Err(e) => format!("Status failed: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Deep and oddly named files
// ---------------------------------------------------------------------------------------------

/// Under `root`: a valid `a.yaml`, a flag file 34 directories deep and one whose name is not
/// UTF-8.
fn odd_tree(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    write_a(root, "one");
    let deep = (0..34).fold(root.to_path_buf(), |p, i| p.join(format!("d{i}")));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(
        deep.join("deep.yaml"),
        flags_file(["deep-flag".to_owned()], 0),
    )
    .unwrap();
    std::fs::write(
        root.join(OsStr::from_bytes(b"odd-\xff.yaml")),
        flags_file(["odd-flag".to_owned()], 0),
    )
    .unwrap();
}

/// Whether `text` names both files of `odd_tree` that are not read: the deep one by its path
/// or by the first directory on it that is too deep (`d0/.../d32`, 33 levels), the other by
/// its name (`odd-` and the replaced byte).
fn names_both(text: &str) -> bool {
    let too_deep = (0..=32)
        .map(|i| format!("d{i}"))
        .collect::<Vec<_>>()
        .join("/");
    text.contains(&too_deep) && text.contains("odd-")
}

fn validate(dir: &Path, args: &[&str]) -> Result<(), String> {
    let output = std::process::Command::new(vexil_bin())
        .arg("validate")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() && names_both(&text) {
        Ok(())
    } else {
        Err(format!(
            "vexil validate {args:?}: {}, output:\n{text}",
            output.status
        ))
    }
}

/// `vexil serve ARGS` either refuses to start, naming both files, or serves with Status naming
/// them.
async fn serve_reports_odd_files(args: &[&str]) -> Result<(), String> {
    match Process::spawn(args, &[], None).serving().await {
        Err(e) if names_both(&e) => Ok(()),
        Err(e) => Err(format!(
            "vexil serve {args:?} failed without naming both files: {e}"
        )),
        Ok(server) => {
            let status = server.status().await.map_err(|e| e.to_string())?;
            let shown = format!(
                "{:?} {:?} {:?}",
                status.warnings, status.last_attempt, status.last_error
            );
            if names_both(&shown) {
                Ok(())
            } else {
                Err(format!(
                    "vexil serve {args:?} served revision {} ({} flags) with no diagnostic naming d0/.../d32/d33/deep.yaml and odd-\\xff.yaml",
                    status.revision, status.flags
                ))
            }
        }
    }
}

/// Before the fix files more than 32 directories deep or with names that are not UTF-8 were
/// skipped without a word, and the revision served as valid without their flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_oddly_named_files_are_reported() {
    let mut verdicts = Verdicts::default();
    let dir = tempfile::tempdir().unwrap();
    odd_tree(dir.path());
    verdicts.check_result(validate(dir.path(), &["."]));
    verdicts.check_result(serve_reports_odd_files(&[dir.path().to_str().unwrap()]).await);

    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    odd_tree(&repo.path().join("flags"));
    commit_all(repo.path(), "odd files");
    // Only the committed tree counts: the working tree's flags are removed.
    std::fs::remove_dir_all(repo.path().join("flags")).unwrap();
    std::fs::create_dir(repo.path().join("flags")).unwrap();
    verdicts.check_result(validate(repo.path(), &["--rev", "main", "flags"]));
    verdicts.check_result(
        serve_reports_odd_files(&[
            repo.path().to_str().unwrap(),
            "--ref",
            "main",
            "--flags-dir",
            "flags",
        ])
        .await,
    );
    verdicts.finish();
}

// ---------------------------------------------------------------------------------------------
// 7. Status with tens of thousands of diagnostics
// ---------------------------------------------------------------------------------------------

/// Before the fix Status and Reload carried every diagnostic: 20,000 of them made an answer of
/// about 8 MiB, beyond a default gRPC client's 4 MiB, exactly when Status is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_with_twenty_thousand_diagnostics_fits_a_default_client() {
    const FILES: usize = 200;
    const PER_FILE: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("broken/diagnostics-of-every-kind");
    std::fs::create_dir_all(&sub).unwrap();
    for f in 0..FILES {
        let mut text = String::from("flags:\n");
        for i in 0..PER_FILE {
            // One error each: an unknown field (with a suggestion).
            text.push_str(&format!(
                "  a-rather-long-flag-key-for-the-status-size-test-{f:03}-{i:03}:\n    descriptionn: broken on purpose\n    rules:\n      - when: [{{ attr: plan, equals: pro }}]\n        serve: true\n"
            ));
        }
        std::fs::write(sub.join(format!("file-{f:03}.yaml")), text).unwrap();
    }
    let output = std::process::Command::new(vexil_bin())
        .args(["validate", ".", "--format", "json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let total = listed.as_array().unwrap().len();
    assert_eq!(total, FILES * PER_FILE, "one diagnostic per broken flag");

    let server = Server::start(&[dir.path().to_str().unwrap(), "--start-empty"], &[]).await;
    // A default client: 4 MiB decoding limit.
    let client = server.client().await;
    let status = poll(PATIENCE, || {
        let mut client = client.clone();
        async move {
            match client.status(proto::StatusRequest {}).await {
                Ok(s) if s.get_ref().last_error.is_none() => None,
                other => Some(other.map(tonic::Response::into_inner)),
            }
        }
    })
    .await
    .expect("the first read ends within the wait");
    let mut verdicts = Verdicts::default();
    match status {
        Ok(status) => {
            for (which, attempt) in [
                ("last_attempt", &status.last_attempt),
                ("last_error", &status.last_error),
            ] {
                let attempt = attempt.clone().unwrap_or_default();
                verdicts.check(
                    attempt.result() == AttemptResult::Invalid
                        && attempt.diagnostics.len() <= 100
                        && attempt.diagnostics_total as usize == total,
                    || format!(
                        "Status {which}: {:?} with {} diagnostics, diagnostics_total {} (validate lists {total})",
                        attempt.result(),
                        attempt.diagnostics.len(),
                        attempt.diagnostics_total
                    ),
                );
            }
        }
        Err(e) => verdicts.fail(format!("Status with {total} diagnostics: {e}")),
    }
    match client.clone().reload(proto::ReloadRequest {}).await {
        Ok(reload) => {
            let attempt = reload.into_inner().attempt.unwrap_or_default();
            verdicts.check(attempt.diagnostics.len() <= 100, || {
                format!("Reload carried {} diagnostics", attempt.diagnostics.len())
            });
        }
        Err(e) => verdicts.fail(format!("Reload with {total} diagnostics: {e}")),
    }
    verdicts.finish();
}

// ---------------------------------------------------------------------------------------------
// 8, 9. Request bodies and contexts
// ---------------------------------------------------------------------------------------------

/// Before the fix `--max-message-bytes` applied to gRPC only: OFREP took 100 KB and the Unleash
/// metrics route 1.5 MB with a limit of 1,000 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies_are_held_to_max_message_bytes() {
    let dir = small_dir("one");
    let server = Server::start(
        &[dir.path().to_str().unwrap(), "--max-message-bytes", "1000"],
        &[],
    )
    .await;
    let mut verdicts = Verdicts::default();
    let small = post_status(
        server.http,
        "/ofrep/v1/evaluate/flags/a",
        br#"{"context":{"targetingKey":"k"}}"#.to_vec(),
    )
    .await;
    verdicts.check(small == Ok(200), || {
        format!("a small OFREP request: {small:?}")
    });
    let ofrep = format!(
        r#"{{"context":{{"targetingKey":"k","pad":"{}"}}}}"#,
        "x".repeat(100_000)
    );
    let ofrep = post_status(
        server.http,
        "/ofrep/v1/evaluate/flags/a",
        ofrep.into_bytes(),
    )
    .await;
    verdicts.check(ofrep == Ok(413), || {
        format!("a 100 KB OFREP request: {ofrep:?}")
    });
    let metrics = format!(
        r#"{{"appName":"a","instanceId":"i","bucket":{{"start":"2026-01-01T00:00:00Z","stop":"2026-01-01T00:01:00Z","toggles":{{"t":{{"yes":1,"no":0}}}}}},"pad":"{}"}}"#,
        "x".repeat(1_500_000)
    );
    let metrics = post_status(server.http, "/api/client/metrics", metrics.into_bytes()).await;
    verdicts.check(metrics == Ok(413), || {
        format!("a 1.5 MB Unleash metrics post: {metrics:?}")
    });
    verdicts.finish();
}

fn nested_json(depth: usize) -> String {
    (0..depth).fold("1".to_owned(), |inner, _| format!(r#"{{"a":{inner}}}"#))
}

fn nested_value(depth: usize) -> prost_types::Value {
    use prost_types::value::Kind;
    (0..depth).fold(
        prost_types::Value {
            kind: Some(Kind::NumberValue(1.0)),
        },
        |inner, _| prost_types::Value {
            kind: Some(Kind::StructValue(prost_types::Struct {
                fields: [("a".to_owned(), inner)].into_iter().collect(),
            })),
        },
    )
}

/// Before the fix a context nested 33 levels deep hit protobuf's recursion limit and gRPC
/// answered INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_nested_33_deep_is_invalid_argument() {
    let dir = small_dir("one");
    let server = Server::start(&[dir.path().to_str().unwrap()], &[]).await;
    let mut verdicts = Verdicts::default();
    let body = format!(
        r#"{{"context":{{"targetingKey":"k","a":{}}}}}"#,
        nested_json(33)
    );
    let ofrep = post_status(server.http, "/ofrep/v1/evaluate/flags/a", body.into_bytes()).await;
    verdicts.check(ofrep == Ok(400), || format!("OFREP: {ofrep:?}"));
    let answer = server
        .client()
        .await
        .evaluate(proto::EvaluateRequest {
            flag: "a".into(),
            context: Some(proto::Context {
                targeting_key: "k".into(),
                attributes: [("a".to_owned(), nested_value(33))].into_iter().collect(),
            }),
            ..Default::default()
        })
        .await;
    verdicts.check(
        answer
            .as_ref()
            .is_err_and(|e| e.code() == tonic::Code::InvalidArgument),
        || format!("gRPC Evaluate: {answer:?}"),
    );
    verdicts.finish();
}

// ---------------------------------------------------------------------------------------------
// 10, 11. Shutdown and /metrics
// ---------------------------------------------------------------------------------------------

/// Before the fix SIGTERM closed the listeners at once: the documented 503 during shutdown could
/// not be seen (connection refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_during_the_drain_window() {
    let dir = small_dir("one");
    let server = Server::start(
        &[dir.path().to_str().unwrap()],
        &[("VEXIL_DRAIN_WINDOW", "5s")],
    )
    .await;
    assert_eq!(server.get("/readyz").await.map(|r| r.0), Some(200));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut verdicts = Verdicts::default();
    // New connections until one sees 503 (200 until the signal is handled).
    let readyz = poll(PATIENCE, || async {
        match get(server.http, "/readyz", &[]).await {
            Some((200, _)) => None,
            Some((503, body)) => Some(Ok(body)),
            other => Some(Err(other)),
        }
    })
    .await;
    verdicts.check(matches!(readyz, Some(Ok(_))), || {
        format!("after SIGTERM /readyz on a new connection gave {readyz:?} (None: no answer, refused) before any 503")
    });
    if matches!(readyz, Some(Ok(_))) {
        // The window lasts 5 s: the next probes come well within it.
        for _ in 0..3 {
            let again = get(server.http, "/readyz", &[]).await;
            verdicts.check(again.as_ref().is_some_and(|(c, _)| *c == 503), || {
                format!(
                    "a later /readyz in the drain window gave {again:?} (None: no answer, refused)"
                )
            });
        }
        let health = async {
            let channel = Channel::from_shared(format!("http://{}", server.grpc))
                .unwrap()
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .map(|r| r.into_inner().status)
                .map_err(|e| e.to_string())
        };
        let health = tokio::time::timeout(Duration::from_secs(10), health).await;
        verdicts.check(
            matches!(health, Ok(Ok(s)) if s == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32),
            || format!("health during the drain window: {health:?}"),
        );
    }
    let exit = server.process.exited(PATIENCE).await;
    verdicts.check(exit.as_ref().is_ok_and(|(s, _)| s.success()), || {
        format!("after the drain window: {exit:?}")
    });
    verdicts.finish();
}

/// Before the fix `/metrics` (flag names, the revision) was open with tokens on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_token_unless_public() {
    let dir = small_dir("one");
    let path = dir.path().to_str().unwrap();
    let guarded = Server::start(&[path], &[("VEXIL_TOKENS", "t1")]).await;
    let public = Server::start(
        &[path],
        &[("VEXIL_TOKENS", "t1"), ("VEXIL_PUBLIC_METRICS", "true")],
    )
    .await;
    let code = |r: Option<(u16, String)>| r.map(|r| r.0);
    let mut verdicts = Verdicts::default();
    let cases = [
        (&guarded, "/metrics", None, 401),
        (&guarded, "/metrics", Some("Bearer t2"), 401),
        (&guarded, "/metrics", Some("Bearer t1"), 200),
        (&guarded, "/healthz", None, 200),
        (&guarded, "/readyz", None, 200),
        (&public, "/metrics", None, 200),
    ];
    for (server, path, token, expected) in cases {
        let headers: Vec<(&str, &str)> = token.map(|t| ("Authorization", t)).into_iter().collect();
        let got = code(get(server.http, path, &headers).await);
        verdicts.check(got == Some(expected), || {
            format!(
                "{path} with token {token:?}{}: {got:?}, expected {expected}",
                if std::ptr::eq(server, &public) {
                    " and --public-metrics"
                } else {
                    ""
                }
            )
        });
    }
    verdicts.finish();
}
