//! Flags as the Unleash client API serves them (`GET /api/client/features`), for SDKs that
//! evaluate the definitions themselves.
//!
//! The mapping:
//! - A rule's matchers become constraints in disjunctive normal form: one strategy per
//!   conjunction (Unleash ORs strategies and ANDs the constraints of one). A segment that is a
//!   single conjunction becomes an Unleash segment; others are written out.
//! - A boolean flag is `is_enabled`: off by default, each rule that can serve true is one or
//!   more strategies (`default`, or `flexibleRollout` for rollouts and percentages of time). A
//!   rule serving false before one serving true, or a default of true with rules serving false,
//!   cannot be said (strategies only switch a flag on).
//! - Any other flag is `get_variant`: each rule, in order, is a strategy with strategy variants
//!   (the first matching strategy decides), then a catch-all strategy serving the default.
//! - The targeting key is `userId`; every other attribute is a context field of the same name.
//! - Rollouts and splits agree exactly only with `bucketing: unleash`; crc32 ones are exported
//!   as inexact.

use std::collections::BTreeSet;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value as Json, json};

use super::{Fidelity, Finding, Mirror, is_on};
use crate::snapshot::{
    AttrPath, BucketBy, Cmp, Condition, Flag, FlagType, Gate, Hashing, Matcher, Mode, Namespace,
    Op, Origin, Outcome, Rule, Value,
};

/// The capabilities of the clients an export is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// SDKs that send `Unleash-Client-Spec` (Unleash's engine, yggdrasil).
    Modern,
    /// SDKs that send none (ruby-unleash 3.2.5): `IN` and `NOT_IN` only, no strategy variants.
    Legacy,
}

impl Profile {
    pub fn mirror(self) -> Mirror {
        match self {
            Profile::Modern => Mirror::Unleash,
            Profile::Legacy => Mirror::UnleashLegacy,
        }
    }
}

/// The most strategies one flag may need before it is left out (disjunctive normal forms can
/// grow as a product).
const MAX_STRATEGIES: usize = 64;

/// An Unleash constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub context_name: String,
    pub operator: &'static str,
    /// `values` for list operators, else the single `value`.
    pub values: Vec<String>,
    pub single: bool,
    pub case_insensitive: bool,
    pub inverted: bool,
}

impl Constraint {
    fn list(context_name: &str, operator: &'static str, values: Vec<String>) -> Constraint {
        Constraint {
            context_name: context_name.to_owned(),
            operator,
            values,
            single: false,
            case_insensitive: false,
            inverted: false,
        }
    }

    fn single(context_name: &str, operator: &'static str, value: String) -> Constraint {
        Constraint {
            single: true,
            ..Constraint::list(context_name, operator, vec![value])
        }
    }

    fn case_insensitive(self, yes: bool) -> Constraint {
        Constraint {
            case_insensitive: yes,
            ..self
        }
    }

    fn inverted(self, yes: bool) -> Constraint {
        Constraint {
            inverted: yes,
            ..self
        }
    }

    pub fn to_json(&self) -> Json {
        serde_json::to_value(self).unwrap_or(Json::Null)
    }
}

impl Serialize for Constraint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(6))?;
        m.serialize_entry("contextName", &self.context_name)?;
        m.serialize_entry("operator", self.operator)?;
        if self.single {
            m.serialize_entry("value", self.values.first().map_or("", String::as_str))?;
            m.serialize_entry("values", &[] as &[String])?;
        } else {
            m.serialize_entry("values", &self.values)?;
        }
        m.serialize_entry("caseInsensitive", &self.case_insensitive)?;
        m.serialize_entry("inverted", &self.inverted)?;
        m.end()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Atom {
    Constraint(Constraint),
    /// An index into the namespace's segments, exported as an Unleash segment.
    Segment(usize),
}

/// Atoms that must all hold.
type Conj = Vec<Atom>;

