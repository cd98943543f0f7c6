//! Request contexts in core form: one conversion per wire shape (vexil.v1's `Context`, an
//! OpenFeature `Struct`, OFREP's JSON, an Unleash context) and one limits check (`Budget`) for
//! all of them.

use prost_types::value::Kind;
use serde_json::Value as Json;
use vexil_core::{AttrValue, Context};

use crate::evaluation::Error;
use crate::proto;

/// Bounds on what a request may carry.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest request message accepted, in bytes.
    pub max_message_bytes: usize,
    /// The most flags one EvaluateBatch may name.
    pub max_batch: usize,
    /// How deeply context attributes may nest (lists and objects).
    pub max_context_depth: usize,
    /// The most attribute values (nested ones included) one context may carry.
    pub max_context_values: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_bytes: 1 << 20,
            max_batch: 1000,
            max_context_depth: 8,
            max_context_values: 1000,
        }
    }
}

/// The limits check every conversion makes for every attribute value.
struct Budget {
    values_left: usize,
    max_depth: usize,
}

impl Budget {
    fn new(limits: &Limits) -> Budget {
        Budget {
            values_left: limits.max_context_values,
            max_depth: limits.max_context_depth,
        }
    }

    /// One more value, at `depth` (1 for a top-level attribute).
    fn take(&mut self, depth: usize) -> Result<(), Error> {
        if depth > self.max_depth {
            return Err(Error::InvalidContext(format!(
                "context attributes nest deeper than {} levels",
                self.max_depth
            )));
        }
        self.values_left = self.values_left.checked_sub(1).ok_or_else(|| {
            Error::InvalidContext(
                "context has too many attribute values (the limit is set by --max-context-values)"
                    .into(),
            )
        })?;
        Ok(())
    }
}

/// vexil.v1's context.
pub fn from_proto(ctx: Option<proto::Context>, limits: &Limits) -> Result<Context, Error> {
    let Some(ctx) = ctx else {
        return Ok(Context::new());
    };
    let mut budget = Budget::new(limits);
    let mut out = Context {
        targeting_key: (!ctx.targeting_key.is_empty()).then_some(ctx.targeting_key),
        attributes: Default::default(),
    };
    for (name, value) in ctx.attributes {
        let value = from_value(value, 1, &mut budget)?;
        out.attributes.insert(name, value);
    }
    Ok(out)
}

/// An OpenFeature context (flagd): a Struct whose `targetingKey` is the targeting key.
pub fn from_struct(ctx: Option<prost_types::Struct>, limits: &Limits) -> Result<Context, Error> {
    let Some(ctx) = ctx else {
        return Ok(Context::new());
    };
    let mut budget = Budget::new(limits);
    let mut out = Context::new();
    for (name, value) in ctx.fields {
        if name == "targetingKey" {
            match value.kind {
                Some(Kind::StringValue(s)) => out.targeting_key = Some(s),
                None | Some(Kind::NullValue(_)) => {}
                _ => return Err(targeting_key_not_a_string()),
            }
            continue;
        }
        let value = from_value(value, 1, &mut budget)?;
        out.attributes.insert(name, value);
    }
    Ok(out)
}

/// The one shape a JSON context may have.
fn json_object(ctx: &Json) -> Result<&serde_json::Map<String, Json>, Error> {
    match ctx {
        Json::Object(map) => Ok(map),
        _ => Err(Error::InvalidContext(
            "the context must be a JSON object".into(),
        )),
    }
}

/// An OpenFeature context as JSON (OFREP).
pub fn from_json(ctx: &Json, limits: &Limits) -> Result<Context, Error> {
    let map = json_object(ctx)?;
    let mut budget = Budget::new(limits);
    let mut out = Context::new();
    for (name, value) in map {
        if name == "targetingKey" {
            match value {
                Json::String(s) => out.targeting_key = Some(s.clone()),
                Json::Null => {}
                _ => return Err(targeting_key_not_a_string()),
            }
            continue;
        }
        check_json(value, 1, &mut budget)?;
        out.attributes
            .insert(name.clone(), AttrValue::from_json(value));
    }
    Ok(out)
}

