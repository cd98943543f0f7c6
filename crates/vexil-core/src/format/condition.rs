//! Conditions (`attr` + one operator) and their operands: text, numbers, regexes, versions, dates.

use crate::decode;
use crate::diag::{Code, Sink};
use crate::eval::{parse_number, parse_time};
use crate::snapshot::{AttrPath, Cmp, Condition, FastSet, Op, Scalar};
use crate::yaml::{Kind, Node};

use super::conflict;

const OPERATORS: &[&str] = &[
    "equals",
    "not_equals",
    "in",
    "not_in",
    "starts_with",
    "ends_with",
    "contains",
    "matches",
    "lt",
    "lte",
    "gt",
    "gte",
    "semver_eq",
    "semver_lt",
    "semver_lte",
    "semver_gt",
    "semver_gte",
    "before",
    "after",
    "present",
    "absent",
];
/// The operators that compare text (and so accept `ignore_case`): the first eight above.
const STRING_OPS: &[&str] = OPERATORS.split_at(8).0;

/// Regexes are compiled with a size cap so a hostile pattern cannot exhaust memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub(super) fn decode_condition(sink: &mut Sink<'_>, node: &Node) -> Option<Condition> {
    let mut f = decode::fields(sink, node, "a condition")?;
    let attr_node = f.take("attr");
    let ignore_case = f
        .take("ignore_case")
        .and_then(|n| decode::boolean(sink, n, "`ignore_case`"))
        .unwrap_or(false);
    let ops: Vec<&str> = OPERATORS.iter().copied().filter(|op| f.has(op)).collect();
    let mut known: Vec<&str> = vec!["attr", "ignore_case"];
    known.extend_from_slice(OPERATORS);
    let op_nodes: Vec<(&str, &Node)> = ops
        .iter()
        .filter_map(|op| f.take(op).map(|n| (*op, n)))
        .collect();
    let operand = match op_nodes.as_slice() {
        [single] => Some(*single),
        [] => {
            sink.error(
                node.pos,
                Code::MissingField,
                format!("a condition needs one operator: {}", OPERATORS.join(", ")),
            );
            None
        }
        [(first, _), (second, _), ..] => {
            conflict(
                sink,
                &f,
                second,
                &format!(
                    "a condition has one operator: `{first}` and `{second}` cannot be combined; write two conditions"
                ),
            );
            None
        }
    };
    let ignore_case_pos = f.key_pos("ignore_case").unwrap_or(node.pos);
    f.finish(sink, "a condition", &known);
    let attr = match attr_node {
        Some(n) => decode::string(sink, n, "`attr`").filter(|s| {
            let ok = !s.is_empty();
            if !ok {
                sink.error(
                    n.pos,
                    Code::MissingField,
                    "`attr` is empty: name the context attribute to test",
                );
            }
            ok
        }),
        None => {
            sink.error(
                node.pos,
                Code::MissingField,
                "a condition needs `attr`: the context attribute it tests",
            );
            None
        }
    };
    let (op_name, operand_node) = operand?;
    if ignore_case && !STRING_OPS.contains(&op_name) {
        sink.error(
            ignore_case_pos,
            Code::ConflictingFields,
            format!("`ignore_case` applies to string operators, not `{op_name}`"),
        );
        return None;
    }
    let op = decode_op(sink, op_name, operand_node, ignore_case)?;
    let operand = decode::to_json(sink, operand_node, "the operand")?;
    Some(Condition {
        attr: AttrPath::new(&attr?),
        op,
        op_name,
        operand,
        ignore_case,
    })
}

fn fold(s: &str, ignore_case: bool) -> Box<str> {
    if ignore_case {
        s.to_lowercase().into()
    } else {
        s.into()
    }
}

