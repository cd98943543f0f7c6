//! YAML text -> a tree of nodes that remember where they came from.
//!
//! The tree is built straight from the events of granit-parser (the YAML parser under
//! serde-saphyr), with budgets against alias bombs and deep nesting, duplicate keys as errors and
//! the YAML 1.2 core schema (`on`/`yes` are text). The format decoder then walks the tree by hand
//! so that it can report *every* problem of a file at its own line and column, instead of
//! stopping at the first as serde would.

use std::collections::{HashMap, HashSet};

use serde_saphyr::granit_parser::{self, Event, Parser, ScalarStyle};

use crate::diag::{Code, Pos};

/// Deepest nesting a flag file may use; real files stay under 10.
pub const MAX_DEPTH: usize = 64;
/// Most nodes a file may expand to, aliases included (stops "billion laughs" files).
pub const MAX_NODES: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Kind {
    /// What a user would call this kind of value, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Kind::Null => "nothing (null)",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a map",
        }
    }
}

/// A YAML error: where, which code, and a message without the parser's own location suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub pos: Pos,
    pub code: Code,
    pub message: String,
}

/// Parses one YAML document. An empty document is `Kind::Null`.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut builder = Builder::default();
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| scan_error(&e))?;
        let pos = Pos {
            line: clamp(span.start.line()),
            column: clamp(span.start.col().saturating_add(1)),
        };
        builder.event(event, pos)?;
    }
    Ok(builder.root.unwrap_or(Node {
        pos: Pos::START,
        kind: Kind::Null,
    }))
}

fn clamp(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn scan_error(e: &granit_parser::ScanError) -> YamlError {
    let m = e.marker();
    let pos = Pos {
        line: clamp(m.line().max(1)),
        column: clamp(m.col().saturating_add(1)),
    };
    // The parser's own recursion guard can fire before our depth budget in flow collections.
    if e.info().contains("recursion limit") {
        return limit(pos, "nesting too deep");
    }
    YamlError {
        pos,
        code: Code::YamlSyntax,
        message: format!("invalid YAML: {}", e.info()),
    }
}

fn limit(pos: Pos, what: &str) -> YamlError {
    YamlError {
        pos,
        code: Code::YamlLimit,
        message: format!(
            "the YAML is too large or too deeply nested once anchors and aliases are expanded \
             (at most {MAX_NODES} nodes and {MAX_DEPTH} levels): {what}"
        ),
    }
}

/// Builds the tree from parser events (directly, without serde: this is the hot part of
/// compiling a large repository), enforcing the depth and node budgets as it goes.
#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    /// Anchored nodes by anchor id, with their node counts (aliases count in full).
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
    documents: usize,
    root: Option<Node>,
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
        first_node: usize,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        first_node: usize,
    },
}

impl Builder {
    fn event(&mut self, event: Event<'_>, pos: Pos) -> Result<(), YamlError> {
        match event {
            Event::DocumentStart(..) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(YamlError {
                        pos,
                        code: Code::YamlSyntax,
                        message: "a flag file holds one YAML document: move this `---` document into a file of its own".into(),
                    });
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                self.count(1, pos)?;
                let kind = resolve(&value, style, tag.as_deref());
                self.add(Node { pos, kind }, anchor, 1);
            }
            Event::SequenceStart(_, anchor, _) => {
                let first_node = self.nodes;
                self.open(pos)?;
                self.stack.push(Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                    first_node,
                });
            }
            Event::MappingStart(_, anchor, _) => {
                let first_node = self.nodes;
                self.open(pos)?;
                self.stack.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                    first_node,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor, size) = match self.stack.pop() {
                    Some(Frame::Seq {
                        pos,
                        anchor,
                        items,
                        first_node,
                    }) => (
                        Node {
                            pos,
                            kind: Kind::Seq(items),
                        },
                        anchor,
                        self.nodes - first_node,
                    ),
                    Some(Frame::Map {
                        pos,
                        anchor,
                        entries,
                        first_node,
                        ..
                    }) => {
                        check_duplicates(&entries)?;
                        (
                            Node {
                                pos,
                                kind: Kind::Map(merge_keys(entries)?),
                            },
                            anchor,
                            self.nodes - first_node,
                        )
                    }
                    None => return Ok(()),
                };
                self.add(node, anchor, size);
            }
            Event::Alias(id) => {
                let Some((node, size)) = self.anchors.get(&id).cloned() else {
                    return Err(YamlError {
                        pos,
                        code: Code::YamlSyntax,
                        message: "invalid YAML: alias to an unknown anchor".into(),
                    });
                };
                self.count(size, pos)?;
                self.add(
                    Node {
                        pos,
                        kind: node.kind,
                    },
                    0,
                    size,
                );
            }
            Event::UnresolvedAlias(name) => {
                return Err(YamlError {
                    pos,
                    code: Code::YamlSyntax,
                    message: format!("invalid YAML: unknown anchor `{name}`"),
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn open(&mut self, pos: Pos) -> Result<(), YamlError> {
        self.count(1, pos)?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(limit(pos, "nesting too deep"));
        }
        Ok(())
    }

    fn count(&mut self, n: usize, pos: Pos) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(limit(pos, "too many nodes"));
        }
        Ok(())
    }

    /// Attaches a finished node to its parent (or makes it the root), remembering anchors.
    fn add(&mut self, node: Node, anchor: usize, size: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => *key = Some(node),
            },
        }
    }
}

