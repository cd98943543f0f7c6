//! The Unleash frontend API at `/api/frontend` (and `/api/proxy`, Edge's older name; both also
//! under `/ns/{namespace}/`), for browser and mobile SDKs (`unleash-proxy-client`, React, iOS,
//! Android): Vexil evaluates and answers toggles, as the Unleash server and Edge do.
//!
//! `GET` (context in the query, `properties[name]=value`) and `POST` (body `{"context":{...}}`
//! as the SDKs send it, or the context itself as Edge reads it) on `/api/frontend` (enabled
//! toggles only), `/all` (every toggle) and `/features/{name}` (one, 404 if unknown);
//! `POST /client/metrics` and `/client/register`: 202, nothing kept. An answer is a function
//! of the revision and the request unless it holds a flag that draws at random
//! (`percentage_of_time`; known per snapshot): then its strong ETag is of the body, compared
//! after evaluating; otherwise it is computed before, and a matching `If-None-Match` gets 304
//! without an evaluation. Tokens and metrics are the front's
//! layer's (`http::front`); CORS is `cors`'s.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::{Map, Value as Json, json};
use vexil_core::snapshot::{FlagType, Value};
use vexil_core::{Evaluation, Flag};

use crate::conditional;
use crate::evaluation::Error;
use crate::mirrors::admit;
use crate::state::AppState;
use crate::unleash::message;

type Frontend = Arc<AppState>;

pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    for prefix in [
        "/api/frontend",
        "/api/proxy",
        "/ns/{namespace}/api/frontend",
        "/ns/{namespace}/api/proxy",
    ] {
        router = router
            .route(prefix, get(read).post(read).fallback(refuse))
            .route(
                &format!("{prefix}/all"),
                get(read).post(read).fallback(refuse),
            )
            .route(
                &format!("{prefix}/features/{{name}}"),
                get(read).post(read).fallback(refuse),
            )
            .route(
                &format!("{prefix}/client/metrics"),
                post(accepted).fallback(refuse_post_only),
            )
            .route(
                &format!("{prefix}/client/register"),
                post(accepted).fallback(refuse_post_only),
            )
            .route(&format!("{prefix}/client/features"), any(not_implemented))
            .route(&format!("{prefix}/health"), any(not_implemented))
            .route(&format!("{prefix}/{{*rest}}"), any(unknown));
    }
    router.with_state(state)
}

/// The metrics name of a matched route.
pub fn method(path: &str) -> &'static str {
    if path.ends_with("/api/frontend") || path.ends_with("/api/proxy") {
        "toggles"
    } else if path.ends_with("/all") {
        "all"
    } else if path.contains("/features/") {
        "feature"
    } else if path.ends_with("/client/register") {
        "register"
    } else if path.ends_with("/client/metrics") {
        "metrics"
    } else {
        "other"
    }
}

/// Every core error as the frontend API words it: the one place this front does (what it
/// says as the Unleash client API does, it says through `unleash::refused`).
pub fn refused(e: &Error) -> Response {
    match e {
        Error::Unauthenticated => message(
            StatusCode::UNAUTHORIZED,
            "Missing or unknown token: set the SDK's `clientKey` to a token this server accepts.",
        ),
        Error::FlagNotFound { flag, .. } => message(
            StatusCode::NOT_FOUND,
            &format!("Feature `{flag}` not found."),
        ),
        _ => crate::unleash::refused(e),
    }
}

/// Which toggles a read answers.
#[derive(Debug, Clone, Copy)]
enum Select<'r> {
    /// `/api/frontend`: the enabled ones.
    Enabled,
    /// `/api/frontend/all`.
    All,
    /// `/api/frontend/features/{name}`: that one, as a toggle object.
    One(&'r str),
}

/// Everything a read depends on besides the snapshot.
struct Read<'r> {
    params: &'r HashMap<String, String>,
    method: &'r Method,
    uri: &'r Uri,
    headers: &'r HeaderMap,
    body: &'r Bytes,
}

/// `/api/frontend`, `/all` and `/features/{name}`: which toggles is told by the route matched.
async fn read(
    State(s): State<Frontend>,
    matched: MatchedPath,
    Path(params): Path<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let select = match params.get("name") {
        Some(name) => Select::One(name),
        None if matched.as_str().ends_with("/all") => Select::All,
        None => Select::Enabled,
    };
    let read = Read {
        params: &params,
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
    };
    answer(&s, &read, select)
}

