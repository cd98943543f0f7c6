//! Vexil's servers: the gRPC port (vexil.v1, flagd's evaluation and sync APIs, grpc.health.v1
//! and server reflection), the HTTP port (OFREP, the Flipper and Unleash mirrors, the Unleash
//! frontend API, CORS for the browser-facing ones, Prometheus metrics, health and readiness
//! probes) and flagd's sync port, with optional tokens and TLS on all (certificates reread on
//! demand: `tls`).
//!
//! Every front goes through one evaluation core (`evaluation`) and one gate layer for tokens
//! and metrics (`layers`). Services are built by functions (`grpc_service`, `http::router`)
//! that tests can drive; `serve` runs both on listeners the caller bound, until a shutdown
//! signal, then drains.
#![forbid(unsafe_code)]

pub mod auth;
mod codec;
pub mod conditional;
pub mod conn;
pub mod context;
pub mod convert;
pub mod cors;
pub mod evaluation;
pub mod flagd;
pub mod flagd_sync;
pub mod flipper;
pub mod frontend;
pub mod grpc;
pub mod hooks;
pub mod http;
pub mod layers;
pub mod metrics;
pub mod mirrors;
pub mod notify;
pub mod ofrep;
pub mod outbound;
pub mod pump;
pub mod sse;
pub mod state;
pub mod tls;
pub mod unleash;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic_health::ServingStatus;

pub use auth::Tokens;
pub use conn::ConnLimits;
pub use context::Limits;
pub use hooks::{ServedRef, WebhookSecret};
pub use state::{AppState, Options};
pub use tls::{CertSource, TlsConfig, TlsError};

/// The generated vexil.v1 messages and services.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    unreachable_pub
)]
pub mod proto {
    tonic::include_proto!("vexil.v1");

    /// The encoded descriptors of vexil.v1 (and what it imports), for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/vexil_descriptor.bin"));
}

/// The fully-qualified name health checks use for the flag service.
pub const SERVICE_NAME: &str = "vexil.v1.FlagService";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("reflection: {0}")]
    Reflection(String),
}

/// PEM certificate chain and private key, held in memory (`CertSource::from_pem`).
#[derive(Clone)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsPem(<redacted>)")
    }
}

/// Tokens and metrics for the gRPC port: health checks pass untouched; everything else needs a
/// token (when tokens are configured) and is measured by front and method.
#[derive(Debug, Clone, Copy)]
pub struct GrpcRules;

impl layers::Rules for GrpcRules {
    type Body = tonic::body::Body;

    fn classify<B>(&self, request: &::http::Request<B>) -> Option<(metrics::Endpoint, bool)> {
        use metrics::{Endpoint, Front};
        let path = request.uri().path();
        let (service, method) = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .unwrap_or(("", ""));
        let endpoint = match service {
            "grpc.health.v1.Health" => return None,
            "vexil.v1.FlagService" => Endpoint::of(Front::Vexil, method),
            "flagd.evaluation.v1.Service" | "flagd.evaluation.v2.Service" => {
                Endpoint::of(Front::Flagd, method)
            }
            "flagd.sync.v1.FlagSyncService" => Endpoint::of(Front::FlagdSync, method),
            _ => Endpoint::of(Front::Vexil, method),
        };
        Some((endpoint, true))
    }

    fn authorized(&self, tokens: &Tokens, headers: &::http::HeaderMap) -> bool {
        tokens.accepts(headers.get("authorization").and_then(|v| v.to_str().ok()))
    }

    fn refuse<B>(
        &self,
        _endpoint: metrics::Endpoint,
        _request: &::http::Request<B>,
    ) -> ::http::Response<tonic::body::Body> {
        grpc::status(evaluation::Error::Unauthenticated).into_http()
    }

    /// gRPC messages are limited by the codec (`--max-message-bytes`, RESOURCE_EXHAUSTED).
    fn code(&self, response: &::http::Response<tonic::body::Body>) -> metrics::Code {
        // Errors are trailers-only answers, with the status in the headers; a call that
        // answers has no status there (it comes in the trailers, OK).
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map_or(tonic::Code::Ok, tonic::Code::from_i32);
        metrics::Code::grpc(code)
    }
}