fn decode_op(sink: &mut Sink<'_>, op: &str, node: &Node, ignore_case: bool) -> Option<Op> {
    let what = format!("`{op}`");
    let text = |sink: &mut Sink<'_>| decode::string(sink, node, &what);
    Some(match op {
        "equals" | "not_equals" => Op::Equals {
            value: scalar(sink, node, &what, ignore_case)?,
            negate: op == "not_equals",
        },
        "in" | "not_in" => {
            let Kind::Seq(items) = &node.kind else {
                decode::wrong_type(sink, node.pos, &what, "a list", &node.kind);
                return None;
            };
            if items.is_empty() {
                sink.error(
                    node.pos,
                    Code::MissingField,
                    format!("{what} needs at least one value"),
                );
                return None;
            }
            let mut texts = FastSet::default();
            let mut numbers = Vec::new();
            for item in items {
                let s = scalar(sink, item, &format!("an entry of {what}"), ignore_case)?;
                numbers.extend(s.number);
                texts.insert(s.text);
            }
            Op::In {
                texts,
                numbers,
                negate: op == "not_in",
            }
        }
        "starts_with" => Op::StartsWith(fold(&text(sink)?, ignore_case)),
        "ends_with" => Op::EndsWith(fold(&text(sink)?, ignore_case)),
        "contains" => Op::Contains(fold(&text(sink)?, ignore_case)),
        "matches" => {
            let pattern = text(sink)?;
            match regex::RegexBuilder::new(&pattern)
                .case_insensitive(ignore_case)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
            {
                Ok(re) => Op::Matches(std::sync::Arc::new(re)),
                Err(e) => {
                    let detail = e.to_string().lines().last().unwrap_or("").trim().to_owned();
                    sink.error(
                        node.pos,
                        Code::InvalidRegex,
                        format!("invalid regular expression `{pattern}`: {detail}"),
                    );
                    return None;
                }
            }
        }
        "lt" | "lte" | "gt" | "gte" => {
            let n = decode::number(sink, node, &what)?;
            Op::Number(cmp(op), n)
        }
        "semver_eq" | "semver_lt" | "semver_lte" | "semver_gt" | "semver_gte" => {
            let written = match &node.kind {
                Kind::Str(s) => s.clone(),
                Kind::Int(i) => i.to_string(),
                Kind::Float(f) => f.to_string(),
                other => {
                    decode::wrong_type(sink, node.pos, &what, "a version like 2.3.0", other);
                    return None;
                }
            };
            match semver::Version::parse(written.trim()) {
                Ok(v) => Op::Semver(cmp(op.trim_start_matches("semver_")), v),
                Err(e) => {
                    sink.error(
                        node.pos,
                        Code::InvalidSemver,
                        format!("`{written}` is not a semantic version (MAJOR.MINOR.PATCH, e.g. 2.3.0): {e}"),
                    );
                    return None;
                }
            }
        }
        "before" | "after" => {
            let s = text(sink)?;
            let Some(t) = parse_time(&s) else {
                sink.error(
                    node.pos,
                    Code::InvalidDate,
                    format!("`{s}` is not a date (2027-06-30) or an RFC 3339 time (2027-06-30T12:00:00Z)"),
                );
                return None;
            };
            if op == "before" {
                Op::Before(t)
            } else {
                Op::After(t)
            }
        }
        "present" | "absent" => {
            let b = decode::boolean(sink, node, &what)?;
            Op::Present(b == (op == "present"))
        }
        _ => return None,
    })
}

fn cmp(op: &str) -> Cmp {
    match op {
        "lt" => Cmp::Lt,
        "lte" => Cmp::Lte,
        "gt" => Cmp::Gt,
        "gte" => Cmp::Gte,
        _ => Cmp::Eq,
    }
}

fn scalar(sink: &mut Sink<'_>, node: &Node, what: &str, ignore_case: bool) -> Option<Scalar> {
    Some(match &node.kind {
        Kind::Str(s) => Scalar {
            text: fold(s, ignore_case),
            number: parse_number(s),
            boolean: parse_bool_text(s),
        },
        Kind::Int(i) => Scalar {
            text: i.to_string().into(),
            number: Some(*i as f64),
            boolean: None,
        },
        Kind::Float(f) if f.is_finite() => Scalar {
            text: f.to_string().into(),
            number: Some(*f),
            boolean: None,
        },
        Kind::Bool(b) => Scalar {
            text: b.to_string().into(),
            number: None,
            boolean: Some(*b),
        },
        other => {
            decode::wrong_type(sink, node.pos, what, "a string, number or boolean", other);
            return None;
        }
    })
}

fn parse_bool_text(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}
