//! Deterministic OCI images, written as OCI image layouts and cached on disk.
//!
//! Tests need images shaped like the real ones (multi-platform indexes, tens
//! of megabytes of layers, attestation manifests, Docker media types, a 1 GiB
//! layer) whose digests never change, without a network. Everything here is a
//! function of the [`ImageSpec`]: layer contents come from a seeded keystream, tar headers and gzip headers carry fixed times, and JSON is written
//! from structs with a fixed field order. The same spec always yields the same
//! root digest, on any machine.
//!
//! Layers are real `tar+gzip` (one file of pseudo-random bytes in stored
//! gzip blocks: valid and fast) and configs are real image configs whose `diff_ids` match.
//! Generation streams to disk, so a 1 GiB layer costs no memory. Layouts are
//! cached under [`cache_root`] by a hash of the spec; each is written to a temp
//! dir beside its final place and renamed, so concurrent test processes never
//! see a half-written layout.

mod streams;
mod write;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use mirror_oci::{
    Arch, Descriptor, Digest, ImageIndex, ImageManifest, MediaType, Os, Platform, media_types,
};
use serde::Serialize;

use write::write_layout;

/// Bumped whenever the generator's output changes, so stale caches are not reused.
const GENERATOR_VERSION: u32 = 1;
/// The seed of [`ImageSpec::python_like`], shared by its variants' base layers.
const PYTHON_LIKE_SEED: u64 = 0x0310_5112;

/// One platform of an image: its identity and its layer sizes (uncompressed
/// file bytes in each layer; the blob is a little larger).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PlatformSpec {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub layers: Vec<u64>,
}

impl PlatformSpec {
    /// A platform from `os/arch[/variant]` and its layer sizes.
    pub fn new(platform: &str, layers: Vec<u64>) -> Self {
        let mut parts = platform.split('/');
        Self {
            os: parts.next().unwrap_or("linux").to_owned(),
            architecture: parts.next().unwrap_or("amd64").to_owned(),
            variant: parts.next().map(str::to_owned),
            layers,
        }
    }

    /// The oci-spec platform (to compare with a descriptor's).
    pub fn platform(&self) -> Platform {
        let mut platform = Platform::default();
        platform.set_os(Os::from(self.os.as_str()));
        platform.set_architecture(Arch::from(self.architecture.as_str()));
        platform.set_variant(self.variant.clone());
        platform
    }

    /// `os/arch[/variant]`.
    pub fn platform_string(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{}", self.os, self.architecture, v),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// Everything that determines a generated image.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ImageSpec {
    /// Names the cache directory; does not change any digest.
    pub name: String,
    /// Seeds every layer's bytes. Images with equal seeds (and platforms and
    /// sizes) share blobs.
    pub seed: u64,
    pub platforms: Vec<PlatformSpec>,
    /// Adds one attestation manifest per platform (platform unknown/unknown,
    /// `vnd.docker.reference.type: attestation-manifest`), as BuildKit does.
    pub attestations: bool,
    /// A Docker manifest list and Docker v2 manifests instead of OCI types.
    pub docker_format: bool,
    /// Seeds each platform's first (base) layer instead of `seed`, so that
    /// images can share base layers and differ above them.
    pub base_seed: Option<u64>,
    /// Writes an index even for one platform without attestations (otherwise
    /// such an image's root is its manifest).
    pub always_index: bool,
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            name: "image".to_owned(),
            seed: 0,
            platforms: Vec::new(),
            attestations: false,
            docker_format: false,
            base_seed: None,
            always_index: false,
        }
    }
}

const PYTHON_PLATFORMS: [&str; 7] = [
    "linux/amd64",
    "linux/arm/v5",
    "linux/arm/v7",
    "linux/arm64/v8",
    "linux/386",
    "linux/ppc64le",
    "linux/s390x",
];

impl ImageSpec {
    /// Shaped like `python:3.10-slim-buster`: an OCI index of 7 platforms, each
    /// with a 25-30 MB base layer, two 1-4 MB layers and two layers of a few KB
    /// (about 230 MB of blobs in all).
    pub fn python_like() -> Self {
        let platforms = PYTHON_PLATFORMS
            .iter()
            .enumerate()
            .map(|(i, platform)| {
                let i = i as u64;
                PlatformSpec::new(
                    platform,
                    vec![
                        25_000_000 + (i * 737_373) % 5_000_000,
                        1_000_000 + i * 310_000,
                        3_900_000 - i * 270_000,
                        2_000 + i * 137,
                        4_096 + i * 61,
                    ],
                )
            })
            .collect();
        Self {
            name: "python-like".to_owned(),
            seed: PYTHON_LIKE_SEED,
            platforms,
            ..Self::default()
        }
    }

