//! Boolean flags as Flipper features (the Flipper HTTP API's `GET /features`), in two
//! profiles: `Legacy` for Flipper 0.25 to 1.0 (gates only) and `Expressions` for 1.1+ (the
//! expression gate too, `expression.rs`).
//!
//! A Flipper feature is on for an actor if any gate is open: boolean (everyone), expression
//! (1.1+), actors (by flipper_id), groups (registered in the client), percentage of actors
//! (crc32 of feature name and flipper_id, exactly Vexil's default bucketing) and percentage of
//! time. So with gates alone a flag maps exactly when it is off by default and each rule that
//! can serve true is one gate; a rule that serves false before one that serves true, attribute
//! conditions and non-boolean flags need the expression gate, which carries the whole flag.

use std::collections::BTreeSet;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value as Json;
use vexil_core::snapshot::{
    BucketBy, Flag, FlagType, Gate, Hashing, Matcher, Mode, Namespace, Origin, Outcome, Rule,
};

use super::{Fidelity, Finding, Mirror, can_serve, is_on, percent_text};

mod expression;

/// Which Flipper clients an export is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Flipper 1.1+: the expression gate carries what the other gates cannot.
    Expressions,
    /// Flipper 0.25 to 1.0: gates only (those clients drop the expression gate).
    Legacy,
}

impl Profile {
    pub const ALL: [Profile; 2] = [Profile::Expressions, Profile::Legacy];

    pub fn mirror(self) -> Mirror {
        match self {
            Profile::Expressions => Mirror::Flipper,
            Profile::Legacy => Mirror::FlipperLegacy,
        }
    }
}

/// A feature's gate values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feature {
    pub key: Box<str>,
    pub boolean: bool,
    pub actors: BTreeSet<Box<str>>,
    pub groups: BTreeSet<Box<str>>,
    /// Thousandths of a percent.
    pub percentage_of_actors: u32,
    /// Thousandths of a percent.
    pub percentage_of_time: u32,
    /// A Flipper 1.1+ expression (`{"Any": [...]}`), OR-ed with the other gates.
    pub expression: Option<Json>,
}

/// The shapes of `GET /features` a client may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Form {
    /// Gates with `key`, `name` and `value`.
    Full,
    /// `exclude_gate_names=true` (Flipper 0.27+): gates without `name`.
    NoGateNames,
    /// `exclude_gates=true`: only `key` and `state`.
    NoGates,
}

impl Form {
    pub const ALL: [Form; 3] = [Form::Full, Form::NoGateNames, Form::NoGates];
}

impl Feature {
    fn off(key: &str) -> Feature {
        Feature {
            key: key.into(),
            boolean: false,
            actors: BTreeSet::new(),
            groups: BTreeSet::new(),
            percentage_of_actors: 0,
            percentage_of_time: 0,
            expression: None,
        }
    }

    /// Flipper's `state`: on, conditional or off.
    pub fn state(&self) -> &'static str {
        if self.boolean || self.percentage_of_time >= 100_000 {
            "on"
        } else if self.expression.is_some()
            || !self.actors.is_empty()
            || !self.groups.is_empty()
            || self.percentage_of_actors > 0
            || self.percentage_of_time > 0
        {
            "conditional"
        } else {
            "off"
        }
    }

    /// The feature object of the Flipper API, gates in Flipper's order.
    pub fn to_json(&self, form: Form) -> Json {
        serde_json::to_value(View {
            feature: self,
            form,
        })
        .unwrap_or(Json::Null)
    }

    /// The feature object, serialised straight into `out`.
    pub fn write_json(&self, form: Form, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail, and every key is a string.
        let _ = serde_json::to_writer(
            out,
            &View {
                feature: self,
                form,
            },
        );
    }
}

struct View<'a> {
    feature: &'a Feature,
    form: Form,
}

impl Serialize for View<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let f = self.feature;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("key", &*f.key)?;
        m.serialize_entry("state", f.state())?;
        if self.form != Form::NoGates {
            let percentage = |p: u32| (p > 0).then(|| flipper_percent(p));
            let gates = [
                GateOut(
                    "boolean",
                    "boolean",
                    GateValue::Text(f.boolean.then(|| "true".to_owned())),
                ),
                // Flipper 1.1+; clients before 1.1 skip gates they do not know.
                GateOut(
                    "expression",
                    "expression",
                    GateValue::Json(f.expression.as_ref()),
                ),
                GateOut("actors", "actor", GateValue::Set(&f.actors)),
                GateOut(
                    "percentage_of_actors",
                    "percentage_of_actors",
                    GateValue::Text(percentage(f.percentage_of_actors)),
                ),
                GateOut(
                    "percentage_of_time",
                    "percentage_of_time",
                    GateValue::Text(percentage(f.percentage_of_time)),
                ),
                GateOut("groups", "group", GateValue::Set(&f.groups)),
            ];
            let named = self.form == Form::Full;
            let gates: Vec<GateView<'_>> =
                gates.iter().map(|gate| GateView { gate, named }).collect();
            m.serialize_entry("gates", &gates)?;
        }
        m.end()
    }
}

