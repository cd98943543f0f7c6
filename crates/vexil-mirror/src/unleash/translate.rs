//! The translation of a namespace's flags into Unleash features and strategies.

use std::collections::BTreeSet;

use serde_json::{Value as Json, json};
use vexil_core::snapshot::{
    BucketBy, Condition, Flag, FlagType, Gate, Hashing, Matcher, Namespace, Origin, Outcome, Rule,
    Value,
};

use super::constraints::{Edge, context_name, edge_kind, in_list, legacy_field};
use super::dnf::{and, combine, conditions_dnf, segment_dnf, too_many};
use super::wire::{Atom, Conj, Constraint, Export, Feature, Strategy};
use super::{MAX_STRATEGIES, Profile};
use crate::{Fidelity, Finding, Mirror, is_on};

pub fn export(ns: &Namespace, profile: Profile) -> Export {
    export_for(ns, profile, Engine::Yggdrasil)
}

/// What Node `unleash-client` 6.x (its own engine, not yggdrasil) gets wrong in the modern
/// body, which it reads like every SDK that sends `Unleash-Client-Spec`.
pub fn node_findings(ns: &Namespace) -> Vec<Finding> {
    export_for(ns, Profile::Modern, Engine::Node).findings
}

/// The engine whose reading of the body the findings are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Yggdrasil,
    Node,
}

fn export_for(ns: &Namespace, profile: Profile, engine: Engine) -> Export {
    let mirror = match engine {
        Engine::Node => Mirror::UnleashNode,
        Engine::Yggdrasil => profile.mirror(),
    };
    let mut out = Export {
        segments: ns
            .segments
            .iter()
            .map(|s| match segment_dnf(s, profile) {
                Ok(dnf) if dnf.len() == 1 => dnf.into_iter().next(),
                _ => None,
            })
            .collect(),
        names: ns.segments.iter().map(|s| s.key.clone()).collect(),
        ..Export::default()
    };
    for flag in &ns.flags {
        let mut cx = Cx {
            ns,
            flag,
            profile,
            engine,
            segments: &out.segments,
            notes: Vec::new(),
        };
        let finding = |fidelity, (origin, reason): (&Origin, String)| {
            Finding::new(&ns.name, &flag.key, mirror, fidelity, origin, reason)
        };
        match cx.feature() {
            Ok(f) => {
                let notes = std::mem::take(&mut cx.notes);
                out.features.push(f);
                out.findings
                    .extend(notes.into_iter().map(|n| finding(Fidelity::Inexact, n)));
            }
            Err(why) => out.findings.push(finding(Fidelity::Omitted, why)),
        }
    }
    out
}

type Note<'a> = (&'a Origin, String);

struct Cx<'a> {
    ns: &'a Namespace,
    flag: &'a Flag,
    profile: Profile,
    engine: Engine,
    segments: &'a [Option<Vec<Constraint>>],
    notes: Vec<Note<'a>>,
}

