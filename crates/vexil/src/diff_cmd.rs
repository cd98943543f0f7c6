//! `vexil diff BASE [HEAD]`: what a change to the flags does, for a pull request's reviewers.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::Value as Json;
use vexil_core::Snapshot;
use vexil_core::review::{FieldChange, Report};

use crate::check_cmd::load;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For a terminal.
    Human,
    /// For a pull request comment: a summary table, then details folded per flag.
    Markdown,
    /// For tools.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The base: a git revision (branch, tag, commit) of the repository holding PATH, or a
    /// flags directory.
    base: String,
    /// The head: a git revision or a directory. Default: the working tree at PATH.
    head: Option<String>,
    /// The flags root inside the working tree (for revisions).
    #[arg(long, default_value = "flags")]
    path: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
}

/// The flags at a revision or directory. A base without flags (the pull request that adds
/// them) or with invalid flags (the one that fixes them) compares as empty, with a warning.
fn snapshot_or_empty(path: &Path, rev: Option<&str>, label: &str) -> anyhow::Result<Snapshot> {
    match snapshot(path, rev, label) {
        Ok(s) => Ok(s),
        Err(e) => {
            eprintln!("warning: {e:#}; comparing against no flags");
            Ok(Snapshot::default())
        }
    }
}

fn snapshot(path: &Path, rev: Option<&str>, label: &str) -> anyhow::Result<Snapshot> {
    let loaded = load(path, rev)?;
    let compiled = vexil_core::compile_loaded(
        loaded,
        &crate::check_cmd::compile_options(None),
        &mut vexil_core::FileCache::default(),
    );
    match compiled.snapshot {
        Some(s) => Ok(s),
        None => {
            let first = compiled
                .diagnostics
                .iter()
                .find(|d| d.severity == vexil_core::Severity::Error)
                .map(ToString::to_string)
                .unwrap_or_default();
            anyhow::bail!("the flags at {label} are invalid (run `vexil validate`): {first}")
        }
    }
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let base_dir = Path::new(&args.base);
    let head_dir = args.head.as_deref().map(Path::new);
    let (old, new) = if base_dir.is_dir() && head_dir.is_none_or(Path::is_dir) {
        let head = head_dir.unwrap_or(&args.path);
        (
            snapshot_or_empty(base_dir, None, &args.base)?,
            snapshot(head, None, &head.display().to_string())?,
        )
    } else {
        // The revision must exist; its flags may not (yet).
        vexil_core::source::read_revision(&args.path, &args.base)
            .with_context(|| format!("base {}", args.base))?;
        let old = snapshot_or_empty(&args.path, Some(&args.base), &args.base)?;
        let new = match &args.head {
            Some(rev) => snapshot(&args.path, Some(rev), rev)?,
            None => snapshot(&args.path, None, "the working tree")?,
        };
        (old, new)
    };
    let report = vexil_core::review::review(&old, &new);
    let head_label = args.head.clone().unwrap_or_else(|| "working tree".into());
    let out = match args.format {
        Format::Human => human(&report),
        Format::Markdown => markdown(&report, &args.base, &head_label),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&report.to_json()).unwrap_or_default();
            s.push('\n');
            s
        }
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn show(v: Option<&Json>) -> String {
    match v {
        None => "(none)".into(),
        Some(v) => v.to_string(),
    }
}

fn field_line(f: &FieldChange) -> String {
    format!(
        "{}: {} -> {}",
        f.field,
        show(f.before.as_ref()),
        show(f.after.as_ref())
    )
}

fn verdict(report: &Report) -> &'static str {
    if report.is_empty() {
        "no change in behaviour: no flag or segment differs"
    } else if !report.changes_behaviour() {
        "no change in behaviour: only descriptions, owners, tags, expiry, metadata or declared clients changed"
    } else {
        "answers can change"
    }
}

