//! What every backend implements: a [`Source`] to read an image from and a
//! [`Destination`] to write one to. Backend differences live in
//! [`Capabilities`], never in backend checks inside the engine.

use std::any::Any;
use std::time::Duration;

use async_trait::async_trait;
use mirror_oci::{BlobStream, Descriptor, Digest, ManifestError, RawManifest, StreamError};
use mirror_registry::RegistryError;

use crate::referrers::Referrer;

/// A manifest as resolved without fetching it (HEAD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub digest: Digest,
    pub media_type: Option<String>,
    pub size: Option<u64>,
}

/// Where a blob can be mounted from: a repository on a registry host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOrigin {
    /// The API host (`registry-1.docker.io`, `127.0.0.1:5000`).
    pub host: String,
    /// The repository path on that host.
    pub repository: String,
}

/// An upload already opened by a failed mount, handed back to [`Destination::put_blob`]
/// so the destination does not open a second one. Opaque to the engine.
pub struct UploadSlot(pub Box<dyn Any + Send + Sync>);

impl std::fmt::Debug for UploadSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UploadSlot")
    }
}

/// The answer to a mount attempt.
#[derive(Debug)]
pub enum Mount {
    Mounted,
    NotMounted(Option<UploadSlot>),
}

/// When a registry lets one repository mount a blob that another of its
/// repositories holds (`POST /v2/<name>/blobs/uploads/?mount=D&from=R`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MountWhen {
    /// No cross-repository mounts (local layouts and archives).
    #[default]
    Never,
    /// Any blob linked in `from` (distribution): once the first repository
    /// of a run has the blob, every other one can mount it.
    BlobLinked,
    /// Only a blob referenced by an image manifest committed in `from`
    /// (ECR): a repository that wants to mount waits for that manifest, not
    /// just for the blob.
    ManifestCommitted,
}

/// Whether the registry's account lets mounts happen at all, read once per
/// run and registry ([`Destination::mount_setting`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSetting {
    Enabled,
    /// Mounts are off; `reason` says why (the setting's value, or why it
    /// could not be read), `fix` how to turn them on, if anything can.
    Disabled {
        reason: String,
        fix: Option<String>,
    },
}

/// What a destination can take, as data: the engine plans with these, never
/// with backend names. (Whether a mount from one particular origin can work
/// is asked with [`Destination::can_mount_from`]; manifest PUT pacing, where
/// a registry needs it, lives in the backend.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Only an image manifest can be written (a docker-archive lists one
    /// config and its layers per image): a root that is still an index after
    /// the platform filter is refused before anything is written.
    pub single_platform: bool,
    /// Nothing can refer to an image here (a docker-archive): referrers are
    /// counted, left out and said so once, never a failure.
    pub without_referrers: bool,
    /// When other repositories of this registry can mount what this one holds.
    pub mount: MountWhen,
    /// A mount answers whether the blob is here: `201` when it already is
    /// (a mount from this very repository) or got linked, otherwise `202`
    /// with the upload session the copy then uses (distribution, as the
    /// OCI spec describes). The HEAD before an upload is then one round
    /// trip too many, and is left out.
    pub mount_answers_presence: bool,
}

/// Why an endpoint operation failed. Each variant keeps its typed error, so
/// the binary can tell a usage problem from a transfer failure and add hints.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A backend's own error (a local layout, ECR's control plane), typed:
    /// the binary finds it in the chain by downcasting.
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl EndpointError {
    /// Wraps a backend's own typed error.
    pub fn backend(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(error))
    }

    /// The blob-stream failure behind this error, if one caused it (an upload
    /// fails because the body it was streaming failed).
    pub fn stream_error(&self) -> Option<&StreamError> {
        match self {
            Self::Stream(e) => Some(e),
            Self::Registry(e) => StreamError::find_in(e),
            Self::Backend(e) => StreamError::find_in(e.as_ref()),
            _ => None,
        }
    }

    /// Whether a fresh attempt may succeed. Content that fails verification is
    /// never transient: the source serves wrong bytes and would again.
    pub fn is_transient(&self) -> bool {
        if let Some(stream) = self.stream_error() {
            return stream.is_transient();
        }
        match self {
            Self::Registry(e) => e.is_transient(),
            _ => false,
        }
    }

    /// How long the server asked to wait before another attempt (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Registry(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// Where images are read from: a registry, an OCI layout, an archive.
#[async_trait]
pub trait Source: Send + Sync {
    /// For messages: `127.0.0.1:5000/app`.
    fn name(&self) -> String;

    /// Resolves a tag or digest without fetching the manifest; `None` if absent.
    async fn resolve(&self, reference: &str) -> Result<Option<Resolved>, EndpointError>;

