//! One flag file's YAML tree -> typed definitions (see docs/format.md).
//!
//! Everything that can be checked within one file is checked here (types, variants, operators,
//! regexes, versions, dates, percentages, weights). Segment references are left as names for
//! `compile`, which sees the whole namespace.

mod condition;
mod flag;
mod rule;
mod segment;

use crate::decode::{self, Fields};
use crate::diag::{Code, Pos, Sink};
use crate::snapshot::{Condition, Flag, Mode, Origin};
use crate::yaml::Node;

use flag::decode_flag;
use segment::decode_segment;

pub const DEFAULT_NAMESPACE: &str = "default";

const FILE_FIELDS: &[&str] = &["namespace", "flags", "segments"];

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

/// `clients`: the client names a flag's `clients:` may list (`CompileOptions::clients`).
pub(crate) fn decode_file(sink: &mut Sink<'_>, root: &Node, clients: Option<&[&str]>) -> FileDef {
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
                def.flags.push(decode_flag(sink, key, pos, node, clients));
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

fn conflict(sink: &mut Sink<'_>, f: &Fields<'_>, field: &str, message: &str) {
    sink.error(
        f.key_pos(field).unwrap_or_default(),
        Code::ConflictingFields,
        message.to_owned(),
    );
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
