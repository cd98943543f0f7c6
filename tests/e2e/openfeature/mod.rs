//! OpenFeature conformance with the real providers: Python `openfeature-provider-flagd` (rpc
//! mode, flagd.evaluation.v2 gRPC), Python `openfeature-provider-ofrep` (OFREP) and Node
//! `@openfeature/flagd-provider`, each evaluating every flag of `flags/` over a generated corpus
//! of contexts, must give the answers of Vexil's native gRPC API. The clients are installed by
//! the tests themselves (a venv and `npm ci` under target/ and tests/conformance/node), never
//! skipped.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value as Json, json};
use vexil_core::source::{DirOptions, DirSource};
use vexil_core::{FlagType, Reloader};
use vexil_server::proto;
use vexil_server::{Options, Tokens};

use crate::helpers::repo_root;
use crate::serve::{TestServer, commit, git_reloader, repo_with, served_reload_options};

mod wire;

/// How long any expected state may take.
const PATIENCE: Duration = Duration::from_secs(15);

/// Contexts generated per flag.
const CONTEXTS_PER_FLAG: usize = 100;

pub(crate) fn run(cmd: &mut std::process::Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The venv's python, with tests/conformance/requirements.txt installed (once per run).
pub(crate) fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let root = repo_root();
        let venv = root.join("target/conformance/venv");
        let python = venv.join("bin/python");
        let requirements = root.join("tests/conformance/requirements.txt");
        let wanted = std::fs::read_to_string(&requirements).unwrap();
        let marker = venv.join("vexil-requirements.txt");
        if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
            run(
                std::process::Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv),
                "python3 -m venv",
            );
            run(
                std::process::Command::new(&python)
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                        "-r",
                    ])
                    .arg(&requirements),
                "pip install the OpenFeature clients",
            );
            std::fs::write(&marker, wanted).unwrap();
        }
        python
    })
}

/// tests/conformance/node with its locked packages installed (once per run).
pub(crate) fn node_dir() -> &'static Path {
    static NODE: OnceLock<PathBuf> = OnceLock::new();
    NODE.get_or_init(|| {
        let dir = repo_root().join("tests/conformance/node");
        let lock = std::fs::read_to_string(dir.join("package-lock.json")).unwrap();
        let marker = dir.join("node_modules/.vexil-lock.json");
        if std::fs::read_to_string(&marker).ok().as_deref() != Some(lock.as_str()) {
            run(
                std::process::Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(&dir),
                "npm ci the Node clients (OpenFeature, Unleash)",
            );
            std::fs::write(&marker, lock).unwrap();
        }
        dir
    })
}

/// Candidate attribute values, from every condition operand written in the flags (and values
/// around them), so that the corpus exercises both sides of every condition.
pub(crate) fn candidates(snapshot: &vexil_core::Snapshot) -> Vec<(String, Vec<Json>)> {
    let mut pool: std::collections::BTreeMap<String, Vec<Json>> = Default::default();
    let mut add_condition = |c: &Json| {
        let Json::Object(m) = c else { return };
        let Some(attr) = m.get("attr").and_then(Json::as_str) else {
            return;
        };
        let values = pool.entry(attr.to_owned()).or_default();
        for (op, operand) in m {
            if op == "attr" || op == "ignore_case" {
                continue;
            }
            let items = match operand {
                Json::Array(items) => items.clone(),
                other => vec![other.clone()],
            };
            for item in items {
                match &item {
                    Json::String(s) => {
                        // The operand itself three times: matching values are likely.
                        values.extend([json!(s), json!(s), json!(s)]);
                        values.push(json!(format!("x{s}")));
                        values.push(json!(format!("{s}x")));
                        values.push(json!(s.to_uppercase()));
                        values.push(json!([s]));
                    }
                    Json::Number(n) => {
                        let f = n.as_f64().unwrap_or(0.0);
                        values.extend([json!(f), json!(f), json!(f - 1.0), json!(f + 1.0)]);
                    }
                    Json::Bool(b) => values.extend([json!(b), json!(!b)]),
                    _ => {}
                }
            }
        }
    };
    let mut rule_groups = Vec::new();
    let mut walk = |def: &Json| {
        for rule in def
            .get("rules")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            for g in rule
                .get("groups")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                rule_groups.push(g.clone());
            }
        }
        for rule in def
            .get("rules")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(when) = rule.get("when").and_then(Json::as_object) {
                for list in when.values() {
                    list.as_array()
                        .into_iter()
                        .flatten()
                        .for_each(&mut add_condition);
                }
            }
        }
        for group in def
            .get("groups")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            for list in group.as_object().into_iter().flat_map(|m| m.values()) {
                list.as_array()
                    .into_iter()
                    .flatten()
                    .for_each(&mut add_condition);
            }
        }
    };
    for ns in snapshot.namespaces() {
        for f in &ns.flags {
            walk(&vexil_core::export::flag_definition(ns, f));
        }
        for s in &ns.segments {
            walk(&vexil_core::export::segment_definition(s));
        }
    }
    // Rule-level `groups` match the `groups` attribute.
    let groups = pool.entry("groups".to_owned()).or_default();
    for g in rule_groups {
        groups.push(json!([g]));
        groups.push(g);
    }
    // Repeated values stay: they weigh the draw towards matching operands.
    pool.into_iter().collect()
}

