//! The HTTP port's wire contracts as data. Every table in `tests/wire/*.yaml` (probes, OFREP,
//! the Flipper and Unleash mirrors, the push webhooks) is a list of requests and the answers they must get; each
//! request goes through `vexil_server::http::router` with `tower::ServiceExt::oneshot` (no
//! sockets), on the fixed flag repository `tests/wire/flags/`. The expected values were checked
//! against the protocol references; a change of behaviour fails here, naming the table, the
//! case and what was expected and what came back. The table format is in `tests/wire/README.md`.
#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use http::{HeaderMap, Request};
use serde::Deserialize;
use serde_json::Value as Json;
use tower::ServiceExt as _;
use vexil_core::ReloadOptions;
use vexil_core::source::MemorySource;
use vexil_server::{AppState, Options, Tokens};

/// The tables a run must find: a missing or empty one fails instead of passing silently.
const TABLES: [&str; 8] = [
    "probes.yaml",
    "ofrep.yaml",
    "flipper.yaml",
    "unleash.yaml",
    "frontend.yaml",
    "cors.yaml",
    "hooks.yaml",
    "streams.yaml",
];

/// What the 405 answers name as the place the flags live.
const SOURCE: &str = "directory tests/wire/flags";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    setup: Setup,
    request: Req,
    expect: Expect,
    /// Further requests, each the previous one with these changes (`{{etag}}`: the ETag of the
    /// previous answer).
    #[serde(default)]
    then: Vec<Step>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Setup {
    /// The server's tokens (none: no token needed).
    #[serde(default)]
    tokens: Vec<String>,
    /// `--max-message-bytes` (default 1 MiB).
    max_message_bytes: Option<usize>,
    /// `--public-metrics`.
    #[serde(default)]
    public_metrics: bool,
    /// The source is invalid from the start: no snapshot is served.
    #[serde(default)]
    no_snapshot: bool,
    /// The push webhooks' secret (none: webhooks are not configured).
    webhook_secret: Option<String>,
    /// Which pushes the webhooks read the source for (default: any).
    #[serde(default)]
    served_ref: ServedRefSetup,
    /// Files added to the flag repository for this case (path -> text), such as a
    /// repository config `vexil.yaml` or a namespace of its own.
    #[serde(default)]
    files: BTreeMap<String, String>,
    /// `--cors-origin` (none: no CORS).
    #[serde(default)]
    cors_origins: Vec<String>,
}

/// `any`, `default_branch`, or `{named: REF}` (as `--ref REF`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ServedRefSetup {
    #[default]
    Any,
    DefaultBranch,
    Named(String),
}

