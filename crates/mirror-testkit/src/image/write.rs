//! Writing a generated layout: the JSON of configs, manifests, indexes and
//! attestations (structs with a fixed field order, or sorted keys) and the
//! layer blobs, each named by its digest. Everything that decides the bytes
//! of an [`ImageSpec`](super::ImageSpec)'s blobs is here; the parent module
//! caches and reads the result.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context as _;
use mirror_oci::media_types;
use serde::Serialize;

use super::ImageSpec;
use super::streams::{HashingWriter, KEYSTREAM_CHUNK, SeededReader, StoredGzip};

const CREATED: &str = "2024-01-01T00:00:00Z";
const IN_TOTO: &str = "application/vnd.in-toto+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

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

pub(super) fn write_layout(spec: &ImageSpec, dir: &Path) -> anyhow::Result<()> {
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
}