fn answer(s: &AppState, read: &Read<'_>, select: Select<'_>) -> Response {
    let respond = || -> Result<Response, Error> {
        let current = s.current();
        let (served, namespace) = admit(&current, read.params)?;
        if let Select::One(name) = select {
            // An unknown toggle is 404 whatever the client holds.
            crate::evaluation::lookup(served.snapshot, namespace, name)?;
        }
        // A selection that can draw at random is tagged by its body, after evaluating (as the
        // Unleash server tags it). Any other answer is a function of the revision and the
        // request (the path names the namespace, the selection and the toggle; the query (GET)
        // or the body (POST) the context), and so is its tag: 304 without an evaluation.
        let one = match select {
            Select::One(name) => Some(name),
            Select::Enabled | Select::All => None,
        };
        let random = served.can_draw(namespace, one);
        let query = read.uri.query().unwrap_or("");
        let post = read.method == Method::POST;
        let early_etag = (!random).then(|| {
            conditional::etag_of(
                &[
                    served.snapshot.revision().as_bytes(),
                    if post { b"POST" } else { b"GET" },
                    read.uri.path().as_bytes(),
                    query.as_bytes(),
                    read.body,
                ],
                "",
            )
        });
        if let Some(etag) = early_etag
            .as_ref()
            .filter(|e| conditional::etag_matches(read.headers, e))
        {
            return Ok(with_headers(
                StatusCode::NOT_MODIFIED.into_response(),
                etag.clone(),
            ));
        }
        let ctx = if post {
            context_of_body(s, read.body)?
        } else {
            context_of_query(s, query)?
        };
        let body = match select {
            Select::One(name) => {
                let (found, eval) = served.evaluate(namespace, name, None, &ctx)?;
                toggle(found.flag, &eval).1
            }
            Select::Enabled | Select::All => {
                let mut toggles = Vec::new();
                served.evaluate_all(
                    namespace,
                    &ctx,
                    |_| true,
                    |found, eval| {
                        let (on, toggle) = toggle(found.flag, &eval);
                        if on || matches!(select, Select::All) {
                            toggles.push(toggle);
                        }
                    },
                )?;
                json!({ "toggles": toggles })
            }
        };
        let text = body.to_string();
        let etag = match early_etag {
            Some(etag) => etag,
            None => {
                let etag = conditional::etag_of(&[text.as_bytes()], "");
                if conditional::etag_matches(read.headers, &etag) {
                    return Ok(with_headers(StatusCode::NOT_MODIFIED.into_response(), etag));
                }
                etag
            }
        };
        let response = ([(header::CONTENT_TYPE, "application/json")], text).into_response();
        Ok(with_headers(response, etag))
    };
    respond().unwrap_or_else(|e| refused(&e))
}

/// The ETag, and `Cache-Control: no-cache` as the Unleash server sends it (browsers then
/// revalidate with `If-None-Match` instead of reusing a stale answer).
fn with_headers(mut response: Response, etag: HeaderValue) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// One evaluated flag as a toggle, and whether it is enabled. A boolean flag is enabled when it
/// serves `true` and has no variant (`is_enabled`, as the Unleash mirror exports it); any other
/// flag is enabled and carries the variant served with its value as payload (`get_variant`,
/// the same payloads as the mirror's variants).
fn toggle(flag: &Flag, eval: &Evaluation<'_>) -> (bool, Json) {
    let value = &eval.variant.value;
    let (on, variant) = if flag.flag_type == FlagType::Boolean {
        let on = matches!(value, Value::Bool(true));
        let variant = json!({
            "name": "disabled", "enabled": false, "feature_enabled": on, "featureEnabled": on,
        });
        (on, variant)
    } else {
        let variant = json!({
            "name": &*eval.variant.name,
            "enabled": true,
            "payload": payload(value),
            "feature_enabled": true,
            "featureEnabled": true,
        });
        (true, variant)
    };
    let toggle = json!({
        "name": &*flag.key, "enabled": on, "impressionData": false, "variant": variant,
    });
    (on, toggle)
}

fn payload(value: &Value) -> Json {
    match value {
        Value::String(s) => json!({"type": "string", "value": &**s}),
        Value::Integer(i) => json!({"type": "number", "value": i.to_string()}),
        Value::Float(f) => json!({"type": "number", "value": f.to_string()}),
        Value::Object(o) => json!({"type": "json", "value": o.to_string()}),
        Value::Bool(b) => json!({"type": "string", "value": b.to_string()}),
    }
}

/// A POST body: `{"context":{...}}` (the SDKs), or the context itself (Edge's form); empty is
/// an empty context.
fn context_of_body(s: &AppState, body: &Bytes) -> Result<vexil_core::Context, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(vexil_core::Context::new());
    }
    let parsed: Json = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("the body is not JSON: {e}")))?;
    let ctx = match &parsed {
        Json::Object(m) => match m.get("context") {
            Some(ctx @ Json::Object(_)) => ctx,
            _ => &parsed,
        },
        _ => {
            return Err(Error::BadRequest(
                "the body must be a JSON object: {\"context\": {...}}".into(),
            ));
        }
    };
    crate::context::from_unleash(ctx, &s.options.limits)
}

/// A GET query: each parameter a context field, `properties[name]` a property (the SDKs'
/// encoding; the last of repeated parameters wins, as Express reads them).
fn context_of_query(s: &AppState, query: &str) -> Result<vexil_core::Context, Error> {
    let mut root = Map::new();
    let mut properties = Map::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = Json::String(value.into_owned());
        match name
            .strip_prefix("properties[")
            .and_then(|n| n.strip_suffix(']'))
        {
            Some(property) => properties.insert(property.to_owned(), value),
            None => root.insert(name.into_owned(), value),
        };
    }
    root.insert("properties".into(), Json::Object(properties));
    crate::context::from_unleash(&Json::Object(root), &s.options.limits)
}

/// Registration and metrics: accepted and dropped (Vexil counts evaluations itself).
async fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

async fn refuse(method: Method) -> Response {
    refusal(&method, "GET, HEAD, POST")
}

async fn refuse_post_only(method: Method) -> Response {
    refusal(&method, "POST")
}

fn refusal(method: &Method, allow: &'static str) -> Response {
    let mut response = message(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("The frontend API does not support {method} here."),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The client API's paths under the frontend API: the Unleash server answers them 405
/// (`NotImplementedError`) whatever the method; `Allow` is empty, as no method is allowed.
async fn not_implemented() -> Response {
    let mut response = message(
        StatusCode::METHOD_NOT_ALLOWED,
        "The frontend API does not support this endpoint.",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(""));
    response
}

/// Other paths: 404.
async fn unknown() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "The frontend API does not support this endpoint.",
    )
}
