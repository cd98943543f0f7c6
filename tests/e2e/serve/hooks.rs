//! Push webhooks against a real `vexil serve` on a `file://` remote fetched once an hour: only
//! a hook can bring a new commit in time. A wrongly signed hook brings nothing; a signed GitHub
//! push brings the commit; a burst of 50 costs a few fetches, not 50; the log names the
//! delivery, never the secret or the signature.

use super::*;
use crate::faults::Server;

/// The shared reference's vector (git-webhooks.md): secret `vexil-secret`, body B.
const SECRET: &str = "vexil-secret";
const B: &str = r#"{"ref":"refs/heads/main","after":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}"#;
const B_SIGNATURE: &str = "sha256=2b18675952103bfb7d80631876e550ed46030c6fb8457f1f7bf170e11f0dce10";

async fn github_push(http: SocketAddr, signature: &str, delivery: &str) -> (u16, String) {
    github_push_of(http, B, signature, delivery).await
}

async fn github_push_of(
    http: SocketAddr,
    body: &str,
    signature: &str,
    delivery: &str,
) -> (u16, String) {
    let (code, _, body) = crate::helpers::http(
        http,
        "POST",
        "/hooks/github",
        &[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", delivery),
            ("X-Hub-Signature-256", signature),
        ],
        body,
    )
    .await;
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_push_brings_the_commit_before_the_next_fetch() {
    let repo = repo_with(&flags_yaml("one"));
    let tmp = tempfile::tempdir().unwrap();
    let secret_file = tmp.path().join("webhook-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let url = format!("file://{}", repo.path().display());
    let cache = tmp.path().join("cache");
    let server = Server::start(
        &[
            &url,
            "--flags-dir",
            "flags",
            "--fetch-interval",
            "1h",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--webhook-secret-file",
            secret_file.to_str().unwrap(),
        ],
        &[("VEXIL_LOG", "info")],
    )
    .await;
    let mut client = FlagServiceClient::new(
        Channel::from_shared(format!("http://{}", server.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    assert_eq!(eval_a(&mut client).await, "one");
    let before = attempts(&mut client).await;

    commit(repo.path(), &flags_yaml("two"), "two");
    // A wrong signature: refused, nothing fetched (the next poll is an hour away).
    let wrong = B_SIGNATURE.replace("2b18", "2b19");
    let (code, body) = github_push(server.http, &wrong, "bad-1").await;
    assert_eq!(code, 401, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        attempts(&mut client).await,
        before,
        "a refused hook read the source"
    );
    assert_eq!(eval_a(&mut client).await, "one");

    // The signed push: the commit is served within a bounded wait.
    let (code, body) = github_push(server.http, B_SIGNATURE, "good-1").await;
    assert_eq!(code, 202, "{body}");
    wait_until("the pushed commit to be served", || {
        let mut client = client.clone();
        async move { eval_a(&mut client).await == "two" }
    })
    .await;

    // A burst of 50 signed hooks announcing one commit: the read in progress and at most one
    // more; the hooks that come once the commit is served fetch nothing.
    let three = commit(repo.path(), &flags_yaml("three"), "three");
    let body = format!(r#"{{"ref":"refs/heads/main","after":"{three}"}}"#);
    let secret = vexil_server::WebhookSecret::new(SECRET.as_bytes()).unwrap();
    let signature: String = secret
        .sign(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let signature = format!("sha256={signature}");
    let before = attempts(&mut client).await;
    let burst: Vec<_> = (0..50)
        .map(|i| {
            let (http, body, signature) = (server.http, body.clone(), signature.clone());
            tokio::spawn(async move {
                github_push_of(http, &body, &signature, &format!("burst-{i}")).await
            })
        })
        .collect();
    let mut triggered = 0;
    for hook in burst {
        let (code, body) = hook.await.unwrap();
        assert!(
            code == 202 || (code == 200 && body.contains("read already")),
            "{code} {body}"
        );
        triggered += usize::from(code == 202);
    }
    assert!(triggered >= 1);
    wait_until("the burst's commit to be served", || {
        let mut client = client.clone();
        async move { eval_a(&mut client).await == "three" }
    })
    .await;
    // Let a queued read finish, then count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fetches = attempts(&mut client).await - before;
    assert!(
        (1..=2).contains(&fetches),
        "50 hooks caused {fetches} fetches"
    );
    // Announcing the served commit again fetches nothing.
    let (code, answer) = github_push_of(server.http, &body, &signature, "again").await;
    assert_eq!(code, 200, "{answer}");
    assert!(answer.contains("read already"), "{answer}");

    let (_, metrics) = http_get(server.http, "/metrics").await;
    let triggered_line = format!(
        "vexil_webhooks_total{{host=\"github\",outcome=\"triggered\"}} {}",
        triggered + 1
    );
    assert!(
        metrics.contains(&triggered_line),
        "{triggered_line}\n{metrics}"
    );
    assert!(
        metrics.contains("vexil_webhooks_total{host=\"github\",outcome=\"unauthorized\"} 1"),
        "{metrics}"
    );
    let log = server.log();
    assert!(
        log.contains("webhook: reading the source now") && log.contains("good-1"),
        "{log}"
    );
    assert!(!log.contains(SECRET), "the secret is in the log:\n{log}");
    assert!(
        !log.contains("2b1867595210"),
        "a signature is in the log:\n{log}"
    );
}
