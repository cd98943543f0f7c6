//! The vexil.v1 FlagService.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use vexil_core::{DEFAULT_NAMESPACE, Namespace};

use crate::convert;
use crate::metrics::Method;
use crate::proto::{self, flag_service_server::FlagService};
use crate::state::{AppState, Served};
use crate::streams::{self, Delivery};

/// Every definition of a snapshot as messages, per namespace (in snapshot order).
#[derive(Debug, Default)]
pub struct Definitions {
    pub namespaces: Vec<(
        Box<str>,
        Vec<proto::FlagDefinition>,
        Vec<proto::SegmentDefinition>,
    )>,
}

impl Definitions {
    fn build(served: &Served) -> Definitions {
        let namespaces = served
            .snapshot
            .namespaces()
            .iter()
            .map(|ns| {
                let flags = ns.flags.iter().map(|f| flag_definition(ns, f)).collect();
                let segments = ns
                    .segments
                    .iter()
                    .map(|s| segment_definition(ns, s))
                    .collect();
                (ns.name.clone(), flags, segments)
            })
            .collect();
        Definitions { namespaces }
    }
}

fn flag_definition(ns: &Namespace, f: &vexil_core::Flag) -> proto::FlagDefinition {
    let metadata = serde_json::Value::Object(
        f.metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    proto::FlagDefinition {
        namespace: ns.name.to_string(),
        key: f.key.to_string(),
        r#type: convert::flag_type(f.flag_type).into(),
        enabled: f.enabled,
        description: f.description.clone().unwrap_or_default(),
        owner: f.owner.clone().unwrap_or_default(),
        tags: f.tags.clone(),
        expires: f.expires.map(|d| d.to_string()).unwrap_or_default(),
        metadata: Some(convert::json_struct(&metadata)),
        definition: Some(convert::json_struct(&vexil_core::export::flag_definition(
            ns, f,
        ))),
        file: f.origin.file.clone(),
        line: f.origin.pos.line,
        r#static: f.is_static(),
    }
}

fn segment_definition(
    ns: &Namespace,
    s: &vexil_core::snapshot::Segment,
) -> proto::SegmentDefinition {
    proto::SegmentDefinition {
        namespace: ns.name.to_string(),
        key: s.key.to_string(),
        description: s.description.clone().unwrap_or_default(),
        definition: Some(convert::json_struct(
            &vexil_core::export::segment_definition(s),
        )),
        file: s.origin.file.clone(),
        line: s.origin.pos.line,
    }
}

/// The service; cheap to clone (it is the shared state).
#[derive(Debug, Clone)]
pub struct FlagApi {
    state: Arc<AppState>,
}

impl FlagApi {
    pub fn new(state: Arc<AppState>) -> FlagApi {
        FlagApi { state }
    }

    fn served(&self) -> Result<Arc<Served>, Status> {
        self.state.served().ok_or_else(|| {
            Status::unavailable("no valid flag snapshot loaded yet: see the Status call")
        })
    }

    fn timed<T>(
        &self,
        method: Method,
        start: Instant,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.state.metrics.observe(method, start.elapsed(), code);
        result
    }

    fn evaluate_inner(&self, r: proto::EvaluateRequest) -> Result<proto::EvaluateResponse, Status> {
        let served = self.served()?;
        let ctx = convert::context(r.context, &self.state.options.limits)?;
        let expected = convert::expected_type(r.expected_type)?;
        let ns_name = namespace_name(&r.namespace);
        let snapshot = &served.snapshot;
        let (ni, ns) = find_namespace(snapshot, ns_name)?;
        let (fi, flag) = ns
            .flag_position(&r.flag)
            .and_then(|i| ns.flags.get(i).map(|f| (i, f)))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "flag `{}` not found in namespace `{ns_name}`",
                    r.flag
                ))
            })?;
        if let Some(expected) = expected {
            if !convert::type_fits(flag.flag_type, expected) {
                return Err(Status::invalid_argument(format!(
                    "flag `{}` is {}, not {}",
                    r.flag,
                    flag.flag_type.as_str(),
                    expected.as_str()
                )));
            }
        }
        let eval = ns.evaluate_flag(flag, &ctx);
        served.counters.record(ni, fi, eval.reason);
        Ok(proto::EvaluateResponse {
            namespace: ns_name.to_owned(),
            flag: r.flag,
            r#type: convert::flag_type(flag.flag_type).into(),
            value: Some(convert::value(&eval.variant.value)),
            variant: eval.variant.name.to_string(),
            reason: convert::reason(eval.reason).into(),
            rule: eval.rule.map(|r| r.name.to_string()).unwrap_or_default(),
            revision: snapshot.revision().to_owned(),
        })
    }

    fn batch_inner(
        &self,
        r: proto::EvaluateBatchRequest,
    ) -> Result<proto::EvaluateBatchResponse, Status> {
        let limits = &self.state.options.limits;
        if r.flags.len() > limits.max_batch {
            return Err(Status::invalid_argument(format!(
                "{} flags asked; a batch may name at most {}",
                r.flags.len(),
                limits.max_batch
            )));
        }
        let served = self.served()?;
        let ctx = convert::context(r.context, limits)?;
        let ns_name = namespace_name(&r.namespace);
        let (ni, ns) = find_namespace(&served.snapshot, ns_name)?;
        let item = |fi: usize, flag: &vexil_core::Flag| {
            let eval = ns.evaluate_flag(flag, &ctx);
            served.counters.record(ni, fi, eval.reason);
            proto::BatchItem {
                flag: flag.key.to_string(),
                r#type: convert::flag_type(flag.flag_type).into(),
                value: Some(convert::value(&eval.variant.value)),
                variant: eval.variant.name.to_string(),
                reason: convert::reason(eval.reason).into(),
                rule: eval.rule.map(|r| r.name.to_string()).unwrap_or_default(),
                ..Default::default()
            }
        };
        let items: Vec<proto::BatchItem> = if r.flags.is_empty() {
            ns.flags
                .iter()
                .enumerate()
                .map(|(i, f)| item(i, f))
                .collect()
        } else {
            r.flags
                .into_iter()
                .map(|key| {
                    match ns
                        .flag_position(&key)
                        .and_then(|i| Some((i, ns.flags.get(i)?)))
                    {
                        Some((i, f)) => item(i, f),
                        None => proto::BatchItem {
                            error: proto::ErrorCode::FlagNotFound.into(),
                            error_message: format!(
                                "flag `{key}` not found in namespace `{ns_name}`"
                            ),
                            flag: key,
                            ..Default::default()
                        },
                    }
                })
                .collect()
        };
        self.state.metrics.batch_items(items.len());
        Ok(proto::EvaluateBatchResponse {
            namespace: ns_name.to_owned(),
            revision: served.snapshot.revision().to_owned(),
            items,
        })
    }

    fn list_inner(&self, r: proto::ListFlagsRequest) -> Result<proto::ListFlagsResponse, Status> {
        let served = self.served()?;
        let defs = served
            .definitions
            .get_or_init(|| Definitions::build(&served));
        if !r.namespace.is_empty() {
            find_namespace(&served.snapshot, &r.namespace)?;
        }
        let mut out = proto::ListFlagsResponse {
            revision: served.snapshot.revision().to_owned(),
            ..Default::default()
        };
        for (name, flags, segments) in &defs.namespaces {
            if r.namespace.is_empty() || **name == *r.namespace {
                out.flags.extend(flags.iter().cloned());
                out.segments.extend(segments.iter().cloned());
            }
        }
        Ok(out)
    }

    fn get_inner(&self, r: proto::GetFlagRequest) -> Result<proto::GetFlagResponse, Status> {
        let served = self.served()?;
        let ns_name = namespace_name(&r.namespace);
        let (ni, ns) = find_namespace(&served.snapshot, ns_name)?;
        let fi = ns.flag_position(&r.flag).ok_or_else(|| {
            Status::not_found(format!(
                "flag `{}` not found in namespace `{ns_name}`",
                r.flag
            ))
        })?;
        let defs = served
            .definitions
            .get_or_init(|| Definitions::build(&served));
        let (_, flags, segments) = defs
            .namespaces
            .get(ni)
            .ok_or_else(|| Status::internal("definitions out of step with the snapshot"))?;
        let flag = flags.get(fi).cloned();
        // The segments its rules use, each once, in namespace order.
        let mut used = vec![false; ns.segments.len()];
        for rule in ns
            .flags
            .get(fi)
            .map(|f| f.rules.as_slice())
            .unwrap_or_default()
        {
            for m in &rule.matchers {
                if let vexil_core::snapshot::Matcher::Segments(_, indices) = m {
                    for &i in indices {
                        if let Some(u) = used.get_mut(i) {
                            *u = true;
                        }
                    }
                }
            }
        }
        Ok(proto::GetFlagResponse {
            revision: served.snapshot.revision().to_owned(),
            flag,
            segments: segments
                .iter()
                .zip(used)
                .filter(|(_, u)| *u)
                .map(|(s, _)| s.clone())
                .collect(),
        })
    }
}

