//! Matchers and conditions as flagd's JsonLogic (shared reference flagd-sync.md, "JsonLogic
//! dialect"): the tests a provider runs in process.
//!
//! Every test is written so that a missing attribute (`{"var"}` is null) answers as Vexil
//! does, and equality is a strict `in` over every form Vexil accepts for the operand (text,
//! number, boolean), not JsonLogic's loose `==`, whose coercions differ per language.

use serde_json::{Value as Json, json};
use vexil_core::snapshot::{AttrPath, Cmp, Condition, Matcher, Mode, Namespace, Op, Scalar};

/// Why a test has no JsonLogic form (the flag is left out), or reads some contexts otherwise.
pub(super) enum Gap {
    /// No JsonLogic form: the flag is omitted.
    Omit(String),
}

/// A note that answers can differ for some contexts (inexact for every flagd evaluator).
pub(super) type Caveat = String;

pub(super) struct Logic<'a> {
    pub(super) ns: &'a Namespace,
    /// Inexact notes found while translating.
    pub(super) caveats: Vec<Caveat>,
}

/// `{"var": path}`: the targeting key is `targetingKey` at the top of flagd's context.
pub(super) fn var(attr: &AttrPath) -> Json {
    if attr.is_targeting_key {
        json!({ "var": "targetingKey" })
    } else {
        json!({ "var": &*attr.full })
    }
}

/// Vexil finds `a.b` as a key with a dot first, then nested; JsonLogic's `var` only nested.
pub(super) fn dotted(attr: &AttrPath) -> Option<Caveat> {
    (attr.parts.len() > 1).then(|| {
        format!(
            "reads `{}`, which flagd's JsonLogic finds only in nested objects, not as one key with a dot: for unusual inputs only",
            attr.full
        )
    })
}

/// Strict: JsonLogic's loose `!=` takes `false` and `0` for null in Python.
pub(super) fn present(value: Json) -> Json {
    json!({ "!==": [value, null] })
}

/// `and` of the parts, without a wrapper for one part and `true` for none.
pub(super) fn all(mut parts: Vec<Json>) -> Json {
    match parts.len() {
        0 => Json::Bool(true),
        1 => parts.pop().unwrap_or(Json::Bool(true)),
        _ => json!({ "and": parts }),
    }
}

fn any(mut parts: Vec<Json>) -> Json {
    match parts.len() {
        0 => Json::Bool(false),
        1 => parts.pop().unwrap_or(Json::Bool(false)),
        _ => json!({ "or": parts }),
    }
}

fn join(mode: Mode, parts: Vec<Json>) -> Json {
    match mode {
        Mode::All => all(parts),
        Mode::Any => any(parts),
    }
}

/// The forms a value equal to the operand may take in a context: its text, its number, its
/// boolean (Vexil's `equals` reads "42" as 42 and "true" as true).
fn forms(scalar: &Scalar, out: &mut Vec<Json>) {
    out.push(Json::String(scalar.text.to_string()));
    if let Some(n) = scalar.number.and_then(serde_json::Number::from_f64) {
        out.push(Json::Number(n));
    }
    if let Some(b) = scalar.boolean {
        out.push(Json::Bool(b));
    }
}

fn ids_test<'a>(ids: impl IntoIterator<Item = &'a Box<str>>) -> Json {
    let mut list: Vec<&str> = ids.into_iter().map(|s| &**s).collect();
    list.sort_unstable();
    json!({ "in": [{ "var": "targetingKey" }, list] })
}

