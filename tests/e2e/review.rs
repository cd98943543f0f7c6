//! The pull-request workflow: `vexil diff` (golden outputs in tests/review/), `vexil test`,
//! `--rev`, and the commands of the CI templates in ci/.

use std::path::Path;
use std::process::Output;

use crate::helpers::{git, repo_root, vexil_in};

const BASE: &str = "\
segments:
  staff: { ids: [u1, u2] }
  beta: { ids: [b1] }
flags:
  rollout-flag:
    owner: team-a
    rules:
      - name: ramp
        rollout: 10
  split-flag:
    type: string
    variants: { a: A, b: B, c: C }
    default: a
    rules:
      - name: experiment
        split: { a: 50, b: 50 }
  staff-flag:
    rules:
      - segment: staff
        serve: true
  staff-number:
    type: integer
    variants: { low: 1, high: 2 }
    default: low
    rules:
      - segment: staff
        serve: high
  doomed: {}
  switch:
    enabled: false
    rules:
      - rollout: 50
  describe-me:
    description: old words
  beta-only:
    rules:
      - segment: beta
        serve: true
";

const HEAD: &str = "\
segments:
  staff: { ids: [u1, u2, u3] }
  beta: { ids: [b1] }
flags:
  rollout-flag:
    owner: team-b
    expires: 2027-01-01
    rules:
      - name: ramp
        rollout: 25
  split-flag:
    type: string
    variants: { a: A, b: B, c: C }
    default: a
    rules:
      - name: experiment
        split: { a: 30, b: 50, c: 20 }
  staff-flag:
    rules:
      - segment: staff
        serve: true
  staff-number:
    type: integer
    variants: { low: 1, high: 3 }
    default: low
    rules:
      - segment: staff
        serve: high
  switch:
    enabled: true
    rules:
      - rollout: 50
  describe-me:
    description: new words
  beta-only:
    rules:
      - segment: beta
        serve: true
  brand-new:
    default: true
";

/// The same flags as HEAD, reordered, re-quoted and commented: no change in behaviour.
const HEAD_REFORMATTED: &str = "\
# Reformatted: keys reordered, comments added.
flags:
  brand-new: { default: true }
  beta-only:
    rules: [{ serve: true, segment: beta }]
  describe-me: { description: 'new words' }
  switch:
    rules: [{ rollout: 50 }]
    enabled: true
  staff-number:
    variants: { high: 3, low: 1 }
    type: integer
    default: low
    rules: [{ segment: staff, serve: high }]
  staff-flag: { rules: [{ segment: staff, serve: true }] }
  split-flag:
    variants: { a: A, b: B, c: C }
    type: string
    default: a
    rules: [{ name: experiment, split: { a: 30, b: 50, c: 20 } }]
  rollout-flag:   # ramping up
    expires: 2027-01-01
    owner: team-b
    rules: [{ rollout: 25, name: ramp }]
segments:
  beta: { ids: [b1] }
  staff: { ids: [u3, u2, u1] }
";

