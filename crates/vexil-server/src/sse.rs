//! Server-sent event streams: `GET /events`, the generic change stream (what gRPC Watch says,
//! as JSON events: `current`, one `change` per swap, `heartbeat`), and OFREP's change events
//! (ADR-0008: `GET /ofrep/v1/events`, `/ns/{namespace}/ofrep/v1/events`) that the OpenFeature
//! web provider follows, advertised in the bulk answer's `eventStreams`.
//!
//! Both are fed by the one change-stream pump (`pump`), so a client that stops reading holds
//! one event and is dropped after the stalled-stream timeout. Event ids are revisions: a client
//! that reconnects with `Last-Event-ID` is sent what it missed from the recent changes kept in
//! `Recent` (a `current` event, or one re-fetch for OFREP, when its revision is too old).
//!
//! EventSource cannot send headers, so a stream also accepts `?token=`, a token derived from
//! the bearer token and the namespace (`auth::Tokens::stream_token`) that the bulk answer hands
//! out: it opens that namespace's stream and reveals nothing of the bearer token.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use vexil_core::diff::FlagRef;
use vexil_core::{ChangeEvent, DEFAULT_NAMESPACE};

use crate::auth::Tokens;
use crate::metrics::Front;
use crate::pump::{self, Feed, Pace, STREAM_BUFFER};
use crate::state::AppState;

/// How many recent changes `Last-Event-ID` can resume from.
pub const RECENT: usize = 64;

/// The last `RECENT` changes (keys and revisions, never snapshots), oldest first.
#[derive(Debug, Default)]
pub struct Recent(Mutex<VecDeque<Arc<ChangeEvent>>>);

impl Recent {
    /// Called for every swap, in order, after it is served.
    pub fn push(&self, event: &Arc<ChangeEvent>) {
        let mut recent = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back(Arc::clone(event));
    }

    /// The changes after `revision`, oldest first; `None` if `revision` is not among them.
    fn after(&self, revision: &str) -> Option<Vec<Arc<ChangeEvent>>> {
        let recent = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The last occurrence: a ref moved back to an earlier commit serves a revision again.
        let skip = match recent.iter().rposition(|e| e.revision == revision) {
            Some(at) => at + 1,
            // The revision before the oldest change kept (the first served, say).
            None if recent
                .front()
                .is_some_and(|e| e.old_revision.as_deref() == Some(revision)) =>
            {
                0
            }
            None => return None,
        };
        Some(recent.iter().skip(skip).cloned().collect())
    }
}

#[derive(Clone)]
struct Streams {
    state: Arc<AppState>,
    tokens: Tokens,
}

pub fn router(state: Arc<AppState>, tokens: Tokens) -> (Router, Router) {
    let streams = Streams { state, tokens };
    let ofrep = Router::new()
        .route("/ofrep/v1/events", get(ofrep_default))
        .route("/ns/{namespace}/ofrep/v1/events", get(ofrep_ns))
        .with_state(streams.clone());
    let events = Router::new()
        .route("/events", get(events))
        .with_state(streams);
    (ofrep, events)
}

/// The stream's path for a namespace, with the token a browser needs (none without tokens).
pub fn ofrep_stream_uri(namespace: &str, token: Option<&str>) -> String {
    let mut uri = if namespace == DEFAULT_NAMESPACE {
        "/ofrep/v1/events".to_owned()
    } else {
        let ns: String = form_urlencoded::byte_serialize(namespace.as_bytes()).collect();
        format!("/ns/{ns}/ofrep/v1/events")
    };
    if let Some(token) = token {
        uri.push_str("?token=");
        uri.push_str(token);
    }
    uri
}

#[derive(Debug, Default)]
struct StreamQuery {
    token: Option<String>,
    namespace: Option<String>,
}

impl StreamQuery {
    fn parse(query: Option<&str>) -> StreamQuery {
        let mut q = StreamQuery::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*k {
                "token" => q.token = Some(v.into_owned()),
                "namespace" => q.namespace = Some(v.into_owned()),
                _ => {}
            }
        }
        q
    }
}

fn refused(streams: &Streams, front: Front) -> Response {
    streams.state.metrics.unauthenticated(front);
    (StatusCode::UNAUTHORIZED, "missing or unknown token\n").into_response()
}

