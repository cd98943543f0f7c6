//! `vexil validate` and `vexil test`: compile the flags (of the working tree or of a git
//! revision), run the flag tests, and report every problem with file:line:column.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use vexil_core::expect::TestRun;
use vexil_core::{CompileOptions, Loaded, Severity, SourceFile};
use vexil_mirror::Mirror;

use crate::render;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Compiler-style, with the source line and a caret.
    Human,
    /// A JSON array of {file, line, column, severity, code, message}.
    Json,
    /// GitHub Actions workflow annotations.
    Github,
    /// GitLab Code Quality report (inline on merge requests).
    Codequality,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The flags root (a directory; with --rev, a directory inside a git working tree).
    #[arg(default_value = "flags")]
    path: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Read the flags as committed at this git revision (branch, tag, commit), without
    /// checking it out.
    #[arg(long)]
    rev: Option<String>,
    /// Do not run the flag tests (`*.test.yaml`).
    #[arg(long)]
    no_tests: bool,
    /// Warn about flags these mirrors export inexactly or leave out: `all`, `none`, or a
    /// comma-separated list of `flipper`, `flipper-legacy`, `unleash`, `unleash-legacy`.
    #[arg(long, default_value = "all", value_parser = mirrors)]
    mirrors: Mirrors,
}

/// The mirrors `--mirrors` names.
#[derive(Debug, Clone)]
pub struct Mirrors(Vec<Mirror>);

fn mirrors(s: &str) -> Result<Mirrors, String> {
    match s.trim() {
        "all" => Ok(Mirrors(Mirror::ALL.to_vec())),
        "none" | "" => Ok(Mirrors(Vec::new())),
        list => list
            .split(',')
            .map(|m| {
                Mirror::parse(m.trim()).ok_or_else(|| {
                    format!("unknown mirror `{m}` (expected flipper, flipper-legacy, unleash, unleash-legacy, all or none)")
                })
            })
            .collect::<Result<_, _>>()
            .map(Mirrors),
    }
}

pub fn today() -> jiff::civil::Date {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
}

/// The flags of `path`, from the working tree or from `rev`.
pub fn load(path: &Path, rev: Option<&str>) -> anyhow::Result<Loaded> {
    Ok(match rev {
        Some(rev) => vexil_core::source::read_revision(path, rev)?.1,
        None => vexil_core::source::read_dir(path)?,
    })
}

/// `validate` (tests included unless `--no-tests`) or `test` (`tests_only`: the summary is
/// about the tests).
pub fn run(args: &Args, tests_only: bool) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.path, args.rev.as_deref())?;
    let options = CompileOptions {
        today: Some(today()),
    };
    let mut compiled = vexil_core::compile(&loaded.files, &options);
    let mut diagnostics = std::mem::take(&mut compiled.diagnostics);
    diagnostics.extend(loaded.diagnostics.iter().cloned());
    let has_errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    let snapshot = compiled.snapshot.filter(|_| !has_errors);
    let tests: Option<TestRun> = match &snapshot {
        Some(s) if tests_only || !args.no_tests => Some(vexil_core::expect::run(s, &loaded.tests)),
        _ => None,
    };
    if let Some(t) = &tests {
        diagnostics.extend(t.diagnostics.iter().cloned());
    }
    // `vexil test` is about the tests; `validate` also says what the mirrors cannot carry.
    if let Some(s) = snapshot.as_ref().filter(|_| !tests_only) {
        diagnostics.extend(
            vexil_mirror::findings(s, &args.mirrors.0)
                .iter()
                .map(vexil_mirror::Finding::to_diagnostic),
        );
    }
    diagnostics.sort();
    let all_files: Vec<SourceFile> = loaded.files.iter().chain(&loaded.tests).cloned().collect();
    let report = render::Report::new(&args.path, &all_files, &diagnostics);
    let out = match args.format {
        Format::Human => report.human(),
        Format::Json => report.json(),
        Format::Github => report.github(),
        Format::Codequality => report.codequality(),
    };
    print!("{out}");
    let failed = tests
        .as_ref()
        .is_some_and(|t| t.failed > 0 || !t.diagnostics.is_empty());
    if args.format == Format::Human {
        let flags = snapshot.as_ref().map(vexil_core::Snapshot::flag_count);
        let mut summary = if tests_only && snapshot.is_some() {
            String::new()
        } else {
            report.summary(loaded.files.len(), flags)
        };
        if let Some(t) = &tests {
            if !summary.is_empty() {
                summary.push_str("; ");
            }
            summary.push_str(&format!(
                "tests: {} cases, {} expectations, {} failed in {} files",
                t.cases, t.expectations, t.failed, t.files
            ));
        }
        if let Some(rev) = &args.rev {
            summary.push_str(&format!(" (at {rev})"));
        }
        eprintln!("{summary}");
    }
    Ok(if snapshot.is_some() && !failed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
