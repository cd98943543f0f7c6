//! One flag file's YAML tree -> typed definitions (see docs/format.md).
//!
//! Everything that can be checked within one file is checked here (types, variants, operators,
//! regexes, versions, dates, percentages, weights). Segment references are left as names for
//! `compile`, which sees the whole namespace.

use std::collections::BTreeMap;

use crate::bucket;
use crate::decode::{self, Fields};
use crate::diag::{Code, Pos, Sink};
use crate::eval::{parse_number, parse_time};
use crate::snapshot::{
    AttrPath, BucketBy, Cmp, Condition, FastSet, Flag, FlagType, Gate, Hashing, Matcher, Mode, Op,
    Origin, Outcome, Rule, Scalar, Value, Variant,
};
use crate::yaml::{Kind, Node};

pub const DEFAULT_NAMESPACE: &str = "default";

const FILE_FIELDS: &[&str] = &["namespace", "flags", "segments"];
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
];
const RULE_FIELDS: &[&str] = &[
    "name",
    "segment",
    "segments",
    "when",
    "ids",
    "groups",
    "serve",
    "rollout",
    "percentage_of_time",
    "split",
    "bucket_by",
    "salt",
    "bucketing",
];
const SEGMENT_FIELDS: &[&str] = &["description", "ids", "include", "all", "any"];
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

#[derive(Debug, Clone)]
pub(crate) struct FileDef {
    pub namespace: String,
    pub flags: Vec<FlagDef>,
    pub segments: Vec<SegmentDef>,
}

#[derive(Debug, Clone)]
pub(crate) struct FlagDef {
    pub key: String,
    pub pos: Pos,
    /// `None` when the flag has errors; its key and segment references are still checked.
    /// Complete but for the segment indices of `Matcher::Segments`, filled in by `compile`.
    pub flag: Option<Flag>,
    pub segment_refs: Vec<SegmentRef>,
}

/// Segment names a rule's `segments` matcher refers to.
#[derive(Debug, Clone)]
pub(crate) struct SegmentRef {
    /// Index into the flag's rules; `None` for a rule that failed to decode (checked only).
    pub rule: Option<usize>,
    pub matcher: usize,
    pub names: Vec<(String, Pos)>,
}

#[derive(Debug, Clone)]
pub(crate) struct SegmentDef {
    pub key: String,
    pub pos: Pos,
    pub description: Option<String>,
    pub ids: Vec<(String, Pos)>,
    pub include: Vec<(String, Pos)>,
    pub conditions: Option<(Mode, Vec<Condition>)>,
}

impl FileDef {
    pub(crate) fn empty() -> FileDef {
        FileDef {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            flags: Vec::new(),
            segments: Vec::new(),
        }
    }
}

pub(crate) fn decode_file(sink: &mut Sink<'_>, root: &Node) -> FileDef {
    let mut def = FileDef::empty();
    let Some(mut f) = decode::fields(sink, root, "a flag file") else {
        return def;
    };
    if let Some(n) = f.take("namespace") {
        if let Some(ns) = decode::string(sink, n, "`namespace`") {
            if decode::check_key(sink, &ns, n.pos, "namespace") {
                def.namespace = ns;
            }
        }
    }
    if let Some(n) = f.take("segments") {
        for (key, pos, node) in decode::named_entries(sink, n, "`segments`") {
            if decode::check_key(sink, &key, pos, "segment name") {
                if let Some(seg) = decode_segment(sink, key, pos, node) {
                    def.segments.push(seg);
                }
            }
        }
    }
    if let Some(n) = f.take("flags") {
        for (key, pos, node) in decode::named_entries(sink, n, "`flags`") {
            if decode::check_key(sink, &key, pos, "flag key") {
                def.flags.push(decode_flag(sink, key, pos, node));
            }
        }
    }
    f.finish(sink, "a flag file", FILE_FIELDS);
    def
}