#[derive(Debug, Clone, PartialEq)]
pub struct Strategy {
    name: &'static str,
    parameters: Vec<(&'static str, String)>,
    atoms: Conj,
    variants: Vec<Json>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    pub name: Box<str>,
    /// The flag's tags, for `tag=` filters.
    pub tags: Vec<String>,
    description: Option<String>,
    enabled: bool,
    strategies: Vec<Strategy>,
    /// Feature variants (the legacy profile's only kind).
    variants: Vec<Json>,
}

/// A namespace's flags for one client profile (flag order), the segments they reference and
/// what could not be said exactly.
#[derive(Debug, Clone, Default)]
pub struct Export {
    pub features: Vec<Feature>,
    /// Per namespace segment (by index): its constraints, if it is exported as an Unleash segment.
    segments: Vec<Option<Vec<Constraint>>>,
    /// Segment keys, by index.
    names: Vec<Box<str>>,
    pub findings: Vec<Finding>,
}

/// How segments are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Segments {
    /// Top-level `segments` and ids in strategies (clients with spec >= 4.2.0).
    Separate,
    /// Each segment's constraints written into every strategy that uses it.
    Inline,
}

impl Export {
    /// The whole `GET /client/features` body for these features.
    pub fn body<'a>(
        &self,
        features: impl IntoIterator<Item = &'a Feature>,
        mode: Segments,
    ) -> Json {
        let features: Vec<&Feature> = features.into_iter().collect();
        let mut out = self.envelope(features.iter().copied(), mode);
        if let Some(slot) = out.get_mut("features") {
            *slot = features
                .iter()
                .map(|f| self.feature_json(f, mode))
                .collect::<Vec<_>>()
                .into();
        }
        out
    }

    /// The body around these features: `version`, an empty `features` array, the segments
    /// they use (when sent separately) and `query`. Servers join pre-serialised features
    /// into it.
    pub fn envelope<'a>(
        &self,
        features: impl IntoIterator<Item = &'a Feature>,
        mode: Segments,
    ) -> Json {
        let mut out = Map::new();
        out.insert("version".into(), 2.into());
        out.insert("features".into(), Json::Array(Vec::new()));
        if mode == Segments::Separate {
            let used: BTreeSet<usize> = features
                .into_iter()
                .flat_map(|f| &f.strategies)
                .flat_map(|s| &s.atoms)
                .filter_map(|a| match a {
                    Atom::Segment(i) => Some(*i),
                    Atom::Constraint(_) => None,
                })
                .collect();
            let segments: Vec<Json> = used
                .into_iter()
                .filter_map(|i| {
                    let constraints = self.segments.get(i)?.as_ref()?;
                    Some(json!({
                        "id": i + 1,
                        "name": self.names.get(i).map_or("", |n| &**n),
                        "constraints": constraints.iter().map(Constraint::to_json).collect::<Vec<_>>(),
                    }))
                })
                .collect();
            out.insert("segments".into(), segments.into());
        }
        out.insert(
            "query".into(),
            json!({ "inlineSegmentConstraints": mode == Segments::Inline }),
        );
        Json::Object(out)
    }

    /// One feature object.
    pub fn feature_json(&self, feature: &Feature, mode: Segments) -> Json {
        serde_json::to_value(FeatureView {
            export: self,
            feature,
            mode,
        })
        .unwrap_or(Json::Null)
    }

    /// One feature object, serialised straight into `out` (no intermediate tree: servers
    /// serialise every feature of a snapshot at swap time).
    pub fn write_feature(&self, feature: &Feature, mode: Segments, out: &mut Vec<u8>) {
        let view = FeatureView {
            export: self,
            feature,
            mode,
        };
        // Writing to a Vec cannot fail, and every key is a string.
        let _ = serde_json::to_writer(out, &view);
    }
}

struct FeatureView<'a> {
    export: &'a Export,
    feature: &'a Feature,
    mode: Segments,
}

