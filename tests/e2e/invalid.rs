//! Invalid flag repositories (tests/invalid/NAME/) and the diagnostics they must produce
//! (tests/invalid/NAME/expected.txt, one `file:line:column: severity[code]: message` a line).
//! Run with VEXIL_BLESS=1 to rewrite the expected files after a reviewed change.

use vexil_core::CompileOptions;

use crate::helpers::{repo_root, sorted_entries};

#[test]
fn invalid_fixtures_report_expected_diagnostics() {
    let dir = repo_root().join("tests/invalid");
    let cases = sorted_entries(&dir, |p| p.is_dir());
    assert!(
        cases.len() >= 10,
        "expected at least 10 fixtures, found {}",
        cases.len()
    );
    let bless = std::env::var_os("VEXIL_BLESS").is_some();
    // A fixed date makes `expires` warnings reproducible.
    let options = CompileOptions {
        today: Some(jiff::civil::date(2026, 11, 21)),
        clients: Some(vexil_mirror::Mirror::names()),
    };
    let mut failures = Vec::new();
    for case in &cases {
        let (_, compiled) = vexil_core::load_dir(case, &options).unwrap();
        let got: String = compiled
            .diagnostics
            .iter()
            .map(|d| format!("{d}\n"))
            .collect();
        let expected_path = case.join("expected.txt");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        let name = case.file_name().unwrap().to_string_lossy();
        if got != expected {
            failures.push(format!("{name}:\n--- expected\n{expected}--- got\n{got}"));
        }
        // Fixtures named warn-* are valid (warnings only); every other one must be refused.
        let should_be_valid = name.starts_with("warn-");
        if compiled.snapshot.is_some() != should_be_valid {
            failures.push(format!(
                "{name}: snapshot built = {}, expected {should_be_valid}",
                compiled.snapshot.is_some()
            ));
        }
        if got.is_empty() {
            failures.push(format!("{name}: no diagnostics at all"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
