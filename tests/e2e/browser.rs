//! The real browser SDKs in headless Chromium (Debian's `chromium`, driven by puppeteer-core)
//! against `vexil serve` on another origin: the OpenFeature web SDK with the OFREP web provider,
//! and `unleash-proxy-client` on the Unleash frontend API. A static server started here serves
//! tests/conformance/browser/page.html and its bundle (esbuild, at test time) on 127.0.0.1:X;
//! `vexil serve --cors-origin http://127.0.0.1:X` listens on 127.0.0.1:Y. The page's answers
//! for every flag of a namespace and a corpus of contexts must equal Vexil's evaluation (the
//! Unleash SDK both with GET and with `usePOSTrequests`, and once more in Node); ETags read
//! across origins revalidate to 304, and usage metrics are accepted. The same page from
//! `http://localhost:X`, an origin not allowed, must get nothing through.
//!
//! The harness is reusable: `BrowserPage` (npm packages, bundle, static server) and `drive`
//! (one page load, its `window.__vexil` back as JSON) know nothing of the scenario.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Map, Value as Json, json};
use vexil_core::{AttrValue, Context, FlagType, Snapshot};

use crate::helpers::{example_snapshot, repo_root};
use crate::openfeature::{candidates, insert_nested, is_random, named_ids, run};

/// The namespace the page reads (through `/ns/checkout/...`).
const NAMESPACE: &str = "checkout";
/// Contexts the page evaluates every flag for.
const CONTEXTS: usize = 24;
const TOKEN: &str = "browser-token";
/// What the Unleash SDK adds to every context (its `appName` and `environment` options).
const APP_NAME: &str = "vexil-browser-test";
const ENVIRONMENT: &str = "default";

/// tests/conformance/browser with its locked packages installed (once per run).
fn browser_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo_root().join("tests/conformance/browser");
        let lock = std::fs::read_to_string(dir.join("package-lock.json")).unwrap();
        let marker = dir.join("node_modules/.vexil-lock.json");
        if std::fs::read_to_string(&marker).ok().as_deref() != Some(lock.as_str()) {
            run(
                std::process::Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(&dir),
                "npm ci the browser SDKs",
            );
            std::fs::write(&marker, lock).unwrap();
        }
        dir
    })
}

/// The page's files, served by a static server on 127.0.0.1 (its own origin).
pub(crate) struct BrowserPage {
    pub www: tempfile::TempDir,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl BrowserPage {
    /// Bundles page.js (esbuild from the locked packages), copies page.html, and serves both.
    pub async fn start() -> BrowserPage {
        let dir = browser_dir();
        let www = tempfile::tempdir().unwrap();
        run(
            std::process::Command::new(dir.join("node_modules/.bin/esbuild"))
                .arg("page.js")
                .args(["--bundle", "--format=esm", "--log-level=warning"])
                .arg(format!(
                    "--outfile={}",
                    www.path().join("page.bundle.js").display()
                ))
                .current_dir(dir),
            "esbuild the page",
        );
        std::fs::copy(dir.join("page.html"), www.path().join("page.html")).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let root = www.path().to_owned();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let root = root.clone();
            async move { serve_file(&root, uri.path()) }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        BrowserPage { www, addr, task }
    }

    /// Writes a file the page reads (config.json).
    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.www.path().join(name), text).unwrap();
    }
}

