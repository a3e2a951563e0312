//! Blob bodies that must keep moving.
//!
//! `read_timeout` ends a response that goes silent, but a broken or hostile
//! server that trickles a few bytes a second is never silent: a 60 KiB layer
//! at 4 bytes a second holds a copy for four hours, a real layer for years. A
//! guarded body must bring [`FLOOR`] bytes for every `window` spent waiting on
//! it, or it fails as a transient error (the engine starts the transfer over,
//! and gives up after its attempts). Only time spent waiting on the server
//! counts: a body the engine does not read (its upload is slow) is not
//! stalled.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use tokio::time::Instant;

/// Bytes a body must bring per window of waiting.
pub(crate) const FLOOR: u64 = 16 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body that brought less than [`FLOOR`] bytes in a window of waiting.
#[derive(Debug)]
pub(crate) struct Stalled {
    window: Duration,
    received: u64,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server stalled: {} bytes in {:?} of waiting, under the {} KiB it must send in that time",
            self.received,
            self.window,
            FLOOR / 1024
        )
    }
}

impl std::error::Error for Stalled {}

struct Guarded {
    inner: BoxStream<'static, Result<Bytes, BoxError>>,
    window: Duration,
    /// Waiting time left in this window.
    budget: Duration,
    /// Bytes received in this window.
    received: u64,
    done: bool,
}

/// `inner`, failing with [`Stalled`] once a window of waiting brings fewer
/// than [`FLOOR`] bytes.
pub(crate) fn guard(
    inner: BoxStream<'static, Result<Bytes, BoxError>>,
    window: Duration,
) -> BoxStream<'static, Result<Bytes, BoxError>> {
    let state = Guarded {
        inner,
        window,
        budget: window,
        received: 0,
        done: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let started = Instant::now();
        let next = tokio::time::timeout(state.budget, state.inner.next()).await;
        let stalled = |state: &Guarded| -> BoxError {
            Box::new(Stalled {
                window: state.window,
                received: state.received,
            })
        };
        match next {
            Ok(None) => None,
            Ok(Some(Ok(chunk))) => {
                state.budget = state.budget.saturating_sub(started.elapsed());
                state.received += chunk.len() as u64;
                if state.received >= FLOOR {
                    state.budget = state.window;
                    state.received = 0;
                } else if state.budget.is_zero() {
                    state.done = true;
                    let error = stalled(&state);
                    return Some((Err(error), state));
                }
                Some((Ok(chunk), state))
            }
            Ok(Some(Err(error))) => {
                state.done = true;
                Some((Err(error), state))
            }
            Err(_elapsed) => {
                state.done = true;
                let error = stalled(&state);
                Some((Err(error), state))
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(300);

    /// `count` chunks of `size` bytes, each after `pause`.
    fn chunks(
        count: usize,
        pause: Duration,
        size: usize,
    ) -> BoxStream<'static, Result<Bytes, BoxError>> {
        futures::stream::iter(0..count)
            .then(move |_| async move {
                tokio::time::sleep(pause).await;
                Ok(Bytes::from(vec![0; size]))
            })
            .boxed()
    }

    async fn outcome(stream: BoxStream<'static, Result<Bytes, BoxError>>) -> Result<u64, String> {
        let mut stream = guard(stream, WINDOW);
        let mut total = 0;
        while let Some(chunk) = stream.next().await {
            total += chunk.map_err(|e| e.to_string())?.len() as u64;
        }
        Ok(total)
    }

    #[tokio::test]
    async fn a_steady_body_passes_and_a_trickle_or_silence_fails() {
        let pause = Duration::from_millis(20);
        // 16 KiB every 20 ms: far above the floor.
        let steady = chunks(20, pause, 16 * 1024);
        assert_eq!(outcome(steady).await, Ok(20 * 16 * 1024));
        // 4 bytes every 20 ms: a window ends long before 16 KiB.
        let trickle = chunks(10_000, pause, 4);
        let error = outcome(trickle).await.expect_err("a trickle");
        assert!(error.contains("stalled"), "{error}");
        // Silence fails too, without waiting for a chunk that never comes.
        let silent = futures::stream::pending().boxed();
        let error = outcome(silent).await.expect_err("silence");
        assert!(error.contains(": 0 bytes"), "{error}");
    }

    #[tokio::test]
    async fn time_the_reader_spends_elsewhere_does_not_count() {
        let mut stream = guard(chunks(3, Duration::ZERO, 1), WINDOW);
        for _ in 0..3 {
            stream.next().await.expect("a chunk").expect("no stall");
            // The consumer is busy (a slow upload) for two windows.
            tokio::time::sleep(2 * WINDOW).await;
        }
        assert!(stream.next().await.is_none());
    }
}
