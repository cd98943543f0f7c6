//! OFREP change events in a real browser: the OpenFeature web SDK with the OFREP web provider
//! (tests/conformance/browser, scenario `sse`) in headless Chromium, on another origin than
//! `vexil serve` (a local git ref, tokens, `--cors-origin`). Once the page's provider has opened
//! the stream the bulk answer advertised (with its stream token: EventSource sends no header), a
//! commit changes the flag, and the same page, never reloaded and not polling, shows the new
//! value.

use super::*;
use crate::browser::{BrowserPage, drive};

const TOKEN: &str = "browser-sse-token";

fn banner(text: &str) -> String {
    format!(
        "namespace: checkout\nflags:\n  banner:\n    type: string\n    variants: {{ shown: \"{text}\" }}\n    default: shown\n"
    )
}

/// The count of opened OFREP streams, from `/metrics`.
async fn streams_opened(server: &Server) -> u64 {
    let bearer = format!("Bearer {TOKEN}");
    let (_, _, metrics) = crate::helpers::http(
        server.http,
        "GET",
        "/metrics",
        &[("Authorization", &bearer)],
        "",
    )
    .await;
    metrics
        .lines()
        .find(|l| {
            l.starts_with(r#"vexil_requests_total{front="ofrep",method="events",code="200"}"#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_provider_shows_a_commit_without_reloading() {
    let page = BrowserPage::start().await;
    let origin = format!("http://{}", page.addr);
    let repo = repo(&[("checkout.yaml", &banner("before"))]);
    let server = serve(
        repo.path(),
        &["--cors-origin", &origin],
        &[("VEXIL_TOKENS", TOKEN)],
    )
    .await;
    let config = serde_json::json!({
        "scenario": "sse",
        "vexil": format!("http://{}", server.http),
        "prefix": "/ns/checkout",
        "token": TOKEN,
        "flag": "banner",
        "waitMs": 30000,
    });
    page.write("config.json", &config.to_string());
    let url = format!("{origin}/page.html");
    let driven = tokio::task::spawn_blocking(move || drive(&url));
    // The page's provider has read the bulk answer and opened its stream.
    wait_for("the page to open the OFREP stream", || async {
        streams_opened(&server).await >= 1
    })
    .await;
    commit(repo.path(), &[("checkout.yaml", &banner("after"))], "after");
    let result = driven.await.unwrap();
    assert_eq!(result["error"], Json::Null, "{result}");
    assert_eq!(result["first"], "before", "{result}");
    assert_eq!(result["now"], "after", "{result}");
    assert_eq!(result["sameDocument"], true, "{result}");
    assert!(result["changes"].as_u64().unwrap() >= 1, "{result}");
}
