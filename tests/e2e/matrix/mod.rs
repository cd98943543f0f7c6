//! The configuration matrix (issue 14, item 8): one table of operations run against real
//! `vexil serve` processes in every configuration, each configuration reported by name (a
//! failure reads `https+tokens+grpc-tls: OFREP evaluation: ...`).
//!
//! - Sources (`SOURCES`): a directory, a local repository with `--ref`, and remotes over
//!   `file://`, `git://` (git daemon), `https://` (git http-backend behind nginx and fcgiwrap,
//!   TLS from a CA made here, HTTP basic auth) and `ssh://` (sshd, key auth with ed25519, ecdsa
//!   and RSA keys, known_hosts); every server is started by the suite on 127.0.0.1
//!   (`servers.rs`).
//! - Crossed with (`CROSS`): bearer tokens on and off, gRPC TLS on and off.
//! - Operations (`OPERATIONS`), in order, one function each: an evaluation over native gRPC,
//!   flagd's gRPC and OFREP, the Flipper and Unleash mirrors' bodies, `Status` (the source's
//!   commit, no secret anywhere), and a commit reaching the served value. With tokens, each
//!   operation first checks that a call without one is refused.
//!
//! `bad_input.rs` is the second table: sources that cannot work (an unreachable host, a wrong
//! password, a wrong host key, a missing CA, an unwritable cache) must stop `vexil serve` (or
//! show in `Status` with `--start-empty`) with a message naming the problem and no secret.
//!
//! Configurations run four at a time; every wait is bounded.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use vexil_server::flagd::v1;
use vexil_server::proto::flag_service_client::FlagServiceClient;
use vexil_server::proto::{self};

use crate::faults::Server;
use servers::{Repo, Servers};

mod bad_input;
pub(crate) mod servers;

/// The bound of every wait for a state (a new value served, an answer).
const PATIENCE: Duration = Duration::from_secs(30);

/// Configurations run at once (each is a `vexil serve` process and a few clients).
const PARALLEL: usize = 4;

/// Where flags come from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Source {
    /// A directory, watched.
    Dir,
    /// A local repository's `main` with `--ref`.
    LocalRef,
    /// `file://` to a bare repository.
    File,
    /// `git://` from git daemon.
    Git,
    /// `https://` from git http-backend behind nginx: basic auth (the credentials in
    /// `VEXIL_GIT_USERNAME` and `VEXIL_GIT_PASSWORD`), the suite's CA.
    Https,
    /// The same with the user and password in the URL (`https://user:password@host/...`): the
    /// password must show nowhere (Status, /readyz, /metrics, the log).
    HttpsUrlPassword,
    /// `ssh://` from sshd with a client key of this type (`ssh-keygen -t`), and known_hosts.
    Ssh(&'static str),
}

/// Every source, each run in every combination of `CROSS`.
const SOURCES: [(&str, Source); 9] = [
    ("dir", Source::Dir),
    ("local-ref", Source::LocalRef),
    ("file", Source::File),
    ("git", Source::Git),
    ("https", Source::Https),
    ("https-url-password", Source::HttpsUrlPassword),
    ("ssh", Source::Ssh("ed25519")),
    ("ssh-ecdsa", Source::Ssh("ecdsa")),
    ("ssh-rsa", Source::Ssh("rsa")),
];

/// (bearer tokens, gRPC TLS).
const CROSS: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

/// One configuration of `vexil serve`.
#[derive(Clone, Debug)]
struct Config {
    name: String,
    source: Source,
    tokens: bool,
    grpc_tls: bool,
}

fn configurations() -> Vec<Config> {
    let mut all = Vec::new();
    for (source_name, source) in SOURCES {
        for (tokens, grpc_tls) in CROSS {
            let mut name = source_name.to_owned();
            if tokens {
                name.push_str("+tokens");
            }
            if grpc_tls {
                name.push_str("+grpc-tls");
            }
            all.push(Config {
                name,
                source,
                tokens,
                grpc_tls,
            });
        }
    }
    all
}