impl Logic<'_> {
    /// The test of one rule matcher.
    pub(super) fn matcher(&mut self, m: &Matcher) -> Result<Json, Gap> {
        Ok(match m {
            Matcher::Segments(mode, indices) => {
                let mut parts = Vec::with_capacity(indices.len());
                for &i in indices {
                    let Some(segment) = self.ns.segment(i) else {
                        continue;
                    };
                    let mut either = Vec::new();
                    if !segment.ids.is_empty() {
                        either.push(ids_test(&segment.ids));
                    }
                    for (mode, conditions) in &segment.groups {
                        either.push(self.conditions(*mode, conditions).map_err(
                            |Gap::Omit(why)| {
                                Gap::Omit(format!("uses segment `{}`, which {why}", segment.key))
                            },
                        )?);
                    }
                    parts.push(any(either));
                }
                join(*mode, parts)
            }
            Matcher::Conditions(mode, conditions) => self.conditions(*mode, conditions)?,
            Matcher::Ids(ids) => ids_test(ids),
            Matcher::Groups(groups) => {
                self.caveats.push(
                    "matches `groups`, which flagd tests as one text (`in` a list of names): a list of groups in the context matches nothing"
                        .to_owned(),
                );
                let names: Vec<&str> = groups.iter().map(|g| &**g).collect();
                json!({ "in": [{ "var": "groups" }, names] })
            }
        })
    }

    fn conditions(&mut self, mode: Mode, conditions: &[Condition]) -> Result<Json, Gap> {
        let mut parts = Vec::with_capacity(conditions.len());
        for c in conditions {
            parts.push(self.condition(c)?);
        }
        Ok(join(mode, parts))
    }

    fn condition(&mut self, c: &Condition) -> Result<Json, Gap> {
        let attr = &*c.attr.full;
        if let Some(caveat) = dotted(&c.attr) {
            self.caveats.push(caveat);
        }
        let v = var(&c.attr);
        if c.ignore_case {
            return self.folded(c, v);
        }
        let el = element();
        Ok(match &c.op {
            Op::Equals { value, negate } => {
                if value.number.is_some() || value.boolean.is_some() {
                    self.caveats.push(other_spellings(attr));
                }
                let mut list = Vec::new();
                forms(value, &mut list);
                negated(*negate, each(v, json!({ "in": [el, list] })))
            }
            Op::In {
                texts,
                numbers,
                negate,
            } => {
                if !numbers.is_empty() || texts.contains("true") || texts.contains("false") {
                    self.caveats.push(other_spellings(attr));
                }
                let mut sorted: Vec<&str> = texts.iter().map(|t| &**t).collect();
                sorted.sort_unstable();
                let mut list: Vec<Json> = sorted.iter().map(|t| json!(t)).collect();
                list.extend(
                    numbers
                        .iter()
                        .filter_map(|n| serde_json::Number::from_f64(*n))
                        .map(Json::Number),
                );
                // A boolean attribute is in the list when its text is.
                for b in [true, false] {
                    if texts.contains(if b { "true" } else { "false" }) {
                        list.push(Json::Bool(b));
                    }
                }
                negated(*negate, each(v, json!({ "in": [el, list] })))
            }
            Op::StartsWith(s) => {
                self.caveats.push(custom_op_on_lists(attr, "starts_with"));
                json!({ "starts_with": [v, &**s] })
            }
            Op::EndsWith(s) => {
                self.caveats.push(custom_op_on_lists(attr, "ends_with"));
                json!({ "ends_with": [v, &**s] })
            }
            Op::Contains(s) => contains(v, &[s.to_string()]),
            Op::Matches(_) => {
                return Err(Gap::Omit(format!(
                    "matches `{attr}` with a regular expression, which flagd's JsonLogic cannot express"
                )));
            }
            Op::Number(cmp, n) => {
                self.caveats.push(format!(
                    "compares `{attr}` as a number, which the providers' JsonLogic reads differently for unusual inputs only (text that is not plain decimal, booleans, empty text)"
                ));
                each(
                    v,
                    all(vec![present(el.clone()), compare(*cmp, el, json!(n))]),
                )
            }
            Op::Semver(cmp, version) => {
                self.caveats.push(format!(
                    "compares `{attr}` as a version, which flagd's `sem_ver` reads differently for unusual inputs only (partial versions like `1.2`, a `v` prefix)"
                ));
                let op = match cmp {
                    Cmp::Eq => "=",
                    Cmp::Lt => "<",
                    Cmp::Lte => "<=",
                    Cmp::Gt => ">",
                    Cmp::Gte => ">=",
                };
                self.caveats.push(custom_op_on_lists(attr, "sem_ver"));
                json!({ "sem_ver": [v, op, version.to_string()] })
            }
            Op::Before(t) | Op::After(t) => {
                self.caveats.push(format!(
                    "compares `{attr}` as a time, which flagd's JsonLogic reads only as a number of seconds since the epoch: a date or RFC 3339 text in the context never matches"
                ));
                let cmp = if matches!(c.op, Op::Before(_)) {
                    Cmp::Lt
                } else {
                    Cmp::Gt
                };
                each(
                    v,
                    all(vec![present(el.clone()), compare(cmp, el, json!(t))]),
                )
            }
            Op::Present(true) => present(v),
            Op::Present(false) => json!({ "===": [v, null] }),
        })
    }
}

/// Vexil's `contains`: a substring of a text, or an element of a list equal to the text.
/// JsonLogic's `in` is both, but throws in JS on other values: it runs only on a text (one
/// that `cat` leaves as it is), and lists are tested element by element.
fn contains(v: Json, texts: &[String]) -> Json {
    let is_text = json!({ "===": [{ "cat": [v.clone()] }, v.clone()] });
    let substring = any(texts
        .iter()
        .map(|t| json!({ "in": [t, v.clone()] }))
        .collect());
    let element = any(texts
        .iter()
        .map(|t| json!({ "===": [element(), t] }))
        .collect());
    any(vec![
        json!({ "if": [is_text, substring, false] }),
        each(v, element),
    ])
}