fn namespace_name(requested: &str) -> &str {
    if requested.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        requested
    }
}

fn find_namespace<'s>(
    snapshot: &'s vexil_core::Snapshot,
    name: &str,
) -> Result<(usize, &'s Namespace), Status> {
    snapshot
        .namespace_position(name)
        .and_then(|i| snapshot.namespaces().get(i).map(|ns| (i, ns)))
        .ok_or_else(|| Status::not_found(format!("namespace `{name}` not found")))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<proto::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl FlagService for FlagApi {
    async fn evaluate(
        &self,
        request: Request<proto::EvaluateRequest>,
    ) -> Result<Response<proto::EvaluateResponse>, Status> {
        let start = Instant::now();
        let result = self.evaluate_inner(request.into_inner());
        self.timed(Method::Evaluate, start, result)
            .map(Response::new)
    }

    async fn evaluate_batch(
        &self,
        request: Request<proto::EvaluateBatchRequest>,
    ) -> Result<Response<proto::EvaluateBatchResponse>, Status> {
        let start = Instant::now();
        let result = self.batch_inner(request.into_inner());
        self.timed(Method::EvaluateBatch, start, result)
            .map(Response::new)
    }

    async fn list_flags(
        &self,
        request: Request<proto::ListFlagsRequest>,
    ) -> Result<Response<proto::ListFlagsResponse>, Status> {
        let start = Instant::now();
        let result = self.list_inner(request.into_inner());
        self.timed(Method::ListFlags, start, result)
            .map(Response::new)
    }

    async fn get_flag(
        &self,
        request: Request<proto::GetFlagRequest>,
    ) -> Result<Response<proto::GetFlagResponse>, Status> {
        let start = Instant::now();
        let result = self.get_inner(request.into_inner());
        self.timed(Method::GetFlag, start, result)
            .map(Response::new)
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<proto::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let start = Instant::now();
        let namespace = request.into_inner().namespace;
        // Subscribe before reading the revision: no swap can fall between the two.
        let events = self.state.events.subscribe();
        let result = self.served().map(|served| {
            let first = current_event(&served);
            let (tx, rx) = tokio::sync::mpsc::channel(streams::STREAM_BUFFER);
            tokio::spawn(watch_loop(
                Arc::clone(&self.state),
                namespace,
                events,
                first,
                tx,
            ));
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as WatchStream
        });
        self.timed(Method::Watch, start, result).map(Response::new)
    }

    async fn reload(
        &self,
        _request: Request<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        let start = Instant::now();
        // The reloader answers through a callback: a caller that gives up holds no thread.
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.state.reloader.reload_then(move |attempt| {
            let _ = reply.send(attempt);
        });
        let max = self.state.options.max_status_diagnostics;
        let result = match tokio::time::timeout(self.state.options.reload_timeout, outcome).await {
            Ok(Ok(attempt)) => Ok(proto::ReloadResponse {
                attempt: Some(convert::attempt(&attempt, max)),
            }),
            Ok(Err(_)) => Err(Status::unavailable("the reloader has stopped")),
            Err(_) => Err(Status::deadline_exceeded(
                "the reload is still running (it will finish in the background)",
            )),
        };
        self.timed(Method::Reload, start, result).map(Response::new)
    }

    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let start = Instant::now();
        let problem = self.state.reader_health().err();
        let max = self.state.options.max_status_diagnostics;
        let result = Ok(self
            .state
            .live
            .inspect(|status| convert::status(status, max, problem)));
        self.timed(Method::Status, start, result).map(Response::new)
    }
}

