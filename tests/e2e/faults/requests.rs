//! Requests and lifecycle: oversized bodies, deep contexts, the drain window after SIGTERM,
//! `/metrics` behind tokens.

use super::*;

/// Before the fix `--max-message-bytes` applied to gRPC only: OFREP took 100 KB and the Unleash
/// metrics route 1.5 MB with a limit of 1,000 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies_are_held_to_max_message_bytes() {
    let dir = small_dir("one");
    let server = Server::start(
        &[dir.path().to_str().unwrap(), "--max-message-bytes", "1000"],
        &[],
    )
    .await;
    let mut verdicts = Verdicts::default();
    let small = post_status(
        server.http,
        "/ofrep/v1/evaluate/flags/a",
        br#"{"context":{"targetingKey":"k"}}"#.to_vec(),
    )
    .await;
    verdicts.check(small == Ok(200), || {
        format!("a small OFREP request: {small:?}")
    });
    let ofrep = format!(
        r#"{{"context":{{"targetingKey":"k","pad":"{}"}}}}"#,
        "x".repeat(100_000)
    );
    let ofrep = post_status(
        server.http,
        "/ofrep/v1/evaluate/flags/a",
        ofrep.into_bytes(),
    )
    .await;
    verdicts.check(ofrep == Ok(413), || {
        format!("a 100 KB OFREP request: {ofrep:?}")
    });
    let metrics = format!(
        r#"{{"appName":"a","instanceId":"i","bucket":{{"start":"2026-01-01T00:00:00Z","stop":"2026-01-01T00:01:00Z","toggles":{{"t":{{"yes":1,"no":0}}}}}},"pad":"{}"}}"#,
        "x".repeat(1_500_000)
    );
    let metrics = post_status(server.http, "/api/client/metrics", metrics.into_bytes()).await;
    verdicts.check(metrics == Ok(413), || {
        format!("a 1.5 MB Unleash metrics post: {metrics:?}")
    });
    verdicts.finish();
}

fn nested_json(depth: usize) -> String {
    (0..depth).fold("1".to_owned(), |inner, _| format!(r#"{{"a":{inner}}}"#))
}

fn nested_value(depth: usize) -> prost_types::Value {
    use prost_types::value::Kind;
    (0..depth).fold(
        prost_types::Value {
            kind: Some(Kind::NumberValue(1.0)),
        },
        |inner, _| prost_types::Value {
            kind: Some(Kind::StructValue(prost_types::Struct {
                fields: [("a".to_owned(), inner)].into_iter().collect(),
            })),
        },
    )
}

/// Before the fix a context nested 33 levels deep hit protobuf's recursion limit and gRPC
/// answered INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_nested_33_deep_is_invalid_argument() {
    let dir = small_dir("one");
    let server = Server::start(&[dir.path().to_str().unwrap()], &[]).await;
    let mut verdicts = Verdicts::default();
    let body = format!(
        r#"{{"context":{{"targetingKey":"k","a":{}}}}}"#,
        nested_json(33)
    );
    let ofrep = post_status(server.http, "/ofrep/v1/evaluate/flags/a", body.into_bytes()).await;
    verdicts.check(ofrep == Ok(400), || format!("OFREP: {ofrep:?}"));
    let answer = server
        .client()
        .await
        .evaluate(proto::EvaluateRequest {
            flag: "a".into(),
            context: Some(proto::Context {
                targeting_key: "k".into(),
                attributes: [("a".to_owned(), nested_value(33))].into_iter().collect(),
            }),
            ..Default::default()
        })
        .await;
    verdicts.check(
        answer
            .as_ref()
            .is_err_and(|e| e.code() == tonic::Code::InvalidArgument),
        || format!("gRPC Evaluate: {answer:?}"),
    );
    verdicts.finish();
}

// ---------------------------------------------------------------------------------------------
// 10, 11. Shutdown and /metrics
// ---------------------------------------------------------------------------------------------

/// Before the fix SIGTERM closed the listeners at once: the documented 503 during shutdown could
/// not be seen (connection refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_during_the_drain_window() {
    let dir = small_dir("one");
    let server = Server::start(
        &[dir.path().to_str().unwrap()],
        &[("VEXIL_DRAIN_WINDOW", "5s")],
    )
    .await;
    assert_eq!(server.get("/readyz").await.map(|r| r.0), Some(200));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut verdicts = Verdicts::default();
    // New connections until one sees 503 (200 until the signal is handled).
    let readyz = poll(PATIENCE, || async {
        match get(server.http, "/readyz", &[]).await {
            Some((200, _)) => None,
            Some((503, body)) => Some(Ok(body)),
            other => Some(Err(other)),
        }
    })
    .await;
    verdicts.check(matches!(readyz, Some(Ok(_))), || {
        format!("after SIGTERM /readyz on a new connection gave {readyz:?} (None: no answer, refused) before any 503")
    });
    if matches!(readyz, Some(Ok(_))) {
        // The window lasts 5 s: the next probes come well within it.
        for _ in 0..3 {
            let again = get(server.http, "/readyz", &[]).await;
            verdicts.check(again.as_ref().is_some_and(|(c, _)| *c == 503), || {
                format!(
                    "a later /readyz in the drain window gave {again:?} (None: no answer, refused)"
                )
            });
        }
        let health = async {
            let channel = Channel::from_shared(format!("http://{}", server.grpc))
                .unwrap()
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .map(|r| r.into_inner().status)
                .map_err(|e| e.to_string())
        };
        let health = tokio::time::timeout(Duration::from_secs(10), health).await;
        verdicts.check(
            matches!(health, Ok(Ok(s)) if s == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32),
            || format!("health during the drain window: {health:?}"),
        );
    }
    let exit = server.process.exited(PATIENCE).await;
    verdicts.check(exit.as_ref().is_ok_and(|(s, _)| s.success()), || {
        format!("after the drain window: {exit:?}")
    });
    verdicts.finish();
}

/// Before the fix `/metrics` (flag names, the revision) was open with tokens on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_token_unless_public() {
    let dir = small_dir("one");
    let path = dir.path().to_str().unwrap();
    let guarded = Server::start(&[path], &[("VEXIL_TOKENS", "t1")]).await;
    let public = Server::start(
        &[path],
        &[("VEXIL_TOKENS", "t1"), ("VEXIL_PUBLIC_METRICS", "true")],
    )
    .await;
    let code = |r: Option<(u16, String)>| r.map(|r| r.0);
    let mut verdicts = Verdicts::default();
    let cases = [
        (&guarded, "/metrics", None, 401),
        (&guarded, "/metrics", Some("Bearer t2"), 401),
        (&guarded, "/metrics", Some("Bearer t1"), 200),
        (&guarded, "/healthz", None, 200),
        (&guarded, "/readyz", None, 200),
        (&public, "/metrics", None, 200),
    ];
    for (server, path, token, expected) in cases {
        let headers: Vec<(&str, &str)> = token.map(|t| ("Authorization", t)).into_iter().collect();
        let got = code(get(server.http, path, &headers).await);
        verdicts.check(got == Some(expected), || {
            format!(
                "{path} with token {token:?}{}: {got:?}, expected {expected}",
                if std::ptr::eq(server, &public) {
                    " and --public-metrics"
                } else {
                    ""
                }
            )
        });
    }
    verdicts.finish();
}
