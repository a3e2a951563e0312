//! One copy, step by step (the README's design section tells the same story):
//!
//! 1. HEAD the source reference: its digest, without spending a pull.
//! 2. HEAD the destination reference; the same digest means nothing more is sent.
//! 3. GET the root manifest by digest (verified), apply the platform filter.
//! 4. Walk the children ([`crate::walk`]): each digest once; a child manifest the
//!    destination already has is skipped with everything under it.
//! 5. Every blob, shared across the whole run by (destination, digest), largest
//!    first, under one run-wide bound ([`crate::transfer`]).
//! 6. Each image manifest is pushed by digest as soon as all its blobs are in,
//!    indexes after their children.
//! 7. The referrers of the root and its children ([`crate::referrers`]), each
//!    after its subject and its blobs; then the root by tag, last.
//!
//! A required signature is checked right after step 1, before anything is
//! written for the image.
//!
//! Blob transfers and image pushes are shared work ([`crate::inflight`]): they
//! run while any copy of the run wants them, so one image's failure never
//! cancels another's, and a failure is forgotten so a later image tries again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use mirror_oci::{Descriptor, Digest, RawManifest};
use tracing::{debug, info};

use crate::endpoint::{Destination, MountWhen, Source};
use crate::error::CopyError;
use crate::inflight::{Claim, Outcome, Table};
use crate::mounts::{Leader, MountNote, Mounts};
use crate::platforms::{Selected, platforms_of};
use crate::referrers::{ReferrerCounts, ReferrerOutcome, ReferrerSelection, subjects_of};
use crate::report::{BlobCounts, BlobOutcome, CopyReport, ManifestCounts, Observer, Silent};
use crate::transfer::{Permits, Transfer};
use crate::walk::{DEFAULT_MAX_MANIFESTS, ImageNode};

/// Run-wide settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Blob transfers in flight across the whole run.
    pub max_concurrent_blobs: usize,
    /// Attempts per blob transfer (each a fresh GET and a fresh upload).
    pub blob_attempts: u32,
    /// Child manifests fetched or checked at once.
    pub manifest_concurrency: usize,
    /// Distinct manifests one copy may walk (root included) before it fails.
    pub max_manifests: usize,
    /// The longest `Retry-After` a blob transfer waits for; a server asking
    /// for more fails the transfer at once instead.
    pub max_retry_after: Duration,
}

/// Measured on the benchmark corpus (README): 8 saturates loopback and a
/// 200 Mbit/s link without raising memory beyond a few MiB per transfer.
pub const DEFAULT_CONCURRENT_BLOBS: usize = 8;

/// The longest `Retry-After` waited for by default (the registry client's too).
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_concurrent_blobs: DEFAULT_CONCURRENT_BLOBS,
            blob_attempts: 5,
            manifest_concurrency: 8,
            max_manifests: DEFAULT_MAX_MANIFESTS,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

/// Per-copy settings.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Copy only these platforms (empty: all).
    pub platforms: Vec<mirror_oci::PlatformFilter>,
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

/// Shared work is keyed by an endpoint's name and a digest.
type Key = (String, Digest);
type BlobClaim = Claim<Key, BlobOutcome>;

/// The run-wide tables of shared work.
pub(crate) struct Tables {
    /// Blob transfers by (destination, digest); outcomes kept for the run.
    pub blobs: Arc<Table<Key, BlobOutcome>>,
    /// Image manifest pushes by (destination, digest); successes kept.
    pub images: Arc<Table<Key, ()>>,
    /// Manifest GETs by (source, digest), while in flight.
    pub manifests: Arc<Table<Key, RawManifest>>,
}

/// The copy engine: holds the run-wide blob bound and the tables of shared
/// work, so several copies in one run share both.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    options: EngineOptions,
    permits: Permits,
    tables: Tables,
    /// Manifests known to be at a destination (found by HEAD or pushed).
    present: Mutex<HashSet<Key>>,
    observer: Arc<dyn Observer>,
    retries: AtomicU64,
    /// Things said once per run (a destination that cannot hold referrers).
    notes: Mutex<HashSet<String>>,
    /// Who leads each blob at each registry, for cross-repository mounts.
    mounts: Arc<Mounts>,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new(EngineOptions::default(), Arc::new(Silent))
    }
}

impl Engine {
    pub fn new(options: EngineOptions, observer: Arc<dyn Observer>) -> Self {
        Self {
            inner: Arc::new(Inner {
                permits: Permits::new(options.max_concurrent_blobs),
                options,
                tables: Tables {
                    blobs: Table::new(true),
                    images: Table::new(true),
                    manifests: Table::new(false),
                },
                present: Mutex::new(HashSet::new()),
                observer,
                retries: AtomicU64::new(0),
                notes: Mutex::new(HashSet::new()),
                mounts: Arc::new(Mounts::default()),
            }),
        }
    }

