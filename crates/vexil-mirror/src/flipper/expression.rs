//! A boolean flag as one Flipper 1.1+ expression gate (`{"Any": [...]}`), for the flags the
//! other gates cannot say: attribute conditions, segments with conditions, `bucket_by`
//! rollouts, rules that serve false before true.
//!
//! Flipper evaluates the expression per actor over its properties (`flipper_properties`, plus
//! `flipper_id`), Ruby values as they are: no coercion, `nil` for a missing property, and a
//! comparison of a string with a number raises. So every expression written here is total: it
//! compares only values of one known type (`String(p)`, `Number(String(p))`, which never
//! raise) behind a type test (`Equal(String(p), p)` holds for strings only), and it negates
//! with `Equal(x, false)` (Flipper has no `Not`; every function used returns true or false).
//!
//! The correspondence: an actor is the Vexil context whose targeting key is its flipper_id
//! and whose attributes are its properties (strings, numbers, booleans; a property holding an
//! array or a hash is read differently, and `targeting_key` is not a property name).

use serde_json::{Value as Json, json};
use vexil_core::snapshot::{
    AttrPath, BucketBy, Cmp, Condition, Flag, Gate, Hashing, Matcher, Mode, Namespace, Op, Origin,
    Outcome, Rule, Scalar,
};

use super::{Feature, Note, can_serve, flipper_percent, is_on};

/// Spellings one case-insensitive text may take before the flag is left out.
const MAX_SPELLINGS: usize = 256;

/// Nodes (calls and values) one flag's expression may hold before the flag is left out:
/// every client evaluates it per actor, and spellings multiply across conditions.
const MAX_NODES: usize = 4096;

/// Why a condition on `groups` is inexact: Vexil documents `groups` as a list attribute and
/// tests each element, Flipper compares the whole array (and `Equal` on an array is false).
const GROUPS_NOTE: &str = "tests the attribute `groups`, a list in Vexil whose elements Vexil tests one by one, and Flipper compares the whole array (its Equal on an array is false)";

/// What a number-reading condition cannot promise.
const NUMBER_NOTE: &str = concat!(
    "reads numbers, which Flipper reads differently ",
    unusual_inputs_only!(),
    " (numbers in text that Ruby writes back otherwise, such as \"05\", \"+5\", \"1.50\" or \" 5\", infinities, integers beyond 2^53; array-valued properties, whose elements Vexil tests one by one)"
);

/// An expression, or a constant it simplified to.
#[derive(Debug, Clone, PartialEq)]
enum E {
    Const(bool),
    X(Json),
}

fn call(name: &str, args: Vec<Json>) -> Json {
    json!({ name: args })
}

fn x(name: &str, args: Vec<Json>) -> E {
    E::X(call(name, args))
}

/// Every item holds (nested `All`s are flattened).
fn all(items: Vec<E>) -> E {
    join("All", items, true)
}

/// Some item holds (nested `Any`s are flattened).
fn any(items: Vec<E>) -> E {
    join("Any", items, false)
}

fn join(name: &str, items: Vec<E>, neutral: bool) -> E {
    let mut args = Vec::new();
    for item in items {
        match item {
            E::Const(c) if c == neutral => {}
            E::Const(c) => return E::Const(c),
            E::X(Json::Object(mut map)) if map.len() == 1 && map.contains_key(name) => {
                if let Some(Json::Array(inner)) = map.remove(name) {
                    args.extend(inner);
                }
            }
            E::X(j) => args.push(j),
        }
    }
    match args.len() {
        0 => E::Const(neutral),
        1 => args.pop().map_or(E::Const(neutral), E::X),
        _ => E::X(call(name, args)),
    }
}

/// `Equal(x, false)`: a negation, for expressions that evaluate to true or false.
fn not(e: E) -> E {
    match e {
        E::Const(c) => E::Const(!c),
        E::X(j) => x("Equal", vec![j, json!(false)]),
    }
}

/// If `c` then `then` else `otherwise`.
fn choose(c: E, then: E, otherwise: E) -> E {
    match then {
        E::Const(true) => any(vec![c, otherwise]),
        E::Const(false) => all(vec![not(c), otherwise]),
        then => any(vec![
            all(vec![c.clone(), then]),
            all(vec![not(c), otherwise]),
        ]),
    }
}

fn number(n: f64) -> Json {
    // Whole numbers as integers (Ruby compares 42 == 42.0 as true either way).
    if n.fract() == 0.0 && n.abs() < 9e15 {
        json!(n as i64)
    } else {
        json!(n)
    }
}

