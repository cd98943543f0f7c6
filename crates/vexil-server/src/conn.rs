//! Accepting and serving connections on both ports, with the limits that keep a hostile or
//! stuck client from holding the server: a cap on open connections (shared by both ports),
//! back-off on accept errors, a handshake timeout (TLS, HTTP/2 preface and the first request
//! headers), HTTP/1 header read timeouts, an idle timeout, HTTP/2 keepalive pings with a
//! timeout, and a cap on concurrent HTTP/2 streams per connection.
//!
//! hyper serves each connection; this module decides when a connection has to go. A connection
//! is watched by its own task: it counts the requests in flight (a response body counts until it
//! is dropped, so a Watch stream is in flight for its whole life) and closes the connection when
//! the first request does not arrive within the handshake timeout, or when nothing has been in
//! flight for the idle timeout (gracefully: HTTP/2 gets a GOAWAY).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::state::AppState;

/// Connection limits for both ports (each has an option in `vexil serve`).
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// TLS handshake, HTTP/2 preface and the first request's headers must arrive within this;
    /// later HTTP/1 request headers too.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 pings after this much silence from the client ...
    pub http2_keepalive_interval: Duration,
    /// ... and the connection is closed when a ping is not answered within this.
    pub http2_keepalive_timeout: Duration,
    /// Concurrent streams one HTTP/2 connection may open.
    pub max_concurrent_streams: u32,
    /// Open connections on both ports together.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
            max_concurrent_streams: 200,
            max_connections: 4096,
        }
    }
}

/// Which protocols a port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// gRPC: HTTP/2 only, with wide flow-control windows (batch and list answers are several
    /// kilobytes; HTTP/2's default 64 KiB connection window would stall concurrent streams).
    Grpc,
    /// The HTTP port: HTTP/1.1 and HTTP/2 (prior knowledge, or over TLS whichever the client
    /// sends; ALPN offers both).
    Http,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a port serves: a cloneable HTTP service (tonic's routes, axum's router).
pub trait PortService:
    tower_service::Service<
        http::Request<Incoming>,
        Response = http::Response<Self::ResBody>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + 'static
{
    type ResBody: Body<Data: Send, Error: Into<BoxError>> + Send + Unpin + 'static;
}

impl<S, B> PortService for S
where
    S: tower_service::Service<
            http::Request<Incoming>,
            Response = http::Response<B>,
            Future: Send + 'static,
            Error: Into<BoxError>,
        > + Clone
        + Send
        + 'static,
    B: Body<Data: Send, Error: Into<BoxError>> + Send + Unpin + 'static,
{
    type ResBody = B;
}

/// The shared cap on open connections.
#[derive(Debug, Clone)]
pub struct ConnectionCap(Arc<Semaphore>);

impl ConnectionCap {
    pub fn new(max: usize) -> ConnectionCap {
        ConnectionCap(Arc::new(Semaphore::new(max.max(1))))
    }
}

/// Accepts and serves connections until `stop` turns true; then stops accepting, asks every
/// connection to finish (in-flight calls complete) and returns once all are closed. The caller
/// bounds how long that may take. With `tls`, every connection is a TLS handshake first, within
/// the handshake timeout (`crate::tls` keeps the acceptor's certificate current).
#[allow(clippy::too_many_arguments)]
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    protocols: Protocols,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnLimits,
    cap: ConnectionCap,
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
) where
    S: PortService,
{
    let builder = Arc::new(builder(protocols, &limits));
    let open = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(Notify::new());
    let mut backoff = AcceptBackoff::default();
    loop {
        // At the cap, accepting waits: new clients queue in the kernel's backlog until a
        // connection closes (the timeouts below make sure idle ones do).
        let permit = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            permit = Arc::clone(&cap.0).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => {
                backoff.reset();
                stream
            }
            Err(e) => {
                drop(permit);
                state.metrics.accept_error();
                // Out of descriptors (or memory) fails every accept at once until something
                // closes: wait instead of spinning. Errors of one connection (reset before
                // accept) are retried at once.
                if let Some(wait) = backoff.after(&e) {
                    tracing::warn!(error = %e, wait = ?wait, "accept failed; backing off");
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                continue;
            }
        };
        // Without TCP_NODELAY small answers wait for the client's delayed ACK (about 40 ms).
        let _ = stream.set_nodelay(true);
        open.fetch_add(1, Ordering::SeqCst);
        state.metrics.connection_opened();
        let task = Connection {
            builder: Arc::clone(&builder),
            service: service.clone(),
            tls: tls.clone(),
            limits: limits.clone(),
            stop: stop.clone(),
            _permit: permit,
        };
        let (open, closed, state) = (Arc::clone(&open), Arc::clone(&closed), Arc::clone(&state));
        tokio::spawn(async move {
            let outcome = task.run(stream).await;
            state.metrics.connection_closed(outcome);
            open.fetch_sub(1, Ordering::SeqCst);
            closed.notify_waiters();
        });
    }
    drop(listener);
    // Every connection has seen `stop` and is finishing its calls.
    loop {
        let notified = closed.notified();
        if open.load(Ordering::SeqCst) == 0 {
            return;
        }
        notified.await;
    }
}