    /// Fetches a manifest by digest, checked against it and size-capped.
    async fn manifest(&self, digest: &Digest) -> Result<RawManifest, EndpointError>;

    /// Streams a blob, unverified: the engine wraps it in a verifying stream.
    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobStream, EndpointError>;

    /// Where the destination could mount this source's blobs from, if anywhere.
    fn mount_origin(&self) -> Option<MountOrigin> {
        None
    }

    /// What refers to `subject` here: OCI 1.1 referrers (the referrers API,
    /// else the fallback tag index; a layout's `index.json`) and cosign's
    /// tags. `artifact_type` is a hint for a filtering server; the engine
    /// filters again. Empty where the source holds none.
    async fn referrers(
        &self,
        _subject: &Digest,
        _artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>, EndpointError> {
        Ok(Vec::new())
    }

    /// True when what this source learned so far (by earlier
    /// [`Source::referrers`] calls) shows that nothing in it refers to any
    /// manifest: then the children of an index need not be looked up.
    fn holds_no_referrers(&self) -> bool {
        false
    }
}

/// Where images are written to: a registry (ECR included), an OCI layout, an archive.
#[async_trait]
pub trait Destination: Send + Sync {
    /// For messages: `127.0.0.1:5000/app`.
    fn name(&self) -> String;

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Creates the repository if the backend needs one (ECR); a no-op elsewhere.
    async fn ensure_repository(&self) -> Result<(), EndpointError> {
        Ok(())
    }

    /// The digest a tag or digest resolves to at the destination; `None` if absent.
    async fn manifest_digest(&self, reference: &str) -> Result<Option<Digest>, EndpointError>;

    /// Whether the blob is present with the right size (404/403/size mismatch: no).
    async fn blob_exists(&self, descriptor: &Descriptor) -> Result<bool, EndpointError>;

    /// Tries to mount a blob from another repository of the same registry.
    async fn mount_blob(
        &self,
        _descriptor: &Descriptor,
        _from: &MountOrigin,
    ) -> Result<Mount, EndpointError> {
        Ok(Mount::NotMounted(None))
    }

    /// Whether a blob from `origin` can be mounted here (same host, other
    /// repository, and whatever else the registry asks of the pair).
    fn can_mount_from(&self, _origin: &MountOrigin) -> bool {
        false
    }

    /// The registry host and repository this destination writes to, as the
    /// `from` of other repositories' mounts; `None` where nothing mounts.
    fn location(&self) -> Option<MountOrigin> {
        None
    }

    /// Whether the registry lets mounts happen at all (an account setting);
    /// asked once per run and registry, only when a mount is wanted.
    async fn mount_setting(&self) -> MountSetting {
        MountSetting::Enabled
    }

    /// Uploads a blob from a verifying stream. If the stream fails, even in place
    /// of its last chunk, the upload fails and the digest never becomes visible.
    async fn put_blob(
        &self,
        descriptor: &Descriptor,
        body: BlobStream,
        slot: Option<UploadSlot>,
    ) -> Result<(), EndpointError>;

    /// Pushes a manifest's exact bytes by tag or digest.
    async fn put_manifest(
        &self,
        reference: &str,
        manifest: &RawManifest,
    ) -> Result<(), EndpointError>;

    /// The referrers the destination lists for `subject` (its referrers
    /// API, its fallback tag index, a layout's `index.json`).
    async fn listed_referrers(&self, _subject: &Digest) -> Result<Vec<Descriptor>, EndpointError> {
        Ok(Vec::new())
    }

    /// Pushes a referrer's exact bytes by digest (by `tag` when it was found
    /// at one of cosign's tags). `Ok(true)` when the destination listed it
    /// under its subject itself (`OCI-Subject`, a layout's `index.json`);
    /// otherwise the engine adds it with [`Destination::add_referrers`].
    async fn put_referrer(
        &self,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<bool, EndpointError> {
        let reference = tag.map_or_else(|| manifest.digest().to_string(), str::to_owned);
        self.put_manifest(&reference, manifest).await?;
        Ok(false)
    }

    /// Lists referrers under `subject` where the destination does not do so
    /// itself: a registry's fallback tag index, merged with what is there.
    async fn add_referrers(
        &self,
        _subject: &Digest,
        _referrers: &[Descriptor],
    ) -> Result<(), EndpointError> {
        Ok(())
    }

    /// A manifest the destination holds, by digest; `None` when it does not
    /// hold it or cannot tell (the engine then reads the source's).
    async fn stored_manifest(
        &self,
        _digest: &Digest,
    ) -> Result<Option<RawManifest>, EndpointError> {
        Ok(None)
    }

    /// Called once after the root manifest is pushed (layout index, archive close).
    async fn finish(&self) -> Result<(), EndpointError> {
        Ok(())
    }
}