fn property(path: &AttrPath) -> Json {
    let name = if path.is_targeting_key {
        "flipper_id"
    } else {
        &path.full
    };
    call("Property", vec![json!(name)])
}

fn text_of(p: &Json) -> Json {
    call("String", vec![p.clone()])
}

/// `Number(String(p))`: a number for any property (booleans and arrays would raise in
/// `Number(p)`); equal to `p` for a number.
fn number_of(p: &Json) -> Json {
    call("Number", vec![text_of(p)])
}

fn equal(a: Json, b: Json) -> E {
    x("Equal", vec![a, b])
}

/// The property is set (not nil): `String(nil)` is `""`, and so is an empty string.
fn present(p: &Json) -> E {
    any(vec![
        x("NotEqual", vec![text_of(p), json!("")]),
        equal(p.clone(), json!("")),
    ])
}

/// The property is a string.
fn is_text(p: &Json) -> E {
    equal(text_of(p), p.clone())
}

/// The property is a number, or text Ruby reads and writes back as the same number ("42",
/// "1.5"): what Vexil reads as a number, but for unusual text.
fn is_numeric(p: &Json) -> E {
    any(vec![
        equal(number_of(p), p.clone()),
        equal(text_of(&number_of(p)), p.clone()),
    ])
}

/// Every text `s` whose case-insensitive comparison with the (lower-case ASCII) `text`
/// succeeds in Vexil: each letter in both cases, and `k` also as the Kelvin sign (the one
/// other character Unicode lower-cases to an ASCII letter); with `dotted_last`, a last `i`
/// also as `İ` (lower-cased to `i` and a combining dot, so it starts with `i`).
fn spellings(text: &str, ignore_case: bool, dotted_last: bool) -> Result<Vec<String>, String> {
    if !ignore_case {
        return Ok(vec![text.to_owned()]);
    }
    if !text.is_ascii() {
        return Err(format!(
            "ignores case on the non-ASCII text `{text}`, which has no exact spelling list"
        ));
    }
    let mut out = vec![String::new()];
    let count = text.chars().count();
    for (i, c) in text.chars().enumerate() {
        let mut forms = vec![c];
        if c.is_ascii_lowercase() {
            forms.push(c.to_ascii_uppercase());
        }
        if c == 'k' {
            forms.push('\u{212A}');
        }
        if c == 'i' && dotted_last && i + 1 == count {
            forms.push('\u{0130}');
        }
        if out.len() * forms.len() > MAX_SPELLINGS {
            return Err(format!(
                "ignores case on `{text}`, which has more than {MAX_SPELLINGS} spellings"
            ));
        }
        out = out
            .iter()
            .flat_map(|head| {
                forms.iter().map(move |f| {
                    let mut s = head.clone();
                    s.push(*f);
                    s
                })
            })
            .collect();
    }
    Ok(out)
}

/// The first text above every text that starts with `prefix` (its last character plus one).
fn after_prefix(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    let last = chars.pop()?;
    let next = match last as u32 {
        0xD7FF => '\u{E000}',
        n => char::from_u32(n + 1)?,
    };
    chars.push(next);
    Some(chars.into_iter().collect())
}