/// Targeting keys the flags name (rule `ids`, segment `ids`).
pub(crate) fn named_ids(snapshot: &vexil_core::Snapshot) -> Vec<String> {
    let mut ids = Vec::new();
    for ns in snapshot.namespaces() {
        for f in &ns.flags {
            let def = vexil_core::export::flag_definition(ns, f);
            for rule in def["rules"].as_array().into_iter().flatten() {
                for id in rule
                    .get("ids")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    ids.extend(id.as_str().map(str::to_owned));
                }
            }
        }
        for s in &ns.segments {
            ids.extend(s.ids.iter().map(|i| i.to_string()));
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

/// Puts `value` at a dotted path as nested objects (`a.b` -> `{"a": {"b": value}}`).
pub(crate) fn insert_nested(map: &mut serde_json::Map<String, Json>, path: &str, value: Json) {
    match path.split_once('.') {
        None => {
            map.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = map.entry(head.to_owned()).or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            if let Json::Object(inner) = entry {
                insert_nested(inner, rest, value);
            }
        }
    }
}

/// Whether a flag's answer is random on every call (`percentage_of_time`): two evaluations of
/// it cannot be compared.
pub(crate) fn is_random(ns: &vexil_core::Namespace, flag: &vexil_core::Flag) -> bool {
    let def = vexil_core::export::flag_definition(ns, flag);
    def["rules"]
        .as_array()
        .is_some_and(|rules| rules.iter().any(|r| r.get("percentage_of_time").is_some()))
}

/// {namespace, flag, type, key, attributes} for every deterministic flag, `CONTEXTS_PER_FLAG`
/// times.
fn corpus(snapshot: &vexil_core::Snapshot) -> Vec<Json> {
    let pool = candidates(snapshot);
    let mut rng = fastrand::Rng::with_seed(20261121);
    let mut ids = named_ids(snapshot);
    ids.extend(["user-42", "user-43", "synthetic-probe-1"].map(String::from));
    let mut out = Vec::new();
    for ns in snapshot.namespaces() {
        for flag in ns.flags.iter().filter(|f| !is_random(ns, f)) {
            for i in 0..CONTEXTS_PER_FLAG {
                let key = match i % 5 {
                    0 => Json::Null,
                    1 => json!(ids[rng.usize(..ids.len())]),
                    _ => json!(format!("user-{}", rng.u32(..100_000))),
                };
                let mut attributes = serde_json::Map::new();
                // Dotted names go both ways: flat keys, and nested objects.
                let nested = rng.bool();
                for (attr, values) in &pool {
                    if rng.bool() && !values.is_empty() {
                        let value = values[rng.usize(..values.len())].clone();
                        if nested {
                            insert_nested(&mut attributes, attr, value);
                        } else {
                            attributes.insert(attr.clone(), value);
                        }
                    }
                }
                out.push(json!({
                    "namespace": &*ns.name,
                    "flag": &*flag.key,
                    "type": flag.flag_type.as_str(),
                    "key": key,
                    "attributes": attributes,
                }));
            }
        }
    }
    out
}

fn to_proto(v: &Json) -> prost_types::Value {
    vexil_server::convert::json_value(v)
}

fn value_json(v: &proto::Value) -> Json {
    match &v.kind {
        Some(proto::value::Kind::BoolValue(b)) => json!(b),
        Some(proto::value::Kind::StringValue(s)) => json!(s),
        Some(proto::value::Kind::IntegerValue(i)) => json!(i),
        Some(proto::value::Kind::FloatValue(f)) => json!(f),
        Some(proto::value::Kind::ObjectValue(s)) => {
            let m: serde_json::Map<String, Json> = s
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), prost_to_json(v)))
                .collect();
            Json::Object(m)
        }
        None => Json::Null,
    }
}

fn prost_to_json(v: &prost_types::Value) -> Json {
    use prost_types::value::Kind;
    match &v.kind {
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(prost_to_json).collect()),
        Some(Kind::StructValue(s)) => Json::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), prost_to_json(v)))
                .collect(),
        ),
        _ => Json::Null,
    }
}