pub fn human(report: &Report) -> String {
    let mut out = String::new();
    for ns in &report.namespaces {
        let _ = writeln!(out, "namespace {}", ns.name);
        for (key, _) in &ns.added {
            let _ = writeln!(out, "  + flag {key}");
        }
        for key in &ns.removed {
            let _ = writeln!(out, "  - flag {key}");
        }
        for c in &ns.changed {
            let tag = if c.behaviour {
                ""
            } else {
                " (descriptive only)"
            };
            let _ = writeln!(out, "  ~ flag {}{tag}", c.key);
            for f in &c.fields {
                let _ = writeln!(out, "      {}", field_line(f));
            }
            if !c.via_segments.is_empty() {
                let _ = writeln!(out, "      segments changed: {}", c.via_segments.join(", "));
            }
            for a in &c.audience {
                let _ = writeln!(out, "      moves: {a}");
            }
        }
        for s in &ns.segments {
            let sign = match s.kind {
                "added" => "+",
                "removed" => "-",
                _ => "~",
            };
            let _ = writeln!(out, "  {sign} segment {}", s.key);
            for f in &s.fields {
                let _ = writeln!(out, "      {}", field_line(f));
            }
            if !s.used_by.is_empty() {
                let _ = writeln!(out, "      used by: {}", s.used_by.join(", "));
            }
        }
    }
    if !report.config.is_empty() {
        let _ = writeln!(out, "repository config (vexil.yaml)");
        for f in &report.config {
            let _ = writeln!(out, "  ~ {}", field_line(f));
        }
    }
    let _ = writeln!(out, "{}", verdict(report));
    out
}

fn md_cell(v: Option<&Json>) -> String {
    format!("`{}`", show(v).replace('|', "\\|").replace('`', "'"))
}

pub fn markdown(report: &Report, base: &str, head: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### Vexil: flag changes from `{base}` to `{head}`\n");
    if report.is_empty() || !report.changes_behaviour() {
        let _ = writeln!(out, "**{}**\n", verdict(report));
    }
    if report.is_empty() {
        return out;
    }
    if report.namespaces.is_empty() {
        // Only the repository config changed.
        return markdown_config(out, report);
    }
    let _ = writeln!(
        out,
        "| namespace | flags added | flags removed | flags changed | segments changed |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    for ns in &report.namespaces {
        let list = |v: Vec<&str>| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            ns.name,
            list(ns.added.iter().map(|(k, _)| k.as_str()).collect()),
            list(ns.removed.iter().map(String::as_str).collect()),
            list(ns.changed.iter().map(|c| c.key.as_str()).collect()),
            list(ns.segments.iter().map(|s| s.key.as_str()).collect()),
        );
    }
    out.push('\n');
    for ns in &report.namespaces {
        for c in &ns.changed {
            let _ = writeln!(
                out,
                "<details><summary><code>{}/{}</code>{}</summary>\n",
                ns.name,
                c.key,
                if c.behaviour {
                    ""
                } else {
                    " (descriptive only)"
                }
            );
            if !c.fields.is_empty() {
                let _ = writeln!(out, "| field | before | after |\n| --- | --- | --- |");
                for f in &c.fields {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} |",
                        f.field.replace('|', "\\|"),
                        md_cell(f.before.as_ref()),
                        md_cell(f.after.as_ref())
                    );
                }
                out.push('\n');
            }
            if !c.via_segments.is_empty() {
                let _ = writeln!(out, "Segments changed: {}\n", c.via_segments.join(", "));
            }
            for a in &c.audience {
                let _ = writeln!(out, "- moves: {a}");
            }
            let _ = writeln!(out, "\n</details>\n");
        }
        for (key, definition) in &ns.added {
            let _ = writeln!(
                out,
                "<details><summary>added <code>{}/{key}</code></summary>\n\n```json\n{}\n```\n\n</details>\n",
                ns.name,
                serde_json::to_string_pretty(definition).unwrap_or_default()
            );
        }
        for s in &ns.segments {
            let _ = writeln!(
                out,
                "<details><summary>segment <code>{}/{}</code> {}; used by {}</summary>\n",
                ns.name,
                s.key,
                s.kind,
                if s.used_by.is_empty() {
                    "no flag".to_owned()
                } else {
                    s.used_by.join(", ")
                }
            );
            if !s.fields.is_empty() {
                let _ = writeln!(out, "| field | before | after |\n| --- | --- | --- |");
                for f in &s.fields {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} |",
                        f.field,
                        md_cell(f.before.as_ref()),
                        md_cell(f.after.as_ref())
                    );
                }
            }
            let _ = writeln!(out, "\n</details>\n");
        }
    }
    markdown_config(out, report)
}

fn markdown_config(mut out: String, report: &Report) -> String {
    if !report.config.is_empty() {
        let _ = writeln!(
            out,
            "Repository config (`vexil.yaml`), declared clients:\n\n| field | before | after |\n| --- | --- | --- |"
        );
        for f in &report.config {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                f.field,
                md_cell(f.before.as_ref()),
                md_cell(f.after.as_ref())
            );
        }
        out.push('\n');
    }
    out
}