/// What every configuration does, in this order (the commit last: it changes the value).
#[derive(Clone, Copy, Debug)]
enum Operation {
    Native,
    Flagd,
    Ofrep,
    Flipper,
    Unleash,
    Status,
    Commit,
}

const OPERATIONS: [(&str, Operation); 7] = [
    ("native gRPC evaluation", Operation::Native),
    ("flagd gRPC evaluation", Operation::Flagd),
    ("OFREP evaluation", Operation::Ofrep),
    ("Flipper mirror", Operation::Flipper),
    ("Unleash mirror", Operation::Unleash),
    ("Status", Operation::Status),
    ("a commit reaches the served value", Operation::Commit),
];

/// The flag files at a generation: `greeting` says `gen-N`; `matrix-bool` is on.
fn flags(generation: u32) -> String {
    format!(
        "flags:\n  matrix-bool:\n    description: a boolean both mirrors carry\n    default: true\n  greeting:\n    type: string\n    variants: {{ v: \"gen-{generation}\" }}\n    default: v\n"
    )
}

/// What is served, and how to change it.
enum Origin {
    /// The directory (its `matrix.yaml`).
    Dir(PathBuf),
    /// A repository: the served commit is its `main`.
    Repo(Repo),
}

/// One configuration, running.
struct Case {
    config: Config,
    server: Server,
    channel: Channel,
    token: Option<String>,
    origin: Origin,
    /// The revision first served (a commit id, or a directory's content hash once read).
    revision: String,
    /// Where the source is, as its description in Status must name it.
    described: String,
    /// What must never show: the git password, the token, the ssh key's lines.
    secrets: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl Case {
    /// `message` with the token, if tokens are on.
    fn authorized<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}").parse().unwrap();
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    fn native(&self) -> FlagServiceClient<Channel> {
        FlagServiceClient::new(self.channel.clone())
    }

    /// An HTTP/1.1 request to the HTTP port, with the token if `with_token`: (status, body).
    async fn http(&self, method: &str, path: &str, body: &str, with_token: bool) -> (u16, String) {
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Unleash-Client-Spec", "5.0.0")];
        if let (true, Some(bearer)) = (with_token, &bearer) {
            headers.push(("Authorization", bearer.as_str()));
        }
        let exchange = crate::helpers::http(self.server.http, method, path, &headers, body);
        let (code, _, body) = tokio::time::timeout(PATIENCE, exchange)
            .await
            .unwrap_or_else(|_| panic!("no answer to {method} {path} within {PATIENCE:?}"));
        (code, body)
    }

    /// With tokens, a request to the HTTP port without one gets 401.
    async fn http_refused_without_token(&self, method: &str, path: &str, body: &str) -> Check {
        if self.token.is_some() {
            let (code, answer) = self.http(method, path, body, false).await;
            ensure(code == 401, || {
                format!("{method} {path} without a token: {code} {answer}")
            })?;
        }
        Ok(())
    }

    async fn status(&self) -> Result<proto::StatusResponse, String> {
        let request = self.authorized(proto::StatusRequest {});
        self.native()
            .status(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|e| format!("Status: {e:?}"))
    }

    /// `text` holds none of the secrets.
    fn no_secret(&self, what: &str, text: &str) -> Check {
        match self.secrets.iter().find(|s| text.contains(s.as_str())) {
            Some(secret) => Err(format!("{what} holds a secret ({secret:?}):\n{text}")),
            None => Ok(()),
        }
    }
}

type Check = Result<(), String>;

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Check {
    if ok { Ok(()) } else { Err(what()) }
}

async fn perform(operation: Operation, case: Arc<Case>) -> Check {
    match operation {
        Operation::Native => native(&case).await,
        Operation::Flagd => flagd(&case).await,
        Operation::Ofrep => ofrep(&case).await,
        Operation::Flipper => flipper(&case).await,
        Operation::Unleash => unleash(&case).await,
        Operation::Status => status(&case).await,
        Operation::Commit => commit(&case).await,
    }
}

