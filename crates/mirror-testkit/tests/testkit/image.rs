//! The generator: deterministic, shaped as promised, real tar+gzip and configs.

use std::io::Read as _;

use mirror_oci::{Digest, ImageIndex, ImageManifest, media_types};
use mirror_testkit::{ImageSpec, generate, generate_into};

fn sha256_of_file(path: &std::path::Path) -> Digest {
    let bytes = std::fs::read(path).expect("blob");
    mirror_oci::digest_of(&bytes)
}

#[test]
fn same_spec_gives_same_root_digest_and_another_seed_does_not() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let spec = ImageSpec::small("determinism", 7).with_attestations();
    let first = generate_into(&spec, a.path()).expect("first");
    let second = generate_into(&spec, b.path()).expect("second");
    assert_ne!(first.layout, second.layout);
    assert_eq!(first.root_digest(), second.root_digest());
    assert_eq!(first.blobs, second.blobs);

    let other = generate_into(&ImageSpec::small("determinism", 8), a.path()).expect("other");
    assert_ne!(other.root_digest(), first.root_digest());
    // The name only names the cache entry.
    let renamed = generate_into(&spec.clone().named("renamed"), b.path()).expect("renamed");
    assert_eq!(renamed.root_digest(), first.root_digest());
    // A second call reuses the cached layout.
    let again = generate_into(&spec, a.path()).expect("cached");
    assert_eq!(again, first);
}

#[test]
fn every_blob_matches_its_digest_and_configs_match_their_layers() {
    let image = generate(&ImageSpec::small("verify", 11)).expect("generate");
    assert_eq!(image.root.media_type().to_string(), media_types::OCI_INDEX);
    assert_eq!(image.manifests.len(), 2);
    for blob in &image.blobs {
        let path = image.blob_path(blob.digest());
        assert_eq!(std::fs::metadata(&path).expect("blob").len(), blob.size());
        assert_eq!(&sha256_of_file(&path), blob.digest());
    }
    for (descriptor, platform) in &image.manifests {
        let platform = platform.as_ref().expect("platform");
        let manifest: ImageManifest =
            serde_json::from_slice(&image.read_blob(descriptor.digest()).expect("manifest"))
                .expect("parse manifest");
        let config: serde_json::Value =
            serde_json::from_slice(&image.read_blob(manifest.config().digest()).expect("config"))
                .expect("parse config");
        assert_eq!(config["architecture"], platform.architecture().to_string());
        assert_eq!(config["os"], "linux");
        let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
        assert_eq!(diff_ids.len(), manifest.layers().len());
        for (layer, diff_id) in manifest.layers().iter().zip(diff_ids) {
            // gunzip the blob: the tar inside hashes to the diff_id and holds one file.
            let file = std::fs::File::open(image.blob_path(layer.digest())).expect("layer");
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(file)
                .read_to_end(&mut tar)
                .expect("valid gzip");
            assert_eq!(
                mirror_oci::digest_of(&tar).to_string(),
                diff_id.as_str().expect("string")
            );
            let mut archive = tar::Archive::new(&tar[..]);
            let entries: Vec<_> = archive
                .entries()
                .expect("tar")
                .map(|e| e.expect("entry").header().size().expect("size"))
                .collect();
            assert_eq!(entries.len(), 1);
        }
    }
}