impl Serialize for FeatureView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let f = self.feature;
        let mut m = s.serialize_map(Some(10))?;
        m.serialize_entry("name", &*f.name)?;
        m.serialize_entry("type", "release")?;
        m.serialize_entry("description", &f.description)?;
        m.serialize_entry("enabled", &f.enabled)?;
        m.serialize_entry("stale", &false)?;
        m.serialize_entry("impressionData", &false)?;
        m.serialize_entry("project", "default")?;
        let strategies: Vec<StrategyView<'_>> = f
            .strategies
            .iter()
            .map(|strategy| StrategyView {
                export: self.export,
                strategy,
                mode: self.mode,
            })
            .collect();
        m.serialize_entry("strategies", &strategies)?;
        m.serialize_entry("variants", &f.variants)?;
        m.serialize_entry("dependencies", &[] as &[Json])?;
        m.end()
    }
}

struct StrategyView<'a> {
    export: &'a Export,
    strategy: &'a Strategy,
    mode: Segments,
}

impl Serialize for StrategyView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let strategy = self.strategy;
        let mut constraints: Vec<&Constraint> = Vec::new();
        let mut segment_ids: Vec<usize> = Vec::new();
        for atom in &strategy.atoms {
            match atom {
                Atom::Constraint(c) => constraints.push(c),
                Atom::Segment(i) => match self.mode {
                    Segments::Separate => segment_ids.push(i + 1),
                    Segments::Inline => constraints.extend(
                        self.export
                            .segments
                            .get(*i)
                            .and_then(Option::as_ref)
                            .into_iter()
                            .flatten(),
                    ),
                },
            }
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", strategy.name)?;
        m.serialize_entry("constraints", &constraints)?;
        m.serialize_entry("parameters", &Parameters(&strategy.parameters))?;
        if self.mode == Segments::Separate {
            m.serialize_entry("segments", &segment_ids)?;
        }
        m.serialize_entry("variants", &strategy.variants)?;
        m.end()
    }
}

