//! The read-only Flipper and Unleash mirrors.
//!
//! Conformance: for every flag of `flags/` and of the fixture repository `tests/mirrors/flags/`
//! that a mirror exports exactly, the real client (Python `UnleashClient` 6.9.1 on yggdrasil,
//! Node `unleash-client` 6.12.1 on its own engine, Debian's ruby-unleash 3.2.5, Debian's
//! ruby-flipper 0.25.4 fed as its HTTP adapter feeds it) gives Vexil's own answer on 1,000
//! generated contexts per flag. The clients are installed by the tests (a venv from
//! tests/conformance/requirements.txt; `npm ci` in tests/conformance/node; apt-get for the Ruby
//! packages).
//! What each mirror says about each fixture flag is pinned in tests/mirrors/findings.txt.
//!
//! Wire contract: raw HTTP on 127.0.0.1 (shapes, query forms, ETag/304, 405 on writes, tokens,
//! namespaces, and a commit reaching the next poll).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value as Json, json};
use vexil_core::source::{DirOptions, DirSource};
use vexil_core::{AttrValue, Context, FlagType, Namespace, Reloader, Snapshot};
use vexil_mirror::Mirror;
use vexil_server::{Options, Tokens};

use crate::helpers::{http, repo_root};
use crate::openfeature::{candidates, is_random, named_ids, node_dir, python, run};
use crate::serve::{TestServer, commit, repo_with};

mod contract;
mod coverage;
mod flipper1x;

/// Contexts generated per flag and client.
const CONTEXTS_PER_FLAG: usize = 1000;
/// Unleash's top-level context fields (everything else is a property).
const TOP_LEVEL: [&str; 6] = [
    "userId",
    "sessionId",
    "remoteAddress",
    "environment",
    "appName",
    "currentTime",
];
/// The Python client's app name (unleash_client.py) and the environment every SDK defaults to.
const APP_NAME: &str = "vexil-conformance";
const NOW: &str = "2026-11-21T12:00:00+00:00";

/// Debian's ruby-unleash 3.2.5 and ruby-flipper 0.25.4, installed with apt-get if missing.
fn ruby() -> &'static str {
    static RUBY: OnceLock<()> = OnceLock::new();
    RUBY.get_or_init(|| {
        let check = || {
            std::process::Command::new("ruby")
                .args([
                    "-e",
                    "require 'unleash'; require 'flipper'; require 'flipper/version'; exit(Unleash::VERSION == '3.2.5' && Flipper::VERSION == '0.25.4' ? 0 : 3)",
                ])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !check() {
            let root = std::process::Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
            let apt = |args: &[&str]| {
                let mut cmd = if root {
                    std::process::Command::new("apt-get")
                } else {
                    let mut sudo = std::process::Command::new("sudo");
                    sudo.args(["-n", "apt-get"]);
                    sudo
                };
                cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
                cmd
            };
            run(&mut apt(&["update", "-qq"]), "apt-get update");
            run(
                &mut apt(&["install", "-y", "-qq", "ruby-unleash", "ruby-flipper"]),
                "apt-get install ruby-unleash ruby-flipper",
            );
            assert!(check(), "ruby-unleash 3.2.5 and ruby-flipper 0.25.4 are not usable after apt-get install");
        }
    });
    "ruby"
}

fn dir_server_reloader(root: PathBuf) -> Reloader {
    Reloader::start(
        Box::new(DirSource::new(root, DirOptions::default())),
        crate::serve::served_reload_options(),
    )
    .unwrap()
}

fn load(root: &Path) -> Snapshot {
    let (_, compiled) = vexil_core::load_dir(root, &Default::default()).unwrap();
    compiled.snapshot.unwrap()
}

