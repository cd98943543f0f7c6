//! flagd's gRPC evaluation API (`flagd.evaluation.v2.Service` and `v1`, which adds ResolveAll),
//! so that unchanged OpenFeature flagd providers can use Vexil.
//!
//! - The namespace comes from the `flagd-selector` metadata (`flagSetId=<ns>`, `source=<ns>` or
//!   a bare `<ns>`); the default namespace otherwise.
//! - Types: each Resolve call wants its type; an integer flag may be resolved as a float (its
//!   value converted), nothing else crosses types (INVALID_ARGUMENT).
//! - Reasons: STATIC only for flags whose answer cannot depend on the context (no rules), since
//!   clients cache those; TARGETING_MATCH for any rule (splits and rollouts included); DEFAULT;
//!   DISABLED (v2 then leaves value and variant out, so the client uses its code default).
//! - EventStream: `provider_ready` at once, `configuration_change` naming the flags written,
//!   updated and deleted by each swap that changes flags of the namespace, `keep_alive` after
//!   20 s of silence, `provider_shutdown` on shutdown.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use prost_types::value::Kind;
use prost_types::{Struct, Value as PValue};
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use vexil_core::diff::FlagRef;
use vexil_core::snapshot::{FlagType, Value};
use vexil_core::{DEFAULT_NAMESPACE, Reason};

use crate::convert;
use crate::metrics::Method;
use crate::state::{AppState, Served};
use crate::streams::{self, Delivery};

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    unreachable_pub
)]
pub mod v1 {
    tonic::include_proto!("flagd.evaluation.v1");
}

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    unreachable_pub
)]
pub mod v2 {
    tonic::include_proto!("flagd.evaluation.v2");
}

#[derive(Debug, Clone, Copy)]
enum Want {
    Bool,
    String,
    Float,
    Int,
    Object,
}

impl Want {
    fn accepts(self, t: FlagType) -> bool {
        matches!(
            (self, t),
            (Want::Bool, FlagType::Boolean)
                | (Want::String, FlagType::String)
                | (Want::Float, FlagType::Float | FlagType::Integer)
                | (Want::Int, FlagType::Integer)
                | (Want::Object, FlagType::Object)
        )
    }

    fn name(self) -> &'static str {
        match self {
            Want::Bool => "boolean",
            Want::String => "string",
            Want::Float => "float",
            Want::Int => "integer",
            Want::Object => "object",
        }
    }
}

/// One resolution, owned (the response needs owned values anyway).
struct Answer {
    value: Value,
    variant: String,
    reason: &'static str,
    disabled: bool,
    metadata: Struct,
}

/// The flag service; both API versions share it.
#[derive(Debug, Clone)]
pub struct FlagdApi {
    state: Arc<AppState>,
}

impl FlagdApi {
    pub fn new(state: Arc<AppState>) -> FlagdApi {
        FlagdApi { state }
    }

    fn served(&self) -> Result<Arc<Served>, Status> {
        self.state
            .served()
            .ok_or_else(|| Status::unavailable("no valid flag snapshot loaded yet"))
    }

    fn resolve(
        &self,
        meta: &MetadataMap,
        key: &str,
        context: Option<Struct>,
        want: Want,
    ) -> Result<Answer, Status> {
        let start = Instant::now();
        let result = self.resolve_inner(meta, key, context, want);
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.state
            .metrics
            .observe(Method::FlagdResolve, start.elapsed(), code);
        result
    }

