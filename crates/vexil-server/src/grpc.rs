//! The vexil.v1 FlagService: each method decodes, calls the evaluation core, encodes; errors
//! become statuses in `status` alone. Tokens and metrics are the gRPC port's layer's.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use vexil_core::{ChangeEvent, DEFAULT_NAMESPACE, Namespace, Snapshot};

use crate::context;
use crate::convert;
use crate::evaluation::{self, Error};
use crate::proto::{self, flag_service_server::FlagService};
use crate::pump::{self, Feed, Pace};
use crate::state::{AppState, Served};

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
    fn build(snapshot: &Snapshot) -> Definitions {
        let namespaces = snapshot
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

/// Every core error as a gRPC status: the one place this front words them.
pub fn status(e: Error) -> Status {
    let text = e.to_string();
    match e {
        Error::Unauthenticated => Status::unauthenticated(
            "missing or unknown bearer token: send `authorization: Bearer <token>`",
        ),
        Error::NoSnapshot => Status::unavailable(format!("{text}: see the Status call")),
        Error::UnknownNamespace(_) | Error::FlagNotFound { .. } => Status::not_found(text),
        Error::TypeMismatch { .. } | Error::InvalidContext(_) | Error::BadRequest(_) => {
            Status::invalid_argument(text)
        }
    }
}

/// The service; cheap to clone (it is the shared state).
#[derive(Debug, Clone)]
pub struct FlagApi {
    state: Arc<AppState>,
}

fn namespace_name(requested: &str) -> &str {
    if requested.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        requested
    }
}

impl FlagApi {
    pub fn new(state: Arc<AppState>) -> FlagApi {
        FlagApi { state }
    }

    fn evaluate(&self, r: proto::EvaluateRequest) -> Result<proto::EvaluateResponse, Error> {
        let current = self.state.current();
        let served = current.served()?;
        let ctx = context::from_proto(r.context, &self.state.options.limits)?;
        let expected = convert::expected_type(r.expected_type)?;
        let namespace = namespace_name(&r.namespace);
        let (found, eval) = served.evaluate(namespace, &r.flag, expected, &ctx)?;
        Ok(proto::EvaluateResponse {
            namespace: namespace.to_owned(),
            r#type: convert::flag_type(found.flag.flag_type).into(),
            value: Some(convert::value(&eval.variant.value)),
            variant: eval.variant.name.to_string(),
            reason: convert::reason(eval.reason).into(),
            rule: eval.rule.map(|r| r.name.to_string()).unwrap_or_default(),
            revision: served.snapshot.revision().to_owned(),
            flag: r.flag,
        })
    }

    fn batch(&self, r: proto::EvaluateBatchRequest) -> Result<proto::EvaluateBatchResponse, Error> {
        let limits = &self.state.options.limits;
        if r.flags.len() > limits.max_batch {
            return Err(Error::BadRequest(format!(
                "{} flags asked; a batch may name at most {}",
                r.flags.len(),
                limits.max_batch
            )));
        }
        let current = self.state.current();
        let served = current.served()?;
        let ctx = context::from_proto(r.context, limits)?;
        let namespace = namespace_name(&r.namespace);
        let item = |flag: &vexil_core::Flag, eval: vexil_core::Evaluation<'_>| proto::BatchItem {
            flag: flag.key.to_string(),
            r#type: convert::flag_type(flag.flag_type).into(),
            value: Some(convert::value(&eval.variant.value)),
            variant: eval.variant.name.to_string(),
            reason: convert::reason(eval.reason).into(),
            rule: eval.rule.map(|r| r.name.to_string()).unwrap_or_default(),
            ..Default::default()
        };
        let items: Vec<proto::BatchItem> = if r.flags.is_empty() {
            let mut items = Vec::new();
            served.evaluate_all(
                namespace,
                &ctx,
                |_| true,
                |found, eval| {
                    items.push(item(found.flag, eval));
                },
            )?;
            items
        } else {
            evaluation::namespace(served.snapshot, namespace)?;
            r.flags
                .into_iter()
                .map(|key| match served.evaluate(namespace, &key, None, &ctx) {
                    Ok((found, eval)) => item(found.flag, eval),
                    Err(e) => proto::BatchItem {
                        error: proto::ErrorCode::FlagNotFound.into(),
                        error_message: e.to_string(),
                        flag: key,
                        ..Default::default()
                    },
                })
                .collect()
        };
        self.state.metrics.batch_items(items.len());
        Ok(proto::EvaluateBatchResponse {
            namespace: namespace.to_owned(),
            revision: served.snapshot.revision().to_owned(),
            items,
        })
    }

    fn list(&self, r: proto::ListFlagsRequest) -> Result<proto::ListFlagsResponse, Error> {
        let current = self.state.current();
        let served = current.served()?;
        if !r.namespace.is_empty() {
            evaluation::namespace(served.snapshot, &r.namespace)?;
        }
        let defs = definitions(served);
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

    fn get(&self, r: proto::GetFlagRequest) -> Result<proto::GetFlagResponse, Error> {
        let current = self.state.current();
        let served = current.served()?;
        let found = evaluation::lookup(served.snapshot, namespace_name(&r.namespace), &r.flag)?;
        let defs = definitions(served);
        let (_, flags, segments) = defs
            .namespaces
            .get(found.id.namespace)
            .ok_or(Error::NoSnapshot)?;
        // The segments its rules use, each once, in namespace order.
        let mut used = vec![false; found.namespace.segments.len()];
        for rule in &found.flag.rules {
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
            flag: flags.get(found.id.flag).cloned(),
            segments: segments
                .iter()
                .zip(used)
                .filter(|(_, u)| *u)
                .map(|(s, _)| s.clone())
                .collect(),
        })
    }
}

