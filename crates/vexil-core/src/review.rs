//! What a change to the flags does, for reviewers: per namespace, the flags added, removed and
//! changed with field-level before -> after, the segments changed with every flag that uses
//! them (the blast radius), and where it can be computed, the share of entities that move.
//!
//! Flags are compared in their exported shape (`export`), so formatting, comments, key order
//! and the file a flag lives in never show up as changes.

use serde_json::{Map, Value as Json, json};

use crate::config::RepoConfig;
use crate::export::{flag_definition, segment_definition};
use crate::snapshot::{Flag, Namespace, Outcome, Snapshot};

/// Fields that describe a flag without changing its answers.
const DESCRIPTIVE: [&str; 6] = [
    "description",
    "owner",
    "tags",
    "expires",
    "metadata",
    "clients",
];

#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    /// `enabled`, `default`, `variants.dark`, `rules[2] "beta"`, `rules[2] "beta".rollout`, ...
    pub field: String,
    pub before: Option<Json>,
    pub after: Option<Json>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlagChange {
    pub key: String,
    pub fields: Vec<FieldChange>,
    /// Changed segments its rules use.
    pub via_segments: Vec<String>,
    /// Whether answers can change (false: only descriptive fields changed).
    pub behaviour: bool,
    /// Estimates of who moves, one line each ("15 % of the entities reaching rule ...").
    pub audience: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SegmentChange {
    pub key: String,
    /// `added`, `removed` or `changed`.
    pub kind: &'static str,
    /// Whether members change for some flag (not only the description, not unused).
    pub behaviour: bool,
    pub fields: Vec<FieldChange>,
    /// Flags (of the new snapshot, or the old one for a removed segment) whose rules use it.
    pub used_by: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NamespaceReport {
    pub name: String,
    pub added: Vec<(String, Json)>,
    pub removed: Vec<String>,
    pub changed: Vec<FlagChange>,
    pub segments: Vec<SegmentChange>,
}

impl NamespaceReport {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.segments.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    pub namespaces: Vec<NamespaceReport>,
    /// The repository config's declared clients (`vexil.yaml`): `clients` (every namespace)
    /// and `namespaces.NAME.clients`; they change no answer.
    pub config: Vec<FieldChange>,
}

impl Report {
    /// No flag, segment or declared client differs at all.
    pub fn is_empty(&self) -> bool {
        self.namespaces.iter().all(NamespaceReport::is_empty) && self.config.is_empty()
    }

    /// Some answer can change (not only descriptions, owners, tags, expiry, metadata or
    /// declared clients).
    pub fn changes_behaviour(&self) -> bool {
        self.namespaces.iter().any(|ns| {
            !ns.added.is_empty()
                || !ns.removed.is_empty()
                || ns.changed.iter().any(|c| c.behaviour)
                || ns.segments.iter().any(|s| s.behaviour)
        })
    }

    pub fn to_json(&self) -> Json {
        let field =
            |f: &FieldChange| json!({ "field": f.field, "before": f.before, "after": f.after });
        let namespaces: Vec<Json> = self
            .namespaces
            .iter()
            .map(|ns| {
                json!({
                    "namespace": ns.name,
                    "added": ns.added.iter().map(|(k, d)| json!({ "flag": k, "definition": d })).collect::<Vec<_>>(),
                    "removed": ns.removed,
                    "changed": ns.changed.iter().map(|c| json!({
                        "flag": c.key,
                        "behaviour": c.behaviour,
                        "fields": c.fields.iter().map(field).collect::<Vec<_>>(),
                        "via_segments": c.via_segments,
                        "audience": c.audience,
                    })).collect::<Vec<_>>(),
                    "segments": ns.segments.iter().map(|s| json!({
                        "segment": s.key,
                        "change": s.kind,
                        "behaviour": s.behaviour,
                        "fields": s.fields.iter().map(field).collect::<Vec<_>>(),
                        "used_by": s.used_by,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let config: Vec<Json> = self.config.iter().map(field).collect();
        json!({
            "changes_behaviour": self.changes_behaviour(),
            "namespaces": namespaces,
            "config": config,
        })
    }
}

/// The exported definition, with each split as an ordered list of `[variant, weight]`: buckets
/// are laid out in written order, so reordering a split moves entities.
fn comparable(ns: &Namespace, flag: &Flag) -> Json {
    let mut def = flag_definition(ns, flag);
    if let Some(Json::Array(rules)) = def.get_mut("rules") {
        for (rule, compiled) in rules.iter_mut().zip(&flag.rules) {
            if let (Json::Object(r), Outcome::Split { boundaries, .. }) = (rule, &compiled.outcome)
            {
                let ordered: Vec<Json> = ranges(flag, boundaries)
                    .into_iter()
                    .map(|(variant, start, end)| {
                        json!([variant, crate::export::percent(end - start)])
                    })
                    .collect();
                r.insert("split".into(), Json::Array(ordered));
            }
        }
    }
    def
}

/// The review of going from `old` to `new`.
pub fn review(old: &Snapshot, new: &Snapshot) -> Report {
    let empty = Namespace::default();
    let mut names: Vec<&str> = old
        .namespaces()
        .iter()
        .chain(new.namespaces())
        .map(|ns| &*ns.name)
        .collect();
    names.sort_unstable();
    names.dedup();
    let namespaces = names
        .into_iter()
        .map(|name| {
            let a = old.namespace(name).unwrap_or(&empty);
            let b = new.namespace(name).unwrap_or(&empty);
            namespace_report(name, a, b)
        })
        .filter(|r| !r.is_empty())
        .collect();
    let config = object_changes("", &declared(old.config()), &declared(new.config()));
    Report { namespaces, config }
}

/// The clients a repository config declares, as `clients` and `namespaces.NAME.clients` lists
/// (absent when not declared).
fn declared(config: &RepoConfig) -> Json {
    let list =
        |c: &crate::config::Clients| -> Json { c.names.iter().map(|n| Json::from(&**n)).collect() };
    let mut out = Map::new();
    if let Some(c) = &config.clients {
        out.insert("clients".into(), list(c));
    }
    for (name, ns) in &config.namespaces {
        if let Some(c) = &ns.clients {
            out.insert(format!("namespaces.{name}.clients"), list(c));
        }
    }
    Json::Object(out)
}

fn namespace_report(name: &str, old: &Namespace, new: &Namespace) -> NamespaceReport {
    let mut report = NamespaceReport {
        name: name.to_owned(),
        ..NamespaceReport::default()
    };
    // Segments first: flags that use a changed segment say so.
    for seg in &new.segments {
        let after = segment_definition(seg);
        match old.segments.iter().find(|s| s.key == seg.key) {
            None => {
                let used_by = users(new, &seg.key);
                report.segments.push(SegmentChange {
                    key: seg.key.to_string(),
                    kind: "added",
                    behaviour: !used_by.is_empty(),
                    fields: Vec::new(),
                    used_by,
                });
            }
            Some(before) => {
                let fields = object_changes("", &segment_definition(before), &after);
                if !fields.is_empty() {
                    let used_by = users(new, &seg.key);
                    let members = fields
                        .iter()
                        .any(|f| f.field != "description" && f.field != "include");
                    report.segments.push(SegmentChange {
                        key: seg.key.to_string(),
                        kind: "changed",
                        behaviour: members && !used_by.is_empty(),
                        fields,
                        used_by,
                    });
                }
            }
        }
    }
    for seg in &old.segments {
        if !new.segments.iter().any(|s| s.key == seg.key) {
            let used_by = users(old, &seg.key);
            report.segments.push(SegmentChange {
                key: seg.key.to_string(),
                kind: "removed",
                behaviour: !used_by.is_empty(),
                fields: Vec::new(),
                used_by,
            });
        }
    }
    // Segments whose members changed (a description alone changes no answer).
    let changed_segments: Vec<&str> = report
        .segments
        .iter()
        .filter(|s| s.kind == "changed" && s.behaviour)
        .map(|s| s.key.as_str())
        .collect();

    for flag in &new.flags {
        let Some(before_flag) = old.flag(&flag.key) else {
            report
                .added
                .push((flag.key.to_string(), flag_definition(new, flag)));
            continue;
        };
        let after = comparable(new, flag);
        let before = comparable(old, before_flag);
        let fields = flag_fields(&before, &after);
        let via_segments: Vec<String> = changed_segments
            .iter()
            .filter(|s| uses(new, &flag.key, s))
            .map(|s| (*s).to_owned())
            .collect();
        if fields.is_empty() && via_segments.is_empty() {
            continue;
        }
        // A flag off before and after answers its default variant whatever its rules say.
        let off = !before_flag.enabled && !flag.enabled;
        let behaviour = if off {
            fields.iter().any(|f| {
                f.field == "default" || f.field == "type" || f.field.starts_with("variants.")
            })
        } else {
            !via_segments.is_empty()
                || fields
                    .iter()
                    .any(|f| !DESCRIPTIVE.contains(&f.field.as_str()))
        };
        report.changed.push(FlagChange {
            key: flag.key.to_string(),
            audience: if off {
                Vec::new()
            } else {
                audience(&before, &after, before_flag, flag)
            },
            fields,
            via_segments,
            behaviour,
        });
    }
    for flag in &old.flags {
        if new.flag(&flag.key).is_none() {
            report.removed.push(flag.key.to_string());
        }
    }
    report
}

/// Flags of `ns` whose rules use segment `key`.
fn users(ns: &Namespace, key: &str) -> Vec<String> {
    ns.flags
        .iter()
        .filter(|f| uses(ns, &f.key, key))
        .map(|f| f.key.to_string())
        .collect()
}

/// Whether a flag's rules use `segment`, directly or through a segment that includes it.
fn uses(ns: &Namespace, flag: &str, segment: &str) -> bool {
    let Some(flag) = ns.flag(flag) else {
        return false;
    };
    flag.rules.iter().any(|r| {
        r.matchers.iter().any(|m| match m {
            crate::snapshot::Matcher::Segments(_, indices) => indices
                .iter()
                .any(|&i| ns.segment(i).is_some_and(|s| reaches(ns, s, segment))),
            _ => false,
        })
    })
}

/// Whether `from` is `target` or includes it, at any depth (includes have no cycles in a
/// compiled snapshot; the visited list keeps this total anyway).
fn reaches(ns: &Namespace, from: &crate::snapshot::Segment, target: &str) -> bool {
    let mut stack = vec![from];
    let mut seen: Vec<&str> = Vec::new();
    while let Some(s) = stack.pop() {
        if &*s.key == target {
            return true;
        }
        if seen.contains(&&*s.key) {
            continue;
        }
        seen.push(&s.key);
        for name in &s.include {
            if let Some(next) = ns.segments.iter().find(|x| x.key == *name) {
                stack.push(next);
            }
        }
    }
    false
}

/// Top-level fields, then rules one by one (by position; named by their name).
fn flag_fields(before: &Json, after: &Json) -> Vec<FieldChange> {
    let (Json::Object(b), Json::Object(a)) = (before, after) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).filter(|k| *k != "rules").collect();
    keys.sort_unstable();
    keys.dedup();
    for k in keys {
        if k == "variants" {
            out.extend(object_changes(
                "variants.",
                b.get(k).unwrap_or(&Json::Null),
                a.get(k).unwrap_or(&Json::Null),
            ));
        } else if b.get(k) != a.get(k) {
            out.push(FieldChange {
                field: k.clone(),
                before: b.get(k).cloned(),
                after: a.get(k).cloned(),
            });
        }
    }
    let empty = Vec::new();
    let rb = b.get("rules").and_then(Json::as_array).unwrap_or(&empty);
    let ra = a.get("rules").and_then(Json::as_array).unwrap_or(&empty);
    for i in 0..rb.len().max(ra.len()) {
        let (x, y) = (rb.get(i), ra.get(i));
        if x == y {
            continue;
        }
        let name = y
            .or(x)
            .and_then(|r| r.get("name"))
            .and_then(Json::as_str)
            .unwrap_or("");
        let label = format!("rules[{}] \"{name}\"", i + 1);
        match (x, y) {
            (Some(x), Some(y)) => out.extend(object_changes(&format!("{label}."), x, y)),
            _ => out.push(FieldChange {
                field: label,
                before: x.cloned(),
                after: y.cloned(),
            }),
        }
    }
    out
}

/// Key-by-key changes of two JSON objects (anything else compares whole).
fn object_changes(prefix: &str, before: &Json, after: &Json) -> Vec<FieldChange> {
    let empty = Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter(|k| b.get(*k) != a.get(*k))
        .map(|k| FieldChange {
            field: format!("{prefix}{k}"),
            before: b.get(k).cloned(),
            after: a.get(k).cloned(),
        })
        .collect()
}

/// Who moves, where it can be computed from the rule alone: a rollout's percentage, a split's
/// weights (with contiguous bucket ranges, the share whose variant changes), the kill switch.
fn audience(before: &Json, after: &Json, old: &Flag, new: &Flag) -> Vec<String> {
    let mut out = Vec::new();
    if before.get("enabled") != after.get("enabled") {
        let on = after.get("enabled").and_then(Json::as_bool).unwrap_or(true);
        out.push(if on {
            "switched on: every entity is now answered by the rules instead of the default"
                .to_owned()
        } else {
            "switched off: every entity now gets the default variant".to_owned()
        });
    }
    let empty = Vec::new();
    let rb = before
        .get("rules")
        .and_then(Json::as_array)
        .unwrap_or(&empty);
    let ra = after
        .get("rules")
        .and_then(Json::as_array)
        .unwrap_or(&empty);
    for (i, (x, y)) in rb.iter().zip(ra).enumerate() {
        let name = y.get("name").and_then(Json::as_str).unwrap_or("");
        let outcome_keys = [
            "rollout",
            "split",
            "serve",
            "salt",
            "bucket_by",
            "bucketing",
        ];
        let same_match = without(x, &outcome_keys) == without(y, &outcome_keys);
        // A new salt, attribute or hash reshuffles everyone: no estimate.
        let same_bucketing = x.get("salt") == y.get("salt")
            && x.get("bucket_by") == y.get("bucket_by")
            && x.get("bucketing") == y.get("bucketing");
        if !same_match || !same_bucketing {
            continue;
        }
        if let (Some(p), Some(q)) = (number(x.get("rollout")), number(y.get("rollout"))) {
            if p != q && x.get("serve") == y.get("serve") {
                let serve = match y.get("serve") {
                    Some(Json::String(v)) => format!("`{v}`"),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                let (verb, amount) = if q > p {
                    ("gain", q - p)
                } else {
                    ("lose", p - q)
                };
                out.push(format!(
                    "rules[{}] \"{name}\": rollout {} % -> {} %: {} % of the entities reaching this rule {verb} {serve}",
                    i + 1,
                    fmt(p),
                    fmt(q),
                    fmt(amount)
                ));
            }
        }
        let splits = (
            old.rules.get(i).map(|r| &r.outcome),
            new.rules.get(i).map(|r| &r.outcome),
        );
        if let (
            Some(Outcome::Split { boundaries: p, .. }),
            Some(Outcome::Split { boundaries: q, .. }),
        ) = splits
        {
            let moved = split_moved(&ranges(old, p), &ranges(new, q));
            if moved > 0.0 {
                out.push(format!(
                    "rules[{}] \"{name}\": split weights changed: {} % of the entities reaching this rule get another variant",
                    i + 1,
                    fmt(moved)
                ));
            }
        }
    }
    out
}

fn without(rule: &Json, keys: &[&str]) -> Json {
    match rule {
        Json::Object(m) => Json::Object(
            m.iter()
                .filter(|(k, _)| !keys.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn number(v: Option<&Json>) -> Option<f64> {
    v.and_then(Json::as_f64)
}

fn fmt(p: f64) -> String {
    let rounded = (p * 1000.0).round() / 1000.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}")
    } else {
        format!("{rounded}")
    }
}

/// A split's bucket ranges (thousandths of a percent), by variant name, in bucket order.
fn ranges<'f>(flag: &'f Flag, boundaries: &[(u32, usize)]) -> Vec<(&'f str, u32, u32)> {
    let mut start = 0;
    boundaries
        .iter()
        .map(|&(upper, variant)| {
            let r = (&*flag.variant(variant).name, start, upper);
            start = upper;
            r
        })
        .collect()
}

/// An entity keeps its variant iff its bucket stays in that variant's range, so the share that
/// moves is 100 % minus the overlaps of each variant's old and new ranges.
fn split_moved(before: &[(&str, u32, u32)], after: &[(&str, u32, u32)]) -> f64 {
    let kept: u32 = before
        .iter()
        .map(|(k, s, e)| {
            after
                .iter()
                .filter(|(k2, _, _)| k2 == k)
                .map(|(_, s2, e2)| (*e).min(*e2).saturating_sub((*s).max(*s2)))
                .sum::<u32>()
        })
        .sum();
    f64::from(crate::bucket::BUCKETS.saturating_sub(kept)) / 1000.0
}
