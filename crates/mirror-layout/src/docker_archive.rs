//! `docker-archive`: the tar `docker save` writes, as a read-only source.
//!
//! A docker-archive holds image configs and layer tars listed by
//! `manifest.json` (`Config`, `RepoTags`, `Layers`), but no registry manifest.
//! This reader therefore *computes* a Docker v2 schema 2 image manifest: the
//! config digest is the sha256 of the config file, each layer's digest the
//! sha256 of its file, with media type `application/vnd.docker.image.rootfs.diff.tar.gzip`
//! when the file starts with the gzip magic and `...diff.tar` (uncompressed,
//! as `docker save` writes them) otherwise. The manifest's digest is the sha256
//! of those computed bytes: it is stable for a given archive, but it is not the
//! digest the image had in any registry (there is none to preserve).
//! Computing it reads every layer of the image once.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use mirror_engine::{EndpointError, Resolved, Source};
use mirror_oci::{BlobStream, Descriptor, Digest, Hasher, RawManifest, media_types};
use serde::{Deserialize, Serialize};

use crate::archive::index_tar;
use crate::error::LayoutError;
use crate::store::{Span, TarIndex};

/// Docker's media type of an uncompressed layer tar.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

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

/// One image of the archive with its computed manifest.
#[derive(Debug)]
struct Built {
    manifest: RawManifest,
    blobs: HashMap<Digest, Span>,
}

/// A `docker save` archive as a read-only copy source (see the module docs:
/// the manifest is computed). A reference is a `RepoTags` entry
/// (`busybox:latest`, matched after Docker's normalisation), `@N` for the Nth
/// image of `manifest.json`, or `""` for the only one.
#[derive(Debug)]
pub struct DockerArchive {
    tar: Arc<TarIndex>,
    label: String,
    images: Vec<ManifestEntry>,
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
        if span.size > 16 * 1024 * 1024 {
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
        Ok(Self {
            label: format!("docker-archive:{}", path.display()),
            tar,
            images,
            built: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Every image with each of its tags (`None` for an untagged image) and its
    /// computed manifest's descriptor. Reads every layer.
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

    /// Computes (once) the manifest of image `i`.
    async fn build(&self, i: usize) -> Result<Arc<Built>, LayoutError> {
        let mut built = self.built.lock().await;
        if let Some(done) = built.get(&i) {
            return Ok(done.clone());
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
    let mut layers = Vec::new();
    for layer in &image.layers {
        let span = locate(layer)?;
        let (digest, gzip) = hash_span(tar, span)?;
        blobs.insert(digest.clone(), span);
        layers.push(DescriptorJson {
            media_type: if gzip {
                media_types::DOCKER_LAYER_GZIP
            } else {
                DOCKER_LAYER_TAR
            },
            size: span.size,
            digest: digest.to_string(),
        });
    }
    let manifest = ManifestJson {
        schema_version: 2,
        media_type: media_types::DOCKER_MANIFEST,
        config: DescriptorJson {
            media_type: media_types::DOCKER_CONFIG,
            size: config_span.size,
            digest: config_digest.to_string(),
        },
        layers,
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| LayoutError::Malformed {
        path: tar.path.clone(),
        reason: e.to_string(),
    })?;
    let manifest =
        RawManifest::parse(bytes.into(), Some(media_types::DOCKER_MANIFEST)).map_err(|source| {
            LayoutError::Manifest {
                location: label.to_owned(),
                digest: "(computed)".to_owned(),
                source: Box::new(source),
            }
        })?;
    Ok(Built { manifest, blobs })
}

/// The sha256 of a span and whether it starts with the gzip magic.
fn hash_span(tar: &TarIndex, span: Span) -> Result<(Digest, bool), LayoutError> {
    let mut reader = tar.blocking_reader(span);
    let mut hasher = Hasher::Sha256(Default::default());
    let mut buffer = vec![0; 1 << 20];
    let mut first = true;
    let mut gzip = false;
    loop {
        let n = reader
            .read(&mut buffer)
            .map_err(|e| LayoutError::read(&tar.path, e))?;
        if n == 0 {
            break;
        }
        if first {
            gzip = n >= 2 && buffer[0] == 0x1f && buffer[1] == 0x8b;
            first = false;
        }
        hasher.update(&buffer[..n]);
    }
    Ok((hasher.finish(), gzip))
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
            EndpointError::Other(format!(
                "{}: no computed manifest {digest} (resolve the image first)",
                self.label
            ))
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
