//! flagd's sync service with the real in-process providers: Python `openfeature-provider-flagd`
//! (resolver IN_PROCESS, openfeature-flagd-core 2.x) and Node `@openfeature/flagd-provider`
//! (resolverType `in-process`, flagd-core 4.x) sync the flagd export from `vexil serve`'s sync
//! port and evaluate it themselves. On every flag the export calls exact for their evaluator
//! (findings about unusual inputs only aside: the corpus has none), over `flags/` and the
//! fixture repository `tests/flagd/flags/` (every operator and rule shape), 1,000 generated
//! contexts per flag, their answers must be Vexil's; and again after commits change flags while
//! they are connected. What the export says about each fixture flag is pinned in
//! tests/flagd/findings.txt; the fractional vectors of the reference in
//! tests/flagd/fractional_vectors.txt.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value as Json, json};
use vexil_core::source::{DirOptions, DirSource};
use vexil_core::{AttrValue, Context, Reloader, Snapshot};
use vexil_mirror::Mirror;
use vexil_server::{Options, Tokens};

use crate::helpers::repo_root;
use crate::openfeature::{candidates, insert_nested, is_random, named_ids, node_dir, python};
use crate::serve::{TestServer, commit, repo_with};

mod sync;

/// Contexts generated per flag and client.
const CONTEXTS_PER_FLAG: usize = 1000;
/// How long a client may take to answer one corpus.
const PATIENCE: Duration = Duration::from_secs(300);

fn load(root: &Path) -> Snapshot {
    let options = vexil_core::CompileOptions {
        clients: Some(Mirror::names()),
        ..Default::default()
    };
    let (_, compiled) = vexil_core::load_dir(root, &options).unwrap();
    compiled.snapshot.unwrap()
}

/// (namespace, flag) of every flag `mirror` exports exactly and whose answer is deterministic;
/// findings about unusual inputs only do not count (the corpus has no such inputs).
fn exact(snapshot: &Snapshot, mirror: Mirror) -> Vec<(String, String)> {
    let findings: BTreeSet<(String, String)> = vexil_mirror::findings(snapshot, &[mirror])
        .into_iter()
        .filter(|f| !f.reason.contains("for unusual inputs only"))
        .map(|f| (f.namespace.to_string(), f.flag.to_string()))
        .collect();
    snapshot
        .namespaces()
        .iter()
        .flat_map(|ns| ns.flags.iter().map(move |f| (ns, f)))
        .filter(|(ns, f)| !is_random(ns, f))
        .map(|(ns, f)| (ns.name.to_string(), f.key.to_string()))
        .filter(|k| !findings.contains(k))
        .collect()
}

/// `n` contexts per flag of `flags`: no key, a named id or a generated key; attributes drawn from
/// the operands the flags are written with (lists included), dotted names always nested.
fn corpus(snapshot: &Snapshot, flags: &[(String, String)], n: usize, seed: u64) -> Vec<Json> {
    // flagd's own operators read a list as one value (a finding "for unusual inputs only"):
    // the attributes they test get no lists.
    let custom = custom_op_attrs(snapshot);
    let pool: Vec<(String, Vec<Json>)> = candidates(snapshot)
        .into_iter()
        .map(|(attr, values)| {
            let values = if custom.contains(&attr) {
                values.into_iter().filter(|v| !v.is_array()).collect()
            } else {
                values
            };
            (attr, values)
        })
        .collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut ids = named_ids(snapshot);
    ids.extend(["user-1", "user-42", "user-43", "alice", "bob"].map(String::from));
    let mut out = Vec::with_capacity(flags.len() * n);
    for (ns, key) in flags {
        let flag = snapshot.namespace(ns).and_then(|n| n.flag(key)).unwrap();
        for i in 0..n {
            let key = match i % 5 {
                0 => Json::Null,
                1 => json!(ids[rng.usize(..ids.len())]),
                _ => json!(format!("user-{}", rng.u32(..100_000))),
            };
            let mut attributes = serde_json::Map::new();
            for (attr, values) in &pool {
                if rng.bool() && !values.is_empty() && attr != "targeting_key" {
                    insert_nested(
                        &mut attributes,
                        attr,
                        values[rng.usize(..values.len())].clone(),
                    );
                }
            }
            // Bucketing attributes (`bucket_by`) as text, as accounts and tenants are.
            attributes.insert(
                "account".into(),
                json!(format!("acct-{}", rng.u32(..10_000))),
            );
            out.push(json!({
                "namespace": ns,
                "flag": &*flag.key,
                "type": flag.flag_type.as_str(),
                "key": key,
                "attributes": attributes,
            }));
        }
    }
    out
}

