//! Evaluation: (snapshot, namespace, flag, context) -> variant, reason, rule.
//!
//! Invariants: never panics and never fails on a valid snapshot, whatever the context; borrows
//! every answer from the snapshot, so the common path allocates nothing (only case-insensitive
//! matching of non-ASCII text lower-cases a copy).

use std::borrow::Cow;
use std::fmt;

use crate::bucket::{self, BUCKETS, NumBuf};
use crate::context::{Attr, AttrValue, Context};
use crate::snapshot::{
    BucketBy, Cmp, Condition, Flag, Gate, Hashing, Matcher, Mode, Namespace, Op, Outcome, Rule,
    Scalar, Snapshot, Value, Variant,
};

/// Why a value was served (OpenFeature's reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The flag has no rules: the answer cannot depend on the context.
    Static,
    /// A rule matched and served a fixed variant.
    TargetingMatch,
    /// A rollout, split or percentage of time chose the variant.
    Split,
    /// No rule matched.
    Default,
    /// The flag's kill switch is off.
    Disabled,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Split => "SPLIT",
            Reason::Default => "DEFAULT",
            Reason::Disabled => "DISABLED",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An evaluation that could not produce a value. These are answers, not failures of Vexil.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("flag not found")]
    FlagNotFound,
}

impl EvalError {
    pub fn code(self) -> &'static str {
        match self {
            EvalError::FlagNotFound => "FLAG_NOT_FOUND",
        }
    }
}

/// The answer for one flag, borrowed from the snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Evaluation<'s> {
    pub flag: &'s Flag,
    pub variant: &'s Variant,
    pub reason: Reason,
    /// The rule that decided, if any.
    pub rule: Option<&'s Rule>,
}

impl<'s> Evaluation<'s> {
    pub fn value(&self) -> &'s Value {
        &self.variant.value
    }
}

impl Snapshot {
    /// Evaluates a flag of any type.
    pub fn evaluate<'s>(
        &'s self,
        namespace: &str,
        flag: &str,
        ctx: &Context,
    ) -> Result<Evaluation<'s>, EvalError> {
        let (ns, flag) = self.find(namespace, flag)?;
        Ok(ns.evaluate_flag(flag, ctx))
    }

    fn find(&self, namespace: &str, flag: &str) -> Result<(&Namespace, &Flag), EvalError> {
        let ns = self.namespace(namespace).ok_or(EvalError::FlagNotFound)?;
        let flag = ns.flag(flag).ok_or(EvalError::FlagNotFound)?;
        Ok((ns, flag))
    }
}

impl Namespace {
    /// Evaluates a flag of this namespace (callers iterating `flags` use this directly).
    pub fn evaluate_flag<'s>(&'s self, flag: &'s Flag, ctx: &Context) -> Evaluation<'s> {
        let answer = |variant: usize, reason, rule| Evaluation {
            flag,
            variant: flag.variant(variant),
            reason,
            rule,
        };
        if !flag.enabled {
            return answer(flag.default, Reason::Disabled, None);
        }
        if flag.rules.is_empty() {
            return answer(flag.default, Reason::Static, None);
        }
        for rule in &flag.rules {
            if !rule.matchers.iter().all(|m| self.matcher_holds(m, ctx)) {
                continue;
            }
            match &rule.outcome {
                Outcome::Serve { variant, gate } => match gate {
                    Gate::Always => return answer(*variant, Reason::TargetingMatch, Some(rule)),
                    Gate::Rollout { threshold, bucket } => {
                        if bucket_of(bucket, ctx, Purpose::Rollout).is_some_and(|b| b < *threshold)
                        {
                            return answer(*variant, Reason::Split, Some(rule));
                        }
                    }
                    Gate::PercentageOfTime { threshold } => {
                        if fastrand::u32(..BUCKETS) < *threshold {
                            return answer(*variant, Reason::Split, Some(rule));
                        }
                    }
                },
                Outcome::Split { boundaries, bucket } => {
                    let Some(b) = bucket_of(bucket, ctx, Purpose::Split) else {
                        continue;
                    };
                    if let Some(&(_, variant)) = boundaries.iter().find(|(bound, _)| b < *bound) {
                        return answer(variant, Reason::Split, Some(rule));
                    }
                }
            }
        }
        answer(flag.default, Reason::Default, None)
    }

    fn matcher_holds(&self, matcher: &Matcher, ctx: &Context) -> bool {
        match matcher {
            Matcher::Segments(mode, indices) => {
                let in_segment = |&i: &usize| self.segment(i).is_some_and(|s| s.contains(ctx));
                match mode {
                    Mode::All => indices.iter().all(in_segment),
                    Mode::Any => indices.iter().any(in_segment),
                }
            }
            Matcher::Conditions(mode, conditions) => conditions_hold(*mode, conditions, ctx),
            Matcher::Ids(ids) => ctx.targeting_key.as_deref().is_some_and(|k| ids.contains(k)),
            Matcher::Groups(groups) => match ctx.attributes.get("groups").and_then(Attr::of) {
                Some(Attr::Str(g)) => groups.iter().any(|name| **name == *g),
                Some(Attr::List(items)) => items
                    .iter()
                    .any(|item| matches!(item, AttrValue::String(g) if groups.iter().any(|n| **n == **g))),
                _ => false,
            },
        }
    }
}

