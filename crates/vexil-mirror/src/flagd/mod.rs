//! Flags as flagd definitions (shared reference flagd-sync.md), for OpenFeature's flagd
//! providers in in-process mode, which read them from `flagd.sync.v1.FlagSyncService` and
//! evaluate with flagd's JsonLogic themselves, and for flagd's own file mode.
//!
//! The mapping:
//! - A flag is `state`, `variants` (Vexil's, by name), `defaultVariant` and `targeting`: the
//!   rules in order as nested `if`s, each falling through to the next (`null`, the last
//!   fallthrough, serves the default variant).
//! - Matchers are JsonLogic tests (`logic.rs`); segments are written out where used.
//! - Rollouts and splits are `fractional` over a bucketing value `cat(salt, value)`, with a
//!   split's bucket ranges as weights on a total of 100,000. With `bucketing: flagd` this is
//!   exactly Vexil's bucket (docs/format.md) for flagd's Go evaluator; Node's flagd-core hashes
//!   UTF-16 code units (other shares for non-ASCII values) and Python's flagd-core 2.x hashes
//!   the value's CBOR encoding (fractional v3), so both are inexact there.
//!
//! One export per namespace; findings are per evaluator (`Mirror::Flagd`, `FlagdNode`,
//! `FlagdPython`). Regular expressions, case-insensitive tests and percentages of time have no
//! JsonLogic form: those flags are omitted.

mod logic;

use serde_json::{Map, Value as Json, json};
use vexil_core::bucket::BUCKETS;
use vexil_core::snapshot::{BucketBy, Flag, Gate, Hashing, Namespace, Origin, Outcome, Rule};

use crate::{Fidelity, Finding, Mirror};
use logic::{Gap, Logic, all, present, var};

/// The three flagd evaluators.
const EVALUATORS: [Mirror; 3] = [Mirror::Flagd, Mirror::FlagdNode, Mirror::FlagdPython];

/// One namespace as a flagd flag configuration, and what each evaluator reads otherwise.
#[derive(Debug, Clone)]
pub struct Export {
    /// `{"flags": {"<key>": {...}}}`, the form the providers' schema allows.
    pub definitions: Json,
    pub findings: Vec<Finding>,
}

impl Export {
    /// The definitions as the JSON text `flag_configuration` carries (one line).
    pub fn text(&self) -> String {
        self.definitions.to_string()
    }

