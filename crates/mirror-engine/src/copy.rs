//! One copy, step by step (the README's design section tells the same story):
//!
//! 1. HEAD the source reference: its digest, without spending a pull.
//! 2. HEAD the destination reference; the same digest means nothing more is sent.
//! 3. GET the root manifest by digest (verified), apply `--platform`.
//! 4. Walk the children: a child manifest the destination already has (HEAD by
//!    digest) is skipped with everything under it; the others are fetched.
//! 5. Every blob, deduplicated across the whole run by (destination, digest),
//!    largest first, under one run-wide bound: exists? skip; same registry? mount;
//!    else stream GET -> verify -> one upload. A retry starts over with a fresh GET
//!    and a fresh upload session; content that fails verification is not retried.
//! 6. Each image manifest is pushed by digest as soon as all its blobs are in,
//!    indexes after their children, the root by tag last.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{StreamExt, TryStreamExt};
use mirror_oci::{
    Descriptor, Digest, PlatformFilter, RawManifest, VerifyingStream, is_foreign_layer,
    platform_string,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::{debug, info, warn};

use crate::endpoint::{Destination, Mount, Source};
use crate::error::{CopyError, Side};
use crate::referrers::{ReferrerCounts, ReferrerSelection, subjects_of};
use crate::report::{
    BlobCounts, BlobOutcome, CopyReport, Filtered, ManifestCounts, Observer, Silent,
};

/// Run-wide settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Blob transfers in flight across the whole run.
    pub max_concurrent_blobs: usize,
    /// Attempts per blob transfer (each a fresh GET and a fresh upload).
    pub blob_attempts: u32,
    /// Child manifests fetched or checked at once.
    pub manifest_concurrency: usize,
}

/// Measured on the benchmark corpus (README): 8 saturates loopback and a
/// 200 Mbit/s link without raising memory beyond a few MiB per transfer.
pub const DEFAULT_CONCURRENT_BLOBS: usize = 8;

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_concurrent_blobs: DEFAULT_CONCURRENT_BLOBS,
            blob_attempts: 5,
            manifest_concurrency: 8,
        }
    }
}

/// Per-copy settings.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// `--platform`: copy only these (empty: all).
    pub platforms: Vec<PlatformFilter>,
    /// Copy non-distributable layers too.
    pub include_foreign: bool,
    /// Plan and report; write nothing.
    pub dry_run: bool,
    /// Which referrers (signatures, SBOMs, attestations) travel with the image.
    pub referrers: ReferrerSelection,
    /// Copy only an image a cosign signature by one of these keys names.
    pub require_signature: Option<Arc<mirror_signature::Keyring>>,
}

/// One copy to run.
pub struct CopyRequest {
    pub source: Arc<dyn Source>,
    /// Tag or digest at the source.
    pub source_reference: String,
    pub destination: Arc<dyn Destination>,
    /// Tag or digest to push the root as.
    pub destination_reference: String,
    /// Full references, for the report.
    pub source_label: String,
    pub destination_label: String,
    pub options: CopyOptions,
}

type BlobResult = Result<BlobOutcome, Arc<CopyError>>;
type SharedBlob = Shared<BoxFuture<'static, BlobResult>>;

/// The copy engine: holds the run-wide blob bound and the dedup table, so
/// several copies in one run share both.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    options: EngineOptions,
    permits: Arc<Semaphore>,
    blobs: Mutex<HashMap<(String, Digest), SharedBlob>>,
    observer: Arc<dyn Observer>,
    retries: AtomicU64,
    /// Things said once per run (a destination that cannot hold referrers).
    notes: Mutex<HashSet<String>>,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new(EngineOptions::default(), Arc::new(Silent))
    }
}

/// Aborts the spawned blob tasks of a copy that failed or was dropped.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

