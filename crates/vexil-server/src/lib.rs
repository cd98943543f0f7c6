//! Vexil's servers: the vexil.v1 gRPC API (with grpc.health.v1 and server reflection, optional
//! bearer tokens and TLS) and the HTTP port (Prometheus metrics, health and readiness probes,
//! OFREP, the mirrors; optional TLS). TLS certificates are reread on demand (`tls`).
//!
//! Routers are built by functions (`grpc_routes`, `http::router`) that tests can drive; `serve`
//! runs both on listeners the caller bound, until a shutdown signal, then drains.
#![forbid(unsafe_code)]

pub mod auth;
mod codec;
pub mod conn;
pub mod convert;
pub mod flagd;
pub mod flipper;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod mirrors;
pub mod ofrep;
pub mod state;
pub mod streams;
pub mod tls;
pub mod unleash;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic_health::ServingStatus;

pub use auth::Tokens;
pub use conn::ConnLimits;
pub use convert::Limits;
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

/// Everything the gRPC port serves: the flag service and reflection (both behind the tokens,
/// when configured) and health (never behind them).
pub fn grpc_routes(
    state: &Arc<AppState>,
    tokens: &Tokens,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> Result<tonic::service::Routes, ServeError> {
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
    let counted = Arc::clone(state);
    let intercept = tokens.interceptor(move || counted.metrics.unauthenticated());
    let flagd = flagd::FlagdApi::new(Arc::clone(state));
    let flagd_v2 = flagd::v2::service_server::ServiceServer::new(flagd.clone())
        .max_decoding_message_size(limits.max_message_bytes);
    let flagd_v1 = flagd::v1::service_server::ServiceServer::new(flagd)
        .max_decoding_message_size(limits.max_message_bytes);
    Ok(tonic::service::Routes::new(health)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            api,
            intercept.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            flagd_v2,
            intercept.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            flagd_v1,
            intercept.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            reflection,
            intercept.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            reflection_alpha,
            intercept,
        )))
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
    let routes = grpc_routes(&state, &tokens, health)?;

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
    let grpc_server = conn::serve(
        grpc,
        routes.prepare(),
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
    let both = async { tokio::join!(grpc_server, http_server) };
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
