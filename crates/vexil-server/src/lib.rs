//! Vexil's servers: the vexil.v1 gRPC API (with grpc.health.v1 and server reflection, optional
//! bearer tokens and TLS) and the HTTP port (Prometheus metrics, health and readiness probes).
//!
//! Routers are built by functions (`grpc_routes`, `http::router`) that tests can drive; `serve`
//! runs both on listeners the caller bound, until a shutdown signal, then drains.
#![forbid(unsafe_code)]

pub mod auth;
pub mod convert;
pub mod flagd;
pub mod flipper;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod mirrors;
pub mod ofrep;
pub mod state;
pub mod unleash;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic_health::ServingStatus;

pub use auth::Tokens;
pub use convert::Limits;
pub use state::{AppState, Options};

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
    Tls(String),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("reflection: {0}")]
    Reflection(String),
}

/// PEM certificate chain and private key.
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
/// NOT_SERVING, readiness fails, Watch streams end, and in-flight calls finish.
pub async fn serve(
    state: Arc<AppState>,
    tokens: Tokens,
    tls: Option<TlsPem>,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (mut reporter, health) = tonic_health::server::health_reporter();
    // The health statuses are set before the port serves, so no check sees a default.
    let health_status = |ready: bool, down: bool| {
        if ready && !down {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    };
    let initial = health_status(*state.ready.borrow(), state.is_shutting_down());
    reporter.set_service_status("", initial).await;
    reporter.set_service_status(SERVICE_NAME, initial).await;
    let routes = grpc_routes(&state, &tokens, health)?;

    // Health follows readiness: NOT_SERVING until the first snapshot, and again on shutdown,
    // after which the statuses are cleared so that health Watch streams end (graceful shutdown
    // waits for every stream).
    let health_task = {
        let state = Arc::clone(&state);
        let mut ready = state.ready.subscribe();
        let mut down = state.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = ready.changed() => if r.is_err() { return },
                    r = down.changed() => if r.is_err() { return },
                }
                let shutting_down = *down.borrow_and_update();
                let status = health_status(*ready.borrow_and_update(), shutting_down);
                reporter.set_service_status("", status).await;
                reporter.set_service_status(SERVICE_NAME, status).await;
                if shutting_down {
                    reporter.clear_service_status("").await;
                    reporter.clear_service_status(SERVICE_NAME).await;
                    return;
                }
            }
        })
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight calls");
            state.shutdown.send_replace(true);
            let _ = stop_tx.send(true);
        });
    }
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // Batch and list responses are several kilobytes: HTTP/2's default 64 KiB connection
    // window would stall many concurrent streams on flow control.
    let mut builder = tonic::transport::Server::builder()
        .initial_connection_window_size(Some(1 << 20))
        .initial_stream_window_size(Some(256 << 10));
    if let Some(pem) = tls {
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(pem.cert, pem.key)))
            .map_err(|e| ServeError::Tls(e.to_string()))?;
    }
    // Accepted sockets get TCP_NODELAY (the builder's setting only covers sockets it binds):
    // without it, small responses wait for the peer's delayed ACK (about 40 ms).
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(grpc),
        |conn| {
            conn.and_then(|stream| {
                stream.set_nodelay(true)?;
                Ok(stream)
            })
        },
    );
    let grpc_server = builder
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
    let stop_rx_for_drain = stop_rx.clone();
    let http_server = axum::serve(http, http::router(Arc::clone(&state), tokens.clone()))
        .with_graceful_shutdown(stopped(stop_rx));
    let both = async { tokio::join!(grpc_server, http_server) };
    // Draining is bounded: a connection that never closes cannot hold the process.
    let drain_limit = {
        let timeout = state.options.drain_timeout;
        let rx = stop_rx_for_drain;
        async move {
            stopped(rx).await;
            tokio::time::sleep(timeout).await;
        }
    };
    let result = tokio::select! {
        (g, h) = both => {
            g?;
            h.map_err(ServeError::Http)?;
            Ok(())
        }
        () = drain_limit => {
            tracing::warn!("connections still open after the drain timeout: stopping anyway");
            Ok(())
        }
    };
    health_task.abort();
    result
}