fn builder(protocols: Protocols, limits: &ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    {
        let mut h2 = builder.http2();
        h2.timer(TokioTimer::new())
            .keep_alive_interval(limits.http2_keepalive_interval)
            .keep_alive_timeout(limits.http2_keepalive_timeout)
            .max_concurrent_streams(limits.max_concurrent_streams)
            // Streams a client opens and resets at once count against this (CVE-2023-44487).
            .max_pending_accept_reset_streams(Some(20))
            .max_header_list_size(64 << 10);
        if protocols == Protocols::Grpc {
            h2.initial_connection_window_size(1 << 20)
                .initial_stream_window_size(256 << 10);
        }
    }
    if protocols == Protocols::Grpc {
        builder = builder.http2_only();
    }
    builder
}

/// How a connection ended, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The client closed it, or it ended after a graceful close.
    Normal,
    /// No TLS handshake or first request within the handshake timeout.
    HandshakeTimeout,
    /// Nothing in flight for the idle timeout.
    Idle,
    /// A protocol or IO error (including HTTP/1 header and HTTP/2 keepalive timeouts).
    Error,
}

impl Closed {
    pub const ALL: [Closed; 4] = [
        Closed::Normal,
        Closed::HandshakeTimeout,
        Closed::Idle,
        Closed::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Closed::Normal => "normal",
            Closed::HandshakeTimeout => "handshake_timeout",
            Closed::Idle => "idle_timeout",
            Closed::Error => "error",
        }
    }
}

struct Connection<S> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: S,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnLimits,
    stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

impl<S> Connection<S>
where
    S: PortService,
{
    async fn run(self, stream: TcpStream) -> Closed {
        let opened = Instant::now();
        let handshake_deadline = opened + self.limits.header_read_timeout;
        match self.tls.clone() {
            None => self.serve_io(stream, handshake_deadline).await,
            Some(acceptor) => {
                let accepted =
                    tokio::time::timeout_at(handshake_deadline, acceptor.accept(stream)).await;
                match accepted {
                    Ok(Ok(tls)) => self.serve_io(tls, handshake_deadline).await,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        Closed::Error
                    }
                    Err(_) => Closed::HandshakeTimeout,
                }
            }
        }
    }

    async fn serve_io<IO>(mut self, io: IO, handshake_deadline: Instant) -> Closed
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let service = Tracked {
            inner: self.service.clone(),
            activity: Arc::clone(&activity),
        };
        let conn = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        // Once closing: why, and by when a client that does not finish is cut off (`None`: no
        // bound here; shutdown's drain timeout bounds it).
        let mut closing: Option<(Closed, Option<Instant>)> = None;
        loop {
            let changed = activity.changed.notified();
            if activity.cut.load(Ordering::SeqCst) {
                // A stream whose client stopped reading: nothing more can be written to it,
                // so the connection (its buffers, the socket) goes now.
                return Closed::Error;
            }
            // What the watchdog waits for next: the handshake deadline, the idle deadline, or
            // (while calls are in flight) only a change of activity.
            let deadline = match closing {
                Some((_, by)) => by,
                None if !activity.seen_request() => Some(handshake_deadline),
                None if activity.in_flight() == 0 => {
                    Some(activity.last_change() + self.limits.idle_timeout)
                }
                None => None,
            };
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = conn.as_mut() => {
                    return match (result, closing) {
                        (_, Some((why, _))) => why,
                        (Ok(()), None) => Closed::Normal,
                        (Err(e), None) => {
                            tracing::debug!(error = %e, "connection ended with an error");
                            Closed::Error
                        }
                    };
                }
                () = changed => {}
                _ = self.stop.wait_for(|s| *s), if closing.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    closing = Some((Closed::Normal, None));
                }
                () = sleep => {
                    if let Some((why, _)) = closing {
                        return why;
                    }
                    if !activity.seen_request() {
                        // Never got as far as a request: nothing to finish.
                        return Closed::HandshakeTimeout;
                    }
                    if activity.in_flight() == 0
                        && Instant::now() >= activity.last_change() + self.limits.idle_timeout
                    {
                        conn.as_mut().graceful_shutdown();
                        closing = Some((Closed::Idle, Some(Instant::now() + self.limits.header_read_timeout)));
                    }
                }
            }
        }
    }
}

