//! The sync port's contract with a tonic client: the definitions by selector (metadata first,
//! then the request field), tokens, health, reflection and metrics as on the gRPC port; and a
//! SyncFlags stream that sends its namespace's set at once and again only when a commit
//! changes that namespace.

use std::time::Duration;

use serde_json::{Value as Json, json};
use tonic::Code;
use tonic::transport::Channel;
use vexil_server::flagd_sync::pb;
use vexil_server::flagd_sync::pb::flag_sync_service_client::FlagSyncServiceClient;
use vexil_server::{Options, Tokens};

use crate::helpers::repo_root;
use crate::serve::{TestServer, commit, repo_with};

const PATIENCE: Duration = Duration::from_secs(15);

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn with(
    token: Option<&str>,
    selector: Option<&str>,
    field: &str,
) -> tonic::Request<pb::FetchAllFlagsRequest> {
    let mut request = tonic::Request::new(pb::FetchAllFlagsRequest {
        provider_id: String::new(),
        selector: field.into(),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    if let Some(selector) = selector {
        request
            .metadata_mut()
            .insert("flagd-selector", selector.parse().unwrap());
    }
    request
}

fn export_of(namespace: &str) -> Json {
    let snapshot = crate::helpers::example_snapshot();
    vexil_mirror::flagd::export(snapshot.namespace(namespace).unwrap()).definitions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_port_serves_definitions_by_selector_behind_tokens() {
    let reloader = vexil_core::Reloader::start(
        Box::new(vexil_core::source::DirSource::new(
            repo_root().join("flags"),
            Default::default(),
        )),
        crate::serve::served_reload_options(),
    )
    .unwrap();
    let server = TestServer::start(reloader, Tokens::parse("s3cret"), Options::default()).await;
    let mut client = FlagSyncServiceClient::new(channel(server.sync).await);
    // The first snapshot may still be loading: wait for it (bounded).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let fetch = async |client: &mut FlagSyncServiceClient<Channel>, selector, field| {
        let r = client
            .fetch_all_flags(with(Some("s3cret"), selector, field))
            .await?;
        Ok::<Json, tonic::Status>(serde_json::from_str(&r.into_inner().flag_configuration).unwrap())
    };
    let default = loop {
        match fetch(&mut client, None, "").await {
            Ok(json) => break json,
            Err(e) if e.code() == Code::Unavailable && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(default, export_of("default"));
    let checkout = export_of("checkout");
    assert_ne!(checkout, default);
    for (selector, field) in [
        (None, "checkout"),
        (None, "flagSetId=checkout"),
        (None, "source=checkout"),
        (Some("flagSetId=checkout"), ""),
        (Some("checkout"), "default"),
    ] {
        assert_eq!(
            fetch(&mut client, selector, field).await.unwrap(),
            checkout,
            "{selector:?} {field}"
        );
    }
    assert_eq!(
        fetch(&mut client, Some("flagSetId=nowhere"), "")
            .await
            .unwrap(),
        json!({"flags": {}})
    );
    // Tokens as on the gRPC port.
    let err = client
        .fetch_all_flags(with(None, None, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .fetch_all_flags(with(Some("wrong"), None, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut meta = tonic::Request::new(pb::GetMetadataRequest {});
    meta.metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    let metadata = client.get_metadata(meta).await.unwrap().into_inner();
    assert_eq!(metadata.metadata, Some(prost_types::Struct::default()));
    // The gRPC port serves the same service (providers given only FLAGD_PORT).
    let mut on_grpc = FlagSyncServiceClient::new(server.channel().await);
    let r = on_grpc
        .fetch_all_flags(with(Some("s3cret"), None, ""))
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Json>(&r.into_inner().flag_configuration).unwrap(),
        default
    );
    // Health without a token, reflection behind it and listing the service.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(server.sync).await);
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let list = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut request = tonic::Request::new(tokio_stream::iter([list]));
    request
        .metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    let mut answers = ServerReflectionClient::new(channel(server.sync).await)
        .server_reflection_info(request)
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(services)) = answer.message_response else {
        panic!("{answer:?}");
    };
    let names: Vec<&str> = services.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"flagd.sync.v1.FlagSyncService"),
        "{names:?}"
    );
    // Metrics name the front and its methods.
    let (code, _, metrics) = crate::helpers::http(
        server.http,
        "GET",
        "/metrics",
        &[("authorization", "Bearer s3cret")],
        "",
    )
    .await;
    assert_eq!(code, 200);
    for line in [
        "vexil_requests_total{front=\"flagd-sync\",method=\"FetchAllFlags\",code=\"OK\"}",
        "vexil_requests_total{front=\"flagd-sync\",method=\"FetchAllFlags\",code=\"UNAUTHENTICATED\"} 2",
        "vexil_requests_total{front=\"flagd-sync\",method=\"GetMetadata\",code=\"OK\"} 1",
        "vexil_unauthenticated_total{front=\"flagd-sync\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_stream_sends_its_namespace_at_once_and_after_each_change_of_it_only() {
    let other = |v: &str| {
        format!(
            "namespace: other\nflags:\n  banner:\n    type: string\n    variants: {{ v: \"{v}\" }}\n    default: v\n"
        )
    };
    let repo = repo_with("flags:\n  a: { default: true }\n");
    std::fs::write(repo.path().join("flags/other.yaml"), other("one")).unwrap();
    commit(repo.path(), "flags:\n  a: { default: true }\n", "add other");
    let server = TestServer::git(repo.path(), Options::default()).await;
    let mut client = FlagSyncServiceClient::new(channel(server.sync).await);
    let mut request = tonic::Request::new(pb::SyncFlagsRequest {
        provider_id: String::new(),
        selector: "default".into(),
    });
    // The metadata wins over the field.
    request
        .metadata_mut()
        .insert("flagd-selector", "flagSetId=other".parse().unwrap());
    let mut stream = client.sync_flags(request).await.unwrap().into_inner();
    let mut next = async || -> Json {
        let message = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("a sync message")
            .unwrap()
            .unwrap();
        assert_eq!(message.sync_context, None);
        serde_json::from_str(&message.flag_configuration).unwrap()
    };
    let first = next().await;
    assert_eq!(first["flags"]["banner"]["variants"]["v"], "one", "{first}");
    assert!(first["flags"].get("a").is_none(), "{first}");
    // A commit to another namespace sends nothing; the next one to `other` sends the new set:
    // the next message is the second commit's, with nothing in between.
    commit(
        repo.path(),
        "flags:\n  a: { default: false }\n",
        "default only",
    );
    std::fs::write(repo.path().join("flags/other.yaml"), other("two")).unwrap();
    commit(
        repo.path(),
        "flags:\n  a: { default: false }\n",
        "other changes",
    );
    let second = next().await;
    assert_eq!(
        second["flags"]["banner"]["variants"]["v"], "two",
        "{second}"
    );
    server.stop().await;
}

/// With a gRPC certificate, the sync port serves TLS with it (and only TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_port_serves_the_grpc_ports_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = cert.cert.pem();
    let source = vexil_server::CertSource::from_pem(&vexil_server::TlsPem {
        cert: cert_pem.clone().into_bytes(),
        key: cert.signing_key.serialize_pem().into_bytes(),
    })
    .unwrap();
    let repo = repo_with("flags:\n  a: { default: true }\n");
    let state = vexil_server::AppState::new(
        crate::serve::git_reloader(repo.path(), false).unwrap(),
        Options::default(),
    );
    let bind = async || tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc, http, sync) = (bind().await, bind().await, bind().await);
    let sync_addr = sync.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(vexil_server::serve_with_sync(
        state,
        Tokens::default(),
        vexil_server::TlsConfig {
            grpc: Some(source),
            http: None,
        },
        grpc,
        http,
        Some(sync),
        async move {
            let _ = stopped.await;
        },
    ));
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{sync_addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlagSyncServiceClient::new(channel);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let text = loop {
        match client.fetch_all_flags(with(None, None, "")).await {
            Ok(r) => break r.into_inner().flag_configuration,
            Err(e) if e.code() == Code::Unavailable && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let json: Json = serde_json::from_str(&text).unwrap();
    assert_eq!(json["flags"]["a"]["defaultVariant"], "on");
    // Plaintext gets no gRPC answer from the port.
    let plain = Channel::from_shared(format!("http://{sync_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let err = FlagSyncServiceClient::new(plain)
        .fetch_all_flags(with(None, None, ""))
        .await
        .unwrap_err();
    assert!(
        std::error::Error::source(&err)
            .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some()),
        "a transport failure: {err:?}"
    );
    let _ = stop.send(());
    tokio::time::timeout(PATIENCE, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
