//! Flag tests: `*.test.yaml` files next to the flags, with contexts and the answers the flag
//! owners expect. A failed expectation is a diagnostic (`test-failed`) at the expectation's
//! line, so every output format of `vexil validate` shows it.
//!
//! ```yaml
//! namespace: checkout          # optional; default `default`
//! tests:
//!   - name: staff get the new checkout
//!     key: user-1              # the targeting key (optional)
//!     attributes: { email: dev@example.com }
//!     expect:
//!       new-checkout: true           # the value
//!       theme: { variant: dark }     # or any of value, variant, reason
//! ```

use serde_json::Value as Json;

use crate::context::{AttrValue, Context};
use crate::decode;
use crate::diag::{Code, Diagnostic, Pos, Sink};
use crate::format::DEFAULT_NAMESPACE;
use crate::snapshot::Snapshot;
use crate::source::SourceFile;
use crate::yaml::{self, Kind, Node};

/// What the tests of a set of files did.
#[derive(Debug, Default)]
pub struct TestRun {
    pub files: usize,
    pub cases: usize,
    pub expectations: usize,
    pub failed: usize,
    /// Failures (`test-failed`) and problems in the test files, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

struct Expectation {
    flag: String,
    pos: Pos,
    value: Option<Json>,
    variant: Option<String>,
    reason: Option<String>,
}

struct Case {
    name: String,
    context: Context,
    expect: Vec<Expectation>,
}

/// Runs every test file against `snapshot`.
pub fn run(snapshot: &Snapshot, tests: &[SourceFile]) -> TestRun {
    let mut run = TestRun {
        files: tests.len(),
        ..TestRun::default()
    };
    for file in tests {
        let mut sink = Sink::new(&file.path, &mut run.diagnostics);
        let root = match yaml::parse(&file.text) {
            Ok(root) => root,
            Err(e) => {
                sink.error(e.pos, e.code, e.message);
                continue;
            }
        };
        let Some((namespace, cases)) = decode_file(&mut sink, &root) else {
            continue;
        };
        if snapshot.namespace(&namespace).is_none() {
            sink.error(
                root.pos,
                Code::UnknownFlag,
                format!("namespace `{namespace}` has no flags"),
            );
            continue;
        }
        for case in cases {
            run.cases += 1;
            for e in case.expect {
                run.expectations += 1;
                if !check(
                    snapshot,
                    &namespace,
                    &case.name,
                    &case.context,
                    &e,
                    &mut sink,
                ) {
                    run.failed += 1;
                }
            }
        }
    }
    run.diagnostics.sort();
    run
}

/// Checks one expectation; reports and returns false when it does not hold.
fn check(
    snapshot: &Snapshot,
    namespace: &str,
    case: &str,
    ctx: &Context,
    e: &Expectation,
    sink: &mut Sink<'_>,
) -> bool {
    let eval = match snapshot.evaluate(namespace, &e.flag, ctx) {
        Ok(eval) => eval,
        Err(_) => {
            sink.error(
                e.pos,
                Code::UnknownFlag,
                format!(
                    "test `{case}`: no flag `{}` in namespace `{namespace}`",
                    e.flag
                ),
            );
            return false;
        }
    };
    let actual_value = eval.variant.value.to_json();
    let reason = eval.reason.as_str();
    let mut wrong = Vec::new();
    if let Some(v) = &e.value {
        if !json_eq(v, &actual_value) {
            wrong.push(format!("value {v}, got {actual_value}"));
        }
    }
    if let Some(v) = &e.variant {
        if *v != *eval.variant.name {
            wrong.push(format!("variant `{v}`, got `{}`", eval.variant.name));
        }
    }
    if let Some(r) = &e.reason {
        if !r.eq_ignore_ascii_case(reason) {
            wrong.push(format!("reason {r}, got {reason}"));
        }
    }
    if wrong.is_empty() {
        return true;
    }
    let rule = eval.rule.map_or_else(
        || "no rule matched".to_owned(),
        |r| format!("rule `{}` matched", r.name),
    );
    sink.error(
        e.pos,
        Code::TestFailed,
        format!(
            "test `{case}`, flag `{}`: expected {} (served variant `{}` = {actual_value}, reason {reason}, {rule})",
            e.flag,
            wrong.join("; expected "),
            eval.variant.name
        ),
    );
    false
}

/// Equal as JSON, with numbers compared by value (`10` equals `10.0`).
fn json_eq(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn decode_file(sink: &mut Sink<'_>, root: &Node) -> Option<(String, Vec<Case>)> {
    let mut f = decode::fields(sink, root, "a test file")?;
    let namespace = match f.take("namespace") {
        Some(n) => decode::string(sink, n, "`namespace`")?,
        None => DEFAULT_NAMESPACE.to_owned(),
    };
    let mut cases = Vec::new();
    match f.take("tests").map(|n| (n, &n.kind)) {
        Some((_, Kind::Seq(items))) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(case) = decode_case(sink, item, i + 1) {
                    cases.push(case);
                }
            }
        }
        Some((n, other)) => decode::wrong_type(sink, n.pos, "`tests`", "a list of tests", other),
        None => sink.error(root.pos, Code::MissingField, "a test file needs `tests`"),
    }
    f.finish(sink, "a test file", &["namespace", "tests"]);
    Some((namespace, cases))
}

