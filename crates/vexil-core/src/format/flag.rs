//! One flag: its type, metadata, variants, default and the loop over its rules.

use std::collections::BTreeMap;

use crate::decode;
use crate::diag::{Code, Pos, Sink};
use crate::snapshot::{Flag, FlagType, Gate, Outcome, Value, Variant};
use crate::yaml::{Kind, Node};

use super::rule::{RuleCx, decode_hashing, decode_rule};
use super::{FlagDef, SegmentRef, origin};

const FLAG_FIELDS: &[&str] = &[
    "bucketing",
    "description",
    "owner",
    "tags",
    "expires",
    "metadata",
    "enabled",
    "type",
    "variants",
    "default",
    "rules",
    "clients",
];

pub(super) fn decode_flag(
    sink: &mut Sink<'_>,
    key: String,
    pos: Pos,
    node: &Node,
    known_clients: Option<&[&str]>,
) -> FlagDef {
    let Some(mut f) = decode::fields(sink, node, &format!("flag `{key}`")) else {
        return FlagDef {
            key,
            pos,
            flag: None,
            segment_refs: Vec::new(),
        };
    };
    let errors_before = sink.errors();

    let flag_type = match f.take("type") {
        None => FlagType::Boolean,
        Some(n) => match &n.kind {
            Kind::Str(s) => FlagType::parse(s).unwrap_or_else(|| {
                sink.error(
                    n.pos,
                    Code::WrongType,
                    format!(
                        "unknown flag type `{s}`: use boolean, string, integer, float or object"
                    ),
                );
                FlagType::Boolean
            }),
            other => {
                decode::wrong_type(
                    sink,
                    n.pos,
                    "`type`",
                    "boolean, string, integer, float or object",
                    other,
                );
                FlagType::Boolean
            }
        },
    };
    let enabled = f
        .take("enabled")
        .and_then(|n| decode::boolean(sink, n, "`enabled`"))
        .unwrap_or(true);
    let bucketing = f
        .take("bucketing")
        .and_then(|n| decode_hashing(sink, n))
        .unwrap_or_default();
    let description = f
        .take("description")
        .and_then(|n| decode::string(sink, n, "`description`"));
    let owner = f
        .take("owner")
        .and_then(|n| decode::string(sink, n, "`owner`"));
    let tags = f
        .take("tags")
        .and_then(|n| decode::texts(sink, n, "`tags`"))
        .map(|t| t.into_iter().map(|(s, _)| s).collect())
        .unwrap_or_default();
    let expires = f.take("expires").and_then(|n| {
        let text = decode::string(sink, n, "`expires`")?;
        match text.parse::<jiff::civil::Date>() {
            Ok(d) => Some(d),
            Err(_) => {
                sink.error(
                    n.pos,
                    Code::InvalidDate,
                    format!("`expires` must be a date like 2027-06-30, found `{text}`"),
                );
                None
            }
        }
    });
    let metadata = f
        .take("metadata")
        .map(|n| decode_metadata(sink, n))
        .unwrap_or_default();
    // Checked exactly as the repository config's lists are (same diagnostics).
    let clients = f.take("clients").and_then(|n| {
        crate::config::clients(
            sink,
            n,
            &format!("`clients` of flag `{key}`"),
            known_clients,
        )
    });
    let variants = decode_variants(sink, &key, flag_type, f.take("variants"), pos);
    let default = decode_default(sink, &key, flag_type, &variants, f.take("default"), pos);

    let mut rules = Vec::new();
    let mut segment_refs = Vec::new();
    if let Some(n) = f.take("rules") {
        match &n.kind {
            Kind::Seq(items) => {
                let mut catch_all: Option<String> = None;
                for (i, item) in items.iter().enumerate() {
                    let ctx = RuleCx {
                        flag_key: &key,
                        flag_type,
                        variants: &variants,
                        index: i,
                        bucketing,
                    };
                    let (rule, refs) = decode_rule(sink, &ctx, item);
                    let Some(rule) = rule else {
                        segment_refs.extend(refs.into_iter().map(|(matcher, names)| SegmentRef {
                            rule: None,
                            matcher,
                            names,
                        }));
                        continue;
                    };
                    if let Some(before) = &catch_all {
                        sink.warning(
                            item.pos,
                            Code::UnreachableRule,
                            format!("this rule can never match: rule `{before}` before it matches everyone; move it up or remove it"),
                        );
                    } else if rule.matchers.is_empty()
                        && matches!(
                            rule.outcome,
                            Outcome::Serve {
                                gate: Gate::Always,
                                ..
                            }
                        )
                    {
                        catch_all = Some(rule.name.to_string());
                    }
                    for (matcher, names) in refs {
                        segment_refs.push(SegmentRef {
                            rule: Some(rules.len()),
                            matcher,
                            names,
                        });
                    }
                    rules.push(rule);
                }
            }
            Kind::Null => {}
            other => decode::wrong_type(sink, n.pos, "`rules`", "a list of rules", other),
        }
    }
    f.finish(sink, &format!("flag `{key}`"), FLAG_FIELDS);
    let default = default.filter(|_| sink.errors() == errors_before);
    let Some(default) = default else {
        return FlagDef {
            key,
            pos,
            flag: None,
            segment_refs,
        };
    };
    let flag = Flag {
        key: key.as_str().into(),
        flag_type,
        enabled,
        description,
        owner,
        tags,
        expires,
        metadata,
        variants: variants.into_iter().map(|(v, _)| v).collect(),
        default,
        rules,
        clients: clients.map(|c| c.names),
        origin: origin(sink, pos),
    };
    FlagDef {
        key,
        pos,
        flag: Some(flag),
        segment_refs,
    }
}