/// Vexil's native answers, as (value, variant, OpenFeature reason).
async fn native(server: &TestServer, corpus: &[Json]) -> Vec<(Json, String, String)> {
    let mut client = server.client().await;
    let mut out = Vec::new();
    for case in corpus {
        let attributes = case["attributes"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), to_proto(v)))
            .collect();
        let r = client
            .evaluate(proto::EvaluateRequest {
                namespace: case["namespace"].as_str().unwrap().into(),
                flag: case["flag"].as_str().unwrap().into(),
                context: Some(proto::Context {
                    targeting_key: case["key"].as_str().unwrap_or("").into(),
                    attributes,
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let reason = match r.reason() {
            proto::Reason::Static => "STATIC",
            proto::Reason::TargetingMatch | proto::Reason::Split => "TARGETING_MATCH",
            proto::Reason::Default => "DEFAULT",
            proto::Reason::Disabled => "DISABLED",
            proto::Reason::Unspecified => "UNSPECIFIED",
        };
        out.push((value_json(&r.value.unwrap()), r.variant, reason.to_owned()));
    }
    out
}

/// The corpus must exercise every reason, and targeting in most flags that have rules:
/// otherwise agreement would prove little.
fn coverage(corpus: &[Json], native: &[(Json, String, String)]) {
    let reasons: std::collections::BTreeSet<&str> =
        native.iter().map(|(_, _, r)| r.as_str()).collect();
    assert_eq!(
        reasons.into_iter().collect::<Vec<_>>(),
        ["DEFAULT", "DISABLED", "STATIC", "TARGETING_MATCH"]
    );
    let mut targeted: std::collections::BTreeMap<&str, bool> = Default::default();
    for (case, (_, _, reason)) in corpus.iter().zip(native) {
        if reason != "STATIC" && reason != "DISABLED" {
            let hit = targeted.entry(case["flag"].as_str().unwrap()).or_default();
            *hit |= reason == "TARGETING_MATCH";
        }
    }
    let hits = targeted.values().filter(|h| **h).count();
    assert!(
        hits * 10 >= targeted.len() * 9,
        "only {hits} of {} flags with rules were ever targeted by the corpus: {targeted:?}",
        targeted.len()
    );
}

fn same_value(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_value(p, q))
        }
        _ => a == b,
    }
}

