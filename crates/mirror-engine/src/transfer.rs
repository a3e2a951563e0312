//! One blob from a source to a destination: another repository of the
//! registry leads it? wait for the leader, then mount from it ([`crate::mounts`]);
//! exists? skip (asked with a HEAD, or where a mount answers that, with a
//! mount from the repository itself, whose refusal opens the upload); same
//! registry as the source? mount; else stream GET ->
//! verify -> one upload, started over (fresh GET, fresh upload session) on a
//! transient failure, after at least as long as the server asked. A refused
//! mount's session carries the upload. Runs on its own task, shared by every
//! copy that wants the blob ([`crate::inflight`]), under the run-wide bound
//! on transfers, which a follower asks for only once it is done waiting.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use mirror_oci::{BlobStream, Descriptor, StreamError, VerifyingStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::{debug, info};

use crate::copy::Engine;
use crate::endpoint::{
    Destination, EndpointError, Mount, MountOrigin, MountSetting, MountWhen, Source, UploadSlot,
};
use crate::error::{CopyError, GaveUp, Side};
use crate::mounts::Leader;
use crate::report::BlobOutcome;

/// Hands out the run-wide transfer permits in the order they were asked for,
/// so that each copy's largest blobs start first.
pub(crate) struct Permits {
    semaphore: Arc<Semaphore>,
    queue: std::sync::OnceLock<mpsc::UnboundedSender<oneshot::Sender<OwnedSemaphorePermit>>>,
}

impl Permits {
    pub(crate) fn new(permits: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(permits.max(1))),
            queue: std::sync::OnceLock::new(),
        }
    }

    /// Queues a request for a permit now; the permit arrives on the receiver
    /// when its turn comes. A dropped receiver gives its turn away.
    pub(crate) fn request(&self) -> oneshot::Receiver<OwnedSemaphorePermit> {
        let (sender, receiver) = oneshot::channel();
        let queue = self.queue.get_or_init(|| {
            let (queue, mut requests) =
                mpsc::unbounded_channel::<oneshot::Sender<OwnedSemaphorePermit>>();
            let semaphore = self.semaphore.clone();
            // Ends when the engine (the queue's only sender) is dropped.
            tokio::spawn(async move {
                while let Some(waiting) = requests.recv().await {
                    if waiting.is_closed() {
                        continue;
                    }
                    let Ok(permit) = semaphore.clone().acquire_owned().await else {
                        return;
                    };
                    // A receiver gone means its transfer was cancelled; the permit returns.
                    let _ = waiting.send(permit);
                }
            });
            queue
        });
        let _ = queue.send(sender);
        receiver
    }
}

/// One blob transfer.
pub(crate) struct Transfer {
    pub source: Arc<dyn Source>,
    pub destination: Arc<dyn Destination>,
    pub descriptor: Descriptor,
    pub dry_run: bool,
    pub engine: Engine,
    /// When the destination's registry mounts across repositories.
    pub mount: MountWhen,
    /// This transfer as a leader (where others would mount from).
    pub here: Option<Leader>,
    /// The repository of the same registry that leads this digest, if another.
    pub leader: Option<Leader>,
}

/// Why a follower transfers a blob itself rather than mounting it.
enum Alone {
    /// The leader failed or went: this transfer leads from now on.
    LeaderGone,
    /// The registry's account has mounts off.
    MountsOff,
    /// The leader's repository came later in the run (ECR's manifest wait
    /// goes one way only), or no manifest of it will hold the blob.
    NotWaiting,
}