/// The snapshot's definitions as messages, built at the first call that needs them.
fn definitions<'s>(served: Served<'s>) -> &'s Definitions {
    served
        .derived
        .definitions
        .get_or_init(|| Definitions::build(served.snapshot))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<proto::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl FlagService for FlagApi {
    async fn evaluate(
        &self,
        request: Request<proto::EvaluateRequest>,
    ) -> Result<Response<proto::EvaluateResponse>, Status> {
        self.evaluate(request.into_inner())
            .map(Response::new)
            .map_err(status)
    }

    async fn evaluate_batch(
        &self,
        request: Request<proto::EvaluateBatchRequest>,
    ) -> Result<Response<proto::EvaluateBatchResponse>, Status> {
        self.batch(request.into_inner())
            .map(Response::new)
            .map_err(status)
    }

    async fn list_flags(
        &self,
        request: Request<proto::ListFlagsRequest>,
    ) -> Result<Response<proto::ListFlagsResponse>, Status> {
        self.list(request.into_inner())
            .map(Response::new)
            .map_err(status)
    }

    async fn get_flag(
        &self,
        request: Request<proto::GetFlagRequest>,
    ) -> Result<Response<proto::GetFlagResponse>, Status> {
        self.get(request.into_inner())
            .map(Response::new)
            .map_err(status)
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<proto::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let namespace = request.into_inner().namespace;
        // Subscribe before reading the revision: no swap can fall between the two.
        let events = self.state.events.subscribe();
        let revision = self
            .state
            .revision()
            .ok_or_else(|| status(Error::NoSnapshot))?;
        let feed = WatchFeed {
            namespace,
            last_revision: revision,
        };
        let pace = Pace {
            heartbeat: self.state.options.heartbeat,
            wait_ready: false,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(pump::STREAM_BUFFER);
        tokio::spawn(pump::pump(Arc::clone(&self.state), events, feed, pace, tx));
        let stream = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            Ok::<_, Status>,
        );
        Ok(Response::new(Box::pin(stream) as WatchStream))
    }

    async fn reload(
        &self,
        _request: Request<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        // The reloader answers through a callback: a caller that gives up holds no thread.
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.state.reloader.reload_then(move |attempt| {
            let _ = reply.send(attempt);
        });
        let max = self.state.options.max_status_diagnostics;
        match tokio::time::timeout(self.state.options.reload_timeout, outcome).await {
            Ok(Ok(attempt)) => Ok(Response::new(proto::ReloadResponse {
                attempt: Some(convert::attempt(&attempt, max)),
            })),
            Ok(Err(_)) => Err(Status::unavailable("the reloader has stopped")),
            Err(_) => Err(Status::deadline_exceeded(
                "the reload is still running (it will finish in the background)",
            )),
        }
    }

    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let problem = self.state.reader_health().err();
        let max = self.state.options.max_status_diagnostics;
        let mut answer = self
            .state
            .live
            .inspect(|status| convert::status(status, max, problem));
        if let Some(notifier) = self.state.metrics.notifier() {
            answer.notifications = notifier
                .receivers()
                .iter()
                .map(|r| convert::notification_receiver(&r.report()))
                .collect();
        }
        Ok(Response::new(answer))
    }
}

/// What a Watch stream says: CURRENT, then one CHANGE per swap (its flags filtered to the
/// namespace asked for), HEARTBEATs, and CURRENT again after falling behind.
struct WatchFeed {
    namespace: String,
    last_revision: String,
}

impl WatchFeed {
    fn current(&self) -> proto::WatchEvent {
        proto::WatchEvent {
            kind: proto::watch_event::Kind::Current.into(),
            revision: self.last_revision.clone(),
            ..Default::default()
        }
    }
}

impl Feed for WatchFeed {
    type Event = proto::WatchEvent;

    fn opening(&mut self) -> proto::WatchEvent {
        self.current()
    }

    fn heartbeat(&mut self) -> proto::WatchEvent {
        proto::WatchEvent {
            kind: proto::watch_event::Kind::Heartbeat.into(),
            revision: self.last_revision.clone(),
            ..Default::default()
        }
    }

    fn wants(&mut self, change: &ChangeEvent) -> bool {
        // The revision read when the stream opened or resynced is already reported.
        if change.revision == self.last_revision {
            return false;
        }
        self.last_revision.clone_from(&change.revision);
        true
    }

    fn change(&mut self, change: &ChangeEvent) -> proto::WatchEvent {
        let namespace = &self.namespace;
        let keep =
            |r: &&vexil_core::diff::FlagRef| namespace.is_empty() || *r.namespace == **namespace;
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

    fn resync(&mut self, state: &AppState) -> Option<proto::WatchEvent> {
        self.last_revision = state.revision()?;
        Some(self.current())
    }

    fn closing(&mut self) -> Option<proto::WatchEvent> {
        None
    }
}
