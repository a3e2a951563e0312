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

use std::collections::{HashMap, HashSet};
use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use mirror_engine::{EndpointError, Resolved, Source};
use mirror_oci::{BlobStream, Descriptor, Digest, Hasher, RawManifest, Reference, media_types};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::archive::{OciArchive, index_tar};
use crate::error::LayoutError;
use crate::fsutil::{blob_rel, digest_of_blob_name};
use crate::index::CONTAINERD_NAME;
use crate::reader::LayoutReader;
use crate::store::{Span, Store, TarIndex};

/// Docker's media type of an uncompressed layer tar.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// What a layer file is, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }

    /// The layer media type in a Docker (`oci` false) or OCI manifest.
    fn media_type(self, oci: bool) -> &'static str {
        match (self, oci) {
            (Self::Gzip, false) => media_types::DOCKER_LAYER_GZIP,
            (Self::Gzip, true) => media_types::OCI_LAYER_GZIP,
            (Self::Zstd, _) => OCI_LAYER_ZSTD,
            (Self::None, false) => DOCKER_LAYER_TAR,
            (Self::None, true) => OCI_LAYER_TAR,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestJson<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: DescriptorJson<'a>,
    layers: Vec<DescriptorJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorJson<'a> {
    media_type: &'a str,
    size: u64,
    digest: String,
}

/// One image of the archive with its manifest (stored or computed).
#[derive(Debug)]
struct Built {
    manifest: RawManifest,
    blobs: HashMap<Digest, Span>,
}

/// A `docker save` archive as a read-only copy source (see the module docs:
/// the OCI manifest it stores, else one computed). A reference is a `RepoTags` entry
/// (`busybox:latest`, matched after Docker's normalisation), `@N` for the Nth
/// image of `manifest.json`, or `""` for the only one.
#[derive(Debug)]
pub struct DockerArchive {
    tar: Arc<TarIndex>,
    label: String,
    images: Vec<ManifestEntry>,
    /// The OCI layout in the archive (Docker 25+), if it has one.
    layout: Option<LayoutReader>,
    /// Its image manifests, read on first use.
    stored: tokio::sync::OnceCell<Vec<RawManifest>>,
    built: tokio::sync::Mutex<HashMap<usize, Arc<Built>>>,
}

