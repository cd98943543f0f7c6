//! docs/mirrors.md's per-client coverage of `flags/` ("Coverage of `flags/`") is recomputed from
//! the mirrors' findings (`vexil_mirror::coverage`): the table must equal it, row by row, so it
//! cannot drift from the code or the flags.

use vexil_core::{CompileOptions, FlagType};
use vexil_mirror::Mirror;

use crate::helpers::repo_root;

const HEADING: &str = "## Coverage of `flags/`";

fn share(part: usize, whole: usize) -> String {
    // Whole percents, rounded half up.
    let percent = (part * 100 + whole / 2) / whole.max(1);
    format!("{part} / {whole} ({percent} %)")
}

/// The table's rows as the code computes them.
fn expected_rows() -> Vec<String> {
    let options = CompileOptions {
        clients: Some(Mirror::names()),
        ..CompileOptions::default()
    };
    let (_, compiled) = vexil_core::load_dir(&repo_root().join("flags"), &options).unwrap();
    let snapshot = compiled.snapshot.unwrap();
    let booleans = snapshot
        .namespaces()
        .iter()
        .flat_map(|ns| &ns.flags)
        .filter(|f| f.flag_type == FlagType::Boolean)
        .count();
    let findings = vexil_mirror::findings(&snapshot, &Mirror::ALL);
    vexil_mirror::coverage(&snapshot, &findings)
        .into_iter()
        .map(|(mirror, c)| {
            let of_booleans = match mirror {
                Mirror::Flipper | Mirror::FlipperLegacy => share(c.exact, booleans),
                _ => "(every type)".to_owned(),
            };
            format!(
                "| `{}` | {} | {of_booleans} | {} | {} | {} |",
                mirror.as_str(),
                share(c.exact, c.flags),
                c.inexact,
                c.omitted,
                vexil_mirror::declared_flags(&snapshot, mirror),
            )
        })
        .collect()
}

#[test]
fn docs_coverage_table_matches_the_findings() {
    let docs = std::fs::read_to_string(repo_root().join("docs/mirrors.md")).unwrap();
    let start = docs
        .find(HEADING)
        .unwrap_or_else(|| panic!("docs/mirrors.md has no section {HEADING}"));
    let section = &docs[start + HEADING.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| `")).collect();
    let expected = expected_rows();
    assert_eq!(expected.len(), Mirror::ALL.len());
    assert_eq!(
        rows,
        expected,
        "docs/mirrors.md's coverage table (left) differs from the findings over flags/ (right); the rows should read:\n{}",
        expected.join("\n")
    );
}