impl Transfer {
    /// `turn`: the run-wide permit asked for when the work was claimed;
    /// `None` for a follower, which asks once it is done waiting.
    pub(crate) async fn run(
        self,
        turn: Option<oneshot::Receiver<OwnedSemaphorePermit>>,
    ) -> Result<BlobOutcome, CopyError> {
        let follow = match &self.leader {
            Some(leader) => Some(self.follow(leader).await),
            None => None,
        };
        let turn = turn.unwrap_or_else(|| self.engine.request_permit());
        let Ok(_permit) = turn.await else {
            return Err(CopyError::Cancelled);
        };
        let descriptor = &self.descriptor;
        let size = descriptor.size();
        let observer = self.engine.observer();
        let destination = &self.destination;
        // Where a mount tells whether the blob is here, the mounts below ask
        // (the last one from this repository itself) instead of a HEAD.
        let itself = destination
            .location()
            .filter(|_| !self.dry_run && destination.capabilities().mount_answers_presence);
        if itself.is_none() && self.exists().await? {
            observer.blob_finished(descriptor, BlobOutcome::Skipped);
            return Ok(BlobOutcome::Skipped);
        }
        if self.dry_run {
            let outcome = match follow {
                Some(Ok(_)) => BlobOutcome::Mounted(size),
                _ => BlobOutcome::Planned(size),
            };
            observer.blob_finished(descriptor, outcome);
            return Ok(outcome);
        }
        let mut slot = None;
        let mut origins: Vec<MountOrigin> = Vec::new();
        match &follow {
            Some(Ok(origin)) => origins.push(origin.clone()),
            Some(Err(Alone::LeaderGone)) => {
                if let (Some(here), Some(leader)) = (&self.here, &self.leader) {
                    self.engine
                        .mounts()
                        .take_over(descriptor.digest(), leader, here.clone());
                }
            }
            _ => {}
        }
        if let Some(origin) = self.source.mount_origin()
            && destination.can_mount_from(&origin)
            && !origins.contains(&origin)
        {
            origins.push(origin);
        }
        for origin in &origins {
            match destination.mount_blob(descriptor, origin).await {
                Ok(Mount::Mounted) => {
                    debug!(digest = %descriptor.digest(), from = %origin.repository, "mounted");
                    observer.blob_finished(descriptor, BlobOutcome::Mounted(size));
                    return Ok(BlobOutcome::Mounted(size));
                }
                // Refused: the session it opened carries the upload (a
                // later refusal's session replaces it, which cancels it).
                Ok(Mount::NotMounted(s)) => {
                    debug!(digest = %descriptor.digest(), from = %origin.repository, "mount refused; copying");
                    slot = s.or(slot);
                }
                Err(error) => {
                    debug!(digest = %descriptor.digest(), %error, "mount failed; copying");
                }
            }
        }
        if let Some(itself) = &itself {
            match destination.mount_blob(descriptor, itself).await {
                Ok(Mount::Mounted) => {
                    observer.blob_finished(descriptor, BlobOutcome::Skipped);
                    return Ok(BlobOutcome::Skipped);
                }
                Ok(Mount::NotMounted(s)) => slot = s.or(slot),
                // Not answered as the spec says: ask the plain way.
                Err(error) => {
                    debug!(digest = %descriptor.digest(), %error, "presence by mount failed; asking with HEAD");
                    if self.exists().await? {
                        observer.blob_finished(descriptor, BlobOutcome::Skipped);
                        return Ok(BlobOutcome::Skipped);
                    }
                }
            }
        }
        let missed = matches!(follow, Some(Err(Alone::MountsOff)));
        let counter = Arc::new(AtomicU64::new(0));
        observer.blob_started(descriptor, counter.clone());
        let options = self.engine.options();
        let attempts = options.blob_attempts.max(1);
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .with_max_times(attempts as usize)
            .build();
        let mut attempt = 0;
        loop {
            attempt += 1;
            counter.store(0, Ordering::Relaxed);
            let (side, error) = match self.attempt(slot.take(), &counter).await {
                Ok(()) => {
                    if missed && let Some(here) = &self.here {
                        self.engine.mounts().missed(&here.origin.host, size);
                    }
                    observer.blob_finished(descriptor, BlobOutcome::Copied(size));
                    return Ok(BlobOutcome::Copied(size));
                }
                Err(failed) => failed,
            };
            let retry_after = error.retry_after();
            let gave_up = if !error.is_transient() {
                Some(GaveUp::NotTransient)
            } else if attempt >= attempts {
                Some(GaveUp::Attempts)
            } else {
                // The server's word is the least we wait; past the budget we
                // stop instead of sleeping for however long it asked.
                retry_after
                    .filter(|asked| *asked > options.max_retry_after)
                    .map(|asked| GaveUp::RetryAfter {
                        asked,
                        budget: options.max_retry_after,
                    })
            };
            if let Some(gave_up) = gave_up {
                return Err(CopyError::Blob {
                    digest: descriptor.digest().clone(),
                    size,
                    side,
                    attempts: attempt,
                    gave_up,
                    source: error,
                });
            }
            let backoff = delays.next().unwrap_or(Duration::from_secs(1));
            let delay = retry_after.map_or(backoff, |asked| backoff.max(asked));
            let message = error.to_string();
            info!(digest = %descriptor.digest(), attempt, ?delay, error = %message, "blob transfer failed; starting over");
            observer.blob_retrying(descriptor, attempt, &message);
            self.engine.count_retry();
            tokio::time::sleep(delay).await;
        }
    }

