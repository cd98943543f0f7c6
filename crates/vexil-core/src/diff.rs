//! Which flags differ between two snapshots, comparing compiled flags (not file text).
//!
//! A flag has changed when anything a client could observe has: its evaluation (type, enabled,
//! variants, default, rules, and the content of the segments its rules use) or its definition as
//! listed (description, owner, tags, expiry, metadata, clients). Where it was written does not count:
//! moving a flag to another file or adding a comment above it changes nothing.

use crate::snapshot::{Condition, Flag, Matcher, Namespace, Rule, Segment, Snapshot};

/// A flag, by namespace and key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlagRef {
    pub namespace: Box<str>,
    pub key: Box<str>,
}

/// Flags added, changed and removed; each list sorted by namespace, then key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagChanges {
    pub added: Vec<FlagRef>,
    pub changed: Vec<FlagRef>,
    pub removed: Vec<FlagRef>,
}

impl FlagChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    pub fn len(&self) -> usize {
        self.added.len() + self.changed.len() + self.removed.len()
    }
}

/// The changes from `old` (nothing, before the first load) to `new`.
pub fn flag_changes(old: Option<&Snapshot>, new: &Snapshot) -> FlagChanges {
    let mut changes = FlagChanges::default();
    let empty = Namespace::default();
    for new_ns in new.namespaces() {
        let old_ns = old
            .and_then(|o| o.namespace(&new_ns.name))
            .unwrap_or(&empty);
        for flag in &new_ns.flags {
            let id = || FlagRef {
                namespace: new_ns.name.clone(),
                key: flag.key.clone(),
            };
            match old_ns.flag(&flag.key) {
                None => changes.added.push(id()),
                Some(before) if !same_flag(old_ns, before, new_ns, flag) => {
                    changes.changed.push(id());
                }
                Some(_) => {}
            }
        }
    }
    for old_ns in old.map(Snapshot::namespaces).unwrap_or_default() {
        let new_ns = new.namespace(&old_ns.name).unwrap_or(&empty);
        for flag in &old_ns.flags {
            if new_ns.flag(&flag.key).is_none() {
                changes.removed.push(FlagRef {
                    namespace: old_ns.name.clone(),
                    key: flag.key.clone(),
                });
            }
        }
    }
    // Namespaces and flags are sorted in a snapshot, so the lists already are.
    changes
}

fn same_flag(a_ns: &Namespace, a: &Flag, b_ns: &Namespace, b: &Flag) -> bool {
    a.flag_type == b.flag_type
        && a.enabled == b.enabled
        && a.variants == b.variants
        && a.default == b.default
        && a.description == b.description
        && a.owner == b.owner
        && a.tags == b.tags
        && a.expires == b.expires
        && a.metadata == b.metadata
        && a.clients == b.clients
        && a.rules.len() == b.rules.len()
        && a.rules
            .iter()
            .zip(&b.rules)
            .all(|(ra, rb)| same_rule(a_ns, ra, b_ns, rb))
}

fn same_rule(a_ns: &Namespace, a: &Rule, b_ns: &Namespace, b: &Rule) -> bool {
    a.name == b.name
        && a.outcome == b.outcome
        && a.matchers.len() == b.matchers.len()
        && a.matchers
            .iter()
            .zip(&b.matchers)
            .all(|(ma, mb)| same_matcher(a_ns, ma, b_ns, mb))
}

fn same_matcher(a_ns: &Namespace, a: &Matcher, b_ns: &Namespace, b: &Matcher) -> bool {
    match (a, b) {
        (Matcher::Segments(mode_a, sa), Matcher::Segments(mode_b, sb)) => {
            mode_a == mode_b
                && sa.len() == sb.len()
                && sa
                    .iter()
                    .zip(sb)
                    .all(|(&ia, &ib)| match (a_ns.segment(ia), b_ns.segment(ib)) {
                        (Some(x), Some(y)) => same_segment(x, y),
                        _ => false,
                    })
        }
        (Matcher::Conditions(mode_a, ca), Matcher::Conditions(mode_b, cb)) => {
            mode_a == mode_b && same_conditions(ca, cb)
        }
        (Matcher::Ids(a), Matcher::Ids(b)) => a == b,
        (Matcher::Groups(a), Matcher::Groups(b)) => a == b,
        _ => false,
    }
}

/// Segments are compared by what they match (their includes are already flattened in).
fn same_segment(a: &Segment, b: &Segment) -> bool {
    a.key == b.key
        && a.ids == b.ids
        && a.groups.len() == b.groups.len()
        && a.groups
            .iter()
            .zip(&b.groups)
            .all(|((ma, ca), (mb, cb))| ma == mb && same_conditions(ca, cb))
}

fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_condition(x, y))
}

/// The compiled operator is derived from what was written, so that is what is compared.
fn same_condition(a: &Condition, b: &Condition) -> bool {
    a.attr == b.attr
        && a.op_name == b.op_name
        && a.operand == b.operand
        && a.ignore_case == b.ignore_case
}

#[cfg(test)]
mod tests {
    use crate::compile::{CompileOptions, compile};
    use crate::source::from_memory;

    fn snapshot(text: &str) -> crate::Snapshot {
        let loaded = from_memory([("f.yaml", text)]);
        let compiled = compile(&loaded.files, &CompileOptions::default());
        compiled.snapshot.unwrap()
    }

    const BASE: &str = "
segments:
  staff: { ids: [u1] }
  other: { ids: [u9] }
flags:
  uses-staff:
    rules: [{ segment: staff, serve: true }]
  plain: { default: true }
  gone: {}
";

    /// A case: its name, the new text, and the flags expected added, changed and removed.
    type Case = (
        &'static str,
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    );

    const CASES: &[Case] = &[
        ("nothing", BASE, &[], &[], &[]),
        (
            "comments, order and another segment added",
            "
# a comment
segments:
  newer: { ids: [x] }
  other: { ids: [u9] }
  staff: { ids: [u1] }
flags:
  gone: {}
  plain: { default: true }
  uses-staff:
    rules: [{ segment: staff, serve: true }]
  uses-newer:
    rules: [{ segment: newer, serve: true }]
",
            &["default/uses-newer"],
            &[],
            &[],
        ),
        (
            "a segment's members change the flags that use it",
            "
segments:
  staff: { ids: [u1, u2] }
  other: { ids: [u9] }
flags:
  uses-staff:
    rules: [{ segment: staff, serve: true }]
  plain: { default: true }
  gone: {}
",
            &[],
            &["default/uses-staff"],
            &[],
        ),
        (
            "default, description, removal",
            "
segments:
  staff: { ids: [u1] }
  other: { ids: [u9] }
flags:
  uses-staff:
    description: now documented
    rules: [{ segment: staff, serve: true }]
  plain: { default: false }
",
            &[],
            &["default/plain", "default/uses-staff"],
            &["default/gone"],
        ),
    ];

    #[test]
    fn flag_changes_table() {
        let base = snapshot(BASE);
        for (name, text, added, changed, removed) in CASES {
            let changes = super::flag_changes(Some(&base), &snapshot(text));
            let keys = |refs: &[super::FlagRef]| -> Vec<String> {
                refs.iter()
                    .map(|r| format!("{}/{}", r.namespace, r.key))
                    .collect()
            };
            assert_eq!(keys(&changes.added), *added, "{name}: added");
            assert_eq!(keys(&changes.changed), *changed, "{name}: changed");
            assert_eq!(keys(&changes.removed), *removed, "{name}: removed");
        }
        let first = super::flag_changes(None, &base);
        assert_eq!(first.added.len(), 3);
    }
}
