//! `vexil eval`: one flag, one context, from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use vexil_core::{AttrValue, Context};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The flag key.
    flag: String,
    /// The flags root.
    #[arg(long, default_value = "flags")]
    source: PathBuf,
    /// The namespace of the flag.
    #[arg(long, short = 'n', default_value = vexil_core::DEFAULT_NAMESPACE)]
    namespace: String,
    /// The targeting key (user, account, device, actor id).
    #[arg(long, short = 'k')]
    key: Option<String>,
    /// A context attribute, `name=value`; the value is read as JSON when it parses
    /// (`age=42`, `beta=true`, `groups=["a","b"]`) and as text otherwise (`country=DE`).
    #[arg(long = "attr", short = 'a', value_name = "NAME=VALUE")]
    attrs: Vec<String>,
    /// Print one JSON object `{flag, value, variant, reason, rule}`.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let mut ctx = Context {
        targeting_key: args.key.clone(),
        ..Context::default()
    };
    for attr in &args.attrs {
        let Some((name, raw)) = attr.split_once('=') else {
            bail!("--attr takes NAME=VALUE, got `{attr}`");
        };
        if name.is_empty() {
            bail!("--attr `{attr}` has no attribute name");
        }
        let value = match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(json) => AttrValue::from_json(&json),
            Err(_) => AttrValue::String(raw.to_owned()),
        };
        ctx.attributes.insert(name.to_owned(), value);
    }
    let (_, compiled) =
        vexil_core::load_dir(&args.source, &crate::check_cmd::compile_options(None))
            .with_context(|| format!("reading flags from {}", args.source.display()))?;
    let Some(snapshot) = compiled.snapshot else {
        for d in &compiled.diagnostics {
            eprintln!("{d}");
        }
        bail!(
            "the flags in {} are invalid; run `vexil validate {}`",
            args.source.display(),
            args.source.display()
        );
    };
    match snapshot.evaluate(&args.namespace, &args.flag, &ctx) {
        Ok(e) => {
            let rule = e.rule.map(|r| r.name.to_string());
            if args.json {
                let out = serde_json::json!({
                    "flag": args.flag,
                    "value": e.value().to_json(),
                    "variant": &*e.variant.name,
                    "reason": e.reason.as_str(),
                    "rule": rule,
                });
                println!("{out}");
            } else {
                let rule = rule.map(|r| format!(", rule: {r}")).unwrap_or_default();
                println!(
                    "{} = {} (variant: {}, reason: {}{rule})",
                    args.flag,
                    e.value().to_json(),
                    e.variant.name,
                    e.reason
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"flag": args.flag, "error": err.code(), "message": err.to_string()})
                );
            } else {
                eprintln!(
                    "{}: {err} (flag `{}` in namespace `{}`)",
                    err.code(),
                    args.flag,
                    args.namespace
                );
            }
            Ok(ExitCode::from(1))
        }
    }
}