fn origin(sink: &Sink<'_>, pos: Pos) -> Origin {
    Origin {
        file: sink.file.to_owned(),
        pos,
    }
}

fn decode_flag(sink: &mut Sink<'_>, key: String, pos: Pos, node: &Node) -> FlagDef {
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

fn names(variants: &[(Variant, Pos)]) -> String {
    variants
        .iter()
        .map(|(v, _)| format!("`{}`", v.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A variant reference: a name, or `true`/`false` for boolean flags.
fn resolve_variant(
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

struct RuleCx<'a> {
    flag_key: &'a str,
    flag_type: FlagType,
    variants: &'a [(Variant, Pos)],
    index: usize,
    /// The flag's `bucketing`, the default of its rules.
    bucketing: Hashing,
}

/// `bucketing: vexil | unleash`.
fn decode_hashing(sink: &mut Sink<'_>, node: &Node) -> Option<Hashing> {
    let text = decode::string(sink, node, "`bucketing`")?;
    match text.as_str() {
        "vexil" => Some(Hashing::Vexil),
        "unleash" => Some(Hashing::Unleash),
        other => {
            sink.error(
                node.pos,
                Code::WrongType,
                format!("`bucketing` is `vexil` (the default, Flipper's crc32) or `unleash` (murmur3, as Unleash SDKs hash), found `{other}`"),
            );
            None
        }
    }
}

type SegmentNames = Vec<(usize, Vec<(String, Pos)>)>;

fn decode_rule(sink: &mut Sink<'_>, cx: &RuleCx<'_>, node: &Node) -> (Option<Rule>, SegmentNames) {
    let position = (cx.index + 1).to_string();
    let Some(mut f) = decode::fields(
        sink,
        node,
        &format!("rule {position} of flag `{}`", cx.flag_key),
    ) else {
        return (None, Vec::new());
    };
    let errors_before = sink.errors();
    let name = f
        .take("name")
        .and_then(|n| decode::string(sink, n, "rule `name`"))
        .unwrap_or(position);

    let mut matchers = Vec::new();
    let mut refs = Vec::new();
    if f.has("segment") && f.has("segments") {
        conflict(
            sink,
            &f,
            "segments",
            "`segment` and `segments` cannot be used together: list them all under `segments`",
        );
    }
    if let Some(n) = f.take("segment") {
        if let Some(s) = decode::string(sink, n, "`segment`") {
            refs.push((matchers.len(), vec![(s, n.pos)]));
            matchers.push(Matcher::Segments(Mode::All, Vec::new()));
        }
    }
    if let Some(n) = f.take("segments") {
        if let Some((mode, list)) = mode_list(sink, n, "`segments`") {
            let names = list.iter().filter_map(|item| {
                decode::string(sink, item, "a segment name").map(|s| (s, item.pos))
            });
            refs.push((matchers.len(), names.collect()));
            matchers.push(Matcher::Segments(mode, Vec::new()));
        }
    }
    if let Some(n) = f.take("when") {
        if let Some((mode, list)) = mode_list(sink, n, "`when`") {
            let conditions: Vec<Condition> = list
                .iter()
                .filter_map(|c| decode_condition(sink, c))
                .collect();
            matchers.push(Matcher::Conditions(mode, conditions));
        }
    }
    if let Some(n) = f.take("ids") {
        if let Some(ids) = non_empty_texts(sink, n, "`ids`") {
            matchers.push(Matcher::Ids(
                ids.into_iter().map(|(s, _)| s.into_boxed_str()).collect(),
            ));
        }
    }
    if let Some(n) = f.take("groups") {
        if let Some(groups) = non_empty_texts(sink, n, "`groups`") {
            matchers.push(Matcher::Groups(
                groups
                    .into_iter()
                    .map(|(s, _)| s.into_boxed_str())
                    .collect(),
            ));
        }
    }

    let bucket_by = f
        .take("bucket_by")
        .and_then(|n| decode::string(sink, n, "`bucket_by`"));
    let salt = f
        .take("salt")
        .and_then(|n| decode::string(sink, n, "`salt`"));
    let bucketing_pos = f.key_pos("bucketing");
    let hashing = f
        .take("bucketing")
        .and_then(|n| decode_hashing(sink, n))
        .unwrap_or(cx.bucketing);
    let bucket = BucketBy {
        attr: bucket_by.as_deref().map(AttrPath::new),
        salt: salt.as_deref().unwrap_or(cx.flag_key).into(),
        hashing,
    };
    if hashing == Hashing::Unleash {
        check_unleash_precision(sink, &f, bucketing_pos.unwrap_or(node.pos));
    }
    let outcome = decode_outcome(sink, cx, &mut f, node.pos, bucket);
    f.finish(
        sink,
        &format!("rule `{name}` of flag `{}`", cx.flag_key),
        RULE_FIELDS,
    );
    let outcome = outcome.filter(|_| sink.errors() == errors_before);
    let rule = outcome.map(|outcome| Rule {
        name: name.into(),
        matchers,
        outcome,
        origin: origin(sink, node.pos),
    });
    (rule, refs)
}

fn conflict(sink: &mut Sink<'_>, f: &Fields<'_>, field: &str, message: &str) {
    sink.error(
        f.key_pos(field).unwrap_or_default(),
        Code::ConflictingFields,
        message.to_owned(),
    );
}

fn decode_outcome(
    sink: &mut Sink<'_>,
    cx: &RuleCx<'_>,
    f: &mut Fields<'_>,
    rule_pos: Pos,
    bucket: BucketBy,
) -> Option<Outcome> {
    let gates: Vec<&str> = ["rollout", "percentage_of_time"]
        .into_iter()
        .filter(|g| f.has(g))
        .collect();
    let bucket_options: Vec<&str> = ["bucket_by", "salt", "bucketing"]
        .into_iter()
        .filter(|g| f.has(g))
        .collect();
    if f.has("split") {
        for other in ["serve", "rollout", "percentage_of_time"] {
            if f.has(other) {
                conflict(
                    sink,
                    f,
                    other,
                    &format!("a rule has one outcome: `split` cannot be combined with `{other}`"),
                );
            }
        }
        let node = f.take("split")?;
        return decode_split(sink, cx, node)
            .map(|boundaries| Outcome::Split { boundaries, bucket });
    }
    if gates.len() > 1 {
        conflict(
            sink,
            f,
            "percentage_of_time",
            "`rollout` and `percentage_of_time` cannot be combined: choose one",
        );
        return None;
    }
    if gates.first() != Some(&"rollout") {
        for option in &bucket_options {
            conflict(
                sink,
                f,
                option,
                &format!("`{option}` only applies to `rollout` and `split`"),
            );
        }
    }
    // Percentages are checked before `serve` so both problems are reported together.
    let rollout = f.take("rollout").map(|n| percentage(sink, n, "`rollout`"));
    let percentage_of_time = f
        .take("percentage_of_time")
        .map(|n| percentage(sink, n, "`percentage_of_time`"));
    let serve = match f.take("serve") {
        Some(n) => resolve_variant(sink, cx.flag_key, cx.flag_type, cx.variants, n, "`serve`")?,
        None if !gates.is_empty() && cx.flag_type == FlagType::Boolean => {
            let Some(i) = cx
                .variants
                .iter()
                .position(|(v, _)| v.value == Value::Bool(true))
            else {
                sink.error(
                    rule_pos,
                    Code::MissingField,
                    "this boolean flag has no `true` variant: say which variant to `serve`",
                );
                return None;
            };
            i
        }
        None => {
            let message = if gates.is_empty() {
                "a rule needs an outcome: `serve`, `rollout`, `percentage_of_time` or `split`"
                    .to_owned()
            } else {
                format!(
                    "a `{}` of a {} flag must say which variant to `serve`",
                    gates.join(""),
                    cx.flag_type.as_str()
                )
            };
            sink.error(rule_pos, Code::MissingField, message);
            return None;
        }
    };
    let gate = if let Some(threshold) = rollout {
        Gate::Rollout {
            threshold: threshold?,
            bucket,
        }
    } else if let Some(threshold) = percentage_of_time {
        Gate::PercentageOfTime {
            threshold: threshold?,
        }
    } else {
        Gate::Always
    };
    Some(Outcome::Serve {
        variant: serve,
        gate,
    })
}

/// Unleash rollouts are whole percentages and its variant weights thousandths: with
/// `bucketing: unleash`, a rollout must be whole and split weights multiples of 0.1.
fn check_unleash_precision(sink: &mut Sink<'_>, f: &Fields<'_>, pos: Pos) {
    let number = |n: &Node| match n.kind {
        Kind::Int(i) => Some(i as f64),
        Kind::Float(x) => Some(x),
        _ => None,
    };
    if let Some(p) = f.peek("rollout").and_then(number) {
        if p.fract() != 0.0 {
            sink.error(
                pos,
                Code::PercentageRange,
                format!("with `bucketing: unleash` a rollout is a whole percentage (Unleash's rollout is an integer), found {p}"),
            );
        }
    }
    if let Some(Kind::Map(entries)) = f.peek("split").map(|n| &n.kind) {
        for (name, weight) in entries {
            if let Some(w) = number(weight) {
                if ((w * 10.0).round() - w * 10.0).abs() > 1e-9 {
                    sink.error(
                        name.pos,
                        Code::PercentageRange,
                        format!("with `bucketing: unleash` split weights are multiples of 0.1 (Unleash weighs variants in thousandths), found {w}"),
                    );
                }
            }
        }
    }
}

fn percentage(sink: &mut Sink<'_>, node: &Node, what: &str) -> Option<u32> {
    let p = decode::number(sink, node, what)?;
    let t = bucket::threshold(p);
    if t.is_none() {
        sink.error(
            node.pos,
            Code::PercentageRange,
            format!(
                "{what} must be a percentage from 0 to 100 with at most three decimals, found {p}"
            ),
        );
    }
    t
}

fn decode_split(sink: &mut Sink<'_>, cx: &RuleCx<'_>, node: &Node) -> Option<Vec<(u32, usize)>> {
    let entries = decode::named_entries(sink, node, "`split`");
    if entries.is_empty() {
        sink.error(
            node.pos,
            Code::MissingField,
            "`split` needs at least one variant with a weight",
        );
        return None;
    }
    let mut boundaries = Vec::with_capacity(entries.len());
    let mut total: u32 = 0;
    let mut ok = true;
    for (name, pos, weight) in entries {
        let Some(index) = cx.variants.iter().position(|(v, _)| *v.name == *name) else {
            sink.error(
                pos,
                Code::UnknownVariant,
                format!(
                    "`split` refers to unknown variant `{name}` of flag `{}`; variants: {}",
                    cx.flag_key,
                    names(cx.variants)
                ),
            );
            ok = false;
            continue;
        };
        let Some(w) = percentage(sink, weight, &format!("the weight of `{name}`")) else {
            ok = false;
            continue;
        };
        total = total.saturating_add(w);
        boundaries.push((total, index));
    }
    if ok && total != bucket::BUCKETS {
        sink.error(
            node.pos,
            Code::SplitWeights,
            format!(
                "split weights must sum to 100, they sum to {}",
                f64::from(total) / 1000.0
            ),
        );
        return None;
    }
    ok.then_some(boundaries)
}

fn non_empty_texts(sink: &mut Sink<'_>, node: &Node, what: &str) -> Option<Vec<(String, Pos)>> {
    let list = decode::texts(sink, node, what)?;
    if list.is_empty() {
        sink.error(
            node.pos,
            Code::MissingField,
            format!("{what} is empty: list at least one, or remove it"),
        );
        return None;
    }
    Some(list)
}

/// `[a, b]` (all), `{all: [a, b]}` or `{any: [a, b]}`.
fn mode_list<'n>(sink: &mut Sink<'_>, node: &'n Node, what: &str) -> Option<(Mode, &'n [Node])> {
    let (mode, list_node) = match &node.kind {
        Kind::Seq(_) => (Mode::All, node),
        Kind::Map(_) => {
            let mut f = decode::fields(sink, node, what)?;
            let all = f.take("all");
            let any = f.take("any");
            f.finish(sink, what, &["all", "any"]);
            match (all, any) {
                (Some(n), None) => (Mode::All, n),
                (None, Some(n)) => (Mode::Any, n),
                (Some(_), Some(n)) => {
                    sink.error(
                        n.pos,
                        Code::ConflictingFields,
                        format!("{what} takes `all` or `any`, not both"),
                    );
                    return None;
                }
                (None, None) => {
                    sink.error(
                        node.pos,
                        Code::MissingField,
                        format!("{what} needs `all:` or `any:` with a list"),
                    );
                    return None;
                }
            }
        }
        other => {
            decode::wrong_type(
                sink,
                node.pos,
                what,
                "a list, or a map with `all` or `any`",
                other,
            );
            return None;
        }
    };
    match &list_node.kind {
        Kind::Seq(items) if !items.is_empty() => Some((mode, items)),
        Kind::Seq(_) => {
            sink.error(
                list_node.pos,
                Code::MissingField,
                format!("{what} is empty: list at least one, or remove it"),
            );
            None
        }
        other => {
            decode::wrong_type(sink, list_node.pos, what, "a list", other);
            None
        }
    }
}

fn decode_segment(sink: &mut Sink<'_>, key: String, pos: Pos, node: &Node) -> Option<SegmentDef> {
    let what = format!("segment `{key}`");
    let mut f = decode::fields(sink, node, &what)?;
    let description = f
        .take("description")
        .and_then(|n| decode::string(sink, n, "`description`"));
    let ids = f
        .take("ids")
        .and_then(|n| non_empty_texts(sink, n, "`ids`"))
        .unwrap_or_default();
    let include = f
        .take("include")
        .and_then(|n| non_empty_texts(sink, n, "`include`"))
        .unwrap_or_default();
    let all = f.take("all");
    let any = f.take("any");
    let conditions = match (all, any) {
        (Some(_), Some(n)) => {
            sink.error(
                n.pos,
                Code::ConflictingFields,
                format!("{what} takes `all` or `any`, not both"),
            );
            None
        }
        (Some(n), None) => condition_list(sink, n, "`all`").map(|c| (Mode::All, c)),
        (None, Some(n)) => condition_list(sink, n, "`any`").map(|c| (Mode::Any, c)),
        (None, None) => None,
    };
    let had_fields = ["ids", "include", "all", "any"].iter().any(|k| f.has(k));
    f.finish(sink, &what, SEGMENT_FIELDS);
    if !had_fields {
        sink.error(
            pos,
            Code::EmptySegment,
            format!("{what} matches nobody: give it `ids`, `include`, `all` or `any`"),
        );
        return None;
    }
    Some(SegmentDef {
        key,
        pos,
        description,
        ids,
        include,
        conditions,
    })
}

fn condition_list(sink: &mut Sink<'_>, node: &Node, what: &str) -> Option<Vec<Condition>> {
    match &node.kind {
        Kind::Seq(items) if !items.is_empty() => {
            let before = items.len();
            let out: Vec<Condition> = items
                .iter()
                .filter_map(|c| decode_condition(sink, c))
                .collect();
            (out.len() == before).then_some(out)
        }
        Kind::Seq(_) => {
            sink.error(
                node.pos,
                Code::MissingField,
                format!("{what} is empty: list at least one condition"),
            );
            None
        }
        other => {
            decode::wrong_type(sink, node.pos, what, "a list of conditions", other);
            None
        }
    }
}

fn decode_condition(sink: &mut Sink<'_>, node: &Node) -> Option<Condition> {
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
