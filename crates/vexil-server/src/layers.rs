//! Auth and metrics as layers: a `Gate` sits in front of the gRPC port's routes (attached once)
//! and of each HTTP front's router (attached once per front). It names the endpoint a request
//! is for, refuses a request whose declared body is over the limit (413) or that has no
//! accepted token (401, counted in `vexil_unauthenticated_total{front}`) before any handler
//! runs, and counts and times every answer, refusals included (`vexil_requests_total`,
//! `vexil_request_duration_seconds`).
//!
//! The gate's future wraps the inner one without boxing (the inner futures are `Unpin`), so a
//! measured request allocates nothing more than an unmeasured one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};

use crate::auth::Tokens;
use crate::metrics::{Code, Endpoint, Metrics};

/// What differs between ports and fronts: which endpoint a request is for, which need a token
/// and which token forms count, how a refusal is worded and how a status is read.
pub trait Rules: Clone + Send + Sync + 'static {
    type Body;
    /// The endpoint, and whether it needs a token (when tokens are configured); `None` for
    /// what is neither measured nor guarded (health checks).
    fn classify<B>(&self, request: &Request<B>) -> Option<(Endpoint, bool)>;
    fn authorized(&self, tokens: &Tokens, headers: &HeaderMap) -> bool;
    /// The answer to a request without an accepted token.
    fn refuse<B>(&self, endpoint: Endpoint, request: &Request<B>) -> Response<Self::Body>;
    /// The answer to a request that declares (`Content-Length`) a body over the port's own
    /// limit; `None` to let it through (and for a port without one: gRPC's is the codec's).
    fn too_large(&self, _headers: &HeaderMap) -> Option<Response<Self::Body>> {
        None
    }
    fn code(&self, response: &Response<Self::Body>) -> Code;
}

/// The layer: wraps a service in a `Gate`.
#[derive(Debug, Clone)]
pub struct GateLayer<R> {
    rules: R,
    tokens: Tokens,
    metrics: Arc<Metrics>,
}

impl<R> GateLayer<R> {
    pub fn new(rules: R, tokens: Tokens, metrics: Arc<Metrics>) -> GateLayer<R> {
        GateLayer {
            rules,
            tokens,
            metrics,
        }
    }
}

impl<S, R: Clone> tower_layer::Layer<S> for GateLayer<R> {
    type Service = Gate<S, R>;

    fn layer(&self, inner: S) -> Gate<S, R> {
        Gate {
            inner,
            rules: self.rules.clone(),
            tokens: self.tokens.clone(),
            metrics: Arc::clone(&self.metrics),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Gate<S, R> {
    inner: S,
    rules: R,
    tokens: Tokens,
    metrics: Arc<Metrics>,
}

impl<S, R, B> tower_service::Service<Request<B>> for Gate<S, R>
where
    S: tower_service::Service<Request<B>, Response = Response<R::Body>>,
    S::Future: Unpin,
    R: Rules,
{
    type Response = Response<R::Body>;
    type Error = S::Error;
    type Future = GateFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let classified = self.rules.classify(&request);
        // A declared length over the limit is refused before the handler runs (even one that
        // ignores bodies); extractors stop reading an undeclared one at the same limit.
        let too_large = self.rules.too_large(request.headers());
        let refused = |state: &Self, endpoint: Option<Endpoint>, answer: Response<R::Body>| {
            if let Some(endpoint) = endpoint {
                let code = state.rules.code(&answer);
                state.metrics.observe(endpoint, started.elapsed(), code);
            }
            GateFuture {
                state: State::Refused(Some(answer)),
                rules: state.rules.clone(),
            }
        };
        if let Some(answer) = too_large {
            return refused(self, classified.map(|(e, _)| e), answer);
        }
        let Some((endpoint, protected)) = classified else {
            return GateFuture {
                state: State::Passed(self.inner.call(request)),
                rules: self.rules.clone(),
            };
        };
        if protected
            && self.tokens.is_enabled()
            && !self.rules.authorized(&self.tokens, request.headers())
        {
            self.metrics.unauthenticated(endpoint.front());
            let answer = self.rules.refuse(endpoint, &request);
            return refused(self, Some(endpoint), answer);
        }
        let metrics = Arc::clone(&self.metrics);
        GateFuture {
            state: State::Running {
                inner: self.inner.call(request),
                started,
                endpoint,
                metrics,
            },
            rules: self.rules.clone(),
        }
    }
}

pub struct GateFuture<F, R: Rules> {
    state: State<F, R::Body>,
    rules: R,
}

enum State<F, B> {
    Refused(Option<Response<B>>),
    Passed(F),
    Running {
        inner: F,
        started: Instant,
        endpoint: Endpoint,
        metrics: Arc<Metrics>,
    },
}

impl<F, R: Rules> std::fmt::Debug for GateFuture<F, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GateFuture")
    }
}

impl<F, R: Rules> Unpin for GateFuture<F, R> where F: Unpin {}

impl<F, E, R> Future for GateFuture<F, R>
where
    F: Future<Output = Result<Response<R::Body>, E>> + Unpin,
    R: Rules,
{
    type Output = Result<Response<R::Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.state {
            State::Refused(response) => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled after completion: never answered twice.
                None => Poll::Pending,
            },
            State::Passed(inner) => Pin::new(inner).poll(cx),
            State::Running {
                inner,
                started,
                endpoint,
                metrics,
            } => {
                let result = std::task::ready!(Pin::new(inner).poll(cx));
                if let Ok(response) = &result {
                    metrics.observe(*endpoint, started.elapsed(), this.rules.code(response));
                }
                Poll::Ready(result)
            }
        }
    }
}
