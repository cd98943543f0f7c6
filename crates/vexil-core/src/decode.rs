//! Generic helpers for decoding a spanned YAML tree by hand, reporting every problem found.

use crate::diag::{Code, Pos, Sink};
use crate::yaml::{Kind, Node};

/// The fields of a YAML map, with bookkeeping of which were read, so the rest can be reported
/// as unknown (a typo like `rulez` must never be silently ignored).
#[derive(Debug)]
pub(crate) struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
    used: Vec<bool>,
}

impl<'n> Fields<'n> {
    /// Takes a field's value, marking it as known.
    pub fn take(&mut self, name: &str) -> Option<&'n Node> {
        let i = self.entries.iter().position(|(k, _, _)| *k == name)?;
        if let Some(u) = self.used.get_mut(i) {
            *u = true;
        }
        self.entries.get(i).map(|(_, _, v)| *v)
    }

    /// The position of a field's key, if present.
    pub fn key_pos(&self, name: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, k, _)| k.pos)
    }

    /// A field's value, without marking it as read.
    pub fn peek(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(_, _, v)| *v)
    }

    pub fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|(k, _, _)| *k == name)
    }

    /// Reports every field not taken as unknown, suggesting the closest known name.
    pub fn finish(self, sink: &mut Sink<'_>, what: &str, known: &[&str]) {
        for ((name, key, _), used) in self.entries.iter().zip(&self.used) {
            // A known field left unread was skipped after another error about it.
            if *used || known.contains(name) {
                continue;
            }
            let hint = match closest(name, known) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!("known fields: {}", known.join(", ")),
            };
            sink.error(
                key.pos,
                Code::UnknownField,
                format!("unknown field `{name}` in {what}: {hint}"),
            );
        }
    }
}

/// Reads a map (an empty value counts as an empty map). Non-string keys are reported.
pub(crate) fn fields<'n>(sink: &mut Sink<'_>, node: &'n Node, what: &str) -> Option<Fields<'n>> {
    let entries = match &node.kind {
        Kind::Map(entries) => entries,
        Kind::Null => {
            return Some(Fields {
                entries: Vec::new(),
                used: Vec::new(),
            });
        }
        other => {
            wrong_type(sink, node.pos, what, "a map of fields", other);
            return None;
        }
    };
    let mut out = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        match &k.kind {
            Kind::Str(name) => out.push((name.as_str(), k, v)),
            other => wrong_type(
                sink,
                k.pos,
                &format!("a field name in {what}"),
                "a string",
                other,
            ),
        }
    }
    let used = vec![false; out.len()];
    Some(Fields { entries: out, used })
}

/// Reads a map whose keys are user-chosen names (flags, segments, variants), in written order.
pub(crate) fn named_entries<'n>(
    sink: &mut Sink<'_>,
    node: &'n Node,
    what: &str,
) -> Vec<(String, Pos, &'n Node)> {
    match &node.kind {
        Kind::Map(entries) => entries
            .iter()
            .filter_map(|(k, v)| {
                let name = scalar_key(&k.kind);
                if name.is_none() {
                    wrong_type(
                        sink,
                        k.pos,
                        &format!("a name in {what}"),
                        "a string",
                        &k.kind,
                    );
                }
                name.map(|n| (n, k.pos, v))
            })
            .collect(),
        Kind::Null => Vec::new(),
        other => {
            wrong_type(sink, node.pos, what, "a map", other);
            Vec::new()
        }
    }
}