    /// The definitions as a flagd flag file (indented, with the schema named).
    pub fn file_text(&self) -> String {
        let mut file = Map::new();
        file.insert(
            "$schema".into(),
            "https://flagd.dev/schema/v0/flags.json".into(),
        );
        if let Some(flags) = self.definitions.get("flags") {
            file.insert("flags".into(), flags.clone());
        }
        let mut text = serde_json::to_string_pretty(&Json::Object(file)).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// A note on a flag: for which evaluators, how, where and why.
struct Note<'a> {
    who: &'static [Mirror],
    origin: &'a Origin,
    reason: String,
}

pub fn export(ns: &Namespace) -> Export {
    let mut flags = Map::new();
    let mut findings = Vec::new();
    for flag in &ns.flags {
        let finding = |mirror, fidelity, origin: &Origin, reason| {
            Finding::new(&ns.name, &flag.key, mirror, fidelity, origin, reason)
        };
        match definition(ns, flag) {
            Ok((json, notes)) => {
                flags.insert(flag.key.to_string(), json);
                for note in notes {
                    for &mirror in note.who {
                        findings.push(finding(
                            mirror,
                            Fidelity::Inexact,
                            note.origin,
                            note.reason.clone(),
                        ));
                    }
                }
            }
            Err((origin, reason)) => {
                for mirror in EVALUATORS {
                    findings.push(finding(mirror, Fidelity::Omitted, origin, reason.clone()));
                }
            }
        }
    }
    findings.sort();
    Export {
        definitions: json!({ "flags": flags }),
        findings,
    }
}

/// The findings of one evaluator for a namespace.
pub fn findings(ns: &Namespace, mirror: Mirror) -> Vec<Finding> {
    let mut out = export(ns).findings;
    out.retain(|f| f.mirror == mirror);
    out
}

type Definition<'a> = Result<(Json, Vec<Note<'a>>), (&'a Origin, String)>;

fn definition<'a>(ns: &'a Namespace, flag: &'a Flag) -> Definition<'a> {
    let mut notes = Vec::new();
    let mut targeting = Json::Null;
    for rule in flag.rules.iter().rev() {
        targeting = rule_logic(ns, flag, rule, targeting, &mut notes)?;
    }
    let targeting = match targeting {
        Json::Null => json!({}),
        // The schema wants an object: a bare variant name becomes an `if` that always holds.
        Json::String(name) => json!({ "if": [true, name, null] }),
        other => other,
    };
    let variants: Map<String, Json> = flag
        .variants
        .iter()
        .map(|v| (v.name.to_string(), v.value.to_json()))
        .collect();
    let metadata: Map<String, Json> = flag
        .metadata
        .iter()
        .filter(|(_, v)| v.is_string() || v.is_number() || v.is_boolean())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut out = Map::new();
    out.insert(
        "state".into(),
        if flag.enabled { "ENABLED" } else { "DISABLED" }.into(),
    );
    out.insert("variants".into(), Json::Object(variants));
    out.insert(
        "defaultVariant".into(),
        flag.default_variant().name.to_string().into(),
    );
    out.insert("targeting".into(), targeting);
    if !metadata.is_empty() {
        out.insert("metadata".into(), Json::Object(metadata));
    }
    Ok((Json::Object(out), notes))
}

/// `{"if": [test, then, otherwise]}`, or `then` alone when the test always holds.
fn branch(test: Json, then: Json, otherwise: Json) -> Json {
    if test == Json::Bool(true) {
        then
    } else {
        json!({ "if": [test, then, otherwise] })
    }
}

/// One rule in front of what follows it (`rest`: the later rules, `null` for the default).
fn rule_logic<'a>(
    ns: &'a Namespace,
    flag: &'a Flag,
    rule: &'a Rule,
    rest: Json,
    notes: &mut Vec<Note<'a>>,
) -> Result<Json, (&'a Origin, String)> {
    let mut logic = Logic {
        ns,
        caveats: Vec::new(),
    };
    let mut tests = Vec::with_capacity(rule.matchers.len() + 2);
    for m in &rule.matchers {
        let test = logic
            .matcher(m)
            .map_err(|Gap::Omit(why)| (&rule.origin, format!("rule `{}` {why}", rule.name)))?;
        tests.push(test);
    }
    let mut caveats = logic.caveats;
    caveats.sort();
    caveats.dedup();
    for caveat in caveats {
        notes.push(Note {
            who: &EVALUATORS,
            origin: &rule.origin,
            reason: format!("rule `{}` {caveat}", rule.name),
        });
    }
    let name = |variant: usize| Json::String(flag.variant(variant).name.to_string());
    Ok(match &rule.outcome {
        Outcome::Serve { variant, gate } => match gate {
            Gate::Always => branch(all(tests), name(*variant), rest),
            Gate::Rollout { threshold: 0, .. } | Gate::PercentageOfTime { threshold: 0 } => rest,
            Gate::PercentageOfTime { threshold } if *threshold >= BUCKETS => {
                branch(all(tests), name(*variant), rest)
            }
            Gate::PercentageOfTime { threshold } => {
                return Err((
                    &rule.origin,
                    format!(
                        "rule `{}` serves `{}` to {} % of calls at random, which flagd's JsonLogic cannot (no random operator)",
                        rule.name,
                        flag.variant(*variant).name,
                        crate::percent_text(*threshold)
                    ),
                ));
            }
            Gate::Rollout { threshold, bucket } => {
                bucket_attr_note(rule, bucket, notes);
                tests.push(present(bucket_var(bucket)));
                if *threshold < BUCKETS {
                    bucket_notes(rule, bucket, "rollout", notes);
                    let pick =
                        fractional(bucket, [("in", *threshold), ("out", BUCKETS - threshold)]);
                    tests.push(json!({ "==": [pick, "in"] }));
                }
                branch(all(tests), name(*variant), rest)
            }
        },
        Outcome::Split { boundaries, bucket } => {
            bucket_attr_note(rule, bucket, notes);
            tests.push(present(bucket_var(bucket)));
            let mut lower = 0;
            let mut shares = Vec::with_capacity(boundaries.len());
            for &(upper, variant) in boundaries {
                if upper > lower {
                    shares.push((&*flag.variant(variant).name, upper - lower));
                }
                lower = upper;
            }
            let pick = match shares.as_slice() {
                [(only, _)] => Json::String((*only).to_owned()),
                _ => {
                    bucket_notes(rule, bucket, "split", notes);
                    fractional(bucket, shares)
                }
            };
            branch(all(tests), pick, rest)
        }
    })
}