    pub(crate) fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    pub(crate) fn observer(&self) -> &Arc<dyn Observer> {
        &self.inner.observer
    }

    pub(crate) fn tables(&self) -> &Tables {
        &self.inner.tables
    }

    /// True the first time `note` is given in this run.
    pub(crate) fn note_once(&self, note: &str) -> bool {
        self.inner
            .notes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(note.to_owned())
    }

    pub(crate) fn mounts(&self) -> &Arc<Mounts> {
        &self.inner.mounts
    }

    /// What mounting would have saved at each registry of this run whose
    /// account has cross-repository mounts off: one line each, for the end
    /// of the run.
    pub fn mount_notes(&self) -> Vec<MountNote> {
        self.inner.mounts.notes()
    }

    /// Queues a request for a run-wide transfer permit.
    pub(crate) fn request_permit(
        &self,
    ) -> tokio::sync::oneshot::Receiver<tokio::sync::OwnedSemaphorePermit> {
        self.inner.permits.request()
    }

    pub(crate) fn count_retry(&self) {
        self.inner.retries.fetch_add(1, Ordering::Relaxed);
    }

    fn present(&self) -> std::sync::MutexGuard<'_, HashSet<Key>> {
        self.inner
            .present
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this run already saw the manifest at the destination.
    pub(crate) fn is_present(&self, destination: &dyn Destination, digest: &Digest) -> bool {
        self.present()
            .contains(&(destination.name(), digest.clone()))
    }

    pub(crate) fn mark_present(&self, destination: &dyn Destination, digest: &Digest) {
        self.present().insert((destination.name(), digest.clone()));
    }

    /// Copies one image (index or single manifest) with everything it references.
    pub async fn copy(&self, request: CopyRequest) -> Result<CopyReport, CopyError> {
        let started = Instant::now();
        let retries_before = self.inner.retries.load(Ordering::Relaxed);
        let source = request.source.clone();
        let destination = request.destination.clone();
        let options = &request.options;

        let resolved = source
            .resolve(&request.source_reference)
            .await
            .map_err(|e| CopyError::source_side(source.name(), e))?
            .ok_or_else(|| CopyError::NotFound {
                reference: request.source_label.clone(),
            })?;
        debug!(digest = %resolved.digest, "source resolved");
        // A required signature: before anything is written or moved.
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
            bytes_mounted: 0,
            seconds: 0.0,
            retries: 0,
            referrers: ReferrerCounts::default(),
            signature,
        };

        // Without a platform filter the destination tag must hold the source
        // digest itself: one HEAD per side decides a warm run.
        if options.platforms.is_empty()
            && self
                .destination_digest(&destination, &request.destination_reference)
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

        let source_root = self.fetch_manifest(&request, &resolved.digest).await?;
        let Selected {
            root,
            filtered,
            platform,
        } = self.select_platforms(&request, source_root).await?;
        if root.is_index() && destination.capabilities().single_platform {
            return Err(CopyError::SinglePlatform {
                destination: destination.name(),
                reference: request.source_label.clone(),
                platforms: platforms_of(&root),
            });
        }
        report.digest = root.digest().clone();
        report.media_type = root.media_type().to_owned();
        report.kind = if root.is_index() { "index" } else { "image" }.to_owned();
        report.platforms = match platform {
            Some(platform) => vec![platform],
            None => platforms_of(&root),
        };
        // An index the platform filter made is new: nothing refers to it.
        let root_is_new = filtered.as_ref().is_some_and(|f| f.kind == "index");
        if let Some(filtered) = filtered {
            report.filtered = Some(filtered);
            if self
                .destination_digest(&destination, &request.destination_reference)
                .await?
                .as_ref()
                == Some(root.digest())
            {
                report.up_to_date = true;
                let subjects = subjects_of(&root, root_is_new, &[]);
                self.copy_referrers(&request, subjects, None)
                    .await
                    .add_to(&mut report);
                report.seconds = started.elapsed().as_secs_f64();
                return Ok(report);
            }
        }

        if !options.dry_run {
            destination
                .ensure_repository()
                .await
                .map_err(|e| CopyError::destination_side(destination.name(), e))?;
        }

        let plan = self.walk(&request, &root).await?;
        report.manifests.skipped = plan.skipped_manifests;
        report.blobs.foreign_skipped = plan.foreign_skipped;