fn decode_metadata(sink: &mut Sink<'_>, node: &Node) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    for (name, _, value) in decode::named_entries(sink, node, "`metadata`") {
        match &value.kind {
            Kind::Str(_) | Kind::Int(_) | Kind::Float(_) | Kind::Bool(_) => {
                if let Some(v) = decode::to_json(sink, value, "`metadata`") {
                    out.insert(name, v);
                }
            }
            other => decode::wrong_type(
                sink,
                value.pos,
                &format!("metadata `{name}`"),
                "a string, number or boolean",
                other,
            ),
        }
    }
    out
}

fn decode_variants(
    sink: &mut Sink<'_>,
    flag: &str,
    flag_type: FlagType,
    node: Option<&Node>,
    flag_pos: Pos,
) -> Vec<(Variant, Pos)> {
    let Some(node) = node else {
        if flag_type == FlagType::Boolean {
            return vec![
                (
                    Variant {
                        name: "on".into(),
                        value: Value::Bool(true),
                    },
                    flag_pos,
                ),
                (
                    Variant {
                        name: "off".into(),
                        value: Value::Bool(false),
                    },
                    flag_pos,
                ),
            ];
        }
        sink.error(
            flag_pos,
            Code::MissingField,
            format!(
                "{} flag `{flag}` needs `variants`: the values it can serve, by name",
                flag_type.as_str()
            ),
        );
        return Vec::new();
    };
    let mut out: Vec<(Variant, Pos)> = Vec::new();
    for (name, pos, value) in decode::named_entries(sink, node, "`variants`") {
        if !decode::check_key(sink, &name, pos, "variant name") {
            continue;
        }
        if let Some((_, first)) = out.iter().find(|(v, _)| v.name.eq_ignore_ascii_case(&name)) {
            sink.error(
                pos,
                Code::CaseConflict,
                format!(
                    "variant `{name}` differs only in case from the variant at line {}",
                    first.line
                ),
            );
            continue;
        }
        if let Some(v) = variant_value(sink, flag_type, value, &name) {
            out.push((
                Variant {
                    name: name.into(),
                    value: v,
                },
                pos,
            ));
        }
    }
    let empty =
        matches!(&node.kind, Kind::Null) || matches!(&node.kind, Kind::Map(m) if m.is_empty());
    if out.is_empty() && empty {
        sink.error(
            node.pos,
            Code::MissingField,
            format!("flag `{flag}` needs at least one variant"),
        );
    }
    out
}

