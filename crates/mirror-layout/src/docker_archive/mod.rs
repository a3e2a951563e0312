//! `docker-archive`: the tar `docker save` writes, read and written.
//!
//! # Reading
//!
//! A docker-archive holds image configs and layer tars listed by
//! `manifest.json` (`Config`, `RepoTags`, `Layers`). Since Docker 25 (and
//! from mirror's writer) it is also an OCI image layout whose blobs those
//! entries name (`blobs/sha256/<hex>`): when an image manifest of that layout
//! has exactly the entry's config and layers, in order, that manifest is the
//! image, byte for byte (its digest verified), so the registry digest
//! survives `docker save` and nothing is read ahead of the copy.
//!
//! Otherwise (`docker save` before 25, other writers) there is no registry
//! manifest, and this reader *computes* one: the config digest is the sha256
//! of the config file, each layer's digest the sha256 of its file, with its
//! media type from the file's first bytes: gzip magic
//! `application/vnd.docker.image.rootfs.diff.tar.gzip`, zstd magic
//! `application/vnd.oci.image.layer.v1.tar+zstd` (which makes the manifest an
//! OCI one, as Docker's schema 2 has no zstd layer type), else
//! `...diff.tar` (uncompressed, as `docker save` writes them). The manifest's
//! digest is the sha256 of those computed bytes: stable for a given archive,
//! but not the digest the image had in any registry (there is none to
//! preserve). Computing it reads every layer of the image once.
//!
//! # Writing
//!
//! [`OciArchiveWriter::create_docker`](crate::OciArchiveWriter::create_docker)
//! writes what `docker save` writes since Docker 25: an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/...`, every manifest byte for
//! byte) plus Docker's `manifest.json`, one entry per image manifest of
//! `index.json` whose `Config` and `Layers` name the layout's blobs (layers as
//! they are, compressed: `docker load` decompresses them, and the config's
//! `diff_ids` are unaffected). So the archive keeps every digest for readers
//! of the OCI part (`oci-archive:FILE`, and `docker load` with the containerd
//! image store), while readers of `manifest.json` (`docker load` with the
//! classic store, `docker-archive:` readers) see the config and layers only:
//! the image ID (the config digest) is kept, the registry manifest digest is
//! not. Docker's legacy `repositories` file and `<id>/layer.tar` links are not
//! written: `docker load` reads `manifest.json` whenever there is one.
//!
//! A `manifest.json` entry holds one config and its layers, so only image
//! manifests go in (the destination asks the engine for one platform, see
//! [`Capabilities::single_platform`](mirror_engine::Capabilities)); an index
//! entry of `index.json` is left out of `manifest.json`. `RepoTags` come from
//! the entry's names: containerd's `io.containerd.image.name`, else an
//! `org.opencontainers.image.ref.name` of the form `NAME:TAG`, in Docker's
//! familiar form (`python:3.10`); an entry named otherwise (`v1`) or not at
//! all is listed untagged (`"RepoTags": null`, loaded as an untagged image).
//! The `manifest.json` of an existing archive is kept and merged like
//! `index.json`: a tag written again moves to the new image, and an entry left
//! without tags by that goes.

mod manifest_json;
mod names;
mod source;

pub use manifest_json::{SavedImage, saved_image};
pub(crate) use manifest_json::{read_manifest_json, upsert_image};
pub(crate) use names::{add_containerd_name, entry_repo_tag};
pub use names::{repo_tag, repo_tag_of};
pub use source::{DOCKER_LAYER_TAR, DockerArchive};
