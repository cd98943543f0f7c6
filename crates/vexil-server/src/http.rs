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
    let max_body = state.options.limits.max_message_bytes;
    Router::new()
        .route("/metrics", get(metrics))
        .with_state((Arc::clone(&state), tokens.clone()))
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
        // One body limit for every route: a declared length over it is refused before the
        // handler runs (even one that ignores bodies), and extractors stop reading at it.
        .layer(axum::middleware::from_fn_with_state(
            max_body,
            refuse_large_bodies,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
}

async fn refuse_large_bodies(
    State(max): State<usize>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {max} bytes (--max-message-bytes)\n"),
        )
            .into_response();
    }
    next.run(request).await
}

/// A request without a valid token, counted.
fn unauthorized(state: &AppState) -> axum::response::Response {
    state.metrics.unauthenticated();
    (StatusCode::UNAUTHORIZED, "missing or unknown token\n").into_response()
}

/// Every flag a mirror exports inexactly or leaves out, and why (behind tokens: it names flags).
async fn mirror_diagnostics(
    state: Arc<AppState>,
    tokens: crate::Tokens,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if !tokens.accepts_http(&headers) {
        return unauthorized(&state);
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

/// Metrics name flags and the commit served: behind the tokens, when there are any, unless
/// `--public-metrics` (Prometheus sends `authorization` from its scrape config).
async fn metrics(
    State((state, tokens)): State<(Arc<AppState>, crate::Tokens)>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if !state.options.public_metrics && !tokens.accepts_http(&headers) {
        return unauthorized(&state);
    }
    let served = state.served();
    let counters = served.as_ref().map(|s| &s.counters);
    let healthy = state.reader_health().is_ok();
    let body = state
        .live
        .inspect(|status| state.metrics.render(counters, status, healthy));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, String) {
    if state.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    if let Err(why) = state.reader_health() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        );
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
