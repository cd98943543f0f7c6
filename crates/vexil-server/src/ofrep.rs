//! OFREP, OpenFeature's HTTP evaluation protocol: `POST /ofrep/v1/evaluate/flags/{key}` and the
//! bulk `POST /ofrep/v1/evaluate/flags` (with a strong ETag and 304 on `If-None-Match`).
//! `/ns/{namespace}/ofrep/v1/...` evaluates in another namespace.
//!
//! Values keep their type on the wire (integers as JSON integers, floats as floats); `variant`
//! is always present on success; reasons are OpenFeature's (see `convert::openfeature_reason`).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value as Json, json};
use sha2::{Digest as _, Sha256};
use vexil_core::DEFAULT_NAMESPACE;

use crate::Tokens;
use crate::convert;
use crate::metrics::Method;
use crate::state::AppState;

#[derive(Debug, Clone)]
struct Ofrep {
    state: Arc<AppState>,
    tokens: Tokens,
}

pub fn router(state: Arc<AppState>, tokens: Tokens) -> Router {
    Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(single_default))
        .route("/ofrep/v1/evaluate/flags", post(bulk_default))
        .route(
            "/ns/{namespace}/ofrep/v1/evaluate/flags/{key}",
            post(single_ns),
        )
        .route("/ns/{namespace}/ofrep/v1/evaluate/flags", post(bulk_ns))
        .with_state(Ofrep { state, tokens })
}

fn json_response(status: StatusCode, body: &Json) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, key: Option<&str>, code: &str, details: &str) -> Response {
    let mut body = json!({ "errorCode": code, "errorDetails": details });
    if let (Some(key), Json::Object(m)) = (key, &mut body) {
        m.insert("key".into(), key.into());
    }
    json_response(status, &body)
}

/// `Authorization: Bearer <token>` or `X-API-Key: <token>`, when tokens are configured.
fn authorized(o: &Ofrep, headers: &HeaderMap) -> bool {
    if !o.tokens.is_enabled() {
        return true;
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    o.tokens.accepts(bearer) || o.tokens.accepts_token(api_key)
}

/// The request's context (an absent body or `context` is an empty context).
fn context(
    o: &Ofrep,
    key: Option<&str>,
    body: &Bytes,
) -> Result<vexil_core::Context, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(vexil_core::Context::new());
    }
    let parsed: Json = serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            key,
            "PARSE_ERROR",
            &format!("the body is not JSON: {e}"),
        ))
    })?;
    match parsed.get("context") {
        None | Some(Json::Null) => Ok(vexil_core::Context::new()),
        Some(ctx) => convert::json_context(ctx, &o.state.options.limits)
            .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, key, "INVALID_CONTEXT", &e))),
    }
}

async fn single_default(
    State(o): State<Ofrep>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    single(&o, DEFAULT_NAMESPACE, &key, &headers, &body)
}

async fn single_ns(
    State(o): State<Ofrep>,
    Path((namespace, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    single(&o, &namespace, &key, &headers, &body)
}

async fn bulk_default(State(o): State<Ofrep>, headers: HeaderMap, body: Bytes) -> Response {
    bulk(&o, DEFAULT_NAMESPACE, &headers, &body)
}

async fn bulk_ns(
    State(o): State<Ofrep>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    bulk(&o, &namespace, &headers, &body)
}

fn observe(o: &Ofrep, start: Instant, response: &Response) {
    let code = match response.status() {
        s if s.is_success() || s == StatusCode::NOT_MODIFIED => tonic::Code::Ok,
        StatusCode::NOT_FOUND => tonic::Code::NotFound,
        StatusCode::BAD_REQUEST => tonic::Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
        _ => tonic::Code::Unknown,
    };
    o.state
        .metrics
        .observe(Method::OfrepEvaluate, start.elapsed(), code);
}

/// One flag's success item.
fn item(
    ns: &vexil_core::Namespace,
    flag: &vexil_core::Flag,
    eval: &vexil_core::Evaluation<'_>,
) -> Json {
    json!({
        "key": &*flag.key,
        "value": eval.variant.value.to_json(),
        "reason": convert::openfeature_reason(eval.reason),
        "variant": &*eval.variant.name,
        "metadata": { "flagSetId": &*ns.name },
    })
}

fn single(o: &Ofrep, namespace: &str, key: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    let start = Instant::now();
    let response = single_inner(o, namespace, key, headers, body);
    observe(o, start, &response);
    response
}

fn single_inner(
    o: &Ofrep,
    namespace: &str,
    key: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    if !authorized(o, headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            Some(key),
            "GENERAL",
            "missing or unknown token",
        );
    }
    let ctx = match context(o, Some(key), body) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let Some(served) = o.state.served() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(key),
            "GENERAL",
            "no valid flag snapshot loaded yet",
        );
    };
    let snapshot = &served.snapshot;
    let found = snapshot.namespace_position(namespace).and_then(|ni| {
        let ns = snapshot.namespaces().get(ni)?;
        let fi = ns.flag_position(key)?;
        Some((ni, ns, fi, ns.flags.get(fi)?))
    });
    let Some((ni, ns, fi, flag)) = found else {
        return error(
            StatusCode::NOT_FOUND,
            Some(key),
            "FLAG_NOT_FOUND",
            &format!("flag `{key}` not found in namespace `{namespace}`"),
        );
    };
    let eval = ns.evaluate_flag(flag, &ctx);
    served.counters.record(ni, fi, eval.reason);
    json_response(StatusCode::OK, &item(ns, flag, &eval))
}

fn bulk(o: &Ofrep, namespace: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    let start = Instant::now();
    let response = bulk_inner(o, namespace, headers, body);
    observe(o, start, &response);
    response
}

fn bulk_inner(o: &Ofrep, namespace: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    if !authorized(o, headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            None,
            "GENERAL",
            "missing or unknown token",
        );
    }
    let ctx = match context(o, None, body) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let Some(served) = o.state.served() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "GENERAL",
            "no valid flag snapshot loaded yet",
        );
    };
    let snapshot = &served.snapshot;
    let Some(ni) = snapshot.namespace_position(namespace) else {
        return error(
            StatusCode::NOT_FOUND,
            None,
            "FLAG_NOT_FOUND",
            &format!("namespace `{namespace}` not found"),
        );
    };
    let Some(ns) = snapshot.namespaces().get(ni) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "GENERAL",
            "namespace index out of range",
        );
    };
    // The answer is a function of the revision, the namespace and the request: so is the ETag.
    let mut hasher = Sha256::new();
    hasher.update(snapshot.revision().as_bytes());
    hasher.update([0]);
    hasher.update(namespace.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    let digest = hasher.finalize();
    let etag: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let etag = format!("\"{etag}\"");
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let etag_header = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response();
    }
    let flags: Vec<Json> = ns
        .flags
        .iter()
        .enumerate()
        .map(|(fi, flag)| {
            let eval = ns.evaluate_flag(flag, &ctx);
            served.counters.record(ni, fi, eval.reason);
            item(ns, flag, &eval)
        })
        .collect();
    let body = json!({ "flags": flags, "metadata": { "flagSetId": namespace, "revision": snapshot.revision() } });
    let mut response = json_response(StatusCode::OK, &body);
    response.headers_mut().insert(header::ETAG, etag_header);
    response
}
