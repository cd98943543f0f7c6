//! Vexil's mirrors: flags in the shapes other flag systems' clients read, the Flipper HTTP API
//! and the Unleash client API. Built on `vexil-core` (a compiled `Namespace` in, wire models and
//! findings out); no IO and no async runtime here: `vexil-server` serves the bodies and
//! `vexil check` reports the findings.
//!
//! Those clients evaluate the definitions themselves, so each export is faithful or flagged: a
//! flag is exported with the exact meaning it has in Vexil, or exported with a finding that says
//! why the client's answers can differ (`Inexact`), or left out with a finding that says why
//! (`Omitted`). Nothing is guessed silently.
//!
//! Invariant: exports are pure functions of a namespace; the server serialises them once per
//! snapshot.
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

/// The words a reason about unusual inputs only is made with (`concat!` it into the reason):
/// `Finding::unusual_inputs_only` says so without reading the text.
macro_rules! unusual_inputs_only {
    () => {
        "for unusual inputs only"
    };
}

pub mod flagd;
pub mod flipper;
mod report;
pub mod unleash;

pub use report::{
    Coverage, coverage, declared_findings, declared_flags, declares, grouped_warnings,
};

use vexil_core::snapshot::{Flag, Gate, Origin, Outcome, Rule, Snapshot, Value};

/// A mirror: a wire protocol and the client capabilities it is exported for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mirror {
    /// The Flipper HTTP API for Flipper 1.1+ clients (the adapter's User-Agent says so): the
    /// gates and the expression gate.
    Flipper,
    /// The Flipper HTTP API for Flipper 0.25 to 1.0 clients and callers that do not say
    /// (gates: boolean, actors, groups, percentage of actors, percentage of time).
    FlipperLegacy,
    /// The Unleash client API for SDKs that send `Unleash-Client-Spec` and evaluate with
    /// Unleash's yggdrasil engine (Python 6.x, Java, .NET, Ruby 6+, Edge: every operator,
    /// strategy variants).
    Unleash,
    /// The same body, read by SDKs with their own engine (Node `unleash-client` 6.x): its
    /// findings say what that engine reads differently.
    UnleashNode,
    /// The Unleash client API for SDKs that send no `Unleash-Client-Spec` (ruby-unleash 3.2.5
    /// and its era: `IN`/`NOT_IN` only, no strategy variants).
    UnleashLegacy,
    /// flagd definitions (the sync service, `vexil export --format flagd`) as flagd's Go
    /// evaluator reads them: the flagd daemon and the Go in-process provider.
    Flagd,
    /// The same definitions read by JS flagd-core 4.x (the Node and web in-process providers).
    FlagdNode,
    /// The same definitions read by Python flagd-core 2.x (the Python in-process provider).
    FlagdPython,
}

impl Mirror {
    pub const ALL: [Mirror; 8] = [
        Mirror::Flipper,
        Mirror::FlipperLegacy,
        Mirror::Unleash,
        Mirror::UnleashNode,
        Mirror::UnleashLegacy,
        Mirror::Flagd,
        Mirror::FlagdNode,
        Mirror::FlagdPython,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Mirror::Flipper => "flipper",
            Mirror::FlipperLegacy => "flipper-legacy",
            Mirror::Unleash => "unleash",
            Mirror::UnleashNode => "unleash-node",
            Mirror::UnleashLegacy => "unleash-legacy",
            Mirror::Flagd => "flagd",
            Mirror::FlagdNode => "flagd-node",
            Mirror::FlagdPython => "flagd-python",
        }
    }

    pub fn parse(s: &str) -> Option<Mirror> {
        Mirror::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// The names of `ALL`: the client names a repository config (`vexil.yaml`) may declare.
    pub fn names() -> &'static [&'static str] {
        static NAMES: std::sync::LazyLock<Vec<&'static str>> =
            std::sync::LazyLock::new(|| Mirror::ALL.iter().map(|m| m.as_str()).collect());
        &NAMES
    }
}

