//! The copy engine of `mirror`: resolves what to copy into a graph of manifests
//! and blobs, then streams every blob from a [`Source`] to a [`Destination`]
//! under one run-wide bound, verifying digests in flight and skipping what the
//! destination holds; manifests go last, children before parents, byte for byte.
//!
//! - [`Source`], [`Destination`], [`Capabilities`]: the endpoint contract every
//!   backend implements; [`RegistryEndpoint`] is the registry backend.
//! - [`Engine`]: holds the blob bound and the run-wide dedup table; [`Engine::copy`]
//!   runs one [`CopyRequest`] and returns a [`CopyReport`].
//! - [`Referrer`], [`ReferrerSelection`]: signatures, SBOMs and attestations
//!   that travel with an image (`--referrers`); `--require-signature` checks
//!   a cosign signature before anything moves ([`CopyOptions`]).
//! - [`Observer`]: progress events; byte counts are atomics read on a timer.
//! - [`CopyError`]: which side, which object, what to do.

mod coalesce;
mod copy;
mod endpoint;
mod error;
mod referrers;
mod registry;
mod report;

pub use copy::{CopyOptions, CopyRequest, DEFAULT_CONCURRENT_BLOBS, Engine, EngineOptions};
pub use endpoint::{
    Capabilities, Destination, EndpointError, Mount, MountOrigin, Resolved, Source, UploadSlot,
};
pub use error::{CopyError, Side};
pub use referrers::{Referrer, ReferrerCounts, ReferrerSelection, SelectionError, SignatureReport};
pub use registry::RegistryEndpoint;
pub use report::{BlobCounts, BlobOutcome, CopyReport, Filtered, ManifestCounts, Observer, Silent};
