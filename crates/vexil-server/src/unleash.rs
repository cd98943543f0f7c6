//! A read-only mirror of the Unleash client API at `/api` (and `/ns/{namespace}/api`), for
//! Unleash SDKs: `GET /client/features` (`namePrefix`, `project`), `GET /client/features/{name}`,
//! and `POST /client/register` and `/client/metrics` (202, nothing kept).
//!
//! The body depends on the client (`mirrors::Kind`, from `Unleash-Client-Spec`): legacy
//! clients get only what they evaluate exactly, spec >= 4.2.0 gets segments separately.
//! Bodies and ETags come from the per-snapshot tables; filtered bodies are joined from
//! pre-serialised fragments. Tokens and metrics are the front's layer's (`http::front`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;

use crate::conditional::Body;
use crate::evaluation::Error;
use crate::mirrors::{Fragment, Kind, UnleashTable, admit, join};
use crate::state::AppState;

type Unleash = Arc<AppState>;

pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    for prefix in ["/api", "/ns/{namespace}/api"] {
        router = router
            .route(
                &format!("{prefix}/client/features"),
                get(features).fallback(refuse),
            )
            .route(
                &format!("{prefix}/client/features/{{name}}"),
                get(feature).fallback(refuse),
            )
            .route(
                &format!("{prefix}/client/register"),
                post(accepted).fallback(refuse_post_only),
            )
            .route(
                &format!("{prefix}/client/metrics"),
                post(accepted).fallback(refuse_post_only),
            )
            .route(&format!("{prefix}/client/{{*rest}}"), any(unknown));
    }
    router.with_state(state)
}

/// The metrics name of a matched route.
pub fn method(path: &str) -> &'static str {
    if path.ends_with("/client/features") {
        "features"
    } else if path.contains("/client/features/") {
        "feature"
    } else if path.ends_with("/client/register") {
        "register"
    } else if path.ends_with("/client/metrics") {
        "metrics"
    } else {
        "other"
    }
}

/// An error answer in the Unleash APIs' shape (`{"message": ...}`), shared with `frontend`.
pub(crate) fn message(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "message": text }).to_string(),
    )
        .into_response()
}

/// Every core error as the Unleash API words it: the one place this front does.
pub fn refused(e: &Error) -> Response {
    match e {
        Error::Unauthenticated => message(
            StatusCode::UNAUTHORIZED,
            "Missing or unknown token: set the SDK's `Authorization` header to a token this server accepts.",
        ),
        Error::NoSnapshot => message(
            StatusCode::SERVICE_UNAVAILABLE,
            "No valid flag snapshot yet: the flag repository has not been read successfully.",
        ),
        Error::UnknownNamespace(namespace) => message(
            StatusCode::NOT_FOUND,
            &format!("Namespace `{namespace}` not found: no flag file declares it."),
        ),
        Error::FlagNotFound { flag, .. } => message(
            StatusCode::NOT_FOUND,
            &format!(
                "Feature `{flag}` not found (or not mirrored to this client; see /mirrors/diagnostics)."
            ),
        ),
        Error::TypeMismatch { .. } | Error::InvalidContext(_) | Error::BadRequest(_) => {
            message(StatusCode::BAD_REQUEST, &e.to_string())
        }
    }
}

async fn features(
    State(u): State<Unleash>,
    Path(params): Path<HashMap<String, String>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let current = u.current();
    let (served, namespace) = match admit(&current, &params) {
        Ok(x) => x,
        Err(e) => return refused(&e),
    };
    let Some(t) = served.derived.mirrors.unleash.get(namespace) else {
        return refused(&Error::UnknownNamespace(namespace.to_owned()));
    };
    let kind = Kind::of(&headers) as usize;
    let mut prefix: Option<String> = None;
    let mut projects: Vec<String> = Vec::new();
    let mut tags: Vec<String> = Vec::new();
    for (name, value) in form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        match &*name {
            "namePrefix" if !value.is_empty() => prefix = Some(value.into_owned()),
            "project" if !value.is_empty() => projects.push(value.into_owned()),
            "tag" if !value.is_empty() => tags.push(value.into_owned()),
            _ => {}
        }
    }
    if prefix.is_none() && projects.is_empty() && tags.is_empty() {
        return t.all.get(kind).map_or_else(
            || StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            |b| b.respond(&headers, &[]),
        );
    }
    // Every flag is in project "default".
    let in_project = projects.is_empty() || projects.iter().any(|p| p == "default");
    // `tag=TYPE:VALUE` (any of them): a flag tagged `VALUE` or `TYPE:VALUE`.
    let tagged = |flag_tags: &[String]| {
        tags.is_empty()
            || tags.iter().any(|t| {
                let value = t.split_once(':').map_or(t.as_str(), |(_, v)| v);
                flag_tags.iter().any(|ft| ft == t || ft == value)
            })
    };
    filtered(t, kind, |f| {
        in_project && tagged(&f.tags) && prefix.as_deref().is_none_or(|p| f.name.starts_with(p))
    })
    .respond(&headers, &[])
}

fn filtered(t: &UnleashTable, kind: usize, keep: impl Fn(&Fragment) -> bool) -> Body {
    let parts: Vec<&axum::body::Bytes> = t
        .fragments
        .iter()
        .filter(|f| keep(f))
        .filter_map(|f| f.per_kind.get(kind)?.as_ref())
        .collect();
    let (head, tail) = t.envelopes.get(kind).cloned().unwrap_or_default();
    Body::new(join(&head, parts.iter(), &tail))
}

async fn feature(
    State(u): State<Unleash>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let current = u.current();
    let (served, namespace) = match admit(&current, &params) {
        Ok(x) => x,
        Err(e) => return refused(&e),
    };
    let name = params.get("name").map_or("", String::as_str);
    let kind = Kind::of(&headers) as usize;
    match served
        .derived
        .mirrors
        .unleash
        .get(namespace)
        .and_then(|t| t.features.get(name))
        .and_then(|per_kind| per_kind.get(kind))
    {
        Some(Some(body)) => body.respond(&headers, &[]),
        _ => refused(&Error::FlagNotFound {
            namespace: namespace.to_owned(),
            flag: name.to_owned(),
        }),
    }
}

/// Registration and metrics: accepted and dropped (Vexil keeps its own counters).
/// Namespaces and snapshots do not matter here; tokens do (the layer's).
async fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

async fn refuse(State(u): State<Unleash>, method: Method) -> Response {
    refusal(&u, &method, "GET, HEAD")
}

async fn refuse_post_only(State(u): State<Unleash>, method: Method) -> Response {
    refusal(&u, &method, "POST")
}

/// 405 naming where the flags live, with the methods the path does allow (the layer lets only
/// a caller with a token this far, when tokens are set).
fn refusal(u: &AppState, method: &Method, allow: &'static str) -> Response {
    let mut response = message(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!(
            "This Unleash API is a read-only mirror served by Vexil: {method} is not allowed. The flags are managed in git ({}); change them with a pull request.",
            u.options.source
        ),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Paths that are not routes: 404 to reads, 405 with an empty `Allow` to writes (nothing is
/// there to write to, and the message says where the flags live).
async fn unknown(State(u): State<Unleash>, method: Method) -> Response {
    if method == Method::GET || method == Method::HEAD {
        return message(StatusCode::NOT_FOUND, "Not found.");
    }
    refusal(&u, &method, "")
}
