//! Outbound change notifications: after a swap that changes flags, a signed JSON document to
//! every `--notify-url` receiver and one message to every `--notify-slack` webhook.
//!
//! Nothing here runs on the swap path: the observer only notes the snapshots (swaps that come
//! faster than the body is built are merged into one span of revisions), one builder task
//! computes the review and the bodies once per change, and one task per receiver delivers its
//! queue in revision order. A queue is bounded (the oldest change is dropped first, and
//! counted); a failed attempt is retried with exponential back-off and jitter; every request
//! has a timeout. A slow or dead receiver therefore never delays a swap or another receiver.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value as Json, json};
use tokio::sync::Notify;
use tokio_rustls::rustls;
use vexil_core::Snapshot;
use vexil_core::review::{FieldChange, Report};

use crate::hooks::WebhookSecret;
use crate::outbound::{self, Target};
use crate::state::AppState;

/// The header carrying `sha256=<hex HMAC-SHA256 of the raw body>`.
pub const SIGNATURE_HEADER: &str = "x-vexil-signature-256";
/// The delivery id (the same on every attempt of one delivery; also in the signed body).
pub const DELIVERY_HEADER: &str = "x-vexil-delivery";
/// The attempt's time in unix seconds (also in the signed body).
pub const TIMESTAMP_HEADER: &str = "x-vexil-timestamp";

/// What a receiver is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Vexil's JSON document, signed when a secret is set.
    Json,
    /// One Slack incoming-webhook message per change.
    Slack,
}

/// The notification settings (`--notify-*`).
#[derive(Debug, Clone)]
pub struct NotifyOptions {
    /// Receivers in the order given: `--notify-url`s, then `--notify-slack`s.
    pub receivers: Vec<(Kind, String)>,
    pub secret: Option<WebhookSecret>,
    /// Bounds one attempt: connect, TLS, request and answer.
    pub timeout: Duration,
    /// Changes a receiver may have waiting; more drop the oldest.
    pub queue: usize,
    /// The first retry's wait; each next one doubles, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Attempts of one delivery before it is given up.
    pub attempts: u32,
    /// The source is git: a revision is a commit id.
    pub commit: bool,
}

impl Default for NotifyOptions {
    fn default() -> NotifyOptions {
        NotifyOptions {
            receivers: Vec::new(),
            secret: None,
            timeout: Duration::from_secs(10),
            queue: 100,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            attempts: 8,
            commit: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notification receiver {name}: {reason}")]
    Receiver {
        name: String,
        reason: outbound::TargetError,
    },
    #[error("https notification receivers: {0}")]
    Tls(String),
}

/// What became of one attempt or delivery, as `vexil_notifications_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered = 0,
    /// An attempt failed and will be retried.
    Retried,
    /// Given up: a refusal that retrying cannot fix (4xx) or the last attempt failed.
    Failed,
    /// Dropped from a full queue before it was tried.
    Dropped,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Delivered,
        Outcome::Retried,
        Outcome::Failed,
        Outcome::Dropped,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retried => "retried",
            Outcome::Failed => "failed",
            Outcome::Dropped => "dropped",
        }
    }
}

/// One change, built once and shared by every receiver's queue.
#[derive(Debug)]
struct Change {
    revision: String,
    /// Vexil's document without its opening brace: each attempt prefixes its delivery id and
    /// timestamp, so those are signed with the rest.
    tail: String,
    slack: Vec<u8>,
}

/// One receiver: its queue, its task's wake-up, its counts and last error.
#[derive(Debug)]
pub struct Receiver {
    /// `url0`, `slack0`, ...: the metrics label (bounded, never the URL, which may hold a token).
    pub name: String,
    kind: Kind,
    target: Target,
    queue: Mutex<VecDeque<Arc<Change>>>,
    wake: Notify,
    counts: [AtomicU64; Outcome::ALL.len()],
    last_error: Mutex<Option<(SystemTime, String)>>,
    last_delivered: Mutex<Option<String>>,
}

/// What `Status` reports of one receiver.
#[derive(Debug, Clone, Default)]
pub struct ReceiverReport {
    pub name: String,
    pub host: String,
    pub counts: [u64; Outcome::ALL.len()],
    pub queued: usize,
    pub last_error: Option<(SystemTime, String)>,
    pub last_delivered: Option<String>,
}

