//! The repository's own hygiene: ARCHITECTURE.md's code map names every module of every crate
//! (and nothing that is gone), and no source file grows past 900 lines.
//!
//! The code map's convention: one `### ` section per crate, headed by the crate's path in
//! backticks (`` `crates/vexil-server` ``); inside it, every file and every directory under the
//! crate's `src/` is named in backticks by its path relative to the crate (`` `src/conn.rs` ``,
//! `` `src/source/` ``, `` `src/source/dir.rs` ``). Any backticked name in a crate's section that
//! ends in `.rs` or starts with `src/` is such a path, and must exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::helpers::repo_root;

/// Source files longer than this are split (by concern, not arbitrarily).
const MAX_LINES: usize = 900;

/// What counts as a source file for the size check: code, and the tables and fixtures written
/// by hand.
const SOURCE_EXTENSIONS: [&str; 9] = ["rs", "py", "rb", "js", "sh", "proto", "yaml", "yml", "toml"];

/// One crate's section of the code map: the crate's directory (relative to the repository) and
/// every path it names (relative to the crate).
struct Section {
    krate: String,
    named: BTreeSet<String>,
}

/// The `### ` sections of ARCHITECTURE.md's `## Code map` that are headed by a crate.
fn code_map(text: &str) -> Vec<Section> {
    let start = text
        .find("\n## Code map")
        .expect("ARCHITECTURE.md has a `## Code map` section");
    let rest = &text[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    let map = &rest[..end];
    let mut sections = Vec::new();
    for chunk in map.split("\n### ").skip(1) {
        let (heading, body) = chunk.split_once('\n').unwrap_or((chunk, ""));
        let Some(krate) = backticked(heading).into_iter().next() else {
            continue;
        };
        if !krate.starts_with("crates/") {
            continue;
        }
        let named = backticked(body)
            .into_iter()
            .filter(|t| t.ends_with(".rs") || t.starts_with("src/"))
            .collect();
        sections.push(Section {
            krate: krate.trim_end_matches('/').to_owned(),
            named,
        });
    }
    sections
}

/// Every `code span` of a text (single backticks, on one line or across a line break).
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty())
        .collect()
}

/// Every file and directory under `dir`, relative to `base`: files as `src/a/b.rs`,
/// directories as `src/a/`.
fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let relative = path
            .strip_prefix(base)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if path.is_dir() {
            out.insert(format!("{relative}/"));
            walk(base, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.insert(relative);
        }
    }
}

/// The workspace's crates: `crates/*` with a `src/` directory.
fn crates(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("src").is_dir())
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn the_code_map_names_every_module() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let sections = code_map(&text);
    let krates = crates(&root);
    assert!(krates.len() >= 3, "crates found: {krates:?}");
    let mut missing = Vec::new();
    let mut stale = Vec::new();
    for krate in &krates {
        let dir = root.join(krate);
        let mut modules = BTreeSet::new();
        walk(&dir, &dir.join("src"), &mut modules);
        let named: BTreeSet<&str> = sections
            .iter()
            .filter(|s| s.krate == *krate)
            .flat_map(|s| s.named.iter().map(String::as_str))
            .collect();
        missing.extend(
            modules
                .iter()
                .filter(|m| !named.contains(m.as_str()))
                .map(|m| format!("{krate}/{m}")),
        );
    }
    for section in &sections {
        let dir = root.join(&section.krate);
        if !krates.contains(&section.krate) {
            stale.push(format!("{} (no such crate)", section.krate));
            continue;
        }
        for path in &section.named {
            let exists = if path.ends_with('/') {
                dir.join(path).is_dir()
            } else {
                dir.join(path).is_file()
            };
            if !exists {
                stale.push(format!("{}/{path}", section.krate));
            }
        }
    }
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "ARCHITECTURE.md's code map does not name these modules; describe each there (a line \
             on what it holds, under its crate's `### ` heading, named by its path relative to \
             the crate, like `src/conn.rs` or `src/source/`):\n  {}",
            missing.join("\n  ")
        ));
    }
    if !stale.is_empty() {
        problems.push(format!(
            "ARCHITECTURE.md's code map names paths that do not exist (moved or removed: update \
             the code map):\n  {}",
            stale.join("\n  ")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// Every source file under `dir` (hidden directories, `target` and `node_modules` skipped).
fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if !(name.starts_with('.') || name == "target" || name == "node_modules") {
                source_files(&path, out);
            }
        } else if path
            .extension()
            .is_some_and(|e| SOURCE_EXTENSIONS.iter().any(|x| e == *x))
        {
            out.push(path);
        }
    }
}

#[test]
fn no_source_file_is_over_900_lines() {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in ["crates", "tests"] {
        source_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "only {} source files found", files.len());
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let lines = std::fs::read_to_string(path).ok()?.lines().count();
            (lines > MAX_LINES).then(|| {
                format!(
                    "{} ({lines} lines)",
                    path.strip_prefix(&root).unwrap().display()
                )
            })
        })
        .collect();
    long.sort();
    assert!(
        long.is_empty(),
        "source files over {MAX_LINES} lines (split them by concern):\n  {}",
        long.join("\n  ")
    );
}

#[test]
fn the_code_map_parser_reads_the_convention() {
    let text = "# A\n\n## Code map\n\nIntro `src/ignored.rs`.\n\n### `crates/x` (lib)\n\n- `src/a.rs` — \
                one; `src/b/`,\n  `src/b/c.rs` and `Thing::method`, `flags/`\n- `build.rs` — two\n\n\
                ### `tests/`\n\n`tests/e2e/x.rs`\n\n## Invariants\n\n`src/after.rs`\n";
    let sections = code_map(text);
    assert_eq!(sections.len(), 1);
    assert_eq!(sections[0].krate, "crates/x");
    assert_eq!(
        sections[0].named.iter().collect::<Vec<_>>(),
        ["build.rs", "src/a.rs", "src/b/", "src/b/c.rs"]
    );
}
