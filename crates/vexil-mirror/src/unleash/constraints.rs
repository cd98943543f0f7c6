//! Conditions as Unleash constraints, operator by operator.

use serde_json::Value as Json;
use vexil_core::snapshot::{AttrPath, Cmp, Condition, Op};

use super::Profile;
use super::wire::Constraint;

/// The context fields ruby-unleash 3.2.5 can read without raising: it snake-cases a
/// constraint's field name and fetches any other field from `properties` with no default,
/// so a context without that property makes `is_enabled?` raise.
const LEGACY_FIELDS: [&str; 3] = ["userId", "sessionId", "remoteAddress"];

pub(super) fn legacy_field(name: &str, profile: Profile) -> Result<(), String> {
    if profile == Profile::Legacy && !LEGACY_FIELDS.contains(&name) {
        return Err(format!(
            "reads `{name}`, and clients without Unleash-Client-Spec (ruby-unleash 3.2.5) raise on a context without that property (only userId, sessionId and remoteAddress are safe)"
        ));
    }
    Ok(())
}

/// The context field an attribute is read from.
pub(super) fn context_name(attr: &AttrPath) -> &str {
    if attr.is_targeting_key {
        "userId"
    } else {
        &attr.full
    }
}

/// One condition in disjunctive normal form (an `in` list with numbers is a disjunction).
pub(super) fn condition_dnf(
    c: &Condition,
    profile: Profile,
) -> Result<Vec<Vec<Constraint>>, String> {
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
            // `^` matches every string, empty or not, in both engines (Node drops an empty
            // constraint value, so `STR_CONTAINS [""]` would match nothing there); a missing
            // field fails every operator but NOT_IN, and `inverted` negates that too.
            modern("REGEX")?;
            Ok(vec![vec![
                Constraint::single(name, "REGEX", "^".to_owned()).inverted(!want),
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

/// Conditions whose Unleash operator reads some inputs differently from Vexil (in one engine
/// or both).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Edge {
    /// A time compared on `currentTime`.
    Clock,
    /// A time compared on another field (named): Node's engine reads `currentTime` instead.
    FieldTime(String),
    Number,
    Version,
    /// A pattern with `\d`, `\w`, `\s` or `\b`: Unicode classes in Rust's regex, ASCII in RE2.
    Pattern,
    /// A pattern with a construct (named) that RE2 rejects or reads as something else.
    PatternSyntax(String),
}

pub(super) fn edge_kind(c: &Condition) -> Option<Edge> {
    match &c.op {
        Op::Before(_) | Op::After(_) => Some(match context_name(&c.attr) {
            "currentTime" => Edge::Clock,
            other => Edge::FieldTime(other.to_owned()),
        }),
        Op::Number(..) => Some(Edge::Number),
        Op::In { numbers, .. } if !numbers.is_empty() => Some(Edge::Number),
        Op::Equals { value, .. } if value.number.is_some() => Some(Edge::Number),
        Op::Semver(..) => Some(Edge::Version),
        Op::Matches(_) => match super::re2::reading(c.operand.as_str().unwrap_or_default()) {
            super::re2::Reading::Same => None,
            super::re2::Reading::AsciiClasses => Some(Edge::Pattern),
            super::re2::Reading::Unsupported(what) => Some(Edge::PatternSyntax(what)),
        },
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
    if is_plain(&value) {
        return Ok(vec![vec![
            Constraint::list(name, operator, vec![value]).case_insensitive(c.ignore_case),
        ]]);
    }
    // Node's engine drops empty values and trims the others; yggdrasil keeps them verbatim.
    // A regular expression reads the same in both.
    let escaped = regex::escape(&value);
    let pattern = match operator {
        _ if escaped.is_empty() => "^".to_owned(),
        "STR_STARTS_WITH" => format!("^{escaped}"),
        "STR_ENDS_WITH" => format!("{escaped}$"),
        _ => escaped,
    };
    Ok(vec![vec![
        Constraint::single(name, "REGEX", pattern).case_insensitive(c.ignore_case),
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
                if let Some(n) = vexil_core::eval::parse_number(s) {
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
    let text_constraint = |operator| {
        in_list(
            name,
            texts.clone(),
            ignore_case,
            operator == "NOT_IN",
            profile,
        )
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

/// `IN` (or `NOT_IN`) a list of texts, as both engines read it the same: IN ignores
/// `caseInsensitive` in both, and Node's engine drops empty values and trims the others, so
/// those lists become an anchored regular expression (which clients without
/// Unleash-Client-Spec do not know: they compare verbatim).
pub(super) fn in_list(
    name: &str,
    texts: Vec<String>,
    ignore_case: bool,
    not: bool,
    profile: Profile,
) -> Constraint {
    let verbatim = profile == Profile::Legacy || texts.iter().all(|t| is_plain(t));
    if !ignore_case && verbatim {
        return Constraint::list(name, if not { "NOT_IN" } else { "IN" }, texts);
    }
    let alternatives: Vec<String> = texts.iter().map(|t| regex::escape(t)).collect();
    Constraint::single(name, "REGEX", format!("^(?:{})$", alternatives.join("|")))
        .case_insensitive(ignore_case)
        .inverted(not)
}

/// A constraint value Node's engine reads verbatim: not empty, nothing for `String.trim` to cut.
fn is_plain(value: &str) -> bool {
    let trim = |c: char| c.is_whitespace() || c == '\u{feff}';
    !value.is_empty() && !value.starts_with(trim) && !value.ends_with(trim)
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
