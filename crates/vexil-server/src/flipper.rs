//! A read-only mirror of the Flipper HTTP API at `/flipper/api` (and
//! `/ns/{namespace}/flipper/api`), for apps using Flipper's HTTP adapter.
//!
//! `GET /features` (`keys=`, `exclude_gates=`, `exclude_gate_names=`), `GET /features/{name}`
//! and `GET /actors/{flipper_id}` (evaluated by Vexil). Feature bodies come in two profiles,
//! chosen by the adapter's `User-Agent` (`mirrors::flipper_profile`): with the expression gate
//! for Flipper 1.1+, gates only for everyone else. An unknown namespace is 400 (the adapter
//! raises; a 404 would read as "off"), `POST /telemetry` is told to shut down. Every other
//! method answers 405 with Flipper's error JSON naming where the flags live. Bodies and ETags come from the
//! per-snapshot tables (`mirrors.rs`); only `keys=` bodies are assembled per request. Tokens
//! and metrics are the front's layer's (`http::front`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::json;
use vexil_core::{FlagType, Value};
use vexil_mirror::flipper::Form;

use crate::conditional::Body;
use crate::evaluation::Error;
use crate::mirrors::{
    FLIPPER_HEAD, FLIPPER_TAIL, admit, flipper_profile, join, profile_index, profile_tag,
};
use crate::state::AppState;

const MORE_INFO: &str = "https://flippercloud.io/docs/api#error-code-reference";

type Flipper = Arc<AppState>;

pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    for prefix in ["/flipper/api", "/ns/{namespace}/flipper/api"] {
        router = router
            .route(
                &format!("{prefix}/features"),
                get(features).fallback(refuse),
            )
            .route(
                &format!("{prefix}/features/{{*name}}"),
                get(feature).fallback(refuse),
            )
            .route(
                &format!("{prefix}/actors/{{*flipper_id}}"),
                get(actor).fallback(refuse),
            )
            .route(&format!("{prefix}/telemetry"), any(telemetry))
            .route(&format!("{prefix}/{{*rest}}"), any(unknown))
            .route(&format!("{prefix}/"), any(unknown))
            .route(prefix, any(unknown));
    }
    router.with_state(state)
}

/// The metrics name of a matched route.
pub fn method(path: &str) -> &'static str {
    if path.ends_with("/features") {
        "features"
    } else if path.contains("/features/") {
        "feature"
    } else if path.contains("/actors/") {
        "actor"
    } else {
        "other"
    }
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "code": code, "message": message, "more_info": MORE_INFO }).to_string(),
    )
        .into_response()
}

/// Every core error in Flipper's error format: the one place this front words them.
pub fn refused(e: &Error) -> Response {
    match e {
        Error::Unauthenticated => error(
            StatusCode::UNAUTHORIZED,
            401,
            "Missing or unknown token: configure the Flipper HTTP adapter with basic auth (the token as password) or an `Authorization: Bearer <token>` header.",
        ),
        Error::NoSnapshot => error(
            StatusCode::SERVICE_UNAVAILABLE,
            503,
            "No valid flag snapshot yet: the flag repository has not been read successfully.",
        ),
        Error::UnknownNamespace(namespace) => error(
            StatusCode::NOT_FOUND,
            404,
            &format!("Namespace `{namespace}` not found: no flag file declares it."),
        ),
        Error::FlagNotFound { .. } => error(StatusCode::NOT_FOUND, 1, "Feature not found."),
        Error::TypeMismatch { .. } | Error::InvalidContext(_) | Error::BadRequest(_) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, 4, &e.to_string())
        }
    }
}

