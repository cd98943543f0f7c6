//! The pull-request workflow: `vexil diff` (golden outputs in tests/review/), `vexil test`,
//! `--rev`, and the commands of the CI templates in ci/.

use std::path::Path;
use std::process::Output;

use crate::helpers::{git, repo_root};

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

fn vexil_in(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vexil"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Compares with tests/review/NAME, or rewrites it with VEXIL_BLESS=1.
fn golden(name: &str, actual: &str) {
    let path = repo_root().join("tests/review").join(name);
    if std::env::var_os("VEXIL_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (VEXIL_BLESS=1 writes it)", path.display()));
    assert_eq!(
        actual, expected,
        "{name} differs (VEXIL_BLESS=1 rewrites it after review)"
    );
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
            "no change in behaviour: only descriptions, owners, tags, expiry or metadata changed\n"
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

/// The `vexil` command lines of the CI templates (ci/), as a shell would run them.
fn template_commands() -> Vec<String> {
    let mut commands = Vec::new();
    for name in ["github-actions.yml", "gitlab-ci.yml", "pre-commit"] {
        let text = std::fs::read_to_string(repo_root().join("ci").join(name)).unwrap();
        for line in text.lines() {
            let line = line.trim().trim_start_matches("- ").trim();
            if line.starts_with("vexil ") {
                commands.push(line.to_owned());
            }
        }
    }
    commands
}

#[test]
fn the_ci_templates_commands_work() {
    let commands = template_commands();
    assert!(commands.len() >= 7, "{commands:?}");
    let repo = repo();
    std::fs::write(
        repo.path().join("flags/app.test.yaml"),
        FLAG_TESTS.replace(
            "      staff-flag: true\n      rollout",
            "      staff-flag: false\n      rollout",
        ),
    )
    .unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_vexil")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for command in &commands {
        let out = std::process::Command::new("sh")
            .args(["-c", command])
            .current_dir(repo.path())
            .env("PATH", &path)
            .env("VEXIL_BASE", "main")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`{command}` failed: {}{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let comment = std::fs::read_to_string(repo.path().join("vexil-diff.md")).unwrap();
    assert!(
        comment.starts_with("### Vexil: flag changes from `main` to `working tree`"),
        "{comment}"
    );
    // The pre-commit hook refuses invalid flags.
    std::fs::write(repo.path().join("flags/app.yaml"), "flags: [\n").unwrap();
    let hook = std::process::Command::new(repo_root().join("ci/pre-commit"))
        .current_dir(repo.path())
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(!hook.status.success());
}
