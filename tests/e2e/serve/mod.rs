//! `vexil serve` end to end: the vexil.v1 gRPC API with a tonic client, health, reflection, auth,
//! metrics and probes, on 127.0.0.1:0 against temp git repositories; and the binary itself
//! (signals); TLS on both ports and its reload on SIGHUP (`tls`). Waits are bounded polls for a
//! state, never timing assertions.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::Channel;
use vexil_core::source::{GitOptions, GitSource};
use vexil_core::{ReloadOptions, Reloader};
use vexil_server::proto::flag_service_client::FlagServiceClient;
use vexil_server::proto::{self, watch_event::Kind};
use vexil_server::{AppState, Options, Tokens};

use crate::helpers::git;

mod binary;
mod hooks;
mod tls;

const PATIENCE: Duration = Duration::from_secs(15);

pub struct TestServer {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// flagd's sync port.
    pub sync: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(reloader: Reloader, tokens: Tokens, options: Options) -> TestServer {
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = grpc_listener.local_addr().unwrap();
        let http = http_listener.local_addr().unwrap();
        let sync_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sync = sync_listener.local_addr().unwrap();
        let state = AppState::new(reloader, options);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(vexil_server::serve_with_sync(
            state,
            tokens,
            vexil_server::TlsConfig::default(),
            grpc_listener,
            http_listener,
            Some(sync_listener),
            async move {
                let _ = stopped.await;
            },
        ));
        let task = tokio::spawn(async move {
            task.await.unwrap().unwrap();
        });
        TestServer {
            grpc,
            http,
            sync,
            stop: Some(stop),
            task,
        }
    }

    /// A server on the flags of `repo`'s `main` branch (see `git_reloader`), without tokens.
    pub async fn git(repo: &Path, options: Options) -> TestServer {
        TestServer::start(
            git_reloader(repo, false).unwrap(),
            Tokens::default(),
            options,
        )
        .await
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn client(&self) -> FlagServiceClient<Channel> {
        FlagServiceClient::new(self.channel().await)
    }

    /// GET on the HTTP port: (status code, body), over a plain TCP connection.
    async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path).await
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("the server stops")
            .unwrap();
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (code, _, body) = crate::helpers::http(addr, "GET", path, &[], "").await;
    (code, body)
}

fn flags_yaml(a: &str) -> String {
    format!(
        "flags:\n  a:\n    type: string\n    variants: {{ v: \"{a}\" }}\n    default: v\n  count:\n    type: integer\n    variants: {{ ten: 10 }}\n    default: ten\n  beta:\n    rules:\n      - when: [{{ attr: plan, equals: pro }}]\n        serve: true\n"
    )
}

pub fn repo_with(text: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    git(tmp.path(), &["init", "-q", "-b", "main"]);
    commit(tmp.path(), text, "first");
    tmp
}

pub fn commit(repo: &Path, text: &str, message: &str) -> String {
    std::fs::create_dir_all(repo.join("flags")).unwrap();
    std::fs::write(repo.join("flags/a.yaml"), text).unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"]).trim().to_owned()
}

pub fn git_reloader(repo: &Path, start_empty: bool) -> Result<Reloader, vexil_core::StartError> {
    Reloader::start(
        Box::new(GitSource::new(
            repo,
            GitOptions {
                reference: "main".into(),
                flags_dir: "flags".into(),
                poll_interval: Duration::from_millis(20),
            },
        )),
        ReloadOptions {
            start_empty,
            ..served_reload_options()
        },
    )
}

/// Reload options for a reloader whose snapshots a server serves (with their tables).
pub fn served_reload_options() -> ReloadOptions {
    ReloadOptions {
        prepare: Some(vexil_server::state::prepare()),
        ..ReloadOptions::default()
    }
}

fn ctx(key: &str, attrs: &[(&str, prost_types::Value)]) -> Option<proto::Context> {
    Some(proto::Context {
        targeting_key: key.into(),
        attributes: attrs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    })
}

