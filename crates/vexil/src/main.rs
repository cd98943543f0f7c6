//! The `vexil` command line.
#![forbid(unsafe_code)]

mod check_cmd;
mod diff_cmd;
mod eval_cmd;
mod export_cmd;
mod render;
mod serve_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Check flag files (and run their tests) and report every problem with file:line:column.
    ///
    /// Exit status: 0 valid (warnings may be shown), 1 invalid or a test failed, 2 usage or IO
    /// error.
    Validate(check_cmd::Args),
    /// Run the flag tests (`*.test.yaml`) against the compiled flags.
    ///
    /// Exit status: 0 all pass, 1 a test failed or the flags are invalid, 2 usage or IO error.
    Test(check_cmd::Args),
    /// Show what a change to the flags does: flags added, removed and changed (field by field),
    /// segments changed and the flags that use them, and who moves.
    ///
    /// Exit status: 0, whether or not anything changed; 2 usage or IO error.
    Diff(diff_cmd::Args),
    /// Evaluate one flag for a context.
    Eval(eval_cmd::Args),
    /// Write one namespace's flags in another system's format (`--format flagd`: a flagd flag
    /// file, the definitions the sync service serves); what flagd reads otherwise is warned
    /// about on stderr.
    ///
    /// Exit status: 0 written, 2 usage or IO error or invalid flags.
    Export(export_cmd::Args),
    /// Print the JSON Schema of a flag file (for editors), or with `--config` of the
    /// repository config file (`vexil.yaml`).
    Schema(SchemaArgs),
    /// Serve flags over gRPC (vexil.v1, health, reflection) and HTTP (metrics, probes),
    /// reloading them as the source changes.
    Serve(Box<serve_cmd::Args>),
}

#[derive(Debug, clap::Args)]
struct SchemaArgs {
    /// The schema of the repository config file (`vexil.yaml`), with this build's client names.
    #[arg(long)]
    config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => check_cmd::run(&args, false),
        Command::Test(args) => check_cmd::run(&args, true),
        Command::Diff(args) => diff_cmd::run(&args),
        Command::Eval(args) => eval_cmd::run(&args),
        Command::Export(args) => export_cmd::run(&args),
        Command::Serve(args) => serve_cmd::run(&args),
        Command::Schema(args) if args.config => {
            vexil_core::schema::config_schema(vexil_mirror::Mirror::names())
                .map(|schema| {
                    println!("{schema}");
                    ExitCode::SUCCESS
                })
                .map_err(anyhow::Error::from)
        }
        Command::Schema(_) => vexil_core::schema::flag_schema(vexil_mirror::Mirror::names())
            .map(|schema| {
                println!("{schema}");
                ExitCode::SUCCESS
            })
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