/// How a flag fares in a mirror, when not exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fidelity {
    /// Exported, but the client can answer differently for some contexts.
    Inexact,
    /// Left out of the mirror: its clients see no such flag.
    Omitted,
}

impl Fidelity {
    pub fn as_str(self) -> &'static str {
        match self {
            Fidelity::Inexact => "inexact",
            Fidelity::Omitted => "omitted",
        }
    }
}

/// A flag a mirror cannot carry exactly, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub namespace: Box<str>,
    pub flag: Box<str>,
    pub mirror: Mirror,
    pub fidelity: Fidelity,
    pub reason: String,
    /// The client answers differently only for unusual inputs (numbers written oddly,
    /// non-ASCII digits, build metadata, ...): still inexact, still a warning for a declared
    /// client, but the conformance corpus, which has no such inputs, must agree.
    pub unusual_inputs_only: bool,
    /// The flag, or the rule at fault.
    pub file: String,
    pub pos: vexil_core::diag::Pos,
}

impl Finding {
    pub(crate) fn new(
        namespace: &str,
        flag: &str,
        mirror: Mirror,
        fidelity: Fidelity,
        origin: &Origin,
        reason: String,
    ) -> Finding {
        Finding {
            namespace: namespace.into(),
            flag: flag.into(),
            mirror,
            fidelity,
            unusual_inputs_only: fidelity == Fidelity::Inexact
                && reason.contains(unusual_inputs_only!()),
            reason,
            file: origin.file.clone(),
            pos: origin.pos,
        }
    }
}

/// Every finding of every mirror, for every namespace, sorted.
pub fn findings(snapshot: &Snapshot, mirrors: &[Mirror]) -> Vec<Finding> {
    let mut out = Vec::new();
    for ns in snapshot.namespaces() {
        for &mirror in mirrors {
            match mirror {
                Mirror::Flipper => {
                    out.extend(flipper::export(ns, flipper::Profile::Expressions).findings);
                }
                Mirror::FlipperLegacy => {
                    out.extend(flipper::export(ns, flipper::Profile::Legacy).findings);
                }
                Mirror::Unleash => {
                    out.extend(unleash::export(ns, unleash::Profile::Modern).findings);
                }
                Mirror::UnleashNode => out.extend(unleash::node_findings(ns)),
                Mirror::UnleashLegacy => {
                    out.extend(unleash::export(ns, unleash::Profile::Legacy).findings);
                }
                Mirror::Flagd | Mirror::FlagdNode | Mirror::FlagdPython => {
                    out.extend(flagd::findings(ns, mirror));
                }
            }
        }
    }
    out.sort();
    out
}

/// The percentage a threshold in thousandths stands for, as clients write it ("25", "12.5").
pub(crate) fn percent_text(thousandths: u32) -> String {
    let whole = thousandths / 1000;
    let frac = thousandths % 1000;
    if frac == 0 {
        whole.to_string()
    } else {
        let digits = format!("{frac:03}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

fn is_on(flag: &Flag, variant: usize) -> bool {
    matches!(flag.variant(variant).value, Value::Bool(true))
}

/// Whether a rule of a boolean flag can serve `value` to someone.
pub(crate) fn can_serve(flag: &Flag, rule: &Rule, value: bool) -> bool {
    match &rule.outcome {
        Outcome::Serve { variant, gate } => {
            is_on(flag, *variant) == value
                && !matches!(
                    gate,
                    Gate::Rollout { threshold: 0, .. } | Gate::PercentageOfTime { threshold: 0 }
                )
        }
        Outcome::Split { boundaries, .. } => {
            let mut lower = 0;
            boundaries.iter().any(|&(upper, variant)| {
                let wide = upper > lower;
                lower = upper;
                wide && is_on(flag, variant) == value
            })
        }
    }
}

#[cfg(test)]
mod tests;
