//! Conversions from the core's types to the vexil.v1 messages (and OpenFeature's reasons).

use std::time::SystemTime;

use prost_types::value::Kind;
use vexil_core::diff::FlagRef;
use vexil_core::eval::Reason;
use vexil_core::snapshot::{FlagType, Value};
use vexil_core::{AttemptResult, Diagnostic, Severity};

use crate::evaluation::Error;
use crate::proto;

/// OpenFeature's reason for an evaluation: STATIC only when the answer cannot depend on the
/// context (clients cache those), TARGETING_MATCH for any rule (splits included), DEFAULT,
/// DISABLED.
pub fn openfeature_reason(r: Reason) -> &'static str {
    match r {
        Reason::Static => "STATIC",
        Reason::TargetingMatch | Reason::Split => "TARGETING_MATCH",
        Reason::Default => "DEFAULT",
        Reason::Disabled => "DISABLED",
    }
}

pub fn flag_type(t: FlagType) -> proto::FlagType {
    match t {
        FlagType::Boolean => proto::FlagType::Boolean,
        FlagType::String => proto::FlagType::String,
        FlagType::Integer => proto::FlagType::Integer,
        FlagType::Float => proto::FlagType::Float,
        FlagType::Object => proto::FlagType::Object,
    }
}

/// The core type a request's `expected_type` names (`None`: any).
pub fn expected_type(t: i32) -> Result<Option<FlagType>, Error> {
    Ok(match proto::FlagType::try_from(t) {
        Ok(proto::FlagType::Unspecified) => None,
        Ok(proto::FlagType::Boolean) => Some(FlagType::Boolean),
        Ok(proto::FlagType::String) => Some(FlagType::String),
        Ok(proto::FlagType::Integer) => Some(FlagType::Integer),
        Ok(proto::FlagType::Float) => Some(FlagType::Float),
        Ok(proto::FlagType::Object) => Some(FlagType::Object),
        Err(_) => {
            return Err(Error::BadRequest(format!("unknown expected_type {t}")));
        }
    })
}

pub fn reason(r: Reason) -> proto::Reason {
    match r {
        Reason::Static => proto::Reason::Static,
        Reason::TargetingMatch => proto::Reason::TargetingMatch,
        Reason::Split => proto::Reason::Split,
        Reason::Default => proto::Reason::Default,
        Reason::Disabled => proto::Reason::Disabled,
    }
}

pub fn value(v: &Value) -> proto::Value {
    use proto::value::Kind as K;
    let kind = match v {
        Value::Bool(b) => K::BoolValue(*b),
        Value::String(s) => K::StringValue(s.to_string()),
        Value::Integer(i) => K::IntegerValue(*i),
        Value::Float(f) => K::FloatValue(*f),
        Value::Object(o) => K::ObjectValue(json_struct(o)),
    };
    proto::Value { kind: Some(kind) }
}

/// A JSON object as a protobuf Struct (anything else becomes an empty Struct).
pub fn json_struct(v: &serde_json::Value) -> prost_types::Struct {
    match v {
        serde_json::Value::Object(map) => prost_types::Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), json_value(v)))
                .collect(),
        },
        _ => prost_types::Struct::default(),
    }
}

pub fn json_value(v: &serde_json::Value) -> prost_types::Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_value).collect(),
        }),
        serde_json::Value::Object(_) => Kind::StructValue(json_struct(v)),
    };
    prost_types::Value { kind: Some(kind) }
}

pub fn flag_key(r: &FlagRef) -> proto::FlagKey {
    proto::FlagKey {
        namespace: r.namespace.to_string(),
        key: r.key.to_string(),
    }
}

pub fn diagnostic(d: &Diagnostic) -> proto::Diagnostic {
    proto::Diagnostic {
        file: d.file.clone(),
        line: d.pos.line,
        column: d.pos.column,
        severity: match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
        .into(),
        code: d.code.as_str().into(),
        message: d.message.clone(),
    }
}

pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An attempt with at most `max` of its diagnostics (and the count of all).
pub fn attempt(a: &vexil_core::Attempt, max: usize) -> proto::ReloadAttempt {
    use proto::reload_attempt::Result as R;
    let mut out = proto::ReloadAttempt {
        at_unix_ms: unix_ms(a.at),
        revision: a.revision.clone().unwrap_or_default(),
        ..Default::default()
    };
    match &a.result {
        AttemptResult::Swapped { changes } => {
            out.set_result(R::Swapped);
            out.changes = u32::try_from(*changes).unwrap_or(u32::MAX);
        }
        AttemptResult::Unchanged => out.set_result(R::Unchanged),
        AttemptResult::Invalid { diagnostics } => {
            out.set_result(R::Invalid);
            out.diagnostics = diagnostics.iter().take(max).map(diagnostic).collect();
            out.diagnostics_total = u32::try_from(diagnostics.len()).unwrap_or(u32::MAX);
        }
        AttemptResult::SourceError { message } => {
            out.set_result(R::SourceError);
            out.message.clone_from(message);
        }
    }
    out
}

/// The status with at most `max` diagnostics per list, and `reloader_problem` (from
/// `AppState::reader_health`).
pub fn status(
    s: &vexil_core::Status,
    max: usize,
    reloader_problem: Option<String>,
) -> proto::StatusResponse {
    let mut out = proto::StatusResponse {
        source: s.source.clone(),
        last_attempt: s.last_attempt.as_ref().map(|a| attempt(a, max)),
        last_error: s.last_error.as_ref().map(|a| attempt(a, max)),
        reloader_problem: reloader_problem.unwrap_or_default(),
        reading_since_unix_ms: s.reader.reading_since.map_or(0, unix_ms),
        reloader_restarts: s.reader.restarts,
        consecutive_failures: s.consecutive_failures,
        attempts: s.counts.attempts,
        swaps: s.counts.swaps,
        invalid: s.counts.invalid,
        source_errors: s.counts.source_errors,
        stale: s
            .stale
            .as_ref()
            .map(|x| x.reason.clone())
            .unwrap_or_default(),
        stale_since_unix_ms: s.stale.as_ref().map_or(0, |x| unix_ms(x.since)),
        ..Default::default()
    };
    if let Some(serving) = &s.serving {
        out.revision.clone_from(&serving.revision);
        out.serving_since_unix_ms = unix_ms(serving.since);
        out.flags = u32::try_from(serving.flags).unwrap_or(u32::MAX);
        out.warnings = serving.warnings.iter().take(max).map(diagnostic).collect();
        out.warnings_total = u32::try_from(serving.warnings.len()).unwrap_or(u32::MAX);
    }
    out
}

/// One change-notification receiver for `Status`.
pub fn notification_receiver(r: &crate::notify::ReceiverReport) -> proto::NotificationReceiver {
    let [delivered, retried, failed, dropped] = r.counts;
    proto::NotificationReceiver {
        receiver: r.name.clone(),
        host: r.host.clone(),
        delivered,
        retried,
        failed,
        dropped,
        queued: u32::try_from(r.queued).unwrap_or(u32::MAX),
        last_error: r
            .last_error
            .as_ref()
            .map(|(_, e)| e.clone())
            .unwrap_or_default(),
        last_error_unix_ms: r.last_error.as_ref().map_or(0, |(at, _)| unix_ms(*at)),
        last_delivered_revision: r.last_delivered.clone().unwrap_or_default(),
    }
}