    /// Like [`ImageSpec::python_like`], with the same base layers (same blobs)
    /// and different layers above them: for cross-image deduplication.
    pub fn python_like_variant(seed: u64) -> Self {
        Self {
            name: format!("python-like-variant-{seed}"),
            seed,
            base_seed: Some(PYTHON_LIKE_SEED),
            ..Self::python_like()
        }
    }

    /// One platform (linux/amd64), one layer of `size` bytes; the root is the
    /// image manifest. Generation streams, so `size` may be 1 GiB. The seed
    /// is the size: equal sizes give equal blobs (set `seed` to differ).
    pub fn single_layer(name: &str, size: u64) -> Self {
        Self {
            name: name.to_owned(),
            seed: size,
            platforms: vec![PlatformSpec::new("linux/amd64", vec![size])],
            ..Self::default()
        }
    }

    /// Two platforms (linux/amd64, linux/arm64/v8) with three small layers
    /// each: quick to generate and push.
    pub fn small(name: &str, seed: u64) -> Self {
        Self {
            name: name.to_owned(),
            seed,
            platforms: vec![
                PlatformSpec::new("linux/amd64", vec![64 * 1024, 8 * 1024, 512]),
                PlatformSpec::new("linux/arm64/v8", vec![60 * 1024, 6 * 1024, 700]),
            ],
            ..Self::default()
        }
    }

    /// The same image with Docker media types.
    pub fn docker(mut self) -> Self {
        self.docker_format = true;
        self
    }

    /// The same image with attestation manifests.
    pub fn with_attestations(mut self) -> Self {
        self.attestations = true;
        self
    }

    /// The same image under another cache name.
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// The directory name in the cache: the name plus a hash of the spec.
    pub fn cache_key(&self) -> String {
        let json = serde_json::to_vec(&(GENERATOR_VERSION, self)).unwrap_or_default();
        let digest = mirror_oci::digest_of(&json);
        let safe: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{safe}-{}", &digest.digest()[..16])
    }

    fn has_index(&self) -> bool {
        self.platforms.len() != 1 || self.attestations || self.always_index
    }
}

/// A generated OCI image layout.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedImage {
    /// The layout directory (`oci-layout`, `index.json`, `blobs/sha256/`).
    pub layout: PathBuf,
    /// The top-level index (or manifest, for a one-platform image), tagged
    /// `latest` in `index.json`.
    pub root: Descriptor,
    /// The root index's children (images and attestation manifests), with
    /// their platforms, in index order; empty when the root is a manifest.
    pub manifests: Vec<(Descriptor, Option<Platform>)>,
    /// Every config and layer, each once, in order of first use.
    pub blobs: Vec<Descriptor>,
}

impl GeneratedImage {
    /// Where a blob (or manifest) of this layout is stored.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.layout
            .join("blobs")
            .join(digest.algorithm().as_ref())
            .join(digest.digest())
    }

    /// The sum of the sizes of every config and layer.
    pub fn total_blob_bytes(&self) -> u64 {
        self.blobs.iter().map(Descriptor::size).sum()
    }

    /// The largest config or layer (the last of equals); `None` for an
    /// image without blobs.
    pub fn largest_blob(&self) -> Option<&Descriptor> {
        self.blobs.iter().max_by_key(|b| b.size())
    }

    /// The smallest config or layer (the first of equals); `None` for an
    /// image without blobs.
    pub fn smallest_blob(&self) -> Option<&Descriptor> {
        self.blobs.iter().min_by_key(|b| b.size())
    }

    /// The digest of the root index or manifest.
    pub fn root_digest(&self) -> Digest {
        self.root.digest().clone()
    }

    /// The descriptors of the image manifests only (no attestations), with
    /// their platforms.
    pub fn image_manifests(&self) -> Vec<(Descriptor, Option<Platform>)> {
        self.manifests
            .iter()
            .filter(|(d, _)| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get("vnd.docker.reference.type"))
                    .is_none()
            })
            .cloned()
            .collect()
    }

    /// The exact bytes of a blob or manifest of this layout.
    pub fn read_blob(&self, digest: &Digest) -> anyhow::Result<Vec<u8>> {
        let path = self.blob_path(digest);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    }
}

