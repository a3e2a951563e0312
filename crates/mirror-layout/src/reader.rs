//! Reading an OCI image layout, from a directory or an archive alike.

use mirror_engine::Resolved;
use mirror_oci::{BlobStream, Descriptor, Digest, ImageIndex, MAX_MANIFEST_BYTES, RawManifest};

use crate::error::LayoutError;
use crate::fsutil::reference_digest;
use crate::index::{
    CONTAINERD_NAME, MAX_INDEX_BYTES, VersionProblem, known_names, layout_version, ref_name,
};
use crate::store::Store;

/// Reads `oci-layout`, `index.json` and blobs of a layout.
#[derive(Debug, Clone)]
pub(crate) struct LayoutReader {
    pub store: Store,
    /// `oci:DIR` or `oci-archive:FILE`, for messages.
    pub label: String,
}

impl LayoutReader {
    pub(crate) fn new(store: Store, transport: &str) -> Self {
        let label = format!("{transport}:{}", store.path().display());
        Self { store, label }
    }

    /// Checks that `oci-layout` exists and declares a version we read; `Ok(false)`
    /// when it is missing.
    pub(crate) async fn has_layout_file(&self) -> Result<bool, LayoutError> {
        let Some(bytes) = self.store.read_file("oci-layout", 64 * 1024).await? else {
            return Ok(false);
        };
        let path = self.store.path().to_owned();
        match layout_version(&bytes) {
            Ok(()) => Ok(true),
            Err(VersionProblem::Unsupported(version)) => {
                Err(LayoutError::UnsupportedVersion { path, version })
            }
            Err(VersionProblem::Malformed(reason)) => Err(LayoutError::Malformed { path, reason }),
        }
    }

    /// [`Self::has_layout_file`], with a missing file an error.
    pub(crate) async fn check_layout(&self) -> Result<(), LayoutError> {
        if self.has_layout_file().await? {
            Ok(())
        } else {
            Err(LayoutError::NotALayout {
                path: self.store.path().to_owned(),
            })
        }
    }

