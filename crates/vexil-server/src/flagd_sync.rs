//! flagd's sync service (`flagd.sync.v1.FlagSyncService`), so that OpenFeature flagd providers
//! in in-process mode evaluate Vexil's flags themselves (shared reference flagd-sync.md).
//!
//! - The namespace: the `flagd-selector` metadata first, else the request's `selector` field;
//!   `flagSetId=<ns>`, `source=<ns>` or a bare `<ns>` (as the evaluation API reads
//!   `flagd-selector`); the default namespace without one. An unknown namespace is an empty
//!   flag set (`{"flags":{}}`), followed like any other: its flags arrive when a commit adds them.
//! - The definitions are the flagd export of vexil-mirror, serialised once per snapshot and
//!   namespace (`mirrors::Tables::flagd`); every answer shares that text.
//! - SyncFlags sends the whole set at once (after the first snapshot is served), then again
//!   after every swap that changes a flag of its namespace (never for other namespaces), through
//!   the change-stream pump (a stream that falls behind gets the current set; one whose client
//!   stops reading ends after the stalled-stream timeout). No `sync_context`.
//! - GetMetadata (deprecated upstream, still called by the Python provider) answers an empty
//!   `metadata`: providers merge it into every evaluation context.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use vexil_core::{ChangeEvent, DEFAULT_NAMESPACE};

use crate::pump::{self, Feed, Pace};
use crate::state::AppState;

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    unreachable_pub
)]
pub mod pb {
    tonic::include_proto!("flagd.sync.v1");
}

/// The definitions of a namespace the snapshot does not have.
const EMPTY: &str = r#"{"flags":{}}"#;

/// A sync stream resends the whole set after this long without a change. Providers recycle
/// their stream every 600 s, so in practice only changes are sent.
const RESEND_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct SyncApi {
    state: Arc<AppState>,
}

impl SyncApi {
    pub fn new(state: Arc<AppState>) -> SyncApi {
        SyncApi { state }
    }
}

/// The namespace a call syncs: `flagd-selector` first, then the request's `selector`.
fn namespace(meta: &MetadataMap, field: &str) -> String {
    let header = meta
        .get("flagd-selector")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let selector = header.unwrap_or_else(|| field.trim());
    let value = selector.split_once('=').map_or(selector, |(_, v)| v).trim();
    if value.is_empty() {
        DEFAULT_NAMESPACE.to_owned()
    } else {
        value.to_owned()
    }
}

/// The served definitions of a namespace.
fn definitions(state: &AppState, namespace: &str) -> Result<Arc<str>, crate::evaluation::Error> {
    let current = state.current();
    let served = current.served()?;
    Ok(served
        .derived
        .mirrors
        .flagd
        .get(namespace)
        .cloned()
        .unwrap_or_else(|| Arc::from(EMPTY)))
}

/// What a SyncFlags stream says: the whole set of its namespace, at the start and after each
/// swap that changes it.
struct SyncFeed {
    state: Arc<AppState>,
    namespace: String,
}

impl SyncFeed {
    fn current(&self) -> Arc<str> {
        // The stream starts only once a snapshot is served, and none is ever unserved.
        definitions(&self.state, &self.namespace).unwrap_or_else(|_| Arc::from(EMPTY))
    }
}

impl Feed for SyncFeed {
    type Event = Arc<str>;

    fn opening(&mut self) -> Arc<str> {
        self.current()
    }

    fn heartbeat(&mut self) -> Arc<str> {
        self.current()
    }

    fn wants(&mut self, change: &ChangeEvent) -> bool {
        let c = &change.changes;
        [&c.added, &c.changed, &c.removed]
            .iter()
            .any(|refs| refs.iter().any(|r| *r.namespace == *self.namespace))
    }

    fn change(&mut self, _change: &ChangeEvent) -> Arc<str> {
        // Built when the client has room: the newest set, which includes this change.
        self.current()
    }

    fn resync(&mut self, _state: &AppState) -> Option<Arc<str>> {
        Some(self.current())
    }

    fn closing(&mut self) -> Option<Arc<str>> {
        None
    }
}

type SyncStream = Pin<Box<dyn Stream<Item = Result<pb::SyncFlagsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::flag_sync_service_server::FlagSyncService for SyncApi {
    type SyncFlagsStream = SyncStream;

    async fn sync_flags(
        &self,
        request: Request<pb::SyncFlagsRequest>,
    ) -> Result<Response<SyncStream>, Status> {
        let namespace = namespace(request.metadata(), &request.get_ref().selector);
        let events = self.state.events.subscribe();
        let feed = SyncFeed {
            state: Arc::clone(&self.state),
            namespace,
        };
        let pace = Pace {
            heartbeat: RESEND_AFTER,
            wait_ready: true,
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Arc<str>>(pump::STREAM_BUFFER);
        tokio::spawn(pump::pump(Arc::clone(&self.state), events, feed, pace, tx));
        let stream =
            tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |text| {
                Ok(pb::SyncFlagsResponse {
                    flag_configuration: text.to_string(),
                    sync_context: None,
                })
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch_all_flags(
        &self,
        request: Request<pb::FetchAllFlagsRequest>,
    ) -> Result<Response<pb::FetchAllFlagsResponse>, Status> {
        let namespace = namespace(request.metadata(), &request.get_ref().selector);
        let text = definitions(&self.state, &namespace).map_err(crate::grpc::status)?;
        Ok(Response::new(pb::FetchAllFlagsResponse {
            flag_configuration: text.to_string(),
        }))
    }

    async fn get_metadata(
        &self,
        _request: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        Ok(Response::new(pb::GetMetadataResponse {
            metadata: Some(prost_types::Struct::default()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::namespace;
    use tonic::metadata::MetadataMap;

    #[test]
    fn the_selector_header_wins_over_the_field() {
        let mut meta = MetadataMap::new();
        assert_eq!(namespace(&meta, ""), "default");
        assert_eq!(namespace(&meta, "checkout"), "checkout");
        assert_eq!(namespace(&meta, "flagSetId=checkout"), "checkout");
        assert_eq!(namespace(&meta, " source=web "), "web");
        meta.insert(
            "flagd-selector",
            "flagSetId=mobile"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(namespace(&meta, "web"), "mobile");
        meta.insert(
            "flagd-selector",
            " ".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(namespace(&meta, "web"), "web");
    }
}