/// A gate: its key, its name, its value.
struct GateOut<'a>(&'static str, &'static str, GateValue<'a>);

enum GateValue<'a> {
    /// A string, or null.
    Text(Option<String>),
    /// An expression object, or null.
    Json(Option<&'a Json>),
    Set(&'a BTreeSet<Box<str>>),
}

struct GateView<'a> {
    gate: &'a GateOut<'a>,
    named: bool,
}

impl Serialize for GateView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let GateOut(key, name, value) = self.gate;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("key", key)?;
        if self.named {
            m.serialize_entry("name", name)?;
        }
        match value {
            GateValue::Text(t) => m.serialize_entry("value", t)?,
            GateValue::Json(j) => m.serialize_entry("value", j)?,
            GateValue::Set(set) => m.serialize_entry("value", set)?,
        }
        m.end()
    }
}

/// A namespace's flags as Flipper features (flag order), with what could not be said exactly.
#[derive(Debug, Clone, Default)]
pub struct Export {
    pub features: Vec<Feature>,
    pub findings: Vec<Finding>,
}

pub fn export(ns: &Namespace, profile: Profile) -> Export {
    let mut out = Export::default();
    for flag in &ns.flags {
        let mut notes = Vec::new();
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
        let said = match profile {
            Profile::Legacy => feature(ns, flag, &mut notes),
            Profile::Expressions => best(ns, flag, &mut notes),
        };
        match said {
            Ok(f) => {
                out.features.push(f);
                out.findings.extend(
                    notes
                        .into_iter()
                        .map(|note| finding(Fidelity::Inexact, note)),
                );
            }
            Err(why) => out.findings.push(finding(Fidelity::Omitted, why)),
        }
    }
    out
}

type Note<'a> = (&'a Origin, String);

/// For 1.1+ clients: the gates when they say the flag exactly, else the expression gate when
/// it can say the flag, else the gates' inexact export, else the expression's reason.
fn best<'f>(
    ns: &Namespace,
    flag: &'f Flag,
    notes: &mut Vec<Note<'f>>,
) -> Result<Feature, Note<'f>> {
    let mut gate_notes = Vec::new();
    let gates = feature(ns, flag, &mut gate_notes);
    if gates.is_ok() && gate_notes.is_empty() {
        return gates;
    }
    if flag.flag_type != FlagType::Boolean {
        return gates;
    }
    let mut expression_notes = Vec::new();
    match expression::feature(ns, flag, &mut expression_notes) {
        // The expression's doubts (unusual inputs, text times) are smaller than the gates'
        // (another bucketing value).
        Ok(f) => {
            notes.append(&mut expression_notes);
            Ok(f)
        }
        Err(why) => match gates {
            Ok(f) => {
                notes.append(&mut gate_notes);
                Ok(f)
            }
            Err(_) => Err(why),
        },
    }
}

fn feature<'f>(
    ns: &Namespace,
    flag: &'f Flag,
    notes: &mut Vec<Note<'f>>,
) -> Result<Feature, Note<'f>> {
    if flag.flag_type != FlagType::Boolean {
        return Err((
            &flag.origin,
            format!(
                "Flipper features are on or off, and this flag serves {} values",
                flag.flag_type.as_str()
            ),
        ));
    }
    let mut f = Feature::off(&flag.key);
    let default_on = is_on(flag, flag.default);
    if !flag.enabled || flag.rules.is_empty() {
        f.boolean = default_on;
        return Ok(f);
    }
    if default_on {
        if let Some(rule) = flag.rules.iter().find(|r| can_serve(flag, r, false)) {
            return Err((
                &rule.origin,
                format!(
                    "the default is true and rule `{}` can serve false, but Flipper gates can only switch a feature on",
                    rule.name
                ),
            ));
        }
        f.boolean = true;
        return Ok(f);
    }
    let mut blocker: Option<&Rule> = None;
    for rule in &flag.rules {
        if can_serve(flag, rule, true) {
            if let Some(b) = blocker {
                return Err((
                    &rule.origin,
                    format!(
                        "rule `{}` serves false before rule `{}` serves true, but Flipper gates (without the expression gate of 1.1+) can only switch a feature on",
                        b.name, rule.name
                    ),
                ));
            }
            if open_gate(flag, rule, &mut f, ns, notes)? {
                // Everyone is in: later rules never decide anything.
                return Ok(f);
            }
        }
        if can_serve(flag, rule, false) {
            blocker = Some(rule);
        }
    }
    Ok(f)
}

