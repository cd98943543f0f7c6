//! The HTTP port: the probes (`/healthz`: the process answers; `/readyz`: a snapshot is served
//! and the server is not shutting down), Prometheus metrics, and the fronts (OFREP, the
//! Flipper and Unleash mirrors, the Unleash frontend API, `/mirrors/diagnostics`), each behind
//! its one `Gate` layer (tokens, metrics), attached once in `router`; the browser-facing ones
//! (OFREP, the frontend API) also behind one CORS layer, outside their gates, when origins are
//! configured.

use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth::Tokens;
use crate::evaluation::Error;
use crate::layers::{GateLayer, Rules};
use crate::metrics::{Code, Endpoint, Front, ReloadFigures, Scrape};
use crate::state::AppState;

/// Tokens, metrics and the body limit for one HTTP front (or the probes: neither measured nor
/// guarded, but limited).
#[derive(Debug, Clone, Copy)]
pub struct FrontRules {
    /// `None` for the probes.
    front: Option<Front>,
    /// Whether the front needs a token (when tokens are configured).
    guarded: bool,
    max_body: u64,
}

impl FrontRules {
    fn method(front: Front, path: &str) -> &'static str {
        match front {
            Front::Ofrep => crate::ofrep::method(path),
            Front::Flipper => crate::flipper::method(path),
            Front::Unleash => crate::unleash::method(path),
            Front::Frontend => crate::frontend::method(path),
            Front::Hooks => crate::hooks::method(path),
            Front::Vexil | Front::Flagd | Front::FlagdSync | Front::Http => {
                if path == "/metrics" {
                    "metrics"
                } else if path == "/mirrors/diagnostics" {
                    "diagnostics"
                } else if path == "/events" {
                    "events"
                } else {
                    "other"
                }
            }
        }
    }
}

impl Rules for FrontRules {
    type Body = axum::body::Body;

    fn classify<B>(&self, request: &Request<B>) -> Option<(Endpoint, bool)> {
        let front = self.front?;
        let path = request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| request.uri().path(), MatchedPath::as_str);
        Some((
            Endpoint::of(front, FrontRules::method(front, path)),
            self.guarded,
        ))
    }

    /// Every form a client can be set up to send (see `Tokens::accepts_http`).
    fn authorized(&self, tokens: &Tokens, headers: &HeaderMap) -> bool {
        tokens.accepts_http(headers)
    }

    fn refuse<B>(&self, _endpoint: Endpoint, request: &Request<B>) -> Response {
        let e = Error::Unauthenticated;
        match self.front {
            Some(Front::Ofrep) => {
                crate::ofrep::error(&e, crate::ofrep::key_of(request.uri().path()))
            }
            Some(Front::Flipper) => crate::flipper::refused(&e),
            Some(Front::Unleash) => crate::unleash::refused(&e),
            Some(Front::Frontend) => crate::frontend::refused(&e),
            Some(Front::Vexil | Front::Flagd | Front::FlagdSync | Front::Http | Front::Hooks)
            | None => (StatusCode::UNAUTHORIZED, "missing or unknown token\n").into_response(),
        }
    }

    fn too_large(&self, headers: &HeaderMap) -> Option<Response> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())?;
        (declared > self.max_body).then(|| {
            let why = format!(
                "request body larger than {} bytes (--max-message-bytes)\n",
                self.max_body
            );
            (StatusCode::PAYLOAD_TOO_LARGE, why).into_response()
        })
    }

    fn code(&self, response: &Response) -> Code {
        Code::http(response.status())
    }
}

/// The HTTP port's router.
pub fn router(state: Arc<AppState>, tokens: Tokens) -> Router {
    let max_body = state.options.limits.max_message_bytes;
    let front = |router: Router, front: Option<Front>, guarded: bool| {
        let rules = FrontRules {
            front,
            guarded,
            max_body: max_body as u64,
        };
        router.layer(GateLayer::new(
            rules,
            tokens.clone(),
            Arc::clone(&state.metrics),
        ))
    };
    let own = Router::new()
        .route("/mirrors/diagnostics", get(mirror_diagnostics))
        .with_state(Arc::clone(&state));
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .with_state(Arc::clone(&state));
    let probes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Arc::clone(&state));
    let ofrep = crate::ofrep::router(Arc::clone(&state), tokens.clone());
    // Streams check their own token (a header, or `?token=` from EventSource).
    let (ofrep_streams, events) = crate::sse::router(Arc::clone(&state), tokens.clone());
    let flipper = crate::flipper::router(Arc::clone(&state));
    let unleash = crate::unleash::router(Arc::clone(&state));
    let frontend = crate::frontend::router(Arc::clone(&state));
    let hooks = crate::hooks::router(Arc::clone(&state));
    // What pages call from other origins. The mirrors of the client APIs serve server SDKs,
    // and metrics, probes and hooks are no browser's business: they get no CORS headers.
    let mut browser = front(ofrep, Some(Front::Ofrep), true)
        .merge(front(ofrep_streams, Some(Front::Ofrep), false))
        .merge(front(events, Some(Front::Http), false))
        .merge(front(frontend, Some(Front::Frontend), true));
    if state.options.cors.is_enabled() {
        browser = browser.layer(crate::cors::CorsLayer::new(state.options.cors.clone()));
    }
    front(probes, None, false)
        .merge(browser)
        .merge(front(flipper, Some(Front::Flipper), true))
        .merge(front(unleash, Some(Front::Unleash), true))
        .merge(front(own, Some(Front::Http), true))
        // Git hosts cannot send bearer tokens: hooks carry the webhook secret (`hooks`).
        .merge(front(hooks, Some(Front::Hooks), false))
        // Metrics name flags and the commit served: behind the tokens, when there are any,
        // unless `--public-metrics` (Prometheus sends `authorization` from its scrape config).
        .merge(front(
            metrics,
            Some(Front::Http),
            !state.options.public_metrics,
        ))
        // Each gate refuses a declared length over the limit; extractors stop reading an
        // undeclared one at it.
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
}

/// Every flag a mirror exports inexactly or leaves out, and why (behind tokens: it names flags).
async fn mirror_diagnostics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let current = state.current();
    match current.served() {
        Ok(served) => served.derived.mirrors.diagnostics.respond(&headers, &[]),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let healthy = state.reader_health().is_ok();
    let scrape = Scrape {
        metrics: Arc::clone(&state.metrics),
        snapshot: state.current().snapshot(),
        reload: state
            .live
            .inspect(|status| ReloadFigures::of(status, healthy)),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        scrape.render(),
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
    if let Some(revision) = state.revision() {
        let stale = state
            .live
            .inspect(|s| s.stale.as_ref().map(|x| x.reason.clone()));
        let text = match stale {
            // Ready: the revision was good when served; the status says the source is down.
            Some(reason) => format!("ready: serving revision {revision} (stale: {reason})\n"),
            None => format!("ready: serving revision {revision}\n"),
        };
        return (StatusCode::OK, text);
    }
    let why = state.live.inspect(|status| {
        status
            .last_error
            .as_ref()
            .map(|a| match &a.result {
                vexil_core::AttemptResult::Invalid { diagnostics } => format!(
                    "the source is invalid ({} diagnostics, first: {})",
                    diagnostics.len(),
                    diagnostics
                        .first()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ),
                vexil_core::AttemptResult::SourceError { message } => message.clone(),
                _ => String::new(),
            })
            .unwrap_or_else(|| "waiting for the first read".into())
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {}: {why}\n", Error::NoSnapshot),
    )
}
