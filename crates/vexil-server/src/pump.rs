//! The one change-stream pump behind vexil.v1 Watch and flagd's EventStream: it follows the
//! change broadcast, sends heartbeats, resyncs a stream that fell behind, and hands one event at
//! a time to a client that may have stopped reading. What a stream says is its `Feed`'s.
//!
//! A stream's events go through a channel of one to the connection, and an event is built (its
//! keys copied into a message) only once the channel has room: until then the stream holds the
//! shared change event, so a client that stops reading (or whose HTTP/2 window stays closed)
//! holds at most one built event in the channel and one being written. The stream then waits at
//! most the stalled-stream timeout before it ends, so no stuck client keeps a task, its buffers
//! or its place in the change broadcast for long.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, watch};
use vexil_core::ChangeEvent;

use crate::state::AppState;

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// The client went away.
    Gone,
    /// The client took nothing for the stalled-stream timeout.
    Stalled,
    /// The server is shutting down.
    ShuttingDown,
}

/// The room a stream's channel has: one event.
pub const STREAM_BUFFER: usize = 1;

/// Builds an event with `make` and hands it to the stream's channel once it has room, waiting
/// at most `stall`.
pub async fn deliver<T>(
    tx: &mpsc::Sender<T>,
    make: impl FnOnce() -> T,
    shutdown: &mut watch::Receiver<bool>,
    stall: Duration,
) -> Delivery {
    tokio::select! {
        _ = shutdown.wait_for(|down| *down) => Delivery::ShuttingDown,
        room = tokio::time::timeout(stall, tx.reserve()) => match room {
            Ok(Ok(permit)) => {
                permit.send(make());
                Delivery::Sent
            }
            Ok(Err(_)) => Delivery::Gone,
            Err(_) => {
                tracing::debug!(stall = ?stall, "ending a change stream whose client stopped reading");
                Delivery::Stalled
            }
        },
    }
}

/// What one kind of change stream says; the pump decides when.
pub trait Feed: Send + 'static {
    type Event: Send + 'static;
    /// The first event, once the stream may start.
    fn opening(&mut self) -> Self::Event;
    fn heartbeat(&mut self) -> Self::Event;
    /// Whether this stream reports the change (a stream notes here what it has seen).
    fn wants(&mut self, change: &ChangeEvent) -> bool;
    /// The event for a wanted change, built only once the client has room for it.
    fn change(&mut self, change: &ChangeEvent) -> Self::Event;
    /// After falling behind the broadcast: an event that brings the client up to date.
    fn resync(&mut self, state: &AppState) -> Option<Self::Event>;
    /// The last event when the server shuts down, if the protocol has one.
    fn closing(&mut self) -> Option<Self::Event>;
}

/// How a stream starts and how often it beats.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// The longest silence before a heartbeat.
    pub heartbeat: Duration,
    /// Wait for a served snapshot before the opening event.
    pub wait_ready: bool,
}

/// The next event: a change stays the shared broadcast event until the stream has room.
enum Pending<E> {
    Ready(E),
    Change(Arc<ChangeEvent>),
}

/// Feeds one stream until the client leaves or stops reading, or the server shuts down, and
/// says which (`Sent`: the broadcast closed). `events` must be subscribed before the feed read
/// the served revision, so that no swap falls between the two.
pub async fn pump<F: Feed>(
    state: Arc<AppState>,
    mut events: broadcast::Receiver<Arc<ChangeEvent>>,
    mut feed: F,
    pace: Pace,
    tx: mpsc::Sender<F::Event>,
) -> Delivery {
    let mut shutdown = state.shutdown.subscribe();
    let stall = state.options.stalled_stream_timeout;
    if pace.wait_ready {
        let mut ready = state.ready.subscribe();
        tokio::select! {
            _ = shutdown.wait_for(|d| *d) => return Delivery::ShuttingDown,
            () = tx.closed() => return Delivery::Gone,
            r = ready.wait_for(|r| *r) => if r.is_err() { return Delivery::ShuttingDown },
        }
    }
    let mut pending = Some(Pending::Ready(feed.opening()));
    let mut next_beat = tokio::time::Instant::now() + pace.heartbeat;
    loop {
        if let Some(event) = pending.take() {
            let make = || match event {
                Pending::Ready(event) => event,
                Pending::Change(change) => feed.change(&change),
            };
            match deliver(&tx, make, &mut shutdown, stall).await {
                Delivery::Sent => {}
                Delivery::ShuttingDown => break,
                Delivery::Stalled => {
                    state.metrics.stream_stalled();
                    return Delivery::Stalled;
                }
                Delivery::Gone => return Delivery::Gone,
            }
            next_beat = tokio::time::Instant::now() + pace.heartbeat;
            continue;
        }
        tokio::select! {
            _ = shutdown.wait_for(|down| *down) => break,
            () = tx.closed() => return Delivery::Gone,
            () = tokio::time::sleep_until(next_beat) => {
                pending = Some(Pending::Ready(feed.heartbeat()));
            }
            received = events.recv() => match received {
                Ok(change) => {
                    if feed.wants(&change) {
                        pending = Some(Pending::Change(change));
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    events = events.resubscribe();
                    pending = feed.resync(&state).map(Pending::Ready);
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
    // Shutting down: say so if the protocol does, waiting a little for a slow client.
    if let Some(last) = feed.closing() {
        let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(last)).await;
    }
    Delivery::ShuttingDown
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::unreachable)]
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_channel_is_a_stalled_stream_after_the_timeout() {
        let (tx, mut rx) = mpsc::channel(1);
        let (_down, mut shutdown) = watch::channel(false);
        let stall = Duration::from_secs(60);
        assert_eq!(
            deliver(&tx, || 1, &mut shutdown, stall).await,
            Delivery::Sent
        );
        // The channel is full and nobody reads: the second event is never built, and the
        // delivery gives up after the timeout.
        let never = || -> i32 { unreachable!("an event is built only when there is room") };
        assert_eq!(
            deliver(&tx, never, &mut shutdown, stall).await,
            Delivery::Stalled
        );
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(
            deliver(&tx, || 3, &mut shutdown, stall).await,
            Delivery::Sent
        );
        drop(rx);
        assert_eq!(
            deliver(&tx, || 4, &mut shutdown, stall).await,
            Delivery::Gone
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_a_blocked_delivery() {
        let (tx, _rx) = mpsc::channel(1);
        let (down, mut shutdown) = watch::channel(false);
        tx.send(0).await.unwrap();
        let blocked = deliver(&tx, || 1, &mut shutdown, Duration::from_secs(3600));
        let (delivery, ()) = tokio::join!(blocked, async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            down.send_replace(true);
        });
        assert_eq!(delivery, Delivery::ShuttingDown);
    }
}