    fn resolve_inner(
        &self,
        meta: &MetadataMap,
        key: &str,
        context: Option<Struct>,
        want: Want,
    ) -> Result<Answer, Status> {
        let served = self.served()?;
        let ctx = convert::struct_context(context, &self.state.options.limits)?;
        let ns_name = namespace(meta);
        let snapshot = &served.snapshot;
        let ni = snapshot
            .namespace_position(&ns_name)
            .ok_or_else(|| Status::not_found(format!("flag set `{ns_name}` not found")))?;
        let ns = snapshot
            .namespaces()
            .get(ni)
            // Unreachable on a compiled snapshot (positions come from its own index).
            .ok_or_else(|| Status::data_loss("the snapshot's namespace index is inconsistent"))?;
        let (fi, flag) = ns
            .flag_position(key)
            .and_then(|i| ns.flags.get(i).map(|f| (i, f)))
            .ok_or_else(|| {
                Status::not_found(format!("flag `{key}` not found in flag set `{ns_name}`"))
            })?;
        if !want.accepts(flag.flag_type) {
            return Err(Status::invalid_argument(format!(
                "flag `{key}` is {}, not {}",
                flag.flag_type.as_str(),
                want.name()
            )));
        }
        let eval = ns.evaluate_flag(flag, &ctx);
        served.counters.record(ni, fi, eval.reason);
        let value = match (want, &eval.variant.value) {
            // An integer flag read as a float.
            (Want::Float, Value::Integer(i)) => Value::Float(*i as f64),
            (_, v) => v.clone(),
        };
        let mut metadata = Struct::default();
        metadata.fields.insert(
            "flagSetId".into(),
            PValue {
                kind: Some(Kind::StringValue(ns_name.clone())),
            },
        );
        // OpenFeature metadata values are scalars: nested ones are left out.
        for (k, v) in &flag.metadata {
            let scalar = matches!(
                v,
                serde_json::Value::Bool(_)
                    | serde_json::Value::Number(_)
                    | serde_json::Value::String(_)
            );
            if scalar {
                metadata.fields.insert(k.clone(), convert::json_value(v));
            }
        }
        Ok(Answer {
            value,
            variant: eval.variant.name.to_string(),
            reason: convert::openfeature_reason(eval.reason),
            disabled: eval.reason == Reason::Disabled,
            metadata,
        })
    }
}

/// The namespace a `flagd-selector` names (`flagSetId=x`, `source=x` or `x`), if any.
fn selected(meta: &MetadataMap) -> Option<String> {
    let selector = meta
        .get("flagd-selector")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("");
    let value = selector.split_once('=').map_or(selector, |(_, v)| v).trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// The namespace a call evaluates in: the selected one, else `default`.
fn namespace(meta: &MetadataMap) -> String {
    selected(meta).unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

fn bool_of(v: &Value) -> bool {
    matches!(v, Value::Bool(true))
}

fn string_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        _ => String::new(),
    }
}

fn float_of(v: &Value) -> f64 {
    match v {
        Value::Float(f) => *f,
        Value::Integer(i) => *i as f64,
        _ => 0.0,
    }
}

fn int_of(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        _ => 0,
    }
}

fn object_of(v: &Value) -> Struct {
    match v {
        Value::Object(o) => convert::json_struct(o),
        _ => Struct::default(),
    }
}

