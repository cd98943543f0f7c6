//! The `vexil` binary as users and CI run it.

use crate::helpers::{repo_root, vexil};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn validate_accepts_the_example_repository() {
    let out = vexil(&["validate", "flags"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.starts_with("valid: "), "{summary}");
}

/// flags/README.md promises no warnings: the repository config (`flags/vexil.yaml`) declares
/// only clients whose mirrors carry its flags exactly.
#[test]
fn validate_prints_no_warnings_for_the_example_repository() {
    let out = vexil(&["validate", "flags", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let items: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(items.is_empty(), "{items:#?}");
    let human = vexil(&["validate", "flags"]);
    let summary = String::from_utf8_lossy(&human.stderr);
    assert!(summary.contains("(0 warnings)"), "{summary}");
    // `--mirrors` still asks about any mirror, whatever the repository declares.
    let asked = vexil(&[
        "validate",
        "flags",
        "--mirrors",
        "unleash",
        "--format",
        "json",
    ]);
    let items: Vec<serde_json::Value> = serde_json::from_slice(&asked.stdout).unwrap();
    assert!(!items.is_empty());
    assert!(
        items.iter().all(|i| i["message"]
            .as_str()
            .unwrap()
            .contains(" the unleash mirror")),
        "{items:#?}"
    );
}

/// flags/ still demonstrates every mirror: each client is declared (by a flag's own `clients:`)
/// for at least one flag, and every declaration is true: no finding for that flag and client.
#[test]
fn every_mirror_is_declared_for_some_flag_of_the_example() {
    use vexil_mirror::Mirror;
    let options = vexil_core::CompileOptions {
        clients: Some(Mirror::names()),
        ..Default::default()
    };
    let (_, compiled) = vexil_core::load_dir(&repo_root().join("flags"), &options).unwrap();
    let snapshot = compiled.snapshot.unwrap();
    let findings = vexil_mirror::findings(&snapshot, &Mirror::ALL);
    for mirror in Mirror::ALL {
        let mut declared = Vec::new();
        for ns in snapshot.namespaces() {
            for flag in &ns.flags {
                if vexil_mirror::declares(&snapshot, &ns.name, &flag.key, mirror) {
                    declared.push(format!("{}/{}", ns.name, flag.key));
                    let wrong: Vec<_> = findings
                        .iter()
                        .filter(|f| {
                            f.mirror == mirror && f.namespace == ns.name && f.flag == flag.key
                        })
                        .collect();
                    assert!(
                        wrong.is_empty(),
                        "{mirror:?} is declared for {}: {wrong:#?}",
                        flag.key
                    );
                }
            }
        }
        assert!(
            !declared.is_empty(),
            "no flag of flags/ declares {}",
            mirror.as_str()
        );
        // Declared by the flags themselves, not by every flag at once.
        assert!(
            declared.len() < snapshot.flag_count(),
            "{mirror:?}: {declared:?}"
        );
    }
}

/// One warning per flag and client, with every reason and its place, in every format; only
/// the declared clients' findings.
#[test]
fn validate_groups_findings_per_flag_and_declared_client() {
    let dir = tempfile::tempdir().unwrap();
    let flags = "flags:\n  two-rollouts:\n    rules:\n      - { when: [{ attr: plan, in: [pro] }], rollout: 50 }\n      - { rollout: 25 }\n";
    std::fs::write(dir.path().join("flags.yaml"), flags).unwrap();
    std::fs::write(dir.path().join("vexil.yaml"), "clients: [unleash]\n").unwrap();
    let root = dir.path().to_str().unwrap();
    let json = vexil(&["validate", root, "--format", "json"]);
    assert_eq!(json.status.code(), Some(0));
    let items: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(items.len(), 1, "{items:#?}");
    let item = &items[0];
    assert_eq!(
        (item["line"].as_u64(), item["column"].as_u64()),
        (Some(4), Some(9))
    );
    assert_eq!(item["code"], "mirror-inexact");
    let message = item["message"].as_str().unwrap();
    assert!(
        message.starts_with("flag `two-rollouts` is exported inexactly to the unleash mirror: 2 reasons: (1) rule `1` buckets"),
        "{message}"
    );
    assert!(message.contains("; (2) rule `2` buckets"), "{message}");
    assert!(message.ends_with("(line 5, column 9)"), "{message}");

    let human = vexil(&["validate", root]);
    let text = stdout(&human);
    assert_eq!(text.matches("warning[").count(), 1, "{text}");
    assert!(
        text.contains(&format!("--> {root}/flags.yaml:4:9")),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&human.stderr).contains("(1 warnings)"));

    // One annotation, on one line (the message holds no line break to escape).
    let github = stdout(&vexil(&["validate", root, "--format", "github"]));
    assert_eq!(github.lines().count(), 1, "{github}");
    assert!(
        github.starts_with(&format!("::warning file={root}/flags.yaml,line=4,col=9,title=vexil mirror-inexact::flag `two-rollouts`")),
        "{github}"
    );

    // Without the config file: every mirror, still one warning per flag and client.
    std::fs::remove_file(dir.path().join("vexil.yaml")).unwrap();
    let all = vexil(&["validate", root, "--format", "json"]);
    let items: Vec<serde_json::Value> = serde_json::from_slice(&all.stdout).unwrap();
    let clients: Vec<&str> = items
        .iter()
        .map(|i| {
            let m = i["message"].as_str().unwrap();
            m.split(" the ")
                .nth(1)
                .unwrap()
                .split(" mirror")
                .next()
                .unwrap()
        })
        .collect();
    // Distinct clients as many as warnings: one warning per client, wherever they stand.
    let distinct: std::collections::BTreeSet<&str> = clients.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        clients.len(),
        "one warning per client: {items:#?}"
    );
    assert!(
        distinct.contains("unleash") && clients.len() >= 2,
        "{items:#?}"
    );
}

/// The config file is one more file of a revision: a git revision's `vexil.yaml` is read as
/// the working tree's is (the reloader's sources share the same walk and compile).
#[test]
fn validate_reads_the_config_file_of_a_git_revision() {
    use crate::helpers::{git, vexil_in};
    let dir = tempfile::tempdir().unwrap();
    let flags = dir.path().join("flags");
    std::fs::create_dir(&flags).unwrap();
    let two_rollouts = "flags:\n  two-rollouts: { rules: [{ rollout: 50 }, { rollout: 25 }] }\n";
    std::fs::write(flags.join("flags.yaml"), two_rollouts).unwrap();
    std::fs::write(flags.join("vexil.yaml"), "clients: [unleash]\n").unwrap();
    git(dir.path(), &["init", "-q"]);
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-qm", "flags"]);
    // The working tree declares no client; the commit declares unleash.
    std::fs::write(flags.join("vexil.yaml"), "clients: []\n").unwrap();
    let messages = |args: &[&str]| -> Vec<String> {
        let out = vexil_in(dir.path(), args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let items: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        items
            .iter()
            .map(|i| i["message"].as_str().unwrap().to_owned())
            .collect()
    };
    let committed = messages(&["validate", "flags", "--rev", "HEAD", "--format", "json"]);
    assert_eq!(committed.len(), 1, "{committed:#?}");
    assert!(
        committed[0].contains(" the unleash mirror: 2 reasons"),
        "{committed:#?}"
    );
    assert_eq!(
        messages(&["validate", "flags", "--format", "json"]),
        Vec::<String>::new()
    );
}

#[test]
fn validate_reports_invalid_files_in_every_format() {
    let fixture = "tests/invalid/unknown-references";
    let human = vexil(&["validate", fixture]);
    assert_eq!(human.status.code(), Some(1));
    let text = stdout(&human);
    assert!(text.contains("error[unknown-segment]"), "{text}");
    assert!(
        text.contains(&format!("--> {fixture}/flags.yaml:")),
        "{text}"
    );
    // The caret sits under the offending column.
    let line_with_caret = text.lines().find(|l| l.trim_end().ends_with('^')).unwrap();
    assert!(line_with_caret.contains(" | "), "{text}");

    let json = vexil(&["validate", fixture, "--format", "json"]);
    assert_eq!(json.status.code(), Some(1));
    let items: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert!(!items.is_empty());
    for item in &items {
        for field in ["file", "line", "column", "severity", "code", "message"] {
            assert!(!item[field].is_null(), "{field} missing in {item}");
        }
        assert!(item["file"].as_str().unwrap().starts_with(fixture));
    }

    let github = vexil(&["validate", fixture, "--format", "github"]);
    let first = stdout(&github).lines().next().unwrap().to_owned();
    assert!(
        first.starts_with(&format!("::error file={fixture}/flags.yaml,line=")),
        "{first}"
    );
    assert!(first.contains(",col="), "{first}");
}

#[test]
fn validate_exit_codes_for_usage_and_io_errors() {
    assert_eq!(
        vexil(&["validate", "does/not/exist"]).status.code(),
        Some(2)
    );
    assert_eq!(
        vexil(&["validate", "--format", "xml"]).status.code(),
        Some(2)
    );
    assert_eq!(vexil(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn validate_warnings_do_not_fail() {
    let out = vexil(&["validate", "tests/invalid/warn-unused-unreachable-expired"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("warning[unused-segment]"));
}

/// Runs `vexil eval ... --json` and parses its one JSON object.
fn eval_json(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut all = vec!["eval"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = vexil(&all);
    let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), value)
}

#[test]
fn eval_prints_typed_json() {
    // new-checkout rolls out to 25 %: crc32("new-checkout" + "user-43") % 100000 = 1364 (in),
    // "user-42" lands in bucket 65666 (out); vectors from shared/reference/bucketing.md.
    let (code, v) = eval_json(&["new-checkout", "-n", "checkout", "--key", "user-43"]);
    assert_eq!(code, Some(0));
    assert_eq!(v["flag"], "new-checkout");
    assert_eq!(v["value"], true);
    assert_eq!(v["reason"], "SPLIT");
    assert!(v["rule"].is_string());

    let (_, v) = eval_json(&["new-checkout", "-n", "checkout", "--key", "user-42"]);
    assert_eq!(
        (v["value"].clone(), v["reason"].clone()),
        (serde_json::json!(false), serde_json::json!("DEFAULT"))
    );
    assert!(v["rule"].is_null());
}

#[test]
fn eval_reads_typed_attributes_and_reports_unknown_flags() {
    let flags = tempfile::tempdir().unwrap();
    std::fs::write(
        flags.path().join("f.yaml"),
        "flags:\n  limit:\n    type: integer\n    variants: {low: 10, high: 50}\n    default: low\n    rules:\n      - when: [{attr: seats, gte: 100}, {attr: plan, equals: pro}]\n        serve: high\n",
    )
    .unwrap();
    let source = flags.path().to_str().unwrap();
    let (_, v) = eval_json(&[
        "limit",
        "--source",
        source,
        "--attr",
        "seats=120",
        "--attr",
        "plan=pro",
    ]);
    assert_eq!(
        v,
        serde_json::json!({"flag": "limit", "value": 50, "variant": "high", "reason": "TARGETING_MATCH", "rule": "1"})
    );

    let out = vexil(&[
        "eval", "limit", "--source", source, "--attr", "seats=99", "--attr", "plan=pro",
    ]);
    assert_eq!(
        stdout(&out).trim(),
        "limit = 10 (variant: low, reason: DEFAULT)"
    );

    let (code, v) = eval_json(&["nope", "--source", source]);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"], "FLAG_NOT_FOUND");

    let out = vexil(&["eval", "limit", "--source", source, "--attr", "novalue"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn schema_command_prints_the_schema() {
    let out = vexil(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["$id"], "https://vexil.dev/schema/flags.json");
    // The schema the repository ships (and the schema tests check), not another copy, with
    // this build's client names for a flag's `clients:`.
    let shipped =
        std::fs::read_to_string(repo_root().join("crates/vexil-core/src/schema.json")).unwrap();
    let mut shipped: serde_json::Value = serde_json::from_str(&shipped).unwrap();
    assert_eq!(shipped["$defs"]["client"]["enum"], serde_json::Value::Null);
    shipped["$defs"]["client"]["enum"] = serde_json::json!(vexil_mirror::Mirror::names());
    assert_eq!(schema, shipped);
}

#[test]
fn schema_command_prints_the_config_schema_with_this_builds_clients() {
    let out = vexil(&["schema", "--config"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["$id"], "https://vexil.dev/schema/config.json");
    assert_eq!(
        schema["$defs"]["client"]["enum"],
        serde_json::json!(vexil_mirror::Mirror::names())
    );
}
