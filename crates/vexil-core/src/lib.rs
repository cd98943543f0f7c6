//! Vexil's core: the flag file format, validation with precise diagnostics, compilation into an
//! immutable snapshot, evaluation, and the sources and reloader that keep a live snapshot
//! current. No server and no async runtime live here.
//!
//! Data flows one way: `source` (files) -> `yaml` (spanned tree) -> `format` (typed definitions,
//! per-file checks) -> `compile` (cross-file checks, `Snapshot`) -> `eval`; `reload` drives a
//! source and swaps valid snapshots into `live`.
// Denied, not forbidden: one block may allow it (`source::set_git_timeouts`, a libgit2 setting
// that git2 only offers as an unsafe function).
#![deny(unsafe_code)]
#![cfg_attr(
    test,
    allow(
        clippy::panic,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing
    )
)]

pub mod bucket;
pub mod compile;
pub mod config;
pub mod context;
mod decode;
pub mod diag;
pub mod diff;
pub mod eval;
pub mod expect;
pub mod export;
mod format;
pub mod live;
pub mod reload;
pub mod review;
pub mod schema;
pub mod snapshot;
pub mod source;
pub mod yaml;

pub use compile::{CompileOptions, Compiled, FileCache, compile, compile_cached};
pub use context::{AttrValue, Context};
pub use diag::{Code, Diagnostic, Pos, Severity};
pub use eval::{EvalError, Evaluation, Reason};
pub use format::DEFAULT_NAMESPACE;
pub use live::{Attempt, AttemptResult, ChangeEvent, Live, ReaderState, Stale, Status, Swap};
pub use reload::{Prepare, ReloadOptions, Reloader, StartError};
pub use snapshot::{Flag, FlagType, Namespace, Snapshot, Value, Variant};
pub use source::{Loaded, Source, SourceError, SourceFile};

/// Reads and compiles a flags directory: the one call most users of the library need.
/// Problems met while reading files are moved into `Compiled::diagnostics`, with the rest.
pub fn load_dir(
    root: &std::path::Path,
    options: &CompileOptions,
) -> Result<(Loaded, Compiled), SourceError> {
    let mut loaded = source::read_dir(root)?;
    let diagnostics = std::mem::take(&mut loaded.diagnostics);
    let compiled = compile_with(&loaded.files, diagnostics, options, None);
    Ok((loaded, compiled))
}

/// Compiles what a source read, reusing `cache` for unchanged files; its read problems join
/// the diagnostics (and block a snapshot).
pub fn compile_loaded(loaded: Loaded, options: &CompileOptions, cache: &mut FileCache) -> Compiled {
    compile_with(&loaded.files, loaded.diagnostics, options, Some(cache))
}

fn compile_with(
    files: &[SourceFile],
    read_problems: Vec<Diagnostic>,
    options: &CompileOptions,
    cache: Option<&mut FileCache>,
) -> Compiled {
    let mut compiled = match cache {
        Some(cache) => compile_cached(files, options, cache),
        None => compile(files, options),
    };
    if !read_problems.is_empty() {
        compiled.diagnostics.extend(read_problems);
        compiled.diagnostics.sort();
        if diag::has_errors(&compiled.diagnostics) {
            compiled.snapshot = None;
        }
    }
    compiled
}
