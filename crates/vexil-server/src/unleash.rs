//! A read-only mirror of the Unleash client API at `/api` (and `/ns/{namespace}/api`), for
//! Unleash SDKs: `GET /client/features` (`namePrefix`, `project`), `GET /client/features/{name}`,
//! and `POST /client/register` and `/client/metrics` (202, nothing kept).
//!
//! The body depends on the client (`mirrors::Kind`, from `Unleash-Client-Spec`): legacy
//! clients get only what they evaluate exactly, spec >= 4.2.0 gets segments separately.
//! Bodies and ETags come from the per-snapshot tables; filtered bodies are joined from
//! pre-serialised fragments.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;
use vexil_core::DEFAULT_NAMESPACE;

use crate::Tokens;
use crate::mirrors::{Body, Fragment, Kind, UnleashTable};
use crate::state::AppState;

#[derive(Debug, Clone)]
struct Unleash {
    state: Arc<AppState>,
    tokens: Tokens,
}

pub fn router(state: Arc<AppState>, tokens: Tokens) -> Router {
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
    router.with_state(Unleash { state, tokens })
}

fn message(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "message": text }).to_string(),
    )
        .into_response()
}

/// The checks every request passes: a token if configured, a snapshot, a known namespace.
fn table(
    u: &Unleash,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(Arc<crate::state::Served>, String), Box<Response>> {
    if !u.tokens.accepts_http(headers) {
        u.state.metrics.unauthenticated();
        return Err(Box::new(message(
            StatusCode::UNAUTHORIZED,
            "Missing or unknown token: set the SDK's `Authorization` header to a token this server accepts.",
        )));
    }
    let Some(served) = u.state.served() else {
        return Err(Box::new(message(
            StatusCode::SERVICE_UNAVAILABLE,
            "No valid flag snapshot yet: the flag repository has not been read successfully.",
        )));
    };
    let namespace = params
        .get("namespace")
        .map_or(DEFAULT_NAMESPACE, String::as_str)
        .to_owned();
    if !served.mirrors.unleash.contains_key(namespace.as_str()) {
        return Err(Box::new(message(
            StatusCode::NOT_FOUND,
            &format!("Namespace `{namespace}` not found: no flag file declares it."),
        )));
    }
    Ok((served, namespace))
}

async fn features(
    State(u): State<Unleash>,
    Path(params): Path<HashMap<String, String>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let (served, namespace) = match table(&u, &headers, &params) {
        Ok(x) => x,
        Err(response) => return *response,
    };
    let Some(t) = served.mirrors.unleash.get(namespace.as_str()) else {
        return StatusCode::NOT_FOUND.into_response();
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
    let mut body = b"{\"version\":2,\"features\":[".to_vec();
    let mut first = true;
    for f in &t.fragments {
        let Some(Some(fragment)) = f.per_kind.get(kind) else {
            continue;
        };
        if !keep(f) {
            continue;
        }
        if !first {
            body.push(b',');
        }
        first = false;
        body.extend_from_slice(fragment);
    }
    body.push(b']');
    if let Some(tail) = t.tails.get(kind) {
        body.extend_from_slice(tail);
    }
    Body::new(body)
}

async fn feature(
    State(u): State<Unleash>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (served, namespace) = match table(&u, &headers, &params) {
        Ok(x) => x,
        Err(response) => return *response,
    };
    let name = params.get("name").map_or("", String::as_str);
    let kind = Kind::of(&headers) as usize;
    match served
        .mirrors
        .unleash
        .get(namespace.as_str())
        .and_then(|t| t.features.get(name))
        .and_then(|per_kind| per_kind.get(kind))
    {
        Some(Some(body)) => body.respond(&headers, &[]),
        _ => message(
            StatusCode::NOT_FOUND,
            &format!(
                "Feature `{name}` not found (or not mirrored to this client; see /mirrors/diagnostics)."
            ),
        ),
    }
}

/// Registration and metrics: accepted and dropped (Vexil keeps its own counters).
async fn accepted(
    State(u): State<Unleash>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = table(&u, &headers, &params) {
        // Namespaces and snapshots do not matter here; tokens do.
        if response.status() == StatusCode::UNAUTHORIZED {
            return *response;
        }
    }
    StatusCode::ACCEPTED.into_response()
}

async fn refuse(State(u): State<Unleash>, method: Method, headers: HeaderMap) -> Response {
    refusal(&u, &method, &headers, "GET, HEAD")
}

async fn refuse_post_only(
    State(u): State<Unleash>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    refusal(&u, &method, &headers, "POST")
}

/// 405 naming where the flags live (only to a caller with a token, when tokens are set).
fn refusal(u: &Unleash, method: &Method, headers: &HeaderMap, allow: &'static str) -> Response {
    if !u.tokens.accepts_http(headers) {
        u.state.metrics.unauthenticated();
        return message(StatusCode::UNAUTHORIZED, "Missing or unknown token.");
    }
    let mut response = message(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!(
            "This Unleash API is a read-only mirror served by Vexil: {method} is not allowed. The flags are managed in git ({}); change them with a pull request.",
            u.state.options.source
        ),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

async fn unknown(state: State<Unleash>, method: Method, headers: HeaderMap) -> Response {
    if method == Method::GET || method == Method::HEAD {
        return message(StatusCode::NOT_FOUND, "Not found.");
    }
    refuse(state, method, headers).await
}
