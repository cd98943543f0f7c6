//! Push webhooks on the HTTP port: `POST /hooks/github`, `/hooks/gitlab`, `/hooks/gitea` (and
//! Forgejo) and `/hooks/generic` make the source read at once (`Reloader::trigger`, which
//! coalesces bursts), so a merge is served without waiting for the next poll; polling goes on
//! as the backstop (hosts drop deliveries, and GitLab sends none for a push of many refs).
//!
//! Hooks are authenticated by the webhook secret (`Options::webhook_secret`), never by the
//! bearer tokens, which a git host cannot send: GitHub signs the raw body
//! (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`), Gitea and Forgejo sign the JSON payload
//! (`X-Gitea-Signature` / `X-Forgejo-Signature`: bare hex), GitLab sends the secret itself
//! (`X-Gitlab-Token`), and the generic hook `Authorization: Bearer <secret>`. Signatures are
//! verified by ring in constant time; tokens are compared as SHA-256 digests. A push to a ref
//! this server does not serve is acknowledged and ignored; pings and test deliveries are
//! answered and trigger nothing. Every answer of the four routes is JSON with an `outcome`,
//! counted in `vexil_webhooks_total{host,outcome}` (a refusal also in
//! `vexil_unauthenticated_total{front="hooks"}`); the gate's 405 and 413 are not, nor a 404 for
//! an unknown `/hooks/...` path.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::state::AppState;

/// The shared secret of the webhooks: an HMAC-SHA256 key (ring's, which verifies in constant
/// time) and a SHA-256 digest for the hosts that send the secret as it is.
#[derive(Clone)]
pub struct WebhookSecret {
    key: ring::hmac::Key,
    digest: [u8; 32],
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// `None` for an empty secret (a hook anyone can sign).
    pub fn new(secret: &[u8]) -> Option<WebhookSecret> {
        if secret.is_empty() {
            return None;
        }
        Some(WebhookSecret {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            digest: Sha256::digest(secret).into(),
        })
    }

    /// HMAC-SHA256 of `message` under the secret.
    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (o, b) in out
            .iter_mut()
            .zip(ring::hmac::sign(&self.key, message).as_ref())
        {
            *o = *b;
        }
        out
    }

    /// Whether `hex` (any case) is the HMAC-SHA256 of `message`, compared in constant time.
    pub fn verify_hex(&self, hex: &str, message: &[u8]) -> bool {
        let Some(given) = decode_hex(hex.trim()) else {
            return false;
        };
        ring::hmac::verify(&self.key, message, &given).is_ok()
    }

    /// Whether `token` is the secret itself. Compared as SHA-256 digests, as the bearer tokens
    /// are (`auth::digest`): how long a comparison of digests takes says nothing of the secret.
    pub fn is(&self, token: &str) -> bool {
        crate::auth::digest(token) == self.digest
    }
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let digit = |b: u8| char::from(b).to_digit(16);
        let (hi, lo) = match pair {
            [hi, lo] => (digit(*hi)?, digit(*lo)?),
            _ => return None,
        };
        *o = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Which pushes concern the served source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ServedRef {
    /// Any push (a directory, or a local repository's checked-out branch).
    #[default]
    Any,
    /// A remote's default branch: a push to `refs/heads/<the payload's default branch>`, or
    /// any push whose payload does not name its default branch.
    DefaultBranch,
    /// A branch, tag or commit, as `--ref` names it (`main`, `v1`, `refs/heads/main`, an id).
    Named(String),
}

impl ServedRef {
    /// `Ok` if a push to `pushed` may change what is served; otherwise why not.
    fn admits(&self, pushed: &str, default_branch: Option<&str>) -> Result<(), String> {
        match self {
            ServedRef::Any => Ok(()),
            ServedRef::DefaultBranch => match default_branch {
                None => Ok(()),
                Some(branch) if pushed == format!("refs/heads/{branch}") => Ok(()),
                Some(branch) => Err(format!(
                    "push to {pushed}: this server serves the default branch, refs/heads/{branch}"
                )),
            },
            ServedRef::Named(name) => {
                let matches = pushed == name
                    || pushed.strip_prefix("refs/heads/") == Some(name.as_str())
                    || pushed.strip_prefix("refs/tags/") == Some(name.as_str());
                if matches {
                    Ok(())
                } else if vexil_core::source::looks_like_commit_id(name) {
                    Err(format!(
                        "push to {pushed}: this server serves commit {name}, which never moves"
                    ))
                } else {
                    Err(format!("push to {pushed}: this server serves {name}"))
                }
            }
        }
    }
}

