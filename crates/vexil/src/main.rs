//! The `vexil` command line.
#![forbid(unsafe_code)]

mod eval_cmd;
mod render;
mod serve_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "vexil",
    version,
    about = "GitOps feature flags: validate, evaluate and serve flags kept in git"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check flag files and report every problem with file:line:column.
    ///
    /// Exit status: 0 valid (warnings may be shown), 1 invalid, 2 usage or IO error.
    Validate {
        /// The flags root.
        #[arg(default_value = "flags")]
        path: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Evaluate one flag for a context.
    Eval(eval_cmd::Args),
    /// Print the JSON Schema of a flag file (for editors).
    Schema,
    /// Serve flags over gRPC (vexil.v1, health, reflection) and HTTP (metrics, probes),
    /// reloading them as the source changes.
    Serve(Box<serve_cmd::Args>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Compiler-style, with the source line and a caret.
    Human,
    /// A JSON array of {file, line, column, severity, code, message}.
    Json,
    /// GitHub Actions workflow annotations.
    Github,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { path, format } => validate(&path, format),
        Command::Eval(args) => eval_cmd::run(&args),
        Command::Serve(args) => serve_cmd::run(&args),
        Command::Schema => {
            println!("{}", vexil_core::schema::FLAG_FILE_SCHEMA.trim_end());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn today() -> jiff::civil::Date {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
}

fn validate(root: &std::path::Path, format: Format) -> anyhow::Result<ExitCode> {
    let options = vexil_core::CompileOptions {
        today: Some(today()),
    };
    let (loaded, compiled) = vexil_core::load_dir(root, &options)?;
    let report = render::Report::new(root, &loaded.files, &compiled.diagnostics);
    let out = match format {
        Format::Human => report.human(),
        Format::Json => report.json(),
        Format::Github => report.github(),
    };
    print!("{out}");
    if format == Format::Human {
        let flags = compiled
            .snapshot
            .as_ref()
            .map(vexil_core::Snapshot::flag_count);
        eprintln!("{}", report.summary(loaded.files.len(), flags));
    }
    Ok(if compiled.snapshot.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