impl DockerArchive {
    /// Opens and indexes an archive and reads its `manifest.json`.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, LayoutError> {
        let path = path.as_ref();
        let tar = index_tar(path).await?;
        let not_docker = |reason: String| LayoutError::Malformed {
            path: path.to_owned(),
            reason: format!("not a docker-archive: {reason}"),
        };
        let span = *tar
            .files
            .get("manifest.json")
            .ok_or_else(|| not_docker("no manifest.json".to_owned()))?;
        if span.size > MAX_MANIFEST_JSON_BYTES {
            return Err(not_docker("manifest.json is over 16 MiB".to_owned()));
        }
        let bytes = tar.read(span).await?;
        let images: Vec<ManifestEntry> = serde_json::from_slice(&bytes)
            .map_err(|e| not_docker(format!("manifest.json: {e}")))?;
        if images.is_empty() {
            return Err(LayoutError::Empty {
                location: format!("docker-archive:{}", path.display()),
            });
        }
        // An unreadable or foreign `oci-layout` only means the manifests are
        // computed: `manifest.json` is what makes this a docker-archive.
        let layout = LayoutReader::new(Store::Tar(tar.clone()), "docker-archive");
        let layout = matches!(layout.has_layout_file().await, Ok(true)).then_some(layout);
        Ok(Self {
            label: format!("docker-archive:{}", path.display()),
            tar,
            images,
            layout,
            stored: tokio::sync::OnceCell::new(),
            built: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Every image with each of its tags (`None` for an untagged image) and its
    /// manifest's descriptor. Reads every layer of an image whose manifest is
    /// computed.
    pub async fn list(&self) -> Result<Vec<(Option<String>, Descriptor)>, LayoutError> {
        let mut out = Vec::new();
        for (i, image) in self.images.iter().enumerate() {
            let descriptor = self.build(i).await?.manifest.descriptor();
            match image.repo_tags.as_deref() {
                Some(tags) if !tags.is_empty() => {
                    for tag in tags {
                        out.push((Some(tag.clone()), descriptor.clone()));
                    }
                }
                _ => out.push((None, descriptor)),
            }
        }
        Ok(out)
    }

    fn all_tags(&self) -> Vec<String> {
        self.images
            .iter()
            .flat_map(|i| i.repo_tags.clone().unwrap_or_default())
            .collect()
    }

    fn select(&self, reference: &str) -> Result<usize, LayoutError> {
        let unknown = || LayoutError::UnknownTag {
            location: self.label.clone(),
            tag: reference.to_owned(),
            known: self.all_tags(),
        };
        if reference.is_empty() {
            return match self.images.len() {
                1 => Ok(0),
                count => Err(LayoutError::Ambiguous {
                    location: self.label.clone(),
                    count,
                    known: self.all_tags(),
                }),
            };
        }
        if let Some(n) = reference.strip_prefix('@') {
            return n
                .parse::<usize>()
                .ok()
                .filter(|n| *n < self.images.len())
                .ok_or_else(unknown);
        }
        let wanted = normalised(reference);
        self.images
            .iter()
            .position(|image| {
                image
                    .repo_tags
                    .iter()
                    .flatten()
                    .any(|tag| tag == reference || (wanted.is_some() && normalised(tag) == wanted))
            })
            .ok_or_else(unknown)
    }

    /// The manifest of image `i` (once): the stored one, else computed.
    async fn build(&self, i: usize) -> Result<Arc<Built>, LayoutError> {
        let mut built = self.built.lock().await;
        if let Some(done) = built.get(&i) {
            return Ok(done.clone());
        }
        if let Some(stored) = self.stored(&self.images[i]).await? {
            let done = Arc::new(stored);
            built.insert(i, done.clone());
            return Ok(done);
        }
        let image = self.images[i].clone();
        let tar = self.tar.clone();
        let label = self.label.clone();
        let done = tokio::task::spawn_blocking(move || build(&tar, &label, &image))
            .await
            .map_err(|e| LayoutError::Io {
                context: format!("reading {label}", label = self.label),
                source: std::io::Error::other(e),
            })??;
        let done = Arc::new(done);
        built.insert(i, done.clone());
        Ok(done)
    }

    /// The image manifest of the archive's OCI layout whose config and layers
    /// are exactly `image`'s, if there is one.
    async fn stored(&self, image: &ManifestEntry) -> Result<Option<Built>, LayoutError> {
        let wanted: Option<Vec<Digest>> = std::iter::once(&image.config)
            .chain(&image.layers)
            .map(|name| digest_of_blob_name(name))
            .collect();
        let Some(wanted) = wanted else {
            return Ok(None);
        };
        let stored = self
            .stored
            .get_or_try_init(|| self.stored_manifests())
            .await?;
        let Some(manifest) = stored
            .iter()
            .find(|m| m.blobs().iter().map(|d| d.digest()).eq(wanted.iter()))
        else {
            return Ok(None);
        };
        let mut spans = HashMap::new();
        for descriptor in manifest.blobs() {
            let rel = blob_rel(descriptor.digest(), &self.label)?;
            match self.tar.resolve_file(&rel) {
                Some(span) if span.size == descriptor.size() => {
                    spans.insert(descriptor.digest().clone(), span);
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(Built {
            manifest: manifest.clone(),
            blobs: spans,
        }))
    }

    /// Every image manifest of the archive's OCI layout (none without one),
    /// read once: from `index.json` through nested indexes; manifests that do
    /// not read or verify are passed over.
    async fn stored_manifests(&self) -> Result<Vec<RawManifest>, LayoutError> {
        let Some(layout) = &self.layout else {
            return Ok(Vec::new());
        };
        let mut images = Vec::new();
        let mut queue = layout.entries().await?.unwrap_or_default();
        let mut seen = HashSet::new();
        while let Some(descriptor) = queue.pop() {
            if seen.len() >= MAX_STORED_MANIFESTS || !seen.insert(descriptor.digest().clone()) {
                continue;
            }
            match layout.manifest(descriptor.digest()).await {
                Ok(manifest) if manifest.is_index() => {
                    queue.extend(manifest.children().iter().cloned());
                }
                Ok(manifest) => images.push(manifest),
                Err(e) => {
                    tracing::debug!("{}: passing over {}: {e}", self.label, descriptor.digest());
                }
            }
        }
        Ok(images)
    }

    async fn find_blob(&self, digest: &Digest) -> Option<Span> {
        let built = self.built.lock().await;
        built.values().find_map(|b| b.blobs.get(digest).copied())
    }

    async fn find_manifest(&self, digest: &Digest) -> Option<RawManifest> {
        let built = self.built.lock().await;
        built
            .values()
            .find(|b| b.manifest.digest() == digest)
            .map(|b| b.manifest.clone())
    }
}

/// `registry/repository:tag` after Docker's normalisation, if it parses.
fn normalised(reference: &str) -> Option<(String, Option<String>)> {
    let parsed: mirror_oci::Reference = reference.parse().ok()?;
    Some((parsed.name(), parsed.tag().map(str::to_owned)))
}

fn build(tar: &TarIndex, label: &str, image: &ManifestEntry) -> Result<Built, LayoutError> {
    let locate = |name: &str| {
        tar.resolve_file(name)
            .ok_or_else(|| LayoutError::Malformed {
                path: tar.path.clone(),
                reason: format!("manifest.json names `{name}`, which is not a file in the archive"),
            })
    };
    let mut blobs = HashMap::new();
    let config_span = locate(&image.config)?;
    let (config_digest, _) = hash_span(tar, config_span)?;
    blobs.insert(config_digest.clone(), config_span);
    let mut hashed = Vec::new();
    for layer in &image.layers {
        let span = locate(layer)?;
        let (digest, compression) = hash_span(tar, span)?;
        blobs.insert(digest.clone(), span);
        hashed.push((digest, span.size, compression));
    }
    let oci = hashed.iter().any(|(_, _, c)| *c == Compression::Zstd);
    let layers = hashed
        .iter()
        .map(|(digest, size, compression)| DescriptorJson {
            media_type: compression.media_type(oci),
            size: *size,
            digest: digest.to_string(),
        })
        .collect();
    let (media_type, config_type) = if oci {
        (media_types::OCI_MANIFEST, media_types::OCI_CONFIG)
    } else {
        (media_types::DOCKER_MANIFEST, media_types::DOCKER_CONFIG)
    };
    let manifest = ManifestJson {
        schema_version: 2,
        media_type,
        config: DescriptorJson {
            media_type: config_type,
            size: config_span.size,
            digest: config_digest.to_string(),
        },
        layers,
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| LayoutError::Malformed {
        path: tar.path.clone(),
        reason: e.to_string(),
    })?;
    let manifest = RawManifest::parse(bytes.into(), Some(media_type)).map_err(|source| {
        LayoutError::Manifest {
            location: label.to_owned(),
            digest: "(computed)".to_owned(),
            source: Box::new(source),
        }
    })?;
    Ok(Built { manifest, blobs })
}

/// The sha256 of a span and its compression (from its first bytes).
fn hash_span(tar: &TarIndex, span: Span) -> Result<(Digest, Compression), LayoutError> {
    let mut reader = tar.blocking_reader(span);
    let mut hasher = Hasher::Sha256(Default::default());
    let mut buffer = vec![0; 1 << 20];
    let mut first = true;
    let mut compression = Compression::None;
    loop {
        let n = reader
            .read(&mut buffer)
            .map_err(|e| LayoutError::read(&tar.path, e))?;
        if n == 0 {
            break;
        }
        if first {
            compression = Compression::sniff(&buffer[..n]);
            first = false;
        }
        hasher.update(&buffer[..n]);
    }
    Ok((hasher.finish(), compression))
}

#[async_trait]
impl Source for DockerArchive {
    fn name(&self) -> String {
        self.label.clone()
    }

    async fn resolve(&self, reference: &str) -> Result<Option<Resolved>, EndpointError> {
        let i = self.select(reference)?;
        let built = self.build(i).await?;
        Ok(Some(Resolved {
            digest: built.manifest.digest().clone(),
            media_type: Some(built.manifest.media_type().to_owned()),
            size: Some(built.manifest.size()),
        }))
    }

    async fn manifest(&self, digest: &Digest) -> Result<RawManifest, EndpointError> {
        self.find_manifest(digest).await.ok_or_else(|| {
            EndpointError::backend(LayoutError::UnknownManifest {
                location: self.label.clone(),
                digest: digest.to_string(),
            })
        })
    }

    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobStream, EndpointError> {
        let digest = descriptor.digest();
        let span = self
            .find_blob(digest)
            .await
            .ok_or_else(|| LayoutError::MissingBlob {
                location: self.label.clone(),
                digest: digest.to_string(),
            })?;
        if span.size != descriptor.size() {
            return Err(LayoutError::SizeMismatch {
                location: self.label.clone(),
                digest: digest.to_string(),
                expected: descriptor.size(),
                actual: span.size,
            }
            .into());
        }
        Ok(self.tar.stream(span))
    }
}

// ------------------------------------------------------------------ writing

/// Manifests of the archive's OCI layout read, at most.
const MAX_STORED_MANIFESTS: usize = 4096;

/// `manifest.json` is read whole; larger is refused.
pub(crate) const MAX_MANIFEST_JSON_BYTES: u64 = 16 * 1024 * 1024;

/// The `RepoTags` entry a docker-archive destination reference names:
/// Docker's familiar `NAME:TAG` (`docker.io/library/python:3.10` ->
/// `python:3.10`; no tag: `latest`). `@N` and digests are refused: they
/// select an image to read.
pub fn repo_tag(reference: &str) -> Result<String, LayoutError> {
    let invalid = |reason: String| LayoutError::InvalidRepoTag {
        reference: reference.to_owned(),
        reason,
    };
    if reference.starts_with('@') {
        return Err(invalid(
            "it selects an image to read; a docker-archive destination names its image \
             NAME:TAG (for example app:1)"
                .to_owned(),
        ));
    }
    let parsed: Reference = reference
        .parse()
        .map_err(|e: mirror_oci::ReferenceError| invalid(e.to_string()))?;
    if parsed.digest().is_some() {
        return Err(invalid(
            "a docker-archive image is named by NAME:TAG, not by digest".to_owned(),
        ));
    }
    Ok(format!(
        "{}:{}",
        parsed.familiar_name(),
        parsed.tag().unwrap_or("latest")
    ))
}

/// `name` parsed if it is a reference with an explicit tag and no digest
/// (`v1`, a plain layout tag, is not).
fn tagged_name(name: &str) -> Option<Reference> {
    let parsed: Reference = name.parse().ok()?;
    (parsed.has_explicit_tag() && parsed.digest().is_none()).then_some(parsed)
}

/// The `RepoTags` entry an image name stands for (a layout's ref name, a
/// source reference): Docker's familiar `NAME:TAG` if `name` has an explicit
/// tag and no digest; `None` for a plain tag such as `v1` or `latest`.
pub fn repo_tag_of(name: &str) -> Option<String> {
    tagged_name(name).map(|r| familiar(&r))
}

fn familiar(reference: &Reference) -> String {
    format!(
        "{}:{}",
        reference.familiar_name(),
        reference.tag().unwrap_or("latest")
    )
}

/// The `RepoTags` entry of an `index.json` entry (see the module docs).
pub(crate) fn entry_repo_tag(entry: &Value) -> Option<String> {
    let annotation = |key: &str| {
        entry
            .get("annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
    };
    annotation(CONTAINERD_NAME)
        .and_then(repo_tag_of)
        .or_else(|| annotation(crate::index::REF_NAME).and_then(repo_tag_of))
}

/// Gives an entry named `NAME:TAG` containerd's full image name, which
/// `docker load` with the containerd image store names the image by (as
/// `docker save` writes it).
pub(crate) fn add_containerd_name(entry: &mut Value) {
    let Some(annotations) = entry.get_mut("annotations").and_then(Value::as_object_mut) else {
        return;
    };
    if annotations.contains_key(CONTAINERD_NAME) {
        return;
    }
    let full = annotations
        .get(crate::index::REF_NAME)
        .and_then(Value::as_str)
        .and_then(tagged_name)
        .map(|r| r.to_string());
    if let Some(full) = full {
        annotations.insert(CONTAINERD_NAME.to_owned(), Value::String(full));
    }
}

/// Adds an image (`config` and `layers` as archive paths) to the entries of
/// a `manifest.json`, as `tag` or untagged: the same config and layers are
/// one entry (tags gathered); a tag moves from any other entry, and an entry
/// left without tags by that goes.
/// A `manifest.json` entry's `RepoTags` (none when absent or null).
fn tags_of(entry: &Value) -> Vec<String> {
    entry
        .get("RepoTags")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn upsert_image(
    entries: &mut Vec<Value>,
    config: &str,
    layers: &[String],
    tag: Option<&str>,
) {
    let same = |entry: &Value| {
        entry.get("Config").and_then(Value::as_str) == Some(config)
            && entry
                .get("Layers")
                .and_then(Value::as_array)
                .is_some_and(|l| {
                    l.len() == layers.len()
                        && l.iter().zip(layers).all(|(a, b)| a.as_str() == Some(b))
                })
    };
    if let Some(tag) = tag {
        entries.retain_mut(|entry| {
            if same(entry) {
                return true;
            }
            let tags = tags_of(entry);
            if !tags.iter().any(|t| t == tag) {
                return true;
            }
            let kept: Vec<String> = tags.into_iter().filter(|t| t != tag).collect();
            if kept.is_empty() {
                return false;
            }
            entry["RepoTags"] = json!(kept);
            true
        });
    }
    match entries.iter_mut().find(|entry| same(entry)) {
        Some(entry) => {
            if let Some(tag) = tag {
                let mut tags = tags_of(entry);
                if !tags.iter().any(|t| t == tag) {
                    tags.push(tag.to_owned());
                    entry["RepoTags"] = json!(tags);
                }
            }
        }
        None => entries.push(json!({
            "Config": config,
            "RepoTags": tag.map(|t| vec![t]),
            "Layers": layers,
        })),
    }
}

/// An image of a docker-archive as Docker's `manifest.json` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedImage {
    /// The config digest: the image ID `docker load` reports.
    pub image_id: Digest,
    /// Its `RepoTags` (empty: loaded untagged).
    pub repo_tags: Vec<String>,
}

/// How `manifest.json` of a docker-archive written by this crate lists the
/// image whose manifest is `manifest` (as `index.json` holds it).
pub async fn saved_image(path: &Path, manifest: &Digest) -> Result<SavedImage, LayoutError> {
    let archive = OciArchive::open(path).await?;
    let reader = archive.reader();
    let manifest = reader.manifest(manifest).await?;
    let config = manifest
        .blobs()
        .first()
        .map(|d| d.digest().clone())
        .ok_or_else(|| LayoutError::Malformed {
            path: path.to_owned(),
            reason: format!("{} is an index, not an image", manifest.digest()),
        })?;
    let config_name = blob_rel(&config, "config")?;
    let entries = read_manifest_json(&reader.store).await?.unwrap_or_default();
    let entry = entries
        .iter()
        .find(|e| e.get("Config").and_then(Value::as_str) == Some(config_name.as_str()))
        .ok_or_else(|| LayoutError::Malformed {
            path: path.to_owned(),
            reason: format!("manifest.json does not list the image with config {config}"),
        })?;
    Ok(SavedImage {
        image_id: config,
        repo_tags: tags_of(entry),
    })
}

/// The entries of `manifest.json`, if the layout or archive has one.
pub(crate) async fn read_manifest_json(
    store: &crate::store::Store,
) -> Result<Option<Vec<Value>>, LayoutError> {
    let Some(bytes) = store
        .read_file("manifest.json", MAX_MANIFEST_JSON_BYTES)
        .await?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| LayoutError::Malformed {
            path: store.path().join("manifest.json"),
            reason: format!("not a docker manifest.json (a list of images): {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    /// (Config, RepoTags) of every entry.
    fn summary(entries: &[Value]) -> Vec<(String, Value)> {
        entries
            .iter()
            .map(|e| {
                (
                    e["Config"].as_str().unwrap().to_owned(),
                    e["RepoTags"].clone(),
                )
            })
            .collect()
    }

    #[test]
    fn images_are_listed_once_and_tags_move() {
        let mut entries = Vec::new();
        upsert_image(&mut entries, "c1", &layers(&["l1", "l2"]), Some("app:1"));
        upsert_image(
            &mut entries,
            "c1",
            &layers(&["l1", "l2"]),
            Some("app:latest"),
        );
        upsert_image(&mut entries, "c2", &layers(&["l1", "l3"]), Some("other:1"));
        // The same again changes nothing.
        upsert_image(&mut entries, "c1", &layers(&["l1", "l2"]), Some("app:1"));
        upsert_image(&mut entries, "c1", &layers(&["l1", "l2"]), None);
        assert_eq!(
            summary(&entries),
            vec![
                ("c1".to_owned(), json!(["app:1", "app:latest"])),
                ("c2".to_owned(), json!(["other:1"])),
            ]
        );
        assert_eq!(entries[0]["Layers"], json!(["l1", "l2"]));

        // A tag written again moves; an entry left without tags goes.
        upsert_image(&mut entries, "c3", &layers(&["l4"]), Some("app:1"));
        upsert_image(&mut entries, "c4", &layers(&["l4"]), Some("other:1"));
        assert_eq!(
            summary(&entries),
            vec![
                ("c1".to_owned(), json!(["app:latest"])),
                ("c3".to_owned(), json!(["app:1"])),
                ("c4".to_owned(), json!(["other:1"])),
            ]
        );

        // Untagged images are listed once, with RepoTags null; other fields
        // of an existing entry are kept.
        entries[0]["LayerSources"] = json!({});
        upsert_image(&mut entries, "c5", &layers(&["l5"]), None);
        upsert_image(&mut entries, "c5", &layers(&["l5"]), None);
        upsert_image(&mut entries, "c1", &layers(&["l1", "l2"]), Some("app:2"));
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[3]["RepoTags"], Value::Null);
        assert_eq!(entries[0]["RepoTags"], json!(["app:latest", "app:2"]));
        assert_eq!(entries[0]["LayerSources"], json!({}));
        // Same config, other layers: another image.
        upsert_image(&mut entries, "c5", &layers(&["l6"]), None);
        assert_eq!(entries.len(), 5);
    }

    #[test]
    fn repo_tags_are_familiar_and_only_for_tagged_names() {
        for (reference, tag) in [
            ("python:3.10", "python:3.10"),
            ("docker.io/library/python:3.10", "python:3.10"),
            ("org/app", "org/app:latest"),
            ("registry.example.com/app:1", "registry.example.com/app:1"),
            ("localhost:5000/app:1", "localhost:5000/app:1"),
        ] {
            assert_eq!(repo_tag(reference).unwrap(), tag, "{reference}");
        }
        let digest = mirror_oci::digest_of(b"x");
        for bad in ["@0", "Bad:1", &format!("app@{digest}")] {
            assert!(repo_tag(bad).is_err(), "{bad}");
        }
        let err = repo_tag("@1").unwrap_err().to_string();
        assert!(err.contains("NAME:TAG"), "{err}");

        let entry = |annotations: Value| json!({"annotations": annotations});
        let cases = [
            (
                json!({"org.opencontainers.image.ref.name": "app:1"}),
                Some("app:1"),
            ),
            (
                json!({"org.opencontainers.image.ref.name": "docker.io/library/app:1"}),
                Some("app:1"),
            ),
            (json!({"org.opencontainers.image.ref.name": "v1"}), None),
            (json!({"org.opencontainers.image.ref.name": "latest"}), None),
            (json!({}), None),
            // docker save: the tag as ref name, the full name for containerd.
            (
                json!({
                    "org.opencontainers.image.ref.name": "latest",
                    "io.containerd.image.name": "docker.io/library/busybox:latest",
                }),
                Some("busybox:latest"),
            ),
        ];
        for (annotations, expected) in cases {
            assert_eq!(
                entry_repo_tag(&entry(annotations.clone())).as_deref(),
                expected,
                "{annotations}"
            );
        }
        assert_eq!(entry_repo_tag(&json!({"digest": "x"})), None);
    }

    #[test]
    fn tagged_entries_get_containerds_full_name() {
        let mut named = json!({"annotations": {"org.opencontainers.image.ref.name": "app:1"}});
        add_containerd_name(&mut named);
        assert_eq!(
            named["annotations"][CONTAINERD_NAME],
            "docker.io/library/app:1"
        );
        let mut plain = json!({"annotations": {"org.opencontainers.image.ref.name": "v1"}});
        add_containerd_name(&mut plain);
        assert!(plain["annotations"].get(CONTAINERD_NAME).is_none());
        let mut kept = json!({"annotations": {
            "org.opencontainers.image.ref.name": "app:1",
            "io.containerd.image.name": "example.com/app:1",
        }});
        add_containerd_name(&mut kept);
        assert_eq!(kept["annotations"][CONTAINERD_NAME], "example.com/app:1");
        let mut unnamed = json!({"digest": "x"});
        add_containerd_name(&mut unnamed);
        assert_eq!(unnamed, json!({"digest": "x"}));
    }
}