/// A scalar key's identity, borrowed (keys are compared by value: `1` and `"1"` differ).
#[derive(PartialEq, Eq, Hash)]
enum KeyId<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Float(u64),
    Null,
}

fn key_id(key: &Node) -> Option<KeyId<'_>> {
    Some(match &key.kind {
        Kind::Str(s) => KeyId::Str(s),
        Kind::Int(i) => KeyId::Int(*i),
        Kind::Bool(b) => KeyId::Bool(*b),
        Kind::Float(f) => KeyId::Float(f.to_bits()),
        Kind::Null => KeyId::Null,
        Kind::Seq(_) | Kind::Map(_) => return None,
    })
}

fn key_text(key: &Node) -> String {
    match &key.kind {
        Kind::Str(s) => s.clone(),
        Kind::Int(i) => i.to_string(),
        Kind::Bool(b) => b.to_string(),
        Kind::Float(f) => f.to_string(),
        Kind::Null | Kind::Seq(_) | Kind::Map(_) => "null".into(),
    }
}

/// Reports the later of two equal keys.
fn check_duplicates(entries: &[(Node, Node)]) -> Result<(), YamlError> {
    if entries.len() < 2 {
        return Ok(());
    }
    let mut seen: HashSet<KeyId<'_>> = HashSet::with_capacity(entries.len());
    for (key, _) in entries {
        if key_id(key).is_some_and(|id| !seen.insert(id)) {
            return Err(YamlError {
                pos: key.pos,
                code: Code::DuplicateKey,
                message: format!(
                    "duplicate key `{}` in this map: remove or rename one of them",
                    key_text(key)
                ),
            });
        }
    }
    Ok(())
}

fn is_merge_key(key: &Node) -> bool {
    matches!(&key.kind, Kind::Str(s) if s == "<<")
}

