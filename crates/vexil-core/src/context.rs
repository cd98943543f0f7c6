//! The evaluation context: who is asking (a targeting key) and what we know about them.

use std::collections::HashMap;

pub type Attributes = HashMap<String, AttrValue, foldhash::fast::RandomState>;

/// A typed attribute value, as client libraries send them (numbers are doubles, as in JSON
/// and protobuf `Struct`).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum AttrValue {
    #[default]
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    List(Vec<AttrValue>),
    Object(Attributes),
}

impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        AttrValue::String(v.to_owned())
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::String(v)
    }
}
impl From<f64> for AttrValue {
    fn from(v: f64) -> Self {
        AttrValue::Number(v)
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Number(v as f64)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}
impl<T: Into<AttrValue>> From<Vec<T>> for AttrValue {
    fn from(v: Vec<T>) -> Self {
        AttrValue::List(v.into_iter().map(Into::into).collect())
    }
}

impl AttrValue {
    /// Converts JSON (from the CLI, tests and HTTP fronts) into an attribute value.
    pub fn from_json(value: &serde_json::Value) -> AttrValue {
        match value {
            serde_json::Value::Null => AttrValue::Null,
            serde_json::Value::Bool(b) => AttrValue::Bool(*b),
            serde_json::Value::Number(n) => n.as_f64().map_or(AttrValue::Null, AttrValue::Number),
            serde_json::Value::String(s) => AttrValue::String(s.clone()),
            serde_json::Value::Array(items) => {
                AttrValue::List(items.iter().map(AttrValue::from_json).collect())
            }
            serde_json::Value::Object(map) => AttrValue::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), AttrValue::from_json(v)))
                    .collect(),
            ),
        }
    }
}

/// Who an evaluation is for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// The entity: user, account, device, Flipper actor id. Rollouts and splits bucket by it.
    pub targeting_key: Option<String>,
    pub attributes: Attributes,
}

impl Context {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_key(key: impl Into<String>) -> Self {
        Context {
            targeting_key: Some(key.into()),
            attributes: Attributes::default(),
        }
    }

    /// Builder-style attribute setter, for tests and examples.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<AttrValue>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// Finds an attribute by the compiled path: the whole name first (a key may contain a dot),
    /// then the nested path; `targeting_key` falls back to the targeting key.
    pub(crate) fn lookup<'c>(&'c self, path: &crate::snapshot::AttrPath) -> Option<Attr<'c>> {
        if let Some(v) = self.attributes.get(&*path.full) {
            return Attr::of(v);
        }
        if let Some((first, rest)) = path.parts.split_first() {
            if !rest.is_empty() {
                let mut current = self.attributes.get(&**first)?;
                for part in rest {
                    let AttrValue::Object(map) = current else {
                        return None;
                    };
                    current = map.get(&**part)?;
                }
                return Attr::of(current);
            }
        }
        if path.is_targeting_key {
            return self.targeting_key.as_deref().map(Attr::Str);
        }
        None
    }
}

/// A borrowed view of a present (non-null) attribute value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Attr<'c> {
    Str(&'c str),
    Num(f64),
    Bool(bool),
    List(&'c [AttrValue]),
    Object,
}

impl<'c> Attr<'c> {
    pub(crate) fn of(v: &'c AttrValue) -> Option<Attr<'c>> {
        Some(match v {
            AttrValue::Null => return None,
            AttrValue::Bool(b) => Attr::Bool(*b),
            AttrValue::Number(n) => Attr::Num(*n),
            AttrValue::String(s) => Attr::Str(s),
            AttrValue::List(items) => Attr::List(items),
            AttrValue::Object(_) => Attr::Object,
        })
    }
}