    /// The entries of `index.json`; `None` if there is none yet.
    pub(crate) async fn entries(&self) -> Result<Option<Vec<Descriptor>>, LayoutError> {
        let Some(bytes) = self.store.read_file("index.json", MAX_INDEX_BYTES).await? else {
            return Ok(None);
        };
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| LayoutError::Malformed {
                path: self.store.path().join("index.json"),
                reason: format!("not a valid image index: {e}"),
            })?;
        Ok(Some(index.manifests().clone()))
    }

    /// The entries of `index.json`; a layout without one is an error here.
    pub(crate) async fn required_entries(&self) -> Result<Vec<Descriptor>, LayoutError> {
        self.entries().await?.ok_or_else(|| LayoutError::Malformed {
            path: self.store.path().to_owned(),
            reason: "has no index.json (an export that did not finish?)".to_owned(),
        })
    }

    /// Every entry with its ref name.
    pub(crate) async fn list(&self) -> Result<Vec<(Option<String>, Descriptor)>, LayoutError> {
        Ok(self
            .required_entries()
            .await?
            .into_iter()
            .map(|d| (ref_name(&d).map(str::to_owned), d))
            .collect())
    }

    /// The entry a reference names: `""` the only image, `@N` the Nth entry,
    /// a digest, or a tag (`org.opencontainers.image.ref.name`, falling back to
    /// containerd's `io.containerd.image.name`).
    pub(crate) async fn find(&self, reference: &str) -> Result<Resolved, LayoutError> {
        if let Some(digest) = reference_digest(reference)? {
            let entries = self.entries().await?.unwrap_or_default();
            if let Some(entry) = entries.iter().find(|d| d.digest() == &digest) {
                return Ok(resolved(entry));
            }
            return match self.store.blob_len(&digest).await? {
                Some(size) => Ok(Resolved {
                    digest,
                    media_type: None,
                    size: Some(size),
                }),
                None => Err(LayoutError::MissingBlob {
                    location: self.label.clone(),
                    digest: digest.to_string(),
                }),
            };
        }
        let entries = self.required_entries().await?;
        if reference.is_empty() {
            let images: Vec<Descriptor> = entries
                .iter()
                .filter(|d| !crate::referrers::is_referrer_entry(d))
                .cloned()
                .collect();
            return match images.as_slice() {
                [] => Err(LayoutError::Empty {
                    location: self.label.clone(),
                }),
                [only] => Ok(resolved(only)),
                several => Err(LayoutError::Ambiguous {
                    location: self.label.clone(),
                    count: several.len(),
                    known: known_names(several),
                }),
            };
        }
        let unknown = || LayoutError::UnknownTag {
            location: self.label.clone(),
            tag: reference.to_owned(),
            known: known_names(&entries),
        };
        if let Some(index) = reference.strip_prefix('@') {
            let n: usize = index.parse().map_err(|_| unknown())?;
            return entries.get(n).map(resolved).ok_or_else(unknown);
        }
        let by = |key: &str| {
            entries.iter().find(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(key))
                    .is_some_and(|name| name == reference)
            })
        };
        by(crate::index::REF_NAME)
            .or_else(|| by(CONTAINERD_NAME))
            .map(resolved)
            .ok_or_else(unknown)
    }

    /// What refers to `subject` in this layout (see [`crate::referrers`]).
    pub(crate) async fn referrers(
        &self,
        subject: &Digest,
    ) -> Result<Vec<mirror_engine::Referrer>, LayoutError> {
        let entries = self.entries().await?.unwrap_or_default();
        crate::referrers::referrers_among(&entries, subject, |digest| async move {
            match self.store.blob_len(&digest).await? {
                Some(_) => self.manifest(&digest).await.map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    /// A manifest by digest: size-capped, verified against the digest.
    pub(crate) async fn manifest(&self, digest: &Digest) -> Result<RawManifest, LayoutError> {
        let size = self
            .store
            .blob_len(digest)
            .await?
            .ok_or_else(|| LayoutError::MissingBlob {
                location: self.label.clone(),
                digest: digest.to_string(),
            })?;
        if size > MAX_MANIFEST_BYTES as u64 {
            return Err(LayoutError::ManifestTooLarge {
                location: self.label.clone(),
                digest: digest.to_string(),
                size,
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let bytes =
            self.store
                .read_blob(digest)
                .await?
                .ok_or_else(|| LayoutError::MissingBlob {
                    location: self.label.clone(),
                    digest: digest.to_string(),
                })?;
        RawManifest::parse_verified(bytes, None, digest).map_err(|source| LayoutError::Manifest {
            location: self.label.clone(),
            digest: digest.to_string(),
            source: Box::new(source),
        })
    }

    /// A blob's bytes, unverified (the engine verifies); its size is checked
    /// against the descriptor first so a damaged layout fails with a clear error.
    pub(crate) async fn blob(&self, descriptor: &Descriptor) -> Result<BlobStream, LayoutError> {
        let digest = descriptor.digest();
        match self.store.blob_len(digest).await? {
            None => Err(LayoutError::MissingBlob {
                location: self.label.clone(),
                digest: digest.to_string(),
            }),
            Some(actual) if actual != descriptor.size() => Err(LayoutError::SizeMismatch {
                location: self.label.clone(),
                digest: digest.to_string(),
                expected: descriptor.size(),
                actual,
            }),
            Some(_) => self.store.stream_blob(digest).await,
        }
    }
}

fn resolved(descriptor: &Descriptor) -> Resolved {
    Resolved {
        digest: descriptor.digest().clone(),
        media_type: Some(descriptor.media_type().to_string()),
        size: Some(descriptor.size()),
    }
}

/// Implements [`Source`](mirror_engine::Source) for an endpoint whose field
/// `reader` is its [`LayoutReader`]: a layout directory and an oci-archive
/// are read the same way, so both hand every call to the reader.
macro_rules! source_through_reader {
    ($endpoint:ty) => {
        #[async_trait::async_trait]
        impl mirror_engine::Source for $endpoint {
            fn name(&self) -> String {
                self.reader.label.clone()
            }

            async fn resolve(
                &self,
                reference: &str,
            ) -> Result<Option<mirror_engine::Resolved>, mirror_engine::EndpointError> {
                Ok(Some(self.reader.find(reference).await?))
            }

            async fn manifest(
                &self,
                digest: &mirror_oci::Digest,
            ) -> Result<mirror_oci::RawManifest, mirror_engine::EndpointError> {
                Ok(self.reader.manifest(digest).await?)
            }

            async fn blob(
                &self,
                descriptor: &mirror_oci::Descriptor,
            ) -> Result<mirror_oci::BlobStream, mirror_engine::EndpointError> {
                Ok(self.reader.blob(descriptor).await?)
            }

            async fn referrers(
                &self,
                subject: &mirror_oci::Digest,
                _artifact_type: Option<&str>,
            ) -> Result<Vec<mirror_engine::Referrer>, mirror_engine::EndpointError> {
                Ok(self.reader.referrers(subject).await?)
            }
        }
    };
}
pub(crate) use source_through_reader;