/// Applies YAML merge keys (`<<: *defaults` or `<<: [*a, *b]`): merged entries are added unless
/// the map already has the key, and earlier merged maps win over later ones.
fn merge_keys(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, YamlError> {
    if !entries.iter().any(|(k, _)| is_merge_key(k)) {
        return Ok(entries);
    }
    let (merges, mut own): (Vec<_>, Vec<_>) =
        entries.into_iter().partition(|(k, _)| is_merge_key(k));
    for (key, value) in merges {
        let sources = match value.kind {
            Kind::Seq(items) => items,
            kind => vec![Node {
                pos: value.pos,
                kind,
            }],
        };
        for source in sources {
            let Kind::Map(merged) = source.kind else {
                return Err(YamlError {
                    pos: key.pos,
                    code: Code::YamlSyntax,
                    message: "invalid YAML: `<<` merges a map or a list of maps".into(),
                });
            };
            for (k, v) in merged {
                let id = key_id(&k);
                if id.is_none() || !own.iter().any(|(o, _)| key_id(o) == id) {
                    own.push((k, v));
                }
            }
        }
    }
    Ok(own)
}

/// YAML 1.2 core schema for plain scalars; quoted and block scalars (and `!!str`) are text.
fn resolve(value: &str, style: ScalarStyle, tag: Option<&granit_parser::Tag>) -> Kind {
    let is_str_tag = tag.is_some_and(|t| t.suffix() == "str");
    if style != ScalarStyle::Plain || is_str_tag {
        return Kind::Str(value.to_owned());
    }
    match value {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" => return Kind::Bool(true),
        "false" | "False" | "FALSE" => return Kind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Kind::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Kind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Kind::Float(f64::NAN),
        _ => {}
    }
    let bytes = value.as_bytes();
    let digits = bytes
        .strip_prefix(b"-")
        .or_else(|| bytes.strip_prefix(b"+"))
        .unwrap_or(bytes);
    if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
        return value.parse::<i64>().map_or_else(
            |_| Kind::Float(value.parse().unwrap_or(f64::NAN)),
            Kind::Int,
        );
    }
    if let Some(hex) = value.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Kind::Int(i);
        }
    }
    if let Some(oct) = value.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return Kind::Int(i);
        }
    }
    let looks_float = !digits.is_empty()
        && digits
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.iter().any(u8::is_ascii_digit)
        && matches!(digits.first(), Some(b'0'..=b'9' | b'.'));
    if looks_float {
        if let Ok(f) = value.parse::<f64>() {
            return Kind::Float(f);
        }
    }
    Kind::Str(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_point_at_keys_and_values() {
        let Ok(n) = parse("a:\n  b: \"x\"\n") else {
            panic!("parse failed")
        };
        let Kind::Map(top) = &n.kind else {
            panic!("not a map")
        };
        let Some((key, value)) = top.first() else {
            panic!("empty")
        };
        assert_eq!(key.pos, Pos { line: 1, column: 1 });
        let Kind::Map(inner) = &value.kind else {
            panic!("not a map")
        };
        let Some((k, v)) = inner.first() else {
            panic!("empty")
        };
        assert_eq!(k.pos, Pos { line: 2, column: 3 });
        assert_eq!(v.pos, Pos { line: 2, column: 6 });
        assert_eq!(v.kind, Kind::Str("x".into()));
    }

    #[test]
    fn only_yaml_1_2_booleans() {
        let Ok(n) = parse("[on, yes, true, \"true\"]") else {
            panic!("parse failed")
        };
        let Kind::Seq(items) = n.kind else {
            panic!("not a list")
        };
        let kinds: Vec<Kind> = items.into_iter().map(|n| n.kind).collect();
        assert_eq!(
            kinds,
            vec![
                Kind::Str("on".into()),
                Kind::Str("yes".into()),
                Kind::Bool(true),
                Kind::Str("true".into())
            ]
        );
    }

    #[test]
    fn merge_keys_fill_in_missing_keys_only() {
        let text = "base: &b {owner: a, enabled: false}\nflag:\n  <<: *b\n  owner: z\n";
        let Ok(n) = parse(text) else {
            panic!("parse failed")
        };
        let Kind::Map(top) = n.kind else {
            panic!("not a map")
        };
        let Some((_, flag)) = top.into_iter().nth(1) else {
            panic!("no flag")
        };
        let Kind::Map(fields) = flag.kind else {
            panic!("flag not a map")
        };
        let got: Vec<(String, Kind)> = fields
            .into_iter()
            .map(|(k, v)| (key_text(&k), v.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                ("owner".into(), Kind::Str("z".into())),
                ("enabled".into(), Kind::Bool(false))
            ]
        );
        let err = parse("a:\n  <<: 3\n").err().map(|e| e.code);
        assert_eq!(err, Some(Code::YamlSyntax));
    }

    #[test]
    fn duplicate_keys_are_located() {
        let err = parse("a: 1\nb:\n  c: 2\n  c: 3\n").err();
        let Some(err) = err else {
            panic!("accepted a duplicate key")
        };
        assert_eq!(err.code, Code::DuplicateKey);
        assert_eq!(err.pos, Pos { line: 4, column: 3 });
        assert!(err.message.contains("`c`"), "{}", err.message);
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_refused() {
        let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
        for (i, name) in ["b", "c", "d", "e", "f", "g", "h"].iter().enumerate() {
            let prev = ["a", "b", "c", "d", "e", "f", "g"]
                .get(i)
                .copied()
                .unwrap_or("a");
            let refs = vec![format!("*{prev}"); 10].join(",");
            bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        let err = parse(&bomb).err().map(|e| e.code);
        assert_eq!(err, Some(Code::YamlLimit));
        let deep = "[".repeat(10_000);
        let err = parse(&deep).err().map(|e| e.code);
        assert!(
            matches!(err, Some(Code::YamlLimit | Code::YamlSyntax)),
            "{err:?}"
        );
    }
}
