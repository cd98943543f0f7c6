//! `vexil serve`: keeps a snapshot of the flag source current and serves it over gRPC (vexil.v1,
//! health, reflection) and HTTP (metrics, probes).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::ValueEnum;
use vexil_core::source::{
    Credentials, DirOptions, DirSource, GitOptions, GitSource, MemorySource, RemoteOptions,
    RemoteSource,
};
use vexil_core::{ReloadOptions, Source, StartError};
use vexil_server::notify::{Kind, Notifier, NotifyOptions};
use vexil_server::{
    AppState, CertSource, ConnLimits, Limits, Options, ServedRef, TlsConfig, Tokens, WebhookSecret,
};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_flags.rs"));
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A flags directory, a local git repository (with --ref), or a git URL (https://, ssh://,
    /// git://, file://). Default: `./flags` if it exists, else the example repository built
    /// into this binary.
    #[arg(env = "VEXIL_SOURCE")]
    source: Option<String>,
    /// Serve the committed tree of this branch, tag or commit (a local repository), or this
    /// ref of a remote (default: the remote's default branch).
    #[arg(long = "ref", env = "VEXIL_REF")]
    reference: Option<String>,
    /// The flags directory inside the source.
    #[arg(long, env = "VEXIL_FLAGS_DIR", default_value = "")]
    flags_dir: String,
    /// gRPC listen address (vexil.v1, grpc.health.v1, reflection; flagd's port).
    #[arg(long, env = "VEXIL_GRPC_ADDR", default_value = "127.0.0.1:8013")]
    grpc_addr: SocketAddr,
    /// HTTP listen address (/metrics, /healthz, /readyz, OFREP, the Flipper and Unleash
    /// mirrors, /mirrors/diagnostics).
    #[arg(long, env = "VEXIL_HTTP_ADDR", default_value = "127.0.0.1:8014")]
    http_addr: SocketAddr,
    /// flagd sync listen address (flagd.sync.v1 for in-process providers, health, reflection;
    /// the providers' default port), or `off` (or empty) for none.
    #[arg(long, env = "VEXIL_SYNC_ADDR", default_value = "127.0.0.1:8015", value_parser = sync_addr)]
    sync_addr: SyncAddr,
    /// Where remote repositories are cloned. Default: $XDG_CACHE_HOME/vexil or ~/.cache/vexil.
    #[arg(long, env = "VEXIL_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// How often a local git ref is read.
    #[arg(long, env = "VEXIL_POLL_INTERVAL", default_value = "100ms", value_parser = duration)]
    poll_interval: Duration,
    /// How often a remote is fetched.
    #[arg(long, env = "VEXIL_FETCH_INTERVAL", default_value = "30s", value_parser = duration)]
    fetch_interval: Duration,
    /// Quiet period after a change in a flags directory.
    #[arg(long, env = "VEXIL_QUIET_PERIOD", default_value = "250ms", value_parser = duration)]
    quiet_period: Duration,
    /// Full rescan of a flags directory, as a safety net for missed events.
    #[arg(long, env = "VEXIL_RESCAN_INTERVAL", default_value = "60s", value_parser = duration)]
    rescan_interval: Duration,
    /// Start even if the source is unreadable or invalid, serving nothing (NOT_SERVING, 503 on
    /// /readyz) until a valid revision arrives.
    #[arg(long, env = "VEXIL_START_EMPTY")]
    start_empty: bool,
    /// A file of bearer tokens (one per line); the variable VEXIL_TOKENS may also hold
    /// comma-separated tokens. With any token, every RPC but health checks needs one.
    #[arg(long, env = "VEXIL_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// A file holding the push webhooks' secret (a trailing newline is dropped); the variable
    /// VEXIL_WEBHOOK_SECRET may hold the secret itself. Enables POST /hooks/github,
    /// /hooks/gitlab, /hooks/gitea and /hooks/generic on the HTTP port.
    #[arg(long, env = "VEXIL_WEBHOOK_SECRET_FILE")]
    webhook_secret_file: Option<PathBuf>,
    /// PEM certificate chain: serve gRPC over TLS (with --tls-key). Reread on SIGHUP.
    #[arg(long, env = "VEXIL_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert. Reread on SIGHUP.
    #[arg(long, env = "VEXIL_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM certificate chain: serve the HTTP port (OFREP, the mirrors, /metrics, probes) over
    /// TLS (with --http-tls-key; HTTP/1.1 and HTTP/2 by ALPN). Reread on SIGHUP.
    #[arg(long, env = "VEXIL_HTTP_TLS_CERT", requires = "http_tls_key")]
    http_tls_cert: Option<PathBuf>,
    /// PEM private key for --http-tls-cert. Reread on SIGHUP.
    #[arg(long, env = "VEXIL_HTTP_TLS_KEY", requires = "http_tls_cert")]
    http_tls_key: Option<PathBuf>,
    /// On SIGTERM, how long to wait for in-flight calls and open connections before stopping.
    #[arg(long, env = "VEXIL_DRAIN_TIMEOUT", default_value = "10s", value_parser = duration)]
    drain_timeout: Duration,
    /// Heartbeat interval of Watch streams.
    #[arg(long, env = "VEXIL_HEARTBEAT", default_value = "15s", value_parser = duration)]
    heartbeat: Duration,
    /// The most flags one EvaluateBatch may name.
    #[arg(long, env = "VEXIL_MAX_BATCH", default_value_t = 1000)]
    max_batch: usize,
    /// The largest request message, in bytes.
    #[arg(long, env = "VEXIL_MAX_MESSAGE_BYTES", default_value_t = 1 << 20)]
    max_message_bytes: usize,
    /// How deeply context attributes may nest.
    #[arg(long, env = "VEXIL_MAX_CONTEXT_DEPTH", default_value_t = 8)]
    max_context_depth: usize,
    /// The most attribute values (nested ones included) in one context.
    #[arg(long, env = "VEXIL_MAX_CONTEXT_VALUES", default_value_t = 1000)]
    max_context_values: usize,
    /// HTTP/1 request headers must arrive within this; on any connection, so must the TLS
    /// handshake and the first request (HTTP/2 preface included).
    #[arg(long, env = "VEXIL_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration)]
    header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY).
    #[arg(long, env = "VEXIL_IDLE_TIMEOUT", default_value = "120s", value_parser = duration)]
    idle_timeout: Duration,
    /// HTTP/2 connections are pinged after this much silence ...
    #[arg(long, env = "VEXIL_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = duration)]
    http2_keepalive_interval: Duration,
    /// ... and closed when a ping is not answered within this.
    #[arg(long, env = "VEXIL_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = duration)]
    http2_keepalive_timeout: Duration,
    /// Concurrent streams one HTTP/2 connection may open (both ports).
    #[arg(long, env = "VEXIL_MAX_CONCURRENT_STREAMS", default_value_t = 200)]
    max_concurrent_streams: u32,
    /// Open connections on both ports together (also kept 128 below the descriptor limit,
    /// whose soft value is raised to the hard one at start).
    #[arg(long, env = "VEXIL_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// A Watch or flagd EventStream whose client takes no event for this long is ended.
    #[arg(long, env = "VEXIL_STALLED_STREAM_TIMEOUT", default_value = "60s", value_parser = duration)]
    stalled_stream_timeout: Duration,
    /// A source read running longer than this (or a dead reloader) makes /readyz 503, health
    /// NOT_SERVING and vexil_reloader_healthy 0.
    #[arg(long, env = "VEXIL_READ_STALL_TIMEOUT", default_value = "300s", value_parser = duration)]
    read_stall_timeout: Duration,
    /// Connecting to a remote git server (git://, http://) gives up after this.
    #[arg(long, env = "VEXIL_GIT_CONNECT_TIMEOUT", default_value = "10s", value_parser = duration)]
    git_connect_timeout: Duration,
    /// A remote git server that sends nothing for this long fails the fetch.
    #[arg(long, env = "VEXIL_GIT_TIMEOUT", default_value = "30s", value_parser = duration)]
    git_timeout: Duration,
    /// A PEM bundle trusted for https:// remotes in addition to the system's roots.
    #[arg(long, env = "VEXIL_GIT_CA_FILE")]
    git_ca_file: Option<PathBuf>,
    /// Never serve from the cache at start: by default, a remote that cannot be read (or holds
    /// an invalid revision) at start serves the revision this cache served last, as stale.
    #[arg(long, env = "VEXIL_REQUIRE_FRESH_START")]
    require_fresh_start: bool,
    /// Diagnostics in a Status or Reload answer (the rest are counted in `diagnostics_total`).
    #[arg(long, env = "VEXIL_MAX_STATUS_DIAGNOSTICS", default_value_t = 100)]
    max_status_diagnostics: usize,
    /// After SIGTERM, how long /readyz answers 503 (and health NOT_SERVING) while the ports
    /// still accept, before the listeners close and calls drain.
    #[arg(long, env = "VEXIL_DRAIN_WINDOW", default_value = "5s", value_parser = duration)]
    drain_window: Duration,
    /// Serve /metrics without a token even when tokens are configured (it names flags and the
    /// commit served).
    #[arg(long, env = "VEXIL_PUBLIC_METRICS")]
    public_metrics: bool,
    /// An origin whose pages may call OFREP and the Unleash frontend API from a browser
    /// (`https://app.example.com`; repeatable; `*` for any). None: no CORS headers at all.
    #[arg(
        long = "cors-origin",
        env = "VEXIL_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// POST a signed JSON document to this URL after every swap that changes flags (repeatable;
    /// signed with `VEXIL_NOTIFY_SECRET` when set). See docs/notifications.md.
    // The URLs may carry credentials (Slack's always do): `--help` must not print them.
    #[arg(
        long = "notify-url",
        env = "VEXIL_NOTIFY_URLS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    notify_urls: Vec<String>,
    /// Post one message per change to this Slack incoming webhook (repeatable).
    #[arg(
        long = "notify-slack",
        env = "VEXIL_NOTIFY_SLACK",
        value_delimiter = ',',
        hide_env_values = true
    )]
    notify_slack: Vec<String>,
    /// Bounds one notification attempt (connect, TLS, request and answer).
    #[arg(long, env = "VEXIL_NOTIFY_TIMEOUT", default_value = "10s", value_parser = duration)]
    notify_timeout: Duration,
    /// Changes a receiver may have waiting; more drop the oldest (counted as `dropped`).
    #[arg(long, env = "VEXIL_NOTIFY_QUEUE", default_value_t = 100)]
    notify_queue: usize,
    /// The wait before the first retry of a failed notification (doubling, with jitter).
    #[arg(long, env = "VEXIL_NOTIFY_RETRY_BASE", default_value = "1s", value_parser = duration)]
    notify_retry_base: Duration,
    /// The longest wait between two attempts.
    #[arg(long, env = "VEXIL_NOTIFY_RETRY_MAX", default_value = "60s", value_parser = duration)]
    notify_retry_max: Duration,
    /// Attempts of one notification before it is given up.
    #[arg(long, env = "VEXIL_NOTIFY_ATTEMPTS", default_value_t = 8)]
    notify_attempts: u32,
    /// The `poll-interval` sent to Flipper clients (their poller only ever slows down to it).
    #[arg(long, env = "VEXIL_FLIPPER_POLL_INTERVAL", default_value = "10s", value_parser = duration)]
    flipper_poll_interval: Duration,
    /// Log format.
    #[arg(long, env = "VEXIL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (tracing's syntax: `info`, `vexil_server=debug,info`, ...).
    #[arg(long, env = "VEXIL_LOG", default_value = "info")]
    log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `250ms`, `30s`, `5m`, `1h`.
fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 250ms, 30s, 5m)"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{s}` (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{s}`: {e}"))
}

fn init_logs(args: &Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .with_context(|| format!("invalid --log filter `{}`", args.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

fn is_url(s: &str) -> bool {
    s.contains("://") || (s.contains('@') && s.contains(':') && !std::path::Path::new(s).exists())
}

fn cache_dir(args: &Args) -> PathBuf {
    if let Some(dir) = &args.cache_dir {
        return dir.clone();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("vexil")
}

/// The cache directory exists (or is created) and takes a file: a read-only or missing volume
/// is an error now, naming the directory and the option, not a failed fetch later.
fn check_writable(dir: &std::path::Path) -> anyhow::Result<()> {
    let probe = dir.join(format!(".vexil-write-test-{}", std::process::id()));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe))
        .with_context(|| {
            format!(
                "the cache directory {} is not writable (set --cache-dir / VEXIL_CACHE_DIR to a writable volume)",
                dir.display()
            )
        })
}

fn build_source(args: &Args) -> anyhow::Result<Box<dyn Source>> {
    let source = match &args.source {
        Some(s) => s.clone(),
        None if std::path::Path::new("flags").is_dir() => "flags".into(),
        None => {
            let files = embedded::EMBEDDED_FLAGS
                .iter()
                .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
                .collect();
            return Ok(Box::new(MemorySource::new(
                "the example repository built into vexil",
                files,
            )));
        }
    };
    if is_url(&source) {
        let cache = cache_dir(args);
        check_writable(&cache)?;
        let mut options = RemoteOptions::new(cache);
        options.reference.clone_from(&args.reference);
        options.flags_dir.clone_from(&args.flags_dir);
        options.interval = args.fetch_interval;
        options.credentials = Credentials::from_env()?;
        return Ok(Box::new(RemoteSource::new(source, options)));
    }
    let path = PathBuf::from(&source);
    if let Some(reference) = &args.reference {
        return Ok(Box::new(GitSource::new(
            path,
            GitOptions {
                reference: reference.clone(),
                flags_dir: args.flags_dir.clone(),
                poll_interval: args.poll_interval,
            },
        )));
    }
    Ok(Box::new(DirSource::new(
        path.join(&args.flags_dir),
        DirOptions {
            quiet_period: args.quiet_period,
            rescan_interval: args.rescan_interval,
        },
    )))
}

fn tokens(args: &Args) -> anyhow::Result<Tokens> {
    let from_env = std::env::var("VEXIL_TOKENS").ok();
    let mut text = from_env.clone().unwrap_or_default();
    if let Some(file) = &args.token_file {
        let from_file = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the token file {}", file.display()))?;
        text.push('\n');
        text.push_str(&from_file);
    }
    let tokens = Tokens::parse(&text);
    // Asked for tokens but got none (an empty secret, a file of comments): refuse, rather than
    // serve without authentication.
    if tokens.is_empty() && (args.token_file.is_some() || from_env.is_some()) {
        anyhow::bail!(
            "--token-file / VEXIL_TOKENS are set but hold no token: refusing to serve without authentication"
        );
    }
    Ok(tokens)
}

/// The webhook secret, from `--webhook-secret-file` or `VEXIL_WEBHOOK_SECRET` (not both). An
/// empty one is refused: anyone could sign a hook with it.
fn webhook_secret(args: &Args) -> anyhow::Result<Option<WebhookSecret>> {
    let from_env = std::env::var_os("VEXIL_WEBHOOK_SECRET");
    let text = match (&args.webhook_secret_file, from_env) {
        (Some(_), Some(_)) => anyhow::bail!(
            "both --webhook-secret-file (VEXIL_WEBHOOK_SECRET_FILE) and VEXIL_WEBHOOK_SECRET are set: give the webhook secret one way"
        ),
        (None, None) => return Ok(None),
        (None, Some(secret)) => secret
            .into_string()
            .map_err(|_| anyhow::anyhow!("VEXIL_WEBHOOK_SECRET is not UTF-8"))?
            .into_bytes(),
        (Some(file), None) => {
            let mut bytes = std::fs::read(file).with_context(|| {
                format!("cannot read the webhook secret file {}", file.display())
            })?;
            // As `echo secret > file` writes it.
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            bytes
        }
    };
    match WebhookSecret::new(&text) {
        Some(secret) => Ok(Some(secret)),
        None => anyhow::bail!(
            "the webhook secret (--webhook-secret-file / VEXIL_WEBHOOK_SECRET) is empty: refusing to accept unauthenticated webhooks"
        ),
    }
}

/// Which pushes a webhook reads the source for: a remote's `--ref` (or, without one, its
/// default branch), a local repository's `--ref`; any push for a directory.
fn served_ref(args: &Args) -> ServedRef {
    let remote = args.source.as_deref().is_some_and(is_url);
    match args.reference.as_deref() {
        None | Some("HEAD") if remote => ServedRef::DefaultBranch,
        Some(reference) if reference != "HEAD" && args.source.is_some() => {
            ServedRef::Named(reference.to_owned())
        }
        _ => ServedRef::Any,
    }
}

/// Each port's certificate, read now (a missing or broken file stops the start); SIGHUP rereads.
fn tls(args: &Args) -> anyhow::Result<TlsConfig> {
    let source = |cert: &Option<PathBuf>, key: &Option<PathBuf>, port: &str| {
        let (Some(cert), Some(key)) = (cert, key) else {
            return Ok(None);
        };
        CertSource::from_files(cert, key)
            .map(Some)
            .with_context(|| format!("cannot serve the {port} port over TLS"))
    };
    Ok(TlsConfig {
        grpc: source(&args.tls_cert, &args.tls_key, "gRPC")?,
        http: source(&args.http_tls_cert, &args.http_tls_key, "HTTP")?,
    })
}

/// The change notifications' settings; `None` without receivers.
fn notify_options(args: &Args) -> anyhow::Result<Option<NotifyOptions>> {
    let receivers: Vec<(Kind, String)> = args
        .notify_urls
        .iter()
        .map(|u| (Kind::Json, u.clone()))
        .chain(args.notify_slack.iter().map(|u| (Kind::Slack, u.clone())))
        .collect();
    let secret = match std::env::var_os("VEXIL_NOTIFY_SECRET") {
        None => None,
        Some(s) => {
            let s = s
                .into_string()
                .map_err(|_| anyhow::anyhow!("VEXIL_NOTIFY_SECRET is not UTF-8"))?;
            Some(WebhookSecret::new(s.as_bytes()).ok_or_else(|| {
                anyhow::anyhow!(
                    "VEXIL_NOTIFY_SECRET is empty: unset it to send unsigned notifications"
                )
            })?)
        }
    };
    if receivers.is_empty() {
        return Ok(None);
    }
    Ok(Some(NotifyOptions {
        receivers,
        secret,
        timeout: args.notify_timeout,
        queue: args.notify_queue,
        retry_base: args.notify_retry_base,
        retry_max: args.notify_retry_max,
        attempts: args.notify_attempts.max(1),
        // A local ref or a remote: every revision is a commit id.
        commit: args.reference.is_some() || args.source.as_deref().is_some_and(is_url),
    }))
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    init_logs(args)?;
    let tokens = tokens(args)?;
    let webhook_secret = webhook_secret(args)?;
    let webhooks = webhook_secret.is_some();
    let notify = notify_options(args)?;
    let tls = tls(args)?;
    // Before any source is read (libgit2's socket timeouts are process-wide settings).
    vexil_core::source::set_git_timeouts(args.git_connect_timeout, args.git_timeout)?;
    if let Some(ca) = &args.git_ca_file {
        vexil_core::source::set_git_ca_file(ca)?;
    }
    let descriptors = raise_descriptor_limit();
    // The ports are bound before the first read, so that with --start-empty probes answer
    // (503) while a slow or silent source is read.
    let grpc = std::net::TcpListener::bind(args.grpc_addr)
        .with_context(|| format!("cannot listen on {} (gRPC)", args.grpc_addr))?;
    let http = std::net::TcpListener::bind(args.http_addr)
        .with_context(|| format!("cannot listen on {} (HTTP)", args.http_addr))?;
    grpc.set_nonblocking(true)?;
    http.set_nonblocking(true)?;
    let sync = match args.sync_addr.0 {
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr).with_context(|| {
                format!("cannot listen on {addr} (flagd sync; `--sync-addr off` turns it off)")
            })?;
            listener.set_nonblocking(true)?;
            Some(listener)
        }
        None => None,
    };
    let source = build_source(args)?;
    let source_name = source.describe();
    // Connections may use every descriptor but a reserve for the reloader, logs and files.
    let max_connections = match descriptors {
        Some(limit) => {
            let room =
                usize::try_from(limit.saturating_sub(DESCRIPTOR_RESERVE)).unwrap_or(usize::MAX);
            args.max_connections.min(room.max(1))
        }
        None => args.max_connections,
    };
    let options = Options {
        limits: Limits {
            max_message_bytes: args.max_message_bytes,
            max_batch: args.max_batch,
            max_context_depth: args.max_context_depth,
            max_context_values: args.max_context_values,
        },
        heartbeat: args.heartbeat,
        drain_timeout: args.drain_timeout,
        source: source_name.clone(),
        flipper_poll_interval: args.flipper_poll_interval,
        connections: ConnLimits {
            header_read_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
            http2_keepalive_interval: args.http2_keepalive_interval,
            http2_keepalive_timeout: args.http2_keepalive_timeout,
            max_concurrent_streams: args.max_concurrent_streams,
            max_connections,
        },
        stalled_stream_timeout: args.stalled_stream_timeout,
        read_stall_timeout: args.read_stall_timeout,
        drain_window: args.drain_window,
        max_status_diagnostics: args.max_status_diagnostics,
        public_metrics: args.public_metrics,
        webhook_secret,
        served_ref: served_ref(args),
        cors: vexil_server::cors::CorsOrigins::parse(&args.cors_origins)?,
        ..Options::default()
    };
    // Starts reading the source (before the runtime: the first read may take a while).
    let state = match AppState::start(
        source,
        ReloadOptions {
            start_empty: args.start_empty,
            require_fresh_start: args.require_fresh_start,
            ..ReloadOptions::default()
        },
        options,
    ) {
        Ok(state) => state,
        Err(StartError::Invalid { diagnostics, .. }) => {
            eprintln!(
                "error: the flags in {source_name} are invalid; not starting (use --start-empty to wait for a fix)"
            );
            for d in &diagnostics {
                eprintln!("  {d}");
            }
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vexil-server")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let grpc = tokio::net::TcpListener::from_std(grpc)?;
        let http = tokio::net::TcpListener::from_std(http)?;
        let sync = sync.map(tokio::net::TcpListener::from_std).transpose()?;
        let sync_addr = sync.as_ref().map(tokio::net::TcpListener::local_addr).transpose()?;
        let sync_text = sync_addr.map_or_else(String::new, |a| format!(", sync on {a}"));
        let revision = state.revision().unwrap_or_else(|| "none yet".to_owned());
        let grpc_addr = grpc.local_addr()?;
        let http_addr = http.local_addr()?;
        tracing::info!(
            source = %source_name,
            %revision,
            grpc = %grpc_addr,
            http = %http_addr,
            sync = %sync_text,
            grpc_tls = tls.grpc.is_some(),
            http_tls = tls.http.is_some(),
            tokens = tokens.len(),
            webhooks,
            max_connections,
            "vexil serving"
        );
        if !tokens.is_enabled() && !grpc_addr.ip().is_loopback() {
            tracing::warn!(%grpc_addr, "no bearer tokens: anyone who reaches this address can call Reload and read every flag definition");
        }
        if !tokens.is_enabled() && !http_addr.ip().is_loopback() {
            tracing::warn!(%http_addr, "no tokens: anyone who reaches this address can read every flag definition through the Flipper and Unleash mirrors");
        }
        if let Some(sync_addr) = sync_addr.filter(|a| !tokens.is_enabled() && !a.ip().is_loopback()) {
            tracing::warn!(%sync_addr, "no tokens: anyone who reaches this address can read every flag definition through flagd's sync service");
        }
        if let Some(notify) = notify {
            let notifier = Notifier::start(&state, notify)?;
            state.metrics.set_notifier(notifier);
        }
        let shutdown = signals(Arc::clone(&state), tls.clone())?;
        // One plain line on stdout (after the signal handlers are in place), for scripts and
        // tests that started us on port 0. A closed stdout is no reason to stop serving.
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "vexil: serving {source_name} (revision {revision}); gRPC on {grpc_addr}, HTTP on {http_addr}{sync_text}");
            let _ = out.flush();
        }
        vexil_server::serve_with_sync(state, tokens, tls, grpc, http, sync, shutdown).await?;
        tracing::info!("stopped");
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// Descriptors kept for everything but connections (the reloader's files and git, logs).
const DESCRIPTOR_RESERVE: u64 = 128;

/// Raises the soft descriptor limit to the hard one (the usual soft 1,024 is what a few hundred
/// idle clients exhaust); returns the limit now in force, if it is known.
#[cfg(unix)]
fn raise_descriptor_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return limit.maximum,
            Err(e) => tracing::warn!(error = %e, "cannot raise the descriptor limit"),
        }
    }
    limit.current
}

