//! OFREP, OpenFeature's HTTP evaluation protocol: `POST /ofrep/v1/evaluate/flags/{key}` and the
//! bulk `POST /ofrep/v1/evaluate/flags` (with a strong ETag and 304 on `If-None-Match`: of
//! the revision and the request, or of the body when a flag of the namespace draws at random).
//! `/ns/{namespace}/ofrep/v1/...` evaluates in another namespace.
//!
//! Values keep their type on the wire (integers as JSON integers, floats as floats); `variant`
//! is always present on success; reasons are OpenFeature's (see `convert::openfeature_reason`).
//! Tokens and metrics are the front's layer's (`http::front`).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value as Json, json};
use vexil_core::DEFAULT_NAMESPACE;

use crate::auth::Tokens;
use crate::conditional;
use crate::context;
use crate::convert;
use crate::evaluation::Error;
use crate::state::AppState;

pub fn router(state: Arc<AppState>, tokens: Tokens) -> Router {
    Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(single_default))
        .route("/ofrep/v1/evaluate/flags", post(bulk_default))
        .route(
            "/ns/{namespace}/ofrep/v1/evaluate/flags/{key}",
            post(single_ns),
        )
        .route("/ns/{namespace}/ofrep/v1/evaluate/flags", post(bulk_ns))
        .with_state(state)
        .layer(axum::Extension(tokens))
}

/// The metrics name of a matched route.
pub fn method(path: &str) -> &'static str {
    if path.ends_with("/flags") {
        "bulk"
    } else if path.ends_with("/events") {
        "events"
    } else {
        "evaluate"
    }
}

fn json_response(status: StatusCode, body: &Json) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Every core error as an OFREP answer: the one place this front words them. Single
/// evaluations name their flag.
pub fn error(e: &Error, key: Option<&str>) -> Response {
    let status = match e {
        Error::Unauthenticated => StatusCode::UNAUTHORIZED,
        Error::NoSnapshot => StatusCode::SERVICE_UNAVAILABLE,
        Error::UnknownNamespace(_) | Error::FlagNotFound { .. } => StatusCode::NOT_FOUND,
        Error::TypeMismatch { .. } | Error::InvalidContext(_) | Error::BadRequest(_) => {
            StatusCode::BAD_REQUEST
        }
    };
    let mut body = json!({ "errorCode": e.openfeature_code(), "errorDetails": e.to_string() });
    if let (Some(key), Json::Object(m)) = (key, &mut body) {
        m.insert("key".into(), key.into());
    }
    json_response(status, &body)
}

/// The flag a single-evaluation path names, for refusals made before routing extracts it.
pub fn key_of(path: &str) -> Option<&str> {
    path.rsplit_once("/evaluate/flags/").map(|(_, key)| key)
}

/// The request's context (an absent body or `context` is an empty context).
fn request_context(state: &AppState, body: &Bytes) -> Result<vexil_core::Context, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(vexil_core::Context::new());
    }
    let parsed: Json = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("the body is not JSON: {e}")))?;
    if !parsed.is_object() {
        return Err(Error::BadRequest(
            "the body must be a JSON object (with an optional `context`)".into(),
        ));
    }
    match parsed.get("context") {
        None | Some(Json::Null) => Ok(vexil_core::Context::new()),
        Some(ctx) => context::from_json(ctx, &state.options.limits),
    }
}

async fn single_default(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    single(&state, DEFAULT_NAMESPACE, &key, &body)
}

async fn single_ns(
    State(state): State<Arc<AppState>>,
    Path((namespace, key)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    single(&state, &namespace, &key, &body)
}

async fn bulk_default(
    State(state): State<Arc<AppState>>,
    axum::Extension(tokens): axum::Extension<Tokens>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    bulk(&state, &tokens, DEFAULT_NAMESPACE, &headers, &body)
}

async fn bulk_ns(
    State(state): State<Arc<AppState>>,
    axum::Extension(tokens): axum::Extension<Tokens>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    bulk(&state, &tokens, &namespace, &headers, &body)
}

/// One flag's success item.
fn item(namespace: &str, flag: &vexil_core::Flag, eval: &vexil_core::Evaluation<'_>) -> Json {
    json!({
        "key": &*flag.key,
        "value": eval.variant.value.to_json(),
        "reason": convert::openfeature_reason(eval.reason),
        "variant": &*eval.variant.name,
        "metadata": { "flagSetId": namespace },
    })
}

fn single(state: &AppState, namespace: &str, key: &str, body: &Bytes) -> Response {
    let answer = || -> Result<Json, Error> {
        let ctx = request_context(state, body)?;
        let current = state.current();
        let served = current.served()?;
        let (found, eval) = served.evaluate(namespace, key, None, &ctx)?;
        Ok(item(&found.namespace.name, found.flag, &eval))
    };
    match answer() {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(e) => error(&e, Some(key)),
    }
}

fn bulk(
    state: &AppState,
    tokens: &Tokens,
    namespace: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let answer = || -> Result<Response, Error> {
        let ctx = request_context(state, body)?;
        let current = state.current();
        let served = current.served()?;
        let revision = served.snapshot.revision();
        crate::evaluation::namespace(served.snapshot, namespace)?;
        // The change stream (ADR-0008), with the token EventSource needs when tokens are set.
        let stream_token = tokens.stream_token(headers, namespace);
        let stream = crate::sse::ofrep_stream_uri(namespace, stream_token.as_deref());
        // Unless a flag of the namespace draws at random (then the ETag is of the body, after
        // evaluating), the answer is a function of the revision, the namespace, the request and
        // the stream token: so is the ETag, and a client that has it gets 304 without an
        // evaluation.
        let early_etag = (!served.can_draw(namespace, None)).then(|| match &stream_token {
            None => conditional::etag_of(&[revision.as_bytes(), namespace.as_bytes(), body], ""),
            Some(t) => conditional::etag_of(
                &[
                    revision.as_bytes(),
                    namespace.as_bytes(),
                    body,
                    t.as_bytes(),
                ],
                "",
            ),
        });
        if let Some(etag) = early_etag
            .as_ref()
            .filter(|e| conditional::etag_matches(headers, e))
        {
            return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag.clone())]).into_response());
        }
        let mut flags = Vec::new();
        served.evaluate_all(
            namespace,
            &ctx,
            |_| true,
            |found, eval| {
                flags.push(item(namespace, found.flag, &eval));
            },
        )?;
        let body = json!({
            "flags": flags,
            "metadata": { "flagSetId": namespace, "revision": revision },
            "eventStreams": [{ "type": "sse", "endpoint": { "requestUri": stream } }],
        });
        let text = body.to_string();
        let etag = match early_etag {
            Some(etag) => etag,
            None => {
                // The body holds the stream URI, so its tag covers the stream token too.
                let etag = conditional::etag_of(&[text.as_bytes()], "");
                if conditional::etag_matches(headers, &etag) {
                    return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
                }
                etag
            }
        };
        let mut response = (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            text,
        )
            .into_response();
        response.headers_mut().insert(header::ETAG, etag);
        Ok(response)
    };
    answer().unwrap_or_else(|e| error(&e, None))
}