/// Where layouts are cached: `$MIRROR_TESTKIT_CACHE`, else
/// `<CARGO_TARGET_DIR or the workspace target>/testkit-cache`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("MIRROR_TESTKIT_CACHE") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("testkit-cache")
}

/// Generates `spec` into the cache (or finds it there).
pub fn generate(spec: &ImageSpec) -> anyhow::Result<GeneratedImage> {
    generate_into(spec, &cache_root())
}

/// Generates `spec` under `cache_root` (or finds it there).
pub fn generate_into(spec: &ImageSpec, cache_root: &Path) -> anyhow::Result<GeneratedImage> {
    if spec.platforms.is_empty() {
        bail!("image spec {:?} has no platforms", spec.name);
    }
    let target = cache_root.join(spec.cache_key());
    if target.join("index.json").is_file() {
        return open_layout(&target);
    }
    std::fs::create_dir_all(cache_root)
        .with_context(|| format!("creating {}", cache_root.display()))?;
    remove_stale_temp_dirs(cache_root);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".tmp-{}-", spec.cache_key()))
        .tempdir_in(cache_root)?;
    write_layout(spec, tmp.path()).with_context(|| format!("generating image {:?}", spec.name))?;
    match std::fs::rename(tmp.path(), &target) {
        Ok(()) => {
            let _ = tmp.keep();
        }
        // Another process finished first: use its layout, drop ours.
        Err(_) if target.join("index.json").is_file() => drop(tmp),
        Err(e) => {
            return Err(e).with_context(|| format!("moving layout to {}", target.display()));
        }
    }
    open_layout(&target)
}

/// Leftovers of generations that were killed midway (older than an hour).
fn remove_stale_temp_dirs(cache_root: &Path) {
    let Ok(entries) = std::fs::read_dir(cache_root) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(".tmp-")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 3600);
        if stale {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Reads an OCI image layout whose `index.json` has one entry (the root).
pub fn open_layout(layout: &Path) -> anyhow::Result<GeneratedImage> {
    let index_path = layout.join("index.json");
    let index: ImageIndex = serde_json::from_slice(
        &std::fs::read(&index_path).with_context(|| format!("reading {}", index_path.display()))?,
    )
    .with_context(|| format!("parsing {}", index_path.display()))?;
    let Some(root) = index.manifests().first().cloned() else {
        bail!("{} lists no manifest", index_path.display());
    };
    let mut image = GeneratedImage {
        layout: layout.to_owned(),
        root: root.clone(),
        manifests: Vec::new(),
        blobs: Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    if is_index(root.media_type()) {
        let bytes = image.read_blob(root.digest())?;
        let children: ImageIndex = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing index {}", root.digest()))?;
        for child in children.manifests() {
            image
                .manifests
                .push((child.clone(), child.platform().clone()));
            collect_blobs(&mut image, child.digest(), &mut seen)?;
        }
    } else {
        collect_blobs(&mut image, root.digest(), &mut seen)?;
    }
    Ok(image)
}

fn is_index(media_type: &MediaType) -> bool {
    let text = media_type.to_string();
    text == media_types::OCI_INDEX || text == media_types::DOCKER_LIST
}

fn collect_blobs(
    image: &mut GeneratedImage,
    manifest: &Digest,
    seen: &mut std::collections::HashSet<String>,
) -> anyhow::Result<()> {
    let bytes = image.read_blob(manifest)?;
    let parsed: ImageManifest =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing manifest {manifest}"))?;
    for blob in std::iter::once(parsed.config()).chain(parsed.layers()) {
        if seen.insert(blob.digest().to_string()) {
            image.blobs.push(blob.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_spec_parses_variants() {
        let p = PlatformSpec::new("linux/arm/v7", vec![]);
        assert_eq!(p.platform_string(), "linux/arm/v7");
        let platform = p.platform();
        assert_eq!(platform.variant().as_deref(), Some("v7"));
        assert_eq!(PlatformSpec::new("linux/amd64", vec![]).variant, None);
    }
}