#[cfg(not(unix))]
fn raise_descriptor_limit() -> Option<u64> {
    None
}

/// SIGTERM and SIGINT end the server (the future resolves); SIGHUP reloads the source and both
/// ports' TLS certificates.
#[cfg(unix)]
fn signals(
    state: Arc<AppState>,
    tls: TlsConfig,
) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            state.reloader.trigger();
            if tls.is_enabled() {
                // File reads, off the async workers; one reload at a time. A failed reload
                // keeps the certificates in use (and is logged by `reload`).
                let tls = tls.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || tls.reload()).await {
                    tracing::error!(error = %e, "TLS certificate reload did not finish");
                }
            }
        }
    });
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    })
}

#[cfg(not(unix))]
fn signals(
    _state: Arc<AppState>,
    _tls: TlsConfig,
) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(super::duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(super::duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(super::duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(super::duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(super::duration("5 parsecs").is_err());
        assert!(super::duration("-1s").is_err());
    }

    #[test]
    fn served_refs() {
        use clap::Parser as _;
        use vexil_server::ServedRef;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: super::Args,
        }
        let served = |argv: &[&str]| {
            let cli = Cli::try_parse_from(std::iter::once("serve").chain(argv.iter().copied()))
                .map_err(|e| e.to_string());
            cli.map(|c| super::served_ref(&c.args))
        };
        let remote = "https://git.example.com/acme/flags.git";
        assert_eq!(served(&[remote]), Ok(ServedRef::DefaultBranch));
        assert_eq!(
            served(&[remote, "--ref", "HEAD"]),
            Ok(ServedRef::DefaultBranch)
        );
        assert_eq!(
            served(&[remote, "--ref", "v1"]),
            Ok(ServedRef::Named("v1".into()))
        );
        assert_eq!(
            served(&["/srv/flags-repo", "--ref", "main"]),
            Ok(ServedRef::Named("main".into()))
        );
        assert_eq!(served(&["/srv/flags"]), Ok(ServedRef::Any));
        assert_eq!(served(&[]), Ok(ServedRef::Any));
    }

    #[test]
    fn urls() {
        assert!(super::is_url("file:///srv/flags"));
        assert!(super::is_url("https://github.com/acme/flags.git"));
        assert!(super::is_url("git@github.com:acme/flags.git"));
        assert!(!super::is_url("flags"));
        assert!(!super::is_url("/srv/flags"));
    }
}

/// `--sync-addr`: an address, or none (`off`, empty).
#[derive(Debug, Clone, Copy)]
struct SyncAddr(Option<SocketAddr>);

fn sync_addr(text: &str) -> Result<SyncAddr, String> {
    let text = text.trim();
    if text.is_empty() || text == "off" {
        return Ok(SyncAddr(None));
    }
    text.parse()
        .map(|a| SyncAddr(Some(a)))
        .map_err(|e| format!("`{text}` is not an address (host:port) or `off`: {e}"))
}