/// Opens the gate that says what `rule` (which can serve true) means; true if the feature is
/// now on for everyone.
fn open_gate<'f>(
    flag: &'f Flag,
    rule: &'f Rule,
    f: &mut Feature,
    ns: &Namespace,
    notes: &mut Vec<Note<'f>>,
) -> Result<bool, Note<'f>> {
    let unsayable = |what: &str| {
        Err((
            &rule.origin,
            format!(
                "rule `{}` {what}, which Flipper gates cannot express",
                rule.name
            ),
        ))
    };
    if !rule.matchers.is_empty() {
        if !matches!(
            rule.outcome,
            Outcome::Serve {
                gate: Gate::Always,
                ..
            }
        ) {
            return unsayable("restricts a percentage to some entities");
        }
        if let [Matcher::Groups(groups)] = rule.matchers.as_slice() {
            f.groups.extend(groups.iter().cloned());
            return Ok(false);
        }
        let Some(ids) = id_set(ns, &rule.matchers) else {
            return unsayable(
                "matches on attribute conditions (only Flipper 1.1+ has the expression gate)",
            );
        };
        f.actors.extend(ids);
        return Ok(false);
    }
    match &rule.outcome {
        Outcome::Serve { gate, .. } => match gate {
            Gate::Always => {
                f.boolean = true;
                return Ok(true);
            }
            Gate::Rollout { threshold, bucket } => {
                check_bucket(flag, rule, bucket, notes);
                f.percentage_of_actors = f.percentage_of_actors.max(*threshold);
            }
            Gate::PercentageOfTime { threshold } => {
                if f.percentage_of_time > 0 {
                    return unsayable(
                        "is a second `percentage_of_time` (Flipper has one such gate)",
                    );
                }
                f.percentage_of_time = *threshold;
            }
        },
        Outcome::Split { boundaries, bucket } => {
            // Only a split that serves true to the lowest buckets is a percentage of actors.
            let (mut lower, mut on_below, mut seen_off) = (0, 0, false);
            for &(upper, variant) in boundaries {
                if upper > lower {
                    if !is_on(flag, variant) {
                        seen_off = true;
                    } else if seen_off {
                        return unsayable("splits with `false` before `true`");
                    } else {
                        on_below = upper;
                    }
                }
                lower = upper;
            }
            check_bucket(flag, rule, bucket, notes);
            f.percentage_of_actors = f.percentage_of_actors.max(on_below);
        }
    }
    Ok(false)
}

/// Notes a rollout that does not bucket as Flipper's percentage of actors does.
fn check_bucket<'f>(flag: &Flag, rule: &'f Rule, bucket: &BucketBy, notes: &mut Vec<Note<'f>>) {
    let why = if bucket.hashing != Hashing::Vexil {
        match bucket.hashing {
            Hashing::Flagd => {
                "hashes as flagd does (`bucketing: flagd`), but Flipper hashes with crc32"
            }
            _ => "hashes as Unleash does (`bucketing: unleash`), but Flipper hashes with crc32",
        }
        .to_owned()
    } else if let Some(attr) = &bucket.attr {
        format!(
            "buckets by `{}`, but Flipper buckets by the actor's flipper_id",
            attr.full
        )
    } else if *bucket.salt != *flag.key {
        format!(
            "salts its buckets with `{}`, but Flipper salts with the feature name",
            bucket.salt
        )
    } else {
        return;
    };
    notes.push((
        &rule.origin,
        format!(
            "rule `{}` {why}, so other actors fall in the percentage",
            rule.name
        ),
    ));
}

/// The targeting keys matching every matcher, if all of them are id lists (rule `ids` or
/// segments made only of ids).
fn id_set(ns: &Namespace, matchers: &[Matcher]) -> Option<BTreeSet<Box<str>>> {
    let mut result: Option<BTreeSet<Box<str>>> = None;
    let mut intersect = |set: BTreeSet<Box<str>>| {
        result = Some(match result.take() {
            None => set,
            Some(r) => r.intersection(&set).cloned().collect(),
        });
    };
    for matcher in matchers {
        match matcher {
            Matcher::Ids(ids) => intersect(ids.iter().cloned().collect()),
            Matcher::Segments(mode, indices) => {
                let mut sets = Vec::new();
                for &i in indices {
                    let segment = ns.segment(i)?;
                    if !segment.groups.is_empty() {
                        return None;
                    }
                    sets.push(segment.ids.iter().cloned().collect::<BTreeSet<_>>());
                }
                match mode {
                    Mode::Any => intersect(sets.into_iter().flatten().collect()),
                    Mode::All => sets.into_iter().for_each(&mut intersect),
                }
            }
            Matcher::Conditions(..) | Matcher::Groups(_) => return None,
        }
    }
    result
}

/// A percentage as Flipper reads it: `bucket < value.to_f * 1_000` (Ruby floats). For 731 of
/// the three-decimal percentages (2.007 among them) that product lands just above the whole
/// threshold and would let in one more bucket than Vexil does; those are sent half a bucket
/// lower ("2.0065"), which selects exactly the same buckets.
pub fn flipper_percent(thousandths: u32) -> String {
    let text = percent_text(thousandths);
    let as_ruby = text.parse::<f64>().unwrap_or(0.0) * 1000.0;
    if as_ruby <= f64::from(thousandths) {
        return text;
    }
    let halves = (thousandths * 10).saturating_sub(5); // ten-thousandths of a percent
    let digits = format!("{:04}", halves % 10_000);
    format!("{}.{}", halves / 10_000, digits.trim_end_matches('0'))
}
