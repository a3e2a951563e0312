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

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use aws_lc_rs::cipher::{AES_128, EncryptingKey, EncryptionContext, UnboundCipherKey};
use mirror_oci::{
    Arch, Descriptor, Digest, Hasher, ImageIndex, ImageManifest, MediaType, Os, Platform,
    media_types,
};
use serde::Serialize;

/// Bumped whenever the generator's output changes, so stale caches are not reused.
const GENERATOR_VERSION: u32 = 1;
/// The seed of [`ImageSpec::python_like`], shared by its variants' base layers.
const PYTHON_LIKE_SEED: u64 = 0x0310_5112;
const CREATED: &str = "2024-01-01T00:00:00Z";
const IN_TOTO: &str = "application/vnd.in-toto+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

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

// ---- writing ---------------------------------------------------------------

#[derive(Serialize, Clone)]
struct PlatformJson {
    architecture: String,
    os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

#[derive(Serialize, Clone)]
struct DescriptorJson {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<PlatformJson>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ManifestJson {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: String,
    config: DescriptorJson,
    layers: Vec<DescriptorJson>,
}

#[derive(Serialize)]
struct IndexJson {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<DescriptorJson>,
}

#[derive(Serialize)]
struct ConfigJson {
    created: &'static str,
    architecture: String,
    os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    config: RunConfigJson,
    rootfs: RootfsJson,
    history: Vec<HistoryJson>,
}

#[derive(Serialize)]
struct RunConfigJson {
    #[serde(rename = "Env")]
    env: Vec<String>,
    #[serde(rename = "Cmd")]
    cmd: Vec<String>,
}

#[derive(Serialize)]
struct RootfsJson {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct HistoryJson {
    created: &'static str,
    created_by: String,
}

#[derive(Serialize)]
struct AttestationConfigJson {
    architecture: &'static str,
    os: &'static str,
    config: BTreeMap<String, String>,
    rootfs: RootfsJson,
}

struct MediaSet {
    index: &'static str,
    manifest: &'static str,
    config: &'static str,
    layer: &'static str,
}

const OCI: MediaSet = MediaSet {
    index: media_types::OCI_INDEX,
    manifest: media_types::OCI_MANIFEST,
    config: media_types::OCI_CONFIG,
    layer: media_types::OCI_LAYER_GZIP,
};

const DOCKER: MediaSet = MediaSet {
    index: media_types::DOCKER_LIST,
    manifest: media_types::DOCKER_MANIFEST,
    config: media_types::DOCKER_CONFIG,
    layer: media_types::DOCKER_LAYER_GZIP,
};

/// A generated layer: its blob and the digest of its uncompressed tar.
#[derive(Clone)]
struct Layer {
    digest: String,
    size: u64,
    diff_id: String,
}

fn write_layout(spec: &ImageSpec, dir: &Path) -> anyhow::Result<()> {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs)?;
    let media = if spec.docker_format { &DOCKER } else { &OCI };
    let mut layer_cache: HashMap<(u64, u64), Layer> = HashMap::new();
    let mut images = Vec::new();
    let mut attestations = Vec::new();

    for platform in &spec.platforms {
        let key = platform.platform_string();
        let mut layers = Vec::new();
        for (i, &size) in platform.layers.iter().enumerate() {
            let base = if i == 0 { spec.base_seed } else { None };
            let seed = layer_seed(base.unwrap_or(spec.seed), &key, i, size);
            let layer = match layer_cache.get(&(seed, size)) {
                Some(layer) => layer.clone(),
                None => {
                    let layer = write_layer(&blobs, seed, size, i)?;
                    layer_cache.insert((seed, size), layer.clone());
                    layer
                }
            };
            layers.push(layer);
        }

        let config = ConfigJson {
            created: CREATED,
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            config: RunConfigJson {
                env: vec![
                    "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
                ],
                cmd: vec!["python3".to_owned()],
            },
            rootfs: RootfsJson {
                kind: "layers",
                diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
            },
            history: (0..layers.len())
                .map(|i| HistoryJson {
                    created: CREATED,
                    created_by: format!("mirror-testkit layer {i}"),
                })
                .collect(),
        };
        let config = write_json_blob(&blobs, media.config, &config)?;
        let manifest = ManifestJson {
            schema_version: 2,
            media_type: media.manifest.to_owned(),
            config,
            layers: layers
                .iter()
                .map(|l| descriptor(media.layer, &l.digest, l.size))
                .collect(),
        };
        let mut manifest = write_json_blob(&blobs, media.manifest, &manifest)?;
        manifest.platform = Some(PlatformJson {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
        });
        if spec.attestations {
            attestations.push(write_attestation(&blobs, spec, &key, &manifest)?);
        }
        images.push(manifest);
    }