/// Flags a mirror exports exactly and whose answer is deterministic. Findings about unusual
/// inputs only (numbers with spaces, `inf`, build metadata, ...) do not count: the corpus has
/// no such inputs, so those flags must agree on it.
fn exact(snapshot: &Snapshot, ns: &Namespace, mirror: Mirror) -> Vec<String> {
    let findings: BTreeSet<(String, Mirror)> = vexil_mirror::findings(snapshot, &[mirror])
        .into_iter()
        .filter(|f| *f.namespace == *ns.name)
        .filter(|f| !f.unusual_inputs_only)
        .map(|f| (f.flag.to_string(), f.mirror))
        .collect();
    ns.flags
        .iter()
        .filter(|f| !is_random(ns, f))
        .filter(|f| !findings.contains(&(f.key.to_string(), mirror)))
        .filter(|f| {
            !matches!(mirror, Mirror::Flipper | Mirror::FlipperLegacy)
                || f.flag_type == FlagType::Boolean
        })
        .map(|f| f.key.to_string())
        .collect()
}

/// Attribute values as an Unleash context carries them: strings only.
fn text_pool(snapshot: &Snapshot) -> BTreeMap<String, Vec<String>> {
    let mut pool: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (attr, values) in candidates(snapshot) {
        let texts = pool.entry(attr).or_default();
        for v in values {
            match v {
                Json::String(s) => texts.push(s),
                Json::Number(n) => {
                    let f = n.as_f64().unwrap_or(0.0);
                    texts.extend([format!("{f}"), format!("{f:.1}"), format!("{}", f + 0.5)]);
                }
                Json::Bool(b) => texts.extend([b.to_string(), b.to_string().to_uppercase()]),
                Json::Array(items) => {
                    texts.extend(items.iter().filter_map(|i| i.as_str().map(str::to_owned)))
                }
                _ => {}
            }
        }
    }
    pool
}

/// `n` Unleash contexts: {userId, sessionId, remoteAddress, environment, appName, currentTime,
/// properties}; `legacy` keeps to what ruby-unleash 3.2.5 reads safely.
fn unleash_contexts(snapshot: &Snapshot, n: usize, seed: u64, legacy: bool) -> Vec<Json> {
    let pool = text_pool(snapshot);
    let mut ids = named_ids(snapshot);
    ids.extend(pool.get("targeting_key").cloned().unwrap_or_default());
    ids.extend(pool.get("userId").cloned().unwrap_or_default());
    ids.push("user-42".into());
    let bucket_attrs = bucket_attrs(snapshot);
    let mut rng = fastrand::Rng::with_seed(seed);
    let pick =
        |rng: &mut fastrand::Rng, values: &[String]| values[rng.usize(..values.len())].clone();
    (0..n)
        .map(|i| {
            let mut ctx = serde_json::Map::new();
            match i % 5 {
                0 => {}
                1 | 2 => {
                    ctx.insert("userId".into(), json!(pick(&mut rng, &ids)));
                }
                _ => {
                    ctx.insert("userId".into(), json!(format!("u-{}", rng.u32(..100_000))));
                }
            }
            if rng.bool() {
                let mut sessions = pool.get("sessionId").cloned().unwrap_or_default();
                sessions.push(format!("s-{}", rng.u32(..100_000)));
                ctx.insert("sessionId".into(), json!(pick(&mut rng, &sessions)));
            }
            if rng.bool() {
                let mut addresses = pool.get("remoteAddress").cloned().unwrap_or_default();
                addresses.push(format!("10.0.0.{}", rng.u8(..4)));
                ctx.insert("remoteAddress".into(), json!(pick(&mut rng, &addresses)));
            }
            if !legacy {
                for (field, fallback) in [("environment", "default"), ("appName", APP_NAME)] {
                    let mut values = pool.get(field).cloned().unwrap_or_default();
                    values.push(fallback.to_owned());
                    ctx.insert(field.into(), json!(pick(&mut rng, &values)));
                }
                ctx.insert("currentTime".into(), json!(NOW));
            }
            let mut properties = serde_json::Map::new();
            // Attributes rollouts and splits bucket by: any value will do, most of the time.
            for attr in &bucket_attrs {
                if rng.u8(..4) > 0 && !TOP_LEVEL.contains(&attr.as_str()) {
                    properties.insert(attr.clone(), json!(format!("acct-{}", rng.u32(..100_000))));
                }
            }
            for (attr, values) in &pool {
                if TOP_LEVEL.contains(&attr.as_str())
                    || attr == "targeting_key"
                    || values.is_empty()
                {
                    continue;
                }
                if rng.bool() {
                    properties.insert(attr.clone(), json!(pick(&mut rng, values)));
                }
            }
            ctx.insert("properties".into(), Json::Object(properties));
            Json::Object(ctx)
        })
        .collect()
}