/// What an EventStream sends: (type, data).
type Event = (&'static str, Struct);

/// `data.flags.{key}.type` for a change event, for the stream's namespace (`None`: every
/// namespace, for streams opened without a selector: Node's provider opens its stream without
/// one even when its Resolve calls carry one, and an extra eviction is harmless).
fn change_data(change: &vexil_core::ChangeEvent, namespace: Option<&str>) -> Option<Struct> {
    let lists = [
        (&change.changes.added, "write"),
        (&change.changes.changed, "update"),
        (&change.changes.removed, "delete"),
    ];
    let entries: Vec<(String, &'static str)> = lists
        .into_iter()
        .flat_map(|(refs, kind)| {
            refs.iter()
                .filter(|r| namespace.is_none_or(|ns| *r.namespace == *ns))
                .map(move |r| (r.key.to_string(), kind))
        })
        .collect();
    (!entries.is_empty()).then(|| flags_data(entries))
}

fn flags_data(entries: impl IntoIterator<Item = (String, &'static str)>) -> Struct {
    let mut flags = Struct::default();
    for (key, kind) in entries {
        let mut entry = Struct::default();
        entry.fields.insert(
            "type".into(),
            PValue {
                kind: Some(Kind::StringValue(kind.into())),
            },
        );
        flags.fields.insert(
            key,
            PValue {
                kind: Some(Kind::StructValue(entry)),
            },
        );
    }
    let mut data = Struct::default();
    data.fields.insert(
        "flags".into(),
        PValue {
            kind: Some(Kind::StructValue(flags)),
        },
    );
    data
}

/// The next event of an EventStream: a change stays the shared broadcast event until the
/// stream has room for it (see `streams`).
enum PendingEvent {
    Ready(Event),
    Change(Arc<vexil_core::ChangeEvent>),
}

/// Feeds one EventStream until the client leaves, stops reading, or the server shuts down.
async fn event_loop(
    state: Arc<AppState>,
    namespace: Option<String>,
    tx: tokio::sync::mpsc::Sender<Event>,
) {
    let mut events = state.events.subscribe();
    let mut shutdown = state.shutdown.subscribe();
    let mut ready = state.ready.subscribe();
    let keep_alive = state.options.flagd_keep_alive;
    let stall = state.options.stalled_stream_timeout;
    // Ready only once something can be served (resolutions fail before that).
    tokio::select! {
        _ = shutdown.wait_for(|d| *d) => return,
        () = tx.closed() => return,
        r = ready.wait_for(|r| *r) => if r.is_err() { return },
    }
    // What this client may have cached: the flags of the snapshot it last synced to (a shared
    // key list, not the snapshot) plus those added since. After falling behind, the ones gone
    // are named as deleted.
    let mut known = state.served().map(|s| Arc::clone(&s.keys));
    let mut added_since: BTreeSet<FlagRef> = BTreeSet::new();
    let in_scope = |r: &&FlagRef| namespace.as_deref().is_none_or(|ns| *r.namespace == *ns);
    let mut pending = Some(PendingEvent::Ready(("provider_ready", Struct::default())));
    let mut next_beat = tokio::time::Instant::now() + keep_alive;
    loop {
        if let Some(event) = pending.take() {
            let make = || match event {
                PendingEvent::Ready(event) => event,
                PendingEvent::Change(change) => (
                    "configuration_change",
                    change_data(&change, namespace.as_deref()).unwrap_or_default(),
                ),
            };
            match streams::deliver(&tx, make, &mut shutdown, stall).await {
                Delivery::Sent => {}
                Delivery::ShuttingDown => break,
                Delivery::Stalled => return state.metrics.stream_stalled(),
                Delivery::Gone => return,
            }
            next_beat = tokio::time::Instant::now() + keep_alive;
            continue;
        }
        tokio::select! {
            _ = shutdown.wait_for(|d| *d) => break,
            () = tx.closed() => return,
            () = tokio::time::sleep_until(next_beat) => {
                pending = Some(PendingEvent::Ready(("keep_alive", Struct::default())));
            }
            received = events.recv() => match received {
                Ok(change) => {
                    // A set: a key added and removed over and over is kept once.
                    added_since.extend(change.changes.added.iter().filter(in_scope).cloned());
                    let lists = [&change.changes.added, &change.changes.changed, &change.changes.removed];
                    if lists.iter().any(|refs| refs.iter().any(|r| in_scope(&r))) {
                        pending = Some(PendingEvent::Change(change));
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // Fell behind: every flag may have changed, and some may be gone.
                    events = events.resubscribe();
                    let current = state.served().map(|s| Arc::clone(&s.keys));
                    let now: BTreeSet<&FlagRef> =
                        current.iter().flat_map(|k| k.iter()).filter(in_scope).collect();
                    let before: BTreeSet<&FlagRef> = known
                        .iter()
                        .flat_map(|k| k.iter())
                        .chain(&added_since)
                        .filter(in_scope)
                        .collect();
                    let entries = now
                        .iter()
                        .map(|r| (r.key.to_string(), "update"))
                        .chain(before.difference(&now).map(|r| (r.key.to_string(), "delete")))
                        .collect::<Vec<_>>();
                    pending = Some(PendingEvent::Ready(("configuration_change", flags_data(entries))));
                    known = current;
                    added_since.clear();
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
    // Shutting down: say so, waiting a little for a slow client but not forever.
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        tx.send(("provider_shutdown", Struct::default())),
    )
    .await;
}

fn open_stream<T: Send + 'static>(
    state: &Arc<AppState>,
    meta: &MetadataMap,
    wrap: fn(Event) -> T,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(streams::STREAM_BUFFER);
    tokio::spawn(event_loop(Arc::clone(state), selected(meta), tx));
    Box::pin(tokio_stream::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        move |e| Ok(wrap(e)),
    ))
}

type V2Stream = Pin<Box<dyn Stream<Item = Result<v2::EventStreamResponse, Status>> + Send>>;
type V1Stream = Pin<Box<dyn Stream<Item = Result<v1::EventStreamResponse, Status>> + Send>>;

impl FlagdApi {
    /// A v2 answer: value and variant left out for a disabled flag.
    fn v2<T, R>(
        &self,
        meta: &MetadataMap,
        key: &str,
        context: Option<Struct>,
        want: Want,
        conv: fn(&Value) -> T,
        build: fn(Option<T>, &str, Option<String>, Struct) -> R,
    ) -> Result<Response<R>, Status> {
        let a = self.resolve(meta, key, context, want)?;
        let (value, variant) = if a.disabled {
            (None, None)
        } else {
            (Some(conv(&a.value)), Some(a.variant))
        };
        Ok(Response::new(build(value, a.reason, variant, a.metadata)))
    }

    fn v1<T, R>(
        &self,
        meta: &MetadataMap,
        key: &str,
        context: Option<Struct>,
        want: Want,
        conv: fn(&Value) -> T,
        build: fn(T, &str, String, Struct) -> R,
    ) -> Result<Response<R>, Status> {
        let a = self.resolve(meta, key, context, want)?;
        Ok(Response::new(build(
            conv(&a.value),
            a.reason,
            a.variant,
            a.metadata,
        )))
    }
}

fn some_object_of(v: &Value) -> Option<Struct> {
    Some(object_of(v))
}

macro_rules! parts {
    ($module:ident, $($resp:ident : $t:ty),*) => {
        $(impl $module::$resp {
            fn from_parts(value: $t, reason: &str, variant: <Self as Variant>::V, metadata: Struct) -> Self {
                $module::$resp {
                    value,
                    reason: reason.to_owned(),
                    variant,
                    metadata: Some(metadata),
                }
            }
        })*
    };
}

/// The variant field's type: `Option<String>` in v2 (explicit presence), `String` in v1.
trait Variant {
    type V;
}

macro_rules! variant_type {
    ($module:ident, $v:ty, $($resp:ident),*) => {
        $(impl Variant for $module::$resp { type V = $v; })*
    };
}

variant_type!(
    v2,
    Option<String>,
    ResolveBooleanResponse,
    ResolveStringResponse,
    ResolveFloatResponse,
    ResolveIntResponse,
    ResolveObjectResponse
);
variant_type!(
    v1,
    String,
    ResolveBooleanResponse,
    ResolveStringResponse,
    ResolveFloatResponse,
    ResolveIntResponse,
    ResolveObjectResponse
);

parts!(v2, ResolveBooleanResponse: Option<bool>, ResolveStringResponse: Option<String>, ResolveFloatResponse: Option<f64>, ResolveIntResponse: Option<i64>, ResolveObjectResponse: Option<Struct>);
parts!(v1, ResolveBooleanResponse: bool, ResolveStringResponse: String, ResolveFloatResponse: f64, ResolveIntResponse: i64, ResolveObjectResponse: Option<Struct>);

#[tonic::async_trait]
impl v2::service_server::Service for FlagdApi {
    async fn resolve_boolean(
        &self,
        request: Request<v2::ResolveBooleanRequest>,
    ) -> Result<Response<v2::ResolveBooleanResponse>, Status> {
        let (meta, _, r) = request.into_parts();
        self.v2(
            &meta,
            &r.flag_key,
            r.context,
            Want::Bool,
            bool_of,
            v2::ResolveBooleanResponse::from_parts,
        )
    }

    async fn resolve_string(
        &self,
        request: Request<v2::ResolveStringRequest>,
    ) -> Result<Response<v2::ResolveStringResponse>, Status> {
        let (meta, _, r) = request.into_parts();
        self.v2(
            &meta,
            &r.flag_key,
            r.context,
            Want::String,
            string_of,
            v2::ResolveStringResponse::from_parts,
        )
    }

    async fn resolve_float(
        &self,
        request: Request<v2::ResolveFloatRequest>,
    ) -> Result<Response<v2::ResolveFloatResponse>, Status> {
        let (meta, _, r) = request.into_parts();
        self.v2(
            &meta,
            &r.flag_key,
            r.context,
            Want::Float,
            float_of,
            v2::ResolveFloatResponse::from_parts,
        )
    }

    async fn resolve_int(
        &self,
        request: Request<v2::ResolveIntRequest>,
    ) -> Result<Response<v2::ResolveIntResponse>, Status> {
        let (meta, _, r) = request.into_parts();
        self.v2(
            &meta,
            &r.flag_key,
            r.context,
            Want::Int,
            int_of,
            v2::ResolveIntResponse::from_parts,
        )
    }

    async fn resolve_object(
        &self,
        request: Request<v2::ResolveObjectRequest>,
    ) -> Result<Response<v2::ResolveObjectResponse>, Status> {
        let (meta, _, r) = request.into_parts();
        self.v2(
            &meta,
            &r.flag_key,
            r.context,
            Want::Object,
            object_of,
            v2::ResolveObjectResponse::from_parts,
        )
    }

    type EventStreamStream = V2Stream;

    async fn event_stream(
        &self,
        request: Request<v2::EventStreamRequest>,
    ) -> Result<Response<V2Stream>, Status> {
        Ok(Response::new(open_stream(
            &self.state,
            request.metadata(),
            |(t, data)| v2::EventStreamResponse {
                r#type: t.to_owned(),
                data: Some(data),
            },
        )))
    }
}

#[tonic::async_trait]
impl v1::service_server::Service for FlagdApi {
    async fn resolve_boolean(
        &self,
        request: Request<v1::ResolveBooleanRequest>,
    ) -> Result<Response<v1::ResolveBooleanResponse>, Status> {
        let (meta, _, r) = request.into_parts();
        self.v1(
            &meta,
            &r.flag_key,
            r.context,
            Want::Bool,
            bool_of,
            v1::ResolveBooleanResponse::from_parts,
        )
    }

    async fn resolve_string(
        &self,
        request: Request<v1::ResolveStringRequest>,
    ) -> Result<Response<v1::ResolveStringResponse>, Status> {
        let (meta, _, r) = request.into_parts();
        self.v1(
            &meta,
            &r.flag_key,
            r.context,
            Want::String,
            string_of,
            v1::ResolveStringResponse::from_parts,
        )
    }

    async fn resolve_float(
        &self,
        request: Request<v1::ResolveFloatRequest>,
    ) -> Result<Response<v1::ResolveFloatResponse>, Status> {
        let (meta, _, r) = request.into_parts();
        self.v1(
            &meta,
            &r.flag_key,
            r.context,
            Want::Float,
            float_of,
            v1::ResolveFloatResponse::from_parts,
        )
    }

    async fn resolve_int(
        &self,
        request: Request<v1::ResolveIntRequest>,
    ) -> Result<Response<v1::ResolveIntResponse>, Status> {
        let (meta, _, r) = request.into_parts();
        self.v1(
            &meta,
            &r.flag_key,
            r.context,
            Want::Int,
            int_of,
            v1::ResolveIntResponse::from_parts,
        )
    }

    async fn resolve_object(
        &self,
        request: Request<v1::ResolveObjectRequest>,
    ) -> Result<Response<v1::ResolveObjectResponse>, Status> {
        let (meta, _, r) = request.into_parts();
        self.v1(
            &meta,
            &r.flag_key,
            r.context,
            Want::Object,
            some_object_of,
            v1::ResolveObjectResponse::from_parts,
        )
    }

    async fn resolve_all(
        &self,
        request: Request<v1::ResolveAllRequest>,
    ) -> Result<Response<v1::ResolveAllResponse>, Status> {
        let (meta, _, r) = request.into_parts();
        let served = self.served()?;
        let ns_name = namespace(&meta);
        let ns = served
            .snapshot
            .namespace(&ns_name)
            .ok_or_else(|| Status::not_found(format!("flag set `{ns_name}` not found")))?;
        let ctx = convert::struct_context(r.context, &self.state.options.limits)?;
        let start = Instant::now();
        let mut out = v1::ResolveAllResponse::default();
        // As flagd does, disabled flags are left out (the client uses its code default).
        for flag in ns.flags.iter().filter(|f| f.enabled) {
            let eval = ns.evaluate_flag(flag, &ctx);
            let value = match &eval.variant.value {
                Value::Bool(b) => v1::any_flag::Value::BoolValue(*b),
                Value::String(s) => v1::any_flag::Value::StringValue(s.to_string()),
                Value::Integer(i) => v1::any_flag::Value::DoubleValue(*i as f64),
                Value::Float(f) => v1::any_flag::Value::DoubleValue(*f),
                Value::Object(o) => v1::any_flag::Value::ObjectValue(convert::json_struct(o)),
            };
            out.flags.insert(
                flag.key.to_string(),
                v1::AnyFlag {
                    reason: convert::openfeature_reason(eval.reason).to_owned(),
                    variant: eval.variant.name.to_string(),
                    value: Some(value),
                    metadata: None,
                },
            );
        }
        self.state
            .metrics
            .observe(Method::FlagdResolve, start.elapsed(), tonic::Code::Ok);
        Ok(Response::new(out))
    }

    type EventStreamStream = V1Stream;

    async fn event_stream(
        &self,
        request: Request<v1::EventStreamRequest>,
    ) -> Result<Response<V1Stream>, Status> {
        Ok(Response::new(open_stream(
            &self.state,
            request.metadata(),
            |(t, data)| v1::EventStreamResponse {
                r#type: t.to_owned(),
                data: Some(data),
            },
        )))
    }
}