/// Why a condition cannot be said, or its expression and what it cannot promise.
type Said = Result<(E, Option<&'static str>), String>;

fn condition(c: &Condition) -> Said {
    let (e, note) = condition_alone(c)?;
    // Every test but presence reads each element of a list (eval.rs `any_element`).
    if !c.attr.is_targeting_key && &*c.attr.full == "groups" && !matches!(c.op, Op::Present(_)) {
        return Ok((e, Some(GROUPS_NOTE)));
    }
    Ok((e, note))
}

fn condition_alone(c: &Condition) -> Said {
    let p = property(&c.attr);
    let ic = c.ignore_case;
    let unsayable = |what: &str| {
        Err(format!(
            "has a condition `{}` on `{}`, and Flipper expressions have no {what}",
            c.op_name, c.attr.full
        ))
    };
    Ok(match &c.op {
        Op::Present(true) => (present(&p), None),
        Op::Present(false) => (not(present(&p)), None),
        Op::Equals { value, negate } => {
            let (e, note) = equals(&p, value, ic)?;
            (if *negate { not(e) } else { e }, note)
        }
        Op::In {
            texts,
            numbers,
            negate,
        } => {
            let mut texts: Vec<&str> = texts.iter().map(|t| &**t).collect();
            texts.sort_unstable();
            let mut parts = Vec::new();
            for t in &texts {
                for s in spellings(t, ic, false)? {
                    parts.push(equal(p.clone(), json!(s)));
                }
            }
            for b in [true, false] {
                if texts.contains(&if b { "true" } else { "false" }) {
                    parts.push(equal(p.clone(), json!(b)));
                }
            }
            for n in numbers {
                parts.push(number_equals(&p, *n));
            }
            let note = (!numbers.is_empty()).then_some(NUMBER_NOTE);
            let e = any(parts);
            (if *negate { not(e) } else { e }, note)
        }
        Op::StartsWith(prefix) => {
            let mut ranges = Vec::new();
            for s in spellings(prefix, ic, true)? {
                let text = text_of(&p);
                let low = x("GreaterThanOrEqualTo", vec![text.clone(), json!(s)]);
                ranges.push(match after_prefix(&s) {
                    Some(high) => all(vec![low, x("LessThan", vec![text, json!(high)])]),
                    None if s.is_empty() => low,
                    // No text is above every text with this prefix: no range says it.
                    None => {
                        return Err(format!(
                            "has a condition `{}` on `{}` whose prefix ends in U+10FFFF, which no range of texts bounds",
                            c.op_name, c.attr.full
                        ));
                    }
                });
            }
            (all(vec![is_text(&p), any(ranges)]), None)
        }
        Op::Number(cmp, n) => {
            let name = match cmp {
                Cmp::Eq => "Equal",
                Cmp::Lt => "LessThan",
                Cmp::Lte => "LessThanOrEqualTo",
                Cmp::Gt => "GreaterThan",
                Cmp::Gte => "GreaterThanOrEqualTo",
            };
            let e = all(vec![
                is_numeric(&p),
                x(name, vec![number_of(&p), number(*n)]),
            ]);
            (e, Some(NUMBER_NOTE))
        }
        Op::Before(t) | Op::After(t) => {
            let name = if matches!(c.op, Op::Before(_)) {
                "LessThan"
            } else {
                "GreaterThan"
            };
            // Numbers only: `Time(p)` raises on text that is not a time.
            let e = all(vec![
                equal(number_of(&p), p.clone()),
                x(name, vec![number_of(&p), number(*t)]),
            ]);
            (
                e,
                Some(
                    "compares times, and only a number property (seconds since the epoch) is compared in Flipper: Vexil also reads RFC 3339 text, which Flipper's Time() would raise on, so text times never match there",
                ),
            )
        }
        Op::EndsWith(_) => return unsayable("suffix test"),
        Op::Contains(_) => return unsayable("substring or list-element test"),
        Op::Matches(_) => return unsayable("regular expressions"),
        Op::Semver(..) => return unsayable("version comparison"),
    })
}

/// Vexil's `equals`: the text (or its spellings), the number it reads as (also in text), the
/// boolean it reads as (also `"TRUE"` and the like).
fn equals(p: &Json, value: &Scalar, ignore_case: bool) -> Said {
    let mut parts = Vec::new();
    let mut texts = spellings(&value.text, ignore_case, false)?;
    if let Some(b) = value.boolean {
        parts.push(equal(p.clone(), json!(b)));
        texts.extend(spellings(if b { "true" } else { "false" }, true, false)?);
    }
    texts.sort_unstable();
    texts.dedup();
    parts.extend(texts.into_iter().map(|t| equal(p.clone(), json!(t))));
    let note = value.number.map(|n| {
        parts.push(number_equals(p, n));
        NUMBER_NOTE
    });
    Ok((any(parts), note))
}

fn number_equals(p: &Json, n: f64) -> E {
    any(vec![
        equal(p.clone(), number(n)),
        all(vec![
            equal(text_of(&number_of(p)), p.clone()),
            equal(number_of(p), number(n)),
        ]),
    ])
}

fn conditions(mode: Mode, list: &[Condition], notes: &mut Vec<&'static str>) -> Result<E, String> {
    let mut parts = Vec::new();
    for c in list {
        let (e, note) = condition(c)?;
        notes.extend(note);
        parts.push(e);
    }
    Ok(match mode {
        Mode::All => all(parts),
        Mode::Any => any(parts),
    })
}

fn ids<'a>(ids: impl Iterator<Item = &'a Box<str>>) -> E {
    let mut ids: Vec<&str> = ids.map(|s| &**s).collect();
    ids.sort_unstable();
    let key = call("Property", vec![json!("flipper_id")]);
    any(ids
        .into_iter()
        .map(|id| equal(key.clone(), json!(id)))
        .collect())
}

