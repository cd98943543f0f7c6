//! One rule of a flag: its matchers, bucketing and outcome (serve, rollout or split).

use crate::bucket;
use crate::decode::{self, Fields};
use crate::diag::{Code, Pos, Sink};
use crate::snapshot::{
    AttrPath, BucketBy, Condition, FlagType, Gate, Hashing, Matcher, Mode, Outcome, Rule, Value,
    Variant,
};
use crate::yaml::{Kind, Node};

use super::condition::decode_condition;
use super::flag::{names, resolve_variant};
use super::{conflict, non_empty_texts, origin};

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

pub(super) struct RuleCx<'a> {
    pub(super) flag_key: &'a str,
    pub(super) flag_type: FlagType,
    pub(super) variants: &'a [(Variant, Pos)],
    pub(super) index: usize,
    /// The flag's `bucketing`, the default of its rules.
    pub(super) bucketing: Hashing,
}

/// `bucketing: vexil | unleash | flagd`.
pub(super) fn decode_hashing(sink: &mut Sink<'_>, node: &Node) -> Option<Hashing> {
    let text = decode::string(sink, node, "`bucketing`")?;
    match text.as_str() {
        "vexil" => Some(Hashing::Vexil),
        "unleash" => Some(Hashing::Unleash),
        "flagd" => Some(Hashing::Flagd),
        other => {
            sink.error(
                node.pos,
                Code::WrongType,
                format!("`bucketing` is `vexil` (the default, Flipper's crc32), `unleash` (murmur3, as Unleash SDKs hash) or `flagd` (murmur3, as flagd's `fractional` hashes), found `{other}`"),
            );
            None
        }
    }
}

type SegmentNames = Vec<(usize, Vec<(String, Pos)>)>;

pub(super) fn decode_rule(
    sink: &mut Sink<'_>,
    cx: &RuleCx<'_>,
    node: &Node,
) -> (Option<Rule>, SegmentNames) {
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