fn decode_case(sink: &mut Sink<'_>, node: &Node, number: usize) -> Option<Case> {
    let mut f = decode::fields(sink, node, "a test")?;
    let name = match f.take("name") {
        Some(n) => decode::string(sink, n, "`name`")?,
        None => format!("#{number}"),
    };
    let mut context = Context::new();
    if let Some(n) = f.take("key") {
        context.targeting_key = Some(decode::string(sink, n, "`key`")?);
    }
    if let Some(n) = f.take("attributes") {
        match decode::to_json(sink, n, "`attributes`")? {
            Json::Object(map) => {
                for (k, v) in map {
                    context.attributes.insert(k, AttrValue::from_json(&v));
                }
            }
            Json::Null => {}
            _ => {
                decode::wrong_type(sink, n.pos, "`attributes`", "a map", &n.kind);
                return None;
            }
        }
    }
    let mut expect = Vec::new();
    match f.take("expect") {
        Some(n) => {
            for (flag, pos, value) in decode::named_entries(sink, n, "`expect`") {
                if let Some(e) = decode_expectation(sink, flag, pos, value) {
                    expect.push(e);
                }
            }
        }
        None => sink.error(
            node.pos,
            Code::MissingField,
            format!("test `{name}` needs `expect`: the flags and the answers expected"),
        ),
    }
    f.finish(sink, "a test", &["name", "key", "attributes", "expect"]);
    Some(Case {
        name,
        context,
        expect,
    })
}

/// A bare value is the expected value; a map of only `value`, `variant` and `reason` states
/// those (so an object flag's expected value is written `{ value: {...} }`).
fn decode_expectation(
    sink: &mut Sink<'_>,
    flag: String,
    pos: Pos,
    node: &Node,
) -> Option<Expectation> {
    let structured = match &node.kind {
        Kind::Map(entries) => !entries.is_empty()
            && entries.iter().all(|(k, _)| {
                matches!(&k.kind, Kind::Str(s) if matches!(s.as_str(), "value" | "variant" | "reason"))
            }),
        _ => false,
    };
    if !structured {
        let value = decode::to_json(sink, node, "an expected value")?;
        return Some(Expectation {
            flag,
            pos,
            value: Some(value),
            variant: None,
            reason: None,
        });
    }
    let mut f = decode::fields(sink, node, "an expectation")?;
    let value = match f.take("value") {
        Some(n) => Some(decode::to_json(sink, n, "`value`")?),
        None => None,
    };
    let variant = match f.take("variant") {
        Some(n) => Some(decode::string(sink, n, "`variant`")?),
        None => None,
    };
    let reason = match f.take("reason") {
        Some(n) => Some(decode::string(sink, n, "`reason`")?),
        None => None,
    };
    f.finish(sink, "an expectation", &["value", "variant", "reason"]);
    Some(Expectation {
        flag,
        pos,
        value,
        variant,
        reason,
    })
}
