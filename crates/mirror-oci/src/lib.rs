//! The vocabulary every other mirror crate speaks, with no I/O of its own.
//!
//! - [`Reference`]: a Docker-style image reference (`python:3.10-slim-buster` is
//!   `docker.io/library/python:3.10-slim-buster`, served by `registry-1.docker.io`).
//! - [`Digest`], [`Descriptor`], [`Platform`]: re-exported from `oci-spec`.
//! - [`RawManifest`]: the exact bytes of a manifest plus a parsed view; the digest is
//!   always over the bytes and nothing is ever re-serialized.
//! - [`fallback_tag`], [`legacy_tag`], [`merge_referrers_index`]: referrers
//!   (OCI 1.1 `subject`, the fallback tag index, cosign's tags) as names and data.
//! - [`VerifyingStream`]: wraps a blob body and fails in place of its last chunk when
//!   the size or digest is wrong, so an upload fed by it can never be committed.
//!
//! ```
//! use mirror_oci::Reference;
//! let r: Reference = "python:3.10-slim-buster".parse().unwrap();
//! assert_eq!(r.api_host(), "registry-1.docker.io");
//! assert_eq!(r.repository(), "library/python");
//! ```

mod digest;
mod manifest;
mod media;
mod platform;
mod reference;
mod referrers;
mod verify;

pub use digest::{DigestError, Hasher, digest_of, parse_digest};
pub use manifest::{MAX_MANIFEST_BYTES, ManifestError, ManifestKind, RawManifest};
pub use media::{MANIFEST_ACCEPT, is_foreign_layer, media_types};
pub use oci_spec::image::{
    Arch, Descriptor, DescriptorBuilder, Digest, ImageIndex, ImageManifest, MediaType, Os, Platform,
};
pub use platform::{PlatformFilter, PlatformParseError, platform_string};
pub use reference::{Reference, ReferenceError};
pub use referrers::{
    COSIGN_SIGNATURE_ANNOTATION, IndexMerge, ReferrerKind, ReferrersIndexError, artifact_types,
    fallback_tag, is_referrer_tag, legacy_tag, merge_referrers_index, referrers_of_index,
};
pub use verify::{BlobStream, StreamError, VerifyingStream};