/// vexil.v1 Evaluate of `greeting`; with tokens, a call without one is UNAUTHENTICATED; with
/// TLS, a plaintext call fails.
async fn native(case: &Case) -> Check {
    let request = || proto::EvaluateRequest {
        flag: "greeting".into(),
        ..Default::default()
    };
    if case.token.is_some() {
        let refused = case.native().evaluate(request()).await;
        ensure(
            refused
                .as_ref()
                .is_err_and(|e| e.code() == tonic::Code::Unauthenticated),
            || format!("without a token: {refused:?}"),
        )?;
    }
    if case.config.grpc_tls {
        let plain = Channel::from_shared(format!("http://{}", case.server.grpc))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10));
        let answer = match plain.connect().await {
            Ok(channel) => FlagServiceClient::new(channel)
                .evaluate(case.authorized(request()))
                .await
                .map(|_| ()),
            Err(_) => Err(tonic::Status::unavailable("no connection")),
        };
        ensure(answer.is_err(), || {
            "a plaintext call to the TLS port was answered".into()
        })?;
    }
    let answer = case
        .native()
        .evaluate(case.authorized(request()))
        .await
        .map_err(|e| format!("Evaluate: {e:?}"))?
        .into_inner();
    let value = answer.value.and_then(|v| v.kind);
    ensure(
        value == Some(proto::value::Kind::StringValue("gen-1".into())),
        || format!("greeting is {value:?}, not \"gen-1\""),
    )?;
    ensure(answer.revision == case.revision, || {
        format!(
            "answered from revision {:?}, not {:?}",
            answer.revision, case.revision
        )
    })
}

/// flagd.evaluation.v1 ResolveBoolean of `matrix-bool`.
async fn flagd(case: &Case) -> Check {
    let mut client = v1::service_client::ServiceClient::new(case.channel.clone());
    let request = || v1::ResolveBooleanRequest {
        flag_key: "matrix-bool".into(),
        context: None,
    };
    if case.token.is_some() {
        let refused = client.resolve_boolean(request()).await;
        ensure(
            refused
                .as_ref()
                .is_err_and(|e| e.code() == tonic::Code::Unauthenticated),
            || format!("without a token: {refused:?}"),
        )?;
    }
    let answer = client
        .resolve_boolean(case.authorized(request()))
        .await
        .map_err(|e| format!("ResolveBoolean: {e:?}"))?
        .into_inner();
    ensure(answer.value && answer.reason == "STATIC", || {
        format!("ResolveBoolean answered {answer:?}")
    })
}

/// OFREP: POST /ofrep/v1/evaluate/flags/greeting.
async fn ofrep(case: &Case) -> Check {
    let (path, body) = (
        "/ofrep/v1/evaluate/flags/greeting",
        r#"{"context":{"targetingKey":"user-1"}}"#,
    );
    case.http_refused_without_token("POST", path, body).await?;
    let (code, answer) = case.http("POST", path, body, true).await;
    ensure(
        code == 200 && answer.contains(r#""key":"greeting","value":"gen-1""#),
        || format!("{code} {answer}"),
    )
}

/// The Flipper mirror's feature list holds `matrix-bool`, fully on.
async fn flipper(case: &Case) -> Check {
    mirror_feature(case, "/flipper/api/features", "key", |f| f["state"] == "on").await
}

/// The Unleash mirror's client features hold `matrix-bool`, enabled.
async fn unleash(case: &Case) -> Check {
    mirror_feature(case, "/api/client/features", "name", |f| {
        f["enabled"] == true
    })
    .await
}

/// A mirror's `features` list (at `path`, behind the token) holds `matrix-bool` (named by the
/// field `name`) and `on` holds of it.
async fn mirror_feature(
    case: &Case,
    path: &str,
    name: &str,
    on: fn(&serde_json::Value) -> bool,
) -> Check {
    case.http_refused_without_token("GET", path, "").await?;
    let (code, body) = case.http("GET", path, "", true).await;
    ensure(code == 200, || format!("{code} {body}"))?;
    let json: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))?;
    let feature = json["features"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f[name] == "matrix-bool"));
    ensure(feature.is_some_and(on), || {
        format!("no `matrix-bool` that is on: {body}")
    })
}