impl Drop for BrowserPage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A file of the page's directory (plain names only), with its type.
fn serve_file(root: &Path, path: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let name = path.trim_start_matches('/');
    let kind = match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    }
    match std::fs::read(root.join(name)) {
        Ok(bytes) => ([(axum::http::header::CONTENT_TYPE, kind)], bytes).into_response(),
        Err(_) => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

/// Loads `url` in headless Chromium and returns the page's `window.__vexil`.
pub(crate) fn drive(url: &str) -> Json {
    let out = std::process::Command::new("node")
        .arg("drive.mjs")
        .arg(url)
        .current_dir(browser_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "drive.mjs {url} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "drive.mjs printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `vexil serve` (the binary) on the example repository, with a token and CORS for `origin`.
struct Served {
    child: tokio::process::Child,
    http: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn serve(origin: &str) -> Served {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let flags = repo_root().join("flags");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vexil"))
        .arg("serve")
        .arg(&flags)
        .args(crate::helpers::LOOPBACK_PORTS)
        .arg("--token-file")
        .arg(&tokens)
        .args(["--cors-origin", origin])
        .current_dir(dir.path())
        .env("VEXIL_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let http = line
        .split("HTTP on ")
        .nth(1)
        .unwrap()
        .split([',', ' '])
        .next()
        .unwrap()
        .parse()
        .unwrap();
    Served {
        child,
        http,
        _dir: dir,
    }
}

/// One context as each SDK is given it, and as Vexil receives it from each.
struct Case {
    ofrep: Json,
    unleash: Json,
    ofrep_context: Context,
    unleash_context: Context,
}

/// The corpus: no context, then targeting keys the flags name or made up, each with text
/// attributes drawn from the operands the flags compare with (text: Unleash properties are
/// text; Vexil reads numbers from text).
fn cases(snapshot: &Snapshot) -> Vec<Case> {
    let pool: Vec<(String, Vec<String>)> = candidates(snapshot)
        .into_iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "userId" | "properties" | "appName" | "environment"
            )
        })
        .map(|(name, values)| {
            let texts = values
                .iter()
                .filter_map(|v| match v {
                    Json::String(s) => Some(s.clone()),
                    Json::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect::<Vec<_>>();
            (name, texts)
        })
        .filter(|(_, texts)| !texts.is_empty())
        .collect();
    let ids = named_ids(snapshot);
    let mut rng = fastrand::Rng::with_seed(15);
    (0..CONTEXTS)
        .map(|i| {
            let key = match i {
                0 => None,
                _ if i % 2 == 1 && !ids.is_empty() => Some(ids[rng.usize(..ids.len())].clone()),
                _ => Some(format!("user-{}", rng.u32(..10_000))),
            };
            let attrs: Vec<(String, String)> = if i == 0 {
                Vec::new()
            } else {
                pool.iter()
                    .filter_map(|(name, texts)| {
                        let value = &texts[rng.usize(..texts.len())];
                        rng.bool().then(|| (name.clone(), value.clone()))
                    })
                    .collect()
            };
            case(i, key, &attrs)
        })
        .collect()
}

fn case(i: usize, key: Option<String>, attrs: &[(String, String)]) -> Case {
    // OFREP: targetingKey and attributes, dotted names as nested objects.
    let mut ofrep = Map::new();
    for (name, value) in attrs {
        insert_nested(&mut ofrep, name, json!(value));
    }
    let mut ofrep_context = Context::new();
    ofrep_context.targeting_key = key.clone();
    for (name, value) in &ofrep {
        ofrep_context
            .attributes
            .insert(name.clone(), AttrValue::from_json(value));
    }
    if let Some(key) = &key {
        ofrep.insert("targetingKey".into(), json!(key));
    }
    // Unleash: userId, a session id (else the SDK draws one), the rest as properties (flat
    // names); the SDK adds appName and environment.
    let session = attrs
        .iter()
        .find(|(n, _)| n == "sessionId")
        .map_or_else(|| format!("s-{i}"), |(_, v)| v.clone());
    let mut properties = Map::new();
    let mut unleash_context = Context::new();
    unleash_context.targeting_key = key.clone();
    for (name, value) in attrs.iter().filter(|(n, _)| n != "sessionId") {
        properties.insert(name.clone(), json!(value));
        unleash_context
            .attributes
            .insert(name.clone(), AttrValue::String(value.clone()));
    }
    for (name, value) in [
        ("sessionId", session.as_str()),
        ("appName", APP_NAME),
        ("environment", ENVIRONMENT),
    ] {
        unleash_context
            .attributes
            .insert(name.to_owned(), AttrValue::String(value.to_owned()));
    }
    let mut unleash = json!({ "sessionId": session, "properties": properties });
    if let Some(key) = &key {
        unleash["userId"] = json!(key);
    }
    Case {
        ofrep: Json::Object(ofrep),
        unleash,
        ofrep_context,
        unleash_context,
    }
}

fn type_name(t: FlagType) -> &'static str {
    match t {
        FlagType::Boolean => "boolean",
        FlagType::String => "string",
        FlagType::Integer => "integer",
        FlagType::Float => "float",
        FlagType::Object => "object",
    }
}

/// A JSON value as the page holds it: numbers compared as numbers (JavaScript has one kind).
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// What `unleash-proxy-client` must show for a Vexil answer: `isEnabled` for a boolean flag,
/// else the variant served with its value as payload.
fn unleash_mismatch(flag_type: FlagType, want: &vexil_core::Variant, got: &Json) -> Option<String> {
    let enabled = got["enabled"].as_bool();
    if flag_type == FlagType::Boolean {
        let want_on = want.value.to_json() == json!(true);
        return (enabled != Some(want_on))
            .then(|| format!("isEnabled {enabled:?}, Vexil {want_on}"));
    }
    let variant = &got["variant"];
    let payload = &variant["payload"];
    let text = payload["value"].as_str().unwrap_or("");
    let value = match payload["type"].as_str() {
        Some("string") => Json::String(text.to_owned()),
        Some("number") => text.parse::<f64>().map_or(Json::Null, |n| json!(n)),
        Some("json") => serde_json::from_str(text).unwrap_or(Json::Null),
        _ => Json::Null,
    };
    let ok = enabled == Some(true)
        && variant["name"].as_str() == Some(&*want.name)
        && same(&value, &want.value.to_json());
    (!ok).then(|| {
        format!(
            "variant {variant}, Vexil {} = {}",
            want.name,
            want.value.to_json()
        )
    })
}

/// unleash-proxy-client's two runs (GET, `usePOSTrequests`) from a page's or Node's result:
/// no error, the ETag read, the same context revalidated with its toggles kept, an answer per
/// context.
fn unleash_answers(result: &Json, contexts: usize) -> Vec<(&'static str, &Vec<Json>)> {
    let mut runs = Vec::new();
    for run in ["unleash", "unleashPost"] {
        let r = &result[run];
        assert_eq!(r["errors"], json!([]), "{run}: {result}");
        assert!(
            r["etag"].as_str().is_some_and(|e| e.starts_with('"')),
            "{run}: {r}"
        );
        assert_eq!(r["kept"], json!(true), "{run}: {r}");
        let answers = r["answers"]
            .as_array()
            .unwrap_or_else(|| panic!("{run}: {result}"));
        assert_eq!(answers.len(), contexts);
        runs.push((run, answers));
    }
    runs
}

/// Every Unleash answer against Vexil's for the context the SDK sent: the mismatches, and how
/// many answers were compared.
fn compare_unleash(
    snapshot: &Snapshot,
    namespace: &vexil_core::Namespace,
    cases: &[Case],
    runs: &[(&str, &Vec<Json>)],
) -> (Vec<String>, usize) {
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for (i, case) in cases.iter().enumerate() {
        for flag in &namespace.flags {
            let key = &*flag.key;
            let want = snapshot
                .evaluate(NAMESPACE, key, &case.unleash_context)
                .unwrap();
            for (run, answers) in runs {
                let got = &answers[i][key];
                // A `percentage_of_time` flag: one of its variants, whichever.
                let why = if is_random(namespace, flag) {
                    flag.variants
                        .iter()
                        .all(|v| unleash_mismatch(flag.flag_type, v, got).is_some())
                        .then(|| format!("{got} is none of the flag's variants"))
                } else {
                    unleash_mismatch(flag.flag_type, want.variant, got)
                };
                if let Some(why) = why {
                    mismatches.push(format!("{run} {key} for {}: {why}", case.unleash));
                }
                compared += 1;
            }
        }
    }
    (mismatches, compared)
}

/// unleash-proxy-client in Node on the page's config (node-unleash.mjs).
fn node_unleash(config: &Path) -> Json {
    let out = std::process::Command::new("node")
        .arg("node-unleash.mjs")
        .arg(config)
        .current_dir(browser_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node-unleash.mjs failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sdks_across_origins_answer_like_vexil() {
    let snapshot = example_snapshot();
    let page = BrowserPage::start().await;
    let port = page.addr.port();
    let allowed = format!("http://127.0.0.1:{port}");
    let mut vexil = serve(&allowed).await;
    let (_, namespace) = snapshot
        .namespaces()
        .iter()
        .enumerate()
        .find(|(_, n)| &*n.name == NAMESPACE)
        .unwrap();
    let flags: Vec<Json> = namespace
        .flags
        .iter()
        .map(|f| json!({ "key": &*f.key, "type": type_name(f.flag_type) }))
        .collect();
    let cases = cases(snapshot);
    let config = json!({
        "scenario": "answers",
        "vexil": format!("http://{}", vexil.http),
        "prefix": format!("/ns/{NAMESPACE}"),
        "token": TOKEN,
        "appName": APP_NAME,
        "environment": ENVIRONMENT,
        "flags": flags,
        "contexts": cases.iter().map(|c| json!({ "ofrep": c.ofrep, "unleash": c.unleash })).collect::<Vec<_>>(),
    });
    page.write("config.json", &config.to_string());

    // From the allowed origin: every answer of both SDKs is Vexil's.
    let result = drive(&format!("{allowed}/page.html"));
    assert_eq!(result["origin"], json!(allowed), "{result}");
    assert_eq!(result["fetch"]["status"], json!(200), "{result}");
    // The ETag crossed the origin (exposed), so the providers can send If-None-Match.
    assert!(
        result["fetch"]["etag"]
            .as_str()
            .is_some_and(|e| e.starts_with('"')),
        "{result}"
    );
    assert_eq!(result["fetch"]["revalidated"], json!(304), "{result}");
    let ofrep = result["ofrep"]["answers"]
        .as_array()
        .unwrap_or_else(|| panic!("{result}"));
    let unleash_runs = unleash_answers(&result, cases.len());
    assert_eq!(ofrep.len(), cases.len());
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for (i, case) in cases.iter().enumerate() {
        for flag in &namespace.flags {
            let key = &*flag.key;
            // A `percentage_of_time` flag draws on every evaluation: its answer must be one of
            // its variants, whichever.
            let random = is_random(namespace, flag);
            let ofrep_want = snapshot
                .evaluate(NAMESPACE, key, &case.ofrep_context)
                .unwrap();
            let got = &ofrep[i][key];
            let ofrep_ok = |want: &vexil_core::Variant| {
                same(&got["value"], &want.value.to_json())
                    && got["variant"].as_str() == Some(&*want.name)
                    && got["errorCode"].is_null()
            };
            let ofrep_ok = if random {
                flag.variants.iter().any(ofrep_ok)
            } else {
                ofrep_ok(ofrep_want.variant)
            };
            if !ofrep_ok {
                mismatches.push(format!(
                    "OFREP {key} for {}: page {got}, Vexil {} = {}",
                    case.ofrep,
                    ofrep_want.variant.name,
                    ofrep_want.variant.value.to_json()
                ));
            }
            compared += 1;
        }
    }
    let (unleash_mismatches, unleash_compared) =
        compare_unleash(snapshot, namespace, &cases, &unleash_runs);
    mismatches.extend(unleash_mismatches);
    compared += unleash_compared;
    assert!(
        mismatches.is_empty(),
        "{} of {compared} browser answers differ from Vexil's:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    // Both SDKs saw distinct answers across the corpus (the comparison is not vacuous).
    for sdk in [ofrep, unleash_runs[0].1, unleash_runs[1].1] {
        let distinct: std::collections::BTreeSet<String> =
            sdk.iter().map(Json::to_string).collect();
        assert!(distinct.len() > 2, "too few distinct answers: {distinct:?}");
    }

    // The same SDK in Node (no browser, no CORS): the same answers.
    let node = node_unleash(&page.www.path().join("config.json"));
    let node_runs = unleash_answers(&node, cases.len());
    let (node_mismatches, node_compared) = compare_unleash(snapshot, namespace, &cases, &node_runs);
    assert!(
        node_mismatches.is_empty(),
        "{} of {node_compared} answers in Node differ from Vexil's:\n{}",
        node_mismatches.len(),
        node_mismatches.join("\n")
    );

    // The revalidations reached Vexil as conditional requests it answered 304; each SDK run
    // sent its usage metrics (202).
    let (status, _, metrics) = crate::helpers::http(
        vexil.http,
        "GET",
        "/metrics",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let count = |front: &str, method: &str, code: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("vexil_requests_total{")
                    && l.contains(&format!("front=\"{front}\""))
                    && l.contains(&format!("method=\"{method}\""))
                    && l.contains(&format!("code=\"{code}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(count("frontend", "toggles", "304") >= 4.0, "{metrics}");
    assert!(count("ofrep", "bulk", "304") >= 1.0, "{metrics}");
    assert_eq!(count("frontend", "metrics", "202"), 4.0, "{metrics}");

    // The same page from another origin (localhost is not 127.0.0.1 to a browser): CORS
    // withholds every answer, from the page's own fetch and from both SDKs.
    let blocked = drive(&format!("http://localhost:{port}/page.html"));
    assert_eq!(
        blocked["origin"],
        json!(format!("http://localhost:{port}")),
        "{blocked}"
    );
    assert_eq!(
        blocked["fetch"]["error"],
        json!("TypeError: Failed to fetch"),
        "{blocked}"
    );
    assert!(blocked["fetch"]["status"].is_null(), "{blocked}");
    assert!(blocked["ofrep"]["error"].is_string(), "{blocked}");
    assert!(blocked["ofrep"]["answers"].is_null(), "{blocked}");
    for run in ["unleash", "unleashPost"] {
        assert!(blocked[run]["error"].is_string(), "{blocked}");
        assert_eq!(blocked[run]["toggles"], json!(0), "{blocked}");
    }

    vexil.child.kill().await.unwrap();
}
