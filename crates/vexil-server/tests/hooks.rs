//! A burst of webhooks while the source is being read costs one more read, whatever its size:
//! 50 signed hooks through `vexil_server::http::router` (no sockets) while a read is held at a
//! gate, then the gate opens. (The single hooks' contract is the table `tests/wire/hooks.yaml`.)
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::Request;
use tower::ServiceExt as _;
use vexil_core::ReloadOptions;
use vexil_core::source::{Fetched, Source, SourceError, from_memory};
use vexil_server::{AppState, Options, ServedRef, Tokens, WebhookSecret};

const PATIENCE: Duration = Duration::from_secs(20);

/// Counts its reads; while a gate is set, each read waits for a message on it.
#[derive(Debug, Clone, Default)]
struct Gated {
    reads: Arc<AtomicUsize>,
    gate: Arc<Mutex<Option<Receiver<()>>>>,
}

impl Gated {
    fn close(&self) -> Sender<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        *self.gate.lock().unwrap() = Some(rx);
        tx
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

impl Source for Gated {
    fn describe(&self) -> String {
        "gated".into()
    }

    /// Only triggered reads happen during the test.
    fn next_poll(&self, _failures: u32) -> Duration {
        Duration::from_secs(3600)
    }

    fn read(&mut self, _known: Option<&str>, _force: bool) -> Result<Option<Fetched>, SourceError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &*self.gate.lock().unwrap() {
            let _ = gate.recv_timeout(PATIENCE);
        }
        let flag = "flags:\n  a:\n    type: string\n    variants: { v: one }\n    default: v\n";
        Ok(Some(Fetched {
            revision: "r1".into(),
            loaded: from_memory([("a.yaml", flag)]),
        }))
    }
}

fn hook() -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri("/hooks/generic")
        .header("authorization", "Bearer burst-secret")
        .body(Body::from("{}"))
        .unwrap()
}

fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_hooks_during_a_read_cost_one_more_read() {
    let source = Gated::default();
    let options = Options {
        webhook_secret: WebhookSecret::new(b"burst-secret"),
        served_ref: ServedRef::Any,
        ..Options::default()
    };
    let state =
        AppState::start(Box::new(source.clone()), ReloadOptions::default(), options).unwrap();
    let router = vexil_server::http::router(Arc::clone(&state), Tokens::default());
    assert_eq!(source.reads(), 1, "the first read, at start");

    // The first hook starts a read, held at the gate.
    let open = source.close();
    let first = router.clone().oneshot(hook()).await.unwrap();
    assert_eq!(first.status(), 202);
    eventually("the triggered read to begin", || source.reads() == 2);

    // 49 more, concurrently, while it is held: each is answered at once.
    let burst: Vec<_> = (0..49)
        .map(|_| tokio::spawn(router.clone().oneshot(hook())))
        .collect();
    for answer in burst {
        assert_eq!(answer.await.unwrap().unwrap().status(), 202);
    }
    assert!(state.reloader.trigger_pending(), "one read is queued");
    open.send(()).unwrap();
    open.send(()).unwrap();
    eventually("the reloader to settle", || {
        !state.reloader.trigger_pending() && state.live.reader().reading_since.is_none()
    });
    // The held read, then one for all 49: not 50.
    assert_eq!(source.reads(), 3);
    assert_eq!(state.live.status().counts.attempts, 3);
    // Nothing else comes later (only triggers read: the poll is an hour away).
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(source.reads(), 3);
}