impl Receiver {
    fn count(&self, outcome: Outcome) {
        if let Some(c) = self.counts.get(outcome as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// The count of one outcome.
    pub fn counted(&self, outcome: Outcome) -> u64 {
        self.counts
            .get(outcome as usize)
            .map_or(0, |c| c.load(Relaxed))
    }

    pub fn report(&self) -> ReceiverReport {
        ReceiverReport {
            name: self.name.clone(),
            host: self.target.host.clone(),
            counts: std::array::from_fn(|i| self.counts.get(i).map_or(0, |c| c.load(Relaxed))),
            queued: lock(&self.queue).len(),
            last_error: lock(&self.last_error).clone(),
            last_delivered: lock(&self.last_delivered).clone(),
        }
    }

    fn push(&self, change: Arc<Change>, bound: usize) {
        let mut queue = lock(&self.queue);
        while queue.len() >= bound.max(1) {
            queue.pop_front();
            self.count(Outcome::Dropped);
        }
        queue.push_back(change);
        drop(queue);
        self.wake.notify_one();
    }

    async fn next(&self) -> Arc<Change> {
        loop {
            if let Some(change) = lock(&self.queue).pop_front() {
                return change;
            }
            self.wake.notified().await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Swaps noted by the observer and not yet built into a change.
#[derive(Debug, Default)]
struct Pending {
    /// The snapshot served after the last swap noted.
    last: Option<Arc<Snapshot>>,
    /// The span to report: from the first snapshot to the last.
    span: Option<(Arc<Snapshot>, Arc<Snapshot>)>,
}

/// The notifier: its receivers and the swaps waiting to be built.
#[derive(Debug)]
pub struct Notifier {
    receivers: Vec<Arc<Receiver>>,
    options: NotifyOptions,
    source: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    pending: Mutex<Pending>,
    wake: Notify,
}

impl Notifier {
    pub fn receivers(&self) -> &[Arc<Receiver>] {
        &self.receivers
    }

    /// Checks the receivers' URLs, observes `state`'s swaps and starts the builder and one task
    /// per receiver (on the current tokio runtime).
    pub fn start(state: &AppState, options: NotifyOptions) -> Result<Arc<Notifier>, NotifyError> {
        let mut receivers = Vec::new();
        let (mut urls, mut slacks) = (0, 0);
        for (kind, url) in &options.receivers {
            let name = match kind {
                Kind::Json => format!("url{urls}"),
                Kind::Slack => format!("slack{slacks}"),
            };
            match kind {
                Kind::Json => urls += 1,
                Kind::Slack => slacks += 1,
            }
            let target = Target::parse(url).map_err(|reason| NotifyError::Receiver {
                name: name.clone(),
                reason,
            })?;
            receivers.push(Arc::new(Receiver {
                name,
                kind: *kind,
                target,
                queue: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
                counts: Default::default(),
                last_error: Mutex::new(None),
                last_delivered: Mutex::new(None),
            }));
        }
        let tls = if receivers.iter().any(|r| r.target.https) {
            Some(outbound::client_tls().map_err(NotifyError::Tls)?)
        } else {
            None
        };
        let notifier = Arc::new(Notifier {
            receivers,
            options,
            source: state.options.source.clone(),
            tls,
            pending: Mutex::new(Pending {
                last: state.current().snapshot(),
                span: None,
            }),
            wake: Notify::new(),
        });
        let weak = Arc::downgrade(&notifier);
        state.live.observe(move |_, swap| {
            let (Some(notifier), Some(swap)) = (weak.upgrade(), swap) else {
                return;
            };
            notifier.note(swap.snapshot, !swap.event.changes.is_empty());
        });
        for receiver in &notifier.receivers {
            tokio::spawn(deliver_all(Arc::clone(&notifier), Arc::clone(receiver)));
        }
        tokio::spawn(build_all(Arc::clone(&notifier)));
        Ok(notifier)
    }

    /// On the reloader thread, after the swap: notes it, nothing more.
    fn note(&self, new: &Arc<Snapshot>, changes_flags: bool) {
        let mut pending = lock(&self.pending);
        let previous = pending.last.replace(Arc::clone(new));
        match (&mut pending.span, previous) {
            // The builder is behind: the span grows (one change covers both swaps).
            (Some((_, last)), _) => *last = Arc::clone(new),
            // The first snapshot is no change; a swap that changes no flag says nothing.
            (None, Some(old)) if changes_flags => pending.span = Some((old, Arc::clone(new))),
            (None, _) => return,
        }
        drop(pending);
        self.wake.notify_one();
    }

    fn build(&self, old: &Snapshot, new: &Snapshot) -> Option<Change> {
        let report = vexil_core::review::review(old, new);
        let namespaces = namespaces_json(&report);
        if namespaces.is_empty() {
            return None;
        }
        let document = json!({
            "type": "flags.changed",
            "source": self.source,
            "old_revision": old.revision(),
            "revision": new.revision(),
            "commit": self.options.commit.then(|| new.revision()),
            "namespaces": namespaces,
        });
        let text = document.to_string();
        let tail = text.strip_prefix('{').unwrap_or(&text).to_owned();
        Some(Change {
            revision: new.revision().to_owned(),
            tail,
            slack: slack_message(&self.source, old.revision(), new.revision(), &report),
        })
    }
}

/// The builder: one change per span of swaps, handed to every receiver's queue.
async fn build_all(notifier: Arc<Notifier>) {
    loop {
        let span = lock(&notifier.pending).span.take();
        let Some((old, new)) = span else {
            notifier.wake.notified().await;
            continue;
        };
        // The review compares every flag of both snapshots: not on a runtime worker.
        let for_build = Arc::clone(&notifier);
        let built = tokio::task::spawn_blocking(move || for_build.build(&old, &new)).await;
        if let Ok(Some(change)) = built {
            let change = Arc::new(change);
            for receiver in &notifier.receivers {
                receiver.push(Arc::clone(&change), notifier.options.queue);
            }
        }
    }
}

/// One receiver's task: its queue in order, each change until delivered or given up.
async fn deliver_all(notifier: Arc<Notifier>, receiver: Arc<Receiver>) {
    loop {
        let change = receiver.next().await;
        deliver(&notifier, &receiver, &change).await;
    }
}

async fn deliver(notifier: &Notifier, receiver: &Receiver, change: &Change) {
    let options = &notifier.options;
    let id = random_hex::<16>();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (headers, body) = match receiver.kind {
            Kind::Json => signed(change, &id, options.secret.as_ref()),
            Kind::Slack => (Vec::new(), change.slack.clone()),
        };
        let sent = tokio::time::timeout(
            options.timeout,
            outbound::post(&receiver.target, notifier.tls.as_ref(), &headers, body),
        )
        .await;
        let (error, retry, wait) = match sent {
            Ok(Ok(answer)) if answer.status.is_success() => {
                receiver.count(Outcome::Delivered);
                *lock(&receiver.last_delivered) = Some(change.revision.clone());
                return;
            }
            Ok(Ok(answer)) => {
                let code = answer.status.as_u16();
                // As go-retryablehttp: 429 and 5xx but 501 are worth another try; any other
                // refusal (a wrong signature, a wrong URL) would be refused again.
                let retry = code == 408 || code == 429 || (code >= 500 && code != 501);
                let text = answer.text.trim();
                (
                    format!("HTTP {code} {text}").trim_end().to_owned(),
                    retry,
                    answer.retry_after,
                )
            }
            Ok(Err(e)) => (e.to_string(), true, None),
            Err(_) => (
                format!("no answer within {}s", options.timeout.as_secs_f64()),
                true,
                None,
            ),
        };
        tracing::warn!(receiver = %receiver.name, revision = %change.revision, attempt, error = %error, "change notification failed");
        *lock(&receiver.last_error) = Some((SystemTime::now(), error));
        if !retry || attempt >= options.attempts {
            receiver.count(Outcome::Failed);
            return;
        }
        receiver.count(Outcome::Retried);
        let wait = wait
            .unwrap_or_else(|| backoff(options.retry_base, options.retry_max, attempt))
            .min(options.retry_max);
        tokio::time::sleep(wait).await;
    }
}

/// The wait before retry `attempt + 1`: `base * 2^(attempt-1)` capped at `max`, then half of
/// it fixed and half random (receivers that fail together do not retry in step).
fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    let half = exp / 2;
    let [a, b, c, d] = random_bytes::<4>();
    let fraction = f64::from(u32::from_le_bytes([a, b, c, d])) / f64::from(u32::MAX);
    half + half.mul_f64(fraction)
}

/// The body of one attempt, with its delivery id and time first (both signed), and its headers.
fn signed(
    change: &Change,
    id: &str,
    secret: Option<&WebhookSecret>,
) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = format!(r#"{{"delivery":"{id}","timestamp":{now},{}"#, change.tail).into_bytes();
    let mut headers = vec![
        (DELIVERY_HEADER, id.to_owned()),
        (TIMESTAMP_HEADER, now.to_string()),
    ];
    if let Some(secret) = secret {
        headers.push((
            SIGNATURE_HEADER,
            format!("sha256={}", hex(&secret.sign(&body))),
        ));
    }
    (headers, body)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom as _;
    let mut out = [0u8; N];
    // The system's generator does not fail on Linux; zeros would only make ids less unique.
    let _ = ring::rand::SystemRandom::new().fill(&mut out);
    out
}

fn random_hex<const N: usize>() -> String {
    hex(&random_bytes::<N>())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Per namespace, the flags added (with their definition), changed (field by field, before ->
/// after, as `vexil diff` shows them) and removed.
fn namespaces_json(report: &Report) -> Vec<Json> {
    let field = |f: &FieldChange| json!({ "field": f.field, "before": f.before, "after": f.after });
    report
        .namespaces
        .iter()
        .filter(|ns| !(ns.added.is_empty() && ns.changed.is_empty() && ns.removed.is_empty()))
        .map(|ns| {
            json!({
                "namespace": ns.name,
                "added": ns.added.iter().map(|(k, d)| json!({ "flag": k, "definition": d })).collect::<Vec<_>>(),
                "changed": ns.changed.iter().map(|c| json!({
                    "flag": c.key,
                    "behaviour": c.behaviour,
                    "fields": c.fields.iter().map(field).collect::<Vec<_>>(),
                    "via_segments": c.via_segments,
                })).collect::<Vec<_>>(),
                "removed": ns.removed,
            })
        })
        .collect()
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped in user text.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn short(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}

/// One Slack message for the whole change: a fallback text and one section per namespace.
fn slack_message(source: &str, old: &str, new: &str, report: &Report) -> Vec<u8> {
    let value = |v: &Option<Json>| v.as_ref().map_or_else(|| "-".to_owned(), Json::to_string);
    let mut blocks = Vec::new();
    let (mut added, mut changed, mut removed) = (0, 0, 0);
    for ns in &report.namespaces {
        let mut lines = Vec::new();
        for (key, _) in &ns.added {
            lines.push(format!("• added `{}`", escape(key)));
        }
        for c in &ns.changed {
            let fields: Vec<String> = c
                .fields
                .iter()
                .map(|f| {
                    format!(
                        "{} {} -> {}",
                        escape(&f.field),
                        escape(&value(&f.before)),
                        escape(&value(&f.after))
                    )
                })
                .collect();
            lines.push(format!("• `{}`: {}", escape(&c.key), fields.join("; ")));
        }
        for key in &ns.removed {
            lines.push(format!("• removed `{}`", escape(key)));
        }
        added += ns.added.len();
        changed += ns.changed.len();
        removed += ns.removed.len();
        if lines.is_empty() {
            continue;
        }
        let mut text = format!("*{}*\n{}", escape(&ns.name), lines.join("\n"));
        // A section's text is at most 3,000 characters.
        if text.chars().count() > 2900 {
            text = text.chars().take(2900).collect::<String>() + "\n…";
        }
        blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } }));
    }
    // A message holds at most 50 blocks.
    if blocks.len() > 50 {
        blocks.truncate(49);
        let more = "…and more namespaces (see the source's history)";
        blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": more } }));
    }
    let fallback = format!(
        "Flags changed in {} ({} -> {}): {added} added, {changed} changed, {removed} removed",
        escape(source),
        short(old),
        short(new)
    );
    json!({ "text": fallback, "blocks": blocks })
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        for attempt in 1..12 {
            let exp = Duration::from_secs(1 << (attempt - 1)).min(max);
            let wait = backoff(base, max, attempt);
            assert!(wait >= exp / 2 && wait <= exp, "{attempt}: {wait:?}");
        }
    }

    #[test]
    fn the_signature_covers_the_delivery_and_the_time() {
        let change = Change {
            revision: "r".into(),
            tail: r#""type":"flags.changed"}"#.into(),
            slack: Vec::new(),
        };
        let secret = WebhookSecret::new(b"s3cret").unwrap();
        let (headers, body) = signed(&change, "abc", Some(&secret));
        let text = String::from_utf8(body.clone()).unwrap();
        let parsed: Json = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["delivery"], "abc");
        assert_eq!(parsed["type"], "flags.changed");
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).unwrap().1.clone();
        assert_eq!(parsed["timestamp"].to_string(), get(TIMESTAMP_HEADER));
        let sig = get(SIGNATURE_HEADER);
        assert!(secret.verify_hex(sig.strip_prefix("sha256=").unwrap(), &body));
    }

    #[test]
    fn one_slack_message_per_change_escaped() {
        use vexil_core::review::{FlagChange, NamespaceReport};
        let report = Report {
            namespaces: vec![NamespaceReport {
                name: "shop".into(),
                added: vec![("new<x>".into(), json!({}))],
                removed: vec!["old&gone".into()],
                changed: vec![FlagChange {
                    key: "rollout".into(),
                    fields: vec![FieldChange {
                        field: "rules[0].rollout".into(),
                        before: Some(json!(10)),
                        after: Some(json!(25)),
                    }],
                    via_segments: Vec::new(),
                    behaviour: true,
                    audience: Vec::new(),
                }],
                segments: Vec::new(),
            }],
            config: Vec::new(),
        };
        let body = slack_message(
            "repo <main>",
            "0123456789abcdef",
            "fedcba9876543210",
            &report,
        );
        let message: Json = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            message["text"],
            "Flags changed in repo &lt;main&gt; (0123456789ab -> fedcba987654): 1 added, 1 changed, 1 removed"
        );
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0]["type"], "section");
        assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
        assert_eq!(
            blocks[0]["text"]["text"],
            "*shop*\n• added `new&lt;x&gt;`\n• `rollout`: rules[0].rollout 10 -> 25\n• removed `old&amp;gone`"
        );
    }
}