/// Attributes named by `bucket_by`.
fn bucket_attrs(snapshot: &Snapshot) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for ns in snapshot.namespaces() {
        for f in &ns.flags {
            let def = vexil_core::export::flag_definition(ns, f);
            for rule in def["rules"].as_array().into_iter().flatten() {
                out.extend(
                    rule.get("bucket_by")
                        .and_then(Json::as_str)
                        .map(str::to_owned),
                );
            }
        }
    }
    out
}

/// The Vexil context an Unleash context stands for: the targeting key is `userId`; every field
/// and property is an attribute of the same name (so `userId` is one too).
fn vexil_context(unleash: &Json) -> Context {
    let mut ctx = match unleash.get("userId").and_then(Json::as_str) {
        Some(id) => Context::with_key(id),
        None => Context::new(),
    };
    for field in TOP_LEVEL {
        if let Some(v) = unleash.get(field) {
            ctx = ctx.with(field, AttrValue::from_json(v));
        }
    }
    for (k, v) in unleash["properties"].as_object().into_iter().flatten() {
        ctx = ctx.with(k.as_str(), AttrValue::from_json(v));
    }
    ctx
}

/// What a client should answer: `{"enabled"}` for booleans, `{"enabled", "variant", "value"}`
/// otherwise.
fn expected(ns: &Namespace, flag: &str, ctx: &Context) -> Json {
    let flag = ns.flag(flag).unwrap();
    let e = ns.evaluate_flag(flag, ctx);
    match &e.variant.value {
        vexil_core::Value::Bool(b) => json!({ "enabled": b }),
        value => json!({ "enabled": true, "variant": &*e.variant.name, "value": value.to_json() }),
    }
}

/// A client's answer in the shape of `expected`.
fn unleash_answer(flag_type: FlagType, answer: &Json) -> Json {
    if flag_type == FlagType::Boolean {
        return json!({ "enabled": answer["enabled"] });
    }
    let variant = &answer["variant"];
    let payload = &variant["payload"];
    let text = payload["value"].as_str().unwrap_or("");
    let value = match (flag_type, payload["type"].as_str()) {
        (FlagType::String, Some("string")) => json!(text),
        (FlagType::Integer, Some("number")) => text.parse::<i64>().map_or(Json::Null, |i| json!(i)),
        (FlagType::Float, Some("number")) => text.parse::<f64>().map_or(Json::Null, |f| json!(f)),
        (FlagType::Object, Some("json")) => serde_json::from_str(text).unwrap_or(Json::Null),
        _ => json!({ "unexpected payload": payload }),
    };
    json!({ "enabled": answer["enabled"], "variant": variant["name"], "value": value })
}

fn write_json(value: &Json) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(value).unwrap()).unwrap();
    file
}