/// An Unleash context as JSON (the frontend API): `userId` is the targeting key (as the Unleash
/// mirror exports it), every other field (`sessionId`, `remoteAddress`, `environment`,
/// `appName`, `currentTime`, any other) the attribute of its name, and each of `properties`
/// too, on top (as the Unleash server merges them).
pub fn from_unleash(ctx: &Json, limits: &Limits) -> Result<Context, Error> {
    let map = json_object(ctx)?;
    let mut budget = Budget::new(limits);
    let mut out = Context::new();
    for (name, value) in map {
        match (name.as_str(), value) {
            ("userId", Json::String(s)) => out.targeting_key = Some(s.clone()),
            // SDKs in typed languages may send a numeric or boolean id; the Unleash server
            // stringifies it as JavaScript does (`String(1.0)` is "1").
            ("userId", Json::Number(n)) => out.targeting_key = n.as_f64().map(js_number_text),
            ("userId", Json::Bool(b)) => out.targeting_key = Some(b.to_string()),
            ("userId" | "properties", Json::Null) => {}
            ("userId", _) => {
                return Err(Error::InvalidContext("userId must be a string".into()));
            }
            ("properties", Json::Object(_)) => {}
            ("properties", _) => {
                return Err(Error::InvalidContext(
                    "properties must be a JSON object".into(),
                ));
            }
            _ => {
                check_json(value, 1, &mut budget)?;
                out.attributes
                    .insert(name.clone(), AttrValue::from_json(value));
            }
        }
    }
    if let Some(Json::Object(properties)) = map.get("properties") {
        for (name, value) in properties {
            check_json(value, 1, &mut budget)?;
            out.attributes
                .insert(name.clone(), AttrValue::from_json(value));
        }
    }
    out.targeting_key = out.targeting_key.filter(|k| !k.is_empty());
    Ok(out)
}

/// A number as JavaScript's `String(n)` writes it (ECMA-262 Number::toString): the shortest
/// digits that read back (as Rust's), in plain notation from 1e-6 up to below 1e21, else
/// `d.ddde+N` / `de-N`; `-0` as "0".
fn js_number_text(n: f64) -> String {
    if n == 0.0 {
        return "0".into();
    }
    if !n.is_finite() {
        // JSON has no infinities or NaN; written as Rust does rather than mis-split below.
        return n.to_string();
    }
    let sci = format!("{:e}", n.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let k = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    // The decimal point sits after `point` digits.
    let point = exponent + 1;
    let sign = if n < 0.0 { "-" } else { "" };
    let body = if k <= point && point <= 21 {
        format!(
            "{digits}{}",
            "0".repeat(usize::try_from(point - k).unwrap_or(0))
        )
    } else if 0 < point && point <= 21 {
        let (int, frac) = digits.split_at(usize::try_from(point).unwrap_or(0));
        format!("{int}.{frac}")
    } else if -6 < point && point <= 0 {
        format!(
            "0.{}{digits}",
            "0".repeat(usize::try_from(-point).unwrap_or(0))
        )
    } else {
        let e_sign = if point - 1 < 0 { '-' } else { '+' };
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        format!("{first}{dot}{rest}e{e_sign}{}", (point - 1).abs())
    };
    format!("{sign}{body}")
}

fn targeting_key_not_a_string() -> Error {
    Error::InvalidContext("targetingKey must be a string".into())
}

fn check_json(v: &Json, depth: usize, budget: &mut Budget) -> Result<(), Error> {
    budget.take(depth)?;
    match v {
        Json::Array(items) => items
            .iter()
            .try_for_each(|i| check_json(i, depth + 1, budget)),
        Json::Object(m) => m
            .values()
            .try_for_each(|i| check_json(i, depth + 1, budget)),
        _ => Ok(()),
    }
}

fn from_value(
    value: prost_types::Value,
    depth: usize,
    budget: &mut Budget,
) -> Result<AttrValue, Error> {
    budget.take(depth)?;
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => AttrValue::Null,
        Some(Kind::BoolValue(b)) => AttrValue::Bool(b),
        Some(Kind::NumberValue(n)) => AttrValue::Number(n),
        Some(Kind::StringValue(s)) => AttrValue::String(s),
        Some(Kind::ListValue(list)) => AttrValue::List(
            list.values
                .into_iter()
                .map(|v| from_value(v, depth + 1, budget))
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(s)) => AttrValue::Object(
            s.fields
                .into_iter()
                .map(|(k, v)| Ok((k, from_value(v, depth + 1, budget)?)))
                .collect::<Result<_, Error>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::js_number_text;

    #[test]
    fn numbers_written_as_javascript_does() {
        for (n, js) in [
            (1.0, "1"),
            (-0.0, "0"),
            (42.5, "42.5"),
            (-3.25, "-3.25"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (123456789012345680000.0, "123456789012345680000"),
            (1e21, "1e+21"),
            (1.25e22, "1.25e+22"),
            (9007199254740993.0, "9007199254740992"),
            (0.1 + 0.2, "0.30000000000000004"),
        ] {
            assert_eq!(js_number_text(n), js, "{n}");
        }
    }
}
