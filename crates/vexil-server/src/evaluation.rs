//! The one request path every front goes through: namespace and flag lookup, the type rule,
//! evaluation and counting, for one flag or all flags of a namespace; and the one error type
//! every front converts to its wire format (in exactly one place per front).

use vexil_core::snapshot::FlagType;
use vexil_core::{Context, Evaluation, Flag, Namespace, Snapshot};

use crate::state::Served;

/// Why a request gets no answer. Each front words these once, in its own wire format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("missing or unknown token")]
    Unauthenticated,
    #[error("no valid flag snapshot loaded yet")]
    NoSnapshot,
    #[error("namespace `{0}` not found")]
    UnknownNamespace(String),
    #[error("flag `{flag}` not found in namespace `{namespace}`")]
    FlagNotFound { namespace: String, flag: String },
    #[error("flag `{flag}` is {actual}, not {expected}", actual = .actual.as_str(), expected = .expected.as_str())]
    TypeMismatch {
        flag: String,
        actual: FlagType,
        expected: FlagType,
    },
    #[error("{0}")]
    InvalidContext(String),
    #[error("{0}")]
    BadRequest(String),
}

impl Error {
    /// OpenFeature's error code for this error (OFREP bodies, spec tables).
    pub fn openfeature_code(&self) -> &'static str {
        match self {
            Error::FlagNotFound { .. } | Error::UnknownNamespace(_) => "FLAG_NOT_FOUND",
            Error::TypeMismatch { .. } => "TYPE_MISMATCH",
            Error::InvalidContext(_) => "INVALID_CONTEXT",
            Error::BadRequest(_) => "PARSE_ERROR",
            Error::Unauthenticated | Error::NoSnapshot => "GENERAL",
        }
    }
}

/// The type rule: a flag may be read as its own type, and an integer flag as a float.
pub fn readable_as(actual: FlagType, expected: FlagType) -> bool {
    actual == expected || (actual == FlagType::Integer && expected == FlagType::Float)
}

/// Where a flag sits in its snapshot: what counting indexes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagId {
    pub namespace: usize,
    pub flag: usize,
}

/// A flag found by lookup.
#[derive(Debug, Clone, Copy)]
pub struct Found<'s> {
    pub id: FlagId,
    pub namespace: &'s Namespace,
    pub flag: &'s Flag,
}

/// A namespace of the snapshot, with its position.
pub fn namespace<'s>(snapshot: &'s Snapshot, name: &str) -> Result<(usize, &'s Namespace), Error> {
    snapshot
        .namespace_position(name)
        .and_then(|i| Some((i, snapshot.namespaces().get(i)?)))
        .ok_or_else(|| Error::UnknownNamespace(name.to_owned()))
}

/// A flag of the snapshot.
pub fn lookup<'s>(snapshot: &'s Snapshot, namespace: &str, key: &str) -> Result<Found<'s>, Error> {
    let not_found = || Error::FlagNotFound {
        namespace: namespace.to_owned(),
        flag: key.to_owned(),
    };
    let (ni, ns) = self::namespace(snapshot, namespace)?;
    let fi = ns.flag_position(key).ok_or_else(not_found)?;
    let flag = ns.flags.get(fi).ok_or_else(not_found)?;
    Ok(Found {
        id: FlagId {
            namespace: ni,
            flag: fi,
        },
        namespace: ns,
        flag,
    })
}

/// Lookup, the type rule (when the caller expects a type) and evaluation, not counted: the
/// specification tables run exactly this.
pub fn evaluate<'s>(
    snapshot: &'s Snapshot,
    namespace: &str,
    key: &str,
    expected: Option<FlagType>,
    ctx: &Context,
) -> Result<(Found<'s>, Evaluation<'s>), Error> {
    let found = lookup(snapshot, namespace, key)?;
    if let Some(expected) = expected {
        if !readable_as(found.flag.flag_type, expected) {
            return Err(Error::TypeMismatch {
                flag: key.to_owned(),
                actual: found.flag.flag_type,
                expected,
            });
        }
    }
    Ok((found, found.namespace.evaluate_flag(found.flag, ctx)))
}

impl<'s> Served<'s> {
    /// `evaluate`, counted.
    pub fn evaluate(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<FlagType>,
        ctx: &Context,
    ) -> Result<(Found<'s>, Evaluation<'s>), Error> {
        let (found, eval) = evaluate(self.snapshot, namespace, key, expected, ctx)?;
        self.derived.counters.record(found.id, eval.reason);
        Ok((found, eval))
    }

    /// One flag already found, counted.
    pub fn evaluate_found(&self, found: Found<'s>, ctx: &Context) -> Evaluation<'s> {
        let eval = found.namespace.evaluate_flag(found.flag, ctx);
        self.derived.counters.record(found.id, eval.reason);
        eval
    }

    /// Every flag of a namespace that `keep` selects, in flag order, counted.
    pub fn evaluate_all(
        &self,
        namespace: &str,
        ctx: &Context,
        keep: impl Fn(&Flag) -> bool,
        mut each: impl FnMut(Found<'s>, Evaluation<'s>),
    ) -> Result<&'s Namespace, Error> {
        let (ni, ns) = self::namespace(self.snapshot, namespace)?;
        for (fi, flag) in ns.flags.iter().enumerate().filter(|(_, f)| keep(f)) {
            let found = Found {
                id: FlagId {
                    namespace: ni,
                    flag: fi,
                },
                namespace: ns,
                flag,
            };
            each(found, self.evaluate_found(found, ctx));
        }
        Ok(ns)
    }
}
