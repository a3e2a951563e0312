//! A blob body that checks itself while it flows.
//!
//! [`VerifyingStream`] hashes and counts every chunk. When the byte count reaches
//! the descriptor's size it finishes the hash *before* handing out that last
//! chunk, and yields an error in its place on a mismatch; too many bytes or an
//! early end are errors too. An upload fed by it therefore never delivers a
//! complete body for bad content, so the registry can never commit it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use oci_spec::image::Digest;

use crate::digest::Hasher;

/// A blob body as a stream of chunks.
pub type BlobStream = BoxStream<'static, Result<Bytes, StreamError>>;

/// Why a blob stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Reading from the source failed (connection reset, timeout, I/O error).
    #[error("reading the blob failed")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("blob {digest} ended after {received} of {expected} bytes")]
    Truncated {
        digest: Digest,
        received: u64,
        expected: u64,
    },
    #[error("blob {digest} is longer than the {expected} bytes its descriptor says")]
    TooLong { digest: Digest, expected: u64 },
    #[error("blob content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest} uses a digest algorithm that cannot be verified")]
    UnsupportedAlgorithm { digest: Digest },
}

impl StreamError {
    /// Whether a fresh attempt may succeed (transport trouble), as opposed to the
    /// source serving content that is wrong.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Source(_) | Self::Truncated { .. })
    }

    /// Finds a `StreamError` in an error's source chain (an upload that failed
    /// because its body stream failed carries it there).
    pub fn find_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a StreamError> {
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = current {
            if let Some(found) = e.downcast_ref::<StreamError>() {
                return Some(found);
            }
            current = e.source();
        }
        None
    }
}

/// Verifies size and digest of a blob stream in flight; see the module docs.
pub struct VerifyingStream {
    inner: BlobStream,
    expected_digest: Digest,
    expected_size: u64,
    hasher: Option<Hasher>,
    received: u64,
    finished: bool,
    counters: Vec<Arc<AtomicU64>>,
}

impl VerifyingStream {
    pub fn new(inner: BlobStream, expected_digest: Digest, expected_size: u64) -> Self {
        let hasher = Hasher::for_digest(&expected_digest);
        Self {
            inner,
            expected_digest,
            expected_size,
            hasher,
            received: 0,
            finished: false,
            counters: Vec::new(),
        }
    }

    /// Adds a counter that every verified byte is added to (progress, totals).
    pub fn count_into(mut self, counter: Arc<AtomicU64>) -> Self {
        self.counters.push(counter);
        self
    }

    fn fail(&mut self, error: StreamError) -> Poll<Option<Result<Bytes, StreamError>>> {
        self.finished = true;
        Poll::Ready(Some(Err(error)))
    }

    /// Completes the hash; `Err` if it differs from the expected digest.
    fn check_digest(&mut self) -> Result<(), StreamError> {
        let Some(hasher) = self.hasher.take() else {
            return Err(StreamError::UnsupportedAlgorithm {
                digest: self.expected_digest.clone(),
            });
        };
        let actual = hasher.finish();
        if actual == self.expected_digest {
            Ok(())
        } else {
            Err(StreamError::DigestMismatch {
                expected: self.expected_digest.clone(),
                actual,
            })
        }
    }
}

impl Stream for VerifyingStream {
    type Item = Result<Bytes, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Err(error))) => this.fail(error),
            Poll::Ready(Some(Ok(chunk))) => {
                let received = this.received + chunk.len() as u64;
                if received > this.expected_size {
                    let error = StreamError::TooLong {
                        digest: this.expected_digest.clone(),
                        expected: this.expected_size,
                    };
                    return this.fail(error);
                }
                this.received = received;
                if let Some(hasher) = this.hasher.as_mut() {
                    hasher.update(&chunk);
                }
                if received == this.expected_size {
                    // Last chunk: decide before it leaves, so a bad blob is never complete.
                    if let Err(error) = this.check_digest() {
                        return this.fail(error);
                    }
                }
                for counter in &this.counters {
                    counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                if this.received < this.expected_size {
                    let error = StreamError::Truncated {
                        digest: this.expected_digest.clone(),
                        received: this.received,
                        expected: this.expected_size,
                    };
                    return this.fail(error);
                }
                this.finished = true;
                if this.expected_size == 0
                    && let Err(error) = this.check_digest()
                {
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::digest_of;
    use futures::{StreamExt, stream};

    fn source(chunks: Vec<&'static [u8]>) -> BlobStream {
        stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c)))).boxed()
    }

    async fn collect(s: VerifyingStream) -> (Vec<u8>, Option<StreamError>) {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn good_blob_passes_through_unchanged() {
        let d = digest_of(b"hello world");
        let (out, err) = collect(VerifyingStream::new(
            source(vec![b"hello ", b"world"]),
            d,
            11,
        ))
        .await;
        assert_eq!(out, b"hello world");
        assert!(err.is_none());
    }

    #[tokio::test]
    async fn flipped_byte_withholds_the_last_chunk() {
        let d = digest_of(b"hello world");
        let (out, err) = collect(VerifyingStream::new(
            source(vec![b"hello ", b"worle"]),
            d,
            11,
        ))
        .await;
        assert_eq!(out, b"hello ", "the final chunk must never be delivered");
        assert!(matches!(err, Some(StreamError::DigestMismatch { .. })));
    }

    #[tokio::test]
    async fn truncation_and_overrun_are_errors() {
        let d = digest_of(b"hello world");
        let (_, err) = collect(VerifyingStream::new(source(vec![b"hello "]), d.clone(), 11)).await;
        assert!(matches!(
            err,
            Some(StreamError::Truncated { received: 6, .. })
        ));
        let (_, err) = collect(VerifyingStream::new(source(vec![b"hello world!"]), d, 11)).await;
        assert!(matches!(err, Some(StreamError::TooLong { .. })));
    }
}
