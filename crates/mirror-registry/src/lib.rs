//! The OCI distribution API over HTTP, written for copying: every request the
//! engine makes to a registry goes through here.
//!
//! Why not oci-client: its hot path lacks what a mirroring engine needs (see the
//! README's design section): no retries or `Retry-After`, no access to rate-limit
//! headers or the response Content-Type, a 202 answer to a mount is an error,
//! tag-less digest pushes panic when `Location` is missing (ECR), chunked uploads
//! by default, Basic credentials cached for the client's life, and no single
//! flight for tokens. The types (references, descriptors, manifests) come from
//! oci-spec through `mirror-oci`.
//!
//! Main types:
//! - [`RegistryClient`]: one per run; holds the HTTP clients, per-host state (auth
//!   scheme, token cache with single flight, request bound, rate-limit reading).
//! - [`Repository`]: one repository on one registry; HEAD/GET/PUT manifests,
//!   HEAD/GET/mount/upload blobs, tag listing, referrers (the OCI 1.1 API, the
//!   fallback tag index, `OCI-Subject`).
//! - [`Credentials`] and [`CredentialStore`]: explicit flags, docker config.json
//!   (`auths`, `credHelpers`, `credsStore`) and containers' auth.json.
//! - [`RegistryError`]: side-agnostic errors naming host, operation and object,
//!   with the registry's error code decoded.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mirror_registry::RegistryError> {
//! use mirror_registry::{ClientOptions, CredentialStore, RegistryClient};
//! let client = RegistryClient::new(ClientOptions::default(), CredentialStore::empty())?;
//! let reference = "python:3.10-slim-buster".parse().expect("valid reference");
//! let repo = client.repository(&reference, None)?;
//! let head = repo.head_manifest("3.10-slim-buster").await?;
//! println!("{:?}", head.map(|h| h.digest));
//! # Ok(()) }
//! ```

mod auth;
mod authorize;
pub mod background;
mod client;
mod credentials;
mod error;
mod execute;
mod host;
mod ratelimit;
mod redact;
mod repository;
mod response;
mod stall;
mod stats;

pub use client::{ClientOptions, RegistryClient, RetryPolicy, TagListLimits};
pub use credentials::{CredentialProvider, CredentialStore, Credentials};
pub use error::{AuthFailure, ErrorCode, Operation, RegistryError, TransportKind};
pub use ratelimit::RateLimit;
pub use redact::redact_url;
pub use repository::{ManifestHead, MountOutcome, ReferrerListing, Repository, UploadSession};
pub use stats::{HostAnswers, RequestStats, StatsSnapshot};