fn bucket_var(bucket: &BucketBy) -> Json {
    match &bucket.attr {
        Some(attr) => var(attr),
        None => json!({ "var": "targetingKey" }),
    }
}

/// `fractional` over `cat(salt, value)` with integer weights (in buckets of 100,000).
fn fractional<'n>(bucket: &BucketBy, shares: impl IntoIterator<Item = (&'n str, u32)>) -> Json {
    let mut args = vec![json!({ "cat": [&*bucket.salt, bucket_var(bucket)] })];
    args.extend(
        shares
            .into_iter()
            .map(|(name, weight)| json!([name, weight])),
    );
    json!({ "fractional": args })
}

/// A bucketing attribute with a dot, or one that may hold a number (written as text by each
/// language in its own way).
fn bucket_attr_note<'a>(rule: &'a Rule, bucket: &BucketBy, notes: &mut Vec<Note<'a>>) {
    let Some(attr) = bucket.attr.as_ref().filter(|a| !a.is_targeting_key) else {
        return;
    };
    let mut reason = format!(
        "rule `{}` buckets by `{}`, whose numbers the providers' `cat` writes as text differently (`1e21`, `0.1` sums): for unusual inputs only",
        rule.name, attr.full
    );
    if let Some(dotted) = logic::dotted(attr) {
        reason = format!("rule `{}` {dotted}", rule.name);
    }
    notes.push(Note {
        who: &EVALUATORS,
        origin: &rule.origin,
        reason,
    });
}

/// What each evaluator's `fractional` does with this rule's bucketing.
fn bucket_notes<'a>(rule: &'a Rule, bucket: &BucketBy, what: &str, notes: &mut Vec<Note<'a>>) {
    let mut note = |who: &'static [Mirror], reason: String| {
        notes.push(Note {
            who,
            origin: &rule.origin,
            reason,
        });
    };
    let rule_name = &rule.name;
    if bucket.hashing != Hashing::Flagd {
        let how = match bucket.hashing {
            Hashing::Unleash => "Unleash's murmur3 (`bucketing: unleash`)",
            _ => "crc32 (Vexil's default)",
        };
        note(
            &EVALUATORS,
            format!(
                "rule `{rule_name}` buckets its {what} with {how}, but flagd's `fractional` hashes otherwise, so other entities fall in each share: add `bucketing: flagd` to agree exactly (flagd, and flagd-node for ASCII values)"
            ),
        );
        return;
    }
    if bucket.salt.is_ascii() {
        note(
            &[Mirror::FlagdNode],
            format!(
                "rule `{rule_name}` buckets its {what} with murmur3, which Node's flagd-core applies to UTF-16 code units, not UTF-8 bytes: other shares for non-ASCII values, for unusual inputs only"
            ),
        );
    } else {
        note(
            &[Mirror::FlagdNode],
            format!(
                "rule `{rule_name}` salts its {what} with non-ASCII `{}`, and Node's flagd-core hashes UTF-16 code units, not UTF-8 bytes: other shares for every value",
                bucket.salt
            ),
        );
    }
    note(
        &[Mirror::FlagdPython],
        format!(
            "rule `{rule_name}` buckets its {what} with `fractional` v2, but Python's flagd-core 2.x hashes the CBOR encoding of the value (v3), so other entities fall in each share"
        ),
    );
}

#[cfg(test)]
mod tests;
