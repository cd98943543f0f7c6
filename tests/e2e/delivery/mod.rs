//! Change delivery end to end (issue 16): the real `vexil serve` on a local git ref, with
//! notification receivers on 127.0.0.1 (a receiver that fails then recovers, one that hangs, one
//! that holds its first answer while changes pile up, and the documented Python cache receiver
//! with the right and a wrong secret), and the SSE streams (`streams`). Every wait is a bounded
//! poll for a state, never a timing assertion.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value as Json;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::faults::Server;
use crate::helpers::{git, repo_root};

mod browser;
mod streams;

const PATIENCE: Duration = Duration::from_secs(30);
const SECRET: &str = "notify-secret";

/// Polls `check` until it holds, for at most `PATIENCE`.
async fn wait_for<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    crate::helpers::poll_until(what, PATIENCE, check).await;
}

/// A repository whose `flags/` holds `files` (name, text), committed on `main`.
fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    git(tmp.path(), &["init", "-q", "-b", "main"]);
    commit(tmp.path(), files, "first");
    tmp
}

fn commit(repo: &Path, files: &[(&str, &str)], message: &str) -> String {
    std::fs::create_dir_all(repo.join("flags")).unwrap();
    for (name, text) in files {
        std::fs::write(repo.join("flags").join(name), text).unwrap();
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"]).trim().to_owned()
}

fn flag_a(value: &str) -> String {
    format!("flags:\n  a:\n    type: string\n    variants: {{ v: \"{value}\" }}\n    default: v\n")
}

/// `vexil serve` on `repo`'s `main` (polled every 20 ms) with `args` and `env`.
async fn serve(repo: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut all = vec![
        repo.to_str().unwrap(),
        "--ref",
        "main",
        "--flags-dir",
        "flags",
        "--poll-interval",
        "20ms",
    ];
    all.extend_from_slice(args);
    Server::start(&all, env).await
}

async fn wait_served(server: &Server, revision: &str) {
    wait_for(&format!("revision {revision} to be served"), || async {
        server.status().await.is_ok_and(|s| s.revision == revision)
    })
    .await;
}

/// Waits until receiver `name` has had `revision` delivered (`what` names the wait).
async fn wait_delivered(server: &Server, name: &str, revision: &str, what: &str) {
    wait_for(what, || async {
        receiver_status(server, name).await.last_delivered_revision == revision
    })
    .await;
}

async fn receiver_status(server: &Server, name: &str) -> vexil_server::proto::NotificationReceiver {
    let status = server.status().await.unwrap();
    status
        .notifications
        .into_iter()
        .find(|r| r.receiver == name)
        .unwrap_or_else(|| panic!("no receiver {name} in Status"))
}

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Got {
    headers: HashMap<String, String>,
    body: String,
}

impl Got {
    fn json(&self) -> Json {
        serde_json::from_str(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// How a receiver answers its n-th request.
#[derive(Clone)]
enum Answer {
    Status(u16),
    /// Reads the request and never answers.
    Hang,
    /// Answers 200 once `release` is notified.
    Hold(Arc<Notify>),
}

/// An HTTP receiver on 127.0.0.1 that records every request.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(plan: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let plan = Arc::new(plan);
        let log = Arc::clone(&got);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (log, plan) = (Arc::clone(&log), Arc::clone(&plan));
                tokio::spawn(async move {
                    let mut reader = tokio::io::BufReader::new(stream);
                    let mut headers = HashMap::new();
                    let mut line = String::new();
                    reader.read_line(&mut line).await.unwrap();
                    loop {
                        line.clear();
                        reader.read_line(&mut line).await.unwrap();
                        let Some((k, v)) = line.trim_end().split_once(':') else {
                            break;
                        };
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                    }
                    let length: usize = headers["content-length"].parse().unwrap();
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).await.unwrap();
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(Got {
                            headers,
                            body: String::from_utf8(body).unwrap(),
                        });
                        log.len() - 1
                    };
                    let code = match plan(n) {
                        Answer::Status(code) => code,
                        Answer::Hang => std::future::pending().await,
                        Answer::Hold(release) => {
                            release.notified().await;
                            200
                        }
                    };
                    let answer = format!(
                        "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = reader.get_mut().write_all(answer.as_bytes()).await;
                });
            }
        });
        Receiver { addr, got, task }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