        // Blobs: each once, largest first, shared across the run.
        let mut unique: Vec<&Descriptor> = Vec::new();
        let mut seen = HashSet::new();
        for image in &plan.images {
            for blob in &image.blobs {
                if seen.insert(blob.digest().clone()) {
                    unique.push(blob);
                }
            }
        }
        unique.sort_by_key(|d| std::cmp::Reverse(d.size()));
        self.inner
            .observer
            .planned(unique.len(), unique.iter().map(|d| d.size()).sum());
        // Where other repositories mount only blobs of committed manifests,
        // they may wait for ours until this copy is over.
        let _commits = (destination.capabilities().mount == MountWhen::ManifestCommitted
            && !options.dry_run)
            .then(|| {
                self.inner.mounts.could_commit(
                    &destination.name(),
                    plan.images
                        .iter()
                        .flat_map(|image| image.blobs.iter().map(|b| b.digest().clone())),
                )
            });
        let blobs: HashMap<Digest, BlobClaim> = unique
            .iter()
            .map(|blob| (blob.digest().clone(), self.claim_blob(&request, blob)))
            .collect();

        // Each image manifest goes up as soon as its own blobs are in; the
        // first failure fails the copy (its claims go, and with them the work
        // no other copy wants).
        let images: Vec<BoxFuture<'static, Outcome<()>>> = plan
            .images
            .iter()
            .map(|image| {
                let claims: Vec<BlobClaim> = image
                    .blobs
                    .iter()
                    .filter_map(|blob| blobs.get(blob.digest()).cloned())
                    .collect();
                if image.is_root {
                    all_in(claims).boxed()
                } else {
                    let claim = self.claim_image(&request, image, claims);
                    async move { claim.outcome().await }.boxed()
                }
            })
            .collect();
        futures::future::try_join_all(images)
            .await
            .map_err(CopyError::Shared)?;
        for blob in &unique {
            if let Some(claim) = blobs.get(blob.digest()) {
                match claim.outcome().await.map_err(CopyError::Shared)? {
                    BlobOutcome::Copied(n) | BlobOutcome::Planned(n) => {
                        report.blobs.copied += 1;
                        report.bytes += n;
                    }
                    BlobOutcome::Skipped => report.blobs.skipped += 1,
                    BlobOutcome::Mounted(n) => {
                        report.blobs.mounted += 1;
                        report.bytes_mounted += n;
                    }
                }
            }
        }
        report.manifests.copied += plan.images.len() as u64;

        if !options.dry_run {
            for index in &plan.indexes {
                let digest = index.digest().to_string();
                destination
                    .put_manifest(&digest, index)
                    .await
                    .map_err(|e| CopyError::destination_side(destination.name(), e))?;
                self.mark_present(destination.as_ref(), index.digest());
            }
        }
        report.manifests.copied += plan.indexes.len() as u64 + u64::from(root.is_index());
        // Referrers before the root's tag: the tag never shows without them.
        let subjects = subjects_of(&root, root_is_new, &plan.indexes);
        self.copy_referrers(&request, subjects, Some(&root))
            .await
            .add_to(&mut report);
        if !options.dry_run {
            destination
                .put_manifest(&request.destination_reference, &root)
                .await
                .map_err(|e| CopyError::destination_side(destination.name(), e))?;
            self.mark_present(destination.as_ref(), root.digest());
            if let Some(image) = plan.images.iter().find(|image| image.is_root) {
                self.inner.mounts.committed(
                    &destination.name(),
                    image.blobs.iter().map(|b| b.digest().clone()),
                );
            }
            self.inner
                .observer
                .manifest_pushed(&request.destination_reference, root.digest());
            destination
                .finish()
                .await
                .map_err(|e| CopyError::destination_side(destination.name(), e))?;
        }
        report.retries = self.inner.retries.load(Ordering::Relaxed) - retries_before;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    async fn destination_digest(
        &self,
        destination: &Arc<dyn Destination>,
        reference: &str,
    ) -> Result<Option<Digest>, CopyError> {
        destination
            .manifest_digest(reference)
            .await
            .map_err(|e| CopyError::destination_side(destination.name(), e))
    }