/// A repository with `main` at BASE and `feature` at HEAD; the working tree is on `feature`.
fn repo() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(dir.join("flags")).unwrap();
    std::fs::write(dir.join("flags/app.yaml"), BASE).unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "base"]);
    git(dir, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(dir.join("flags/app.yaml"), HEAD).unwrap();
    git(dir, &["commit", "-q", "-am", "head"]);
    tmp
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Compares with tests/review/NAME, or rewrites it with VEXIL_BLESS=1.
fn golden(name: &str, actual: &str) {
    crate::helpers::golden(&format!("tests/review/{name}"), actual);
}

#[test]
fn diff_golden_outputs_for_each_format() {
    let repo = repo();
    for (format, file) in [
        ("human", "diff.human.txt"),
        ("markdown", "diff.md"),
        ("json", "diff.json"),
    ] {
        let out = vexil_in(
            repo.path(),
            &["diff", "main", "feature", "--format", format],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        golden(file, &stdout(&out));
    }
}

#[test]
fn diff_reports_what_moves() {
    let repo = repo();
    // HEAD defaults to the working tree.
    let out = vexil_in(repo.path(), &["diff", "main", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["changes_behaviour"], true);
    let ns = &report["namespaces"][0];
    assert_eq!(ns["added"][0]["flag"], "brand-new");
    assert_eq!(ns["removed"], serde_json::json!(["doomed"]));
    let changed = |key: &str| {
        ns["changed"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["flag"] == key)
            .unwrap_or_else(|| panic!("{key} not changed: {ns}"))
            .clone()
    };
    let rollout = changed("rollout-flag");
    let audience = rollout["audience"][0].as_str().unwrap();
    assert!(
        audience.contains("rollout 10 % -> 25 %: 15 % of the entities"),
        "{audience}"
    );
    // Split a:50 b:50 -> a:30 b:50 c:20: buckets 30..50 leave a, 80..100 leave b: 40 % move.
    let split = changed("split-flag");
    assert!(
        split["audience"][0]
            .as_str()
            .unwrap()
            .contains(": 40 % of the entities"),
        "{split}"
    );
    // The segment changed: both flags that use it, and the blast radius of the segment.
    assert_eq!(
        changed("staff-flag")["via_segments"],
        serde_json::json!(["staff"])
    );
    let staff = &ns["segments"][0];
    assert_eq!(staff["segment"], "staff");
    assert_eq!(
        staff["used_by"],
        serde_json::json!(["staff-flag", "staff-number"])
    );
    assert_eq!(changed("describe-me")["behaviour"], false);
    assert!(
        changed("switch")["audience"][0]
            .as_str()
            .unwrap()
            .starts_with("switched on")
    );
}

#[test]
fn a_reformatting_changes_no_behaviour() {
    let repo = repo();
    std::fs::write(repo.path().join("flags/app.yaml"), HEAD_REFORMATTED).unwrap();
    let out = vexil_in(repo.path(), &["diff", "feature"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        "no change in behaviour: no flag or segment differs\n"
    );
    // Only a description: descriptive, still no change in behaviour.
    std::fs::write(
        repo.path().join("flags/app.yaml"),
        HEAD_REFORMATTED.replace("'new words'", "'newer words'"),
    )
    .unwrap();
    let out = vexil_in(repo.path(), &["diff", "feature"]);
    let text = stdout(&out);
    assert!(
        text.contains("~ flag describe-me (descriptive only)"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "no change in behaviour: only descriptions, owners, tags, expiry, metadata or declared clients changed\n"
        ),
        "{text}"
    );
}

#[test]
fn two_directories_can_be_compared() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("f.yaml"), BASE).unwrap();
    std::fs::write(b.join("f.yaml"), HEAD).unwrap();
    let out = vexil_in(tmp.path(), &["diff", "a", "b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(text.contains("  - flag doomed\n"), "{text}");
    assert!(
        text.contains("rules[1] \"ramp\".rollout: 10 -> 25"),
        "{text}"
    );
}

/// Who reads the flags (a flag's `clients:`, the repository config `vexil.yaml`) is shown like
/// other fields, and changes no answer.
#[test]
fn diff_shows_declared_clients_as_changes_without_behaviour() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("f.yaml"), "flags:\n  f: { default: true }\n").unwrap();
    std::fs::write(
        b.join("f.yaml"),
        "flags:\n  f: { default: true, clients: [flipper] }\n",
    )
    .unwrap();
    std::fs::write(a.join("vexil.yaml"), "clients: [unleash]\n").unwrap();
    std::fs::write(
        b.join("vexil.yaml"),
        "clients: []\nnamespaces:\n  default: { clients: [unleash-node] }\n",
    )
    .unwrap();
    let out = vexil_in(tmp.path(), &["diff", "a", "b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout(&out),
        "namespace default\n  ~ flag f (descriptive only)\n      clients: (none) -> [\"flipper\"]\nrepository config (vexil.yaml)\n  ~ clients: [\"unleash\"] -> []\n  ~ namespaces.default.clients: (none) -> [\"unleash-node\"]\nno change in behaviour: only descriptions, owners, tags, expiry, metadata or declared clients changed\n"
    );
    let out = vexil_in(tmp.path(), &["diff", "a", "b", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["changes_behaviour"], false);
    assert_eq!(
        report["config"][0],
        serde_json::json!({ "field": "clients", "before": ["unleash"], "after": [] })
    );
    // Only the config changed: the Markdown comment says so without an empty table.
    std::fs::write(
        a.join("f.yaml"),
        "flags:\n  f: { default: true, clients: [flipper] }\n",
    )
    .unwrap();
    let out = vexil_in(tmp.path(), &["diff", "a", "b", "--format", "markdown"]);
    let md = stdout(&out);
    assert!(!md.contains("| namespace |"), "{md}");
    assert!(
        md.contains("| namespaces.default.clients | `(none)` | `[\"unleash-node\"]` |"),
        "{md}"
    );
}

const FLAG_TESTS: &str = "\
tests:
  - name: staff get it
    key: u1
    expect:
      staff-flag: true
      staff-number: { variant: high, value: 3 }
  - name: a wrong expectation
    key: nobody
    expect:
      staff-flag: true
      rollout-flag: { reason: DEFAULT }
";

#[test]
fn flag_tests_report_failures_with_file_and_line() {
    let repo = repo();
    std::fs::write(repo.path().join("flags/app.test.yaml"), FLAG_TESTS).unwrap();
    let out = vexil_in(repo.path(), &["test", "flags"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("error[test-failed]: test `a wrong expectation`, flag `staff-flag`: expected value true, got false (served variant `off` = false, reason DEFAULT, no rule matched)"), "{text}");
    assert!(text.contains("--> flags/app.test.yaml:10:7"), "{text}");
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("tests: 2 cases, 4 expectations, 1 failed in 1 files"),
        "{summary}"
    );
    // `nobody` lands outside the 25 % rollout (bucket of "rollout-flag" + "nobody"): DEFAULT holds.
    assert!(!text.contains("rollout-flag"), "{text}");

    // validate runs them too, unless told not to; GitHub annotations point at the line.
    let out = vexil_in(repo.path(), &["validate", "--format", "github", "flags"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out)
            .contains("::error file=flags/app.test.yaml,line=10,col=7,title=vexil test-failed::")
    );
    let out = vexil_in(repo.path(), &["validate", "--no-tests", "flags"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Fixed, they pass.
    std::fs::write(
        repo.path().join("flags/app.test.yaml"),
        FLAG_TESTS.replace(
            "      staff-flag: true\n      rollout",
            "      staff-flag: false\n      rollout",
        ),
    )
    .unwrap();
    let out = vexil_in(repo.path(), &["test", "flags"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn the_example_repository_ships_passing_tests() {
    let out = crate::helpers::vexil(&["test", "flags"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains(", 0 failed in 2 files"), "{summary}");
}

#[test]
fn validate_and_test_read_a_revision_without_checking_it_out() {
    let repo = repo();
    git(repo.path(), &["checkout", "-q", "-b", "broken"]);
    std::fs::write(
        repo.path().join("flags/app.yaml"),
        "flags:\n  x: { rulez: [] }\n",
    )
    .unwrap();
    git(repo.path(), &["commit", "-q", "-am", "broken"]);
    git(repo.path(), &["checkout", "-q", "feature"]);
    let out = vexil_in(repo.path(), &["validate", "--rev", "broken", "flags"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("--> flags/app.yaml:2:8"),
        "{}",
        stdout(&out)
    );
    let out = vexil_in(repo.path(), &["validate", "--rev", "main", "flags"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = vexil_in(repo.path(), &["test", "--rev", "broken", "flags"]);
    assert_eq!(out.status.code(), Some(1));
    // The working tree was not touched.
    assert_eq!(
        std::fs::read_to_string(repo.path().join("flags/app.yaml")).unwrap(),
        HEAD
    );
    let out = vexil_in(
        repo.path(),
        &["validate", "--rev", "no-such-branch", "flags"],
    );
    assert_eq!(out.status.code(), Some(2));
}

/// The `vexil` command lines of the CI templates (ci/), as a shell would run them (a trailing
/// `|| FAILED=1`, which defers the job's failure, is dropped so that a failure shows here).
fn template_commands() -> Vec<String> {
    let mut commands = Vec::new();
    for name in ["github-actions.yml", "gitlab-ci.yml"] {
        let text = std::fs::read_to_string(repo_root().join("ci").join(name)).unwrap();
        for line in text.lines() {
            let line = line.trim().trim_start_matches("- ").trim();
            if line.starts_with("vexil ") {
                commands.push(line.trim_end_matches(" || FAILED=1").to_owned());
            }
        }
    }
    commands
}

fn path_with_vexil() -> String {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_vexil")).parent().unwrap();
    format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn the_ci_templates_commands_work() {
    let commands = template_commands();
    assert!(commands.len() >= 6, "{commands:?}");
    // As in a CI job: a clone whose base branch is `origin/main`, on the pull request's branch.
    let upstream = repo();
    let work = tempfile::tempdir().unwrap();
    git(
        work.path(),
        &["clone", "-q", upstream.path().to_str().unwrap(), "clone"],
    );
    let clone = work.path().join("clone");
    git(&clone, &["checkout", "-q", "feature"]);
    std::fs::write(clone.join("flags/app.test.yaml"), PASSING_TESTS).unwrap();
    for command in &commands {
        let out = std::process::Command::new("sh")
            .args(["-c", command])
            .current_dir(&clone)
            .env("PATH", path_with_vexil())
            .env("VEXIL_BASE", "origin/main")
            .env("GITHUB_STEP_SUMMARY", work.path().join("summary.md"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`{command}` failed: {}{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let comment = std::fs::read_to_string(clone.join("vexil-diff.md")).unwrap();
    assert!(
        comment.starts_with("### Vexil: flag changes from `origin/main` to `working tree`"),
        "{comment}"
    );
    assert!(comment.contains("`doomed`"), "{comment}");
    let quality: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(clone.join("gl-code-quality.json")).unwrap())
            .unwrap();
    // Nothing but notes about the read-only mirrors (warnings, not failures).
    let quality = quality.as_array().unwrap();
    assert!(
        quality.iter().all(|q| q["check_name"]
            .as_str()
            .is_some_and(|c| c.starts_with("vexil-mirror-"))
            && q["severity"] == "minor"),
        "{quality:?}"
    );
}

#[test]
fn codequality_reports_point_at_the_line() {
    let repo = repo();
    std::fs::write(
        repo.path().join("flags/app.yaml"),
        "flags:\n  x: { rulez: [] }\n",
    )
    .unwrap();
    let out = vexil_in(
        repo.path(),
        &["validate", "--format", "codequality", "flags"],
    );
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report[0]["location"],
        serde_json::json!({ "path": "flags/app.yaml", "lines": { "begin": 2 } })
    );
    assert_eq!(report[0]["check_name"], "vexil-unknown-field");
}

const PASSING_TESTS: &str = "\
tests:
  - name: staff get it
    key: u1
    expect:
      staff-flag: true
";

#[test]
fn the_pre_commit_hook_checks_what_is_staged() {
    let repo = repo();
    let hook = repo_root().join("ci/pre-commit");
    let run_hook = || {
        std::process::Command::new(&hook)
            .current_dir(repo.path())
            .env("PATH", path_with_vexil())
            .output()
            .unwrap()
    };
    std::fs::write(repo.path().join("flags/app.test.yaml"), PASSING_TESTS).unwrap();
    git(repo.path(), &["add", "-A"]);
    assert!(run_hook().status.success());
    // Broken in the working tree only: what would be committed is fine.
    std::fs::write(repo.path().join("flags/app.yaml"), "flags: [\n").unwrap();
    assert!(run_hook().status.success());
    // Staged: refused.
    git(repo.path(), &["add", "-A"]);
    assert!(!run_hook().status.success());
    // A failing flag test staged: refused too.
    std::fs::write(repo.path().join("flags/app.yaml"), HEAD).unwrap();
    std::fs::write(
        repo.path().join("flags/app.test.yaml"),
        PASSING_TESTS.replace("true", "false"),
    )
    .unwrap();
    git(repo.path(), &["add", "-A"]);
    let out = run_hook();
    assert!(!out.status.success());
    assert!(stdout(&out).contains("test-failed"), "{}", stdout(&out));
}

/// More kinds of change, each asserted: a rule added and removed, a default, a variant added and
/// removed, a salt, a split reordered, a segment through `include`, an unused segment, a flag
/// off before and after, namespaces added and removed, and a base without flags.
#[test]
fn diff_covers_each_kind_of_change() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("README.md"), "no flags yet\n").unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "empty"]);
    let before = "\
segments:
  inner: { ids: [u1] }
  outer: { include: [inner] }
  spare: { ids: [z], description: unused }
flags:
  rules-flag:
    rules:
      - { name: first, ids: [a], serve: true }
      - { name: second, ids: [b], serve: true }
  variants-flag:
    type: string
    variants: { x: X, y: Y }
    default: x
  salty:
    rules: [{ name: r, rollout: 50, salt: one }]
  order:
    type: string
    variants: { a: A, b: B }
    default: a
    rules: [{ name: s, split: { a: 50, b: 50 } }]
  via-include:
    rules: [{ segment: outer, serve: true }]
  off:
    enabled: false
    rules: [{ name: r, rollout: 10 }]
";
    let after = "\
segments:
  inner: { ids: [u1, u2] }
  outer: { include: [inner] }
  spare: { ids: [z], description: still unused }
  unused-new: { ids: [n] }
flags:
  rules-flag:
    default: true
    rules:
      - { name: second, ids: [b], serve: true }
      - { name: third, ids: [c], serve: true }
  variants-flag:
    type: string
    variants: { x: X, z: Z }
    default: z
  salty:
    rules: [{ name: r, rollout: 50, salt: two }]
  order:
    type: string
    variants: { a: A, b: B }
    default: a
    rules: [{ name: s, split: { b: 50, a: 50 } }]
  via-include:
    rules: [{ segment: outer, serve: true }]
  off:
    enabled: false
    rules: [{ name: r, rollout: 90 }]
";
    std::fs::create_dir_all(dir.join("flags")).unwrap();
    std::fs::write(dir.join("flags/app.yaml"), before).unwrap();
    std::fs::write(
        dir.join("flags/old-ns.yaml"),
        "namespace: old\nflags:\n  gone: {}\n",
    )
    .unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "before"]);
    std::fs::write(dir.join("flags/app.yaml"), after).unwrap();
    std::fs::remove_file(dir.join("flags/old-ns.yaml")).unwrap();
    std::fs::write(
        dir.join("flags/new-ns.yaml"),
        "namespace: new\nflags:\n  fresh: {}\n",
    )
    .unwrap();

    // A base without flags: everything is added (with a warning), not an error.
    let out = vexil_in(dir, &["diff", "HEAD~1", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("comparing against no flags"));

    let out = vexil_in(dir, &["diff", "HEAD", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ns = |name: &str| {
        report["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["namespace"] == name)
            .unwrap_or_else(|| panic!("no namespace {name}: {report}"))
            .clone()
    };
    assert_eq!(ns("new")["added"][0]["flag"], "fresh");
    assert_eq!(ns("old")["removed"], serde_json::json!(["gone"]));
    let default = ns("default");
    let fields = |flag: &str| -> Vec<String> {
        default["changed"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["flag"] == flag)
            .unwrap_or_else(|| panic!("{flag} unchanged: {default}"))["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap().to_owned())
            .collect()
    };
    let change = |flag: &str| {
        default["changed"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["flag"] == flag)
            .unwrap()
            .clone()
    };
    assert_eq!(
        fields("rules-flag"),
        [
            "default",
            "rules[1] \"second\".ids",
            "rules[1] \"second\".name",
            "rules[2] \"third\".ids",
            "rules[2] \"third\".name"
        ]
    );
    assert_eq!(
        fields("variants-flag"),
        ["default", "variants.y", "variants.z"]
    );
    assert_eq!(fields("salty"), ["rules[1] \"r\".salt"]);
    // A new salt reshuffles everyone: no estimate is made.
    assert_eq!(change("salty")["audience"], serde_json::json!([]));
    // Reordering a split moves entities: here every one of them.
    assert_eq!(fields("order"), ["rules[1] \"s\".split"]);
    assert!(
        change("order")["audience"][0]
            .as_str()
            .unwrap()
            .contains(": 100 % of the entities")
    );
    // Through `include`: the flag using `outer` is in the blast radius of `inner` (and `outer`'s
    // members, which include `inner`'s, changed with them).
    assert_eq!(
        change("via-include")["via_segments"],
        serde_json::json!(["inner", "outer"])
    );
    let inner = default["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["segment"] == "inner")
        .unwrap()
        .clone();
    assert_eq!(inner["used_by"], serde_json::json!(["via-include"]));
    // Off before and after: its rules do not matter.
    assert_eq!(change("off")["behaviour"], false);
    assert_eq!(change("off")["audience"], serde_json::json!([]));
    // An unused segment and a description change no answer.
    for seg in default["segments"].as_array().unwrap() {
        let expected = seg["segment"] == "inner" || seg["segment"] == "outer";
        assert_eq!(seg["behaviour"], expected, "{seg}");
    }
}
