//! Diagnostics for people (compiler style), for tools (JSON) and for GitHub (annotations).

use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;

use vexil_core::{Diagnostic, Severity, SourceFile};

pub struct Report<'a> {
    root: &'a Path,
    files: &'a [SourceFile],
    diagnostics: &'a [Diagnostic],
}

impl<'a> Report<'a> {
    pub fn new(root: &'a Path, files: &'a [SourceFile], diagnostics: &'a [Diagnostic]) -> Self {
        Report {
            root,
            files,
            diagnostics,
        }
    }

    /// The path as the user can open it: the root they gave joined with the file.
    fn path(&self, d: &Diagnostic) -> String {
        let joined = self.root.join(&d.file);
        let s = joined.to_string_lossy().into_owned();
        s.strip_prefix("./").map(str::to_owned).unwrap_or(s)
    }

    pub fn human(&self) -> String {
        let mut out = String::new();
        // Each file is split into lines once, however many diagnostics point into it.
        let mut lines: HashMap<&str, Vec<&str>> = HashMap::new();
        for d in self.diagnostics {
            let _ = writeln!(out, "{}[{}]: {}", d.severity.as_str(), d.code, d.message);
            let _ = writeln!(
                out,
                "  --> {}:{}:{}",
                self.path(d),
                d.pos.line,
                d.pos.column
            );
            let file_lines = lines.entry(d.file.as_str()).or_insert_with(|| {
                self.files
                    .iter()
                    .find(|f| f.path == d.file)
                    .map(|f| f.text.lines().collect())
                    .unwrap_or_default()
            });
            if let Some(line) = file_lines.get((d.pos.line as usize).saturating_sub(1)) {
                let number = d.pos.line.to_string();
                let pad = " ".repeat(number.len());
                let caret_at: String = line
                    .chars()
                    .take((d.pos.column as usize).saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                let _ = writeln!(out, "{pad} |");
                let _ = writeln!(out, "{number} | {line}");
                let _ = writeln!(out, "{pad} | {caret_at}^");
            }
            out.push('\n');
        }
        out
    }

    pub fn json(&self) -> String {
        let items: Vec<serde_json::Value> = self
            .diagnostics
            .iter()
            .map(|d| {
                serde_json::json!({
                    "file": self.path(d),
                    "line": d.pos.line,
                    "column": d.pos.column,
                    "severity": d.severity.as_str(),
                    "code": d.code.as_str(),
                    "message": d.message,
                })
            })
            .collect();
        let mut s = serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".into());
        s.push('\n');
        s
    }

    pub fn github(&self) -> String {
        let mut out = String::new();
        for d in self.diagnostics {
            let level = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let _ = writeln!(
                out,
                "::{level} file={},line={},col={},title=vexil {}::{}",
                escape_property(&self.path(d)),
                d.pos.line,
                d.pos.column,
                d.code,
                escape_data(&d.message)
            );
        }
        out
    }

    /// GitLab Code Quality (a JSON array), shown inline on merge requests.
    pub fn codequality(&self) -> String {
        let items: Vec<serde_json::Value> = self
            .diagnostics
            .iter()
            .map(|d| {
                let path = self.path(d);
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                std::hash::Hash::hash(&(&path, d.pos.line, d.pos.column, d.code.as_str(), &d.message), &mut hasher);
                serde_json::json!({
                    "description": format!("{}: {}", d.code, d.message),
                    "check_name": format!("vexil-{}", d.code),
                    "fingerprint": format!("{:016x}", std::hash::Hasher::finish(&hasher)),
                    "severity": match d.severity { Severity::Error => "major", Severity::Warning => "minor" },
                    "location": { "path": path, "lines": { "begin": d.pos.line } },
                })
            })
            .collect();
        let mut s = serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".into());
        s.push('\n');
        s
    }

    pub fn summary(&self, files: usize, flags: Option<usize>) -> String {
        let errors = self
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        let warnings = self.diagnostics.len() - errors;
        match flags {
            Some(n) => format!("valid: {n} flags in {files} files ({warnings} warnings)"),
            None => format!("invalid: {errors} errors, {warnings} warnings in {files} files"),
        }
    }
}

// GitHub's workflow-command escaping: data escapes %, CR, LF; properties also ':' and ','.
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}
