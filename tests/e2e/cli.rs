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
    // Exactly the schema the repository ships (and the schema tests check), not another copy.
    let shipped =
        std::fs::read_to_string(repo_root().join("crates/vexil-core/src/schema.json")).unwrap();
    assert_eq!(stdout(&out).trim_end(), shipped.trim_end());
}