#[test]
fn python_like_has_seven_platforms_and_realistic_layers_and_its_variant_shares_bases() {
    let image = generate(&ImageSpec::python_like()).expect("python-like");
    let index: ImageIndex =
        serde_json::from_slice(&image.read_blob(&image.root_digest()).expect("index"))
            .expect("index");
    assert_eq!(index.manifests().len(), 7);
    let platforms: Vec<String> = image
        .manifests
        .iter()
        .map(|(_, p)| mirror_oci::platform_string(p.as_ref().expect("platform")))
        .collect();
    assert_eq!(
        platforms,
        [
            "linux/amd64",
            "linux/arm/v5",
            "linux/arm/v7",
            "linux/arm64/v8",
            "linux/386",
            "linux/ppc64le",
            "linux/s390x"
        ]
    );
    let mut base_sizes = Vec::new();
    for (descriptor, _) in &image.manifests {
        assert_eq!(
            descriptor.media_type().to_string(),
            media_types::OCI_MANIFEST
        );
        let manifest: ImageManifest =
            serde_json::from_slice(&image.read_blob(descriptor.digest()).expect("manifest"))
                .expect("manifest");
        let sizes: Vec<u64> = manifest.layers().iter().map(|l| l.size()).collect();
        assert_eq!(sizes.len(), 5);
        assert!((25_000_000..30_100_000).contains(&sizes[0]), "{sizes:?}");
        assert!(
            sizes[1..3]
                .iter()
                .all(|s| (1_000_000..4_100_000).contains(s)),
            "{sizes:?}"
        );
        assert!(sizes[3..].iter().all(|s| *s < 10_000), "{sizes:?}");
        base_sizes.push(sizes[0]);
    }
    base_sizes.dedup();
    assert_eq!(base_sizes.len(), 7, "base layer sizes vary per platform");

    let variant = generate(&ImageSpec::python_like_variant(42)).expect("variant");
    let shared = variant
        .blobs
        .iter()
        .filter(|b| image.blobs.contains(b))
        .count();
    assert_eq!(shared, 7, "exactly the 7 base layers are shared");
    assert_ne!(variant.root_digest(), image.root_digest());
}

#[test]
fn docker_format_and_attestations_use_the_right_types_and_annotations() {
    let image = generate(
        &ImageSpec::small("docker-att", 3)
            .docker()
            .with_attestations(),
    )
    .expect("generate");
    assert_eq!(
        image.root.media_type().to_string(),
        media_types::DOCKER_LIST
    );
    assert_eq!(image.manifests.len(), 4);
    assert_eq!(image.image_manifests().len(), 2);
    let images = image.image_manifests();
    for (descriptor, platform) in &image.manifests {
        let annotations = descriptor.annotations().clone().unwrap_or_default();
        match annotations.get("vnd.docker.reference.type") {
            None => {
                assert_eq!(
                    descriptor.media_type().to_string(),
                    media_types::DOCKER_MANIFEST
                );
                let raw = image.read_blob(descriptor.digest()).expect("manifest");
                let json: serde_json::Value = serde_json::from_slice(&raw).expect("json");
                assert_eq!(json["config"]["mediaType"], media_types::DOCKER_CONFIG);
                assert_eq!(
                    json["layers"][0]["mediaType"],
                    media_types::DOCKER_LAYER_GZIP
                );
            }
            Some(kind) => {
                assert_eq!(kind, "attestation-manifest");
                let subject = annotations
                    .get("vnd.docker.reference.digest")
                    .expect("subject");
                assert!(
                    images
                        .iter()
                        .any(|(d, _)| &d.digest().to_string() == subject)
                );
                let platform = platform.as_ref().expect("platform");
                assert_eq!(mirror_oci::platform_string(platform), "unknown/unknown");
                let raw = image.read_blob(descriptor.digest()).expect("manifest");
                let json: serde_json::Value = serde_json::from_slice(&raw).expect("json");
                assert_eq!(
                    json["layers"][0]["mediaType"],
                    "application/vnd.in-toto+json"
                );
            }
        }
    }
}

#[test]
fn single_layer_streams_to_disk_and_its_root_is_a_manifest() {
    let size = 48 * 1024 * 1024;
    let image = generate(&ImageSpec::single_layer("single-48m", size)).expect("generate");
    assert_eq!(
        image.root.media_type().to_string(),
        media_types::OCI_MANIFEST
    );
    assert!(image.manifests.is_empty());
    assert_eq!(image.blobs.len(), 2);
    let layer = image.blobs.iter().max_by_key(|b| b.size()).expect("layer");
    assert!(layer.size() > size && layer.size() < size + size / 100);
    assert_eq!(
        &sha256_of_file(&image.blob_path(layer.digest())),
        layer.digest()
    );
    assert!(image.total_blob_bytes() > size);
}
