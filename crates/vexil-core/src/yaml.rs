//! YAML text -> a tree of nodes that remember where they came from.
//!
//! Parsing goes through serde-saphyr (budgets against alias bombs and deep nesting, duplicate-key
//! errors, YAML 1.2 booleans only), but into a generic tree rather than typed structs: the format
//! decoder walks the tree by hand so that it can report *every* problem of a file, each at its
//! own line and column, instead of stopping at the first as serde would.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

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
    let options = serde_saphyr::options! {
        strict_booleans: true,
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_nodes: MAX_NODES,
            max_documents: 1,
        },
    };
    match serde_saphyr::from_str_with_options::<Spanned<Kind>>(text, options) {
        Ok(spanned) => Ok(node(spanned)),
        Err(err) => Err(convert_error(&err)),
    }
}

fn convert_error(err: &serde_saphyr::Error) -> YamlError {
    let pos = err
        .location()
        .filter(|l| l.line() > 0)
        .map(|l| Pos {
            line: clamp(l.line()),
            column: clamp(l.column()),
        })
        .unwrap_or(Pos::START);
    let raw = err.without_snippet().to_string();
    // serde-saphyr appends " at line N, column M" (and alias notes); we report the place ourselves.
    let message = raw
        .split(" at line ")
        .next()
        .unwrap_or(&raw)
        .trim()
        .to_owned();
    let lower = message.to_ascii_lowercase();
    if lower.contains("multiple yaml documents") || lower.contains("documents {") {
        return YamlError {
            pos,
            code: Code::YamlSyntax,
            message: "a flag file holds one YAML document: move this `---` document into a file of its own".into(),
        };
    }
    if lower.contains("budget breached")
        || lower.contains("recursion limit")
        || lower.contains("alias")
    {
        return YamlError {
            pos,
            code: Code::YamlLimit,
            message: format!(
                "the YAML is too large or too deeply nested once anchors and aliases are expanded \
                 (at most {MAX_NODES} nodes and {MAX_DEPTH} levels): {message}"
            ),
        };
    }
    if lower.contains("duplicate mapping key") {
        let key = message
            .rsplit(':')
            .next()
            .unwrap_or("")
            .split(',')
            .next()
            .unwrap_or("")
            .trim();
        return YamlError {
            pos,
            code: Code::DuplicateKey,
            message: format!("duplicate key `{key}` in this map: remove or rename one of them"),
        };
    }
    YamlError {
        pos,
        code: Code::YamlSyntax,
        message: format!("invalid YAML: {message}"),
    }
}

fn clamp(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn node(spanned: Spanned<Kind>) -> Node {
    let loc = spanned.referenced;
    Node {
        pos: Pos {
            line: clamp(loc.line()),
            column: clamp(loc.column()),
        },
        kind: spanned.value,
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        Kind::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Kind, E> {
        // Beyond i64 only a float can hold it; integer flags then report a clear type error.
        Ok(i64::try_from(v).map_or(Kind::Float(v as f64), Kind::Int))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Kind, E> {
        Ok(i64::try_from(v).map_or(Kind::Float(v as f64), Kind::Int))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Kind, E> {
        Ok(i64::try_from(v).map_or(Kind::Float(v as f64), Kind::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Kind>>()? {
            items.push(node(item));
        }
        Ok(Kind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Kind>>()? {
            let value = map.next_value::<Spanned<Kind>>()?;
            entries.push((node(key), node(value)));
        }
        Ok(Kind::Map(entries))
    }
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