    let mut root = if spec.has_index() {
        let index = IndexJson {
            schema_version: 2,
            media_type: Some(media.index.to_owned()),
            manifests: images.into_iter().chain(attestations).collect(),
        };
        write_json_blob(&blobs, media.index, &index)?
    } else {
        let mut only = images.into_iter().next().context("one platform")?;
        only.platform = None;
        only
    };
    root.annotations = BTreeMap::from([(REF_NAME.to_owned(), "latest".to_owned())]);
    let layout_index = IndexJson {
        schema_version: 2,
        media_type: Some(media_types::OCI_INDEX.to_owned()),
        manifests: vec![root],
    };
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&layout_index)?)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

/// An attestation manifest as BuildKit attaches it: an OCI manifest with an
/// in-toto statement about the image manifest, platform unknown/unknown, and
/// annotations naming the manifest it describes.
fn write_attestation(
    blobs: &Path,
    spec: &ImageSpec,
    platform: &str,
    image: &DescriptorJson,
) -> anyhow::Result<DescriptorJson> {
    let subject_hex = image.digest.trim_start_matches("sha256:");
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://spdx.dev/Document",
        "subject": [{
            "name": format!("pkg:docker/testkit@latest?platform={}", platform.replace('/', "%2F")),
            "digest": {"sha256": subject_hex},
        }],
        "predicate": {"spdxVersion": "SPDX-2.3", "name": "sbom", "seed": spec.seed},
    });
    // Written with sorted keys by hand, so the digest never depends on
    // serde_json's `preserve_order` feature.
    let statement_bytes = canonical_json(&statement);
    let statement_digest = write_blob_bytes(blobs, &statement_bytes)?;
    let mut layer = descriptor(IN_TOTO, &statement_digest, statement_bytes.len() as u64);
    layer.annotations.insert(
        "in-toto.io/predicate-type".to_owned(),
        "https://spdx.dev/Document".to_owned(),
    );
    let config = AttestationConfigJson {
        architecture: "unknown",
        os: "unknown",
        config: BTreeMap::new(),
        rootfs: RootfsJson {
            kind: "layers",
            diff_ids: vec![statement_digest.clone()],
        },
    };
    let config = write_json_blob(blobs, media_types::OCI_CONFIG, &config)?;
    let manifest = ManifestJson {
        schema_version: 2,
        media_type: media_types::OCI_MANIFEST.to_owned(),
        config,
        layers: vec![layer],
    };
    let mut descriptor = write_json_blob(blobs, media_types::OCI_MANIFEST, &manifest)?;
    descriptor.platform = Some(PlatformJson {
        architecture: "unknown".to_owned(),
        os: "unknown".to_owned(),
        variant: None,
    });
    descriptor.annotations = BTreeMap::from([
        (
            "vnd.docker.reference.digest".to_owned(),
            image.digest.clone(),
        ),
        (
            "vnd.docker.reference.type".to_owned(),
            "attestation-manifest".to_owned(),
        ),
    ]);
    Ok(descriptor)
}

/// JSON with object keys sorted at every level, whatever serde_json's
/// `preserve_order` feature says.
fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_sorted(value, &mut out);
    out
}