/// Like `refused`, but an unknown namespace is 400 naming the namespaces there are: Flipper's
/// HTTP adapter reads 404 on `GET /features/{name}` as "no such feature" (off, silently), and
/// raises on any status but 200, 304 and (for that one call) 404, so a mistyped namespace
/// fails loudly at the first read.
fn refused_in(current: &crate::state::Current, e: &Error) -> Response {
    let Error::UnknownNamespace(namespace) = e else {
        return refused(e);
    };
    let names: Vec<String> = current.served().map_or_else(
        |_| Vec::new(),
        |served| {
            served
                .snapshot
                .namespaces()
                .iter()
                .map(|ns| format!("`{}`", ns.name))
                .collect()
        },
    );
    error(
        StatusCode::BAD_REQUEST,
        400,
        &format!(
            "Namespace `{namespace}` not found: no flag file declares it, so this URL names no Flipper API. Namespaces served here: {} (`default` at /flipper/api, any other at /ns/{{namespace}}/flipper/api).",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        ),
    )
}

/// Query parameters, in order, empty ones (`?&keys=a`) skipped.
struct Query {
    keys: Option<Vec<String>>,
    exclude_gates: bool,
    exclude_gate_names: bool,
}

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        let mut q = Query {
            keys: None,
            exclude_gates: false,
            exclude_gate_names: false,
        };
        // A bare `keys` (no `=`) is no filter, as Rack reads it; `keys=` is an empty one.
        let raw: String = raw
            .unwrap_or("")
            .split('&')
            .filter(|pair| *pair != "keys" && *pair != "keys[]")
            .collect::<Vec<_>>()
            .join("&");
        for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
            match &*name {
                "keys" => q.keys.get_or_insert_with(Vec::new).extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .map(str::to_owned),
                ),
                // Newer adapters: `keys[]=a&keys[]=b` when a name holds a comma.
                "keys[]" => q.keys.get_or_insert_with(Vec::new).push(value.into_owned()),
                "exclude_gates" => q.exclude_gates = value.eq_ignore_ascii_case("true"),
                "exclude_gate_names" => {
                    q.exclude_gate_names = value.eq_ignore_ascii_case("true");
                }
                _ => {}
            }
        }
        q
    }

    fn form(&self) -> Form {
        if self.exclude_gates {
            Form::NoGates
        } else if self.exclude_gate_names {
            Form::NoGateNames
        } else {
            Form::Full
        }
    }
}

fn form_index(form: Form) -> usize {
    Form::ALL.iter().position(|f| *f == form).unwrap_or(0)
}

/// A feature body depends on the User-Agent (the profile): caches must key on it too.
fn by_profile(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let vary = if headers.contains_key(header::VARY) {
        "accept-encoding, user-agent"
    } else {
        "user-agent"
    };
    headers.insert(header::VARY, HeaderValue::from_static(vary));
    response
}