/// Status: the revision is the source's commit (a directory: its content hash, as served), the
/// description names the source, and no secret is in it, in /readyz, /metrics or the log.
async fn status(case: &Case) -> Check {
    if case.token.is_some() {
        let refused = case.native().status(proto::StatusRequest {}).await;
        ensure(
            refused
                .as_ref()
                .is_err_and(|e| e.code() == tonic::Code::Unauthenticated),
            || format!("without a token: {refused:?}"),
        )?;
    }
    let status = case.status().await?;
    let expected = match &case.origin {
        Origin::Repo(repo) => crate::helpers::git(&repo.bare, &["rev-parse", "main"])
            .trim()
            .to_owned(),
        Origin::Dir(_) => case.revision.clone(),
    };
    ensure(status.revision == expected && expected.len() == 40, || {
        format!(
            "revision {:?}, the source has {expected:?}",
            status.revision
        )
    })?;
    ensure(status.source.contains(&case.described), || {
        format!(
            "the source is described as {:?}, without {:?}",
            status.source, case.described
        )
    })?;
    ensure(
        status.flags == 2 && status.consecutive_failures == 0,
        || format!("{status:?}"),
    )?;
    case.no_secret("Status", &format!("{status:?}"))?;
    let (code, body) = case.http("GET", "/readyz", "", true).await;
    ensure(code == 200, || format!("/readyz: {code} {body}"))?;
    case.no_secret("/readyz", &body)?;
    let (code, body) = case.http("GET", "/metrics", "", true).await;
    ensure(code == 200, || format!("/metrics: {code} {body}"))?;
    case.no_secret("/metrics", &body)?;
    case.no_secret("the log", &case.server.log())
}