impl crate::snapshot::Segment {
    /// Includes are flattened at compile time, so this never recurses.
    pub fn contains(&self, ctx: &Context) -> bool {
        if !self.ids.is_empty()
            && ctx
                .targeting_key
                .as_deref()
                .is_some_and(|k| self.ids.contains(k))
        {
            return true;
        }
        self.groups
            .iter()
            .any(|(mode, conditions)| conditions_hold(*mode, conditions, ctx))
    }
}

fn conditions_hold(mode: Mode, conditions: &[Condition], ctx: &Context) -> bool {
    match mode {
        Mode::All => conditions.iter().all(|c| c.holds(ctx)),
        Mode::Any => conditions.iter().any(|c| c.holds(ctx)),
    }
}

#[derive(Clone, Copy)]
enum Purpose {
    Rollout,
    Split,
}

/// The bucket of the context for a rollout or split, or `None` without a value to bucket by.
fn bucket_of(by: &BucketBy, ctx: &Context, purpose: Purpose) -> Option<u32> {
    let text = match &by.attr {
        None => ctx.targeting_key.as_deref()?,
        Some(path) => match ctx.lookup(path)? {
            Attr::Str(s) => s,
            Attr::Num(n) => {
                // Only a number needs formatting, on the stack.
                let mut buf = NumBuf::new();
                return Some(hash(by, bucket::number_text(n, &mut buf), purpose));
            }
            Attr::Bool(true) => "true",
            Attr::Bool(false) => "false",
            Attr::List(_) | Attr::Object => return None,
        },
    };
    Some(hash(by, text, purpose))
}

fn hash(by: &BucketBy, value: &str, purpose: Purpose) -> u32 {
    match (by.hashing, purpose) {
        (Hashing::Vexil, _) => bucket::bucket(&by.salt, value),
        (Hashing::Unleash, Purpose::Rollout) => bucket::unleash_rollout_bucket(&by.salt, value),
        (Hashing::Unleash, Purpose::Split) => bucket::unleash_split_bucket(&by.salt, value),
        (Hashing::Flagd, _) => bucket::flagd_bucket(&by.salt, value),
    }
}

impl Condition {
    // Shaped for speed: tidier matches on `(op, attr)` measured 5 to 25 % slower on the
    // segment benchmark (b), see BENCHMARKS.md.
    pub fn holds(&self, ctx: &Context) -> bool {
        let attr = ctx.lookup(&self.attr);
        match &self.op {
            Op::Present(want) => attr.is_some() == *want,
            Op::Equals { value, negate } => match attr {
                None => *negate,
                Some(a) => any_element(a, |a| self.equals(a, value)) != *negate,
            },
            Op::In {
                texts,
                numbers,
                negate,
            } => match attr {
                None => *negate,
                Some(a) => any_element(a, |a| self.is_in(a, texts, numbers)) != *negate,
            },
            op => match attr {
                None => false,
                Some(Attr::List(items)) if matches!(op, Op::Contains(_)) => {
                    // On a list, `contains` asks for an element equal to the operand.
                    let Op::Contains(want) = op else { return false };
                    items
                        .iter()
                        .filter_map(Attr::of)
                        .any(|a| matches!(a, Attr::Str(s) if self.text_eq(s, want)))
                }
                Some(a) => any_element(a, |a| self.positive(op, a)),
            },
        }
    }

    fn equals(&self, attr: Attr<'_>, value: &Scalar) -> bool {
        match attr {
            Attr::Str(s) => {
                if self.text_eq(s, &value.text) {
                    return true;
                }
                // "42" equals 42 and "true" equals true: clients often send everything as strings.
                value.number.is_some_and(|n| parse_number(s) == Some(n))
                    || value.boolean.is_some_and(|b| parse_bool(s) == Some(b))
            }
            Attr::Num(n) => value.number == Some(n),
            Attr::Bool(b) => value.boolean == Some(b),
            Attr::List(_) | Attr::Object => false,
        }
    }

    fn is_in(
        &self,
        attr: Attr<'_>,
        texts: &crate::snapshot::FastSet<Box<str>>,
        numbers: &[f64],
    ) -> bool {
        match attr {
            Attr::Str(s) => {
                let found = if self.ignore_case {
                    texts.contains(&*lower(s))
                } else {
                    texts.contains(s)
                };
                found
                    || (!numbers.is_empty()
                        && parse_number(s).is_some_and(|n| numbers.contains(&n)))
            }
            Attr::Num(n) => numbers.contains(&n),
            Attr::Bool(b) => texts.contains(if b { "true" } else { "false" }),
            Attr::List(_) | Attr::Object => false,
        }
    }

