//! The HTTP port: Prometheus metrics and the probes (`/healthz`: the process answers;
//! `/readyz`: a snapshot is served and the server is not shutting down), and OFREP (`ofrep`).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

/// The HTTP port: probes and metrics (never behind tokens), and OFREP (behind them).
pub fn router(state: Arc<AppState>, tokens: crate::Tokens) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Arc::clone(&state))
        .merge(crate::ofrep::router(Arc::clone(&state), tokens.clone()))
        .merge(crate::flipper::router(Arc::clone(&state), tokens.clone()))
        .merge(crate::unleash::router(Arc::clone(&state), tokens.clone()))
        .route(
            "/mirrors/diagnostics",
            get(move |headers: axum::http::HeaderMap| mirror_diagnostics(state, tokens, headers)),
        )
}

/// Every flag a mirror exports inexactly or leaves out, and why (behind tokens: it names flags).
async fn mirror_diagnostics(
    state: Arc<AppState>,
    tokens: crate::Tokens,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if !tokens.accepts_http(&headers) {
        state.metrics.unauthenticated();
        return (StatusCode::UNAUTHORIZED, "missing or unknown token\n").into_response();
    }
    match state.served() {
        Some(served) => served.mirrors.diagnostics.respond(&headers, &[]),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no valid flag snapshot yet\n",
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let served = state.served();
    let body = state
        .metrics
        .render(served.as_ref().map(|s| &s.counters), &state.live.status());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, String) {
    if state.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    match state.served() {
        Some(served) => (
            StatusCode::OK,
            format!("ready: serving revision {}\n", served.snapshot.revision()),
        ),
        None => {
            let status = state.live.status();
            let why = status
                .last_error
                .map(|a| match a.result {
                    vexil_core::AttemptResult::Invalid { diagnostics } => format!(
                        "the source is invalid ({} diagnostics, first: {})",
                        diagnostics.len(),
                        diagnostics
                            .first()
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    ),
                    vexil_core::AttemptResult::SourceError { message } => message,
                    _ => String::new(),
                })
                .unwrap_or_else(|| "waiting for the first read".into());
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: no valid flag snapshot yet: {why}\n"),
            )
        }
    }
}
