//! What a copy did, for people (the CLI summary) and machines (`--json`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use mirror_oci::{Descriptor, Digest};
use serde::Serialize;

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobOutcome {
    /// Streamed from the source and uploaded; carries the bytes moved.
    Copied(u64),
    /// Already at the destination.
    Skipped,
    /// Mounted from another repository of the same registry; carries the
    /// bytes that did not have to move.
    Mounted(u64),
    /// `--dry-run`: would be copied.
    Planned(u64),
}

/// Events of a copy, for progress display. Called off the data path: byte
/// counts are atomics the observer reads on its own timer.
pub trait Observer: Send + Sync {
    /// A blob transfer starts streaming; `bytes` counts verified bytes so far.
    fn blob_started(&self, _descriptor: &Descriptor, _bytes: Arc<AtomicU64>) {}
    /// A blob is done (copied, skipped, mounted).
    fn blob_finished(&self, _descriptor: &Descriptor, _outcome: BlobOutcome) {}
    /// A blob transfer failed and will start over with a fresh GET and upload.
    fn blob_retrying(&self, _descriptor: &Descriptor, _attempt: u32, _error: &str) {}
    /// A manifest was pushed (child by digest, root by tag).
    fn manifest_pushed(&self, _reference: &str, _digest: &Digest) {}
    /// The copy plan is known: this many blobs of this many bytes may move.
    fn planned(&self, _blobs: usize, _bytes: u64) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Silent;

impl Observer for Silent {}

/// Counts of manifests.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct ManifestCounts {
    pub copied: u64,
    pub skipped: u64,
}

/// Counts of blobs.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct BlobCounts {
    pub copied: u64,
    pub skipped: u64,
    pub mounted: u64,
    /// Non-distributable layers left out (`--include-foreign` copies them).
    pub foreign_skipped: u64,
}

/// When `--platform` changed what the destination tag points at.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Filtered {
    /// `image` (one platform: that platform's manifest, its own digest) or
    /// `index` (several: a new index holding only them, a new digest).
    pub kind: String,
    pub digest: Digest,
    /// The source's root digest, for comparison.
    pub source_digest: Digest,
}

/// The result of one `copy`.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub source: String,
    pub destination: String,
    /// The digest the destination reference now points at.
    pub digest: Digest,
    pub media_type: String,
    /// `index` or `image`.
    pub kind: String,
    /// The destination already had this digest: nothing was written.
    pub up_to_date: bool,
    pub dry_run: bool,
    /// The platforms copied (empty for a single image).
    pub platforms: Vec<String>,
    pub filtered: Option<Filtered>,
    pub manifests: ManifestCounts,
    pub blobs: BlobCounts,
    /// Blob bytes streamed from source to destination (planned, in a dry run).
    pub bytes: u64,
    /// Blob bytes not moved because a mount put them in place (planned, in
    /// a dry run).
    pub bytes_mounted: u64,
    pub seconds: f64,
    /// Blob transfers started over.
    pub retries: u64,
    /// Signatures, SBOMs and attestations that travel with the image.
    pub referrers: crate::referrers::ReferrerCounts,
    /// The signature that let the image through (`--require-signature`).
    pub signature: Option<crate::referrers::SignatureReport>,
}
