//! OCI image layouts and archives as copy sources and destinations for
//! `mirror-engine`: local images and air-gapped sync with the same guarantees
//! as registry copies (blobs verified in flight, existing content skipped,
//! shared blobs stored once, children before parents, the root last).
//!
//! - [`FileLocation`]: skopeo's syntax for local images (`oci:DIR[:TAG]`,
//!   `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:REF]`).
//! - [`OciLayout`]: a layout directory, [`Source`] and [`Destination`].
//! - [`OciArchive`] (source) and [`OciArchiveWriter`] (destination): a tar of
//!   a layout, read in place by offset and written through `FILE.partial/`.
//! - [`DockerArchive`] (source): `docker save` output, read with a computed
//!   Docker v2 schema 2 manifest; [`OciArchiveWriter::create_docker`]
//!   (destination) writes what `docker save` writes since Docker 25 (the
//!   layout plus Docker's `manifest.json`), one platform per image. Written,
//!   it keeps every digest for readers of the OCI part; `docker load` (classic
//!   image store) and docker-archive readers keep the config (image ID) and
//!   layers, not the registry manifest digest ([`saved_image`] says what
//!   Docker sees).
//! - Referrers (signatures, SBOMs, attestations) are kept in `index.json`,
//!   unnamed and with their artifact type; cosign's tags as named entries.
//! - [`list`]: every named image of a local location, for `mirror inspect`.
//!
//! References handed to the engine for these endpoints are
//! [`FileLocation::reference`]: the tag, or `""` for "the only image" (source) and
//! "an unnamed `index.json` entry" (destination). A digest names a manifest by
//! digest only (a destination records no `index.json` entry for it).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use mirror_engine::{CopyOptions, CopyRequest, Engine};
//! use mirror_layout::{FileLocation, open_destination, open_source};
//!
//! let from = FileLocation::parse("oci:/srv/images:app-1.0")?.expect("a file location");
//! let to = FileLocation::parse("oci-archive:/media/usb/app.tar:app-1.0")?.expect("a file location");
//! let request = CopyRequest {
//!     source: open_source(&from).await?,
//!     source_reference: from.reference(),
//!     destination: open_destination(&to).await?,
//!     destination_reference: to.reference(),
//!     source_label: from.to_string(),
//!     destination_label: to.to_string(),
//!     options: CopyOptions::default(),
//! };
//! Engine::default().copy(request).await?;
//! # Ok(()) }
//! ```

mod archive;
mod docker_archive;
mod error;
mod fsutil;
mod index;
mod layout;
mod lock;
mod reader;
mod referrers;
mod store;
mod transport;

use std::sync::Arc;

use mirror_engine::{Destination, Source};
use mirror_oci::Descriptor;

pub use archive::{OciArchive, OciArchiveWriter};
pub use docker_archive::{
    DOCKER_LAYER_TAR, DockerArchive, SavedImage, repo_tag, repo_tag_of, saved_image,
};
pub use error::{LayoutError, is_storage_full};
pub use index::REF_NAME;
pub use layout::OciLayout;
pub use transport::{FileLocation, is_valid_ref_name, validate_tag};

/// Every image of a local location with its ref name (`None`: unnamed), in
/// `index.json` order (docker-archive: `manifest.json` order, one row per tag,
/// descriptors of the computed manifests).
pub async fn list(
    location: &FileLocation,
) -> Result<Vec<(Option<String>, Descriptor)>, LayoutError> {
    match location {
        FileLocation::OciDir { path, .. } => OciLayout::open(path).await?.list().await,
        FileLocation::OciArchive { path, .. } => OciArchive::open(path).await?.list().await,
        FileLocation::DockerArchive { path, .. } => DockerArchive::open(path).await?.list().await,
    }
}

/// Opens a local location to read from.
pub async fn open_source(location: &FileLocation) -> Result<Arc<dyn Source>, LayoutError> {
    Ok(match location {
        FileLocation::OciDir { path, .. } => Arc::new(OciLayout::open(path).await?),
        FileLocation::OciArchive { path, .. } => Arc::new(OciArchive::open(path).await?),
        FileLocation::DockerArchive { path, .. } => Arc::new(DockerArchive::open(path).await?),
    })
}

/// Opens a local location to write to. A docker-archive reference must name
/// the image (`NAME:TAG`, see [`repo_tag`]; `@N` only selects one to read).
pub async fn open_destination(
    location: &FileLocation,
) -> Result<Arc<dyn Destination>, LayoutError> {
    Ok(match location {
        FileLocation::OciDir { path, .. } => Arc::new(OciLayout::create(path).await?),
        FileLocation::OciArchive { path, .. } => Arc::new(OciArchiveWriter::create(path).await?),
        FileLocation::DockerArchive { path, reference } => {
            if let Some(reference) = reference {
                repo_tag(reference)?;
            }
            Arc::new(OciArchiveWriter::create_docker(path).await?)
        }
    })
}