/// Everything the gRPC port serves: the flag services and reflection (behind the tokens, when
/// configured) and health (never behind them), with the one gate layer in front.
pub fn grpc_service(
    state: &Arc<AppState>,
    tokens: &Tokens,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> Result<layers::Gate<tonic::service::Routes, GrpcRules>, ServeError> {
    let limits = &state.options.limits;
    let api =
        proto::flag_service_server::FlagServiceServer::new(grpc::FlagApi::new(Arc::clone(state)))
            .max_decoding_message_size(limits.max_message_bytes);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let flagd = flagd::FlagdApi::new(Arc::clone(state));
    let flagd_v2 = flagd::v2::service_server::ServiceServer::new(flagd.clone())
        .max_decoding_message_size(limits.max_message_bytes);
    let flagd_v1 = flagd::v1::service_server::ServiceServer::new(flagd)
        .max_decoding_message_size(limits.max_message_bytes);
    let routes = tonic::service::Routes::new(health)
        .add_service(api)
        .add_service(flagd_v2)
        .add_service(flagd_v1)
        // Also here: a provider given only `FLAGD_PORT` syncs from the gRPC port.
        .add_service(sync_server(state))
        .add_service(reflection)
        .add_service(reflection_alpha)
        .prepare();
    let gate = layers::GateLayer::new(GrpcRules, tokens.clone(), Arc::clone(&state.metrics));
    Ok(tower_layer::Layer::layer(&gate, routes))
}

fn sync_server(
    state: &Arc<AppState>,
) -> flagd_sync::pb::flag_sync_service_server::FlagSyncServiceServer<flagd_sync::SyncApi> {
    flagd_sync::pb::flag_sync_service_server::FlagSyncServiceServer::new(flagd_sync::SyncApi::new(
        Arc::clone(state),
    ))
    .max_decoding_message_size(state.options.limits.max_message_bytes)
}

/// What the sync port (`--sync-addr`) serves: flagd's sync service, health and reflection,
/// behind the same gate as the gRPC port (tokens, metrics as the `flagd-sync` front).
pub fn sync_service(
    state: &Arc<AppState>,
    tokens: &Tokens,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> Result<layers::Gate<tonic::service::Routes, GrpcRules>, ServeError> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let routes = tonic::service::Routes::new(health)
        .add_service(sync_server(state))
        .add_service(reflection)
        .prepare();
    let gate = layers::GateLayer::new(GrpcRules, tokens.clone(), Arc::clone(&state.metrics));
    Ok(tower_layer::Layer::layer(&gate, routes))
}

/// Serves gRPC and HTTP on the given listeners until `shutdown` resolves; then health turns
/// NOT_SERVING, readiness fails, Watch streams end, and in-flight calls finish. Each port serves
/// TLS when `tls` has a certificate for it (gRPC: ALPN `h2`; HTTP: `h2` and `http/1.1`);
/// `TlsConfig::reload` on a clone of `tls` changes the certificate of new handshakes.
pub async fn serve(
    state: Arc<AppState>,
    tokens: Tokens,
    tls: TlsConfig,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with_sync(state, tokens, tls, grpc, http, None, shutdown).await
}

/// `serve`, with flagd's sync port on `sync` when given: the gRPC port's tokens, TLS
/// certificate, health and connection machinery (the connection cap is shared by all ports).
pub async fn serve_with_sync(
    state: Arc<AppState>,
    tokens: Tokens,
    tls: TlsConfig,
    grpc: TcpListener,
    http: TcpListener,
    sync: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (mut reporter, health) = tonic_health::server::health_reporter();
    // The health statuses are set before the port serves, so no check sees a default.
    let health_status = |state: &AppState| {
        let ready = *state.ready.borrow();
        if ready && !state.is_shutting_down() && state.reader_health().is_ok() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    };
    let initial = health_status(&state);
    reporter.set_service_status("", initial).await;
    reporter.set_service_status(SERVICE_NAME, initial).await;
    let sync_routes = match &sync {
        Some(_) => Some(sync_service(&state, &tokens, health.clone())?),
        None => None,
    };
    let routes = grpc_service(&state, &tokens, health)?;

    // Set when the listeners close (after the drain window that follows a shutdown signal).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // Health follows readiness: NOT_SERVING until the first snapshot, while the reloader is
    // dead or stuck (checked every second), and again on shutdown, after which the statuses are
    // cleared so that health Watch streams end (graceful shutdown waits for every stream).
    let health_task = {
        let state = Arc::clone(&state);
        let mut ready = state.ready.subscribe();
        let mut down = state.shutdown.subscribe();
        let mut closing = stop_rx.clone();
        tokio::spawn(async move {
            let mut current = initial;
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    r = ready.changed() => if r.is_err() { return },
                    r = down.changed() => if r.is_err() { return },
                    _ = tick.tick() => {}
                }
                let status = health_status(&state);
                if status != current {
                    current = status;
                    reporter.set_service_status("", status).await;
                    reporter.set_service_status(SERVICE_NAME, status).await;
                }
                if state.is_shutting_down() {
                    // NOT_SERVING through the drain window; cleared when the listeners close,
                    // so that health Watch streams end and draining can finish.
                    let _ = closing.wait_for(|s| *s).await;
                    reporter.clear_service_status("").await;
                    reporter.clear_service_status(SERVICE_NAME).await;
                    return;
                }
            }
        })
    };

    let grpc_tls = tls
        .grpc
        .as_ref()
        .map(|source| source.acceptor(&[b"h2"]))
        .transpose()?;
    let http_tls = tls
        .http
        .as_ref()
        .map(|source| source.acceptor(&[b"h2", b"http/1.1"]))
        .transpose()?;

    // Shutdown in three steps: first readiness fails (and health, and change streams end)
    // while both ports still accept, for the drain window, so that load balancers notice
    // before connections are refused; then the listeners close and connections finish their
    // calls; draining is bounded so that a connection that never closes cannot hold the process.
    {
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            shutdown.await;
            let window = state.options.drain_window;
            tracing::info!(drain_window = ?window, "shutting down: readiness fails, then listeners close");
            state.shutdown.send_replace(true);
            tokio::time::sleep(window).await;
            tracing::info!("closing listeners: draining in-flight calls");
            let _ = stop_tx.send(true);
        });
    }
    let limits = &state.options.connections;
    let cap = conn::ConnectionCap::new(limits.max_connections);
    let sync_server = match (sync, sync_routes) {
        (Some(listener), Some(routes)) => {
            let sync_tls = tls
                .grpc
                .as_ref()
                .map(|source| source.acceptor(&[b"h2"]))
                .transpose()?;
            Some(conn::serve(
                listener,
                routes,
                conn::Protocols::Grpc,
                sync_tls,
                limits.clone(),
                cap.clone(),
                Arc::clone(&state),
                stop_rx.clone(),
            ))
        }
        _ => None,
    };
    let grpc_server = conn::serve(
        grpc,
        routes,
        conn::Protocols::Grpc,
        grpc_tls,
        limits.clone(),
        cap.clone(),
        Arc::clone(&state),
        stop_rx.clone(),
    );
    let http_server = conn::serve(
        http,
        http::router(Arc::clone(&state), tokens.clone()),
        conn::Protocols::Http,
        http_tls,
        limits.clone(),
        cap,
        Arc::clone(&state),
        stop_rx.clone(),
    );
    let sync_server = async move {
        if let Some(server) = sync_server {
            server.await;
        }
    };
    let both = async {
        let (grpc, http, ()) = tokio::join!(grpc_server, http_server, sync_server);
        (grpc, http)
    };
    let drain_limit = {
        let timeout = state.options.drain_timeout;
        let mut rx = stop_rx;
        async move {
            let _ = rx.wait_for(|s| *s).await;
            tokio::time::sleep(timeout).await;
        }
    };
    let result = tokio::select! {
        ((), ()) = both => Ok(()),
        () = drain_limit => {
            tracing::warn!("connections still open after the drain timeout: stopping anyway");
            Ok(())
        }
    };
    health_task.abort();
    result
}