/// A header token (any form the fronts accept), or the stream token of `namespace`.
fn authorized(streams: &Streams, headers: &HeaderMap, q: &StreamQuery, namespace: &str) -> bool {
    streams.tokens.accepts_http(headers)
        || q.token
            .as_deref()
            .is_some_and(|t| streams.tokens.accepts_stream_token(namespace, t))
}

fn last_event_id(headers: &HeaderMap) -> Option<String> {
    let id = headers.get("last-event-id")?.to_str().ok()?.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

async fn ofrep_default(
    State(s): State<Streams>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    ofrep(
        &s,
        DEFAULT_NAMESPACE,
        &StreamQuery::parse(q.as_deref()),
        &headers,
    )
}

async fn ofrep_ns(
    State(s): State<Streams>,
    Path(namespace): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    ofrep(&s, &namespace, &StreamQuery::parse(q.as_deref()), &headers)
}

fn ofrep(s: &Streams, namespace: &str, q: &StreamQuery, headers: &HeaderMap) -> Response {
    if !authorized(s, headers, q, namespace) {
        return refused(s, Front::Ofrep);
    }
    let namespace = Some(namespace.to_owned());
    open(s, Style::Ofrep, namespace, headers)
}

async fn events(State(s): State<Streams>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let q = StreamQuery::parse(q.as_deref());
    let namespace = q.namespace.clone().filter(|n| !n.is_empty());
    // The stream token of the namespace asked for also opens `/events?namespace=`.
    let scope = namespace.as_deref().unwrap_or("");
    if !authorized(&s, &headers, &q, scope) {
        return refused(&s, Front::Http);
    }
    open(&s, Style::Generic, namespace, &headers)
}

fn open(s: &Streams, style: Style, namespace: Option<String>, headers: &HeaderMap) -> Response {
    let state = &s.state;
    // Subscribed before the served revision and the recent changes are read: no swap falls
    // between them (one that is in both is skipped by `seen`).
    let events = state.events.subscribe();
    let current = state.current();
    if let (Some(ns), Ok(served)) = (&namespace, current.served()) {
        if served.snapshot.namespace(ns).is_none() {
            let why = format!("unknown namespace {ns:?}\n");
            return (StatusCode::NOT_FOUND, why).into_response();
        }
    }
    let revision = state.revision().unwrap_or_default();
    let mut feed = SseFeed {
        style,
        namespace,
        last_revision: revision.clone(),
        seen: Vec::new(),
        opening: None,
    };
    feed.opening = Some(feed.first_events(state, last_event_id(headers), &revision));
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let pace = Pace {
        heartbeat: state.options.heartbeat,
        wait_ready: true,
    };
    // A client that stopped reading holds its connection's buffers: cut it once its stream
    // is dropped.
    let cutter = crate::conn::Cutter::default();
    let cut = cutter.clone();
    let pumped = pump::pump(Arc::clone(state), events, feed, pace, tx);
    tokio::spawn(async move {
        if pumped.await == pump::Delivery::Stalled {
            cut.cut();
        }
    });
    let body = Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>),
    );
    let mut response = body.into_response();
    response.extensions_mut().insert(cutter);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies such as nginx would otherwise hold events back.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// `/events`: Watch's content.
    Generic,
    /// OFREP: `refetchEvaluation` when the namespace's flags change.
    Ofrep,
}