/// A new commit (a directory: a new file content) is served within the patience: the value
/// and the Status revision.
async fn commit(case: &Case) -> Check {
    let expected = match &case.origin {
        Origin::Repo(repo) => Some(repo.commit(&flags(2), "generation 2")),
        Origin::Dir(dir) => {
            std::fs::write(dir.join("matrix.yaml"), flags(2)).unwrap();
            None
        }
    };
    let start = Instant::now();
    loop {
        let status = case.status().await?;
        let revision_moved = match &expected {
            Some(commit) => &status.revision == commit,
            None => status.revision != case.revision && status.revision.len() == 40,
        };
        let value = case
            .native()
            .evaluate(case.authorized(proto::EvaluateRequest {
                flag: "greeting".into(),
                ..Default::default()
            }))
            .await
            .map_err(|e| format!("Evaluate: {e:?}"))?
            .into_inner()
            .value
            .and_then(|v| v.kind);
        let served = value == Some(proto::value::Kind::StringValue("gen-2".into()));
        if revision_moved && served {
            return Ok(());
        }
        ensure(start.elapsed() < PATIENCE, || {
            format!(
                "not served within {PATIENCE:?}: greeting {value:?}, revision {:?} (expected {expected:?}); last attempt {:?}",
                status.revision, status.last_attempt
            )
        })?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Everything shared by the configurations: the servers and the gRPC certificate.
struct Shared {
    servers: Servers,
    grpc_cert: (PathBuf, PathBuf),
}

/// How one configuration's `vexil serve` is started, and what it serves.
struct Arranged {
    args: Vec<String>,
    env: Vec<(String, String)>,
    origin: Origin,
    /// What the source's description must hold.
    described: String,
    secrets: Vec<String>,
}

/// The arguments and environment of `vexil serve` for `config`, on a fresh repository or
/// directory named after it.
fn arrange(shared: &Shared, config: &Config, tmp: &Path) -> Arranged {
    let servers = &shared.servers;
    let name = config.name.replace('+', "-");
    let mut args = Vec::new();
    let mut env = vec![
        // Nothing from the user running the tests (~/.ssh, ~/.gitconfig).
        ("HOME".to_owned(), tmp.display().to_string()),
        ("VEXIL_LOG".to_owned(), "info".to_owned()),
        ("VEXIL_GIT_CONNECT_TIMEOUT".to_owned(), "5s".to_owned()),
        ("VEXIL_GIT_TIMEOUT".to_owned(), "20s".to_owned()),
    ];
    let mut secrets = Vec::new();
    let remote = |args: &mut Vec<String>, url: String| {
        args.extend([url, "--flags-dir".into(), "flags".into()]);
        args.extend([
            "--cache-dir".into(),
            tmp.join("cache").display().to_string(),
        ]);
        args.extend(["--fetch-interval".into(), "500ms".into()]);
    };
    let (origin, described) = match config.source {
        Source::Dir => {
            let dir = tmp.join("flags");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("matrix.yaml"), flags(1)).unwrap();
            args.push(dir.display().to_string());
            let described = dir.display().to_string();
            (Origin::Dir(dir), described)
        }
        Source::LocalRef => {
            let repo = Repo::new(&servers.base, &name, &flags(1));
            args.extend([
                repo.work.display().to_string(),
                "--ref".into(),
                "main".into(),
            ]);
            args.extend(["--flags-dir".into(), "flags".into()]);
            args.extend(["--poll-interval".into(), "50ms".into()]);
            // The working clone is served here: its `main` is the commit.
            let work = Repo {
                bare: repo.work.clone(),
                work: repo.work.clone(),
            };
            let described = repo.work.display().to_string();
            (Origin::Repo(work), described)
        }
        Source::File | Source::Git | Source::Https | Source::HttpsUrlPassword | Source::Ssh(_) => {
            let repo = Repo::new(&servers.base, &name, &flags(1));
            let url = match config.source {
                Source::File => servers.file_url(&name),
                Source::Git => servers.git_url(&name),
                Source::Https => servers.https_url(&name),
                Source::HttpsUrlPassword => servers.https_url(&name).replacen(
                    "https://",
                    &format!("https://{}:{}@", servers.user, servers.password),
                    1,
                ),
                _ => servers.ssh_url(&name),
            };
            remote(&mut args, url);
            if config.source == Source::Https {
                env.push(("VEXIL_GIT_USERNAME".into(), servers.user.into()));
                env.push(("VEXIL_GIT_PASSWORD".into(), servers.password.into()));
            }
            if matches!(config.source, Source::Https | Source::HttpsUrlPassword) {
                secrets.push(servers.password.to_owned());
                // Both names of the CA option: the variable with gRPC TLS, else the option;
                // with the password in the URL, the system's roots, as the bundled OpenSSL
                // finds them (`SSL_CERT_FILE` names the system bundle), hold the CA instead.
                let ca = servers.ca.file.display().to_string();
                if config.source == Source::HttpsUrlPassword {
                    env.push(("SSL_CERT_FILE".into(), ca));
                } else if config.grpc_tls {
                    env.push(("VEXIL_GIT_CA_FILE".into(), ca));
                } else {
                    args.extend(["--git-ca-file".into(), ca]);
                }
            }
            if let Source::Ssh(kind) = config.source {
                let (_, key) = servers.ssh_keys.iter().find(|(k, _)| *k == kind).unwrap();
                env.push(("VEXIL_GIT_SSH_KEY".into(), key.display().to_string()));
                env.push((
                    "VEXIL_GIT_KNOWN_HOSTS".into(),
                    servers.known_hosts.display().to_string(),
                ));
                secrets.extend(key_lines(key));
            }
            (Origin::Repo(repo), format!("{name}.git"))
        }
    };
    if config.tokens {
        let token = format!("matrix-token-{name}");
        let file = tmp.join("tokens");
        std::fs::write(&file, format!("{token}\n")).unwrap();
        args.extend(["--token-file".into(), file.display().to_string()]);
        secrets.push(token);
    }
    if config.grpc_tls {
        let (cert, key) = &shared.grpc_cert;
        args.extend(["--tls-cert".into(), cert.display().to_string()]);
        args.extend(["--tls-key".into(), key.display().to_string()]);
    }
    Arranged {
        args,
        env,
        origin,
        described,
        secrets,
    }
}

/// The base64 lines of a private key file (each is secret).
fn key_lines(key: &Path) -> Vec<String> {
    std::fs::read_to_string(key)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .map(str::to_owned)
        .collect()
}

/// Starts `vexil serve` for `config` and connects a gRPC channel.
async fn start(shared: &Shared, config: &Config) -> Result<Case, String> {
    let tmp = tempfile::tempdir().unwrap();
    let Arranged {
        args,
        env,
        origin,
        described,
        secrets,
    } = arrange(shared, config, tmp.path());
    let token = config.tokens.then(|| secrets.last().unwrap().clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::try_start(&args, &env).await?;
    let endpoint = if config.grpc_tls {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&shared.servers.ca.pem))
            .domain_name("localhost");
        Channel::from_shared(format!("https://{}", server.grpc))
            .unwrap()
            .tls_config(tls)
            .unwrap()
    } else {
        Channel::from_shared(format!("http://{}", server.grpc)).unwrap()
    };
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(PATIENCE)
        .connect()
        .await
        .map_err(|e| format!("gRPC connect: {e:?}"))?;
    let mut case = Case {
        config: config.clone(),
        server,
        channel,
        token,
        origin,
        revision: String::new(),
        described,
        secrets,
        _tmp: tmp,
    };
    case.revision = case.status().await?.revision;
    Ok(case)
}

