//! Writing an `oci-archive` (or a docker-archive): the partial layout,
//! the commit under the archive's lock, the merge with what the file held.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mirror_engine::{Capabilities, Destination, EndpointError, Referrer, UploadSlot};
use mirror_oci::{
    BlobStream, Descriptor, Digest, MAX_MANIFEST_BYTES, RawManifest, media_types, parse_digest,
};
use serde_json::Value;

use super::files::{archive_full, lock, partial_blobs, partial_path, tmp_path};
use super::index_tar;
use super::tarball::{BlobSource, Metadata, tar_size, write_tar};
use crate::docker_archive::{
    add_containerd_name, entry_repo_tag, read_manifest_json, repo_tag, upsert_image,
};
use crate::error::LayoutError;
use crate::fsutil::{
    TempGuard, blob_rel, digest_of_blob_name, path_lock, reference_digest, sync_dir,
};
use crate::index::{MAX_INDEX_BYTES, empty_index, ref_name, upsert_value};
use crate::layout::{OciLayout, hashes_to, target};
use crate::lock::Mode;
use crate::reader::LayoutReader;
use crate::store::{FileIdentity, Store, TarIndex};

/// An `oci-archive` file as a copy destination.
///
/// The copy writes an OCI layout in `FILE.partial/` (verified blobs renamed
/// into place as they complete, so an interrupted export resumes there);
/// [`Destination::finish`] then writes `FILE.tmp` (`oci-layout`, `index.json`,
/// `blobs/...` in name order, mtime 0, mode 0644, owner 0), fsyncs it, renames
/// it to `FILE` and removes the partial directory. If `FILE` already is an
/// archive, its images are kept: its blobs count as present (skipped, stored
/// once) and are copied from it into the new file, and its `index.json` is
/// merged with the new entries (an entry of the same name is replaced).
///
/// Every commit rewrites the whole file (which is why a run of many images,
/// in mirror-sync, leaves the copies' commits to one at its end); commits
/// into one archive are serialised, so several images (concurrently or one after
/// another, from one process or several) end up in one archive.
///
/// Writers of one archive share `FILE.partial/` and `FILE.lock`, an advisory
/// `flock` beside the archive (beside it like `FILE.partial/` and `FILE.tmp`;
/// a tar has no inside, and the last holder removes it). Adding to the
/// partial layout (creating it, a blob, a manifest) holds it shared, so
/// writers add side by side; a commit holds it exclusively, re-reads `FILE`
/// as it is then (another writer may just have replaced it), merges it with
/// the partial layout (other writers' complete blobs and images included),
/// and removes the partial layout while no one writes into it. A writer
/// whose image another writer committed finds nothing new and leaves the
/// archive as it is.
///
/// Nothing is written through a symbolic link: `FILE.tmp` is created anew
/// (a leftover or planted one removed first), `FILE.lock` is never opened
/// through a link, and a `FILE.partial/` that is a link, or holds one where
/// its directories or blobs belong, is refused.
///
/// Written with [`Self::create_docker`], the archive is a docker-archive (see
/// the `docker_archive` module docs): the same layout plus Docker's
/// `manifest.json`, and only images, one platform each
/// ([`Capabilities::single_platform`]). A commit to an archive that already
/// has a `manifest.json` keeps it in step with `index.json` either way.
#[derive(Debug)]
pub struct OciArchiveWriter {
    target: PathBuf,
    partial: OciLayout,
    existing: Mutex<Option<Arc<TarIndex>>>,
    label: String,
    format: Format,
}

/// What an archive holds besides the OCI layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Oci,
    /// Docker's `manifest.json` too, and only image manifests as roots.
    Docker,
}

impl Format {
    fn transport(self) -> &'static str {
        match self {
            Self::Oci => "oci-archive",
            Self::Docker => "docker-archive",
        }
    }
}

impl OciArchiveWriter {
    /// Prepares to write `path`. An existing file must be a readable
    /// oci-archive (its images are kept); a `FILE.partial/` left by an
    /// interrupted export is resumed.
    pub async fn create(path: impl AsRef<Path>) -> Result<Self, LayoutError> {
        Self::open(path.as_ref(), Format::Oci).await
    }