/// Attributes tested with `starts_with`, `ends_with` or a version comparison.
fn custom_op_attrs(snapshot: &Snapshot) -> BTreeSet<String> {
    use vexil_core::snapshot::{Condition, Matcher};
    let mut out = BTreeSet::new();
    let mut note = |c: &Condition| {
        if c.op_name.starts_with("semver") || matches!(c.op_name, "starts_with" | "ends_with") {
            out.insert(c.attr.full.to_string());
        }
    };
    for ns in snapshot.namespaces() {
        for segment in &ns.segments {
            segment
                .groups
                .iter()
                .flat_map(|(_, cs)| cs)
                .for_each(&mut note);
        }
        for rule in ns.flags.iter().flat_map(|f| &f.rules) {
            for m in &rule.matchers {
                if let Matcher::Conditions(_, cs) = m {
                    cs.iter().for_each(&mut note);
                }
            }
        }
    }
    out
}

/// Vexil's answer for a case: {value, variant}, or for a disabled flag what the providers
/// answer for flagd's DISABLED state (their code default, no variant).
fn expected(snapshot: &Snapshot, case: &Json) -> Json {
    let mut ctx = Context {
        targeting_key: case["key"].as_str().map(str::to_owned),
        ..Context::default()
    };
    for (k, v) in case["attributes"].as_object().unwrap() {
        ctx.attributes.insert(k.clone(), AttrValue::from_json(v));
    }
    let e = snapshot
        .evaluate(
            case["namespace"].as_str().unwrap(),
            case["flag"].as_str().unwrap(),
            &ctx,
        )
        .unwrap();
    if e.reason == vexil_core::Reason::Disabled {
        let defaults =
            json!({ "boolean": false, "string": "", "integer": 0, "float": 0.0, "object": {} });
        return json!({ "value": defaults[case["type"].as_str().unwrap()], "variant": null });
    }
    json!({ "value": e.value().to_json(), "variant": &*e.variant.name })
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

/// Compares a client's answers with Vexil's; returns how many agreed.
fn compare(client: &str, snapshot: &Snapshot, corpus: &[Json], got: &Json) -> usize {
    let got = got
        .as_array()
        .unwrap_or_else(|| panic!("{client} answered {got}"));
    assert_eq!(got.len(), corpus.len(), "{client}: one answer per case");
    let mut mismatches = Vec::new();
    for (case, answer) in corpus.iter().zip(got) {
        let want = expected(snapshot, case);
        let ok = same_value(&answer["value"], &want["value"])
            && answer["variant"] == want["variant"]
            && (answer["error"].is_null() || want["variant"].is_null());
        if !ok {
            mismatches.push(format!("{case}\n  vexil: {want}\n  {client}: {answer}"));
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
    corpus.len()
}

/// A client program in corpus mode: JSON commands in, one JSON line of answers per command out.
struct Client {
    name: &'static str,
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    stdin: tokio::process::ChildStdin,
}

impl Client {
    fn start(name: &'static str, target: std::net::SocketAddr) -> Client {
        use tokio::io::AsyncBufReadExt;
        let target = target.to_string();
        let mut command = if name == "python" {
            let mut c = tokio::process::Command::new(python());
            c.arg(repo_root().join("tests/conformance/flagd_in_process.py"));
            c
        } else {
            let mut c = tokio::process::Command::new("node");
            c.arg(node_dir().join("flagd_in_process.js"));
            c
        };
        let mut child = command
            .args(["corpus", &target])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let stdin = child.stdin.take().unwrap();
        Client {
            name,
            child,
            lines,
            stdin,
        }
    }

    /// Evaluates `corpus`, after the next configuration change when `await_change`.
    async fn evaluate(&mut self, corpus: &[Json], await_change: bool) -> Json {
        use tokio::io::AsyncWriteExt;
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), serde_json::to_vec(corpus).unwrap()).unwrap();
        let command = json!({ "corpus": file.path(), "await_change": await_change });
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        let line = tokio::time::timeout(PATIENCE, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{} took too long", self.name))
            .unwrap()
            .unwrap_or_else(|| panic!("{} ended without answering", self.name));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{}: {e}: {line}", self.name))
    }

    async fn finish(mut self) {
        drop(self.stdin);
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{} exited with {status}", self.name);
    }
}

const CLIENTS: [(&str, Mirror); 2] = [("python", Mirror::FlagdPython), ("node", Mirror::FlagdNode)];

/// Every client over every exact flag of the repository at `root`; returns (client, exact
/// flags, answers compared).
async fn conformance(root: &Path) -> Vec<(&'static str, usize, usize)> {
    let snapshot = load(root);
    let reloader = Reloader::start(
        Box::new(DirSource::new(root.to_path_buf(), DirOptions::default())),
        crate::serve::served_reload_options(),
    )
    .unwrap();
    let server = TestServer::start(reloader, Tokens::default(), Options::default()).await;
    let mut report = Vec::new();
    for (seed, (name, mirror)) in (0u64..).zip(CLIENTS) {
        let flags = exact(&snapshot, mirror);
        assert!(!flags.is_empty(), "{name}: no exact flag");
        let corpus = corpus(&snapshot, &flags, CONTEXTS_PER_FLAG, 2026 + seed);
        let mut client = Client::start(name, server.sync);
        let got = client.evaluate(&corpus, false).await;
        let agreed = compare(name, &snapshot, &corpus, &got);
        client.finish().await;
        report.push((name, flags.len(), agreed));
    }
    server.stop().await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_providers_agree_with_vexil_on_the_fixture_repository() {
    let report = conformance(&repo_root().join("tests/flagd/flags")).await;
    eprintln!("flagd fixture: (client, exact flags, answers) {report:?}");
    // Both bucketing flavours and most operators are exact for both providers.
    for (name, flags, _) in report {
        assert!(flags >= 20, "{name}: only {flags} exact fixture flags");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_providers_agree_with_vexil_on_the_example_repository() {
    let report = conformance(&repo_root().join("flags")).await;
    eprintln!("flags/: (client, exact flags, answers) {report:?}");
}

/// Commits change, add and remove flags while both providers are connected: each sees a
/// configuration change and then answers as Vexil does on the new revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_follow_commits_while_connected() {
    let first = "flags:\n  gate:\n    rules: [{ when: [{ attr: plan, equals: pro }], serve: true }]\n  ramp:\n    rules: [{ rollout: 20, bucketing: flagd }]\n  gone: { default: true }\n";
    let second = "flags:\n  gate:\n    rules: [{ when: [{ attr: plan, in: [pro, team] }], serve: true }]\n  ramp:\n    rules: [{ rollout: 70, bucketing: flagd }]\n  fresh:\n    type: string\n    variants: { a: A, b: B }\n    default: a\n    rules: [{ split: { a: 50, b: 50 }, bucketing: flagd }]\n";
    let repo = repo_with(first);
    let server = TestServer::git(repo.path(), Options::default()).await;
    let snapshot_of = |text: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("flags.yaml"), text).unwrap();
        load(dir.path())
    };
    let (before, after) = (snapshot_of(first), snapshot_of(second));
    let mut clients: Vec<Client> = CLIENTS
        .iter()
        .map(|(name, _)| Client::start(name, server.sync))
        .collect();
    // Each client on the flags exact for it (Python buckets otherwise: only `gate`).
    for (client, (_, mirror)) in clients.iter_mut().zip(CLIENTS) {
        let corpus_before = corpus(&before, &exact(&before, mirror), 200, 7);
        let got = client.evaluate(&corpus_before, false).await;
        compare(client.name, &before, &corpus_before, &got);
    }
    commit(
        repo.path(),
        second,
        "widen the gate, ramp up, add fresh, drop gone",
    );
    for (client, (_, mirror)) in clients.iter_mut().zip(CLIENTS) {
        let corpus_after = corpus(&after, &exact(&after, mirror), 200, 8);
        assert!(corpus_after.iter().any(|c| c["flag"] == "gate"));
        let got = client.evaluate(&corpus_after, true).await;
        compare(client.name, &after, &corpus_after, &got);
        // The removed flag is gone for the provider too.
        let gone = [
            json!({"namespace": "default", "flag": "gone", "type": "boolean", "key": "u", "attributes": {}}),
        ];
        let got = client.evaluate(&gone, false).await;
        assert_eq!(
            got[0]["error"],
            json!("FLAG_NOT_FOUND"),
            "{}: {got}",
            client.name
        );
    }
    for client in clients {
        client.finish().await;
    }
    server.stop().await;
}

/// What the flagd export says about each fixture flag: tests/flagd/findings.txt (VEXIL_BLESS=1
/// rewrites it after a reviewed change).
#[test]
fn fixture_findings_are_pinned() {
    let snapshot = load(&repo_root().join("tests/flagd/flags"));
    let mirrors = [Mirror::Flagd, Mirror::FlagdNode, Mirror::FlagdPython];
    let got = crate::mirrors::findings_text(&snapshot, &mirrors);
    crate::helpers::golden("tests/flagd/findings.txt", &got);
}

/// The reference's `fractional` vectors: murmur3 of the bucketing value and the bucket
/// `bucketing: flagd` derives from it (tests/flagd/fractional_vectors.txt).
#[test]
fn fractional_vectors() {
    let text =
        std::fs::read_to_string(repo_root().join("tests/flagd/fractional_vectors.txt")).unwrap();
    let mut rows = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let [value, hash, bucket] = line.split('\t').collect::<Vec<_>>()[..] else {
            panic!("bad row {line:?}");
        };
        let hash: u32 = hash.parse().unwrap();
        assert_eq!(
            vexil_core::bucket::murmur3_parts(&[value.as_bytes()], 0),
            hash,
            "{value}"
        );
        assert_eq!(
            vexil_core::bucket::flagd_bucket("", value),
            bucket.parse::<u32>().unwrap(),
            "{value}"
        );
        rows += 1;
    }
    assert!(rows >= 15, "{rows} vectors");
}

/// `vexil export --format flagd` prints the definitions the sync service serves, as a flagd flag
/// file, with flagd's findings on stderr; an unknown namespace is an error.
#[test]
fn export_writes_the_definitions_as_a_flagd_file() {
    let root = repo_root().join("tests/flagd/flags");
    let out = crate::helpers::vexil(&["export", "--format", "flagd", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let file: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(file["$schema"], "https://flagd.dev/schema/v0/flags.json");
    let snapshot = load(&root);
    let export = vexil_mirror::flagd::export(snapshot.namespace("default").unwrap());
    assert_eq!(file["flags"], export.definitions["flags"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("warning[mirror-omitted]: flag `op-matches` is left out of the flagd mirror"),
        "{stderr}"
    );
    let out = crate::helpers::vexil(&[
        "export",
        "--format",
        "flagd",
        "--namespace",
        "nowhere",
        root.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no namespace `nowhere` (namespaces: default)")
    );
}