struct SseFeed {
    style: Style,
    namespace: Option<String>,
    last_revision: String,
    /// Revisions already sent from `Recent` (the broadcast may bring them again).
    seen: Vec<String>,
    opening: Option<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl SseFeed {
    fn touches(&self, change: &ChangeEvent) -> bool {
        let Some(ns) = &self.namespace else {
            return true;
        };
        let c = &change.changes;
        [&c.added, &c.changed, &c.removed]
            .iter()
            .any(|refs| refs.iter().any(|r| *r.namespace == **ns))
    }

    /// What a new stream is sent first: the current revision; after `Last-Event-ID`, what the
    /// client missed (nothing if it missed nothing).
    fn first_events(
        &mut self,
        state: &AppState,
        last_id: Option<String>,
        revision: &str,
    ) -> String {
        let missed = last_id.as_deref().and_then(|id| {
            if id == revision {
                Some(Vec::new())
            } else {
                state.recent.after(id)
            }
        });
        let hello = match self.style {
            // The web provider re-fetches after every (re)connect anyway.
            Style::Ofrep => "retry: 1000\n\n".to_owned(),
            Style::Generic => String::new(),
        };
        let Some(missed) = missed else {
            return match (self.style, last_id) {
                (Style::Generic, _) => hello + &self.current(revision),
                // Resuming from a revision no longer known: re-fetch.
                (Style::Ofrep, Some(_)) => hello + &self.refetch(revision),
                (Style::Ofrep, None) => hello,
            };
        };
        let mut out = hello;
        self.seen = missed.iter().map(|e| e.revision.clone()).collect();
        // Resume from what the client has (or was just replayed), not from the served revision:
        // a swap served before it reached the recent changes then still comes by the broadcast.
        match (missed.last(), &last_id) {
            (Some(last), _) => self.last_revision.clone_from(&last.revision),
            (None, Some(id)) => self.last_revision.clone_from(id),
            (None, None) => {}
        }
        match self.style {
            Style::Generic => {
                for change in &missed {
                    out.push_str(&self.change_event(change));
                }
            }
            Style::Ofrep => {
                if missed.iter().any(|c| self.touches(c)) {
                    out.push_str(&self.refetch(revision));
                }
            }
        }
        out
    }

    fn current(&self, revision: &str) -> String {
        let data = json!({ "kind": "current", "revision": revision });
        format!("event: current\nid: {revision}\ndata: {data}\n\n")
    }

    fn refetch(&self, revision: &str) -> String {
        let data = json!({
            "type": "refetchEvaluation",
            "etag": revision,
            "lastModified": unix_now(),
        });
        format!("id: {revision}\nevent: message\ndata: {data}\n\n")
    }

    fn change_event(&self, change: &ChangeEvent) -> String {
        let pick = |refs: &[FlagRef]| -> Vec<serde_json::Value> {
            refs.iter()
                .filter(|r| {
                    self.namespace
                        .as_deref()
                        .is_none_or(|ns| *r.namespace == *ns)
                })
                .map(|r| json!({ "namespace": &*r.namespace, "key": &*r.key }))
                .collect()
        };
        let data = json!({
            "kind": "change",
            "revision": change.revision,
            "previous_revision": change.old_revision.clone().unwrap_or_default(),
            "added": pick(&change.changes.added),
            "changed": pick(&change.changes.changed),
            "removed": pick(&change.changes.removed),
        });
        format!("event: change\nid: {}\ndata: {data}\n\n", change.revision)
    }
}

impl Feed for SseFeed {
    type Event = Bytes;

    fn opening(&mut self) -> Bytes {
        Bytes::from(self.opening.take().unwrap_or_default())
    }

    fn heartbeat(&mut self) -> Bytes {
        match self.style {
            Style::Ofrep => Bytes::from_static(b": keep-alive\n\n"),
            Style::Generic => {
                let data = json!({ "kind": "heartbeat", "revision": self.last_revision });
                Bytes::from(format!("event: heartbeat\ndata: {data}\n\n"))
            }
        }
    }

    fn wants(&mut self, change: &ChangeEvent) -> bool {
        if change.revision == self.last_revision || self.seen.contains(&change.revision) {
            return false;
        }
        self.seen.clear();
        self.last_revision.clone_from(&change.revision);
        match self.style {
            Style::Generic => true,
            Style::Ofrep => self.touches(change),
        }
    }

    fn change(&mut self, change: &ChangeEvent) -> Bytes {
        Bytes::from(match self.style {
            Style::Generic => self.change_event(change),
            Style::Ofrep => self.refetch(&change.revision),
        })
    }

    fn resync(&mut self, state: &AppState) -> Option<Bytes> {
        self.last_revision = state.revision()?;
        Some(Bytes::from(match self.style {
            Style::Generic => self.current(&self.last_revision),
            Style::Ofrep => self.refetch(&self.last_revision),
        }))
    }

    fn closing(&mut self) -> Option<Bytes> {
        None
    }
}