    /// Prepares to write a docker-archive at `path` (an OCI layout plus
    /// Docker's `manifest.json`, as `docker save` writes since Docker 25).
    /// References are Docker's `NAME:TAG` (see [`crate::repo_tag`]), or `""`
    /// for an untagged image. An existing file must hold an OCI layout (an
    /// archive of Docker 25+ or one this crate wrote); its images are kept.
    pub async fn create_docker(path: impl AsRef<Path>) -> Result<Self, LayoutError> {
        Self::open(path.as_ref(), Format::Docker).await
    }

    async fn open(path: &Path, format: Format) -> Result<Self, LayoutError> {
        let target = path.to_owned();
        let existing = match tokio::fs::metadata(&target).await {
            Ok(m) if m.is_dir() => {
                return Err(LayoutError::Refused {
                    path: target,
                    reason: "is a directory".to_owned(),
                    hint: format!(
                        "{}:FILE names a tar file; use oci:DIR for a layout directory",
                        format.transport()
                    ),
                });
            }
            Ok(_) => Some(open_existing(&target, format).await?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(LayoutError::read(&target, e)),
        };
        let partial_dir = partial_path(&target);
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let partial = if tokio::fs::metadata(dir).await.is_ok() {
            // Another writer may be creating the partial layout, or removing
            // it in a commit.
            let _held = lock(&target, Mode::Shared).await?;
            OciLayout::create_work_dir(&partial_dir).await?
        } else {
            // Creating the directory is left to the copy.
            OciLayout::create_work_dir(&partial_dir).await?
        };
        Ok(Self {
            label: format!("{}:{}", format.transport(), target.display()),
            target,
            partial,
            existing: Mutex::new(existing),
            format,
        })
    }

    /// The `index.json` name a reference is recorded as: as it is, or for a
    /// docker-archive Docker's `NAME:TAG` (digests and `""` as they are).
    fn entry_name<'r>(&self, reference: &'r str) -> Result<Cow<'r, str>, LayoutError> {
        if self.format == Format::Oci
            || reference.is_empty()
            || reference_digest(reference)?.is_some()
        {
            return Ok(Cow::Borrowed(reference));
        }
        repo_tag(reference).map(Cow::Owned)
    }

    /// The archive file.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// The directory the layout is assembled in (`FILE.partial`).
    pub fn partial_path(&self) -> &Path {
        self.partial.path()
    }

    fn existing(&self) -> Option<Arc<TarIndex>> {
        self.existing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_existing(&self, tar: Option<Arc<TarIndex>>) {
        *self
            .existing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = tar;
    }

    /// Whether the committed archive holds a manifest that hashes to `digest`.
    async fn archived_manifest(&self, digest: &Digest) -> Result<bool, LayoutError> {
        Ok(self.archived_manifest_bytes(digest).await?.is_some())
    }

    /// The bytes of a manifest of the committed archive, if they hash to `digest`.
    async fn archived_manifest_bytes(
        &self,
        digest: &Digest,
    ) -> Result<Option<Vec<u8>>, LayoutError> {
        let Some(tar) = self.existing() else {
            return Ok(None);
        };
        let rel = blob_rel(digest, "manifest")?;
        match tar.files.get(&rel) {
            Some(span) if span.size <= MAX_MANIFEST_BYTES as u64 => {
                let bytes = tar.read(*span).await?;
                Ok(hashes_to(&bytes, digest).then_some(bytes))
            }
            _ => Ok(None),
        }
    }

    /// A manifest staged in the partial layout or in the committed archive.
    async fn any_manifest(&self, digest: &Digest) -> Result<Option<RawManifest>, LayoutError> {
        if self.partial.has_manifest(digest).await? {
            return self.partial.reader().manifest(digest).await.map(Some);
        }
        match self.archived_manifest_bytes(digest).await? {
            Some(bytes) => RawManifest::parse_verified(bytes.into(), None, digest)
                .map(Some)
                .map_err(|source| LayoutError::Manifest {
                    location: self.label.clone(),
                    digest: digest.to_string(),
                    source: Box::new(source),
                }),
            None => Ok(None),
        }
    }

    /// What refers to `subject` in the archive and the partial layout.
    async fn referrers_here(&self, subject: &Digest) -> Result<Vec<Referrer>, LayoutError> {
        let mut entries = self.partial.reader().entries().await?.unwrap_or_default();
        if let Some(tar) = self.existing() {
            let reader = LayoutReader::new(Store::Tar(tar), self.format.transport());
            entries.extend(reader.entries().await?.unwrap_or_default());
        }
        crate::referrers::referrers_among(&entries, subject, |digest| async move {
            self.any_manifest(&digest).await
        })
        .await
    }

    /// Whether the committed archive's `manifest.json` lists the image of
    /// manifest `digest` (its config) under `tag`.
    async fn docker_lists(
        &self,
        tar: Arc<TarIndex>,
        digest: &Digest,
        tag: &str,
    ) -> Result<bool, LayoutError> {
        let Some(bytes) = self.archived_manifest_bytes(digest).await? else {
            return Ok(false);
        };
        let Ok(manifest) = RawManifest::parse(bytes.into(), None) else {
            return Ok(false);
        };
        let Some(config) = manifest.blobs().first().map(|d| d.digest().clone()) else {
            return Ok(false);
        };
        let config = blob_rel(&config, "config")?;
        let entries = read_manifest_json(&Store::Tar(tar)).await?;
        Ok(entries.unwrap_or_default().iter().any(|entry| {
            entry.get("Config").and_then(Value::as_str) == Some(config.as_str())
                && entry
                    .get("RepoTags")
                    .and_then(Value::as_array)
                    .is_some_and(|tags| tags.iter().any(|t| t.as_str() == Some(tag)))
        }))
    }

    /// Re-reads `FILE` if another writer replaced it since it was indexed.
    async fn refresh_existing(&self) -> Result<(), LayoutError> {
        let current = match tokio::fs::metadata(&self.target).await {
            Ok(m) => Some(FileIdentity::of(&m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(LayoutError::read(&self.target, e)),
        };
        let known = self.existing().map(|t| t.identity);
        if current != known {
            let fresh = match current {
                Some(_) => Some(open_existing(&self.target, self.format).await?),
                None => None,
            };
            self.set_existing(fresh);
        }
        Ok(())
    }

    /// Writes the archive from the committed one plus the partial layout
    /// (the caller holds the archive's lock exclusively).
    async fn commit(&self) -> Result<(), LayoutError> {
        self.refresh_existing().await?;
        let existing = self.existing();
        let mut blobs: BTreeMap<String, BlobSource> = BTreeMap::new();
        let mut index = empty_index();
        let mut docker_images = None;
        if let Some(tar) = &existing {
            for (name, span) in &tar.files {
                if digest_of_blob_name(name).is_some() {
                    blobs.insert(name.clone(), BlobSource::Archive(*span));
                }
            }
            let reader = LayoutReader::new(Store::Tar(tar.clone()), "oci-archive");
            if let Some(bytes) = reader
                .store
                .read_file("index.json", MAX_INDEX_BYTES)
                .await?
            {
                index = serde_json::from_slice(&bytes).map_err(|e| LayoutError::Malformed {
                    path: tar.path.join("index.json"),
                    reason: format!("not JSON: {e}"),
                })?;
            }
            docker_images = read_manifest_json(&reader.store).await?;
        }
        // Docker's view is written for a docker-archive, and kept in step
        // with index.json in any archive that has one.
        let docker = self.format == Format::Docker || docker_images.is_some();
        let mut added = HashSet::new();
        let partial_blobs = partial_blobs(self.partial.path()).await?;
        let partial_index = self
            .partial
            .reader()
            .store
            .read_file("index.json", MAX_INDEX_BYTES)
            .await?;
        if existing.is_some() && partial_blobs.is_empty() && partial_index.is_none() {
            // Nothing new: the archive is as it was.
            return self.remove_partial().await;
        }
        for (name, path) in partial_blobs {
            blobs.insert(name, BlobSource::File(path));
        }
        if let Some(bytes) = partial_index {
            let partial: Value =
                serde_json::from_slice(&bytes).map_err(|e| LayoutError::Malformed {
                    path: self.partial.path().join("index.json"),
                    reason: format!("not JSON: {e}"),
                })?;
            for mut entry in partial
                .get("manifests")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                if docker {
                    add_containerd_name(&mut entry);
                }
                if let Some(digest) = entry.get("digest").and_then(Value::as_str) {
                    added.insert(digest.to_owned());
                }
                upsert_value(&mut index, entry);
            }
        }
        let index_bytes = serde_json::to_vec(&index).map_err(|e| LayoutError::Malformed {
            path: self.target.clone(),
            reason: e.to_string(),
        })?;
        let manifest_json = if docker {
            let entries = docker_images.unwrap_or_default();
            Some(
                self.docker_manifest(entries, &index, &blobs, existing.as_ref(), &added)
                    .await?,
            )
        } else {
            None
        };
        let tmp = tmp_path(&self.target);
        let target = self.target.clone();
        let (job_tmp, job_target) = (tmp.clone(), target.clone());
        let partial = self.partial.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let metadata = Metadata {
                index: &index_bytes,
                manifest_json: manifest_json.as_deref(),
            };
            write_tar(&job_tmp, &metadata, &blobs, existing.as_deref()).map_err(|e| match e {
                // How much room the archive needs, for the message.
                LayoutError::StorageFull { .. } => {
                    archive_full(&job_target, &partial, Some(tar_size(&metadata, &blobs)))
                }
                other => other,
            })
        })
        .await
        .map_err(|e| LayoutError::Io {
            context: format!("writing {}", tmp.display()),
            source: std::io::Error::other(e),
        })??;
        let mut guard = TempGuard::new(tmp.clone());
        tokio::fs::rename(&tmp, &target)
            .await
            .map_err(|e| LayoutError::write(&target, e))?;
        guard.disarm();
        if let Some(dir) = target.parent() {
            sync_dir(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })
            .await;
        }
        self.set_existing(Some(open_existing(&target, self.format).await?));
        self.remove_partial().await
    }

    /// Docker's `manifest.json` for the merged `index.json`: `entries` (the
    /// committed archive's) with every image manifest of the index upserted
    /// (see the `docker_archive` module docs). An image this commit adds
    /// whose blobs are not all in the archive (a foreign layer left out)
    /// fails the commit; an older one is left out of `manifest.json`.
    async fn docker_manifest(
        &self,
        mut entries: Vec<Value>,
        index: &Value,
        blobs: &BTreeMap<String, BlobSource>,
        existing: Option<&Arc<TarIndex>>,
        added: &HashSet<String>,
    ) -> Result<Vec<u8>, LayoutError> {
        let manifests = index
            .get("manifests")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for entry in manifests {
            let media_type = entry.get("mediaType").and_then(Value::as_str);
            if !matches!(
                media_type,
                Some(media_types::OCI_MANIFEST | media_types::DOCKER_MANIFEST)
            ) {
                continue;
            }
            let Some(digest) = entry
                .get("digest")
                .and_then(Value::as_str)
                .and_then(|d| parse_digest(d).ok())
            else {
                continue;
            };
            let is_new = added.contains(&digest.to_string());
            let name = blob_rel(&digest, "manifest")?;
            let manifest = match blobs.get(&name) {
                Some(source) => {
                    let bytes = read_manifest(source, existing, &digest).await?;
                    RawManifest::parse_verified(bytes.into(), media_type, &digest).ok()
                }
                None => None,
            };
            // The config first, then the layers.
            let names = match &manifest {
                Some(manifest) => manifest
                    .blobs()
                    .iter()
                    .map(|d| blob_rel(d.digest(), "blob"))
                    .collect::<Result<Vec<_>, _>>()?,
                None => Vec::new(),
            };
            let missing = match manifest {
                Some(_) => names.iter().find(|n| !blobs.contains_key(*n)).cloned(),
                None => Some(name),
            };
            if let Some(missing) = missing {
                if is_new {
                    return Err(LayoutError::Refused {
                        path: self.target.clone(),
                        reason: format!(
                            "image {digest} needs {missing}, which is not in the archive (docker \
                             load needs the config and every layer)"
                        ),
                        hint: "if the image has foreign (non-distributable) layers, copy it \
                               again with --include-foreign, or write an oci-archive"
                            .to_owned(),
                    });
                }
                tracing::warn!(
                    "{}: image {digest} lacks {missing}; it is left out of manifest.json",
                    self.label
                );
                continue;
            }
            upsert_image(
                &mut entries,
                &names[0],
                &names[1..],
                entry_repo_tag(entry).as_deref(),
            );
        }
        serde_json::to_vec(&entries).map_err(|e| LayoutError::Malformed {
            path: self.target.clone(),
            reason: e.to_string(),
        })
    }

    /// A full disk, said for the archive: where it is, where its verified
    /// blobs wait and (for a commit) how large the archive is.
    fn full(&self, error: LayoutError) -> LayoutError {
        match error {
            LayoutError::StorageFull { .. } => {
                archive_full(&self.target, self.partial.path(), None)
            }
            other => other,
        }
    }

    async fn remove_partial(&self) -> Result<(), LayoutError> {
        match tokio::fs::remove_dir_all(self.partial.path()).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LayoutError::io("removing", self.partial.path(), e)),
        }
    }
}