fn extra(f: &Flipper) -> [(&'static str, HeaderValue); 1] {
    [(
        "poll-interval",
        HeaderValue::from(f.options.flipper_poll_interval.as_secs()),
    )]
}

async fn features(
    State(f): State<Flipper>,
    Path(params): Path<HashMap<String, String>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let current = f.current();
    let (served, namespace) = match admit(&current, &params) {
        Ok(x) => x,
        Err(e) => return refused_in(&current, &e),
    };
    let profile = flipper_profile(&headers);
    let Some(table) = served
        .derived
        .mirrors
        .flipper
        .get(namespace)
        .and_then(|per_profile| per_profile.get(profile_index(profile)))
    else {
        return refused_in(&current, &Error::UnknownNamespace(namespace.to_owned()));
    };
    let query = Query::parse(raw.as_deref());
    let form = form_index(query.form());
    let Some(keys) = query.keys else {
        return table.all.get(form).map_or_else(
            || StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            |b| by_profile(b.respond(&headers, &extra(&f))),
        );
    };
    // Known features in the order asked, each once; unknown names are dropped, as Flipper does.
    let mut seen = std::collections::HashSet::new();
    let parts: Vec<&axum::body::Bytes> = keys
        .iter()
        .filter(|k| seen.insert(k.as_str()))
        .filter_map(|k| table.features.get(k.as_str())?.get(form))
        .map(|b| &b.bytes)
        .collect();
    by_profile(
        Body::new_tagged(
            join(FLIPPER_HEAD, parts.iter(), FLIPPER_TAIL),
            profile_tag(profile),
        )
        .respond(&headers, &extra(&f)),
    )
}

async fn feature(
    State(f): State<Flipper>,
    Path(params): Path<HashMap<String, String>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let current = f.current();
    let (served, namespace) = match admit(&current, &params) {
        Ok(x) => x,
        Err(e) => return refused_in(&current, &e),
    };
    let name = params.get("name").map_or("", String::as_str);
    let form = form_index(Query::parse(raw.as_deref()).form());
    match served
        .derived
        .mirrors
        .flipper
        .get(namespace)
        .and_then(|per_profile| per_profile.get(profile_index(flipper_profile(&headers))))
        .and_then(|t| t.features.get(name))
        .and_then(|bodies| bodies.get(form))
    {
        Some(body) => by_profile(body.respond(&headers, &extra(&f))),
        None => refused(&Error::FlagNotFound {
            namespace: namespace.to_owned(),
            flag: name.to_owned(),
        }),
    }
}

/// Vexil's own answers for an actor with no other attributes, for every boolean flag (or
/// the `keys` asked for; unknown ones are off).
async fn actor(
    State(f): State<Flipper>,
    Path(params): Path<HashMap<String, String>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let current = f.current();
    let (served, namespace) = match admit(&current, &params) {
        Ok(x) => x,
        Err(e) => return refused_in(&current, &e),
    };
    // Never empty: `/actors/` is an unknown path.
    let id = params.get("flipper_id").map_or("", String::as_str);
    let ctx = vexil_core::Context::with_key(id);
    let on = |value: &Value| matches!(value, Value::Bool(true));
    let mut features = serde_json::Map::new();
    match Query::parse(raw.as_deref()).keys {
        Some(keys) => {
            for key in keys {
                // Unknown and non-boolean flags are off.
                let enabled = served
                    .evaluate(namespace, &key, Some(FlagType::Boolean), &ctx)
                    .is_ok_and(|(_, eval)| on(&eval.variant.value));
                features.insert(key, json!({ "enabled": enabled }));
            }
        }
        None => {
            let boolean = |flag: &vexil_core::Flag| flag.flag_type == FlagType::Boolean;
            let each = |found: crate::evaluation::Found<'_>, eval: vexil_core::Evaluation<'_>| {
                features.insert(
                    found.flag.key.to_string(),
                    json!({ "enabled": on(&eval.variant.value) }),
                );
            };
            if let Err(e) = served.evaluate_all(namespace, &ctx, boolean, each) {
                return refused(&e);
            }
        }
    }
    Body::json(&json!({ "flipper_id": id, "features": features })).respond(&headers, &extra(&f))
}

/// Any write: 405, saying where the flags live and how to change them (the layer lets only a
/// caller with a token this far, when tokens are configured: the message names the source).
async fn refuse(State(f): State<Flipper>, method: Method) -> Response {
    refusal(&f, &method, "GET, HEAD")
}

/// 405 naming where the flags live, with the methods the path does allow (none for paths
/// that are not routes).
fn refusal(f: &AppState, method: &Method, allow: &'static str) -> Response {
    let message = format!(
        "This Flipper API is a read-only mirror served by Vexil: {method} is not allowed. The flags are managed in git ({}); to change one, edit its YAML flag file there and merge a pull request, and this server picks up the new commit.",
        f.options.source
    );
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, 405, &message);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Paths of the API that are not routes: writes (`POST /import`, ...) are refused with 405,
/// anything else is Flipper's 404 `{}`.
async fn unknown(State(f): State<Flipper>, method: Method) -> Response {
    if method == Method::GET || method == Method::HEAD {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response();
    }
    refusal(&f, &method, "")
}

/// Flipper Cloud's telemetry (`POST /telemetry`, every minute by default): nothing is kept,
/// and `telemetry-shutdown: true` makes the client stop sending (a 2xx other than 429 is
/// not retried; Flipper 1.x reads the header from any answer it gets).
async fn telemetry() -> Response {
    (StatusCode::NO_CONTENT, [("telemetry-shutdown", "true")]).into_response()
}
