//! The copy engine of `mirror`: resolves what to copy into a graph of manifests
//! and blobs, then streams every blob from a [`Source`] to a [`Destination`]
//! under one run-wide bound, verifying digests in flight and skipping what the
//! destination holds; manifests go last, children before parents, byte for byte.
//!
//! - [`Source`], [`Destination`], [`Capabilities`]: the endpoint contract every
//!   backend implements; [`RegistryEndpoint`] is the registry backend.
//! - [`Engine`]: holds the blob bound and the run-wide tables of shared work;
//!   [`Engine::copy`] runs one [`CopyRequest`] and returns a [`CopyReport`].
//! - [`Referrer`], [`ReferrerSelection`]: signatures, SBOMs and attestations
//!   that travel with an image (`--referrers`); `--require-signature` checks
//!   a cosign signature before anything moves ([`CopyOptions`]).
//! - Cross-repository mounts: within a run, the first repository of a
//!   registry to need a blob transfers it and the others mount it
//!   ([`MountWhen`] says when a registry allows that, [`MountNote`] what an
//!   account with mounts off cost).
//! - [`Observer`]: progress events; byte counts are atomics read on a timer.
//! - [`CopyError`]: which side, which object, and the cause as its source.
//!
//! ```no_run
//! # async fn demo(source: std::sync::Arc<dyn mirror_engine::Source>,
//! #               destination: std::sync::Arc<dyn mirror_engine::Destination>) {
//! use mirror_engine::{CopyOptions, CopyRequest, Engine};
//! let engine = Engine::default();
//! let report = engine
//!     .copy(CopyRequest {
//!         source,
//!         source_reference: "3.12".into(),
//!         destination,
//!         destination_reference: "3.12".into(),
//!         source_label: "python:3.12".into(),
//!         destination_label: "registry.example.com/python:3.12".into(),
//!         options: CopyOptions::default(),
//!     })
//!     .await;
//! # let _ = report;
//! # }
//! ```

mod coalesce;
mod copy;
mod endpoint;
mod error;
mod inflight;
mod mounts;
mod platforms;
mod referrers;
mod registry;
mod report;
mod transfer;
mod walk;

pub use copy::{
    CopyOptions, CopyRequest, DEFAULT_CONCURRENT_BLOBS, DEFAULT_MAX_RETRY_AFTER, Engine,
    EngineOptions,
};
pub use endpoint::{
    Capabilities, Destination, EndpointError, Mount, MountOrigin, MountSetting, MountWhen,
    Resolved, Source, UploadSlot,
};
pub use error::{CopyError, GaveUp, Limit, Side};
pub use mounts::MountNote;
pub use referrers::{
    Referrer, ReferrerCounts, ReferrerSelection, ReferrersApi, SelectionError, SignatureReport,
};
pub use registry::RegistryEndpoint;
pub use report::{BlobCounts, BlobOutcome, CopyReport, Filtered, ManifestCounts, Observer, Silent};
pub use walk::{DEFAULT_MAX_MANIFESTS, MAX_NESTING};

/// Lets the end of a run finish its clean-up before the process exits, at
/// most `limit` in all: the transfers a failed image left without a claim
/// are aborted, and dropping one mid-upload cancels its upload session at
/// the registry, a request of its own ([`mirror_registry::background`]).
/// Without the wait the runtime would drop those requests unsent and leave
/// the sessions open until the registry purges them. False when the limit
/// ran out first.
pub async fn settle(limit: std::time::Duration) -> bool {
    let started = std::time::Instant::now();
    let work = inflight::settle_work(limit).await;
    let requests =
        mirror_registry::background::settle(limit.saturating_sub(started.elapsed())).await;
    work && requests
}