/// Backs off while accepting fails for lack of resources (descriptors, memory, buffers).
#[derive(Debug, Default)]
struct AcceptBackoff {
    current: Option<Duration>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    fn reset(&mut self) {
        self.current = None;
    }

    /// How long to wait after `e`; `None` for errors of one connection only.
    fn after(&mut self, e: &std::io::Error) -> Option<Duration> {
        use std::io::ErrorKind;
        if matches!(
            e.kind(),
            ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
        ) {
            return None;
        }
        let next = self.current.map_or(Self::FIRST, |d| (d * 2).min(Self::MAX));
        self.current = Some(next);
        Some(next)
    }
}

/// What a connection's watchdog needs: requests in flight, whether any arrived, and when the
/// count last changed.
#[derive(Debug)]
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `start` of the last change; `u64::MAX` until the first request.
    last_change_ms: AtomicU64,
    changed: Notify,
    /// Set by a response's `Cutter`: close the connection now.
    cut: std::sync::atomic::AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_change_ms: AtomicU64::new(u64::MAX),
            changed: Notify::new(),
            cut: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn seen_request(&self) -> bool {
        self.last_change_ms.load(Ordering::SeqCst) != u64::MAX
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    fn last_change(&self) -> Instant {
        match self.last_change_ms.load(Ordering::SeqCst) {
            u64::MAX => self.start,
            ms => self.start + Duration::from_millis(ms),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_change_ms
            .store(ms.min(u64::MAX - 1), Ordering::SeqCst);
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        InFlight(Arc::clone(self))
    }
}

/// Put in a streaming response's extensions, it lets the stream close its connection: a stream
/// whose client stopped reading cannot end cleanly (nothing more gets written), and would
/// otherwise keep its socket and buffers until the client goes.
#[derive(Debug, Clone, Default)]
pub struct Cutter(Arc<std::sync::Mutex<Option<std::sync::Weak<Activity>>>>);

impl Cutter {
    /// Closes the connection that carries the response (nothing if it is gone already).
    pub fn cut(&self) {
        let activity = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(std::sync::Weak::upgrade);
        if let Some(activity) = activity {
            activity.cut.store(true, Ordering::SeqCst);
            activity.changed.notify_waiters();
        }
    }

    fn attach(&self, activity: &Arc<Activity>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::downgrade(activity));
    }
}

/// One request in flight; dropped when its response body is done or abandoned.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let before = self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
        // Only the last call ending matters to the watchdog (it then sleeps towards the idle
        // deadline). A call beginning wakes nothing: whatever deadline the watchdog sleeps
        // towards, it checks again when it comes. Waking it on every call would cost a task
        // wake-up per request.
        if before == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

/// The port's service, counting requests in flight for the connection's watchdog.
#[derive(Debug, Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> hyper::service::Service<http::Request<Incoming>> for Tracked<S>
where
    S: PortService,
{
    type Response = http::Response<TrackedBody<S::ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let mut inner = self.inner.clone();
        let guard = self.activity.begin();
        let activity = Arc::clone(&self.activity);
        Box::pin(async move {
            std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
            let response = inner.call(request).await?;
            if let Some(cutter) = response.extensions().get::<Cutter>() {
                cutter.attach(&activity);
            }
            Ok(response.map(|body| TrackedBody {
                inner: body,
                _guard: guard,
            }))
        })
    }
}

/// A response body that keeps its request counted as in flight until it is dropped.
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    _guard: InFlight,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_grows_for_resource_errors_and_not_for_one_connection() {
        let mut backoff = AcceptBackoff::default();
        let emfile = std::io::Error::from_raw_os_error(24);
        let aborted = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        assert_eq!(backoff.after(&aborted), None);
        assert_eq!(backoff.after(&emfile), Some(Duration::from_millis(5)));
        assert_eq!(backoff.after(&emfile), Some(Duration::from_millis(10)));
        for _ in 0..20 {
            backoff.after(&emfile);
        }
        assert_eq!(backoff.after(&emfile), Some(Duration::from_secs(1)));
        backoff.reset();
        assert_eq!(backoff.after(&emfile), Some(Duration::from_millis(5)));
    }
}