fn text(s: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(s.into())),
    }
}

fn eval_request(flag: &str) -> proto::EvaluateRequest {
    proto::EvaluateRequest {
        flag: flag.into(),
        ..Default::default()
    }
}

fn string_value(r: &proto::EvaluateResponse) -> String {
    match r.value.as_ref().and_then(|v| v.kind.as_ref()) {
        Some(proto::value::Kind::StringValue(s)) => s.clone(),
        other => panic!("not a string value: {other:?}"),
    }
}

/// Every metric the exposition has is in the README's metrics table, and every metric the table
/// names is in the exposition (this one has every kind: requests, evaluations, a swap).
fn metrics_match_the_readme(exposition: &str) {
    let readme = std::fs::read_to_string(crate::helpers::repo_root().join("README.md")).unwrap();
    let documented: std::collections::BTreeSet<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `vexil_"))
        .filter_map(|l| l.split(['`', '{']).next())
        .collect();
    let exposed: std::collections::BTreeSet<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE vexil_"))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(!exposed.is_empty(), "{exposition}");
    assert_eq!(
        exposed, documented,
        "the metrics exposed (left) and the README's metrics table (right) differ"
    );
}

async fn eval_a(client: &mut FlagServiceClient<Channel>) -> String {
    string_value(
        &client
            .evaluate(eval_request("a"))
            .await
            .unwrap()
            .into_inner(),
    )
}

/// Polls `check` until it holds, for at most `PATIENCE`.
async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    crate::helpers::poll_until(what, PATIENCE, check).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_served_watched_and_an_invalid_commit_is_reported() {
    let repo = repo_with(&flags_yaml("one"));
    let server = TestServer::git(repo.path(), Options::default()).await;
    let mut client = server.client().await;
    let first = client
        .evaluate(eval_request("a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(string_value(&first), "one");
    assert_eq!(first.reason(), proto::Reason::Static);
    assert_eq!(first.namespace, "default");
    let head = git(repo.path(), &["rev-parse", "HEAD"]).trim().to_owned();
    assert_eq!(first.revision, head);

    let mut watch = client
        .watch(proto::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let current = watch.message().await.unwrap().unwrap();
    assert_eq!(
        (current.kind(), current.revision.as_str()),
        (Kind::Current, head.as_str())
    );

    let second = commit(repo.path(), &flags_yaml("two"), "two");
    let change = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(change.kind(), Kind::Change);
    assert_eq!(
        (change.previous_revision.as_str(), change.revision.as_str()),
        (head.as_str(), second.as_str())
    );
    let changed: Vec<_> = change
        .changed
        .iter()
        .map(|k| format!("{}/{}", k.namespace, k.key))
        .collect();
    assert_eq!(changed, ["default/a"]);
    assert!(change.added.is_empty() && change.removed.is_empty());
    // The event comes after the swap: the new value is already served.
    assert_eq!(eval_a(&mut client).await, "two");

    // An invalid commit: the old value keeps serving, Status has the diagnostics.
    let bad = commit(repo.path(), "flags:\n  a:\n    type: strin\n", "broken");
    let start = Instant::now();
    let status = loop {
        let status = client
            .status(proto::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if status
            .last_attempt
            .as_ref()
            .is_some_and(|a| a.revision == bad)
        {
            break status;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "timed out waiting for the invalid commit"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let attempt = status.last_attempt.unwrap();
    assert_eq!(attempt.result(), proto::reload_attempt::Result::Invalid);
    let d = &attempt.diagnostics[0];
    assert_eq!(
        (d.file.as_str(), d.line, d.severity.as_str()),
        ("a.yaml", 3, "error")
    );
    assert_eq!(status.revision, second);
    assert_eq!(status.consecutive_failures, 1);
    assert_eq!(status.last_error.unwrap().revision, bad);
    assert_eq!(eval_a(&mut client).await, "two");
    assert_eq!(server.get("/readyz").await.0, 200);
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("vexil_reloads_total{result=\"invalid\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("vexil_snapshot_info{{revision=\"{second}\"}} 1")));
    assert!(
        metrics.contains(
            "vexil_evaluations_total{namespace=\"default\",flag=\"a\",reason=\"STATIC\"} 3"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("vexil_requests_total{front=\"vexil\",method=\"Evaluate\",code=\"OK\"} 3"),
        "{metrics}"
    );
    metrics_match_the_readme(&metrics);
    assert!(
        metrics.contains(
            "vexil_request_duration_seconds_count{front=\"vexil\",method=\"Evaluate\"} 3"
        ),
        "{metrics}"
    );

    // Reload answers with the attempt (the source still holds the invalid commit).
    let reload = client
        .reload(proto::ReloadRequest {})
        .await
        .unwrap()
        .into_inner();
    let attempt = reload.attempt.unwrap();
    assert_eq!(attempt.result(), proto::reload_attempt::Result::Invalid);
    assert_eq!(attempt.revision, bad);

    // Shutdown ends the Watch stream cleanly.
    server.stop().await;
    let end = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .unwrap();
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluation_errors_batches_and_definitions() {
    let repo = repo_with(&flags_yaml("one"));
    let options = Options {
        limits: vexil_server::Limits {
            max_batch: 3,
            max_context_depth: 2,
            max_message_bytes: 4096,
            ..Default::default()
        },
        ..Options::default()
    };
    let server = TestServer::git(repo.path(), options).await;
    let mut client = server.client().await;

    let err = client.evaluate(eval_request("nope")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.message(),
        "flag `nope` not found in namespace `default`"
    );
    let mut req = eval_request("a");
    req.namespace = "elsewhere".into();
    let err = client.evaluate(req).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "namespace `elsewhere` not found")
    );

    let mut req = eval_request("a");
    req.expected_type = proto::FlagType::Boolean.into();
    let err = client.evaluate(req).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "flag `a` is string, not boolean")
    );
    // An integer flag may be read as a float.
    let mut req = eval_request("count");
    req.expected_type = proto::FlagType::Float.into();
    let r = client.evaluate(req).await.unwrap().into_inner();
    assert_eq!(
        r.value.unwrap().kind,
        Some(proto::value::Kind::IntegerValue(10))
    );

    // A context nested deeper than the limit.
    let deep = prost_types::Value {
        kind: Some(prost_types::value::Kind::ListValue(
            prost_types::ListValue {
                values: vec![prost_types::Value {
                    kind: Some(prost_types::value::Kind::ListValue(
                        prost_types::ListValue {
                            values: vec![text("x")],
                        },
                    )),
                }],
            },
        )),
    };
    let mut req = eval_request("a");
    req.context = ctx("u", &[("deep", deep)]);
    let err = client.evaluate(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // A request over the message size limit.
    let mut req = eval_request("a");
    req.context = ctx("u", &[("big", text(&"x".repeat(10_000)))]);
    let err = client.evaluate(req).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

    // Targeting: the rule matches on the attribute.
    let mut req = eval_request("beta");
    req.context = ctx("u1", &[("plan", text("pro"))]);
    let r = client.evaluate(req).await.unwrap().into_inner();
    assert_eq!(
        (r.reason(), r.rule.as_str(), r.variant.as_str()),
        (proto::Reason::TargetingMatch, "1", "on")
    );

    // A batch: an unknown flag is an error item, not a failed call.
    let batch = client
        .evaluate_batch(proto::EvaluateBatchRequest {
            flags: vec!["a".into(), "missing".into(), "beta".into()],
            context: ctx("u1", &[("plan", text("free"))]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let summary: Vec<(String, i32, String)> = batch
        .items
        .iter()
        .map(|i| (i.flag.clone(), i.error, i.variant.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("a".to_owned(), 0, "v".to_owned()),
            (
                "missing".to_owned(),
                proto::ErrorCode::FlagNotFound as i32,
                String::new()
            ),
            ("beta".to_owned(), 0, "off".to_owned()),
        ]
    );
    // Empty list: every flag of the namespace, in key order.
    let all = client
        .evaluate_batch(proto::EvaluateBatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<_> = all.items.iter().map(|i| i.flag.as_str()).collect();
    assert_eq!(keys, ["a", "beta", "count"]);
    let err = client
        .evaluate_batch(proto::EvaluateBatchRequest {
            flags: vec!["a".into(); 4],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Definitions.
    let list = client
        .list_flags(proto::ListFlagsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.flags.len(), 3);
    let beta = client
        .get_flag(proto::GetFlagRequest {
            flag: "beta".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .flag
        .unwrap();
    assert_eq!(
        (beta.file.as_str(), beta.line, beta.r#static),
        ("a.yaml", 10, false)
    );
    let definition = beta.definition.unwrap();
    let rules = &definition.fields["rules"];
    let Some(prost_types::value::Kind::ListValue(rules)) = &rules.kind else {
        panic!("rules is a list: {rules:?}")
    };
    assert_eq!(rules.values.len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_every_rpc_but_health() {
    use tonic_health::pb::health_client::HealthClient;
    let repo = repo_with(&flags_yaml("one"));
    let server = TestServer::start(
        git_reloader(repo.path(), false).unwrap(),
        Tokens::parse("secret-1\nsecret-2\n"),
        Options::default(),
    )
    .await;
    let channel = server.channel().await;
    let mut client = FlagServiceClient::new(channel.clone());
    let err = client.evaluate(eval_request("a")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut wrong = tonic::Request::new(eval_request("a"));
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer secret-3".parse().unwrap());
    assert_eq!(
        client.evaluate(wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut right = tonic::Request::new(eval_request("a"));
    right
        .metadata_mut()
        .insert("authorization", "Bearer secret-2".parse().unwrap());
    assert_eq!(
        string_value(&client.evaluate(right).await.unwrap().into_inner()),
        "one"
    );
    let err = client.reload(proto::ReloadRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client.status(proto::StatusRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .watch(proto::WatchRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    let list = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let err = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([list]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // /metrics names flags and the revision: behind the tokens too (a refusal is counted).
    let (code, _) = server.get("/metrics").await;
    assert_eq!(code, 401);
    let (code, _, metrics) = crate::helpers::http(
        server.http,
        "GET",
        "/metrics",
        &[("authorization", "Bearer secret-2")],
        "",
    )
    .await;
    assert_eq!(code, 200);
    // Refusals are counted by front, and as requests with their code.
    for line in [
        "vexil_unauthenticated_total{front=\"vexil\"} 6",
        "vexil_unauthenticated_total{front=\"http\"} 1",
        "vexil_unauthenticated_total{front=\"ofrep\"} 0",
        "vexil_requests_total{front=\"vexil\",method=\"Evaluate\",code=\"UNAUTHENTICATED\"} 2",
        "vexil_requests_total{front=\"vexil\",method=\"Evaluate\",code=\"OK\"} 1",
        "vexil_requests_total{front=\"vexil\",method=\"ServerReflectionInfo\",code=\"UNAUTHENTICATED\"} 1",
        "vexil_requests_total{front=\"http\",method=\"metrics\",code=\"401\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    let mut health = HealthClient::new(channel.clone());
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: vexil_server::SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_first_valid_snapshot_and_reflection_lists_services() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let repo = repo_with("flags: [\n");
    assert!(
        git_reloader(repo.path(), false).is_err(),
        "an invalid source does not start"
    );
    let server = TestServer::start(
        git_reloader(repo.path(), true).unwrap(),
        Tokens::default(),
        Options::default(),
    )
    .await;
    let channel = server.channel().await;
    let mut health = HealthClient::new(channel.clone());
    let check = |mut health: HealthClient<Channel>| async move {
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: vexil_server::SERVICE_NAME.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status()
    };
    wait_until("NOT_SERVING", || {
        let h = health.clone();
        async move { check(h).await == ServingStatus::NotServing }
    })
    .await;
    let (code, body) = server.get("/readyz").await;
    assert_eq!(code, 503);
    assert!(
        body.contains("yaml-syntax") || body.contains("invalid"),
        "{body}"
    );
    assert_eq!(server.get("/healthz").await.0, 200);
    let mut client = FlagServiceClient::new(channel.clone());
    assert_eq!(
        client.evaluate(eval_request("a")).await.unwrap_err().code(),
        Code::Unavailable
    );

    commit(repo.path(), &flags_yaml("fixed"), "fix");
    wait_until("SERVING", || {
        let h = health.clone();
        async move { check(h).await == ServingStatus::Serving }
    })
    .await;
    assert_eq!(server.get("/readyz").await.0, 200);
    assert_eq!(eval_a(&mut client).await, "fixed");
    let overall = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overall.status(), ServingStatus::Serving);

    // Reflection lists the services.
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("a service list: {reply:?}")
    };
    let mut names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "flagd.evaluation.v1.Service",
            "flagd.evaluation.v2.Service",
            "flagd.sync.v1.FlagSyncService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "vexil.v1.FlagService"
        ]
    );

    // Shutdown: a health watcher sees NOT_SERVING, then its stream ends, and the server stops.
    let mut health_watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: vexil_server::SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = health_watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    server.stop().await;
    let mut saw_not_serving = false;
    while let Ok(Some(reply)) = tokio::time::timeout(PATIENCE, health_watch.message())
        .await
        .unwrap()
    {
        saw_not_serving |= reply.status() == ServingStatus::NotServing;
    }
    assert!(
        saw_not_serving,
        "health turned NOT_SERVING before the stream ended"
    );
}

/// Watch sends heartbeats when nothing changes, and only events of its namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_heartbeats_and_namespace_filter() {
    let repo = repo_with(&flags_yaml("one"));
    let options = Options {
        heartbeat: Duration::from_millis(100),
        ..Options::default()
    };
    let server = TestServer::git(repo.path(), options).await;
    let mut client = server.client().await;
    let mut other = client
        .watch(proto::WatchRequest {
            namespace: "other".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let current = other.message().await.unwrap().unwrap();
    assert_eq!(current.kind(), Kind::Current);
    let beat = tokio::time::timeout(PATIENCE, other.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (beat.kind(), beat.revision.as_str()),
        (Kind::Heartbeat, current.revision.as_str())
    );
    // A change in `default` reaches a watcher of `other` as a new revision without keys;
    // heartbeats before it carry the old revision, after it the new one.
    let second = commit(repo.path(), &flags_yaml("two"), "two");
    let change = loop {
        let event = tokio::time::timeout(PATIENCE, other.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if event.kind() == Kind::Change {
            break event;
        }
        assert_eq!(
            (event.kind(), event.revision.as_str()),
            (Kind::Heartbeat, current.revision.as_str())
        );
    };
    assert_eq!(
        (change.previous_revision.as_str(), change.revision.as_str()),
        (current.revision.as_str(), second.as_str())
    );
    assert!(change.added.is_empty() && change.changed.is_empty() && change.removed.is_empty());
    let beat = tokio::time::timeout(PATIENCE, other.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (beat.kind(), beat.revision.as_str()),
        (Kind::Heartbeat, second.as_str())
    );
    server.stop().await;
}

/// Reads of the source so far (`Status::attempts`).
pub(super) async fn attempts(client: &mut FlagServiceClient<Channel>) -> u64 {
    client
        .status(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .attempts
}