    fn positive(&self, op: &Op, attr: Attr<'_>) -> bool {
        match op {
            Op::StartsWith(want) => as_str(attr).is_some_and(|s| self.text_starts_with(s, want)),
            Op::EndsWith(want) => as_str(attr).is_some_and(|s| self.text_ends_with(s, want)),
            Op::Contains(want) => as_str(attr).is_some_and(|s| self.text_contains(s, want)),
            Op::Matches(re) => as_str(attr).is_some_and(|s| re.is_match(s)),
            Op::Number(cmp, want) => {
                as_number(attr).is_some_and(|n| compare(cmp, n.partial_cmp(want)))
            }
            Op::Semver(cmp, want) => as_str(attr)
                .and_then(|s| semver::Version::parse(s.trim()).ok())
                .is_some_and(|v| compare(cmp, Some(v.cmp_precedence(want)))),
            Op::Before(t) => as_time(attr).is_some_and(|a| a < *t),
            Op::After(t) => as_time(attr).is_some_and(|a| a > *t),
            // Handled in `holds`.
            Op::Equals { .. } | Op::In { .. } | Op::Present(_) => false,
        }
    }

    fn text_eq(&self, s: &str, want: &str) -> bool {
        self.text_test(
            s,
            want,
            |s: &str, w: &str| s == w,
            |s: &[u8], w: &[u8]| s.eq_ignore_ascii_case(w),
        )
    }

    fn text_starts_with(&self, s: &str, want: &str) -> bool {
        self.text_test(
            s,
            want,
            |s, w| s.starts_with(w),
            |s, w| {
                s.get(..w.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(w))
            },
        )
    }

    fn text_ends_with(&self, s: &str, want: &str) -> bool {
        self.text_test(
            s,
            want,
            |s, w| s.ends_with(w),
            |s, w| {
                s.len()
                    .checked_sub(w.len())
                    .and_then(|start| s.get(start..))
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(w))
            },
        )
    }

    fn text_contains(&self, s: &str, want: &str) -> bool {
        self.text_test(
            s,
            want,
            |s, w| s.contains(w),
            |s, w| w.is_empty() || s.windows(w.len()).any(|win| win.eq_ignore_ascii_case(w)),
        )
    }

    /// Runs a text test, honouring `ignore_case`. The operand was lower-cased at compile time;
    /// ASCII attributes compare without allocating, other text is lower-cased into a copy.
    fn text_test(
        &self,
        s: &str,
        want: &str,
        exact: impl Fn(&str, &str) -> bool,
        ascii_folded: impl Fn(&[u8], &[u8]) -> bool,
    ) -> bool {
        if !self.ignore_case {
            exact(s, want)
        } else if s.is_ascii() {
            ascii_folded(s.as_bytes(), want.as_bytes())
        } else {
            exact(&s.to_lowercase(), want)
        }
    }
}

/// Applies a positive test to an attribute, or to each element of a list attribute.
fn any_element(attr: Attr<'_>, test: impl Fn(Attr<'_>) -> bool) -> bool {
    match attr {
        Attr::List(items) => items
            .iter()
            .filter_map(Attr::of)
            .any(|a| !matches!(a, Attr::List(_)) && test(a)),
        a => test(a),
    }
}

fn lower(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_uppercase) {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

fn as_str(attr: Attr<'_>) -> Option<&str> {
    match attr {
        Attr::Str(s) => Some(s),
        _ => None,
    }
}

fn as_number(attr: Attr<'_>) -> Option<f64> {
    match attr {
        Attr::Num(n) => Some(n),
        Attr::Str(s) => parse_number(s),
        _ => None,
    }
}

/// Seconds since the epoch of an RFC 3339 timestamp, a `YYYY-MM-DD` date (midnight UTC) or a
/// number of seconds.
fn as_time(attr: Attr<'_>) -> Option<f64> {
    match attr {
        Attr::Num(n) => Some(n),
        Attr::Str(s) => parse_time(s),
        _ => None,
    }
}

pub(crate) fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Some(ts.as_second() as f64 + f64::from(ts.subsec_nanosecond()) / 1e9);
    }
    let date = s.parse::<jiff::civil::Date>().ok()?;
    let ts = date.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some(ts.as_second() as f64)
}

/// A string attribute read as a number, as numeric comparisons read it: plain decimal text only
/// (`"inf"`, `"NaN"` and hex stay text). Public for the mirrors (`vexil-mirror`), which must
/// decide numbers exactly as evaluation does.
pub fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    // Only plain decimal numbers: "inf", "NaN" and hex are text, not numbers.
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
    {
        return None;
    }
    s.parse::<f64>().ok().filter(|n| n.is_finite())
}

fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn compare(cmp: &Cmp, ord: Option<std::cmp::Ordering>) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match (cmp, ord) {
        (_, None) => false,
        (Cmp::Eq, Some(o)) => o == Equal,
        (Cmp::Lt, Some(o)) => o == Less,
        (Cmp::Lte, Some(o)) => o != Greater,
        (Cmp::Gt, Some(o)) => o == Greater,
        (Cmp::Gte, Some(o)) => o != Less,
    }
}
