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
            .args(crate::helpers::LOOPBACK_PORTS)
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

/// A running `vexil serve` (also used by `serve::tls`).
pub(crate) struct Server {
    process: Process,
    pub(crate) grpc: SocketAddr,
    pub(crate) http: SocketAddr,
}

impl Server {
    /// `vexil serve ARGS` on 127.0.0.1:0 with `env` (logs at `warn` unless `env` sets
    /// `VEXIL_LOG`), once it serves.
    pub(crate) async fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::try_start(args, env)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `start`, or why it does not serve (with its stderr).
    pub(crate) async fn try_start(args: &[&str], env: &[(&str, &str)]) -> Result<Server, String> {
        Process::spawn(args, env, None)
            .serving()
            .await
            .map_err(|e| format!("vexil serve {args:?}: {e}"))
    }

    /// A server on `flags/` of `repo`'s `main` branch, polled every 50 ms.
    async fn on_main(repo: &Path, env: &[(&str, &str)]) -> Server {
        let args = [
            repo.to_str().unwrap(),
            "--ref",
            "main",
            "--flags-dir",
            "flags",
            "--poll-interval",
            "50ms",
        ];
        Server::start(&args, env).await
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// What the server logged so far (its stderr).
    pub(crate) fn log(&self) -> String {
        self.process.log()
    }

    /// Sends SIGHUP (reread the certificates, read the source).
    pub(crate) fn hup(&self) {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn client(&self) -> FlagServiceClient<Channel> {
        FlagServiceClient::new(channel(self.grpc).await)
    }

    pub(crate) async fn status(&self) -> Result<proto::StatusResponse, tonic::Status> {
        self.client()
            .await
            .status(proto::StatusRequest {})
            .await
            .map(tonic::Response::into_inner)
    }

    pub(crate) async fn get(&self, path: &str) -> Option<(u16, String)> {
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

mod connections;
mod requests;
mod sources;
mod wire;

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