fn current_event(served: &Served) -> proto::WatchEvent {
    proto::WatchEvent {
        kind: proto::watch_event::Kind::Current.into(),
        revision: served.snapshot.revision().to_owned(),
        ..Default::default()
    }
}

/// The next event of a Watch stream: a change stays the shared broadcast event until the
/// stream has room for it (see `streams`).
enum Pending {
    Ready(proto::WatchEvent),
    Change(Arc<vexil_core::ChangeEvent>),
}

/// Feeds one Watch stream until the client goes away, stops reading, or the server shuts down:
/// every swap in order (as CHANGE, with the keys of the watched namespace), a heartbeat after
/// `heartbeat` of silence, and CURRENT again if the stream fell too far behind (the client
/// resyncs).
async fn watch_loop(
    state: Arc<AppState>,
    namespace: String,
    mut events: tokio::sync::broadcast::Receiver<Arc<vexil_core::ChangeEvent>>,
    first: proto::WatchEvent,
    tx: tokio::sync::mpsc::Sender<Result<proto::WatchEvent, Status>>,
) {
    let mut shutdown = state.shutdown.subscribe();
    let heartbeat = state.options.heartbeat;
    let stall = state.options.stalled_stream_timeout;
    let mut last_revision = first.revision.clone();
    let mut pending = Some(Pending::Ready(first));
    let mut next_beat = tokio::time::Instant::now() + heartbeat;
    loop {
        if let Some(event) = pending.take() {
            let make = || {
                Ok(match event {
                    Pending::Ready(event) => event,
                    Pending::Change(change) => change_event(&change, &namespace),
                })
            };
            match streams::deliver(&tx, make, &mut shutdown, stall).await {
                Delivery::Sent => {}
                Delivery::Stalled => return state.metrics.stream_stalled(),
                Delivery::Gone | Delivery::ShuttingDown => return,
            }
            next_beat = tokio::time::Instant::now() + heartbeat;
            continue;
        }
        tokio::select! {
            _ = shutdown.wait_for(|down| *down) => return,
            () = tx.closed() => return,
            () = tokio::time::sleep_until(next_beat) => {
                pending = Some(Pending::Ready(proto::WatchEvent {
                    kind: proto::watch_event::Kind::Heartbeat.into(),
                    revision: last_revision.clone(),
                    ..Default::default()
                }));
            }
            received = events.recv() => match received {
                // Already reported (the revision read when the stream opened or resynced).
                Ok(change) if change.revision == last_revision => {}
                Ok(change) => {
                    last_revision.clone_from(&change.revision);
                    pending = Some(Pending::Change(change));
                }
                Err(RecvError::Lagged(_)) => {
                    events = events.resubscribe();
                    if let Some(served) = state.served() {
                        let current = current_event(&served);
                        last_revision.clone_from(&current.revision);
                        pending = Some(Pending::Ready(current));
                    }
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}

fn change_event(change: &vexil_core::ChangeEvent, namespace: &str) -> proto::WatchEvent {
    let keep = |r: &&vexil_core::diff::FlagRef| namespace.is_empty() || *r.namespace == *namespace;
    let pick = |refs: &[vexil_core::diff::FlagRef]| -> Vec<proto::FlagKey> {
        refs.iter().filter(keep).map(convert::flag_key).collect()
    };
    proto::WatchEvent {
        kind: proto::watch_event::Kind::Change.into(),
        revision: change.revision.clone(),
        previous_revision: change.old_revision.clone().unwrap_or_default(),
        added: pick(&change.changes.added),
        changed: pick(&change.changes.changed),
        removed: pick(&change.changes.removed),
    }
}