    /// Copies blobs (each once, shared with the run's other transfers) and
    /// counts what happened to them.
    pub(crate) async fn copy_blobs(
        &self,
        request: &CopyRequest,
        blobs: &[Descriptor],
    ) -> Result<(BlobCounts, u64), CopyError> {
        let claims: Vec<BlobClaim> = blobs
            .iter()
            .map(|blob| self.claim_blob(request, blob))
            .collect();
        let mut counts = BlobCounts::default();
        let mut bytes = 0;
        for claim in &claims {
            match claim.outcome().await.map_err(CopyError::Shared)? {
                BlobOutcome::Copied(n) | BlobOutcome::Planned(n) => {
                    counts.copied += 1;
                    bytes += n;
                }
                BlobOutcome::Skipped => counts.skipped += 1,
                BlobOutcome::Mounted(_) => counts.mounted += 1,
            }
        }
        Ok((counts, bytes))
    }

    /// The referrers of an image the destination holds already: of the root
    /// and, for an index, of its children (read at the destination, which
    /// costs no pull at the source), unless the source holds no referrers
    /// at all.
    async fn referrers_of_up_to_date(
        &self,
        request: &CopyRequest,
        digest: &Digest,
        kind: &str,
    ) -> ReferrerOutcome {
        if request.options.referrers.is_none() {
            return ReferrerOutcome::default();
        }
        let mut subjects = vec![digest.clone()];
        // The root's look-up comes first: it probes the referrers API and
        // lists the source's tags, after which a source may know that
        // nothing in it refers to anything, and the index need not be read.
        let looked_up = request.source.referrers(digest, None).await;
        if kind == "index" && !(looked_up.is_ok() && request.source.holds_no_referrers()) {
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

    /// Joins (or starts) the transfer of a blob to the request's destination.
    /// Turns for the run-wide bound are queued here, in the caller's order.
    ///
    /// The first repository of a registry to claim a digest leads it; a later
    /// one of the same registry follows: it asks for its turn only once it
    /// is done waiting for the leader, so waiting never holds a permit.
    fn claim_blob(&self, request: &CopyRequest, descriptor: &Descriptor) -> BlobClaim {
        let key = (request.destination.name(), descriptor.digest().clone());
        self.inner.tables.blobs.claim(key.clone(), || {
            let destination = &request.destination;
            let mount = destination.capabilities().mount;
            let mut here = None;
            let mut leader = None;
            if mount != MountWhen::Never
                && let Some(origin) = destination.location()
            {
                let me = Leader {
                    origin,
                    order: self.inner.mounts.order_of(&key.0),
                    key,
                };
                leader = self
                    .inner
                    .mounts
                    .lead_or_follow(descriptor.digest(), me.clone())
                    .filter(|leader| destination.can_mount_from(&leader.origin));
                here = Some(me);
            }
            let turn = leader.is_none().then(|| self.inner.permits.request());
            let transfer = Transfer {
                source: request.source.clone(),
                destination: request.destination.clone(),
                descriptor: descriptor.clone(),
                dry_run: request.options.dry_run,
                engine: self.clone(),
                mount,
                here,
                leader,
            };
            async move { transfer.run(turn).await.map_err(Arc::new) }.boxed()
        })
    }

    /// Joins (or starts) the push of an image manifest by digest, once the
    /// blobs it holds claims on are in.
    fn claim_image(
        &self,
        request: &CopyRequest,
        image: &ImageNode,
        blobs: Vec<BlobClaim>,
    ) -> Claim<Key, ()> {
        let key = (request.destination.name(), image.manifest.digest().clone());
        self.inner.tables.images.claim(key, || {
            let destination = request.destination.clone();
            let manifest = image.manifest.clone();
            let dry_run = request.options.dry_run;
            let engine = self.clone();
            let blob_digests: Vec<Digest> =
                image.blobs.iter().map(|b| b.digest().clone()).collect();
            async move {
                all_in(blobs).await?;
                if !dry_run {
                    let reference = manifest.digest().to_string();
                    destination
                        .put_manifest(&reference, &manifest)
                        .await
                        .map_err(|e| {
                            Arc::new(CopyError::destination_side(destination.name(), e))
                        })?;
                    engine.mark_present(destination.as_ref(), manifest.digest());
                    engine.mounts().committed(&destination.name(), blob_digests);
                    engine
                        .observer()
                        .manifest_pushed(&reference, manifest.digest());
                }
                Ok(())
            }
            .boxed()
        })
    }
}

/// Waits until every blob is in; the first failure ends the wait.
async fn all_in(blobs: Vec<BlobClaim>) -> Outcome<()> {
    futures::future::try_join_all(blobs.iter().map(|claim| claim.outcome())).await?;
    Ok(())
}

fn kind_of_media_type(media_type: &str) -> &'static str {
    match media_type {
        mirror_oci::media_types::OCI_INDEX | mirror_oci::media_types::DOCKER_LIST => "index",
        _ => "image",
    }
}
