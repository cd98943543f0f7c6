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

use prost_types::value::Kind;
use prost_types::{Struct, Value as PValue};
use tokio_stream::Stream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use vexil_core::diff::FlagRef;
use vexil_core::snapshot::{FlagType, Value};
use vexil_core::{ChangeEvent, DEFAULT_NAMESPACE, Reason};

use crate::context;
use crate::convert;
use crate::evaluation::Error;
use crate::pump::{self, Feed, Pace};
use crate::state::AppState;

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
    fn flag_type(self) -> FlagType {
        match self {
            Want::Bool => FlagType::Boolean,
            Want::String => FlagType::String,
            Want::Float => FlagType::Float,
            Want::Int => FlagType::Integer,
            Want::Object => FlagType::Object,
        }
    }
}

/// Every core error as a gRPC status: vexil.v1's wording, without its pointer to the Status
/// call (flagd clients have none). Refusals for tokens are the gate's, before this front.
fn status(e: Error) -> Status {
    match e {
        Error::NoSnapshot => Status::unavailable(e.to_string()),
        e => crate::grpc::status(e),
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

    fn resolve(
        &self,
        meta: &MetadataMap,
        key: &str,
        context: Option<Struct>,
        want: Want,
    ) -> Result<Answer, Status> {
        self.resolve_inner(meta, key, context, want).map_err(status)
    }

    fn resolve_inner(
        &self,
        meta: &MetadataMap,
        key: &str,
        context: Option<Struct>,
        want: Want,
    ) -> Result<Answer, Error> {
        let current = self.state.current();
        let served = current.served()?;
        let ctx = context::from_struct(context, &self.state.options.limits)?;
        let ns_name = namespace(meta);
        let (found, eval) = served.evaluate(&ns_name, key, Some(want.flag_type()), &ctx)?;
        let value = match (want, &eval.variant.value) {
            // An integer flag read as a float.
            (Want::Float, Value::Integer(i)) => Value::Float(*i as f64),
            (_, v) => v.clone(),
        };
        Ok(Answer {
            value,
            variant: eval.variant.name.to_string(),
            reason: convert::openfeature_reason(eval.reason),
            disabled: eval.reason == Reason::Disabled,
            metadata: metadata(&ns_name, found.flag),
        })
    }
}

/// `flagSetId` and the flag's scalar metadata (OpenFeature metadata values are scalars:
/// nested ones are left out).
fn metadata(namespace: &str, flag: &vexil_core::Flag) -> Struct {
    let mut metadata = Struct::default();
    metadata.fields.insert(
        "flagSetId".into(),
        PValue {
            kind: Some(Kind::StringValue(namespace.to_owned())),
        },
    );
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
    metadata
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

/// What an EventStream says: `provider_ready` once a snapshot is served, a
/// `configuration_change` naming the flags written, updated and deleted by each swap that
/// touches the stream's namespace (every namespace for streams opened without a selector: Node's
/// provider opens its stream without one even when its Resolve calls carry one, and an extra
/// eviction is harmless), `keep_alive`, and `provider_shutdown`.
struct FlagdFeed {
    namespace: Option<String>,
    /// What this client may have cached: the flags of the snapshot it last synced to (a shared
    /// key list, not the snapshot) plus those added since. After falling behind, the ones gone
    /// are named as deleted.
    known: Option<Arc<[FlagRef]>>,
    added_since: BTreeSet<FlagRef>,
}

impl FlagdFeed {
    fn in_scope(&self, r: &FlagRef) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| *r.namespace == *ns)
    }
}

fn served_keys(state: &AppState) -> Option<Arc<[FlagRef]>> {
    let current = state.current();
    current.served().ok().map(|s| Arc::clone(&s.derived.keys))
}

impl Feed for FlagdFeed {
    type Event = Event;

    fn opening(&mut self) -> Event {
        ("provider_ready", Struct::default())
    }

    fn heartbeat(&mut self) -> Event {
        ("keep_alive", Struct::default())
    }