/// The git hosts, as routes and metrics name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Github = 0,
    Gitlab,
    Gitea,
    Generic,
}

impl Host {
    pub const ALL: [Host; 4] = [Host::Github, Host::Gitlab, Host::Gitea, Host::Generic];

    pub fn label(self) -> &'static str {
        match self {
            Host::Github => "github",
            Host::Gitlab => "gitlab",
            Host::Gitea => "gitea",
            Host::Generic => "generic",
        }
    }
}

/// What became of a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The source is read now.
    Triggered = 0,
    /// A push to another ref, or an event that is not a push.
    Ignored,
    /// A ping or a test delivery.
    Ping,
    /// A missing or wrong signature or secret.
    Unauthorized,
    /// Signed, but not a payload this server can read.
    Invalid,
    /// No webhook secret is configured.
    NotConfigured,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Triggered,
        Outcome::Ignored,
        Outcome::Ping,
        Outcome::Unauthorized,
        Outcome::Invalid,
        Outcome::NotConfigured,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Triggered => "triggered",
            Outcome::Ignored => "ignored",
            Outcome::Ping => "ping",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Invalid => "invalid",
            Outcome::NotConfigured => "not_configured",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            // The read happens after the answer: accepted, not done.
            Outcome::Triggered => StatusCode::ACCEPTED,
            Outcome::Ignored | Outcome::Ping => StatusCode::OK,
            Outcome::Unauthorized => StatusCode::UNAUTHORIZED,
            Outcome::Invalid => StatusCode::BAD_REQUEST,
            // This server has no such endpoint until a secret is configured (and a 5xx would
            // read as a passing fault to hosts that retry).
            Outcome::NotConfigured => StatusCode::NOT_FOUND,
        }
    }
}

/// The routes' metrics method names (`vexil_requests_total{front="hooks",method}`).
pub fn method(path: &str) -> &'static str {
    Host::ALL
        .iter()
        .find(|h| path.strip_prefix("/hooks/") == Some(h.label()))
        .map_or("other", |h| h.label())
}

/// The webhook routes (POST only; other methods get 405 with `Allow: POST`).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/hooks/github", post(github))
        .route("/hooks/gitlab", post(gitlab))
        .route("/hooks/gitea", post(gitea))
        .route("/hooks/generic", post(generic))
        .with_state(state)
}

/// A hook as read: what is logged and answered.
#[derive(Debug)]
struct Verdict {
    outcome: Outcome,
    /// The reason for anything but `Triggered`.
    message: String,
    event: Option<String>,
    reference: Option<String>,
}