fn verifies(got: &Got) -> bool {
    let secret = vexil_server::WebhookSecret::new(SECRET.as_bytes()).unwrap();
    got.header("x-vexil-signature-256")
        .strip_prefix("sha256=")
        .is_some_and(|hex| secret.verify_hex(hex, got.body.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_then_recovers_gets_every_change_in_order() {
    let repo = repo(&[("a.yaml", &flag_a("one"))]);
    // Three refusals (503), then answers.
    let receiver = Receiver::start(|n| Answer::Status(if n < 3 { 503 } else { 200 })).await;
    let url = receiver.url();
    let server = serve(
        repo.path(),
        &["--notify-url", &url, "--notify-retry-base", "20ms"],
        &[("VEXIL_NOTIFY_SECRET", SECRET)],
    )
    .await;
    let first = git(repo.path(), &["rev-parse", "HEAD"]).trim().to_owned();
    let mut commits = vec![first];
    for value in ["two", "three", "four"] {
        let c = commit(repo.path(), &[("a.yaml", &flag_a(value))], value);
        wait_served(&server, &c).await;
        commits.push(c);
    }
    let last = commits.last().unwrap().clone();
    wait_delivered(&server, "url0", &last, "the last commit to be delivered").await;
    let got = receiver.got();
    assert!(got.len() >= 4, "{got:?}");
    // Every request is signed over its raw body, and names its delivery and time as the body
    // does; a retry keeps its delivery id.
    for g in &got {
        assert!(verifies(g), "a bad signature: {g:?}");
        let body = g.json();
        assert_eq!(body["delivery"], g.header("x-vexil-delivery"));
        assert_eq!(body["timestamp"].to_string(), g.header("x-vexil-timestamp"));
        assert_eq!(body["commit"], body["revision"]);
    }
    // Revisions arrive in commit order: old -> new steps along the commits, never back.
    let revisions: Vec<String> = got
        .iter()
        .map(|g| g.json()["revision"].as_str().unwrap().to_owned())
        .collect();
    let positions: Vec<usize> = revisions
        .iter()
        .map(|r| commits.iter().position(|c| c == r).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] <= w[1]), "{positions:?}");
    let first_body = got[0].json();
    assert_eq!(first_body["old_revision"], commits[0]);
    let ns = &first_body["namespaces"][0];
    assert_eq!(ns["namespace"], "default");
    assert_eq!(ns["changed"][0]["flag"], "a");
    assert_eq!(ns["changed"][0]["fields"][0]["before"], "one");
    // The three refusals were retried with the same delivery id.
    let ids: Vec<&str> = got[..4]
        .iter()
        .map(|g| g.header("x-vexil-delivery"))
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let status = receiver_status(&server, "url0").await;
    assert_eq!(status.retried, 3, "{status:?}");
    assert_eq!(status.failed, 0, "{status:?}");
    assert!(status.last_error.contains("HTTP 503"), "{status:?}");
    assert_eq!(status.host, "127.0.0.1");
    let (_, metrics) = server.get("/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"vexil_notifications_total{receiver="url0",outcome="retried"} 3"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_delays_neither_swaps_nor_another_receiver() {
    let repo = repo(&[("a.yaml", &flag_a("one"))]);
    let hanging = Receiver::start(|_| Answer::Hang).await;
    let healthy = Receiver::start(|_| Answer::Status(204)).await;
    let slack = Receiver::start(|_| Answer::Status(200)).await;
    let (a, b, c) = (hanging.url(), healthy.url(), slack.url());
    let server = serve(
        repo.path(),
        &[
            "--notify-url",
            &a,
            "--notify-url",
            &b,
            "--notify-slack",
            &c,
            "--notify-timeout",
            "500ms",
            "--notify-attempts",
            "2",
            "--notify-retry-base",
            "10ms",
        ],
        &[],
    )
    .await;
    let two = commit(repo.path(), &[("a.yaml", &flag_a("two"))], "two");
    wait_delivered(
        &server,
        "url1",
        &two,
        "the healthy receiver to get the first change",
    )
    .await;
    let three = commit(repo.path(), &[("a.yaml", &flag_a("three"))], "three");
    // Served, and the healthy receiver has both changes, while the other one hangs.
    wait_served(&server, &three).await;
    wait_delivered(
        &server,
        "url1",
        &three,
        "the healthy receiver to get both changes",
    )
    .await;
    assert!(!healthy.got().is_empty());
    // Unsigned without a secret.
    assert_eq!(healthy.got()[0].header("x-vexil-signature-256"), "");
    // Slack: one message per change, unsigned, a fallback text and a section naming the flag.
    wait_delivered(&server, "slack0", &three, "Slack to get both changes").await;
    let messages = slack.got();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[1].header("x-vexil-signature-256"), "");
    let message = messages[1].json();
    assert!(
        message["text"]
            .as_str()
            .unwrap()
            .ends_with("0 added, 1 changed, 0 removed"),
        "{message}"
    );
    assert_eq!(
        message["blocks"][0]["text"]["text"],
        "*default*\n• `a`: variants.v \"two\" -> \"three\""
    );
    // Each attempt on the hanging one times out; both changes are given up after 2 attempts.
    wait_for(
        "the hanging receiver's deliveries to be given up",
        || async { receiver_status(&server, "url0").await.failed == 2 },
    )
    .await;
    let status = receiver_status(&server, "url0").await;
    assert!(
        status.last_error.contains("no answer within 0.5s"),
        "{status:?}"
    );
    assert_eq!(status.delivered, 0);
    assert_eq!(hanging.got().len(), 4, "two attempts of each change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_the_oldest_changes() {
    let repo = repo(&[("a.yaml", &flag_a("v0"))]);
    let release = Arc::new(Notify::new());
    let hold = Arc::clone(&release);
    let receiver = Receiver::start(move |n| {
        if n == 0 {
            Answer::Hold(Arc::clone(&hold))
        } else {
            Answer::Status(200)
        }
    })
    .await;
    let url = receiver.url();
    let server = serve(
        repo.path(),
        &[
            "--notify-url",
            &url,
            "--notify-queue",
            "2",
            "--notify-timeout",
            "60s",
        ],
        &[],
    )
    .await;
    let mut commits = Vec::new();
    for k in 1..=5u32 {
        let c = commit(
            repo.path(),
            &[("a.yaml", &flag_a(&format!("v{k}")))],
            "next",
        );
        wait_served(&server, &c).await;
        if k == 1 {
            wait_for("the first change to be held", || async {
                receiver.got().len() == 1
            })
            .await;
        }
        // The first is in flight (held); the queue keeps two, dropping the oldest.
        let expected_queued = (k - 1).min(2);
        let expected_dropped = (k - 1).saturating_sub(2);
        wait_for(&format!("change {k} to be queued"), || async {
            let s = receiver_status(&server, "url0").await;
            s.queued == expected_queued && s.dropped == u64::from(expected_dropped)
        })
        .await;
        commits.push(c);
    }
    release.notify_one();
    let last = commits[4].clone();
    wait_delivered(&server, "url0", &last, "the newest change to be delivered").await;
    let revisions: Vec<String> = receiver
        .got()
        .iter()
        .map(|g| g.json()["revision"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        revisions,
        [commits[0].clone(), commits[3].clone(), commits[4].clone()]
    );
    // The change after a dropped one still says where it starts: its own old revision.
    let status = receiver_status(&server, "url0").await;
    assert_eq!((status.delivered, status.dropped), (3, 2), "{status:?}");
}

/// The documented cache receiver (tests/conformance/cache_receiver.py, also in
/// docs/notifications.md) with `secret`; its stdout lines are collected.
struct PythonReceiver {
    child: tokio::process::Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl PythonReceiver {
    async fn start(secret: &str) -> PythonReceiver {
        let mut child = tokio::process::Command::new("python3")
            .arg(repo_root().join("tests/conformance/cache_receiver.py"))
            .arg("0")
            .env("VEXIL_NOTIFY_SECRET", secret)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 (Debian package python3)");
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(PATIENCE, stdout.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let port = first.strip_prefix("listening ").unwrap().parse().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        PythonReceiver { child, port, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for PythonReceiver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_receiver_drops_keys_and_refuses_a_wrong_secret() {
    let repo = repo(&[("a.yaml", &flag_a("one"))]);
    let right = PythonReceiver::start(SECRET).await;
    let wrong = PythonReceiver::start("another-secret").await;
    let (a, b) = (
        format!("http://127.0.0.1:{}/", right.port),
        format!("http://127.0.0.1:{}/", wrong.port),
    );
    let server = serve(
        repo.path(),
        &[
            "--notify-url",
            &a,
            "--notify-url",
            &b,
            "--notify-retry-base",
            "10ms",
        ],
        &[("VEXIL_NOTIFY_SECRET", SECRET)],
    )
    .await;
    let files = [
        ("a.yaml", flag_a("two")),
        ("b.yaml", "flags:\n  b:\n    type: boolean\n".to_owned()),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let two = commit(repo.path(), &files, "two");
    wait_for("both receivers to answer", || async {
        right.lines().contains(&"answered 204".to_owned())
            && wrong.lines().contains(&"answered 401".to_owned())
    })
    .await;
    let dropped = right.lines();
    assert!(
        dropped.contains(&"dropped default/a".to_owned()),
        "{dropped:?}"
    );
    assert!(
        dropped.contains(&"dropped default/b".to_owned()),
        "{dropped:?}"
    );
    // The wrong secret's refusal is not retried (it would be refused again), and Status says
    // why.
    wait_for("the refusal to be counted", || async {
        receiver_status(&server, "url1").await.failed == 1
    })
    .await;
    let status = receiver_status(&server, "url1").await;
    assert_eq!(status.retried, 0, "{status:?}");
    assert!(status.last_error.starts_with("HTTP 401"), "{status:?}");
    let ok = receiver_status(&server, "url0").await;
    assert_eq!(ok.last_delivered_revision, two);
    assert_eq!(wrong.lines(), ["answered 401"]);
}

/// docs/notifications.md shows the receiver the tests run, verbatim.
#[test]
fn the_documented_receiver_is_the_tested_one() {
    let doc = std::fs::read_to_string(repo_root().join("docs/notifications.md")).unwrap();
    let script =
        std::fs::read_to_string(repo_root().join("tests/conformance/cache_receiver.py")).unwrap();
    assert!(
        doc.contains(&format!("```python\n{script}```")),
        "docs/notifications.md must show tests/conformance/cache_receiver.py as it is"
    );
}

/// An https receiver (a private CA's certificate for `localhost`) that answers 204 and keeps
/// the bodies; `SSL_CERT_FILE` given to the server is the CA (rustls, nothing else trusted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_receiver_is_checked_against_the_ca_file() {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Vexil notify test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf_cert.der().to_vec())],
            PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&bodies);
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, sink) = (acceptor.clone(), Arc::clone(&sink));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut reader = tokio::io::BufReader::new(tls);
                let mut length = 0;
                let mut line = String::new();
                while reader.read_line(&mut line).await.unwrap() > 0 && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    line.clear();
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).await.unwrap();
                sink.lock().unwrap().push(String::from_utf8(body).unwrap());
                let answer = b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n";
                reader.get_mut().write_all(answer).await.unwrap();
                reader.get_mut().shutdown().await.unwrap();
            });
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let repo = repo(&[("a.yaml", &flag_a("one"))]);
    let url = format!("https://localhost:{port}/hook");
    let server = serve(
        repo.path(),
        &["--notify-url", &url],
        &[("SSL_CERT_FILE", ca_file.to_str().unwrap())],
    )
    .await;
    let two = commit(repo.path(), &[("a.yaml", &flag_a("two"))], "two");
    wait_delivered(
        &server,
        "url0",
        &two,
        "the https receiver to get the change",
    )
    .await;
    let got = bodies.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains(&two));
    assert_eq!(receiver_status(&server, "url0").await.host, "localhost");
    task.abort();
}