fn matchers(ns: &Namespace, rule: &Rule, notes: &mut Vec<&'static str>) -> Result<E, String> {
    let mut parts = Vec::new();
    for m in &rule.matchers {
        parts.push(match m {
            Matcher::Ids(set) => ids(set.iter()),
            Matcher::Groups(_) => {
                return Err(
                    "matches `groups`, which Flipper decides in its groups gate (registered in the app), not in an expression, and the flag needs an expression"
                        .to_owned(),
                );
            }
            Matcher::Conditions(mode, list) => conditions(*mode, list, notes)?,
            Matcher::Segments(mode, indices) => {
                let mut members = Vec::new();
                for &i in indices {
                    let Some(segment) = ns.segment(i) else {
                        return Err("uses a segment that is not there".to_owned());
                    };
                    let mut either = vec![ids(segment.ids.iter())];
                    for (mode, list) in &segment.groups {
                        either.push(conditions(*mode, list, notes).map_err(|why| {
                            format!("uses segment `{}`, which {why}", segment.key)
                        })?);
                    }
                    members.push(any(either));
                }
                match mode {
                    Mode::All => all(members),
                    Mode::Any => any(members),
                }
            }
        });
    }
    Ok(all(parts))
}

/// Buckets `lo <= b < hi` (thousandths of a percent) of the value `bucket` reads, which must
/// be there: `PercentageOfActors` hashes as Vexil does (crc32 of feature name and text).
fn buckets(
    flag: &Flag,
    bucket: &BucketBy,
    lo: u32,
    hi: u32,
    notes: &mut Vec<&'static str>,
) -> Result<E, String> {
    if bucket.hashing != Hashing::Vexil {
        return Err(
            "hashes as Unleash does (`bucketing: unleash`), but Flipper's PercentageOfActors hashes with crc32"
                .to_owned(),
        );
    }
    if *bucket.salt != *flag.key {
        return Err(format!(
            "salts its buckets with `{}`, but Flipper's PercentageOfActors salts with the feature name",
            bucket.salt
        ));
    }
    let text = match &bucket.attr {
        Some(path) => {
            if !path.is_targeting_key {
                notes.push(concat!(
                    "buckets by a property, which Flipper hashes differently ",
                    unusual_inputs_only!(),
                    " (number properties Ruby writes otherwise than Vexil: whole floats, 42.0 in Ruby and 42 in Vexil; floats of 1e16 and above or below 1e-4, which Ruby writes in exponent form; integers beyond 2^53)"
                ));
            }
            property(path)
        }
        None => call("Property", vec![json!("flipper_id")]),
    };
    let below = |t: u32| {
        let pct: f64 = flipper_percent(t).parse().unwrap_or(0.0);
        x("PercentageOfActors", vec![text.clone(), number(pct)])
    };
    let mut parts = vec![present(&text)];
    if hi < 100_000 {
        parts.push(below(hi));
    }
    if lo > 0 {
        parts.push(not(below(lo)));
    }
    Ok(all(parts))
}

/// Whether a rule decides, and what it serves then.
fn rule_says(
    ns: &Namespace,
    flag: &Flag,
    rule: &Rule,
    notes: &mut Vec<&'static str>,
) -> Result<(E, E), String> {
    let m = matchers(ns, rule, notes)?;
    Ok(match &rule.outcome {
        Outcome::Serve { variant, gate } => {
            let value = E::Const(is_on(flag, *variant));
            match gate {
                Gate::Always => (m, value),
                Gate::Rollout { threshold, bucket } => (
                    all(vec![m, buckets(flag, bucket, 0, *threshold, notes)?]),
                    value,
                ),
                Gate::PercentageOfTime { .. } => {
                    return Err(
                        "is a percentage of time, which Flipper says only as its one percentage_of_time gate (beside the expression), and only when no rule serves false"
                            .to_owned(),
                    );
                }
            }
        }
        Outcome::Split { boundaries, bucket } => {
            let decides = all(vec![m, buckets(flag, bucket, 0, 100_000, notes)?]);
            let mut on = Vec::new();
            let mut lower = 0;
            for &(upper, variant) in boundaries {
                if upper > lower && is_on(flag, variant) {
                    on.push(buckets(flag, bucket, lower, upper, notes)?);
                }
                lower = upper;
            }
            (decides, any(on))
        }
    })
}

