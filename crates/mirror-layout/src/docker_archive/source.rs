//! The read side of `docker-archive`: [`DockerArchive`], a copy source that
//! finds each `manifest.json` image's stored OCI manifest or computes a Docker
//! schema 2 one from the config and layer files (see the parent module docs).
//! Kept apart from the writer's `manifest.json` bookkeeping, which shares no
//! code with it beyond the file's format.

use std::collections::{HashMap, HashSet};
use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use mirror_engine::{EndpointError, Resolved, Source};
use mirror_oci::{BlobStream, Descriptor, Digest, Hasher, RawManifest, media_types};
use serde::{Deserialize, Serialize};

use super::manifest_json::MAX_MANIFEST_JSON_BYTES;
use crate::archive::index_tar;
use crate::error::LayoutError;
use crate::fsutil::{blob_rel, digest_of_blob_name};
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

/// Manifests of the archive's OCI layout read, at most.
const MAX_STORED_MANIFESTS: usize = 4096;
