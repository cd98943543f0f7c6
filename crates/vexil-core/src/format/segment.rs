//! One segment definition: ids, includes and conditions; references stay names for `compile`.

use crate::decode;
use crate::diag::{Code, Pos, Sink};
use crate::snapshot::{Condition, Mode};
use crate::yaml::{Kind, Node};

use super::condition::decode_condition;
use super::{SegmentDef, non_empty_texts};

const SEGMENT_FIELDS: &[&str] = &["description", "ids", "include", "all", "any"];

pub(super) fn decode_segment(
    sink: &mut Sink<'_>,
    key: String,
    pos: Pos,
    node: &Node,
) -> Option<SegmentDef> {
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
