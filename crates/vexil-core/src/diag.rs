//! Diagnostics: what validation tells a pull-request author, always with a place and a stable code.

use std::fmt;

/// A 1-based line and column (columns count characters, as editors do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

macro_rules! codes {
    ($($variant:ident => $name:literal,)*) => {
        /// Stable diagnostic codes: tooling and docs may rely on these names.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code { $($variant,)* }
        impl Code {
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }
        }
    };
}

codes! {
    Io => "io-error",
    FileTooLarge => "file-too-large",
    BinaryFile => "binary-file",
    NotUtf8 => "not-utf8",
    SymlinkOutsideRoot => "symlink-outside-root",
    TooManyFiles => "too-many-files",
    GitSymlink => "git-symlink",
    GitSubmodule => "git-submodule",
    DirectoryTooDeep => "directory-too-deep",
    NameNotUtf8 => "name-not-utf8",
    MissingFlagsDir => "missing-flags-dir",
    UnknownFlag => "unknown-flag",
    TestFailed => "test-failed",
    YamlSyntax => "yaml-syntax",
    YamlLimit => "yaml-limit",
    DuplicateKey => "duplicate-key",
    UnknownField => "unknown-field",
    WrongType => "wrong-type",
    MissingField => "missing-field",
    InvalidKey => "invalid-key",
    ConflictingFields => "conflicting-fields",
    DuplicateFlag => "duplicate-flag",
    DuplicateSegment => "duplicate-segment",
    CaseConflict => "case-conflict",
    UnknownSegment => "unknown-segment",
    UnknownVariant => "unknown-variant",
    SegmentCycle => "segment-cycle",
    EmptySegment => "empty-segment",
    SplitWeights => "split-weights",
    ValueType => "value-type",
    InvalidRegex => "invalid-regex",
    InvalidSemver => "invalid-semver",
    InvalidDate => "invalid-date",
    InvalidNumber => "invalid-number",
    PercentageRange => "percentage-range",
    ExpiredFlag => "expired-flag",
    UnreachableRule => "unreachable-rule",
    UnusedSegment => "unused-segment",
    MirrorInexact => "mirror-inexact",
    MirrorOmitted => "mirror-omitted",
    UnknownClient => "unknown-client",
    UnknownNamespace => "unknown-namespace",
    MisplacedConfig => "misplaced-config",
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found in the flag files.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// Path relative to the flags root, with `/` separators.
    pub file: String,
    pub pos: Pos,
    pub severity: Severity,
    pub code: Code,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}[{}]: {}",
            self.file,
            self.pos.line,
            self.pos.column,
            self.severity.as_str(),
            self.code,
            self.message
        )
    }
}

/// Collects diagnostics for one file, counting its errors (decoders compare counts before and
/// after a definition to know whether it is sound, without rescanning every diagnostic).
#[derive(Debug)]
pub(crate) struct Sink<'a> {
    pub file: &'a str,
    out: &'a mut Vec<Diagnostic>,
    errors: usize,
}

impl<'a> Sink<'a> {
    pub fn new(file: &'a str, out: &'a mut Vec<Diagnostic>) -> Self {
        Sink {
            file,
            out,
            errors: 0,
        }
    }

    /// Errors pushed through this sink so far.
    pub fn errors(&self) -> usize {
        self.errors
    }

    pub fn error(&mut self, pos: Pos, code: Code, message: impl Into<String>) {
        self.errors += 1;
        self.push(pos, Severity::Error, code, message);
    }

    pub fn warning(&mut self, pos: Pos, code: Code, message: impl Into<String>) {
        self.push(pos, Severity::Warning, code, message);
    }

    fn push(&mut self, pos: Pos, severity: Severity, code: Code, message: impl Into<String>) {
        self.out.push(Diagnostic {
            file: self.file.to_owned(),
            pos,
            severity,
            code,
            message: message.into(),
        });
    }
}

/// True if any diagnostic is an error (warnings do not block a snapshot).
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(|d| d.severity == Severity::Error)
}