impl ServedRefSetup {
    fn served_ref(&self) -> vexil_server::ServedRef {
        match self {
            ServedRefSetup::Any => vexil_server::ServedRef::Any,
            ServedRefSetup::DefaultBranch => vexil_server::ServedRef::DefaultBranch,
            ServedRefSetup::Named(name) => vexil_server::ServedRef::Named(name.clone()),
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Req {
    /// GET unless given.
    method: Option<String>,
    /// Path and query.
    path: Option<String>,
    /// In a follow-up, merged over the previous request's (an empty value removes a header).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// The body as text ...
    body: Option<String>,
    /// ... or as JSON (sent compact) ...
    json: Option<Json>,
    /// ... or this many `x` bytes.
    body_size: Option<usize>,
    /// Send the body without `Content-Length` (as a stream of unknown length).
    #[serde(default)]
    chunked: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    #[serde(default)]
    request: Req,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    status: u16,
    /// Header name -> exact value, `present`, `absent`, or `{regex: ...}`. Headers not named
    /// are not checked.
    #[serde(default)]
    headers: BTreeMap<String, HeaderWant>,
    /// The body, exactly (after gzip decoding when `content-encoding: gzip`).
    text: Option<String>,
    /// The body matches this regular expression.
    text_regex: Option<String>,
    /// The body is this JSON (compared structurally: key order aside, exactly; `10` is not
    /// `10.0`).
    json: Option<Json>,
    /// The body is JSON holding at least this: objects need the keys given (others ignored),
    /// arrays need the same length, element by element.
    json_subset: Option<Json>,
    /// JSON pointers (`/segments`, `/features/0/strategies/0/segments`) the body must not have.
    #[serde(default)]
    json_absent: Vec<String>,
    /// Reads of the source the request caused (a webhook's trigger), counted once the reloader
    /// has nothing pending and no read in progress.
    reads: Option<u64>,
    /// The answer is an endless stream (SSE): only its first frame is read and checked.
    #[serde(default)]
    stream: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum HeaderWant {
    Exact(String),
    Regex { regex: String },
}

/// One table's failures and counts.
#[derive(Default)]
struct Report {
    failures: Vec<String>,
    requests: usize,
}

/// Server states by (max_message_bytes, public_metrics, no_snapshot, webhook secret, served
/// ref, files, CORS origins); tokens only change the router.
type StateKey = (
    Option<usize>,
    bool,
    bool,
    Option<String>,
    ServedRefSetup,
    BTreeMap<String, String>,
    Vec<String>,
);

struct World {
    files: Vec<(String, String)>,
    states: HashMap<StateKey, Arc<AppState>>,
    revision: String,
}

impl World {
    fn new(flags: &Path) -> World {
        let mut files: Vec<(String, String)> = std::fs::read_dir(flags)
            .unwrap_or_else(|e| panic!("{}: {e}", flags.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no flag files in {}", flags.display());
        let mut world = World {
            files,
            states: HashMap::new(),
            revision: String::new(),
        };
        let state = world.state(&Setup::default());
        world.revision = state.revision().expect("tests/wire/flags compiles");
        world
    }

    fn state(&mut self, setup: &Setup) -> Arc<AppState> {
        let key = (
            setup.max_message_bytes,
            setup.public_metrics,
            setup.no_snapshot,
            setup.webhook_secret.clone(),
            setup.served_ref.clone(),
            setup.files.clone(),
            setup.cors_origins.clone(),
        );
        if let Some(state) = self.states.get(&key) {
            return Arc::clone(state);
        }
        let mut options = Options {
            source: SOURCE.to_owned(),
            public_metrics: setup.public_metrics,
            webhook_secret: setup
                .webhook_secret
                .as_ref()
                .map(|s| vexil_server::WebhookSecret::new(s.as_bytes()).unwrap()),
            served_ref: setup.served_ref.served_ref(),
            cors: vexil_server::cors::CorsOrigins::parse(&setup.cors_origins).unwrap(),
            ..Options::default()
        };
        if let Some(max) = setup.max_message_bytes {
            options.limits.max_message_bytes = max;
        }
        let state = if setup.no_snapshot {
            let files = vec![("broken.yaml".to_owned(), "flags: [\n".to_owned())];
            let state = AppState::start(
                Box::new(MemorySource::new(SOURCE, files)),
                ReloadOptions {
                    start_empty: true,
                    ..ReloadOptions::default()
                },
                options,
            )
            .unwrap();
            // The first read (on the reloader's thread) has failed once this returns.
            state.reloader.reload().unwrap();
            state
        } else {
            let mut files = self.files.clone();
            files.extend(setup.files.clone());
            AppState::start(
                Box::new(MemorySource::new(SOURCE, files)),
                ReloadOptions::default(),
                options,
            )
            .unwrap()
        };
        self.states.insert(key, Arc::clone(&state));
        state
    }
}

fn wire_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/wire")
}

#[tokio::test]
async fn wire_tables() {
    let dir = wire_dir();
    let mut world = World::new(&dir.join("flags"));
    let mut tables: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    tables.sort();
    let names: Vec<String> = tables
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in TABLES {
        assert!(
            names.iter().any(|n| n == want),
            "tests/wire/{want} is missing"
        );
    }
    let mut failures = Vec::new();
    let mut summary = String::new();
    for (path, name) in tables.iter().zip(&names) {
        let label = format!("tests/wire/{name}");
        let text = std::fs::read_to_string(path).unwrap();
        let options = serde_saphyr::options! { strict_booleans: true };
        let cases: Vec<Case> = serde_saphyr::from_str_with_options(&text, options)
            .unwrap_or_else(|e| panic!("{label}: not a table of cases: {e}"));
        assert!(!cases.is_empty(), "{label}: no cases");
        let mut seen = std::collections::HashSet::new();
        let mut report = Report::default();
        for case in &cases {
            assert!(
                seen.insert(case.name.as_str()),
                "{label}: two cases named `{}`",
                case.name
            );
            run_case(&mut world, case, &mut report).await;
        }
        let _ = writeln!(
            summary,
            "{label}: {} cases, {} requests, {} failed",
            cases.len(),
            report.requests,
            report.failures.len()
        );
        failures.extend(report.failures.into_iter().map(|f| format!("{label}: {f}")));
    }
    eprint!("{summary}");
    assert!(
        failures.is_empty(),
        "{} wire contract mismatches:\n\n{}\n\n{summary}",
        failures.len(),
        failures.join("\n\n")
    );
}

async fn run_case(world: &mut World, case: &Case, report: &mut Report) {
    let state = world.state(&case.setup);
    let tokens = Tokens::parse(&case.setup.tokens.join("\n"));
    let mut request = case.request.clone();
    let mut etag: Option<String> = None;
    let steps = std::iter::once(&case.expect).chain(case.then.iter().map(|s| &s.expect));
    for (i, expect) in steps.enumerate() {
        if i > 0 {
            merge(&mut request, &case.then[i - 1].request);
        }
        let place = if i == 0 {
            format!("case `{}`", case.name)
        } else {
            format!("case `{}`, follow-up {i}", case.name)
        };
        let plain = Vars {
            revision: &world.revision,
            etag: etag.as_deref(),
            request_etag: None,
        };
        let request_etag = match request_etag(&request, &state, &plain) {
            Ok(tag) => tag,
            Err(e) => {
                report.failures.push(format!("{place}: bad request: {e}"));
                return;
            }
        };
        let vars = Vars {
            request_etag: Some(&request_etag),
            ..plain
        };
        let built = match build(&request, &vars) {
            Ok(r) => r,
            Err(e) => {
                report.failures.push(format!("{place}: bad request: {e}"));
                return;
            }
        };
        let describe = format!(
            "{} {}",
            built.method(),
            built.uri().path_and_query().map_or("", |p| p.as_str())
        );
        let router = vexil_server::http::router(Arc::clone(&state), tokens.clone());
        let reads_before = settled_reads(&state).await;
        let response = router.oneshot(built).await.unwrap();
        report.requests += 1;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let raw = if expect.stream {
            // A stream does not end: its first frame (the opening event) is what is checked.
            use tokio_stream::StreamExt as _;
            let mut frames = response.into_body().into_data_stream();
            match tokio::time::timeout(std::time::Duration::from_secs(10), frames.next()).await {
                Ok(Some(Ok(frame))) => frame,
                _ => Bytes::new(),
            }
        } else {
            axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap()
        };
        if let Some(want) = expect.reads {
            let got = settled_reads(&state).await - reads_before;
            if got != want {
                report.failures.push(format!(
                    "{place} ({describe}): expected {want} reads of the source, got {got}; the answer was {status}: {}",
                    String::from_utf8_lossy(&raw)
                ));
                return;
            }
        }
        let problems = check(expect, status, &headers, &raw, &vars);
        if !problems.is_empty() {
            report.failures.push(format!(
                "{place} ({describe}):\n  {}\n  got: {status} {}\n  body: {}",
                problems.join("\n  "),
                show_headers(&headers),
                show_body(&headers, &raw)
            ));
            // Later steps build on this answer: they would only add noise.
            return;
        }
        etag = headers
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
}

/// The source reads (attempts) counted so far, once none is pending or in progress. Read in
/// the order the reloader moves on (a trigger is pending, then reading, then counted: see
/// `Reloader::trigger_pending`), so a read asked for before this call is in the count.
async fn settled_reads(state: &AppState) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let pending = state.reloader.trigger_pending();
        let reading = !pending && state.live.reader().reading_since.is_some();
        if !pending && !reading {
            return state.live.status().counts.attempts;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reloader did not settle within 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Placeholders in tables: `{{revision}}` (the served revision), `{{etag}}` (the ETag of
/// the previous answer of the case) and `{{request_etag}}` (the tag of an answer that depends
/// on the revision and the request only; see `request_etag`).
struct Vars<'a> {
    revision: &'a str,
    etag: Option<&'a str>,
    request_etag: Option<&'a str>,
}

impl Vars<'_> {
    fn apply(&self, text: &str) -> String {
        let mut text = text.replace("{{revision}}", self.revision);
        if let Some(etag) = self.etag {
            text = text.replace("{{etag}}", etag);
        }
        if let Some(etag) = self.request_etag {
            text = text.replace("{{request_etag}}", etag);
        }
        text
    }

    fn apply_json(&self, value: &Json) -> Json {
        match value {
            Json::String(s) => Json::String(self.apply(s)),
            Json::Array(items) => Json::Array(items.iter().map(|v| self.apply_json(v)).collect()),
            Json::Object(map) => Json::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.apply_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

fn merge(request: &mut Req, step: &Req) {
    if let Some(method) = &step.method {
        request.method = Some(method.clone());
    }
    if let Some(path) = &step.path {
        request.path = Some(path.clone());
    }
    for (name, value) in &step.headers {
        if value.is_empty() {
            request.headers.remove(name);
        } else {
            request.headers.insert(name.clone(), value.clone());
        }
    }
    if step.body.is_some() || step.json.is_some() || step.body_size.is_some() {
        request.body = step.body.clone();
        request.json = step.json.clone();
        request.body_size = step.body_size;
        request.chunked = step.chunked;
    }
}

fn body_bytes(req: &Req, vars: &Vars<'_>) -> Result<Option<Vec<u8>>, String> {
    Ok(match (&req.body, &req.json, req.body_size) {
        (Some(text), None, None) => Some(vars.apply(text).into_bytes()),
        (None, Some(json), None) => {
            Some(serde_json::to_vec(&vars.apply_json(json)).map_err(|e| e.to_string())?)
        }
        (None, None, Some(n)) => Some(vec![b'x'; n]),
        (None, None, None) => None,
        _ => return Err("give one of body, json and body_size".into()),
    })
}

/// The strong ETag the server gives an answer that is a function of the revision and the
/// request (computed before evaluating): SHA-256 of the parts, each but the last followed by
/// a zero byte, first 16 bytes in hex. OFREP bulk: revision, namespace, body; the frontend
/// API: revision, method, path, query, body. A selection that can draw at random must not
/// be answered 304 for it.
fn request_etag(req: &Req, state: &AppState, vars: &Vars<'_>) -> Result<String, String> {
    use sha2::Digest as _;
    let revision = state.revision().unwrap_or_default();
    let target = vars.apply(req.path.as_deref().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let body = body_bytes(req, vars)?.unwrap_or_default();
    let method = req.method.as_deref().unwrap_or("GET");
    let namespace = path
        .strip_prefix("/ns/")
        .and_then(|rest| rest.split_once('/'))
        .map_or("default", |(ns, _)| ns);
    let parts: Vec<&[u8]> = if path.contains("/ofrep/") {
        vec![revision.as_bytes(), namespace.as_bytes(), &body]
    } else {
        vec![
            revision.as_bytes(),
            method.as_bytes(),
            path.as_bytes(),
            query.as_bytes(),
            &body,
        ]
    };
    let mut hasher = sha2::Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0]);
        }
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("\"{hex}\""))
}

fn build(req: &Req, vars: &Vars<'_>) -> Result<Request<Body>, String> {
    let path = req.path.as_deref().ok_or("no path")?;
    let mut builder = Request::builder()
        .method(req.method.as_deref().unwrap_or("GET"))
        .uri(vars.apply(path));
    for (name, value) in &req.headers {
        builder = builder.header(name.as_str(), vars.apply(value));
    }
    let body = match body_bytes(req, vars)? {
        None => Body::empty(),
        Some(bytes) if req.chunked => {
            // Two chunks of a stream whose length is not known up front.
            let half = bytes.len() / 2;
            let (a, b) = bytes.split_at(half);
            let chunks = vec![
                Ok::<_, std::io::Error>(Bytes::copy_from_slice(a)),
                Ok(Bytes::copy_from_slice(b)),
            ];
            Body::from_stream(tokio_stream::iter(chunks))
        }
        Some(bytes) => {
            // As every client sends it with a body of known length.
            if !req
                .headers
                .keys()
                .any(|k| k.eq_ignore_ascii_case("content-length"))
            {
                builder = builder.header(http::header::CONTENT_LENGTH, bytes.len());
            }
            Body::from(bytes)
        }
    };
    builder.body(body).map_err(|e| e.to_string())
}

fn check(
    expect: &Expect,
    status: u16,
    headers: &HeaderMap,
    raw: &[u8],
    vars: &Vars<'_>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if status != expect.status {
        problems.push(format!("status: expected {}, got {status}", expect.status));
    }
    for (name, want) in &expect.headers {
        let values: Vec<&str> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.to_str().unwrap_or("<not text>"))
            .collect();
        let got = (!values.is_empty()).then(|| values.join(", "));
        let ok = match want {
            HeaderWant::Exact(w) if w == "absent" => got.is_none(),
            HeaderWant::Exact(w) if w == "present" => got.is_some(),
            HeaderWant::Exact(w) => got.as_deref() == Some(vars.apply(w).as_str()),
            HeaderWant::Regex { regex } => {
                let re = regex::Regex::new(regex).unwrap_or_else(|e| panic!("{regex}: {e}"));
                got.as_deref().is_some_and(|g| re.is_match(g))
            }
        };
        if !ok {
            problems.push(format!(
                "header `{name}`: expected {want:?}, got {}",
                got.map_or_else(|| "none".to_owned(), |g| format!("{g:?}"))
            ));
        }
    }
    let body = match decode(headers, raw) {
        Ok(body) => body,
        Err(e) => {
            problems.push(e);
            return problems;
        }
    };
    if let Some(text) = &expect.text {
        let want = vars.apply(text);
        if body != want.as_bytes() {
            problems.push(format!(
                "body: expected {want:?}, got {:?}",
                String::from_utf8_lossy(&body)
            ));
        }
    }
    if let Some(re) = &expect.text_regex {
        let re = regex::Regex::new(re).unwrap_or_else(|e| panic!("{re}: {e}"));
        if !re.is_match(&String::from_utf8_lossy(&body)) {
            problems.push(format!("body does not match /{re}/"));
        }
    }
    for (want, subset) in [(&expect.json, false), (&expect.json_subset, true)] {
        let Some(want) = want else { continue };
        let want = vars.apply_json(want);
        match serde_json::from_slice::<Json>(&body) {
            Err(e) => problems.push(format!("body is not JSON ({e})")),
            Ok(got) => {
                if let Some(diff) = json_diff(&want, &got, subset, "") {
                    problems.push(format!(
                        "body{}: {diff}\n  expected JSON{}: {want}",
                        if subset { " (subset)" } else { "" },
                        if subset { " (at least)" } else { "" }
                    ));
                }
            }
        }
    }
    if !expect.json_absent.is_empty() {
        match serde_json::from_slice::<Json>(&body) {
            Err(e) => problems.push(format!("body is not JSON ({e})")),
            Ok(got) => {
                for pointer in &expect.json_absent {
                    if let Some(found) = got.pointer(pointer) {
                        problems.push(format!("body: {pointer} should be absent, got {found}"));
                    }
                }
            }
        }
    }
    problems
}

/// The body as the client reads it: gunzipped when `content-encoding: gzip`.
fn decode(headers: &HeaderMap, raw: &[u8]) -> Result<Vec<u8>, String> {
    let gzip = headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    if !gzip {
        return Ok(raw.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .read_to_end(&mut out)
        .map_err(|e| format!("content-encoding: gzip, but the body does not gunzip: {e}"))?;
    Ok(out)
}

/// The first place where `got` differs from `want` (a JSON pointer and both values).
fn json_diff(want: &Json, got: &Json, subset: bool, at: &str) -> Option<String> {
    let here = || {
        if at.is_empty() {
            "/".to_owned()
        } else {
            at.to_owned()
        }
    };
    match (want, got) {
        (Json::Object(w), Json::Object(g)) => {
            for (key, wv) in w {
                let path = format!("{at}/{key}");
                match g.get(key) {
                    None => return Some(format!("{path}: missing (expected {wv})")),
                    Some(gv) => {
                        if let Some(d) = json_diff(wv, gv, subset, &path) {
                            return Some(d);
                        }
                    }
                }
            }
            if !subset {
                if let Some((extra, value)) = g.iter().find(|(k, _)| !w.contains_key(*k)) {
                    return Some(format!("{at}/{extra}: not expected (got {value})"));
                }
            }
            None
        }
        (Json::Array(w), Json::Array(g)) => {
            if w.len() != g.len() {
                return Some(format!(
                    "{}: expected {} items, got {}: {got}",
                    here(),
                    w.len(),
                    g.len()
                ));
            }
            w.iter()
                .zip(g)
                .enumerate()
                .find_map(|(i, (wv, gv))| json_diff(wv, gv, subset, &format!("{at}/{i}")))
        }
        // Numbers keep their kind: an integer flag's `10` is not `10.0`.
        (w, g) if w == g => None,
        (w, g) => Some(format!("{}: expected {w}, got {g}", here())),
    }
}

fn show_headers(headers: &HeaderMap) -> String {
    let mut out: Vec<String> = headers
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("<not text>")))
        .collect();
    out.sort();
    format!("[{}]", out.join("; "))
}

fn show_body(headers: &HeaderMap, raw: &[u8]) -> String {
    let body = decode(headers, raw).unwrap_or_else(|_| raw.to_vec());
    let text = String::from_utf8_lossy(&body);
    if text.len() > 4000 {
        let cut = (0..=4000)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}... ({} bytes)", &text[..cut], text.len())
    } else {
        text.into_owned()
    }
}