impl<'a> Cx<'a> {
    fn feature(&mut self) -> Result<Feature, Note<'a>> {
        let flag = self.flag;
        let mut feature = Feature {
            name: flag.key.clone(),
            tags: flag.tags.clone(),
            description: flag.description.clone(),
            enabled: true,
            strategies: Vec::new(),
            variants: Vec::new(),
        };
        if flag.flag_type == FlagType::Boolean {
            self.boolean(&mut feature)?;
        } else {
            self.variants(&mut feature)?;
        }
        if self.profile == Profile::Modern {
            // Both engines: yggdrasil's rule text and, for Node, the same body.
            self.check_quoting(&feature)?;
            self.note_conditions();
        }
        if feature.strategies.len() > MAX_STRATEGIES {
            return Err((
                &flag.origin,
                format!(
                    "its rules need {} Unleash strategies (more than {MAX_STRATEGIES})",
                    feature.strategies.len()
                ),
            ));
        }
        Ok(feature)
    }

    /// Unleash's engine pastes names and values into a rule text and escapes only the quotes
    /// of values: a quote or backslash in a name or parameter, or a value ending in a
    /// backslash (or holding `\"`), breaks the whole flag (it is then off for everyone).
    fn check_quoting(&self, feature: &Feature) -> Result<(), Note<'a>> {
        let bad_name = |s: &str| s.contains(['"', '\\']);
        let bad_value = |s: &str| s.ends_with('\\') || s.contains("\\\"");
        for strategy in &feature.strategies {
            let constraints = strategy.atoms.iter().flat_map(|a| match a {
                Atom::Constraint(c) => std::slice::from_ref(c).iter(),
                Atom::Segment(i) => self
                    .segments
                    .get(*i)
                    .and_then(Option::as_ref)
                    .map_or([].iter(), |cs| cs.iter()),
            });
            let mut names: Vec<&str> = strategy
                .parameters
                .iter()
                .map(|(_, v)| v.as_str())
                .collect();
            let mut values: Vec<&str> = Vec::new();
            for c in constraints {
                names.push(&c.context_name);
                values.extend(c.values.iter().map(String::as_str));
            }
            let bad = names
                .into_iter()
                .find(|t| bad_name(t))
                .or_else(|| values.into_iter().find(|t| bad_value(t)));
            if let Some(t) = bad {
                return Err((
                    &self.flag.origin,
                    format!(
                        "`{t}` holds a quote or backslash where Unleash's engine cannot read one"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Conditions the engine reads differently from Vexil for some inputs. Yggdrasil: Vexil
    /// also reads a date alone (midnight UTC) or a time without seconds, which it reads as no
    /// time at all. Node: see docs/mirrors.md ("Unleash: engines").
    fn note_conditions(&mut self) {
        for rule in &self.flag.rules {
            let mut kinds = BTreeSet::new();
            let mut visit = |cs: &[Condition]| kinds.extend(cs.iter().filter_map(edge_kind));
            for m in &rule.matchers {
                match m {
                    Matcher::Conditions(_, cs) => visit(cs),
                    Matcher::Segments(_, indices) => {
                        for s in indices.iter().filter_map(|&i| self.ns.segment(i)) {
                            s.groups.iter().for_each(|(_, cs)| visit(cs));
                        }
                    }
                    Matcher::Ids(_) | Matcher::Groups(_) => {}
                }
            }
            let mut reasons = BTreeSet::new();
            for kind in kinds {
                reasons.extend(match self.engine {
                    Engine::Yggdrasil => yggdrasil_reason(&kind),
                    Engine::Node => Some(node_reason(&kind)),
                });
            }
            for why in reasons {
                self.notes
                    .push((&rule.origin, format!("rule `{}` {why}", rule.name)));
            }
        }
    }

    /// A boolean flag: strategies switch it on; nothing can switch it off again.
    fn boolean(&mut self, feature: &mut Feature) -> Result<(), Note<'a>> {
        let flag = self.flag;
        let default_on = is_on(flag, flag.default);
        if !flag.enabled || flag.rules.is_empty() || default_on {
            if default_on && flag.enabled {
                if let Some(rule) = flag.rules.iter().find(|r| crate::can_serve(flag, r, false)) {
                    return Err((
                        &rule.origin,
                        format!(
                            "the default is true and rule `{}` can serve false, but Unleash strategies can only switch a flag on",
                            rule.name
                        ),
                    ));
                }
            }
            feature.enabled = default_on;
            if default_on {
                feature.strategies.push(plain_strategy(Vec::new()));
            }
            return Ok(());
        }
        let mut blocker: Option<&Rule> = None;
        for rule in &flag.rules {
            if crate::can_serve(flag, rule, true) {
                if let Some(b) = blocker {
                    return Err((
                        &rule.origin,
                        format!(
                            "rule `{}` serves false before rule `{}` serves true, but Unleash strategies can only switch a flag on",
                            b.name, rule.name
                        ),
                    ));
                }
                let dnf = self.rule_dnf(rule)?;
                let template = self.boolean_strategy(rule)?;
                feature
                    .strategies
                    .extend(dnf.into_iter().map(|atoms| Strategy {
                        atoms,
                        ..template.clone()
                    }));
            }
            if crate::can_serve(flag, rule, false) {
                blocker = Some(rule);
            }
        }
        // No strategy at all would mean "on" to Unleash; this flag is off for everyone.
        feature.enabled = !feature.strategies.is_empty();
        Ok(())
    }

    /// The strategy (without constraints) of a boolean rule that can serve true.
    fn boolean_strategy(&mut self, rule: &'a Rule) -> Result<Strategy, Note<'a>> {
        Ok(match &rule.outcome {
            Outcome::Serve { gate, .. } => match gate {
                Gate::Always => plain_strategy(Vec::new()),
                Gate::Rollout { threshold, bucket } => {
                    self.check_bucket(rule, bucket, "rollout");
                    self.rollout(rule, *threshold, bucket, Vec::new())?
                }
                Gate::PercentageOfTime { threshold } => {
                    self.check_random(rule, *threshold);
                    random_strategy(*threshold, &self.flag.key, self.profile)
                }
            },
            Outcome::Split { boundaries, bucket } => {
                let (mut lower, mut on_below, mut seen_off) = (0, 0, false);
                for &(upper, variant) in boundaries {
                    if upper > lower {
                        if !is_on(self.flag, variant) {
                            seen_off = true;
                        } else if seen_off {
                            return Err((
                                &rule.origin,
                                format!(
                                    "rule `{}` splits with `false` before `true`, which no Unleash rollout expresses",
                                    rule.name
                                ),
                            ));
                        } else {
                            on_below = upper;
                        }
                    }
                    lower = upper;
                }
                self.notes.push((
                    &rule.origin,
                    format!(
                        "rule `{}` splits a boolean flag, which Unleash clients see as a rollout hashed differently from a split: write it as `rollout:` with `bucketing: unleash` to agree exactly",
                        rule.name
                    ),
                ));
                self.rollout(rule, on_below, bucket, Vec::new())?
            }
        })
    }

    /// Any other flag: the first matching strategy's variant, then the default for everyone.
    fn variants(&mut self, feature: &mut Feature) -> Result<(), Note<'a>> {
        let flag = self.flag;
        let default = variant_json(flag, flag.default, 1000, "default");
        if self.profile == Profile::Legacy {
            if flag.enabled {
                if let Some(rule) = flag.rules.first() {
                    return Err((
                        &rule.origin,
                        format!(
                            "it serves {} values by rules, and clients without Unleash-Client-Spec (ruby-unleash 3.2.5) know no strategy variants",
                            flag.flag_type.as_str()
                        ),
                    ));
                }
            }
            feature.strategies.push(plain_strategy(Vec::new()));
            feature.variants.push(default);
            return Ok(());
        }
        if flag.enabled {
            for rule in &flag.rules {
                let dnf = self.rule_dnf(rule)?;
                let template = match &rule.outcome {
                    Outcome::Serve { variant, gate } => {
                        let serve = vec![variant_json(flag, *variant, 1000, "default")];
                        match gate {
                            Gate::Always => plain_strategy(serve),
                            Gate::Rollout { threshold, bucket } => {
                                self.check_bucket(rule, bucket, "rollout");
                                self.rollout(rule, *threshold, bucket, serve)?
                            }
                            Gate::PercentageOfTime { threshold } => {
                                self.check_random(rule, *threshold);
                                Strategy {
                                    variants: serve,
                                    ..random_strategy(*threshold, &flag.key, self.profile)
                                }
                            }
                        }
                    }
                    Outcome::Split { boundaries, bucket } => {
                        self.check_bucket(rule, bucket, "split");
                        let stickiness = stickiness(bucket);
                        let mut lower = 0;
                        let mut variants = Vec::new();
                        for &(upper, variant) in boundaries {
                            let weight = (upper - lower.min(upper)) / 100;
                            lower = upper;
                            if weight > 0 {
                                variants.push(variant_json(flag, variant, weight, &stickiness));
                            }
                        }
                        self.rollout(rule, 100_000, bucket, variants)?
                    }
                };
                feature
                    .strategies
                    .extend(dnf.into_iter().map(|atoms| Strategy {
                        atoms,
                        ..template.clone()
                    }));
            }
        }
        feature.strategies.push(plain_strategy(vec![default]));
        Ok(())
    }

    fn rollout(
        &self,
        rule: &'a Rule,
        threshold: u32,
        bucket: &BucketBy,
        variants: Vec<Json>,
    ) -> Result<Strategy, Note<'a>> {
        let stickiness = stickiness(bucket);
        if ["default", "random"].contains(&stickiness.as_str()) {
            return Err((
                &rule.origin,
                format!(
                    "rule `{}` buckets by `{stickiness}`, which Unleash reads as a stickiness keyword, not an attribute",
                    rule.name
                ),
            ));
        }
        // SDKs read whole percentages only ("25.5" is never on); a fractional one only comes
        // with crc32 bucketing, already flagged inexact.
        let rollout = threshold
            .saturating_add(500)
            .div_euclid(1000)
            .min(100)
            .to_string();
        if self.profile == Profile::Legacy {
            // ruby-unleash 3.2.5 reads only these stickiness fields (others: never on) and
            // whole percentages (others: never on).
            if !["userId", "sessionId"].contains(&stickiness.as_str()) {
                return Err((
                    &rule.origin,
                    format!(
                        "rule `{}` buckets by `{stickiness}`, and clients without Unleash-Client-Spec (ruby-unleash 3.2.5) bucket only by userId or sessionId",
                        rule.name
                    ),
                ));
            }
        }
        Ok(Strategy {
            name: "flexibleRollout",
            parameters: vec![
                ("rollout", rollout),
                ("stickiness", stickiness),
                ("groupId", bucket.salt.to_string()),
            ],
            atoms: Vec::new(),
            variants,
        })
    }

    /// Unleash SDKs draw whole percentages of calls.
    fn check_random(&mut self, rule: &'a Rule, threshold: u32) {
        if !threshold.is_multiple_of(1000) {
            self.notes.push((
                &rule.origin,
                format!(
                    "rule `{}` serves {}% of calls, and Unleash SDKs draw whole percentages",
                    rule.name,
                    crate::percent_text(threshold)
                ),
            ));
        }
    }

    fn check_bucket(&mut self, rule: &'a Rule, bucket: &BucketBy, what: &str) {
        // Everyone or no one (a 0 or 100 % rollout, a split with one share) hashes the same.
        let trivial = match &rule.outcome {
            Outcome::Serve {
                gate: Gate::Rollout { threshold, .. },
                ..
            } => *threshold == 0 || *threshold >= 100_000,
            Outcome::Split { boundaries, .. } => {
                let mut lower = 0;
                boundaries
                    .iter()
                    .filter(|&&(upper, _)| {
                        let wide = upper > lower;
                        lower = upper;
                        wide
                    })
                    .count()
                    <= 1
            }
            Outcome::Serve { .. } => false,
        };
        if trivial {
            return;
        }
        if bucket.hashing == Hashing::Unleash && self.engine == Engine::Node {
            self.notes.push((
                &rule.origin,
                format!(
                    concat!("rule `{}` buckets its {} with murmur3, which Node's engine applies to the low byte of each UTF-16 unit: other shares for non-ASCII values, ", unusual_inputs_only!()),
                    rule.name, what
                ),
            ));
        }
        if bucket.hashing != Hashing::Unleash {
            self.notes.push((
                &rule.origin,
                format!(
                    "rule `{}` buckets its {what} with {}, but Unleash clients hash with murmur3, so other entities fall in each share: add `bucketing: unleash` to agree exactly",
                    rule.name,
                    if bucket.hashing == Hashing::Vexil { "crc32 (Vexil's default)" } else { "murmur3 of salt + value (`bucketing: flagd`)" },
                ),
            ));
        }
    }

    /// The rule's matchers in disjunctive normal form.
    fn rule_dnf(&self, rule: &'a Rule) -> Result<Vec<Conj>, Note<'a>> {
        let mut dnf: Vec<Conj> = vec![Vec::new()];
        for matcher in &rule.matchers {
            let part = self
                .matcher_dnf(matcher)
                .map_err(|why| (&rule.origin, format!("rule `{}` {why}", rule.name)))?;
            dnf = and(&dnf, &part).ok_or_else(|| {
                (
                    &rule.origin,
                    format!(
                        "rule `{}` needs more than {MAX_STRATEGIES} Unleash strategies",
                        rule.name
                    ),
                )
            })?;
        }
        Ok(dnf)
    }

    fn matcher_dnf(&self, matcher: &Matcher) -> Result<Vec<Conj>, String> {
        Ok(match matcher {
            Matcher::Ids(ids) => {
                let mut ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                ids.sort_unstable();
                vec![vec![Atom::Constraint(in_list(
                    "userId",
                    ids,
                    false,
                    false,
                    self.profile,
                ))]]
            }
            Matcher::Groups(groups) => {
                legacy_field("groups", self.profile)?;
                let groups = groups.iter().map(ToString::to_string).collect();
                vec![vec![Atom::Constraint(in_list(
                    "groups",
                    groups,
                    false,
                    false,
                    self.profile,
                ))]]
            }
            Matcher::Conditions(mode, conditions) => {
                conditions_dnf(*mode, conditions, self.profile)?
            }
            Matcher::Segments(mode, indices) => {
                let mut parts = Vec::new();
                for &i in indices {
                    let part = if self.segments.get(i).is_some_and(Option::is_some) {
                        vec![vec![Atom::Segment(i)]]
                    } else {
                        let segment = self
                            .ns
                            .segment(i)
                            .ok_or_else(|| "uses a segment missing from the snapshot".to_owned())?;
                        segment_dnf(segment, self.profile)
                            .map_err(|why| format!("uses segment `{}`, which {why}", segment.key))?
                            .into_iter()
                            .map(|c| c.into_iter().map(Atom::Constraint).collect())
                            .collect()
                    };
                    parts.push(part);
                }
                combine(*mode, parts).ok_or_else(too_many)?
            }
        })
    }
}

fn yggdrasil_reason(kind: &Edge) -> Option<String> {
    Some(match kind {
        Edge::Clock | Edge::FieldTime(_) => "compares times: Vexil also reads a date alone (2026-01-01, midnight UTC), which Unleash's engine reads as no time".to_owned(),
        Edge::Number => concat!("compares numbers, which Unleash's engine reads differently ", unusual_inputs_only!(), " (surrounding spaces, inf or NaN, beyond 64-bit floats, differences below 2.2e-16)").to_owned(),
        Edge::Version => concat!("compares versions, which Unleash's engine reads differently ", unusual_inputs_only!(), " (build metadata counts there, surrounding spaces)").to_owned(),
        Edge::Pattern | Edge::PatternSyntax(_) => return None,
    })
}

fn node_reason(kind: &Edge) -> String {
    match kind {
        Edge::Clock => "compares times, which Node's engine reads with JavaScript's Date: the clock when the context has no currentTime (Vexil: no match), local time for a time without zone".to_owned(),
        Edge::FieldTime(field) => format!("compares `{field}` with a time, but Node's engine ignores the field of DATE_AFTER and DATE_BEFORE and compares currentTime (or the clock) instead"),
        Edge::Number => concat!("compares numbers, which Node's engine reads differently ", unusual_inputs_only!(), " (JavaScript's Number(): 0x1E, 0b11, Infinity, an empty or blank value as 0, surrounding spaces)").to_owned(),
        Edge::Version => concat!("compares versions, which Node's engine reads differently ", unusual_inputs_only!(), " (npm semver: a leading `=`, surrounding spaces)").to_owned(),
        Edge::Pattern => concat!("matches a pattern with \\d, \\w, \\s or \\b, which Node's engine (RE2) reads as ASCII classes: differently ", unusual_inputs_only!(), " (non-ASCII digits, letters or spaces)").to_owned(),
        Edge::PatternSyntax(what) => format!("matches a pattern with {what}, which Node's engine (RE2) rejects or reads differently: a pattern RE2 rejects makes the condition false for every input"),
    }
}

fn stickiness(bucket: &BucketBy) -> String {
    match &bucket.attr {
        None => "userId".to_owned(),
        Some(attr) => context_name(attr).to_owned(),
    }
}

fn plain_strategy(variants: Vec<Json>) -> Strategy {
    Strategy {
        name: "default",
        parameters: Vec::new(),
        atoms: Vec::new(),
        variants,
    }
}

/// On for a random share of calls (not sticky).
fn random_strategy(threshold: u32, flag: &str, profile: Profile) -> Strategy {
    if profile == Profile::Legacy {
        // ruby-unleash 3.2.5 has no `random` stickiness; its older strategy does the same.
        return Strategy {
            name: "gradualRolloutRandom",
            parameters: vec![
                (
                    "percentage",
                    threshold
                        .saturating_add(500)
                        .div_euclid(1000)
                        .min(100)
                        .to_string(),
                ),
                ("groupId", flag.to_owned()),
            ],
            atoms: Vec::new(),
            variants: Vec::new(),
        };
    }
    Strategy {
        name: "flexibleRollout",
        parameters: vec![
            (
                "rollout",
                threshold
                    .saturating_add(500)
                    .div_euclid(1000)
                    .min(100)
                    .to_string(),
            ),
            ("stickiness", "random".to_owned()),
            ("groupId", flag.to_owned()),
        ],
        atoms: Vec::new(),
        variants: Vec::new(),
    }
}

fn variant_json(flag: &Flag, index: usize, weight: u32, stickiness: &str) -> Json {
    let variant = flag.variant(index);
    let payload = match &variant.value {
        Value::String(s) => json!({"type": "string", "value": &**s}),
        Value::Integer(i) => json!({"type": "number", "value": i.to_string()}),
        Value::Float(f) => json!({"type": "number", "value": f.to_string()}),
        Value::Object(o) => json!({"type": "json", "value": o.to_string()}),
        Value::Bool(b) => json!({"type": "string", "value": b.to_string()}),
    };
    json!({
        "name": &*variant.name,
        "weight": weight,
        "weightType": "variable",
        "stickiness": stickiness,
        "payload": payload,
        "overrides": [],
    })
}