    /// Whether the destination holds the blob already (a HEAD).
    async fn exists(&self) -> Result<bool, CopyError> {
        self.destination
            .blob_exists(&self.descriptor)
            .await
            .map_err(|e| CopyError::destination_side(self.destination.name(), e))
    }

    /// Waits for the leader: where to mount from once it holds the blob
    /// (and, where the registry asks for one, a committed manifest holding
    /// it), or why this transfer goes alone. Holds no permit.
    async fn follow(&self, leader: &Leader) -> Result<MountOrigin, Alone> {
        let mounts = self.engine.mounts();
        let here = self.here.as_ref().ok_or(Alone::NotWaiting)?;
        if let MountSetting::Disabled { reason, .. } = mounts
            .setting(&here.origin.host, self.destination.as_ref())
            .await
        {
            debug!(digest = %self.descriptor.digest(), %reason, "mounts are off; copying");
            return Err(Alone::MountsOff);
        }
        let committed = self.mount == MountWhen::ManifestCommitted;
        if committed && leader.order >= here.order {
            return Err(Alone::NotWaiting);
        }
        let claim = self
            .engine
            .tables()
            .blobs
            .join(&leader.key)
            .ok_or(Alone::LeaderGone)?;
        let outcome = claim.outcome().await;
        drop(claim);
        if let Err(error) = outcome {
            debug!(digest = %self.descriptor.digest(), %error, "the leading transfer failed; copying");
            return Err(Alone::LeaderGone);
        }
        if committed
            && !self.dry_run
            && !mounts
                .wait_committed(&(leader.key.0.clone(), self.descriptor.digest().clone()))
                .await
        {
            return Err(Alone::NotWaiting);
        }
        Ok(leader.origin.clone())
    }

    /// GET -> verify -> upload, once. When the upload failed because its body
    /// did (wrong content, a broken download), the body's own error is the
    /// cause, on the source's side, not the transport words it became.
    async fn attempt(
        &self,
        slot: Option<UploadSlot>,
        counter: &Arc<AtomicU64>,
    ) -> Result<(), (Side, EndpointError)> {
        let descriptor = &self.descriptor;
        let stream = self
            .source
            .blob(descriptor)
            .await
            .map_err(|e| (Side::Source, e))?;
        let stream = crate::coalesce::Coalesce::new(stream).boxed();
        let verified = VerifyingStream::new(stream, descriptor.digest().clone(), descriptor.size())
            .count_into(counter.clone());
        let failure = Arc::new(Mutex::new(None));
        let body = Watched {
            inner: verified.boxed(),
            failure: failure.clone(),
        };
        let error = match self
            .destination
            .put_blob(descriptor, body.boxed(), slot)
            .await
        {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let body_failure = failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        Err(match body_failure {
            Some(body_failure) => (Side::Source, EndpointError::Stream(body_failure)),
            None if error.stream_error().is_some() => (Side::Source, error),
            None => (Side::Destination, error),
        })
    }
}

/// A blob body that keeps its own failure for the engine and hands the
/// destination a stand-in (an upload only needs to know that it must fail).
struct Watched {
    inner: BlobStream,
    failure: Arc<Mutex<Option<StreamError>>>,
}

/// What a destination sees in place of a body's failure.
#[derive(Debug, thiserror::Error)]
#[error("the blob stream failed: {0}")]
struct BodyFailed(String);

impl Stream for Watched {
    type Item = Result<Bytes, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Err(error))) => {
                let stand_in = StreamError::Source(Box::new(BodyFailed(error.to_string())));
                *self
                    .failure
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
                Poll::Ready(Some(Err(stand_in)))
            }
            other => other,
        }
    }
}
