//! Findings as people read them: the ones for the clients a repository declares
//! (a flag's `clients:`, else `vexil.yaml`), one warning per flag and client (every reason, each with its place), and
//! per-mirror counts of flags (not findings) for `/mirrors/diagnostics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use vexil_core::diag::{Code, Diagnostic, Severity};
use vexil_core::snapshot::Snapshot;

use crate::{Fidelity, Finding, Mirror};

/// The findings `vexil validate` reports: for `mirrors` when given (the command line's
/// choice, for every namespace), else for the clients each namespace declares in the
/// repository config (every mirror without a declaration).
pub fn declared_findings(snapshot: &Snapshot, mirrors: Option<&[Mirror]>) -> Vec<Finding> {
    let mut out = crate::findings(snapshot, mirrors.unwrap_or(&Mirror::ALL));
    if mirrors.is_none() {
        out.retain(|f| declares(snapshot, &f.namespace, &f.flag, f.mirror));
    }
    out
}

/// Whether `mirror`'s client reads a flag: its own `clients:` when it has one, else its
/// namespace's in the repository config, else the repository's (every client without any).
pub fn declares(snapshot: &Snapshot, namespace: &str, flag: &str, mirror: Mirror) -> bool {
    let config = snapshot.config();
    match snapshot.namespace(namespace).and_then(|ns| ns.flag(flag)) {
        Some(flag) => config.declares_flag(namespace, flag, mirror.as_str()),
        None => config.declares(namespace, mirror.as_str()),
    }
}

/// How many flags of the snapshot `mirror`'s client is declared to read.
pub fn declared_flags(snapshot: &Snapshot, mirror: Mirror) -> usize {
    let config = snapshot.config();
    snapshot
        .namespaces()
        .iter()
        .flat_map(|ns| ns.flags.iter().map(move |f| (&*ns.name, f)))
        .filter(|(ns, f)| config.declares_flag(ns, f, mirror.as_str()))
        .count()
}

/// One warning per flag and mirror, in place of one per finding. It stands at the first
/// place (in file order); every reason is in the message, each with its place when it is
/// elsewhere (line and column in the same file, else file:line:column from the flags root). An omission makes it a `mirror-omitted` warning (its reason first), else
/// `mirror-inexact`.
pub fn grouped_warnings(findings: &[Finding]) -> Vec<Diagnostic> {
    let mut groups: BTreeMap<(&str, &str, Mirror), Vec<&Finding>> = BTreeMap::new();
    for f in findings {
        groups
            .entry((&f.namespace, &f.flag, f.mirror))
            .or_default()
            .push(f);
    }
    let mut out = Vec::with_capacity(groups.len());
    for ((_, flag, mirror), mut group) in groups {
        group.sort_by(|a, b| (&a.file, a.pos).cmp(&(&b.file, b.pos)));
        let Some(first) = group.first().copied() else {
            continue;
        };
        let omitted = group.iter().any(|f| f.fidelity == Fidelity::Omitted);
        let (code, what) = if omitted {
            (Code::MirrorOmitted, "is left out of")
        } else {
            (Code::MirrorInexact, "is exported inexactly to")
        };
        // The omission says what the client sees; the reasons it would be inexact follow.
        group.sort_by_key(|f| f.fidelity != Fidelity::Omitted);
        let mut message = format!("flag `{flag}` {what} the {} mirror: ", mirror.as_str());
        if let [only] = group.as_slice() {
            message.push_str(&only.reason);
        } else {
            let _ = write!(message, "{} reasons:", group.len());
            for (i, f) in group.iter().enumerate() {
                let _ = write!(message, " ({}) {}", i + 1, f.reason);
                // Places are the flag's own file in practice: line and column say enough.
                if f.file != first.file {
                    let _ = write!(message, " (at {}:{}:{})", f.file, f.pos.line, f.pos.column);
                } else if f.pos != first.pos {
                    let _ = write!(message, " (line {}, column {})", f.pos.line, f.pos.column);
                }
                if i + 1 < group.len() {
                    message.push(';');
                }
            }
        }
        out.push(Diagnostic {
            file: first.file.clone(),
            pos: first.pos,
            severity: Severity::Warning,
            code,
            message,
        });
    }
    out.sort();
    out
}

