//! `oci-archive`: a tar of an OCI image layout, read in place and written
//! through a partial layout directory beside it; with Docker's
//! `manifest.json` added, the `docker-archive` `docker save` writes.

use std::path::Path;
use std::sync::Arc;

use mirror_engine::Resolved;
use mirror_oci::Descriptor;

use crate::error::LayoutError;
use crate::reader::LayoutReader;
use crate::store::{Store, TarIndex};

mod files;
mod tarball;
mod writer;

pub use writer::OciArchiveWriter;

/// Indexes a tar off the async threads.
pub(crate) async fn index_tar(path: &Path) -> Result<Arc<TarIndex>, LayoutError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || TarIndex::open(&owned))
        .await
        .map_err(|e| LayoutError::Io {
            context: format!("indexing {}", path.display()),
            source: std::io::Error::other(e),
        })?
        .map(Arc::new)
}

/// An `oci-archive` file as a copy source: indexed once, blobs streamed from
/// their offsets, nothing extracted. Entries that could not come from an OCI
/// tool are refused when it is opened: absolute names, `..` components, links
/// or non-regular files in `blobs/` (or as `oci-layout`/`index.json`), and
/// files in `blobs/` whose names are not valid digests. Links elsewhere (as
/// `docker save` of Docker 25+ writes for its legacy layer paths) are ignored:
/// they are never followed.
#[derive(Debug, Clone)]
pub struct OciArchive {
    reader: LayoutReader,
}

impl OciArchive {
    /// Opens and indexes an archive; it must hold an `oci-layout` file.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, LayoutError> {
        let tar = index_tar(path.as_ref()).await?;
        let reader = LayoutReader::new(Store::Tar(tar), "oci-archive");
        reader.check_layout().await?;
        Ok(Self { reader })
    }

    /// The archive file.
    pub fn path(&self) -> &Path {
        self.reader.store.path()
    }

    /// Every `index.json` entry with its ref name (`None`: unnamed).
    pub async fn list(&self) -> Result<Vec<(Option<String>, Descriptor)>, LayoutError> {
        self.reader.list().await
    }

    /// What a reference resolves to (tag, `""`, `@N` or digest).
    pub async fn find(&self, reference: &str) -> Result<Resolved, LayoutError> {
        self.reader.find(reference).await
    }

    /// Whether the archive holds this blob, at the descriptor's size (an
    /// air-gap delta leaves out the blobs the far side already holds).
    pub async fn has_blob(&self, descriptor: &Descriptor) -> Result<bool, LayoutError> {
        Ok(self.reader.store.blob_len(descriptor.digest()).await? == Some(descriptor.size()))
    }

    pub(crate) fn reader(&self) -> &LayoutReader {
        &self.reader
    }
}

crate::reader::source_through_reader!(OciArchive);
