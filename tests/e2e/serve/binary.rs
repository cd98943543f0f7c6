//! `vexil serve` as a process: signals, the token file, and what it serves without a source.

use super::*;

/// The binary: serves the example repository, reloads on SIGHUP, drains on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_stops_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let tmp = tempfile::tempdir().unwrap();
    let flags = crate::helpers::repo_root().join("flags");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vexil"))
        // No periodic rescan during the test: a new read attempt can only come from SIGHUP.
        .args(["serve", flags.to_str().unwrap()])
        .args(crate::helpers::LOOPBACK_PORTS)
        .args(["--rescan-interval", "1h"])
        .current_dir(tmp.path())
        .env("VEXIL_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr = |label: &str| -> SocketAddr {
        line.split(label)
            .nth(1)
            .unwrap()
            .split([',', ' '])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (grpc, http) = (addr("gRPC on "), addr("HTTP on "));
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlagServiceClient::new(channel);
    let mut req = eval_request("new-checkout");
    req.namespace = "checkout".into();
    req.context = ctx("user-43", &[]);
    let r = client.evaluate(req).await.unwrap().into_inner();
    assert_eq!(
        r.value.unwrap().kind,
        Some(proto::value::Kind::BoolValue(true))
    );
    assert_eq!(http_get(http, "/readyz").await.0, 200);

    let pid = child.id().unwrap().to_string();
    let before = attempts(&mut client).await;
    let kill = |signal: &str| {
        std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
    };
    assert!(kill("-HUP").success());
    wait_until("SIGHUP to reload", || {
        let mut client = client.clone();
        async move { attempts(&mut client).await > before }
    })
    .await;

    let mut watch = client
        .watch(proto::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().kind(),
        Kind::Current
    );
    assert!(kill("-TERM").success());
    let end = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .unwrap();
    assert!(matches!(end, Ok(None)), "the stream ends cleanly: {end:?}");
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// A secret file that holds no secret stops the start (serving would mean no authentication):
/// the token file, and the webhook secret.
#[test]
fn secret_files_without_a_secret_are_refused() {
    let rows = [
        ("--token-file", "# no tokens yet\n\n", "hold no token"),
        ("--webhook-secret-file", "\n", "is empty"),
    ];
    for (option, content, expected) in rows {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("secret");
        std::fs::write(&file, content).unwrap();
        let out = crate::helpers::vexil(&[
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--sync-addr",
            "off",
            option,
            file.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{option}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{option}: {stderr}");
    }
}

/// An origin that is not one stops the start, naming it (`--cors-origin` and its variable).
#[test]
fn bad_cors_origins_are_refused() {
    let serve = [
        "serve",
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ];
    let mut args = serve.to_vec();
    args.extend(["--cors-origin", "https://app.example.com/"]);
    let out = crate::helpers::vexil(&args);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--cors-origin `https://app.example.com/` is not an origin"),
        "{stderr}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vexil"))
        .args(serve)
        .env("VEXIL_CORS_ORIGINS", "https://ok.example,app.example.com")
        .current_dir(crate::helpers::repo_root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`app.example.com` is not an origin"),
        "{stderr}"
    );
}

/// Without a source, `vexil serve` serves `./flags` when there is one (the README's run
/// command, from the repository), else the example repository built into the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_a_source_uses_flags_or_the_embedded_example() {
    use tokio::io::AsyncBufReadExt;
    let elsewhere = tempfile::tempdir().unwrap();
    let root = crate::helpers::repo_root();
    for (dir, expected) in [
        (root.as_path(), "directory flags/"),
        (elsewhere.path(), "the example repository built into vexil"),
    ] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vexil"))
            .args(["serve"])
            .args(crate::helpers::LOOPBACK_PORTS)
            .current_dir(dir)
            .env("VEXIL_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(line.contains(&format!("serving {expected} ")), "{line}");
        let grpc: SocketAddr = line
            .split("gRPC on ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let channel = Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut req = eval_request("new-checkout");
        req.namespace = "checkout".into();
        req.context = ctx("user-43", &[]);
        let r = FlagServiceClient::new(channel)
            .evaluate(req)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.value.unwrap().kind,
            Some(proto::value::Kind::BoolValue(true))
        );
        child.kill().await.unwrap();
    }
}