/// An image manifest to push once its blobs are in.
pub(crate) struct ImageNode {
    pub manifest: RawManifest,
    pub blobs: Vec<Descriptor>,
    /// The root goes up once, by the destination reference, after everything else.
    pub is_root: bool,
}

/// What the walk found to copy.
#[derive(Default)]
pub(crate) struct Plan {
    pub images: Vec<ImageNode>,
    /// Index manifests below the root, deepest first.
    pub indexes: Vec<RawManifest>,
    skipped_manifests: u64,
    foreign_skipped: u64,
}

impl Engine {
    pub fn new(options: EngineOptions, observer: Arc<dyn Observer>) -> Self {
        let permits = Arc::new(Semaphore::new(options.max_concurrent_blobs.max(1)));
        Self {
            inner: Arc::new(Inner {
                options,
                permits,
                blobs: Mutex::new(HashMap::new()),
                observer,
                retries: AtomicU64::new(0),
                notes: Mutex::new(HashSet::new()),
            }),
        }
    }

    pub(crate) fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    pub(crate) fn observer(&self) -> &Arc<dyn Observer> {
        &self.inner.observer
    }

    /// True the first time `note` is given in this run.
    pub(crate) fn note_once(&self, note: &str) -> bool {
        self.inner
            .notes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(note.to_owned())
    }