/// flagd's own operators cannot run inside `some` (JS flagd-core looks for its logger in the
/// data, which `some` replaces by the element), so a list is not tested element by element.
/// Vexil compares numbers by value and booleans ignoring case; `in` lists the usual spellings.
fn other_spellings(attr: &str) -> Caveat {
    format!(
        "compares `{attr}` with a number or a boolean, which Vexil also finds in other spellings (\"42.0\", \" 42\", \"4.2e1\", \"TRUE\") that flagd's strict `in` does not list: for unusual inputs only"
    )
}

fn custom_op_on_lists(attr: &str, op: &str) -> Caveat {
    format!(
        "tests `{attr}` with `{op}`, which flagd applies to a list as one value (null) where Vexil tests each element: other answers for list values, for unusual inputs only"
    )
}

/// The element `each` tests.
fn element() -> Json {
    json!({ "var": "" })
}

/// `test` holds for the value, or for an element of a list value (Vexil's reading of lists):
/// `merge` makes a one-element list of a single value and leaves a list as it is.
fn each(value: Json, test: Json) -> Json {
    json!({ "some": [{ "merge": [value] }, test] })
}

fn negated(negate: bool, test: Json) -> Json {
    if negate { json!({ "!": test }) } else { test }
}

impl Logic<'_> {
    /// A case-insensitive text test, approximated: JsonLogic has no lower-casing, so the
    /// operand is tried in its lower-case, upper-case and capitalised spellings (`de`, `DE`,
    /// `De`); other spellings (`dE`) do not match.
    fn folded(&mut self, c: &Condition, v: Json) -> Result<Json, Gap> {
        let attr = &*c.attr.full;
        let spellings = |text: &str| -> Vec<String> {
            let lower = text.to_lowercase();
            let mut chars = lower.chars();
            let capital = chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default();
            let mut out = vec![lower.clone(), text.to_uppercase(), capital];
            out.sort_unstable();
            out.dedup();
            out
        };
        let el = element();
        let out = match &c.op {
            Op::Equals { value, negate } => {
                let mut list: Vec<Json> = spellings(&value.text)
                    .into_iter()
                    .map(Json::String)
                    .collect();
                list.extend(
                    value
                        .number
                        .and_then(serde_json::Number::from_f64)
                        .map(Json::Number),
                );
                list.extend(value.boolean.map(Json::Bool));
                negated(*negate, each(v, json!({ "in": [el, list] })))
            }
            Op::In {
                texts,
                numbers,
                negate,
            } => {
                let mut sorted: Vec<String> = texts.iter().flat_map(|t| spellings(t)).collect();
                sorted.sort_unstable();
                sorted.dedup();
                let mut list: Vec<Json> = sorted.into_iter().map(Json::String).collect();
                list.extend(
                    numbers
                        .iter()
                        .filter_map(|n| serde_json::Number::from_f64(*n))
                        .map(Json::Number),
                );
                negated(*negate, each(v, json!({ "in": [el, list] })))
            }
            Op::StartsWith(s) => {
                self.caveats.push(custom_op_on_lists(attr, "starts_with"));
                any(spellings(s)
                    .iter()
                    .map(|t| json!({ "starts_with": [v.clone(), t] }))
                    .collect())
            }
            Op::EndsWith(s) => {
                self.caveats.push(custom_op_on_lists(attr, "ends_with"));
                any(spellings(s)
                    .iter()
                    .map(|t| json!({ "ends_with": [v.clone(), t] }))
                    .collect())
            }
            Op::Contains(s) => contains(v, &spellings(s)),
            // Ignoring case changes nothing else (numbers, versions, presence).
            _ => {
                let mut exact = c.clone();
                exact.ignore_case = false;
                return self.condition(&exact);
            }
        };
        self.caveats.push(format!(
            "compares `{attr}` ignoring case, which flagd's JsonLogic cannot (no lower-casing): the export matches the lower-case, upper-case and capitalised spellings only"
        ));
        Ok(out)
    }
}

fn compare(cmp: Cmp, a: Json, b: Json) -> Json {
    match cmp {
        Cmp::Eq => json!({ "==": [a, b] }),
        Cmp::Lt => json!({ "<": [a, b] }),
        Cmp::Lte => json!({ "<=": [a, b] }),
        Cmp::Gt => json!({ ">": [a, b] }),
        Cmp::Gte => json!({ ">=": [a, b] }),
    }
}