/// The flag as gates plus one expression, or why it cannot be said.
pub(super) fn feature<'f>(
    ns: &Namespace,
    flag: &'f Flag,
    out_notes: &mut Vec<Note<'f>>,
) -> Result<Feature, Note<'f>> {
    let mut f = Feature::off(&flag.key);
    let default_on = is_on(flag, flag.default);
    if !flag.enabled || flag.rules.is_empty() {
        f.boolean = default_on;
        return Ok(f);
    }
    // A flag that only switches on: rules the other gates say exactly (groups, a percentage
    // of time) become those gates, OR-ed with the expression of the rest.
    let only_on = !default_on && !flag.rules.iter().any(|r| can_serve(flag, r, false));
    let mut chain: Vec<&Rule> = Vec::new();
    for rule in &flag.rules {
        if only_on && rule.matchers.is_empty() {
            if let Outcome::Serve {
                gate: Gate::PercentageOfTime { threshold },
                ..
            } = rule.outcome
            {
                if f.percentage_of_time == 0 {
                    f.percentage_of_time = threshold;
                    continue;
                }
            }
        }
        if only_on {
            if let (
                [Matcher::Groups(groups)],
                Outcome::Serve {
                    gate: Gate::Always, ..
                },
            ) = (rule.matchers.as_slice(), &rule.outcome)
            {
                f.groups.extend(groups.iter().cloned());
                continue;
            }
        }
        chain.push(rule);
    }
    let mut e = E::Const(default_on);
    let mut notes: Vec<(&'f Origin, &'static str, &'f str)> = Vec::new();
    for rule in chain.into_iter().rev() {
        let mut rule_notes = Vec::new();
        let (decides, value) = rule_says(ns, flag, rule, &mut rule_notes)
            .map_err(|why| (&rule.origin, format!("rule `{}` {why}", rule.name)))?;
        rule_notes.sort_unstable();
        rule_notes.dedup();
        notes.extend(
            rule_notes
                .into_iter()
                .map(|n| (&rule.origin, n, &*rule.name)),
        );
        e = choose(decides, value, e);
    }
    notes.reverse();
    out_notes.extend(
        notes
            .into_iter()
            .map(|(origin, note, name)| (origin, format!("rule `{name}` {note}"))),
    );
    match e {
        E::Const(on) => f.boolean = f.boolean || on,
        E::X(j) => {
            let size = nodes(&j);
            if size > MAX_NODES {
                return Err((
                    &flag.origin,
                    format!(
                        "needs an expression of {size} nodes, more than the {MAX_NODES} a Flipper flag may carry here (every client evaluates it per actor)"
                    ),
                ));
            }
            f.expression = Some(j);
        }
    }
    Ok(f)
}

/// Calls and values in an expression.
fn nodes(j: &Json) -> usize {
    match j {
        // A call's argument list is no node of its own.
        Json::Array(items) => items.iter().map(nodes).sum(),
        Json::Object(map) => 1 + map.values().map(nodes).sum::<usize>(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_cover_unicode_lower_casing() {
        assert_eq!(spellings("ok", true, false).unwrap().len(), 6);
        assert!(
            spellings("ok", true, false)
                .unwrap()
                .contains(&"O\u{212A}".to_owned())
        );
        assert!(
            spellings("hi", true, true)
                .unwrap()
                .contains(&"h\u{130}".to_owned())
        );
        assert!(spellings("é", true, false).is_err());
        assert_eq!(after_prefix("ab-").as_deref(), Some("ab."));
        assert_eq!(after_prefix("").as_deref(), None);
        assert_eq!(after_prefix("a\u{10FFFF}").as_deref(), None);
    }

    #[test]
    fn nodes_count_calls_and_values() {
        assert_eq!(nodes(&json!({"Equal": [{"Property": ["a"]}, "b"]})), 4);
        assert_eq!(nodes(&json!(true)), 1);
    }

    #[test]
    fn constants_fold() {
        assert_eq!(all(vec![E::Const(true)]), E::Const(true));
        assert_eq!(any(vec![E::Const(false), E::Const(true)]), E::Const(true));
        assert_eq!(not(E::Const(true)), E::Const(false));
        let a = equal(json!(1), json!(1));
        assert_eq!(
            all(vec![a.clone(), all(vec![a.clone(), a.clone()])]),
            x("All", vec![json!({"Equal": [1, 1]}); 3])
        );
        assert_eq!(choose(a.clone(), E::Const(true), E::Const(false)), a);
    }
}