impl Verdict {
    fn new(outcome: Outcome, message: impl Into<String>) -> Verdict {
        Verdict {
            outcome,
            message: message.into(),
            event: None,
            reference: None,
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Logged and echoed text from a request: bounded, so a hook cannot flood the log.
fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

const NOT_CONFIGURED: &str = "webhooks are not configured: start vexil serve with --webhook-secret-file FILE (or VEXIL_WEBHOOK_SECRET) and give the git host the same secret";

fn secret(state: &AppState) -> Result<&WebhookSecret, Verdict> {
    state
        .options
        .webhook_secret
        .as_ref()
        .ok_or_else(|| Verdict::new(Outcome::NotConfigured, NOT_CONFIGURED))
}

fn unauthorized(message: &str) -> Verdict {
    Verdict::new(Outcome::Unauthorized, message)
}

fn is_form(headers: &HeaderMap) -> bool {
    header(headers, header::CONTENT_TYPE.as_str()).is_some_and(|t| {
        t.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    })
}

/// The JSON payload: the body, or its form field `payload` for a form-encoded hook.
fn payload_bytes(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, Verdict> {
    if !is_form(headers) {
        return Ok(body.to_vec());
    }
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned().into_bytes())
        .ok_or_else(|| {
            Verdict::new(
                Outcome::Invalid,
                "a form-encoded hook without a `payload` field",
            )
        })
}

fn parse(payload: &[u8]) -> Result<Value, Verdict> {
    serde_json::from_slice(payload)
        .map_err(|e| Verdict::new(Outcome::Invalid, format!("the payload is not JSON: {e}")))
}

/// A push: triggers unless it is a test delivery or to a ref this server does not serve.
fn push(state: &AppState, event: &str, payload: &Value, default_branch: &str) -> Verdict {
    let text = |pointer: &str| payload.pointer(pointer).and_then(Value::as_str);
    let Some(reference) = text("/ref") else {
        return Verdict::new(Outcome::Invalid, "the push payload has no `ref`");
    };
    let mut verdict = match (text("/before"), text("/after")) {
        // A real push moves its ref; Gitea's and Gogs's "Test delivery" repeats the head.
        (Some(before), Some(after)) if !after.is_empty() && before == after => Verdict::new(
            Outcome::Ping,
            format!("a test delivery ({reference} did not move): nothing to fetch"),
        ),
        _ => match state
            .options
            .served_ref
            .admits(reference, text(default_branch))
        {
            Err(why) => Verdict::new(Outcome::Ignored, why),
            // The commit announced has been read already (the rest of a burst of deliveries,
            // a redelivery): served, or found invalid. A later push comes with its own hook.
            Ok(()) if text("/after").is_some_and(|after| already_read(state, after)) => {
                Verdict::new(
                    Outcome::Ignored,
                    format!(
                        "{reference} is at {}, which this server has read already",
                        text("/after").map(clip).unwrap_or_default()
                    ),
                )
            }
            Ok(()) => Verdict::new(Outcome::Triggered, ""),
        },
    };
    verdict.event = Some(event.to_owned());
    verdict.reference = Some(reference.to_owned());
    verdict
}

/// Whether `commit` is the revision served or the one the last read found (an invalid one).
fn already_read(state: &AppState, commit: &str) -> bool {
    state
        .live
        .load()
        .as_ref()
        .is_some_and(|s| s.revision() == commit)
        || state.live.inspect(|status| {
            // A read that failed without a verdict (a source error, a compile that panicked)
            // is read again: a hook for its commit must not be ignored.
            status
                .last_attempt
                .as_ref()
                .filter(|a| !matches!(a.result, vexil_core::AttemptResult::SourceError { .. }))
                .and_then(|a| a.revision.as_deref())
                == Some(commit)
        })
}

fn not_a_push(event: &str) -> Verdict {
    let mut verdict = Verdict::new(
        Outcome::Ignored,
        format!(
            "`{}` events do not change flags: only pushes trigger a fetch",
            clip(event)
        ),
    );
    verdict.event = Some(event.to_owned());
    verdict
}

fn github_verdict(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Verdict, Verdict> {
    let secret = secret(state)?;
    let signature = header(headers, "x-hub-signature-256").ok_or_else(|| {
        unauthorized("no X-Hub-Signature-256 header: set the webhook's Secret on GitHub")
    })?;
    let hex = signature
        .strip_prefix("sha256=")
        .ok_or_else(|| unauthorized("X-Hub-Signature-256 is not `sha256=<hex>`"))?;
    // GitHub signs the body as sent, form-encoded or not.
    if !secret.verify_hex(hex, body) {
        return Err(unauthorized(
            "X-Hub-Signature-256 does not match the body: the webhook's secret differs from this server's",
        ));
    }
    let event = header(headers, "x-github-event")
        .ok_or_else(|| Verdict::new(Outcome::Invalid, "no X-GitHub-Event header"))?;
    Ok(match event {
        "ping" => {
            let mut verdict = Verdict::new(Outcome::Ping, "pong: the secret matches");
            verdict.event = Some(event.to_owned());
            verdict
        }
        "push" => {
            let payload = parse(&payload_bytes(headers, body)?)?;
            push(state, event, &payload, "/repository/default_branch")
        }
        other => not_a_push(other),
    })
}

fn gitlab_verdict(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Verdict, Verdict> {
    let secret = secret(state)?;
    let token = header(headers, "x-gitlab-token").ok_or_else(|| {
        unauthorized("no X-Gitlab-Token header: set the webhook's Secret token on GitLab")
    })?;
    if !secret.is(token) {
        return Err(unauthorized(
            "X-Gitlab-Token is not this server's webhook secret",
        ));
    }
    let event = header(headers, "x-gitlab-event")
        .ok_or_else(|| Verdict::new(Outcome::Invalid, "no X-Gitlab-Event header"))?;
    let pushes = ["push", "tag_push"];
    Ok(match event {
        "Push Hook" | "Tag Push Hook" => {
            push(state, event, &parse(body)?, "/project/default_branch")
        }
        // A system hook carries every project's events; its pushes name their kind.
        "System Hook" => {
            let payload = parse(body)?;
            let kind = payload.get("event_name").and_then(Value::as_str);
            if kind.is_some_and(|k| pushes.contains(&k)) {
                push(state, event, &payload, "/project/default_branch")
            } else {
                not_a_push(&format!("{event}: {}", kind.unwrap_or("?")))
            }
        }
        other => not_a_push(other),
    })
}

fn gitea_verdict(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Verdict, Verdict> {
    let secret = secret(state)?;
    let signature = [
        "x-gitea-signature",
        "x-forgejo-signature",
        "x-gogs-signature",
    ]
    .iter()
    .find_map(|name| header(headers, name))
    .ok_or_else(|| {
        unauthorized("no X-Gitea-Signature header: set the webhook's Secret on Gitea")
    })?;
    // Gitea signs the JSON payload, also when the hook is form-encoded (a form without it
    // is checked as it is, and refused like any body the signature does not match).
    let payload = payload_bytes(headers, body).unwrap_or_else(|_| body.to_vec());
    if !secret.verify_hex(signature, &payload) {
        return Err(unauthorized(
            "X-Gitea-Signature does not match the payload: the webhook's secret differs from this server's",
        ));
    }
    let event = ["x-gitea-event", "x-forgejo-event", "x-gogs-event"]
        .iter()
        .find_map(|name| header(headers, name))
        .ok_or_else(|| Verdict::new(Outcome::Invalid, "no X-Gitea-Event header"))?;
    Ok(match event {
        "push" => push(
            state,
            event,
            &parse(&payload)?,
            "/repository/default_branch",
        ),
        other => not_a_push(other),
    })
}

fn generic_verdict(state: &AppState, headers: &HeaderMap) -> Result<Verdict, Verdict> {
    let secret = secret(state)?;
    let token = header(headers, header::AUTHORIZATION.as_str())
        .and_then(crate::auth::bearer)
        .ok_or_else(|| unauthorized("no `Authorization: Bearer <webhook secret>` header"))?;
    if !secret.is(token) {
        return Err(unauthorized(
            "the bearer token is not this server's webhook secret",
        ));
    }
    Ok(Verdict::new(Outcome::Triggered, ""))
}

/// The delivery's id, as each host names it.
fn delivery(host: Host, headers: &HeaderMap) -> Option<String> {
    let names: &[&str] = match host {
        Host::Github => &["x-github-delivery"],
        Host::Gitlab => &["x-gitlab-event-uuid", "idempotency-key"],
        Host::Gitea => &["x-gitea-delivery", "x-forgejo-delivery", "x-gogs-delivery"],
        Host::Generic => &["x-request-id"],
    };
    names
        .iter()
        .find_map(|name| header(headers, name))
        .map(clip)
}

/// Counts, logs, triggers and answers.
fn answer(state: &AppState, host: Host, headers: &HeaderMap, verdict: Verdict) -> Response {
    let outcome = verdict.outcome;
    state.metrics.webhook(host, outcome);
    let id = delivery(host, headers);
    let event = verdict.event.as_deref().map(clip);
    let reference = verdict.reference.as_deref().map(clip);
    let (host_label, outcome_label) = (host.label(), outcome.label());
    match outcome {
        Outcome::Triggered => {
            state.reloader.trigger();
            tracing::info!(
                host = host_label,
                event,
                reference,
                delivery = id,
                "webhook: reading the source now"
            );
        }
        Outcome::Ignored | Outcome::Ping => {
            tracing::info!(host = host_label, outcome = outcome_label, event, reference, delivery = id, why = %verdict.message, "webhook: nothing to fetch");
        }
        Outcome::Unauthorized | Outcome::Invalid => {
            if outcome == Outcome::Unauthorized {
                state.metrics.unauthenticated(crate::metrics::Front::Hooks);
            }
            tracing::warn!(host = host_label, outcome = outcome_label, delivery = id, why = %verdict.message, "webhook refused");
        }
        Outcome::NotConfigured => {
            tracing::warn!(
                host = host_label,
                delivery = id,
                "webhook refused: no webhook secret is configured"
            );
        }
    }
    let mut body = json!({ "outcome": outcome_label });
    if let Some(map) = body.as_object_mut() {
        let mut put = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                map.insert(key.to_owned(), Value::String(value));
            }
        };
        put("event", event);
        put("ref", reference);
        put("delivery", id);
        match outcome {
            Outcome::Triggered => put("message", Some("reading the source now".into())),
            Outcome::Ignored => put("reason", Some(verdict.message)),
            Outcome::Ping => put("message", Some(verdict.message)),
            Outcome::Unauthorized | Outcome::Invalid | Outcome::NotConfigured => {
                put("error", Some(verdict.message));
            }
        }
    }
    (outcome.status(), axum::Json(body)).into_response()
}

fn settle(result: Result<Verdict, Verdict>) -> Verdict {
    result.unwrap_or_else(|refused| refused)
}

async fn github(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let verdict = settle(github_verdict(&state, &headers, &body));
    answer(&state, Host::Github, &headers, verdict)
}

async fn gitlab(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let verdict = settle(gitlab_verdict(&state, &headers, &body));
    answer(&state, Host::Gitlab, &headers, verdict)
}

async fn gitea(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let verdict = settle(gitea_verdict(&state, &headers, &body));
    answer(&state, Host::Gitea, &headers, verdict)
}

/// Any body: only the secret counts.
async fn generic(State(state): State<Arc<AppState>>, headers: HeaderMap, _body: Bytes) -> Response {
    let verdict = settle(generic_verdict(&state, &headers));
    answer(&state, Host::Generic, &headers, verdict)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    const B: &str =
        r#"{"ref":"refs/heads/main","after":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}"#;

    /// The vectors of the shared reference (git-webhooks.md), GitHub's published one first.
    #[test]
    fn hmac_sha256_matches_the_reference_vectors() {
        let sign = |secret: &str, message: &[u8]| {
            hex(&WebhookSecret::new(secret.as_bytes()).unwrap().sign(message))
        };
        assert_eq!(
            sign("It's a Secret to Everybody", b"Hello, World!"),
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert_eq!(B.len(), 76);
        assert_eq!(
            sign("vexil-secret", B.as_bytes()),
            "2b18675952103bfb7d80631876e550ed46030c6fb8457f1f7bf170e11f0dce10"
        );
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", B)
            .finish();
        assert_eq!(
            sign("vexil-secret", form.as_bytes()),
            "034b4369ae76ccd2b5c4201306ec18a7b84a033eca11b3b21d370c10b072dafd"
        );
        // RFC 4231 case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(&WebhookSecret::new(&[0xaa; 131])
                .unwrap()
                .sign(b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert!(WebhookSecret::new(b"").is_none());
    }

    #[test]
    fn verification_takes_any_case_and_nothing_else() {
        let secret = WebhookSecret::new(b"vexil-secret").unwrap();
        let good = "2b18675952103bfb7d80631876e550ed46030c6fb8457f1f7bf170e11f0dce10";
        assert!(secret.verify_hex(good, B.as_bytes()));
        assert!(secret.verify_hex(&good.to_uppercase(), B.as_bytes()));
        assert!(!secret.verify_hex(&good[..62], B.as_bytes()));
        assert!(!secret.verify_hex(&format!("{}1", &good[..63]), B.as_bytes()));
        assert!(!secret.verify_hex(&format!("{}zz", &good[..62]), B.as_bytes()));
        assert!(!secret.verify_hex(good, b"{}"));
        assert!(secret.is("vexil-secret"));
        assert!(!secret.is("vexil-secret "));
        assert!(!secret.is(""));
        assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
    }

    #[test]
    fn served_refs_admit_their_pushes() {
        let named = |n: &str| ServedRef::Named(n.into());
        assert!(named("main").admits("refs/heads/main", None).is_ok());
        assert!(named("v1").admits("refs/tags/v1", None).is_ok());
        assert!(named("v1").admits("refs/heads/v1", None).is_ok());
        assert!(
            named("refs/heads/main")
                .admits("refs/heads/main", None)
                .is_ok()
        );
        assert!(
            named("main")
                .admits("refs/heads/dev", Some("main"))
                .is_err()
        );
        assert!(named("main").admits("refs/tags/main-1", None).is_err());
        let commit = named("da15608").admits("refs/heads/main", None);
        assert!(commit.is_err_and(|why| why.contains("never moves")));
        let default = ServedRef::DefaultBranch;
        assert!(default.admits("refs/heads/trunk", Some("trunk")).is_ok());
        assert!(default.admits("refs/heads/main", Some("trunk")).is_err());
        assert!(default.admits("refs/heads/anything", None).is_ok());
        assert!(ServedRef::Any.admits("refs/heads/x", Some("main")).is_ok());
    }

    #[test]
    fn methods_by_path() {
        assert_eq!(method("/hooks/github"), "github");
        assert_eq!(method("/hooks/generic"), "generic");
        assert_eq!(method("/hooks/bitbucket"), "other");
    }
}
