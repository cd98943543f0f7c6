//! The wire contract of flagd's gRPC API and OFREP, case by case, over real sockets.

use super::*;

// ---- the wire contract, case by case ----

use vexil_server::flagd::{v1, v2};

async fn http_post(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    crate::helpers::http(addr, "POST", path, headers, body).await
}

fn ctx_struct(key: &str) -> Option<prost_types::Struct> {
    Some(prost_types::Struct {
        fields: [("targetingKey".to_owned(), to_proto(&json!(key)))]
            .into_iter()
            .collect(),
    })
}

const WIRE_FLAGS: &str = "\
flags:
  on-flag: { default: true }
  off-flag:
    enabled: false
    default: true
  count:
    type: integer
    variants: { ten: 10 }
    default: ten
  ratio:
    type: float
    variants: { half: 0.5 }
    default: half
  targeted:
    rules: [{ ids: [vip], serve: true }]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagd_wire_contract() {
    let repo = repo_with(WIRE_FLAGS);
    std::fs::write(
        repo.path().join("flags/other.yaml"),
        "namespace: other\nflags:\n  elsewhere: { default: true }\n",
    )
    .unwrap();
    git_commit_all(repo.path());
    let options = Options {
        flagd_keep_alive: Duration::from_millis(200),
        ..Options::default()
    };
    let server = TestServer::git(repo.path(), options).await;
    let channel = server.channel().await;
    let mut c2 = v2::service_client::ServiceClient::new(channel.clone());
    let mut c1 = v1::service_client::ServiceClient::new(channel);

    let r = c2
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "on-flag".into(),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.value, r.reason.as_str(), r.variant.as_deref()),
        (Some(true), "STATIC", Some("on"))
    );
    // Disabled: v2 leaves value and variant out; v1 sends the default.
    let r = c2
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "off-flag".into(),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.value, r.reason.as_str(), r.variant),
        (None, "DISABLED", None)
    );
    let r = c1
        .resolve_boolean(v1::ResolveBooleanRequest {
            flag_key: "off-flag".into(),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.value, r.reason.as_str(), r.variant.as_str()),
        (true, "DISABLED", "on")
    );
    // Targeting.
    let r = c2
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "targeted".into(),
            context: ctx_struct("vip"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.value, r.reason.as_str()),
        (Some(true), "TARGETING_MATCH")
    );
    let r = c2
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "targeted".into(),
            context: ctx_struct("nobody"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.value, r.reason.as_str()), (Some(false), "DEFAULT"));
    // Types: an integer may be read as a float, not the other way round.
    let r = c2
        .resolve_float(v2::ResolveFloatRequest {
            flag_key: "count".into(),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.value, Some(10.0));
    let r = c2
        .resolve_int(v2::ResolveIntRequest {
            flag_key: "count".into(),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.value, Some(10));
    let err = c2
        .resolve_int(v2::ResolveIntRequest {
            flag_key: "ratio".into(),
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = c2
        .resolve_string(v2::ResolveStringRequest {
            flag_key: "on-flag".into(),
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = c2
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "missing".into(),
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // The namespace comes from the selector.
    let mut req = tonic::Request::new(v2::ResolveBooleanRequest {
        flag_key: "elsewhere".into(),
        context: None,
    });
    req.metadata_mut()
        .insert("flagd-selector", "flagSetId=other".parse().unwrap());
    assert_eq!(
        c2.resolve_boolean(req).await.unwrap().into_inner().value,
        Some(true)
    );
    assert_eq!(
        c2.resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "elsewhere".into(),
            context: None
        })
        .await
        .unwrap_err()
        .code(),
        tonic::Code::NotFound
    );
    // v1's ResolveAll.
    let all = c1
        .resolve_all(v1::ResolveAllRequest {
            context: ctx_struct("vip"),
        })
        .await
        .unwrap()
        .into_inner();
    let mut keys: Vec<_> = all.flags.keys().cloned().collect();
    keys.sort();
    // Disabled flags are left out, as flagd does.
    assert_eq!(keys, ["count", "on-flag", "ratio", "targeted"]);
    assert_eq!(
        all.flags["count"].value,
        Some(v1::any_flag::Value::DoubleValue(10.0))
    );
    assert_eq!(all.flags["targeted"].reason, "TARGETING_MATCH");

    // EventStream: ready at once, keep_alive on silence, a change, shutdown.
    let mut stream = c2
        .event_stream(v2::EventStreamRequest {})
        .await
        .unwrap()
        .into_inner();
    let kind = |e: &v2::EventStreamResponse| e.r#type.clone();
    assert_eq!(
        kind(&stream.message().await.unwrap().unwrap()),
        "provider_ready"
    );
    assert_eq!(
        kind(
            &tokio::time::timeout(PATIENCE, stream.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
        ),
        "keep_alive"
    );
    std::fs::write(
        repo.path().join("flags/a.yaml"),
        WIRE_FLAGS
            .replace(
                "on-flag: { default: true }",
                "on-flag: { default: false }\n  new-flag: {}",
            )
            .replace(
                "  ratio:\n    type: float\n    variants: { half: 0.5 }\n    default: half\n",
                "",
            ),
    )
    .unwrap();
    // A stream opened without a selector hears of every namespace (Node's provider opens its
    // stream that way even when its calls carry a selector).
    std::fs::write(
        repo.path().join("flags/other.yaml"),
        "namespace: other\nflags:\n  elsewhere: { default: false }\n",
    )
    .unwrap();
    git_commit_all(repo.path());
    let change = loop {
        let e = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if e.r#type != "keep_alive" {
            break e;
        }
    };
    assert_eq!(change.r#type, "configuration_change");
    let flags = prost_to_json(&prost_types::Value {
        kind: Some(prost_types::value::Kind::StructValue(change.data.unwrap())),
    });
    assert_eq!(
        flags["flags"],
        json!({ "new-flag": { "type": "write" }, "on-flag": { "type": "update" }, "ratio": { "type": "delete" }, "elsewhere": { "type": "update" } })
    );
    server.stop().await;
    let mut last = None;
    while let Ok(Some(e)) = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .unwrap()
    {
        last = Some(e.r#type);
    }
    assert_eq!(last.as_deref(), Some("provider_shutdown"));
}

/// `provider_ready` waits until something can be served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagd_ready_waits_for_a_snapshot() {
    let repo = repo_with("flags: [\n");
    let server = TestServer::start(
        git_reloader(repo.path(), true).unwrap(),
        Tokens::default(),
        Options::default(),
    )
    .await;
    let channel = server.channel().await;
    let mut c2 = v2::service_client::ServiceClient::new(channel);
    let mut stream = c2
        .event_stream(v2::EventStreamRequest {})
        .await
        .unwrap()
        .into_inner();
    let err = c2
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "on-flag".into(),
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    // Nothing while nothing can be served (a ready event would arrive within milliseconds).
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.message())
            .await
            .is_err()
    );
    commit(repo.path(), WIRE_FLAGS, "fixed");
    let first = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.r#type, "provider_ready");
    let r = c2
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "on-flag".into(),
            context: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.value, Some(true));
    server.stop().await;
}

fn git_commit_all(repo: &Path) {
    crate::helpers::git(repo, &["add", "-A"]);
    crate::helpers::git(repo, &["commit", "-q", "-m", "change"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofrep_wire_contract() {
    let repo = repo_with(WIRE_FLAGS);
    let server = TestServer::start(
        git_reloader(repo.path(), false).unwrap(),
        Tokens::parse("k1"),
        Options::default(),
    )
    .await;
    let auth = [("Authorization", "Bearer k1")];
    let (code, _, body) = http_post(server.http, "/ofrep/v1/evaluate/flags/count", &[], "{}").await;
    assert_eq!(code, 401, "{body}");
    let (code, _, body) = http_post(
        server.http,
        "/ofrep/v1/evaluate/flags/count",
        &[("X-API-Key", "k1")],
        "{}",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // Integers stay integers, floats floats; variant always present.
    assert_eq!(
        body,
        r#"{"key":"count","value":10,"reason":"STATIC","variant":"ten","metadata":{"flagSetId":"default"}}"#
    );
    let (_, _, body) = http_post(server.http, "/ofrep/v1/evaluate/flags/ratio", &auth, "").await;
    assert!(body.contains(r#""value":0.5"#), "{body}");
    let (_, _, body) = http_post(
        server.http,
        "/ofrep/v1/evaluate/flags/targeted",
        &auth,
        r#"{"context":{"targetingKey":"vip"}}"#,
    )
    .await;
    let v: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            v["value"].clone(),
            v["reason"].clone(),
            v["variant"].clone()
        ),
        (json!(true), json!("TARGETING_MATCH"), json!("on"))
    );
    let (code, _, body) =
        http_post(server.http, "/ofrep/v1/evaluate/flags/missing", &auth, "{}").await;
    assert_eq!(code, 404);
    assert_eq!(
        serde_json::from_str::<Json>(&body).unwrap()["errorCode"],
        "FLAG_NOT_FOUND"
    );
    let (code, _, body) = http_post(
        server.http,
        "/ofrep/v1/evaluate/flags/count",
        &auth,
        "{not json",
    )
    .await;
    assert_eq!(
        (
            code,
            serde_json::from_str::<Json>(&body).unwrap()["errorCode"].clone()
        ),
        (400, json!("PARSE_ERROR"))
    );
    let (code, _, body) = http_post(
        server.http,
        "/ofrep/v1/evaluate/flags/count",
        &auth,
        r#"{"context":[1]}"#,
    )
    .await;
    assert_eq!(
        (
            code,
            serde_json::from_str::<Json>(&body).unwrap()["errorCode"].clone()
        ),
        (400, json!("INVALID_CONTEXT"))
    );
    // Bulk with ETag, and 304 on a match.
    let (code, head, body) = http_post(
        server.http,
        "/ofrep/v1/evaluate/flags",
        &auth,
        r#"{"context":{"targetingKey":"vip"}}"#,
    )
    .await;
    assert_eq!(code, 200);
    let bulk: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(bulk["flags"].as_array().unwrap().len(), 5);
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .to_owned();
    let with_etag = [
        ("Authorization", "Bearer k1"),
        ("If-None-Match", etag.as_str()),
    ];
    let (code, _, body) = http_post(
        server.http,
        "/ofrep/v1/evaluate/flags",
        &with_etag,
        r#"{"context":{"targetingKey":"vip"}}"#,
    )
    .await;
    assert_eq!((code, body.as_str()), (304, ""));
    // Another context is another answer.
    let (code, _, _) = http_post(
        server.http,
        "/ofrep/v1/evaluate/flags",
        &with_etag,
        r#"{"context":{"targetingKey":"other"}}"#,
    )
    .await;
    assert_eq!(code, 200);
    server.stop().await;
}