/// The bytes of a manifest blob (at most [`MAX_MANIFEST_BYTES`]).
async fn read_manifest(
    source: &BlobSource,
    existing: Option<&Arc<TarIndex>>,
    digest: &Digest,
) -> Result<Vec<u8>, LayoutError> {
    let too_large = |size: u64| LayoutError::ManifestTooLarge {
        location: "the archive".to_owned(),
        digest: digest.to_string(),
        size,
        limit: MAX_MANIFEST_BYTES,
    };
    match source {
        BlobSource::File(path) => {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| LayoutError::read(path, e))?;
            if bytes.len() > MAX_MANIFEST_BYTES {
                return Err(too_large(bytes.len() as u64));
            }
            Ok(bytes)
        }
        BlobSource::Archive(span) => {
            if span.size > MAX_MANIFEST_BYTES as u64 {
                return Err(too_large(span.size));
            }
            match existing {
                Some(tar) => tar.read(*span).await,
                None => Ok(Vec::new()),
            }
        }
    }
}

async fn open_existing(path: &Path, format: Format) -> Result<Arc<TarIndex>, LayoutError> {
    let transport = format.transport();
    let refuse = |reason: String| LayoutError::Refused {
        path: path.to_owned(),
        reason,
        hint: "move it away or write to another file".to_owned(),
    };
    let tar = index_tar(path)
        .await
        .map_err(|e| refuse(format!("exists and is not a readable {transport}: {e}")))?;
    let reader = LayoutReader::new(Store::Tar(tar.clone()), transport);
    if !reader.has_layout_file().await? {
        return Err(refuse(match format {
            Format::Oci => "exists and is not an oci-archive (no oci-layout entry)".to_owned(),
            Format::Docker => "exists and holds no OCI layout to add images to (no oci-layout \
                               entry: a docker save from before Docker 25?)"
                .to_owned(),
        }));
    }
    Ok(tar)
}