fn variant_value(
    sink: &mut Sink<'_>,
    flag_type: FlagType,
    node: &Node,
    name: &str,
) -> Option<Value> {
    let what = format!("variant `{name}`");
    let mismatch = |sink: &mut Sink<'_>, hint: &str| {
        sink.error(
            node.pos,
            Code::ValueType,
            format!(
                "{what} must be {} value like the flag, found {}{hint}",
                match flag_type {
                    FlagType::Boolean => "a boolean",
                    FlagType::String => "a string",
                    FlagType::Integer => "an integer",
                    FlagType::Float => "a float",
                    FlagType::Object => "an object (map)",
                },
                node.kind.describe()
            ),
        );
    };
    match (flag_type, &node.kind) {
        (FlagType::Boolean, Kind::Bool(b)) => Some(Value::Bool(*b)),
        (FlagType::String, Kind::Str(s)) => Some(Value::String(s.as_str().into())),
        (FlagType::String, Kind::Int(_) | Kind::Float(_) | Kind::Bool(_)) => {
            mismatch(sink, " (put it in quotes to make it text)");
            None
        }
        (FlagType::Integer, Kind::Int(i)) => Some(Value::Integer(*i)),
        (FlagType::Float, Kind::Int(i)) => Some(Value::Float(*i as f64)),
        (FlagType::Float, Kind::Float(f)) if f.is_finite() => Some(Value::Float(*f)),
        (FlagType::Object, Kind::Map(_)) => decode::to_json(sink, node, &what).map(Value::Object),
        _ => {
            mismatch(sink, "");
            None
        }
    }
}

fn decode_default(
    sink: &mut Sink<'_>,
    flag: &str,
    flag_type: FlagType,
    variants: &[(Variant, Pos)],
    node: Option<&Node>,
    flag_pos: Pos,
) -> Option<usize> {
    let Some(node) = node else {
        if flag_type == FlagType::Boolean {
            let found = variants
                .iter()
                .position(|(v, _)| v.value == Value::Bool(false));
            if found.is_none() && !variants.is_empty() {
                sink.error(
                    flag_pos,
                    Code::MissingField,
                    format!("flag `{flag}` has no variant with value `false` to serve by default: set `default`"),
                );
            }
            return found;
        }
        if !variants.is_empty() {
            sink.error(
                flag_pos,
                Code::MissingField,
                format!(
                    "flag `{flag}` needs a `default` variant (one of {})",
                    names(variants)
                ),
            );
        }
        return None;
    };
    resolve_variant(sink, flag, flag_type, variants, node, "`default`")
}

pub(super) fn names(variants: &[(Variant, Pos)]) -> String {
    variants
        .iter()
        .map(|(v, _)| format!("`{}`", v.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A variant reference: a name, or `true`/`false` for boolean flags.
pub(super) fn resolve_variant(
    sink: &mut Sink<'_>,
    flag: &str,
    flag_type: FlagType,
    variants: &[(Variant, Pos)],
    node: &Node,
    what: &str,
) -> Option<usize> {
    let found = match (&node.kind, flag_type) {
        (Kind::Str(name), _) => variants.iter().position(|(v, _)| *v.name == **name),
        (Kind::Bool(b), FlagType::Boolean) => variants
            .iter()
            .position(|(v, _)| v.value == Value::Bool(*b)),
        (other, _) => {
            let expected = if flag_type == FlagType::Boolean {
                "a variant name, `true` or `false`"
            } else {
                "a variant name"
            };
            decode::wrong_type(sink, node.pos, what, expected, other);
            return None;
        }
    };
    if found.is_none() && !variants.is_empty() {
        let written = match &node.kind {
            Kind::Str(s) => s.clone(),
            Kind::Bool(b) => b.to_string(),
            _ => String::new(),
        };
        sink.error(
            node.pos,
            Code::UnknownVariant,
            format!(
                "{what} refers to unknown variant `{written}` of flag `{flag}`; variants: {}",
                names(variants)
            ),
        );
    }
    found
}