/// Plain scalars are fine as names (`2024-sale:` or `42:`): they are text in the file.
fn scalar_key(kind: &Kind) -> Option<String> {
    match kind {
        Kind::Str(s) => Some(s.clone()),
        Kind::Int(i) => Some(i.to_string()),
        Kind::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn wrong_type(sink: &mut Sink<'_>, pos: Pos, what: &str, expected: &str, found: &Kind) {
    sink.error(
        pos,
        Code::WrongType,
        format!("{what} must be {expected}, found {}", found.describe()),
    );
}

pub(crate) fn string(sink: &mut Sink<'_>, node: &Node, what: &str) -> Option<String> {
    match &node.kind {
        Kind::Str(s) => Some(s.clone()),
        other => {
            let hint = if matches!(other, Kind::Int(_) | Kind::Float(_) | Kind::Bool(_)) {
                " (put it in quotes to make it text)"
            } else {
                ""
            };
            sink.error(
                node.pos,
                Code::WrongType,
                format!("{what} must be a string, found {}{hint}", other.describe()),
            );
            None
        }
    }
}

pub(crate) fn boolean(sink: &mut Sink<'_>, node: &Node, what: &str) -> Option<bool> {
    match &node.kind {
        Kind::Bool(b) => Some(*b),
        other => {
            wrong_type(sink, node.pos, what, "`true` or `false`", other);
            None
        }
    }
}

pub(crate) fn number(sink: &mut Sink<'_>, node: &Node, what: &str) -> Option<f64> {
    match &node.kind {
        Kind::Int(i) => Some(*i as f64),
        Kind::Float(f) if f.is_finite() => Some(*f),
        other => {
            sink.error(
                node.pos,
                Code::InvalidNumber,
                format!("{what} must be a number, found {}", other.describe()),
            );
            None
        }
    }
}

/// A list of scalars read as text (ids may be written as plain numbers).
pub(crate) fn texts(sink: &mut Sink<'_>, node: &Node, what: &str) -> Option<Vec<(String, Pos)>> {
    let Kind::Seq(items) = &node.kind else {
        wrong_type(sink, node.pos, what, "a list", &node.kind);
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        match scalar_key(&item.kind) {
            Some(s) => out.push((s, item.pos)),
            None => {
                wrong_type(
                    sink,
                    item.pos,
                    &format!("an entry of {what}"),
                    "a string",
                    &item.kind,
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// Flag, segment, variant and namespace names.
pub(crate) fn is_valid_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub(crate) fn check_key(sink: &mut Sink<'_>, name: &str, pos: Pos, what: &str) -> bool {
    if is_valid_key(name) {
        return true;
    }
    sink.error(
        pos,
        Code::InvalidKey,
        format!("invalid {what} `{name}`: use 1 to 200 ASCII letters, digits, `-`, `_` or `.`"),
    );
    false
}

/// A YAML value as JSON (object variants, metadata, operands as written).
pub(crate) fn to_json(sink: &mut Sink<'_>, node: &Node, what: &str) -> Option<serde_json::Value> {
    Some(match &node.kind {
        Kind::Null => serde_json::Value::Null,
        Kind::Bool(b) => serde_json::Value::Bool(*b),
        Kind::Int(i) => serde_json::Value::from(*i),
        Kind::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => serde_json::Value::Number(n),
            None => {
                sink.error(
                    node.pos,
                    Code::InvalidNumber,
                    format!("{what} cannot hold `{f}`: JSON has no such number"),
                );
                return None;
            }
        },
        Kind::Str(s) => serde_json::Value::String(s.clone()),
        Kind::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(to_json(sink, item, what)?);
            }
            serde_json::Value::Array(out)
        }
        Kind::Map(entries) => {
            let mut out = serde_json::Map::new();
            for (k, v) in entries {
                let Some(key) = scalar_key(&k.kind) else {
                    wrong_type(
                        sink,
                        k.pos,
                        &format!("a key in {what}"),
                        "a string",
                        &k.kind,
                    );
                    return None;
                };
                out.insert(key, to_json(sink, v, what)?);
            }
            serde_json::Value::Object(out)
        }
    })
}

/// The known name closest to a typo, if it is close enough to be what was meant.
pub(crate) fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let best = prev.get(j).map_or(usize::MAX, |p| p + cost);
            let del = prev.get(j + 1).map_or(usize::MAX, |p| p + 1);
            let ins = cur.get(j).map_or(usize::MAX, |c| c + 1);
            if let Some(slot) = cur.get_mut(j + 1) {
                *slot = best.min(del).min(ins);
            }
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(closest("rulez", &["rules", "variants"]), Some("rules"));
        assert_eq!(
            closest("descripton", &["description", "owner"]),
            Some("description")
        );
        assert_eq!(closest("zzz", &["rules", "variants"]), None);
    }

    #[test]
    fn keys() {
        assert!(is_valid_key("new-checkout_v2.beta"));
        assert!(!is_valid_key("has space"));
        assert!(!is_valid_key("slash/name"));
        assert!(!is_valid_key(""));
        assert!(!is_valid_key(&"a".repeat(201)));
    }
}