/// Runs a client script: `program script BASE_URL CASES OUT [extra]`, returns OUT.
fn run_client(
    program: &Path,
    script: &str,
    base: &str,
    cases: &Json,
    extra: Option<&str>,
) -> Vec<Json> {
    let cases_file = write_json(cases);
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = std::process::Command::new(program);
    cmd.arg(repo_root().join(script))
        .arg(base)
        .arg(cases_file.path())
        .arg(out_file.path());
    if let Some(extra) = extra {
        cmd.arg(extra);
    }
    run(&mut cmd, script);
    let out: Json = serde_json::from_slice(&std::fs::read(out_file.path()).unwrap()).unwrap();
    out.as_array().cloned().unwrap()
}

/// Compares answers case by case; returns the number of cases.
fn compare(client: &str, cases: &[(String, Json)], want: &[Json], got: &[Json]) -> usize {
    assert_eq!(want.len(), got.len(), "{client}: one answer per case");
    let mut mismatches = Vec::new();
    for (((flag, ctx), w), g) in cases.iter().zip(want).zip(got) {
        if w != g {
            mismatches.push(format!("{flag} {ctx}: vexil {w}, {client} {g}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{client}: {} of {} cases differ, e.g.\n{}",
        mismatches.len(),
        cases.len(),
        mismatches
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    cases.len()
}

/// Flags whose every context got the same answer (static flags do; others should not).
fn single_answer_flags(ns: &Namespace, cases: &[(String, Json)], want: &[Json]) -> Vec<String> {
    let mut answers: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for ((flag, _), w) in cases.iter().zip(want) {
        answers.entry(flag).or_default().insert(w.to_string());
    }
    answers
        .into_iter()
        .filter(|(flag, set)| set.len() < 2 && ns.flag(flag).is_some_and(|f| !f.is_static()))
        .map(|(flag, _)| flag.to_owned())
        .collect()
}

fn base(server: &TestServer, ns: &Namespace, mount: &str) -> String {
    if *ns.name == *vexil_core::DEFAULT_NAMESPACE {
        format!("http://{}{mount}", server.http)
    } else {
        format!("http://{}/ns/{}{mount}", server.http, ns.name)
    }
}

/// Cases for one client on one namespace: (flag, client context) for every flag it checks.
fn cases_for(flags: &[String], contexts: &[Json]) -> Vec<(String, Json)> {
    flags
        .iter()
        .flat_map(|flag| contexts.iter().map(move |c| (flag.clone(), c.clone())))
        .collect()
}

/// Every client on every namespace of a repository; returns (client, flags checked, cases).
async fn conformance(root: PathBuf) -> Vec<(String, usize, usize)> {
    let snapshot = load(&root);
    let server = TestServer::start(
        dir_server_reloader(root),
        Tokens::default(),
        Options::default(),
    )
    .await;
    let python = python();
    let ruby = Path::new(ruby());
    node_dir(); // npm ci, once
    let node = Path::new("node");
    let mut report = Vec::new();
    let mut dull = Vec::new();
    for ns in snapshot.namespaces() {
        // Python UnleashClient (spec 6.1.0: segments sent separately, yggdrasil engine), Node
        // unleash-client (its own engine, the same body), then ruby-unleash 3.2.5 (no
        // Unleash-Client-Spec: the legacy export).
        let unleash_clients = [
            (
                python,
                "tests/conformance/unleash_client.py",
                Mirror::Unleash,
                "python UnleashClient",
                7,
            ),
            (
                node,
                "tests/conformance/node/unleash_client.js",
                Mirror::UnleashNode,
                "node unleash-client",
                17,
            ),
            (
                ruby,
                "tests/conformance/ruby/unleash_check.rb",
                Mirror::UnleashLegacy,
                "ruby-unleash",
                11,
            ),
        ];
        for (program, script, mirror, client, seed) in unleash_clients {
            let flags = exact(&snapshot, ns, mirror);
            if flags.is_empty() {
                continue;
            }
            let legacy = mirror == Mirror::UnleashLegacy;
            let contexts = unleash_contexts(&snapshot, CONTEXTS_PER_FLAG, seed, legacy);
            let cases = cases_for(&flags, &contexts);
            let flag_type = |f: &str| ns.flag(f).unwrap().flag_type;
            let want: Vec<Json> = cases
                .iter()
                .map(|(f, c)| expected(ns, f, &vexil_context(c)))
                .collect();
            let input: Vec<Json> = cases
                .iter()
                .map(|(f, c)| json!({"flag": f, "context": c, "variant": flag_type(f) != FlagType::Boolean}))
                .collect();
            let got = run_client(
                program,
                script,
                &base(&server, ns, "/api"),
                &json!(input),
                None,
            );
            let got: Vec<Json> = cases
                .iter()
                .zip(&got)
                .map(|((f, _), g)| unleash_answer(flag_type(f), g))
                .collect();
            let n = compare(client, &cases, &want, &got);
            dull.extend(single_answer_flags(ns, &cases, &want));
            report.push((format!("{client} {}", ns.name), flags.len(), n));
        }

        // Flipper 0.25.4 gates, fed the mirror's GET /features (its User-Agent chooses the
        // legacy profile).
        let flags = exact(&snapshot, ns, Mirror::FlipperLegacy);
        if !flags.is_empty() {
            let (cases, want) = flipper_cases(&snapshot, ns, &flags);
            let input: Vec<Json> = cases
                .iter()
                .map(|(f, a)| json!({"flag": f, "actor": a}))
                .collect();
            let got = run_client(
                ruby,
                "tests/conformance/ruby/flipper_check.rb",
                &base(&server, ns, "/flipper/api"),
                &json!(input),
                None,
            );
            let got: Vec<Json> = got.into_iter().map(|b| json!({ "enabled": b })).collect();
            let n = compare("Flipper 0.25.4", &cases, &want, &got);
            dull.extend(single_answer_flags(ns, &cases, &want));
            report.push((format!("flipper {}", ns.name), flags.len(), n));
        }
    }
    server.stop().await;
    dull.sort();
    dull.dedup();
    assert!(
        dull.len() <= 2,
        "the corpus never reached a second answer for {dull:?}: extend the generator"
    );
    report
}

/// Flipper actors (flipper_id and groups, or none) and Vexil's answers for them.
fn flipper_cases(
    snapshot: &Snapshot,
    ns: &Namespace,
    flags: &[String],
) -> (Vec<(String, Json)>, Vec<Json>) {
    let mut ids = named_ids(snapshot);
    ids.push("User;1".into());
    let groups: Vec<String> = text_pool(snapshot)
        .get("groups")
        .cloned()
        .unwrap_or_default();
    let mut rng = fastrand::Rng::with_seed(13);
    let mut cases = Vec::new();
    let mut want = Vec::new();
    for flag in flags {
        for i in 0..CONTEXTS_PER_FLAG {
            let actor = if i % 10 == 0 {
                Json::Null
            } else {
                let id = if i % 3 == 0 {
                    ids[rng.usize(..ids.len())].clone()
                } else {
                    format!("User;{}", rng.u32(..100_000))
                };
                let mine: Vec<&String> = groups.iter().filter(|_| rng.u8(..4) == 0).collect();
                json!({ "flipper_id": id, "groups": mine })
            };
            let ctx = match actor.get("flipper_id").and_then(Json::as_str) {
                Some(id) => {
                    Context::with_key(id).with("groups", AttrValue::from_json(&actor["groups"]))
                }
                None => Context::new(),
            };
            want.push(expected(ns, flag, &ctx));
            cases.push((flag.clone(), actor));
        }
    }
    (cases, want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_agree_with_vexil_on_the_fixture_repository() {
    let report = conformance(repo_root().join("tests/mirrors/flags")).await;
    let flags: BTreeMap<&str, usize> = report.iter().map(|(c, f, _)| (c.as_str(), *f)).collect();
    // Every mapping is exercised: these counts only move when the fixture does.
    assert!(flags["python UnleashClient default"] >= 30, "{report:?}");
    assert!(flags["node unleash-client default"] >= 30, "{report:?}");
    assert!(flags["ruby-unleash default"] >= 10, "{report:?}");
    assert!(flags["flipper default"] >= 12, "{report:?}");
    for (client, flags, cases) in &report {
        assert!(*cases >= flags * CONTEXTS_PER_FLAG, "{client}");
        eprintln!("{client}: {flags} flags, {cases} cases agree");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_agree_with_vexil_on_the_example_repository() {
    let report = conformance(repo_root().join("flags")).await;
    let python: usize = report
        .iter()
        .filter(|(c, _, _)| c.starts_with("python"))
        .map(|(_, f, _)| f)
        .sum();
    assert!(python >= 10, "{report:?}");
    let node: usize = report
        .iter()
        .filter(|(c, _, _)| c.starts_with("node"))
        .map(|(_, f, _)| f)
        .sum();
    assert!(node >= 10, "{report:?}");
    for (client, flags, cases) in &report {
        eprintln!("{client}: {flags} flags, {cases} cases agree");
    }
}

/// Findings as the pinned files list them: `namespace/flag mirror fidelity: reason`, a line each.
pub(crate) fn findings_text(snapshot: &vexil_core::Snapshot, mirrors: &[Mirror]) -> String {
    vexil_mirror::findings(snapshot, mirrors)
        .iter()
        .map(|f| {
            format!(
                "{}/{} {} {}: {}\n",
                f.namespace,
                f.flag,
                f.mirror.as_str(),
                f.fidelity.as_str(),
                f.reason
            )
        })
        .collect()
}

/// What each mirror says about each fixture flag: tests/mirrors/findings.txt (VEXIL_BLESS=1
/// rewrites it after a reviewed change).
#[test]
fn fixture_findings_are_pinned() {
    let snapshot = load(&repo_root().join("tests/mirrors/flags"));
    // The flagd export's findings are pinned in tests/flagd/findings.txt.
    let mirrors: Vec<Mirror> = Mirror::ALL
        .into_iter()
        .filter(|m| !matches!(m, Mirror::Flagd | Mirror::FlagdNode | Mirror::FlagdPython))
        .collect();
    let got = findings_text(&snapshot, &mirrors);
    crate::helpers::golden("tests/mirrors/findings.txt", &got);
    let omitted = got.lines().filter(|l| l.contains(" omitted: ")).count();
    let inexact = got.lines().filter(|l| l.contains(" inexact: ")).count();
    assert!(
        omitted > 10 && inexact > 5,
        "the fixture exercises both kinds"
    );
}

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn keys(body: &Json) -> Vec<String> {
    body["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            f.get("key")
                .or_else(|| f.get("name"))
                .and_then(Json::as_str)
                .unwrap()
                .to_owned()
        })
        .collect()
}

async fn get_json(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Json) {
    let (code, head, body) = http(addr, "GET", path, headers, "").await;
    let json = serde_json::from_str(&body).unwrap_or(Json::Null);
    (code, head, json)
}

fn fixture_server_options() -> Options {
    Options {
        source: "directory tests/mirrors/flags".into(),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipper_wire_contract() {
    let root = repo_root().join("tests/mirrors/flags");
    let snapshot = load(&root);
    let server = TestServer::start(
        dir_server_reloader(root),
        Tokens::default(),
        fixture_server_options(),
    )
    .await;
    let addr = server.http;

    let (code, head, all) = get_json(addr, "/flipper/api/features", &[]).await;
    assert_eq!(code, 200);
    assert_eq!(header(&head, "content-type"), Some("application/json"));
    assert_eq!(header(&head, "poll-interval"), Some("10"));
    let etag = header(&head, "etag").unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "a strong ETag: {etag}"
    );
    // Every boolean flag Flipper can carry, in flag order; the rest are left out.
    let ns = snapshot.namespace("default").unwrap();
    let exported: Vec<String> =
        vexil_mirror::flipper::export(ns, vexil_mirror::flipper::Profile::Legacy)
            .features
            .iter()
            .map(|f| f.key.to_string())
            .collect();
    assert_eq!(keys(&all), exported);
    assert!(!exported.contains(&"theme".to_owned()) && exported.contains(&"by-ids".to_owned()));
    let by_ids = all["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == "by-ids")
        .unwrap();
    assert_eq!(
        by_ids,
        &json!({"key": "by-ids", "state": "conditional", "gates": [
            {"key": "boolean", "name": "boolean", "value": null},
            {"key": "expression", "name": "expression", "value": null},
            {"key": "actors", "name": "actor", "value": ["u-1", "u-7"]},
            {"key": "percentage_of_actors", "name": "percentage_of_actors", "value": null},
            {"key": "percentage_of_time", "name": "percentage_of_time", "value": null},
            {"key": "groups", "name": "group", "value": []}]})
    );
    let state_of = |key: &str| {
        all["features"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key"] == key)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state_of("static-on"), "on");
    assert_eq!(state_of("static-off"), "off");
    assert_eq!(state_of("rollout-flipper"), "conditional");

    // Query forms: empty parameters, keys lists, keys[], exclusions.
    let (_, _, some) = get_json(
        addr,
        "/flipper/api/features?&keys=by-groups,nope,by-ids,by-groups",
        &[],
    )
    .await;
    assert_eq!(keys(&some), ["by-groups", "by-ids"]);
    let (_, _, none) = get_json(addr, "/flipper/api/features?keys=", &[]).await;
    assert_eq!(none, json!({"features": []}));
    let (_, _, bracket) = get_json(
        addr,
        "/flipper/api/features?keys[]=static-on&keys%5B%5D=by-ids",
        &[],
    )
    .await;
    assert_eq!(keys(&bracket), ["static-on", "by-ids"]);
    // A bare `keys` is no filter (Rack reads it as nil).
    let (_, _, unfiltered) = get_json(addr, "/flipper/api/features?keys", &[]).await;
    assert_eq!(keys(&unfiltered), exported);
    let (_, _, bare) = get_json(addr, "/flipper/api/features?exclude_gates=TRUE", &[]).await;
    assert_eq!(bare["features"][0].as_object().unwrap().len(), 2, "{bare}");
    // The 1.x adapter: `?&exclude_gate_names=true`, then If-None-Match -> 304 without a body.
    let (code, head, nameless) =
        get_json(addr, "/flipper/api/features?&exclude_gate_names=true", &[]).await;
    assert_eq!(code, 200);
    assert!(nameless["features"][0]["gates"][0].get("name").is_none());
    let tag = header(&head, "etag").unwrap().to_owned();
    assert_ne!(tag, etag, "each body has its own tag");
    let (code, head, body) = http(
        addr,
        "GET",
        "/flipper/api/features?&exclude_gate_names=true",
        &[("If-None-Match", &tag)],
        "",
    )
    .await;
    assert_eq!((code, body.as_str()), (304, ""));
    assert_eq!(header(&head, "etag"), Some(tag.as_str()));

    // One feature; unknown ones (slashes included) are Flipper's code 1.
    let (code, _, one) = get_json(addr, "/flipper/api/features/by-ids", &[]).await;
    assert_eq!((code, &one), (200, by_ids));
    for path in [
        "/flipper/api/features/nope",
        "/flipper/api/features/a%2Fb",
        "/flipper/api/features/theme",
    ] {
        let (code, _, err) = get_json(addr, path, &[]).await;
        assert_eq!(code, 404, "{path}");
        assert_eq!(err["code"], 1, "{path}: {err}");
        assert_eq!(err["message"], "Feature not found.");
    }
    // Actors, evaluated by Vexil.
    let (code, _, actor) = get_json(
        addr,
        "/flipper/api/actors/u-1?keys=by-ids,rollout-flipper,nope",
        &[],
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(actor["flipper_id"], "u-1");
    assert_eq!(actor["features"]["by-ids"], json!({"enabled": true}));
    assert_eq!(actor["features"]["nope"], json!({"enabled": false}));
    let (_, _, actor) = get_json(addr, "/flipper/api/actors/User%3B1", &[]).await;
    assert_eq!(actor["flipper_id"], "User;1");
    assert_eq!(actor["features"]["by-ids"], json!({"enabled": false}));
    assert_eq!(actor["features"]["static-on"], json!({"enabled": true}));
    assert!(actor["features"].get("theme").is_none(), "booleans only");
    // (Without `coin-flip`: percentage_of_time answers at random.)
    let (_, head, _) = http(
        addr,
        "GET",
        "/flipper/api/actors/User%3B1?keys=by-ids,static-on",
        &[],
        "",
    )
    .await;
    let actor_tag = header(&head, "etag").unwrap().to_owned();
    let (code, _, _) = http(
        addr,
        "GET",
        "/flipper/api/actors/User%3B1?keys=by-ids,static-on",
        &[("If-None-Match", &actor_tag)],
        "",
    )
    .await;
    assert_eq!(code, 304);

    // Writes: 405 with Flipper's error JSON saying where the flags live.
    for (method, path) in [
        ("POST", "/flipper/api/features"),
        ("DELETE", "/flipper/api/features/by-ids"),
        ("DELETE", "/flipper/api/features/by-ids/clear"),
        ("POST", "/flipper/api/features/by-ids/boolean"),
        ("POST", "/flipper/api/features/by-ids/percentage_of_actors"),
        ("DELETE", "/flipper/api/features/by-ids/actors"),
        ("POST", "/flipper/api/import"),
        ("PUT", "/ns/shop/flipper/api/features/checkout-v2"),
    ] {
        let (code, head, body) = http(addr, method, path, &[], "{\"name\":\"x\"}").await;
        assert_eq!(code, 405, "{method} {path}");
        assert_eq!(header(&head, "content-type"), Some("application/json"));
        let err: Json = serde_json::from_str(&body).unwrap();
        let message = err["message"].as_str().unwrap();
        assert!(
            message.contains("read-only")
                && message.contains("directory tests/mirrors/flags")
                && message.contains("pull request"),
            "{message}"
        );
        assert!(err["more_info"].is_string() && err["code"].is_number());
    }
    for path in ["/flipper/api/nothing-here", "/flipper/api", "/flipper/api/"] {
        let (code, _, body) = http(addr, "GET", path, &[], "").await;
        assert_eq!((code, body.as_str()), (404, "{}"), "{path}");
    }

    // Namespaces by prefix.
    let (code, _, shop) = get_json(addr, "/ns/shop/flipper/api/features", &[]).await;
    assert_eq!((code, keys(&shop)), (200, vec!["checkout-v2".to_owned()]));
    let (code, _, _) = get_json(addr, "/flipper/api/features/checkout-v2", &[]).await;
    assert_eq!(code, 404, "another namespace's flag");
    let (code, _, _) = get_json(addr, "/ns/nope/flipper/api/features", &[]).await;
    assert_eq!(code, 400);

    // A mistyped namespace is 400 wherever the adapter reads (Debian's ruby-flipper lacks the
    // HTTP adapter, whose `get` raises on any status but 200 and 404: 404 would read "off").
    for path in ["/features", "/features/checkout-v2", "/actors/u-5"] {
        let (code, _, body) = get_json(addr, &format!("/ns/typo/flipper/api{path}"), &[]).await;
        assert_eq!(code, 400, "{path}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.starts_with("Namespace `typo` not found")
                && message.contains("`default`, `shop`"),
            "{message}"
        );
    }
    server.stop().await;
}
