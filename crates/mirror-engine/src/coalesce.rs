//! Batches small chunks of a blob stream into larger ones.
//!
//! Over a real network a download arrives a few packets at a time; passed on
//! as is, every 1.5-16 KiB chunk costs a wake-up, a hash update call and a
//! write to the upload socket. Measured on the WAN profile (200 Mbit/s, 40 ms
//! RTT) that overhead was most of mirror's CPU time. Holding chunks until
//! 64 KiB have arrived costs at most a few milliseconds of latency per blob
//! and 64 KiB of memory per transfer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use mirror_oci::{BlobStream, StreamError};

/// Chunks below this are held back until this much has arrived.
pub(crate) const BATCH: usize = 64 * 1024;

pub(crate) struct Coalesce {
    inner: BlobStream,
    buffer: BytesMut,
    done: bool,
}

impl Coalesce {
    pub(crate) fn new(inner: BlobStream) -> Self {
        Self {
            inner,
            buffer: BytesMut::new(),
            done: false,
        }
    }
}

impl Stream for Coalesce {
    type Item = Result<Bytes, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    if this.buffer.is_empty() && chunk.len() >= BATCH {
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    this.buffer.extend_from_slice(&chunk);
                    if this.buffer.len() >= BATCH {
                        return Poll::Ready(Some(Ok(this.buffer.split().freeze())));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if this.buffer.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(this.buffer.split().freeze())));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn small_chunks_are_batched_and_nothing_is_lost() {
        let chunks: Vec<Result<Bytes, StreamError>> =
            (0..100u8).map(|i| Ok(Bytes::from(vec![i; 1500]))).collect();
        let out: Vec<Bytes> = Coalesce::new(futures::stream::iter(chunks).boxed())
            .map(|c| c.unwrap())
            .collect()
            .await;
        assert!(out.len() < 5, "{} chunks", out.len());
        let joined: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        let expected: Vec<u8> = (0..100u8).flat_map(|i| vec![i; 1500]).collect();
        assert_eq!(joined, expected);
    }

    #[tokio::test]
    async fn errors_pass_through() {
        let chunks: Vec<Result<Bytes, StreamError>> = vec![
            Ok(Bytes::from_static(b"abc")),
            Err(StreamError::Source("reset".into())),
        ];
        let mut s = Coalesce::new(futures::stream::iter(chunks).boxed());
        assert!(s.next().await.unwrap().is_err());
        assert!(s.next().await.is_none());
    }
}
