//! Endpoints as one image of a run sees them: every call counted for that
//! image alone, the plan's HEAD answers handed to the engine instead of asked
//! again, and manifest GETs at a source drawn from its host's pull budget.
//!
//! The engine fetches every manifest of an image before it writes anything
//! (blobs and manifests go after the walk), so a GET the budget refuses
//! defers the image with nothing of it written. The first manifest GET of an
//! image also reserves one pull for every child an index lists, so an image
//! is either carried through or deferred after at most that one GET.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mirror_engine::{
    Capabilities, Destination, EndpointError, Mount, MountOrigin, MountSetting, Referrer, Resolved,
    Source, UploadSlot,
};
use mirror_oci::{BlobStream, Descriptor, Digest, RawManifest};
use serde::Serialize;

use crate::budget::{Reservation, SourceBudget};
use crate::bundle::LeftOut;

/// What one image asked of its two ends.
#[derive(Debug, Default)]
pub struct CallCounter {
    source_manifest_heads: AtomicU64,
    source_manifest_gets: AtomicU64,
    source_blob_gets: AtomicU64,
    destination_manifest_heads: AtomicU64,
    destination_manifest_puts: AtomicU64,
    destination_blob_heads: AtomicU64,
    destination_blob_uploads: AtomicU64,
    destination_blob_mounts: AtomicU64,
}

/// A copy of an image's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Calls {
    pub source_manifest_heads: u64,
    /// Manifest GETs: what Docker Hub counts as pulls.
    pub source_manifest_gets: u64,
    pub source_blob_gets: u64,
    pub destination_manifest_heads: u64,
    pub destination_manifest_puts: u64,
    pub destination_blob_heads: u64,
    pub destination_blob_uploads: u64,
    pub destination_blob_mounts: u64,
}

impl CallCounter {
    pub fn snapshot(&self) -> Calls {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Calls {
            source_manifest_heads: load(&self.source_manifest_heads),
            source_manifest_gets: load(&self.source_manifest_gets),
            source_blob_gets: load(&self.source_blob_gets),
            destination_manifest_heads: load(&self.destination_manifest_heads),
            destination_manifest_puts: load(&self.destination_manifest_puts),
            destination_blob_heads: load(&self.destination_blob_heads),
            destination_blob_uploads: load(&self.destination_blob_uploads),
            destination_blob_mounts: load(&self.destination_blob_mounts),
        }
    }