fn panic_text(e: tokio::task::JoinError, what: &str) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| what.to_owned()),
        Err(e) => format!("{what}: {e}"),
    }
}

/// Runs every operation on one configuration: the failures, as `name: operation: message`.
async fn run(shared: Arc<Shared>, config: Config) -> (String, Duration, Vec<String>) {
    let started = Instant::now();
    let name = config.name.clone();
    let case = match start(&shared, &config).await {
        Ok(case) => Arc::new(case),
        Err(e) => {
            return (
                name.clone(),
                started.elapsed(),
                vec![format!("{name}: start: {e}")],
            );
        }
    };
    let mut failures = Vec::new();
    for (what, operation) in OPERATIONS {
        let task = tokio::spawn(perform(operation, Arc::clone(&case)));
        let outcome = match tokio::time::timeout(2 * PATIENCE, task).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => Err(panic_text(e, "panicked")),
            Err(_) => Err(format!("no outcome within {:?}", 2 * PATIENCE)),
        };
        if let Err(e) = outcome {
            failures.push(format!("{name}: {what}: {e}"));
        }
    }
    (name, started.elapsed(), failures)
}

/// Every configuration of `configurations()` through every operation of `OPERATIONS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_configuration_serves_every_operation() {
    let started = Instant::now();
    let shared = tokio::task::spawn_blocking(|| {
        let servers = Servers::start();
        let probe = Repo::new(&servers.base, "probe", &flags(1));
        drop(probe);
        // The servers work with git's own client first: a failure below is Vexil's.
        if let Err(e) = servers.check_with_git_cli("probe") {
            panic!("the matrix's git servers do not work with the git command line: {e}");
        }
        let dir = servers.base.parent().unwrap().join("grpc-tls");
        std::fs::create_dir_all(&dir).unwrap();
        let grpc_cert = servers.ca.issue(&dir, "grpc");
        Shared { servers, grpc_cert }
    })
    .await
    .unwrap();
    let shared = Arc::new(shared);
    let setup = started.elapsed();

    let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    let configs = configurations();
    for config in configs.clone() {
        let (shared, permits) = (Arc::clone(&shared), Arc::clone(&permits));
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            run(shared, config).await
        });
    }
    let mut results = Vec::new();
    while let Some(result) = tasks.join_next().await {
        results.push(result.unwrap());
    }
    results.sort_by_key(|(name, ..)| configs.iter().position(|c| &c.name == name));
    let mut report = format!(
        "configuration matrix: {} configurations x {} operations in {:.1?} (servers up in {setup:.1?})\n",
        results.len(),
        OPERATIONS.len(),
        started.elapsed()
    );
    let mut failures = Vec::new();
    for (name, took, failed) in results {
        let verdict = if failed.is_empty() { "ok" } else { "FAILED" };
        let _ = writeln!(report, "  {name:<36} {verdict:<6} {took:>8.1?}");
        failures.extend(failed);
    }
    println!("{report}");
    assert!(
        failures.is_empty(),
        "{report}\n{} failure(s):\n- {}\n\nservers' logs:\n{}",
        failures.len(),
        failures.join("\n- "),
        shared.servers.logs()
    );
}
