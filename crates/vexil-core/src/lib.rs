//! Vexil's core: the flag file format, validation with precise diagnostics, compilation into an
//! immutable snapshot, and evaluation. No network IO and no async runtime live here.
//!
//! Data flows one way: `source` (files) -> `yaml` (spanned tree) -> `format` (typed definitions,
//! per-file checks) -> `compile` (cross-file checks, `Snapshot`) -> `eval`.
#![forbid(unsafe_code)]
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
pub mod context;
mod decode;
pub mod diag;
pub mod eval;
mod format;
pub mod schema;
pub mod snapshot;
pub mod source;
pub mod yaml;

pub use compile::{CompileOptions, Compiled, compile};
pub use context::{AttrValue, Context};
pub use diag::{Code, Diagnostic, Pos, Severity};
pub use eval::{EvalError, Evaluation, Reason};
pub use format::DEFAULT_NAMESPACE;
pub use snapshot::{Flag, FlagType, Namespace, Snapshot, Value, Variant};
pub use source::{Loaded, SourceError, SourceFile};

/// Reads and compiles a flags directory: the one call most users of the library need.
/// Problems met while reading files are moved into `Compiled::diagnostics`, with the rest.
pub fn load_dir(
    root: &std::path::Path,
    options: &CompileOptions,
) -> Result<(Loaded, Compiled), SourceError> {
    let mut loaded = source::read_dir(root)?;
    let mut compiled = compile(&loaded.files, options);
    compiled
        .diagnostics
        .extend(std::mem::take(&mut loaded.diagnostics));
    compiled.diagnostics.sort();
    if diag::has_errors(&compiled.diagnostics) {
        compiled.snapshot = None;
    }
    Ok((loaded, compiled))
}
