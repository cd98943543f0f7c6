//! Embeds the example repository (`flags/`) so that `vexil serve` without a source serves it
//! from any directory.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let rel_path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if path.is_dir() {
            walk(&path, &rel_path, out);
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push((rel_path, path));
        }
    }
}

fn main() {
    let flags = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../flags")
        .canonicalize()
        .unwrap();
    println!("cargo:rerun-if-changed={}", flags.display());
    let mut files = Vec::new();
    walk(&flags, "", &mut files);
    let mut code = String::from(
        "/// The example repository's files, embedded at build time.\npub const EMBEDDED_FLAGS: &[(&str, &str)] = &[\n",
    );
    for (rel, path) in files {
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(
            code,
            "    ({rel:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("embedded_flags.rs");
    std::fs::write(out, code).unwrap();
}