/// Strategy parameters: a JSON object of strings.
struct Parameters<'a>(&'a [(&'static str, String)]);

impl Serialize for Parameters<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

pub fn export(ns: &Namespace, profile: Profile) -> Export {
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
            segments: &out.segments,
            notes: Vec::new(),
        };
        let finding = |fidelity, (origin, reason): (&Origin, String)| {
            Finding::new(
                &ns.name,
                &flag.key,
                profile.mirror(),
                fidelity,
                origin,
                reason,
            )
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

    /// Times: Vexil also reads a date alone (midnight UTC) or a time without seconds, which
    /// Unleash's engine reads as no time at all.
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
            for kind in kinds {
                let why = match kind {
                    Edge::Time => {
                        "compares times: Vexil also reads a date alone (2026-01-01, midnight UTC), which Unleash's engine reads as no time"
                    }
                    Edge::Number => {
                        "compares numbers, which Unleash's engine reads differently for unusual inputs only (surrounding spaces, inf or NaN, beyond 64-bit floats, differences below 2.2e-16)"
                    }
                    Edge::Version => {
                        "compares versions, which Unleash's engine reads differently for unusual inputs only (build metadata counts there, surrounding spaces)"
                    }
                };
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
                if let Some(rule) = flag.rules.iter().find(|r| super::can_serve(flag, r, false)) {
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
            if super::can_serve(flag, rule, true) {
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
            if super::can_serve(flag, rule, false) {
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
                    super::percent_text(threshold)
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
        if bucket.hashing != Hashing::Unleash {
            self.notes.push((
                &rule.origin,
                format!(
                    "rule `{}` buckets its {what} with crc32 (Vexil's default), but Unleash clients hash with murmur3, so other entities fall in each share: add `bucketing: unleash` to agree exactly",
                    rule.name
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
                vec![vec![Atom::Constraint(Constraint::list(
                    "userId", "IN", ids,
                ))]]
            }
            Matcher::Groups(groups) => {
                legacy_field("groups", self.profile)?;
                let groups = groups.iter().map(ToString::to_string).collect();
                vec![vec![Atom::Constraint(Constraint::list(
                    "groups", "IN", groups,
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

fn too_many() -> String {
    format!("needs more than {MAX_STRATEGIES} Unleash strategies")
}

/// The conjunction of two formulas in disjunctive normal form (`None` if too large).
fn and<T: Clone>(a: &[Vec<T>], b: &[Vec<T>]) -> Option<Vec<Vec<T>>> {
    if a.len().saturating_mul(b.len()) > MAX_STRATEGIES {
        return None;
    }
    Some(
        a.iter()
            .flat_map(|x| {
                b.iter().map(move |y| {
                    let mut conj = x.clone();
                    conj.extend(y.iter().cloned());
                    conj
                })
            })
            .collect(),
    )
}

fn combine<T: Clone>(mode: Mode, parts: Vec<Vec<Vec<T>>>) -> Option<Vec<Vec<T>>> {
    match mode {
        Mode::Any => {
            let all: Vec<Vec<T>> = parts.into_iter().flatten().collect();
            (all.len() <= MAX_STRATEGIES).then_some(all)
        }
        Mode::All => parts
            .iter()
            .try_fold(vec![Vec::new()], |acc, part| and(&acc, part)),
    }
}

/// A segment: its ids, or any of its condition groups.
fn segment_dnf(
    segment: &crate::snapshot::Segment,
    profile: Profile,
) -> Result<Vec<Vec<Constraint>>, String> {
    let mut out = Vec::new();
    if !segment.ids.is_empty() {
        let mut ids: Vec<String> = segment.ids.iter().map(ToString::to_string).collect();
        ids.sort_unstable();
        out.push(vec![Constraint::list("userId", "IN", ids)]);
    }
    for (mode, conditions) in &segment.groups {
        out.extend(conditions_dnf(*mode, conditions, profile)?);
    }
    if out.len() > MAX_STRATEGIES {
        return Err(too_many());
    }
    Ok(out)
}

fn conditions_dnf<T: From<Constraint> + Clone>(
    mode: Mode,
    conditions: &[Condition],
    profile: Profile,
) -> Result<Vec<Vec<T>>, String> {
    let parts = conditions
        .iter()
        .map(|c| {
            condition_dnf(c, profile).map(|dnf| {
                dnf.into_iter()
                    .map(|conj| conj.into_iter().map(T::from).collect())
                    .collect()
            })
        })
        .collect::<Result<Vec<Vec<Vec<T>>>, String>>()?;
    combine(mode, parts).ok_or_else(too_many)
}

impl From<Constraint> for Atom {
    fn from(c: Constraint) -> Atom {
        Atom::Constraint(c)
    }
}

/// The context fields ruby-unleash 3.2.5 can read without raising: it snake-cases a
/// constraint's field name and fetches any other field from `properties` with no default,
/// so a context without that property makes `is_enabled?` raise.
const LEGACY_FIELDS: [&str; 3] = ["userId", "sessionId", "remoteAddress"];

fn legacy_field(name: &str, profile: Profile) -> Result<(), String> {
    if profile == Profile::Legacy && !LEGACY_FIELDS.contains(&name) {
        return Err(format!(
            "reads `{name}`, and clients without Unleash-Client-Spec (ruby-unleash 3.2.5) raise on a context without that property (only userId, sessionId and remoteAddress are safe)"
        ));
    }
    Ok(())
}

/// The context field an attribute is read from.
fn context_name(attr: &AttrPath) -> &str {
    if attr.is_targeting_key {
        "userId"
    } else {
        &attr.full
    }
}

/// One condition in disjunctive normal form (an `in` list with numbers is a disjunction).
fn condition_dnf(c: &Condition, profile: Profile) -> Result<Vec<Vec<Constraint>>, String> {
    let name = context_name(&c.attr);
    legacy_field(name, profile)?;
    let modern = |operator: &'static str| -> Result<(), String> {
        if profile == Profile::Legacy {
            Err(format!(
                "has a condition `{}` on `{}` that needs {operator}, and clients without Unleash-Client-Spec (ruby-unleash 3.2.5) know only IN and NOT_IN",
                c.op_name, c.attr.full
            ))
        } else {
            Ok(())
        }
    };
    let text = |c: &Condition| {
        c.operand
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| c.operand.to_string())
    };
    match &c.op {
        Op::Equals { negate, .. } | Op::In { negate, .. } => {
            let items: Vec<&Json> = match &c.operand {
                Json::Array(items) => items.iter().collect(),
                one => vec![one],
            };
            let is_equals = matches!(c.op, Op::Equals { .. });
            equality(name, &items, c.ignore_case, *negate, is_equals, profile)
        }
        Op::StartsWith(_) => list_op(c, name, "STR_STARTS_WITH", profile),
        Op::EndsWith(_) => list_op(c, name, "STR_ENDS_WITH", profile),
        Op::Contains(_) => list_op(c, name, "STR_CONTAINS", profile),
        Op::Matches(_) => {
            modern("REGEX")?;
            Ok(vec![vec![
                Constraint::single(name, "REGEX", text(c)).case_insensitive(c.ignore_case),
            ]])
        }
        Op::Number(cmp, n) => single_value(
            c,
            name,
            profile,
            number_text(*n),
            match cmp {
                Cmp::Eq => "NUM_EQ",
                Cmp::Lt => "NUM_LT",
                Cmp::Lte => "NUM_LTE",
                Cmp::Gt => "NUM_GT",
                Cmp::Gte => "NUM_GTE",
            },
        ),
        Op::Semver(cmp, v) => single_value(
            c,
            name,
            profile,
            v.to_string(),
            match cmp {
                Cmp::Eq => "SEMVER_EQ",
                Cmp::Lt => "SEMVER_LT",
                Cmp::Lte => "SEMVER_LTE",
                Cmp::Gt => "SEMVER_GT",
                Cmp::Gte => "SEMVER_GTE",
            },
        ),
        Op::Before(_) | Op::After(_) => {
            let operator = if matches!(c.op, Op::Before(_)) {
                "DATE_BEFORE"
            } else {
                "DATE_AFTER"
            };
            let time = unleash_time(&text(c)).ok_or_else(|| {
                format!(
                    "compares `{}` with a time more precise than milliseconds, which Unleash's engine cannot read",
                    c.attr.full
                )
            })?;
            single_value(c, name, profile, time, operator)
        }
        Op::Present(want) => {
            // Every string contains "": present iff the field has a value.
            modern("STR_CONTAINS")?;
            Ok(vec![vec![
                Constraint::list(name, "STR_CONTAINS", vec![String::new()]).inverted(!want),
            ]])
        }
    }
}

fn single_value(
    c: &Condition,
    name: &str,
    profile: Profile,
    value: String,
    operator: &'static str,
) -> Result<Vec<Vec<Constraint>>, String> {
    if profile == Profile::Legacy {
        return Err(format!(
            "has a condition `{}` on `{}` that needs {operator}, and clients without Unleash-Client-Spec (ruby-unleash 3.2.5) know only IN and NOT_IN",
            c.op_name, c.attr.full
        ));
    }
    Ok(vec![vec![Constraint::single(name, operator, value)]])
}

/// Conditions whose Unleash operator reads some inputs differently from Vexil.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Edge {
    Time,
    Number,
    Version,
}

fn edge_kind(c: &Condition) -> Option<Edge> {
    match &c.op {
        Op::Before(_) | Op::After(_) => Some(Edge::Time),
        Op::Number(..) => Some(Edge::Number),
        Op::In { numbers, .. } if !numbers.is_empty() => Some(Edge::Number),
        Op::Equals { value, .. } if value.number.is_some() => Some(Edge::Number),
        Op::Semver(..) => Some(Edge::Version),
        _ => None,
    }
}

/// A time as Unleash's rule grammar reads it: `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
fn unleash_time(text: &str) -> Option<String> {
    let text = text.trim();
    let ts = match text.parse::<jiff::Timestamp>() {
        Ok(ts) => ts,
        Err(_) => text
            .parse::<jiff::civil::Date>()
            .ok()?
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp(),
    };
    let nanos = ts.subsec_nanosecond();
    if nanos % 1_000_000 != 0 {
        return None;
    }
    let base = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    Some(if nanos == 0 {
        format!("{base}Z")
    } else {
        format!("{base}.{:03}Z", nanos / 1_000_000)
    })
}

fn list_op(
    c: &Condition,
    name: &str,
    operator: &'static str,
    profile: Profile,
) -> Result<Vec<Vec<Constraint>>, String> {
    if profile == Profile::Legacy {
        return Err(format!(
            "has a condition `{}` on `{}` that needs {operator}, and clients without Unleash-Client-Spec (ruby-unleash 3.2.5) know only IN and NOT_IN",
            c.op_name, c.attr.full
        ));
    }
    let value = c.operand.as_str().unwrap_or_default().to_owned();
    Ok(vec![vec![
        Constraint::list(name, operator, vec![value]).case_insensitive(c.ignore_case),
    ]])
}

/// `equals`/`in` (or their negations): text items are `IN`, numbers `NUM_EQ` (Vexil compares
/// numbers numerically), booleans every casing of `true`/`false` (Vexil reads them so).
fn equality(
    name: &str,
    items: &[&Json],
    ignore_case: bool,
    negate: bool,
    is_equals: bool,
    profile: Profile,
) -> Result<Vec<Vec<Constraint>>, String> {
    let mut texts = Vec::new();
    let mut numbers = Vec::new();
    for item in items {
        match item {
            Json::Number(n) => numbers.extend(n.as_f64().map(number_text)),
            // `equals` reads "TRUE" as true; `in` compares the text exactly.
            Json::Bool(b) if is_equals => texts.extend(casings(if *b { "true" } else { "false" })),
            Json::Bool(b) => texts.push(b.to_string()),
            Json::String(s) => {
                if let Some(n) = crate::eval::parse_number(s) {
                    numbers.push(number_text(n));
                } else if is_equals
                    && (s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false"))
                {
                    texts.extend(casings(&s.to_ascii_lowercase()));
                } else {
                    texts.push(s.clone());
                }
            }
            other => texts.push(other.to_string()),
        }
    }
    if !numbers.is_empty() && profile == Profile::Legacy {
        return Err(format!(
            "compares `{name}` with a number, which needs NUM_EQ, and clients without Unleash-Client-Spec (ruby-unleash 3.2.5) know only IN and NOT_IN"
        ));
    }
    if ignore_case && profile == Profile::Legacy && !texts.is_empty() {
        return Err(format!(
            "compares `{name}` ignoring case, which clients without Unleash-Client-Spec (ruby-unleash 3.2.5) cannot"
        ));
    }
    // IN ignores `caseInsensitive` in Unleash's engine; an anchored regular expression does not.
    let text_constraint = |operator| {
        if ignore_case {
            let alternatives: Vec<String> = texts.iter().map(|t| regex::escape(t)).collect();
            Constraint::single(name, "REGEX", format!("^(?:{})$", alternatives.join("|")))
                .case_insensitive(true)
                .inverted(operator == "NOT_IN")
        } else {
            Constraint::list(name, operator, texts.clone())
        }
    };
    let number_constraints = numbers
        .iter()
        .map(|n| Constraint::single(name, "NUM_EQ", n.clone()).inverted(negate));
    Ok(if negate {
        // Not any of them: one conjunction.
        let mut conj = Vec::new();
        if !texts.is_empty() {
            conj.push(text_constraint("NOT_IN"));
        }
        conj.extend(number_constraints);
        vec![conj]
    } else {
        let mut dnf = Vec::new();
        if !texts.is_empty() {
            dnf.push(vec![text_constraint("IN")]);
        }
        dnf.extend(number_constraints.map(|c| vec![c]));
        dnf
    })
}

/// A number as Unleash's rule grammar reads it (`[+-]?digits(.digits)?(e..)?`: no ".5").
fn number_text(n: f64) -> String {
    format!("{n}")
}

/// Every upper/lower casing of an ASCII word ("true" has 16).
fn casings(word: &str) -> Vec<String> {
    let chars: Vec<char> = word.chars().collect();
    let n = chars.len().min(8);
    (0..1u32 << n)
        .map(|mask| {
            chars
                .iter()
                .enumerate()
                .map(|(i, ch)| {
                    if i < n && mask & (1 << i) != 0 {
                        ch.to_ascii_uppercase()
                    } else {
                        *ch
                    }
                })
                .collect()
        })
        .collect()
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