fn write_sorted(value: &serde_json::Value, out: &mut Vec<u8>) {
    match value {
        serde_json::Value::Object(map) => {
            let ordered: BTreeMap<&String, &serde_json::Value> = map.iter().collect();
            out.push(b'{');
            for (i, (k, v)) in ordered.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(serde_json::Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                write_sorted(v, out);
            }
            out.push(b'}');
        }
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_sorted(v, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

fn descriptor(media_type: &str, digest: &str, size: u64) -> DescriptorJson {
    DescriptorJson {
        media_type: media_type.to_owned(),
        digest: digest.to_owned(),
        size,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

fn write_json_blob(
    blobs: &Path,
    media_type: &str,
    value: &impl Serialize,
) -> anyhow::Result<DescriptorJson> {
    let bytes = serde_json::to_vec(value)?;
    let digest = write_blob_bytes(blobs, &bytes)?;
    Ok(descriptor(media_type, &digest, bytes.len() as u64))
}

fn write_blob_bytes(blobs: &Path, bytes: &[u8]) -> anyhow::Result<String> {
    let digest = mirror_oci::digest_of(bytes);
    std::fs::write(blobs.join(digest.digest()), bytes)?;
    Ok(digest.to_string())
}

/// A layer's seed from the image seed, the platform and the layer's place.
fn layer_seed(seed: u64, platform: &str, index: usize, size: u64) -> u64 {
    let text = format!("{seed}/{platform}/{index}/{size}");
    let digest = mirror_oci::digest_of(text.as_bytes());
    let hex = &digest.digest()[..16];
    u64::from_str_radix(hex, 16).unwrap_or(seed)
}

/// Streams `tar(one file of seeded bytes) | gzip -0` to a blob file, hashing
/// both the tar (diff_id) and the gzip (digest) on the way.
fn write_layer(blobs: &Path, seed: u64, size: u64, index: usize) -> anyhow::Result<Layer> {
    let partial = blobs.join(format!(".partial-{seed:016x}"));
    let file = std::fs::File::create(&partial)?;
    let blob = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let gzip = StoredGzip::new(blob)?;
    let tar_sink = HashingWriter::new(gzip);
    let mut tar = tar::Builder::new(tar_sink);
    let mut header = tar::Header::new_ustar();
    header.set_path(format!("testkit/layer-{index}-{seed:016x}.bin"))?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_704_067_200); // 2024-01-01
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    // A large BufReader makes `io::copy` (inside tar) move 1 MiB at a time.
    let data = std::io::BufReader::with_capacity(KEYSTREAM_CHUNK, SeededReader::new(seed, size)?);
    tar.append(&header, data)?;
    let tar_sink = tar.into_inner()?;
    let (gzip, diff_id, _tar_size) = tar_sink.finish();
    let blob = gzip.finish()?;
    let (mut file, digest, blob_size) = blob.finish();
    file.flush()?;
    drop(file);
    std::fs::rename(&partial, blobs.join(digest.digest()))?;
    Ok(Layer {
        digest: digest.to_string(),
        size: blob_size,
        diff_id: diff_id.to_string(),
    })
}

/// `size` pseudo-random bytes: the AES-128-CTR keystream under a key derived
/// from `seed`. A seeded stream cipher in C (aws-lc) rather than a Rust PRNG
/// because this crate is built without optimisation in tests, and a 1 GiB
/// layer must still take seconds, not minutes.
struct SeededReader {
    key: EncryptingKey,
    /// The current 1 MiB of keystream and how much of it was handed out.
    chunk: Vec<u8>,
    used: usize,
    next_chunk: u64,
    remaining: u64,
}

const KEYSTREAM_CHUNK: usize = 1 << 20;

impl SeededReader {
    fn new(seed: u64, size: u64) -> anyhow::Result<Self> {
        let material = mirror_oci::digest_of(format!("mirror-testkit layer {seed}").as_bytes());
        let bytes = hex::decode(material.digest())?;
        let key = UnboundCipherKey::new(&AES_128, &bytes[..16])
            .map_err(|_| anyhow::anyhow!("AES key"))?;
        Ok(Self {
            key: EncryptingKey::ctr(key).map_err(|_| anyhow::anyhow!("AES-CTR key"))?,
            chunk: Vec::new(),
            used: 0,
            next_chunk: 0,
            remaining: size,
        })
    }

    /// The keystream of chunk k starts at counter k * (chunk / 16), so the
    /// bytes never depend on how callers size their reads.
    fn refill(&mut self) -> std::io::Result<()> {
        // `fill` is a memset even unoptimised; `resize` is a byte loop.
        if self.chunk.len() != KEYSTREAM_CHUNK {
            self.chunk = vec![0; KEYSTREAM_CHUNK];
        } else {
            self.chunk.fill(0);
        }
        let counter = u128::from(self.next_chunk) * (KEYSTREAM_CHUNK as u128 / 16);
        self.key
            .less_safe_encrypt(
                &mut self.chunk,
                EncryptionContext::Iv128(counter.to_be_bytes().into()),
            )
            .map_err(|_| std::io::Error::other("AES-CTR keystream"))?;
        self.next_chunk += 1;
        self.used = 0;
        Ok(())
    }
}

impl Read for SeededReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        if self.used == self.chunk.len() {
            self.refill()?;
        }
        let n = buf
            .len()
            .min(self.chunk.len() - self.used)
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.chunk[self.used..self.used + n]);
        self.used += n;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// The largest stored deflate block.
const STORED_BLOCK: usize = 65_535;

/// A gzip stream of stored (uncompressed) deflate blocks: valid gzip that any
/// decoder reads, at the speed of a copy. Random bytes don't compress anyway,
/// and flate2's level 0 spends most of a 1 GiB layer's time in its matcher.
/// Blocks are cut every 65,535 bytes of input, whatever the write sizes, so
/// the output depends only on the content.
struct StoredGzip<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    size: u32,
    block: Vec<u8>,
}

impl<W: Write> StoredGzip<W> {
    fn new(mut inner: W) -> std::io::Result<Self> {
        // Magic, deflate, no flags, mtime 0, no extra flags, OS unknown.
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
        Ok(Self {
            inner,
            crc: crc32fast::Hasher::new(),
            size: 0,
            block: Vec::with_capacity(STORED_BLOCK),
        })
    }

    fn emit(&mut self, last: bool) -> std::io::Result<()> {
        let len = self.block.len() as u16;
        let mut head = [u8::from(last), 0, 0, 0, 0];
        head[1..3].copy_from_slice(&len.to_le_bytes());
        head[3..5].copy_from_slice(&(!len).to_le_bytes());
        self.inner.write_all(&head)?;
        self.inner.write_all(&self.block)?;
        self.block.clear();
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<W> {
        self.emit(true)?;
        let crc = self.crc.clone().finalize();
        self.inner.write_all(&crc.to_le_bytes())?;
        self.inner.write_all(&self.size.to_le_bytes())?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for StoredGzip<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(STORED_BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.size = self.size.wrapping_add(n as u32);
        if self.block.len() == STORED_BLOCK {
            self.emit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Passes writes on while hashing (sha256) and counting them.
struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Hasher::Sha256(Default::default()),
            count: 0,
        }
    }

    fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finish(), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value = serde_json::json!({"b": 1, "a": {"d": [1, {"z": 0, "y": "x"}], "c": null}});
        assert_eq!(
            String::from_utf8(canonical_json(&value)).expect("utf-8"),
            r#"{"a":{"c":null,"d":[1,{"y":"x","z":0}]},"b":1}"#
        );
    }

    #[test]
    fn platform_spec_parses_variants() {
        let p = PlatformSpec::new("linux/arm/v7", vec![]);
        assert_eq!(p.platform_string(), "linux/arm/v7");
        let platform = p.platform();
        assert_eq!(platform.variant().as_deref(), Some("v7"));
        assert_eq!(PlatformSpec::new("linux/amd64", vec![]).variant, None);
    }
}
