//! `vexil export`: the flags of one namespace in another system's format, for that system's
//! own file mode and for review. `--format flagd` writes flagd's flag file (the definitions
//! the sync service sends); what flagd's evaluators read otherwise goes to stderr as warnings.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use vexil_core::Severity;
use vexil_mirror::Mirror;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// flagd's flag file (`{"$schema", "flags"}`), JsonLogic targeting.
    Flagd,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The flags root (a directory; with --rev, a directory inside a git working tree).
    #[arg(default_value = "flags")]
    path: PathBuf,
    /// The output format.
    #[arg(long, value_enum)]
    format: Format,
    /// The namespace to export.
    #[arg(long, short = 'n', default_value = vexil_core::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Read the flags as committed at this git revision (branch, tag, commit).
    #[arg(long)]
    rev: Option<String>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let loaded = crate::check_cmd::load(&args.path, args.rev.as_deref())?;
    let options = crate::check_cmd::compile_options(None);
    let compiled = vexil_core::compile(&loaded.files, &options);
    let errors: Vec<_> = compiled
        .diagnostics
        .iter()
        .chain(&loaded.diagnostics)
        .filter(|d| d.severity == Severity::Error)
        .collect();
    let snapshot = match compiled.snapshot {
        Some(s) if errors.is_empty() => s,
        _ => {
            for d in errors {
                eprintln!("{d}");
            }
            bail!(
                "the flags in {} are invalid; run `vexil validate {}`",
                args.path.display(),
                args.path.display()
            );
        }
    };
    let Some(ns) = snapshot.namespace(&args.namespace) else {
        let known: Vec<&str> = snapshot.namespaces().iter().map(|n| &*n.name).collect();
        bail!(
            "no namespace `{}` (namespaces: {})",
            args.namespace,
            known.join(", ")
        );
    };
    match args.format {
        Format::Flagd => {
            let export = vexil_mirror::flagd::export(ns);
            print!("{}", export.file_text());
            let findings: Vec<_> = export
                .findings
                .into_iter()
                .filter(|f| f.mirror == Mirror::Flagd)
                .collect();
            for d in vexil_mirror::grouped_warnings(&findings) {
                eprintln!("{d}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
