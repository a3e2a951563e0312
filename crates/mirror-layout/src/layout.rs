//! An OCI image layout directory as a copy source and destination.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::StreamExt as _;
use mirror_engine::{Destination, EndpointError, Resolved, UploadSlot};
use mirror_oci::{BlobStream, Descriptor, Digest, Hasher, MAX_MANIFEST_BYTES, RawManifest};

use crate::error::LayoutError;
use crate::fsutil::{
    TempGuard, blob_rel, create_temp, reference_digest, refuse_link, remove_stale_temps, sync_dir,
    temp_name, write_atomic, write_chunks,
};
use crate::index::{MAX_INDEX_BYTES, OCI_LAYOUT_FILE, empty_index, ref_name, upsert};
use crate::lock::{Held, Mode, hold};
use crate::reader::LayoutReader;
use crate::store::Store;
use crate::transport::validate_tag;

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`).
///
/// As a [`Source`], a reference is a tag (matched against the
/// `org.opencontainers.image.ref.name` annotation of `index.json` entries),
/// `""` for the only image, `@N` for the Nth entry, or a digest.
///
/// As a [`Destination`], blobs are written to `blobs/<alg>/.tmp-*` beside
/// their final name, fsynced and renamed into place only when the (verifying)
/// stream completed, so an interrupted copy leaves only complete, verified
/// blobs, which a re-run skips. Manifests are written by digest; the root,
/// pushed last by the engine, is then recorded in `index.json` under its tag
/// (`""`: an entry without a name), replacing the entry of the same name and
/// keeping every other: one layout holds many images. `index.json` and
/// `oci-layout` are replaced atomically.
///
/// Manifests are stored byte for byte, Docker v2 media types included (a
/// layout then holds the registry's digests). containers/image (skopeo 1.9)
/// only looks at `index.json` entries of OCI media types, so it does not see
/// such an image by tag; mirror does.
///
/// Concurrent copies into one layout are safe, from one process or several:
/// blobs are written side by side (content-addressed, temp file and rename),
/// while creating the layout and each `index.json` update (read, merge,
/// replace) hold the layout's lock, in this process and across processes
/// (an advisory `flock` on `.mirror.lock` inside the layout).
#[derive(Debug, Clone)]
pub struct OciLayout {
    root: PathBuf,
    reader: LayoutReader,
    /// A directory of mirror's own (an archive's `FILE.partial/`), where a
    /// symbolic link can only have been planted: the directory and its
    /// `blobs/` directories must not be links.
    work: bool,
}

/// The lock file of a layout writer, inside the layout directory.
///
/// Inside rather than beside it (`DIR.lock`): writing a layout needs write
/// access to the directory only, not to its parent; the lock goes wherever
/// the directory is moved or mounted (and follows symlinks to it); and nothing
/// appears beside a directory the user named. OCI readers (skopeo,
/// containers/image, umoci, mirror itself) only open `oci-layout`,
/// `index.json` and `blobs/`, and the file exists only while a writer holds
/// it: the last holder removes it.
pub(crate) const LOCK_FILE: &str = ".mirror.lock";

impl OciLayout {
    /// Opens an existing layout for reading (it must have an `oci-layout` file
    /// of version 1.x).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, LayoutError> {
        let layout = Self::at(path.as_ref());
        match tokio::fs::metadata(&layout.root).await {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(not_a_directory(&layout.root)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LayoutError::NotALayout { path: layout.root });
            }
            Err(e) => return Err(LayoutError::read(&layout.root, e)),
        }
        layout.reader.check_layout().await?;
        Ok(layout)
    }

    /// Opens a layout to write to: a directory that does not exist yet (it is
    /// created when the copy starts), an empty one, or an existing layout,
    /// whose stale temporary files (from an interrupted copy) are removed.
    /// A non-empty directory that is not a layout is refused.
    pub async fn create(path: impl AsRef<Path>) -> Result<Self, LayoutError> {
        let layout = Self::at(path.as_ref());
        match tokio::fs::metadata(&layout.root).await {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(not_a_directory(&layout.root)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(layout),
            Err(e) => return Err(LayoutError::read(&layout.root, e)),
        }
        if layout.reader.has_layout_file().await? {
            layout.remove_stale_temps().await;
            return Ok(layout);
        }
        let Some(ours) = layout.only_our_files().await? else {
            if layout.reader.has_layout_file().await? {
                // Another writer finished creating it meanwhile.
                layout.remove_stale_temps().await;
                return Ok(layout);
            }
            return Err(LayoutError::Refused {
                path: layout.root.clone(),
                reason: "exists, is not empty and is not an OCI layout (no oci-layout file)"
                    .to_owned(),
                hint: "write to a new or empty directory, or to an existing layout".to_owned(),
            });
        };
        if ours == 0 {
            return Ok(layout);
        }
        // A layout another writer is creating (it holds the lock until
        // `oci-layout` is written) or did not finish creating.
        let _held = layout.lock().await?;
        if layout.reader.has_layout_file().await? {
            layout.remove_stale_temps().await;
        }
        Ok(layout)
    }

    /// How many entries the directory holds if they are all what a writer
    /// creating a layout writes before `oci-layout` (the lock file, `blobs/`,
    /// temporary files); `None` if it holds anything else.
    async fn only_our_files(&self) -> Result<Option<usize>, LayoutError> {
        let mut count = 0;
        let mut entries = tokio::fs::read_dir(&self.root)
            .await
            .map_err(|e| LayoutError::read(&self.root, e))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| LayoutError::read(&self.root, e))?
        {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name == LOCK_FILE || name == "blobs" || name.starts_with(".tmp-")) {
                return Ok(None);
            }
            count += 1;
        }
        Ok(Some(count))
    }

    /// The layout's write lock, in this process and across processes (see
    /// `.mirror.lock`); creates the directory.
    async fn lock(&self) -> Result<Held, LayoutError> {
        hold(
            &self.root,
            &self.root.join(LOCK_FILE),
            Mode::Exclusive,
            &self.root,
        )
        .await
    }

    /// Opens an archive's work directory (`FILE.partial/`) as
    /// [`Self::create`] does, refusing one that is, or holds, a symbolic link
    /// to a directory (written through, it would put blobs elsewhere).
    pub(crate) async fn create_work_dir(path: &Path) -> Result<Self, LayoutError> {
        let mut layout = Self::at(path);
        layout.work = true;
        layout.refuse_links(None).await?;
        let created = Self::create(path).await?;
        Ok(Self {
            work: true,
            ..created
        })
    }

    /// In a work directory, refuses a symbolic link as the directory itself,
    /// `blobs/`, `blobs/sha256`, `blobs/sha512` or `dir` (a no-op elsewhere).
    async fn refuse_links(&self, dir: Option<&Path>) -> Result<(), LayoutError> {
        if !self.work {
            return Ok(());
        }
        let blobs = self.root.join("blobs");
        let what = "an archive's work directory";
        for path in [
            self.root.clone(),
            blobs.join("sha256"),
            blobs.join("sha512"),
            blobs,
        ]
        .iter()
        .map(PathBuf::as_path)
        .chain(dir)
        {
            refuse_link(path, what).await?;
        }
        Ok(())
    }

    fn at(path: &Path) -> Self {
        let root = path.to_owned();
        Self {
            reader: LayoutReader::new(Store::Dir(root.clone()), "oci"),
            root,
            work: false,
        }
    }

    /// The layout directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Every `index.json` entry with its ref name (`None`: unnamed).
    pub async fn list(&self) -> Result<Vec<(Option<String>, Descriptor)>, LayoutError> {
        self.reader.list().await
    }

    /// What a reference resolves to (see the type docs for the forms).
    pub async fn find(&self, reference: &str) -> Result<Resolved, LayoutError> {
        self.reader.find(reference).await
    }

    async fn remove_stale_temps(&self) {
        remove_stale_temps(&self.root).await;
        for algorithm in ["sha256", "sha512"] {
            remove_stale_temps(&self.root.join("blobs").join(algorithm)).await;
        }
    }

    fn blob_path(&self, digest: &Digest) -> Result<PathBuf, LayoutError> {
        Ok(self.root.join(blob_rel(digest, "blob")?))
    }

    /// Creates the directory, `blobs/sha256` and `oci-layout` (if missing),
    /// holding the lock while `oci-layout` is missing.
    pub(crate) async fn ensure_layout(&self) -> Result<(), LayoutError> {
        if self.reader.has_layout_file().await? {
            return self.create_files().await;
        }
        let _held = self.lock().await?;
        self.create_files().await
    }

    /// [`Self::ensure_layout`] for a caller holding the lock.
    async fn create_files(&self) -> Result<(), LayoutError> {
        self.refuse_links(None).await?;
        let blobs = self.root.join("blobs").join("sha256");
        tokio::fs::create_dir_all(&blobs)
            .await
            .map_err(|e| LayoutError::io("creating", &blobs, e))?;
        if !self.reader.has_layout_file().await? {
            write_atomic(&self.root.join("oci-layout"), OCI_LAYOUT_FILE).await?;
        }
        Ok(())
    }

    /// Whether a blob is stored with the descriptor's size (trusted: it was
    /// verified when written, and is verified again when copied out).
    pub(crate) async fn has_blob(&self, descriptor: &Descriptor) -> Result<bool, LayoutError> {
        Ok(self.reader.store.blob_len(descriptor.digest()).await? == Some(descriptor.size()))
    }

    /// Whether a manifest is stored and hashes to its digest.
    pub(crate) async fn has_manifest(&self, digest: &Digest) -> Result<bool, LayoutError> {
        match self.reader.store.blob_len(digest).await? {
            Some(size) if size <= MAX_MANIFEST_BYTES as u64 => {}
            _ => return Ok(false),
        }
        let Some(bytes) = self.reader.store.read_blob(digest).await? else {
            return Ok(false);
        };
        Ok(hashes_to(&bytes, digest))
    }

    /// The digest `index.json` records for a tag, if its manifest is stored.
    pub(crate) async fn tagged(&self, tag: &str) -> Result<Option<Digest>, LayoutError> {
        let Some(entries) = self.reader.entries().await? else {
            return Ok(None);
        };
        let Some(entry) = entries.iter().find(|d| ref_name(d) == Some(tag)) else {
            return Ok(None);
        };
        Ok(self
            .has_manifest(entry.digest())
            .await?
            .then(|| entry.digest().clone()))
    }

    /// Streams a blob into place: temp file, fsync, rename; nothing is left
    /// behind if the stream fails or the future is dropped.
    pub(crate) async fn write_blob(
        &self,
        descriptor: &Descriptor,
        mut body: BlobStream,
    ) -> Result<(), LayoutError> {
        let digest = descriptor.digest();
        let target = self.blob_path(digest)?;
        let dir = target.parent().unwrap_or(&self.root).to_owned();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| LayoutError::io("creating", &dir, e))?;
        self.refuse_links(Some(&dir)).await?;
        let tmp = dir.join(temp_name(digest.digest()));
        let mut guard = TempGuard::new(tmp.clone());
        let mut file = create_temp(&tmp)?;
        // Chunks go to the file in batches of WRITE_BUFFER bytes, one
        // blocking-pool hop per batch.
        let mut batch = Vec::new();
        let mut batched = 0;
        let mut written: u64 = 0;
        while let Some(chunk) = body.next().await {
            // A failed stream (a digest mismatch fails in place of the last
            // chunk) drops the guard: the temp file goes, nothing is renamed.
            let chunk = chunk.map_err(|e| LayoutError::Endpoint(e.into()))?;
            written += chunk.len() as u64;
            batched += chunk.len();
            batch.push(chunk);
            if batched >= crate::fsutil::WRITE_BUFFER {
                file = write_chunks(file, std::mem::take(&mut batch), &tmp).await?;
                batched = 0;
            }
        }
        if written != descriptor.size() {
            return Err(LayoutError::Endpoint(EndpointError::Stream(
                mirror_oci::StreamError::Truncated {
                    digest: descriptor.digest().clone(),
                    received: written,
                    expected: descriptor.size(),
                },
            )));
        }
        let file = write_chunks(file, batch, &tmp).await?;
        tokio::fs::File::from_std(file)
            .sync_all()
            .await
            .map_err(|e| LayoutError::write(&tmp, e))?;
        tokio::fs::rename(&tmp, &target)
            .await
            .map_err(|e| LayoutError::write(&target, e))?;
        guard.disarm();
        Ok(())
    }

    /// Writes a manifest's bytes by digest (unless stored already).
    pub(crate) async fn write_manifest_blob(
        &self,
        manifest: &RawManifest,
    ) -> Result<(), LayoutError> {
        let target = self.blob_path(manifest.digest())?;
        if self.has_manifest(manifest.digest()).await? {
            return Ok(());
        }
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| LayoutError::io("creating", dir, e))?;
            self.refuse_links(Some(dir)).await?;
        }
        write_atomic(&target, manifest.bytes()).await
    }

    /// Records `descriptor` in `index.json` under `tag` (`None`: unnamed):
    /// under the lock, `index.json` as it is now (another process may just
    /// have replaced it) gains the entry and replaces it.
    pub(crate) async fn record(
        &self,
        descriptor: &Descriptor,
        tag: Option<&str>,
    ) -> Result<(), LayoutError> {
        self.update_index(|index| upsert(index, descriptor, tag))
            .await
    }

    /// Changes `index.json` under the lock: as it is now (another process
    /// may just have replaced it), changed, replaced atomically.
    pub(crate) async fn update_index(
        &self,
        change: impl FnOnce(&mut serde_json::Value),
    ) -> Result<(), LayoutError> {
        let _held = self.lock().await?;
        self.create_files().await?;
        let mut index = match self
            .reader
            .store
            .read_file("index.json", MAX_INDEX_BYTES)
            .await?
        {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| LayoutError::Malformed {
                path: self.root.join("index.json"),
                reason: format!("not JSON: {e}"),
            })?,
            None => empty_index(),
        };
        change(&mut index);
        let bytes = serde_json::to_vec(&index).map_err(|e| LayoutError::Malformed {
            path: self.root.join("index.json"),
            reason: e.to_string(),
        })?;
        write_atomic(&self.root.join("index.json"), &bytes).await
    }

    /// Writes a manifest's bytes and records it as `target` says: the
    /// destination's `put_manifest`, also for an archive's partial layout.
    pub(crate) async fn store_manifest(
        &self,
        manifest: &RawManifest,
        target: Target<'_>,
    ) -> Result<(), LayoutError> {
        self.write_manifest_blob(manifest).await?;
        if let Target::Entry(tag) = target {
            self.record(&manifest.descriptor(), tag).await?;
        }
        Ok(())
    }

    /// Writes a referrer's bytes and lists it in `index.json`: named `tag`
    /// (cosign's tags), else as an unnamed entry with its artifact type. The
    /// destination's `put_referrer`, also for an archive's partial layout.
    pub(crate) async fn store_referrer(
        &self,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<(), LayoutError> {
        self.write_manifest_blob(manifest).await?;
        match tag {
            Some(tag) => {
                validate_tag(tag)?;
                self.record(&manifest.descriptor(), Some(tag)).await
            }
            None => {
                let entry = crate::referrers::referrer_entry(manifest)?;
                self.update_index(|index| crate::index::upsert_value(index, entry))
                    .await
            }
        }
    }

    pub(crate) fn reader(&self) -> &LayoutReader {
        &self.reader
    }
}

fn not_a_directory(path: &Path) -> LayoutError {
    LayoutError::Refused {
        path: path.to_owned(),
        reason: "is not a directory".to_owned(),
        hint: "oci:PATH names a layout directory; use oci-archive:FILE for a tar".to_owned(),
    }
}

pub(crate) fn hashes_to(bytes: &[u8], digest: &Digest) -> bool {
    match Hasher::for_digest(digest) {
        Some(mut hasher) => {
            hasher.update(bytes);
            &hasher.finish() == digest
        }
        None => false,
    }
}

/// How a destination reference is recorded: by digest only, or in index.json.
pub(crate) enum Target<'a> {
    Digest,
    Entry(Option<&'a str>),
}

/// Classifies a destination reference: a digest (which must be the
/// manifest's), `""` (an unnamed index.json entry) or a tag (validated).
pub(crate) fn target<'a>(
    reference: &'a str,
    manifest: &RawManifest,
) -> Result<Target<'a>, LayoutError> {
    if let Some(digest) = reference_digest(reference)? {
        if &digest != manifest.digest() {
            return Err(LayoutError::InvalidDigest {
                digest: reference.to_owned(),
                context: format!("pushing manifest {} by another digest", manifest.digest()),
            });
        }
        return Ok(Target::Digest);
    }
    if reference.is_empty() {
        return Ok(Target::Entry(None));
    }
    validate_tag(reference)?;
    Ok(Target::Entry(Some(reference)))
}

crate::reader::source_through_reader!(OciLayout);

#[async_trait]
impl Destination for OciLayout {
    fn name(&self) -> String {
        self.reader.label.clone()
    }

    async fn ensure_repository(&self) -> Result<(), EndpointError> {
        Ok(self.ensure_layout().await?)
    }

    async fn manifest_digest(&self, reference: &str) -> Result<Option<Digest>, EndpointError> {
        if let Some(digest) = reference_digest(reference)? {
            return Ok(self.has_manifest(&digest).await?.then_some(digest));
        }
        if reference.is_empty() {
            // An unnamed entry cannot be told apart from others: copy (every
            // blob and manifest present is skipped).
            return Ok(None);
        }
        Ok(self.tagged(reference).await?)
    }

    async fn blob_exists(&self, descriptor: &Descriptor) -> Result<bool, EndpointError> {
        Ok(self.has_blob(descriptor).await?)
    }

    async fn put_blob(
        &self,
        descriptor: &Descriptor,
        body: BlobStream,
        _slot: Option<UploadSlot>,
    ) -> Result<(), EndpointError> {
        Ok(self.write_blob(descriptor, body).await?)
    }

    async fn put_manifest(
        &self,
        reference: &str,
        manifest: &RawManifest,
    ) -> Result<(), EndpointError> {
        let target = target(reference, manifest)?;
        Ok(self.store_manifest(manifest, target).await?)
    }

    async fn listed_referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>, EndpointError> {
        Ok(crate::referrers::listed(
            self.reader.referrers(subject).await?,
        ))
    }

    async fn put_referrer(
        &self,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<bool, EndpointError> {
        self.store_referrer(manifest, tag).await?;
        Ok(true)
    }

    async fn stored_manifest(&self, digest: &Digest) -> Result<Option<RawManifest>, EndpointError> {
        if !self.has_manifest(digest).await? {
            return Ok(None);
        }
        Ok(Some(self.reader.manifest(digest).await?))
    }

    async fn finish(&self) -> Result<(), EndpointError> {
        for dir in [
            self.root.join("blobs/sha256"),
            self.root.join("blobs/sha512"),
        ] {
            if tokio::fs::metadata(&dir).await.is_ok() {
                sync_dir(&dir).await;
            }
        }
        sync_dir(&self.root).await;
        Ok(())
    }
}