    /// Copies one image (index or single manifest) with everything it references.
    pub async fn copy(&self, request: CopyRequest) -> Result<CopyReport, CopyError> {
        let started = Instant::now();
        let retries_before = self.inner.retries.load(Ordering::Relaxed);
        let src = request.source.clone();
        let dst = request.destination.clone();
        let options = &request.options;

        let resolved = src
            .resolve(&request.source_reference)
            .await
            .map_err(|e| CopyError::source_side(src.name(), e))?
            .ok_or_else(|| CopyError::NotFound {
                reference: request.source_label.clone(),
            })?;
        debug!(digest = %resolved.digest, "source resolved");
        // --require-signature: before anything is written or moved.
        let signature = self.check_signature(&request, &resolved.digest).await?;

        let mut report = CopyReport {
            source: request.source_label.clone(),
            destination: request.destination_label.clone(),
            digest: resolved.digest.clone(),
            media_type: resolved.media_type.clone().unwrap_or_default(),
            kind: String::new(),
            up_to_date: false,
            dry_run: options.dry_run,
            platforms: Vec::new(),
            filtered: None,
            manifests: ManifestCounts::default(),
            blobs: BlobCounts::default(),
            bytes: 0,
            seconds: 0.0,
            retries: 0,
            referrers: ReferrerCounts::default(),
            signature,
        };

        // Without a platform filter the destination tag must hold the source
        // digest itself: one HEAD per side decides a warm run.
        if options.platforms.is_empty()
            && self
                .destination_digest(&dst, &request.destination_reference)
                .await?
                .as_ref()
                == Some(&resolved.digest)
        {
            report.up_to_date = true;
            report.kind = kind_of_media_type(&report.media_type).to_owned();
            info!(digest = %resolved.digest, "destination is up to date");
            // New signatures may hang off an unchanged image.
            self.referrers_of_up_to_date(&request, &resolved.digest, &report.kind)
                .await
                .add_to(&mut report);
            report.seconds = started.elapsed().as_secs_f64();
            return Ok(report);
        }

        let source_root = src
            .manifest(&resolved.digest)
            .await
            .map_err(|e| CopyError::source_side(src.name(), e))?;
        let (root, filtered, single_platform) = self.apply_platforms(&request, source_root).await?;
        if root.is_index() && dst.capabilities().single_platform {
            return Err(CopyError::SinglePlatform {
                destination: dst.name(),
                reference: request.source_label.clone(),
                platforms: platforms_of(&root),
            });
        }
        report.digest = root.digest().clone();
        report.media_type = root.media_type().to_owned();
        report.kind = if root.is_index() { "index" } else { "image" }.to_owned();
        report.platforms = platforms_of(&root);
        if let Some(platform) = &single_platform {
            report.platforms = vec![platform.clone()];
        }
        if let Some(filtered) = &filtered {
            report.filtered = Some(filtered.clone());
            if self
                .destination_digest(&dst, &request.destination_reference)
                .await?
                .as_ref()
                == Some(root.digest())
            {
                report.up_to_date = true;
                let subjects = subjects_of(&root, filtered.kind == "index", &[]);
                self.copy_referrers(&request, subjects, None)
                    .await
                    .add_to(&mut report);
                report.seconds = started.elapsed().as_secs_f64();
                return Ok(report);
            }
        }

        if !options.dry_run {
            dst.ensure_repository()
                .await
                .map_err(|e| CopyError::destination_side(dst.name(), e))?;
        }

        let plan = self.walk(&request, &root).await?;
        report.manifests.skipped = plan.skipped_manifests;
        report.blobs.foreign_skipped = plan.foreign_skipped;

        // Blobs: unique across the plan, largest first, shared across the run.
        let mut unique: Vec<Descriptor> = Vec::new();
        let mut seen = HashSet::new();
        for image in &plan.images {
            for blob in &image.blobs {
                if seen.insert(blob.digest().clone()) {
                    unique.push(blob.clone());
                }
            }
        }
        unique.sort_by_key(|d| std::cmp::Reverse(d.size()));
        self.inner
            .observer
            .planned(unique.len(), unique.iter().map(|d| d.size()).sum());
        let (handles, abort) = self.schedule_blobs(&request, &unique);
        let _abort = abort;

        // Each image manifest goes up as soon as its own blobs are in.
        let pushes = plan.images.iter().map(|image| {
            let handles = &handles;
            let dst = &dst;
            async move {
                for blob in &image.blobs {
                    if let Some(handle) = handles.get(blob.digest()) {
                        handle.clone().await.map_err(CopyError::Shared)?;
                    }
                }
                if !options.dry_run && !image.is_root {
                    let digest = image.manifest.digest().to_string();
                    dst.put_manifest(&digest, &image.manifest)
                        .await
                        .map_err(|e| CopyError::destination_side(dst.name(), e))?;
                    self.inner
                        .observer
                        .manifest_pushed(&digest, image.manifest.digest());
                }
                Ok::<(), CopyError>(())
            }
        });
        let concurrency = if dst.capabilities().parallel_manifest_puts {
            self.inner.options.manifest_concurrency
        } else {
            1
        };
        futures::stream::iter(pushes)
            .buffer_unordered(concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        // Every blob has settled by now; count outcomes.
        for blob in &unique {
            if let Some(handle) = handles.get(blob.digest()) {
                match handle.clone().await.map_err(CopyError::Shared)? {
                    BlobOutcome::Copied(n) | BlobOutcome::Planned(n) => {
                        report.blobs.copied += 1;
                        report.bytes += n;
                    }
                    BlobOutcome::Skipped => report.blobs.skipped += 1,
                    BlobOutcome::Mounted => report.blobs.mounted += 1,
                }
            }
        }
        report.manifests.copied += plan.images.len() as u64;

        if !options.dry_run {
            for index in &plan.indexes {
                let digest = index.digest().to_string();
                dst.put_manifest(&digest, index)
                    .await
                    .map_err(|e| CopyError::destination_side(dst.name(), e))?;
            }
        }
        report.manifests.copied += plan.indexes.len() as u64 + u64::from(root.is_index());
        // Referrers before the root's tag: the tag never shows without them.
        let root_is_new = report.filtered.as_ref().is_some_and(|f| f.kind == "index");
        let subjects = subjects_of(&root, root_is_new, &plan.indexes);
        self.copy_referrers(&request, subjects, Some(&root))
            .await
            .add_to(&mut report);
        if !options.dry_run {
            dst.put_manifest(&request.destination_reference, &root)
                .await
                .map_err(|e| CopyError::destination_side(dst.name(), e))?;
            self.inner
                .observer
                .manifest_pushed(&request.destination_reference, root.digest());
            dst.finish()
                .await
                .map_err(|e| CopyError::destination_side(dst.name(), e))?;
        }
        report.retries = self.inner.retries.load(Ordering::Relaxed) - retries_before;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    async fn destination_digest(
        &self,
        dst: &Arc<dyn Destination>,
        reference: &str,
    ) -> Result<Option<Digest>, CopyError> {
        dst.manifest_digest(reference)
            .await
            .map_err(|e| CopyError::destination_side(dst.name(), e))
    }

    /// `--platform`: one match becomes that image; several become a new index
    /// of just them (and the attestations that describe them).
    async fn apply_platforms(
        &self,
        request: &CopyRequest,
        root: RawManifest,
    ) -> Result<(RawManifest, Option<Filtered>, Option<String>), CopyError> {
        let filters = &request.options.platforms;
        if filters.is_empty() || !root.is_index() {
            if !filters.is_empty() {
                warn!(
                    "{} is a single image; --platform does not apply",
                    request.source_label
                );
            }
            return Ok((root, None, None));
        }
        let images: Vec<&Descriptor> = root
            .children()
            .iter()
            .filter(|d| {
                d.platform()
                    .as_ref()
                    .is_some_and(|p| filters.iter().any(|f| f.matches(p)))
            })
            .collect();
        if images.is_empty() {
            let available = platforms_of(&root);
            return Err(CopyError::NoPlatform {
                reference: request.source_label.clone(),
                wanted: filters
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                available: available.join(", "),
            });
        }
        // Every platform asked for: the source index itself, digest unchanged
        // (unless the destination takes only an image and one was asked for).
        let all_images = root
            .children()
            .iter()
            .filter(|d| !is_attestation(d))
            .count();
        let single = request.destination.capabilities().single_platform && images.len() == 1;
        if images.len() == all_images && !single {
            return Ok((root, None, None));
        }
        if let [only] = images.as_slice() {
            let child = request
                .source
                .manifest(only.digest())
                .await
                .map_err(|e| CopyError::source_side(request.source.name(), e))?;
            let filtered = Filtered {
                kind: "image".to_owned(),
                digest: child.digest().clone(),
                source_digest: root.digest().clone(),
            };
            let platform = only.platform().as_ref().map(platform_string);
            return Ok((child, Some(filtered), platform));
        }
        let kept: HashSet<String> = images.iter().map(|d| d.digest().to_string()).collect();
        let index = filter_index(&root, &kept).map_err(|detail| {
            CopyError::source_side(
                request.source.name(),
                crate::endpoint::EndpointError::Other(detail),
            )
        })?;
        let filtered = Filtered {
            kind: "index".to_owned(),
            digest: index.digest().clone(),
            source_digest: root.digest().clone(),
        };
        Ok((index, Some(filtered), None))
    }

    /// Fetches every manifest below the root that the destination lacks.
    pub(crate) async fn walk(
        &self,
        request: &CopyRequest,
        root: &RawManifest,
    ) -> Result<Plan, CopyError> {
        let mut plan = Plan::default();
        let mut level: Vec<RawManifest> = vec![root.clone()];
        let mut depth = 0;
        while !level.is_empty() {
            depth += 1;
            if depth > 4 {
                return Err(CopyError::source_side(
                    request.source.name(),
                    crate::endpoint::EndpointError::Other(
                        "indexes nested more than 4 deep".to_owned(),
                    ),
                ));
            }
            let mut next = Vec::new();
            for manifest in level {
                if manifest.is_index() {
                    let children: Vec<Descriptor> = manifest.children().to_vec();
                    let fetched = futures::stream::iter(
                        children
                            .into_iter()
                            .map(|child| self.fetch_child(request, child)),
                    )
                    .buffered(self.inner.options.manifest_concurrency.max(1))
                    .try_collect::<Vec<Option<RawManifest>>>()
                    .await?;
                    for child in fetched {
                        match child {
                            Some(child) => next.push(child),
                            None => plan.skipped_manifests += 1,
                        }
                    }
                    if depth > 1 {
                        plan.indexes.push(manifest);
                    }
                } else {
                    let mut blobs = Vec::new();
                    for blob in manifest.blobs() {
                        if is_foreign_layer(blob.media_type().to_string().as_str())
                            && !request.options.include_foreign
                        {
                            plan.foreign_skipped += 1;
                            continue;
                        }
                        blobs.push(blob.clone());
                    }
                    plan.images.push(ImageNode {
                        manifest,
                        blobs,
                        is_root: depth == 1,
                    });
                }
            }
            level = next;
        }
        plan.indexes.reverse();
        Ok(plan)
    }

    /// A child manifest to copy, or `None` when the destination has it already
    /// (a registry never holds a manifest without everything it references).
    async fn fetch_child(
        &self,
        request: &CopyRequest,
        child: Descriptor,
    ) -> Result<Option<RawManifest>, CopyError> {
        let digest = child.digest().to_string();
        let dst = &request.destination;
        if dst
            .manifest_digest(&digest)
            .await
            .map_err(|e| CopyError::destination_side(dst.name(), e))?
            .is_some()
        {
            debug!(%digest, "child manifest already at destination");
            return Ok(None);
        }
        let manifest = request
            .source
            .manifest(child.digest())
            .await
            .map_err(|e| CopyError::source_side(request.source.name(), e))?;
        Ok(Some(manifest))
    }

    /// Copies blobs (each once, shared with the run's other transfers) and
    /// counts what happened to them.
    pub(crate) async fn copy_blobs(
        &self,
        request: &CopyRequest,
        blobs: &[Descriptor],
    ) -> Result<(BlobCounts, u64), CopyError> {
        let (handles, _abort) = self.schedule_blobs(request, blobs);
        let mut counts = BlobCounts::default();
        let mut bytes = 0;
        for blob in blobs {
            if let Some(handle) = handles.get(blob.digest()) {
                match handle.clone().await.map_err(CopyError::Shared)? {
                    BlobOutcome::Copied(n) | BlobOutcome::Planned(n) => {
                        counts.copied += 1;
                        bytes += n;
                    }
                    BlobOutcome::Skipped => counts.skipped += 1,
                    BlobOutcome::Mounted => counts.mounted += 1,
                }
            }
        }
        Ok((counts, bytes))
    }

    /// The referrers of an image the destination holds already: of the root
    /// and, for an index, of its children (read at the destination, which
    /// costs no pull at the source).
    async fn referrers_of_up_to_date(
        &self,
        request: &CopyRequest,
        digest: &Digest,
        kind: &str,
    ) -> crate::referrers::ReferrerOutcome {
        if request.options.referrers.is_none() {
            return crate::referrers::ReferrerOutcome::default();
        }
        let mut subjects = vec![digest.clone()];
        if kind == "index" {
            let root = match request.destination.stored_manifest(digest).await {
                Ok(Some(root)) => Some(root),
                _ => request.source.manifest(digest).await.ok(),
            };
            if let Some(root) = root {
                subjects = subjects_of(&root, false, &[]);
            }
        }
        self.copy_referrers(request, subjects, None).await
    }

    /// Starts (or joins) the transfer of every blob. Permits are handed out in
    /// the order given (largest first) by one dispatcher.
    fn schedule_blobs(
        &self,
        request: &CopyRequest,
        blobs: &[Descriptor],
    ) -> (HashMap<Digest, SharedBlob>, AbortOnDrop) {
        let mut handles = HashMap::new();
        let mut aborts = Vec::new();
        let mut queue: Vec<oneshot::Sender<OwnedSemaphorePermit>> = Vec::new();
        let dst_key = request.destination.name();
        {
            let mut table = self
                .inner
                .blobs
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for blob in blobs {
                let key = (dst_key.clone(), blob.digest().clone());
                if let Some(existing) = table.get(&key) {
                    handles.insert(blob.digest().clone(), existing.clone());
                    continue;
                }
                let (tx, rx) = oneshot::channel();
                queue.push(tx);
                let transfer = Transfer {
                    source: request.source.clone(),
                    destination: request.destination.clone(),
                    descriptor: blob.clone(),
                    dry_run: request.options.dry_run,
                    engine: self.clone(),
                };
                let task = tokio::spawn(async move {
                    let Ok(permit) = rx.await else {
                        return Err(Arc::new(CopyError::Cancelled));
                    };
                    transfer.run(permit).await.map_err(Arc::new)
                });
                aborts.push(task.abort_handle());
                let shared = task
                    .map(|joined| joined.unwrap_or_else(|_| Err(Arc::new(CopyError::Cancelled))))
                    .boxed()
                    .shared();
                table.insert(key, shared.clone());
                handles.insert(blob.digest().clone(), shared);
            }
        }
        let permits = self.inner.permits.clone();
        let dispatcher = tokio::spawn(async move {
            for tx in queue {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                // A receiver gone means its task was aborted; the permit returns.
                let _ = tx.send(permit);
            }
        });
        aborts.push(dispatcher.abort_handle());
        (handles, AbortOnDrop(aborts))
    }
}

/// One blob transfer, run on its own task so hashing uses every core.
struct Transfer {
    source: Arc<dyn Source>,
    destination: Arc<dyn Destination>,
    descriptor: Descriptor,
    dry_run: bool,
    engine: Engine,
}

impl Transfer {
    async fn run(self, permit: OwnedSemaphorePermit) -> Result<BlobOutcome, CopyError> {
        let _permit = permit;
        let desc = &self.descriptor;
        let size = desc.size();
        let observer = &self.engine.inner.observer;
        let dst = &self.destination;
        let exists = dst
            .blob_exists(desc)
            .await
            .map_err(|e| CopyError::destination_side(dst.name(), e))?;
        if exists {
            observer.blob_finished(desc, BlobOutcome::Skipped);
            return Ok(BlobOutcome::Skipped);
        }
        if self.dry_run {
            observer.blob_finished(desc, BlobOutcome::Planned(size));
            return Ok(BlobOutcome::Planned(size));
        }
        let mut slot = None;
        if let Some(origin) = self.source.mount_origin()
            && dst.can_mount_from(&origin)
        {
            match dst.mount_blob(desc, &origin).await {
                Ok(Mount::Mounted) => {
                    observer.blob_finished(desc, BlobOutcome::Mounted);
                    return Ok(BlobOutcome::Mounted);
                }
                Ok(Mount::NotMounted(s)) => slot = s,
                Err(error) => debug!(digest = %desc.digest(), %error, "mount failed; copying"),
            }
        }
        let counter = Arc::new(AtomicU64::new(0));
        observer.blob_started(desc, counter.clone());
        let attempts = self.engine.inner.options.blob_attempts.max(1);
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
            match self.attempt(slot.take(), &counter).await {
                Ok(()) => {
                    observer.blob_finished(desc, BlobOutcome::Copied(size));
                    return Ok(BlobOutcome::Copied(size));
                }
                Err((side, error)) => {
                    if error.is_transient() && attempt < attempts {
                        let message = error.to_string();
                        info!(digest = %desc.digest(), attempt, error = %message, "blob transfer failed; starting over");
                        observer.blob_retrying(desc, attempt, &message);
                        self.engine.inner.retries.fetch_add(1, Ordering::Relaxed);
                        let delay = delays.next().unwrap_or(Duration::from_secs(1));
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    return Err(CopyError::Blob {
                        digest: desc.digest().clone(),
                        size,
                        side,
                        attempts: attempt,
                        source: error,
                    });
                }
            }
        }
    }

    /// GET -> verify -> upload, once.
    async fn attempt(
        &self,
        slot: Option<crate::endpoint::UploadSlot>,
        counter: &Arc<AtomicU64>,
    ) -> Result<(), (Side, crate::endpoint::EndpointError)> {
        let desc = &self.descriptor;
        let stream = self
            .source
            .blob(desc)
            .await
            .map_err(|e| (Side::Source, e))?;
        let stream = crate::coalesce::Coalesce::new(stream).boxed();
        let verified = VerifyingStream::new(stream, desc.digest().clone(), desc.size())
            .count_into(counter.clone());
        self.destination
            .put_blob(desc, verified.boxed(), slot)
            .await
            .map_err(|e| {
                // An upload that failed because its body failed is the source's fault.
                let side = if e.stream_error().is_some() {
                    Side::Source
                } else {
                    Side::Destination
                };
                (side, e)
            })
    }
}

/// The platforms of an index's children, attestations (`unknown/unknown`) left out.
fn platforms_of(root: &RawManifest) -> Vec<String> {
    root.children()
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(platform_string)
        .filter(|p| p != "unknown/unknown")
        .collect()
}

/// Attestation manifests (BuildKit provenance/SBOM) describe another child.
fn is_attestation(descriptor: &Descriptor) -> bool {
    descriptor.annotations().as_ref().is_some_and(|a| {
        a.get("vnd.docker.reference.type")
            .is_some_and(|t| t == "attestation-manifest")
    })
}

fn kind_of_media_type(media_type: &str) -> &'static str {
    match media_type {
        mirror_oci::media_types::OCI_INDEX | mirror_oci::media_types::DOCKER_LIST => "index",
        _ => "image",
    }
}

/// A new index holding only the kept children and the attestation manifests
/// that refer to them; every other field of the source index is kept as is.
fn filter_index(root: &RawManifest, kept: &HashSet<String>) -> Result<RawManifest, String> {
    let mut value: serde_json::Value =
        serde_json::from_slice(root.bytes()).map_err(|e| format!("index is not JSON: {e}"))?;
    let manifests = value
        .get_mut("manifests")
        .and_then(|m| m.as_array_mut())
        .ok_or("index without a manifests list")?;
    manifests.retain(|entry| {
        let digest = entry.get("digest").and_then(|d| d.as_str()).unwrap_or("");
        let refers_to = entry
            .pointer("/annotations/vnd.docker.reference.digest")
            .and_then(|d| d.as_str())
            .unwrap_or("");
        kept.contains(digest) || kept.contains(refers_to)
    });
    let bytes = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
    RawManifest::parse(Bytes::from(bytes), Some(root.media_type())).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filtered_index_keeps_children_and_their_attestations() {
        let a = mirror_oci::digest_of(b"a");
        let b = mirror_oci::digest_of(b"b");
        let att = mirror_oci::digest_of(b"att");
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{a}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},
{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{b}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},
{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{att}","size":1,"platform":{{"architecture":"unknown","os":"unknown"}},"annotations":{{"vnd.docker.reference.digest":"{a}","vnd.docker.reference.type":"attestation-manifest"}}}}]}}"#
        );
        let root = RawManifest::parse(Bytes::from(body), None).unwrap();
        let kept: HashSet<String> = [a.to_string()].into();
        let filtered = filter_index(&root, &kept).unwrap();
        let digests: Vec<String> = filtered
            .children()
            .iter()
            .map(|d| d.digest().to_string())
            .collect();
        assert_eq!(digests, vec![a.to_string(), att.to_string()]);
        assert_ne!(filtered.digest(), root.digest());
        assert_eq!(filtered.media_type(), root.media_type());
    }
}