#[async_trait]
impl Destination for OciArchiveWriter {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            single_platform: self.format == Format::Docker,
            without_referrers: self.format == Format::Docker,
            ..Capabilities::default()
        }
    }

    async fn ensure_repository(&self) -> Result<(), EndpointError> {
        let staged = async {
            let _held = lock(&self.target, Mode::Shared).await?;
            self.partial.ensure_layout().await
        };
        Ok(staged.await.map_err(|e| self.full(e))?)
    }

    /// Tags are looked up in the committed archive only: a tag recorded in
    /// the partial layout by a copy whose commit failed must be copied (and
    /// committed) again.
    ///
    /// Lookups take no lock across processes: another process's commit only
    /// ever moves what the partial layout holds into an archive that keeps
    /// every blob of the one it replaces, which this writer's commit re-reads
    /// (a lookup may miss and copy again, never find what is gone).
    async fn manifest_digest(&self, reference: &str) -> Result<Option<Digest>, EndpointError> {
        let gate = path_lock(&self.target);
        let _open = gate.read().await;
        if let Some(digest) = reference_digest(reference)? {
            let present = self.partial.has_manifest(&digest).await?
                || self.archived_manifest(&digest).await?;
            return Ok(present.then_some(digest));
        }
        if reference.is_empty() {
            return Ok(None);
        }
        let Some(tar) = self.existing() else {
            return Ok(None);
        };
        let name = self.entry_name(reference)?;
        let reader = LayoutReader::new(Store::Tar(tar.clone()), self.format.transport());
        let entries = reader.entries().await?.unwrap_or_default();
        let Some(entry) = entries.iter().find(|d| ref_name(d) == Some(&*name)) else {
            return Ok(None);
        };
        let digest = entry.digest().clone();
        if self.format == Format::Docker {
            // Up to date only if Docker's manifest.json lists it too.
            return Ok(self
                .docker_lists(tar, &digest, &name)
                .await?
                .then_some(digest));
        }
        Ok(self.archived_manifest(&digest).await?.then_some(digest))
    }

    async fn blob_exists(&self, descriptor: &Descriptor) -> Result<bool, EndpointError> {
        let gate = path_lock(&self.target);
        let _open = gate.read().await;
        if self.partial.has_blob(descriptor).await? {
            return Ok(true);
        }
        let Some(tar) = self.existing() else {
            return Ok(false);
        };
        let rel = blob_rel(descriptor.digest(), "blob")?;
        Ok(tar
            .files
            .get(&rel)
            .is_some_and(|span| span.size == descriptor.size()))
    }

    async fn put_blob(
        &self,
        descriptor: &Descriptor,
        body: BlobStream,
        _slot: Option<UploadSlot>,
    ) -> Result<(), EndpointError> {
        let staged = async {
            let _held = lock(&self.target, Mode::Shared).await?;
            // A commit by another copy may have removed the partial layout.
            self.partial.ensure_layout().await?;
            self.partial.write_blob(descriptor, body).await
        };
        Ok(staged.await.map_err(|e| self.full(e))?)
    }

    async fn put_manifest(
        &self,
        reference: &str,
        manifest: &RawManifest,
    ) -> Result<(), EndpointError> {
        let name = self.entry_name(reference)?;
        let target = target(&name, manifest)?;
        let staged = async {
            let _held = lock(&self.target, Mode::Shared).await?;
            self.partial.ensure_layout().await?;
            self.partial.store_manifest(manifest, target).await
        };
        Ok(staged.await.map_err(|e| self.full(e))?)
    }

    async fn listed_referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>, EndpointError> {
        let gate = path_lock(&self.target);
        let _open = gate.read().await;
        Ok(crate::referrers::listed(
            self.referrers_here(subject).await?,
        ))
    }

    async fn put_referrer(
        &self,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<bool, EndpointError> {
        let staged = async {
            let _held = lock(&self.target, Mode::Shared).await?;
            self.partial.ensure_layout().await?;
            self.partial.store_referrer(manifest, tag).await
        };
        staged.await.map_err(|e| self.full(e))?;
        Ok(true)
    }

    async fn stored_manifest(&self, digest: &Digest) -> Result<Option<RawManifest>, EndpointError> {
        let gate = path_lock(&self.target);
        let _open = gate.read().await;
        Ok(self.any_manifest(digest).await?)
    }

    async fn finish(&self) -> Result<(), EndpointError> {
        let committed = async {
            let _held = lock(&self.target, Mode::Exclusive).await?;
            self.commit().await
        };
        Ok(committed.await.map_err(|e| self.full(e))?)
    }
}