    fn wants(&mut self, change: &ChangeEvent) -> bool {
        // A set: a key added and removed over and over is kept once.
        let added: Vec<FlagRef> = change
            .changes
            .added
            .iter()
            .filter(|r| self.in_scope(r))
            .cloned()
            .collect();
        self.added_since.extend(added);
        let lists = [
            &change.changes.added,
            &change.changes.changed,
            &change.changes.removed,
        ];
        lists
            .iter()
            .any(|refs| refs.iter().any(|r| self.in_scope(r)))
    }

    fn change(&mut self, change: &ChangeEvent) -> Event {
        let lists = [
            (&change.changes.added, "write"),
            (&change.changes.changed, "update"),
            (&change.changes.removed, "delete"),
        ];
        let entries: Vec<(String, &'static str)> = lists
            .into_iter()
            .flat_map(|(refs, kind)| {
                refs.iter()
                    .filter(|r| self.in_scope(r))
                    .map(move |r| (r.key.to_string(), kind))
            })
            .collect();
        ("configuration_change", flags_data(entries))
    }

    fn resync(&mut self, state: &AppState) -> Option<Event> {
        // Fell behind: every flag may have changed, and some may be gone.
        let current = served_keys(state);
        let now: BTreeSet<&FlagRef> = current
            .iter()
            .flat_map(|k| k.iter())
            .filter(|r| self.in_scope(r))
            .collect();
        let before: BTreeSet<&FlagRef> = self
            .known
            .iter()
            .flat_map(|k| k.iter())
            .chain(&self.added_since)
            .filter(|r| self.in_scope(r))
            .collect();
        let entries = now
            .iter()
            .map(|r| (r.key.to_string(), "update"))
            .chain(
                before
                    .difference(&now)
                    .map(|r| (r.key.to_string(), "delete")),
            )
            .collect::<Vec<_>>();
        let event = ("configuration_change", flags_data(entries));
        self.known = current;
        self.added_since.clear();
        Some(event)
    }

    fn closing(&mut self) -> Option<Event> {
        Some(("provider_shutdown", Struct::default()))
    }
}

fn open_stream<T: Send + 'static>(
    state: &Arc<AppState>,
    meta: &MetadataMap,
    wrap: fn(Event) -> T,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>> {
    let events = state.events.subscribe();
    let feed = FlagdFeed {
        namespace: selected(meta),
        known: served_keys(state),
        added_since: BTreeSet::new(),
    };
    let pace = Pace {
        heartbeat: state.options.flagd_keep_alive,
        wait_ready: true,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(pump::STREAM_BUFFER);
    tokio::spawn(pump::pump(Arc::clone(state), events, feed, pace, tx));
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
        let current = self.state.current();
        let served = current.served().map_err(status)?;
        let ns_name = namespace(&meta);
        let ctx = context::from_struct(r.context, &self.state.options.limits).map_err(status)?;
        let mut out = v1::ResolveAllResponse::default();
        // As flagd does, disabled flags are left out (the client uses its code default).
        served
            .evaluate_all(
                &ns_name,
                &ctx,
                |f| f.enabled,
                |found, eval| {
                    let value = match &eval.variant.value {
                        Value::Bool(b) => v1::any_flag::Value::BoolValue(*b),
                        Value::String(s) => v1::any_flag::Value::StringValue(s.to_string()),
                        Value::Integer(i) => v1::any_flag::Value::DoubleValue(*i as f64),
                        Value::Float(f) => v1::any_flag::Value::DoubleValue(*f),
                        Value::Object(o) => {
                            v1::any_flag::Value::ObjectValue(convert::json_struct(o))
                        }
                    };
                    out.flags.insert(
                        found.flag.key.to_string(),
                        v1::AnyFlag {
                            reason: convert::openfeature_reason(eval.reason).to_owned(),
                            variant: eval.variant.name.to_string(),
                            value: Some(value),
                            metadata: None,
                        },
                    );
                },
            )
            .map_err(status)?;
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