/// How many flags of a snapshot one mirror carries, and how well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Coverage {
    /// Every flag of the snapshot.
    pub flags: usize,
    /// Flags the mirror exports (not omitted).
    pub exported: usize,
    /// Exported flags without any finding.
    pub exact: usize,
    /// Exported flags with at least one inexact finding.
    pub inexact: usize,
    /// Flags left out (an omission, whatever else is said about them).
    pub omitted: usize,
}

/// Per mirror of `Mirror::ALL`, counted in flags: a flag with several findings counts once.
pub fn coverage(snapshot: &Snapshot, findings: &[Finding]) -> Vec<(Mirror, Coverage)> {
    let flags = snapshot.flag_count();
    Mirror::ALL
        .iter()
        .map(|&mirror| {
            let mut worst: BTreeMap<(&str, &str), Fidelity> = BTreeMap::new();
            for f in findings.iter().filter(|f| f.mirror == mirror) {
                let slot = worst.entry((&f.namespace, &f.flag)).or_insert(f.fidelity);
                *slot = (*slot).max(f.fidelity);
            }
            let omitted = worst.values().filter(|&&w| w == Fidelity::Omitted).count();
            let inexact = worst.len() - omitted;
            let exported = flags.saturating_sub(omitted);
            let coverage = Coverage {
                flags,
                exported,
                exact: exported.saturating_sub(inexact),
                inexact,
                omitted,
            };
            (mirror, coverage)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use vexil_core::{CompileOptions, Snapshot, SourceFile};

    use crate::{Mirror, coverage, declared_findings, grouped_warnings};

    /// `two-reasons` has two inexact findings for unleash (two crc32 rollouts), and an
    /// omission besides an inexact finding for unleash-legacy (it reads `plan`).
    const FLAGS: &str = "\
flags:
  two-reasons:
    rules:
      - { when: [{ attr: plan, in: [pro] }], rollout: 50 }
      - { rollout: 25 }
  exact: { default: true }
";

    fn snapshot(config: Option<&str>) -> Snapshot {
        snapshot_of(FLAGS, config)
    }

    fn snapshot_of(flags: &str, config: Option<&str>) -> Snapshot {
        let mut files = vec![SourceFile {
            path: "f.yaml".into(),
            text: flags.into(),
        }];
        if let Some(text) = config {
            files.push(SourceFile {
                path: "vexil.yaml".into(),
                text: text.into(),
            });
        }
        let options = CompileOptions {
            clients: Some(Mirror::names()),
            ..CompileOptions::default()
        };
        let compiled = vexil_core::compile(&files, &options);
        compiled
            .snapshot
            .unwrap_or_else(|| panic!("{:?}", compiled.diagnostics))
    }

    #[test]
    fn coverage_counts_flags_not_findings() {
        let s = snapshot(None);
        let findings = crate::findings(&s, &Mirror::ALL);
        let unleash: Vec<_> = findings
            .iter()
            .filter(|f| f.mirror == Mirror::Unleash)
            .collect();
        assert_eq!(unleash.len(), 2, "{unleash:?}");
        let got = coverage(&s, &findings);
        let of = |m: Mirror| got.iter().find(|(x, _)| *x == m).map(|(_, c)| *c).unwrap();
        let unleash = of(Mirror::Unleash);
        assert_eq!(
            (
                unleash.flags,
                unleash.exported,
                unleash.exact,
                unleash.inexact,
                unleash.omitted
            ),
            (2, 2, 1, 1, 0)
        );
        let legacy = of(Mirror::UnleashLegacy);
        assert_eq!(
            (
                legacy.flags,
                legacy.exported,
                legacy.exact,
                legacy.inexact,
                legacy.omitted
            ),
            (2, 1, 1, 0, 1)
        );
    }

    #[test]
    fn one_warning_per_flag_and_client_with_every_reason_and_place() {
        let s = snapshot(None);
        let warnings = grouped_warnings(&crate::findings(&s, &[Mirror::Unleash]));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let w = &warnings[0];
        assert_eq!(
            (w.file.as_str(), w.pos.line, w.pos.column),
            ("f.yaml", 4, 9)
        );
        assert_eq!(w.code.as_str(), "mirror-inexact");
        assert!(
            w.message.starts_with(
                "flag `two-reasons` is exported inexactly to the unleash mirror: 2 reasons: (1) rule `1` buckets"
            ),
            "{}",
            w.message
        );
        assert!(
            w.message.contains("; (2) rule `2` buckets"),
            "{}",
            w.message
        );
        assert!(w.message.ends_with("(line 5, column 9)"), "{}", w.message);
        // A single reason reads as one finding did.
        let legacy = grouped_warnings(&crate::findings(&s, &[Mirror::UnleashLegacy]));
        assert_eq!(legacy.len(), 1, "{legacy:?}");
        assert_eq!(legacy[0].code.as_str(), "mirror-omitted");
        assert!(
            legacy[0]
                .message
                .contains("the unleash-legacy mirror: rule `1` reads `plan`"),
            "{}",
            legacy[0].message
        );
    }

    #[test]
    fn declared_clients_choose_the_findings_unless_the_command_line_does() {
        let mirrors = |findings: Vec<crate::Finding>| {
            let mut m: Vec<&str> = findings.iter().map(|f| f.mirror.as_str()).collect();
            m.dedup();
            m
        };
        let all = snapshot(None);
        // Without a config file, every mirror's findings.
        assert_eq!(
            declared_findings(&all, None),
            crate::findings(&all, &Mirror::ALL)
        );
        let declared = snapshot(Some("clients: [unleash]\n"));
        assert_eq!(mirrors(declared_findings(&declared, None)), ["unleash"]);
        let chosen = declared_findings(&declared, Some(&[Mirror::FlipperLegacy]));
        assert_eq!(mirrors(chosen), ["flipper-legacy"]);
        let none = snapshot(Some(
            "clients: []\nnamespaces:\n  default: { clients: [] }\n",
        ));
        assert!(declared_findings(&none, None).is_empty());
    }

    /// A flag's own `clients:` decides for it, over the repository config's list.
    #[test]
    fn a_flags_own_clients_decide_for_it() {
        let flags = FLAGS.replace(
            "  two-reasons:\n",
            "  two-reasons:\n    clients: [unleash-legacy]\n",
        );
        let s = snapshot_of(&flags, Some("clients: [unleash]\n"));
        let mut mirrors: Vec<&str> = declared_findings(&s, None)
            .iter()
            .map(|f| f.mirror.as_str())
            .collect();
        mirrors.dedup();
        assert_eq!(mirrors, ["unleash-legacy"]);
        assert!(crate::declares(
            &s,
            "default",
            "two-reasons",
            Mirror::UnleashLegacy
        ));
        assert!(!crate::declares(
            &s,
            "default",
            "two-reasons",
            Mirror::Unleash
        ));
        assert!(crate::declares(&s, "default", "exact", Mirror::Unleash));
        assert_eq!(crate::declared_flags(&s, Mirror::Unleash), 1);
        assert_eq!(crate::declared_flags(&s, Mirror::UnleashLegacy), 1);
        assert_eq!(crate::declared_flags(&s, Mirror::Flipper), 0);
        // Without any declaration, every client reads every flag.
        assert_eq!(crate::declared_flags(&snapshot(None), Mirror::Flipper), 2);
    }
}