    pub(crate) fn count_source_head(&self) {
        self.source_manifest_heads.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_destination_head(&self) {
        self.destination_manifest_heads
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl Calls {
    pub fn add(&mut self, other: &Calls) {
        self.source_manifest_heads += other.source_manifest_heads;
        self.source_manifest_gets += other.source_manifest_gets;
        self.source_blob_gets += other.source_blob_gets;
        self.destination_manifest_heads += other.destination_manifest_heads;
        self.destination_manifest_puts += other.destination_manifest_puts;
        self.destination_blob_heads += other.destination_blob_heads;
        self.destination_blob_uploads += other.destination_blob_uploads;
        self.destination_blob_mounts += other.destination_blob_mounts;
    }

    pub fn total(&self) -> u64 {
        self.source_manifest_heads
            + self.source_manifest_gets
            + self.source_blob_gets
            + self.destination_manifest_heads
            + self.destination_manifest_puts
            + self.destination_blob_heads
            + self.destination_blob_uploads
            + self.destination_blob_mounts
    }
}

/// The error a budget-refused GET ends the image's copy with (the run
/// reports the image as deferred, not failed).
#[derive(Debug, thiserror::Error)]
#[error("deferred: the source pull budget is spent")]
pub struct BudgetSpent;

/// A source as one image sees it.
pub(crate) struct CountedSource {
    inner: Arc<dyn Source>,
    calls: Arc<CallCounter>,
    /// The plan's HEAD answer for the image's reference, used once.
    planned: Mutex<Option<(String, Resolved)>>,
    budget: Option<Arc<SourceBudget>>,
    reservation: Mutex<Option<Reservation>>,
    deferred: AtomicBool,
}

impl CountedSource {
    pub(crate) fn new(
        inner: Arc<dyn Source>,
        calls: Arc<CallCounter>,
        planned: Option<(String, Resolved)>,
        budget: Option<Arc<SourceBudget>>,
    ) -> Self {
        Self {
            inner,
            calls,
            planned: Mutex::new(planned),
            budget,
            reservation: Mutex::new(None),
            deferred: AtomicBool::new(false),
        }
    }

    /// Whether the budget refused one of this image's GETs.
    pub(crate) fn was_deferred(&self) -> bool {
        self.deferred.load(Ordering::Relaxed)
    }

    /// Returns what was reserved and not spent.
    pub(crate) fn release(&self) {
        lock(&self.reservation).take();
    }

    fn defer(&self) -> EndpointError {
        self.deferred.store(true, Ordering::Relaxed);
        EndpointError::backend(BudgetSpent)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

// Both wrappers forward every method of their trait, defaults included: a
// default left in place here would quietly turn a backend's feature off
// (referrers, mounts) for every image a sync runs.
#[async_trait]
impl Source for CountedSource {
    fn name(&self) -> String {
        self.inner.name()
    }

    async fn resolve(&self, reference: &str) -> Result<Option<Resolved>, EndpointError> {
        let planned = lock(&self.planned).take();
        if let Some((planned_reference, resolved)) = planned
            && planned_reference == reference
        {
            return Ok(Some(resolved));
        }
        self.calls.count_source_head();
        self.inner.resolve(reference).await
    }

    async fn manifest(&self, digest: &Digest) -> Result<RawManifest, EndpointError> {
        let Some(budget) = &self.budget else {
            self.calls
                .source_manifest_gets
                .fetch_add(1, Ordering::Relaxed);
            return self.inner.manifest(digest).await;
        };
        if self.was_deferred() {
            return Err(self.defer());
        }
        let first = lock(&self.reservation).is_none();
        // Kept until this GET's children are reserved too (dropped on return).
        let _admitted = match first && budget.is_bounded() {
            true => Some(budget.admit().await),
            false => None,
        };
        // Draw this GET from the image's reservation, or reserve it.
        let drawn = {
            let mut reservation = lock(&self.reservation);
            match reservation.as_mut() {
                Some(held) => held.draw() || (held.grow(1) && held.draw()),
                None => match budget.reserve(1) {
                    Some(mut fresh) => {
                        let drawn = fresh.draw();
                        *reservation = Some(fresh);
                        drawn
                    }
                    None => false,
                },
            }
        };
        if !drawn {
            return Err(self.defer());
        }
        self.calls
            .source_manifest_gets
            .fetch_add(1, Ordering::Relaxed);
        let manifest = self.inner.manifest(digest).await;
        budget.spent_one();
        let manifest = manifest?;
        if manifest.is_index() {
            // Every child may need its own GET: reserve them now or defer.
            let children = manifest.children().len() as u64;
            let mut reservation = lock(&self.reservation);
            let grown = reservation.as_mut().is_some_and(|r| r.grow(children));
            if !grown {
                drop(reservation);
                return Err(self.defer());
            }
        }
        Ok(manifest)
    }

    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobStream, EndpointError> {
        self.calls.source_blob_gets.fetch_add(1, Ordering::Relaxed);
        self.inner.blob(descriptor).await
    }

    fn mount_origin(&self) -> Option<MountOrigin> {
        self.inner.mount_origin()
    }

    async fn referrers(
        &self,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>, EndpointError> {
        self.inner.referrers(subject, artifact_type).await
    }

    fn holds_no_referrers(&self) -> bool {
        self.inner.holds_no_referrers()
    }
}

/// A destination as one image sees it.
pub(crate) struct CountedDestination {
    inner: Arc<dyn Destination>,
    calls: Arc<CallCounter>,
    /// The plan's HEAD answer for the image's tag, used once.
    planned: Mutex<Option<(String, Option<Digest>)>>,
    /// Blobs the far side of an air gap holds: present, so the engine leaves
    /// them out of the bundle ([`crate::bundle`]).
    left_out: Option<Arc<LeftOut>>,
    /// A copy's `finish` commits nothing: an archive's commit rewrites the
    /// whole file, so a run that writes many images into one archive
    /// commits it once at its end ([`crate::Session::run`]) instead of once
    /// per image, which would cost images x bytes.
    commit_later: bool,
}

impl CountedDestination {
    pub(crate) fn new(
        inner: Arc<dyn Destination>,
        calls: Arc<CallCounter>,
        planned: Option<(String, Option<Digest>)>,
    ) -> Self {
        Self {
            inner,
            calls,
            planned: Mutex::new(planned),
            left_out: None,
            commit_later: false,
        }
    }

    /// A file destination of an air-gap export: see the fields.
    pub(crate) fn for_file(mut self, left_out: Option<Arc<LeftOut>>, commit_later: bool) -> Self {
        self.left_out = left_out;
        self.commit_later = commit_later;
        self
    }
}

#[async_trait]
impl Destination for CountedDestination {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn ensure_repository(&self) -> Result<(), EndpointError> {
        self.inner.ensure_repository().await
    }

    async fn manifest_digest(&self, reference: &str) -> Result<Option<Digest>, EndpointError> {
        let planned = lock(&self.planned).take();
        if let Some((planned_reference, digest)) = planned
            && planned_reference == reference
        {
            return Ok(digest);
        }
        self.calls.count_destination_head();
        self.inner.manifest_digest(reference).await
    }

    async fn blob_exists(&self, descriptor: &Descriptor) -> Result<bool, EndpointError> {
        if self.left_out.as_ref().is_some_and(|l| l.holds(descriptor)) {
            return Ok(true);
        }
        self.calls
            .destination_blob_heads
            .fetch_add(1, Ordering::Relaxed);
        self.inner.blob_exists(descriptor).await
    }

    async fn mount_blob(
        &self,
        descriptor: &Descriptor,
        from: &MountOrigin,
    ) -> Result<Mount, EndpointError> {
        self.calls
            .destination_blob_mounts
            .fetch_add(1, Ordering::Relaxed);
        self.inner.mount_blob(descriptor, from).await
    }

    fn can_mount_from(&self, origin: &MountOrigin) -> bool {
        self.inner.can_mount_from(origin)
    }

    fn location(&self) -> Option<MountOrigin> {
        self.inner.location()
    }

    async fn mount_setting(&self) -> MountSetting {
        self.inner.mount_setting().await
    }

    async fn put_blob(
        &self,
        descriptor: &Descriptor,
        body: BlobStream,
        slot: Option<UploadSlot>,
    ) -> Result<(), EndpointError> {
        self.calls
            .destination_blob_uploads
            .fetch_add(1, Ordering::Relaxed);
        self.inner.put_blob(descriptor, body, slot).await
    }

    async fn put_manifest(
        &self,
        reference: &str,
        manifest: &RawManifest,
    ) -> Result<(), EndpointError> {
        self.calls
            .destination_manifest_puts
            .fetch_add(1, Ordering::Relaxed);
        self.inner.put_manifest(reference, manifest).await
    }

    async fn listed_referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>, EndpointError> {
        self.inner.listed_referrers(subject).await
    }

    async fn put_referrer(
        &self,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<bool, EndpointError> {
        self.calls
            .destination_manifest_puts
            .fetch_add(1, Ordering::Relaxed);
        self.inner.put_referrer(manifest, tag).await
    }

    async fn add_referrers(
        &self,
        subject: &Digest,
        referrers: &[Descriptor],
    ) -> Result<(), EndpointError> {
        self.inner.add_referrers(subject, referrers).await
    }

    async fn stored_manifest(&self, digest: &Digest) -> Result<Option<RawManifest>, EndpointError> {
        self.inner.stored_manifest(digest).await
    }

    async fn finish(&self) -> Result<(), EndpointError> {
        if self.commit_later {
            return Ok(());
        }
        self.inner.finish().await
    }
}
