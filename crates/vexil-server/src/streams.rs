//! What the change streams (vexil.v1 Watch, flagd's EventStream) share: handing one event to a
//! client that may have stopped reading.
//!
//! A stream's events go through a channel of one to the connection, and an event is built (its
//! keys copied into a message) only once the channel has room: until then the stream holds the
//! shared change event, so a client that stops reading (or whose HTTP/2 window stays closed)
//! holds at most one built event in the channel and one being written. The stream then waits at
//! most the stalled-stream timeout before it ends, so no stuck client keeps a task, its buffers
//! or its place in the change broadcast for long.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

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