/// Compares a client's answers with the native ones. `disabled_is_code_default`: flagd v2 sends
/// no value for a disabled flag, so the client answers its code default without a variant.
fn compare(
    client: &str,
    corpus: &[Json],
    native: &[(Json, String, String)],
    got: &[Json],
    disabled_is_code_default: bool,
) {
    assert_eq!(got.len(), corpus.len(), "{client}: one answer per case");
    let defaults =
        json!({ "boolean": false, "string": "", "integer": 0, "float": 0.0, "object": {} });
    let mut mismatches = Vec::new();
    for ((case, (value, variant, reason)), answer) in corpus.iter().zip(native).zip(got) {
        let (value, variant) = if disabled_is_code_default && reason == "DISABLED" {
            (defaults[case["type"].as_str().unwrap()].clone(), Json::Null)
        } else {
            (value.clone(), json!(variant))
        };
        let ok = same_value(&answer["value"], &value)
            && answer["variant"] == variant
            && answer["reason"] == json!(reason)
            && answer["error"].is_null();
        if !ok {
            mismatches.push(format!(
                "{case}\n  vexil: {value} {variant} {reason}\n  {client}: {answer}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{client}: {} of {} answers differ, e.g.:\n{}",
        mismatches.len(),
        corpus.len(),
        mismatches
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

async fn example_server() -> TestServer {
    let reloader = Reloader::start(
        Box::new(DirSource::new(
            repo_root().join("flags"),
            DirOptions::default(),
        )),
        served_reload_options(),
    )
    .unwrap();
    TestServer::start(reloader, Tokens::default(), Options::default()).await
}

fn write_corpus(corpus: &[Json]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(corpus).unwrap()).unwrap();
    file
}

fn answers(out: std::process::Output, client: &str) -> Vec<Json> {
    assert!(
        out.status.success(),
        "{client} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{client} printed no JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_flagd_and_ofrep_providers_agree_with_vexil() {
    let python = python();
    let server = example_server().await;
    let snapshot = crate::helpers::example_snapshot();
    let corpus = corpus(snapshot);
    let types: std::collections::BTreeSet<FlagType> = snapshot
        .namespaces()
        .iter()
        .flat_map(|n| n.flags.iter().map(|f| f.flag_type))
        .collect();
    assert_eq!(types.len(), 5, "flags/ has every flag type");
    let native = native(&server, &corpus).await;
    coverage(&corpus, &native);
    let file = write_corpus(&corpus);
    let script = repo_root().join("tests/conformance/openfeature_client.py");

    let grpc = server.grpc.to_string();
    let out = tokio::process::Command::new(python)
        .arg(&script)
        .args(["flagd", &grpc])
        .arg(file.path())
        .output()
        .await
        .unwrap();
    compare(
        "python flagd provider",
        &corpus,
        &native,
        &answers(out, "python flagd"),
        true,
    );

    let base = format!("http://{}", server.http);
    let out = tokio::process::Command::new(python)
        .arg(&script)
        .args(["ofrep", &base])
        .arg(file.path())
        .output()
        .await
        .unwrap();
    compare(
        "python ofrep provider",
        &corpus,
        &native,
        &answers(out, "python ofrep"),
        false,
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_flagd_provider_agrees_with_vexil() {
    let dir = node_dir();
    let server = example_server().await;
    let corpus = corpus(crate::helpers::example_snapshot());
    let native = native(&server, &corpus).await;
    let file = write_corpus(&corpus);
    let out = tokio::process::Command::new("node")
        .arg(dir.join("openfeature_client.js"))
        .arg(server.grpc.to_string())
        .arg(file.path())
        .output()
        .await
        .unwrap();
    compare(
        "node flagd provider",
        &corpus,
        &native,
        &answers(out, "node flagd"),
        true,
    );
    server.stop().await;
}

/// Drives a client program's `cache` mode: it prints its first two answers for a STATIC flag,
/// the test commits `new_text` and says so on stdin, then it prints what happened. Returns
/// both lines, after checking the STATIC -> CACHED -> new value sequence they share.
async fn cache_round_trip(
    mut command: tokio::process::Command,
    repo: &Path,
    new_text: &str,
) -> (Json, Json) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let patience = Duration::from_secs(60);
    let mut next = async || -> Json {
        let line = tokio::time::timeout(patience, lines.next_line())
            .await
            .unwrap()
            .unwrap();
        serde_json::from_str(&line.expect("a line from the client")).unwrap()
    };
    let first = next().await;
    assert_eq!(first["first"], json!(["old", "STATIC"]), "{first}");
    assert_eq!(first["second"], json!(["old", "CACHED"]), "{first}");
    commit(repo, new_text, "new banner");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"committed\n").await.unwrap();
    let second = next().await;
    assert_eq!(second["changed_event"], true, "{second}");
    assert_eq!(second["third"], json!(["new", "STATIC"]), "{second}");
    let status = tokio::time::timeout(patience, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    (first, second)
}

/// A STATIC flag `banner` with value `v` (in `namespace`, when given).
fn banner(namespace: Option<&str>, v: &str) -> String {
    let ns = namespace
        .map(|n| format!("namespace: {n}\n"))
        .unwrap_or_default();
    format!(
        "{ns}flags:\n  banner:\n    type: string\n    variants: {{ v: \"{v}\" }}\n    default: v\n  other: {{}}\n"
    )
}

/// STATIC answers are cached by the Python provider (reason CACHED) and evicted when a commit
/// changes the flag; the provider sees ready and configuration-changed events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_provider_caches_static_flags_until_they_change() {
    let repo = repo_with(&banner(None, "old"));
    let server = TestServer::git(repo.path(), Options::default()).await;
    let mut command = tokio::process::Command::new(python());
    command
        .arg(repo_root().join("tests/conformance/openfeature_client.py"))
        .args(["cache", &server.grpc.to_string(), "banner"]);
    let (_, second) = cache_round_trip(command, repo.path(), &banner(None, "new")).await;
    let events = second["events"].as_array().unwrap();
    assert_eq!(events[0]["event"], "ready", "{second}");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "configuration_changed" && e["flags"] == json!(["banner"])),
        "{second}"
    );
    server.stop().await;
}

/// The Node provider's cache too, in a namespace chosen by a selector: its EventStream carries
/// no selector, so Vexil must still name the flag when it changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_provider_caches_static_flags_until_they_change() {
    let dir = node_dir();
    let repo = repo_with(&banner(Some("other"), "old"));
    let server = TestServer::git(repo.path(), Options::default()).await;
    let mut command = tokio::process::Command::new("node");
    command.arg(dir.join("openfeature_client.js")).args([
        "cache",
        &server.grpc.to_string(),
        "other",
        "banner",
    ]);
    cache_round_trip(command, repo.path(), &banner(Some("other"), "new")).await;
    server.stop().await;
}
