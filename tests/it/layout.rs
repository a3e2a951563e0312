//! Local images: OCI layout directories and archives as sources and
//! destinations (air gap export and import, several images in one archive,
//! interoperability with skopeo and buildah, hostile and damaged input).
//!
//! What a layout holds is read from the files themselves (`index.json`,
//! `blobs/sha256/`, the tar's entries) and through skopeo; what a registry
//! holds through the test kit's client. The binary's report is checked too,
//! never trusted alone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mirror_testkit::{
    Fault, GeneratedImage, ImageSpec, PushAuth, RawEntry, Rule, TarEntry, blob_exists,
    layout_entries, open_layout, skopeo_digest, skopeo_inspect_raw, write_raw_tar,
};
use serde_json::Value;

use crate::support::{
    Mirror, Scratch, assert_landed, assert_no_manifest, blob_gets, copy_json, describe, flag,
    image, is_write, num, open_registry, proxy_to, seeded_registry, small_image, text,
    three_platforms,
};

const ANON: PushAuth = PushAuth::Anonymous;
const REF_NAME: &str = "org.opencontainers.image.ref.name";

// ---- helpers -------------------------------------------------------------------

/// `oci:PATH[:TAG]` / `oci-archive:PATH[:TAG]`.
fn loc(transport: &str, path: &Path, tag: Option<&str>) -> String {
    match tag {
        Some(tag) => format!("{transport}:{}:{tag}", path.display()),
        None => format!("{transport}:{}", path.display()),
    }
}

/// Every digest an image consists of: root, child manifests, configs, layers.
fn all_digests(image: &GeneratedImage) -> BTreeSet<String> {
    let mut digests = BTreeSet::from([image.root_digest().to_string()]);
    digests.extend(image.manifests.iter().map(|(d, _)| d.digest().to_string()));
    digests.extend(image.blobs.iter().map(|d| d.digest().to_string()));
    digests
}

/// `(ref name, digest)` of every entry of a layout's `index.json`.
fn ref_names(index_json: &[u8]) -> Vec<(Option<String>, String)> {
    let index: Value = serde_json::from_slice(index_json).expect("index.json is JSON");
    index["manifests"]
        .as_array()
        .expect("index.json has manifests")
        .iter()
        .map(|entry| {
            (
                entry["annotations"][REF_NAME].as_str().map(str::to_owned),
                entry["digest"].as_str().expect("a digest").to_owned(),
            )
        })
        .collect()
}

/// The files under `DIR/blobs/sha256/`, as `sha256:HEX`.
fn layout_blobs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap_or_else(|e| panic!("listing {}/blobs/sha256: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.expect("a directory entry");
            assert!(
                entry.file_type().expect("file type").is_file(),
                "{} is not a regular file",
                entry.path().display()
            );
            format!("sha256:{}", entry.file_name().to_string_lossy())
        })
        .collect();
    names.sort();
    names
}

fn tar_entries(file: &Path) -> Vec<TarEntry> {
    mirror_testkit::tar_entries(file).expect("reading a tar")
}

/// The blobs of an oci-archive (`blobs/sha256/HEX` entries), as `sha256:HEX`.
fn archive_blobs(file: &Path) -> Vec<String> {
    mirror_testkit::archive_blobs(file).expect("reading an archive's blobs")
}

/// The bytes of one file entry of a tar.
fn archive_file(file: &Path, name: &str) -> Vec<u8> {
    mirror_testkit::tar_file(file, name).expect("reading a tar entry")
}

/// Files a write left behind in `dir`: `*.partial`, `*.tmp`, `.tmp*`.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".partial") || name.ends_with(".tmp") || name.contains(".tmp") {
                found.push(entry.path().display().to_string());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    found
}

fn copy_dir(from: &Path, to: &Path) {
    mirror_testkit::copy_dir(from, to).expect("copying a layout");
}

/// `mirror inspect LOCATION --json`: `(name, digest)` of every image.
async fn inspect_local(location: &str) -> Vec<(Option<String>, String)> {
    let out = Mirror::inspect(location).arg("--json").run().await;
    out.expect_success();
    let report = out.json();
    assert_eq!(text(&report, "/location"), location, "{report:#}");
    report["images"]
        .as_array()
        .unwrap_or_else(|| panic!("no images array: {report:#}"))
        .iter()
        .map(|image| {
            for key in ["media_type", "size"] {
                assert!(!image[key].is_null(), "image without {key}: {report:#}");
            }
            (
                image["name"].as_str().map(str::to_owned),
                text(image, "/digest").to_owned(),
            )
        })
        .collect()
}

/// Two small two-platform images whose base layers (one per platform) are
/// the same blobs and whose other layers and configs differ.
fn sharing_pair() -> (ImageSpec, ImageSpec) {
    let spec = |name: &str, seed| ImageSpec {
        base_seed: Some(4_242),
        ..ImageSpec::small(name, seed)
    };
    (spec("it-layout-share-a", 31), spec("it-layout-share-b", 32))
}

// ---- air gap ---------------------------------------------------------------------

/// registry -> oci-archive -> another registry: the same root digest and
/// every manifest and blob at the far end; skopeo reads our archive; `mirror
/// inspect` lists it; nothing temporary is left beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn air_gap_round_trip_through_an_oci_archive() {
    let image = small_image().await;
    let src = seeded_registry(&image, "library/app", "v1").await;
    let dst = open_registry().await;
    let scratch = Scratch::new("airgap");
    let archive = scratch.path().join("images.tar");

    // Export: no tag on the archive, so the source's tag names the image.
    let out = copy_json(
        &format!("{}/library/app:v1", src.host()),
        &loc("oci-archive", &archive, None),
    )
    .await;
    let report = out.json();
    assert_eq!(text(&report, "/digest"), image.root_digest().to_string());
    assert_eq!(num(&report, "/blobs/copied"), image.blobs.len() as u64);
    assert!(archive.is_file(), "no archive at {}", archive.display());
    assert!(
        leftovers(scratch.path()).is_empty(),
        "left behind: {:?}",
        leftovers(scratch.path())
    );

    // The archive, read as a tar: the layout files and every blob once.
    let names: BTreeSet<String> = tar_entries(&archive)
        .into_iter()
        .map(|e| e.plain_name().to_owned())
        .collect();
    assert!(
        names.contains("oci-layout") && names.contains("index.json"),
        "{names:?}"
    );
    let blobs = archive_blobs(&archive);
    let expected: Vec<String> = all_digests(&image).into_iter().collect();
    assert_eq!(blobs, expected, "the archive's blobs");
    assert_eq!(
        ref_names(&archive_file(&archive, "index.json")),
        vec![(Some("v1".to_owned()), image.root_digest().to_string())]
    );

    // skopeo reads it, byte for byte.
    let raw = skopeo_inspect_raw(&loc("oci-archive", &archive, Some("v1")), None)
        .await
        .expect("skopeo reads our oci-archive");
    assert_eq!(
        mirror_oci::digest_of(&raw).to_string(),
        image.root_digest().to_string(),
        "skopeo sees another root in our archive"
    );

    // mirror inspect lists it.
    assert_eq!(
        inspect_local(&loc("oci-archive", &archive, None)).await,
        vec![(Some("v1".to_owned()), image.root_digest().to_string())]
    );

    // Import: a destination without a tag keeps the archive's.
    assert_copies_root(
        &loc("oci-archive", &archive, Some("v1")),
        &format!("{}/mirrored/app", dst.host()),
        image.root_digest().as_ref(),
    )
    .await;
    assert_landed(&dst.host(), "mirrored/app", "v1", &image, &ANON).await;
    assert_eq!(
        skopeo_digest(&format!("docker://{}/mirrored/app:v1", dst.host()), None)
            .await
            .expect("skopeo reads the destination"),
        image.root_digest().to_string()
    );

    // The archive was only read.
    assert!(leftovers(scratch.path()).is_empty());
}

/// Two images into one layout directory and one archive under two tags:
/// both ref names, shared blobs stored once, a re-run is up to date, and
/// each image comes back out whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_images_share_one_layout_and_one_archive() {
    let (spec_a, spec_b) = sharing_pair();
    let (a, b) = (image(spec_a).await, image(spec_b).await);
    let shared: BTreeSet<String> = all_digests(&a)
        .intersection(&all_digests(&b))
        .cloned()
        .collect();
    assert_eq!(shared.len(), 2, "the pair should share its two base layers");
    let union: Vec<String> = all_digests(&a).union(&all_digests(&b)).cloned().collect();

    let src = seeded_registry(&a, "app", "a").await;
    crate::support::seed(&b, &src.host(), "app", "b").await;
    let dst = open_registry().await;
    let scratch = Scratch::new("many");
    let dir = scratch.path().join("layout");
    let archive = scratch.path().join("images.tar");

    for target in [loc("oci", &dir, None), loc("oci-archive", &archive, None)] {
        let transport = target.split(':').next().expect("a transport").to_owned();
        let path = if transport == "oci" { &dir } else { &archive };
        for (tag, image) in [("a", &a), ("b", &b)] {
            let out = copy_json(&format!("{}/app:{tag}", src.host()), &target).await;
            let report = out.json();
            assert!(!flag(&report, "/up_to_date"), "{report:#}");
            assert_eq!(text(&report, "/digest"), image.root_digest().to_string());
            if tag == "b" {
                assert_eq!(
                    num(&report, "/blobs/skipped"),
                    shared.len() as u64,
                    "the second image should skip the shared blobs: {report:#}"
                );
            }
        }

        let (index, blobs) = if transport == "oci" {
            (
                std::fs::read(dir.join("index.json")).expect("index.json"),
                layout_blobs(&dir),
            )
        } else {
            (
                archive_file(&archive, "index.json"),
                archive_blobs(&archive),
            )
        };
        let mut names = ref_names(&index);
        names.sort();
        assert_eq!(
            names,
            vec![
                (Some("a".to_owned()), a.root_digest().to_string()),
                (Some("b".to_owned()), b.root_digest().to_string()),
            ],
            "{target}: index.json entries"
        );
        assert_eq!(blobs, union, "{target}: every blob once, shared ones too");
        let mut listed = inspect_local(&target).await;
        listed.sort();
        assert_eq!(listed, names, "{target}: mirror inspect");
        assert!(
            leftovers(scratch.path()).is_empty(),
            "left behind: {:?}",
            leftovers(scratch.path())
        );

        // Warm: nothing to do.
        let out = copy_json(&format!("{}/app:a", src.host()), &target).await;
        assert!(flag(&out.json(), "/up_to_date"), "{}", out.describe());

        // Each image comes back out by its tag.
        for (tag, image) in [("a", &a), ("b", &b)] {
            let repo = format!("from-{transport}");
            Mirror::copy(
                &loc(&transport, path, Some(tag)),
                &format!("{}/{repo}:{tag}", dst.host()),
            )
            .run()
            .await
            .expect_success();
            assert_landed(&dst.host(), &repo, tag, image, &ANON).await;
        }
    }

    // Without a tag, a source holding two images is ambiguous.
    let out = Mirror::copy(
        &loc("oci-archive", &archive, None),
        &format!("{}/x:y", dst.host()),
    )
    .run()
    .await;
    out.expect_code(1);
    assert!(
        out.stderr.contains("holds 2 images") && out.stderr.contains("tags: a, b"),
        "the error should name the tags to choose from\n{}",
        out.describe()
    );
    assert_no_manifest(&dst.host(), "x", "y", &ANON).await;
}

// ---- other tools' files --------------------------------------------------------

/// An archive skopeo wrote (`skopeo copy --all --preserve-digests`) is read
/// by mirror and lands with the source's digests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_reads_an_archive_skopeo_wrote() {
    let image = image(three_platforms("it-layout-skopeo", 33)).await;
    let src = seeded_registry(&image, "app", "v3").await;
    let dst = open_registry().await;
    let scratch = Scratch::new("skopeo-archive");
    let archive = scratch.path().join("skopeo.tar");

    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--src-no-creds",
        &format!("docker://{}/app:v3", src.host()),
        &loc("oci-archive", &archive, Some("v3")),
    ])
    .await;

    assert_eq!(
        inspect_local(&loc("oci-archive", &archive, None)).await,
        vec![(Some("v3".to_owned()), image.root_digest().to_string())]
    );
    assert_copies_root(
        &loc("oci-archive", &archive, Some("v3")),
        &format!("{}/app:v3", dst.host()),
        image.root_digest().as_ref(),
    )
    .await;
    assert_landed(&dst.host(), "app", "v3", &image, &ANON).await;
}

/// A `docker-archive` skopeo wrote (layers decompressed, no registry
/// manifest): mirror computes a Docker manifest whose config is the source's
/// exact config and whose layers are its diff_ids; skopeo reads what landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_reads_a_docker_archive_skopeo_wrote() {
    let image = image(ImageSpec::single_layer("it-layout-docker-archive", 200_003)).await;
    let src = seeded_registry(&image, "app", "v1").await;
    let dst = open_registry().await;
    let scratch = Scratch::new("docker-archive");
    let archive = scratch.path().join("saved.tar");

    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-no-creds",
        &format!("docker://{}/app:v1", src.host()),
        &format!("docker-archive:{}:app:v1", archive.display()),
    ])
    .await;

    let out = copy_json(
        &format!("docker-archive:{}", archive.display()),
        &format!("{}/saved:v1", dst.host()),
    )
    .await;
    let report = out.json();

    let source: Value =
        serde_json::from_slice(&image.read_blob(&image.root_digest()).expect("the root"))
            .expect("the source manifest");
    let config_digest = text(&source, "/config/digest").to_owned();
    let config: Value = serde_json::from_slice(
        &image
            .read_blob(&mirror_oci::parse_digest(&config_digest).expect("a digest"))
            .expect("the config"),
    )
    .expect("the config is JSON");
    let diff_ids = crate::support::strings(&config, "/rootfs/diff_ids");

    let landed = crate::support::fetch(&dst.host(), "saved", "v1", &ANON).await;
    assert_eq!(text(&report, "/digest"), landed.digest);
    assert_eq!(
        landed.content_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let manifest = landed.json();
    assert_eq!(
        text(&manifest, "/config/digest"),
        config_digest,
        "the config must be the source's, byte for byte"
    );
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| text(l, "/digest").to_owned())
        .collect();
    assert_eq!(layers, diff_ids, "layers are the uncompressed tars");
    for digest in std::iter::once(&config_digest).chain(&layers) {
        let digest = mirror_oci::parse_digest(digest).expect("a digest");
        assert!(
            blob_exists(&dst.host(), "saved", &digest, &ANON)
                .await
                .expect("HEAD blob"),
            "{digest} is missing"
        );
    }
    assert_eq!(
        skopeo_digest(&format!("docker://{}/saved:v1", dst.host()), None)
            .await
            .expect("skopeo reads what landed"),
        landed.digest
    );
}

// ---- docker-archive as a destination -------------------------------------------

/// An image manifest of a generated image: its digest, its config digest and
/// its layer digests in order.
fn platform_image(image: &GeneratedImage, platform: &str) -> (String, String, Vec<String>) {
    let (descriptor, _) = image
        .image_manifests()
        .into_iter()
        .find(|(_, p)| {
            p.as_ref()
                .is_some_and(|p| mirror_oci::platform_string(p) == platform)
        })
        .unwrap_or_else(|| panic!("no {platform} image"));
    let manifest: Value = serde_json::from_slice(
        &image
            .read_blob(descriptor.digest())
            .expect("read the manifest"),
    )
    .expect("the manifest is JSON");
    let layers = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| text(l, "/digest").to_owned())
        .collect();
    (
        descriptor.digest().to_string(),
        text(&manifest, "/config/digest").to_owned(),
        layers,
    )
}

/// `manifest.json` of a docker-archive, checked to be what Docker reads: a
/// list of entries whose `Config` and `Layers` are files of the archive.
fn docker_manifest_json(file: &Path) -> Vec<Value> {
    let entries: Vec<Value> = serde_json::from_slice(&archive_file(file, "manifest.json"))
        .expect("manifest.json is a JSON list");
    for entry in &entries {
        for path in
            std::iter::once(&entry["Config"]).chain(entry["Layers"].as_array().expect("Layers"))
        {
            let path = path.as_str().expect("a path");
            assert!(
                !archive_file(file, path).is_empty(),
                "manifest.json names {path}, an empty file"
            );
        }
    }
    entries
}

/// The sha256 of the archive file a `manifest.json` path names.
fn file_digest(file: &Path, name: &Value) -> String {
    mirror_oci::digest_of(&archive_file(file, name.as_str().expect("a path"))).to_string()
}

/// The sha256 of each layer file a `manifest.json` entry names, in order.
fn stored_layers(file: &Path, entry: &Value) -> Vec<String> {
    entry["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|l| file_digest(file, l))
        .collect()
}

/// `mirror copy --json FROM TO` reports `root` as the digest it copied.
async fn assert_copies_root(from: &str, to: &str, root: &str) {
    let out = copy_json(from, to).await;
    assert_eq!(text(&out.json(), "/digest"), root, "{}", out.describe());
}

/// Runs skopeo; its stdout, or a panic with its stderr.
async fn skopeo(args: &[&str]) -> Vec<u8> {
    mirror_testkit::skopeo(args).await.expect("skopeo")
}

/// registry -> `docker-archive:FILE:app:1 --platform linux/amd64`: Docker's
/// manifest.json names that platform's exact config and layers (compressed,
/// as the registry serves them) under app:1; the report and the note say
/// what is kept (the image ID) and what is not (the manifest digest, for
/// manifest.json readers); skopeo reads it as a docker-archive; read by
/// mirror, as an oci-archive or a docker-archive, it keeps the manifest
/// digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_image_becomes_a_docker_archive() {
    let image = small_image().await;
    let (manifest, config, layers) = platform_image(&image, "linux/amd64");
    let src = seeded_registry(&image, "app", "v1").await;
    let dst = open_registry().await;
    let scratch = Scratch::new("docker-write");
    let archive = scratch.path().join("app.tar");

    let out = Mirror::copy(
        &format!("{}/app:v1", src.host()),
        &format!("docker-archive:{}:app:1", archive.display()),
    )
    .args(["--platform", "linux/amd64", "--json"])
    .run()
    .await;
    out.expect_success();
    let report = out.json();
    assert_eq!(text(&report, "/digest"), manifest, "{report:#}");
    assert_eq!(
        text(&report, "/docker_archive/image_id"),
        config,
        "{report:#}"
    );
    assert_eq!(
        crate::support::strings(&report, "/docker_archive/repo_tags"),
        ["app:1"]
    );
    let note = out
        .stderr
        .lines()
        .find(|l| l.starts_with("note: docker-archive:"))
        .unwrap_or_else(|| panic!("no note on stderr\n{}", out.describe()));
    assert!(
        note.contains(&format!("image ID {config}"))
            && note.contains(&format!("manifest digest {manifest}"))
            && note.contains(&format!("oci-archive:{}:app:1", archive.display())),
        "{note}"
    );
    assert!(
        leftovers(scratch.path()).is_empty(),
        "{:?}",
        leftovers(scratch.path())
    );

    // What Docker reads.
    let entries = docker_manifest_json(&archive);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(entry["RepoTags"], serde_json::json!(["app:1"]));
    assert_eq!(file_digest(&archive, &entry["Config"]), config);
    let stored = stored_layers(&archive, entry);
    assert_eq!(
        stored, layers,
        "the layers, in order, as the registry serves them"
    );

    // skopeo reads it as a docker-archive: the same config, and a copy.
    let docker = format!("docker-archive:{}", archive.display());
    let raw_config = skopeo(&["inspect", "--config", "--raw", &docker]).await;
    assert_eq!(mirror_oci::digest_of(&raw_config).to_string(), config);
    let copied = scratch.path().join("from-skopeo");
    skopeo(&[
        "copy",
        "--insecure-policy",
        &docker,
        &format!("oci:{}:x", copied.display()),
    ])
    .await;
    let copied_manifest =
        skopeo(&["inspect", "--raw", &format!("oci:{}:x", copied.display())]).await;
    let copied_manifest: Value = serde_json::from_slice(&copied_manifest).expect("JSON");
    assert_eq!(text(&copied_manifest, "/config/digest"), config);

    // Read as an oci-archive: the platform's manifest, digest and all.
    let out = Mirror::copy(
        &format!("oci-archive:{}:app:1", archive.display()),
        &format!("{}/oci:1", dst.host()),
    )
    .run()
    .await;
    out.expect_success();
    assert_eq!(
        crate::support::fetch(&dst.host(), "oci", "1", &ANON)
            .await
            .digest,
        manifest
    );
    // Read as a docker-archive: the stored manifest, digest and all.
    copy_json(&docker, &format!("{}/docker:1", dst.host())).await;
    let landed = crate::support::fetch(&dst.host(), "docker", "1", &ANON).await;
    assert_eq!(landed.digest, manifest);
    assert_eq!(text(&landed.json(), "/config/digest"), config);
    let landed_layers: Vec<String> = landed.json()["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| text(l, "/digest").to_owned())
        .collect();
    assert_eq!(landed_layers, layers);
}

/// A multi-platform image without --platform: exit 2 before anything is
/// read beyond the index or written (no FILE, FILE.partial, FILE.lock), the
/// message listing the platforms and suggesting --platform; `@N` cannot
/// name an image to write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_archive_refuses_an_index() {
    let image = small_image().await;
    let src = seeded_registry(&image, "app", "v1").await;
    let proxy = proxy_to(&src).await;
    let scratch = Scratch::new("docker-index");
    let archive = scratch.path().join("app.tar");

    let out = Mirror::copy(
        &format!("{}/app:v1", proxy.host()),
        &format!("docker-archive:{}", archive.display()),
    )
    .run()
    .await;
    out.expect_code(2);
    out.expect_error_line();
    assert!(
        out.stderr.contains(&format!(
            "error: docker-archive:{} holds one platform per image, and {}/app:v1 is",
            archive.display(),
            proxy.host()
        )) && out
            .stderr
            .contains("is an index of linux/amd64, linux/arm64/v8")
            && out
                .stderr
                .contains("choose one with --platform linux/amd64"),
        "{}",
        out.describe()
    );
    let requests = proxy.requests();
    assert!(
        !requests.iter().any(|r| r.path.contains("/blobs/")),
        "no blob is read for a refused copy\n{}",
        describe(&requests)
    );
    let left: Vec<_> = std::fs::read_dir(scratch.path())
        .expect("read the scratch dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "a refused copy left {left:?}");

    let out = Mirror::copy(
        &format!("{}/app:v1", proxy.host()),
        &format!("docker-archive:{}:@0", archive.display()),
    )
    .args(["--platform", "linux/amd64"])
    .run()
    .await;
    out.expect_code(2);
    assert!(out.stderr.contains("NAME:TAG"), "{}", out.describe());
    assert!(!archive.exists());
}

/// Two images into one docker-archive, named after their sources (two runs):
/// manifest.json lists both under their familiar names, the shared base
/// layer is stored once and skipped by the second run, and each image is
/// there whole. An image from an unnamed layout is listed untagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_images_share_one_docker_archive() {
    let (spec_a, spec_b) = sharing_pair();
    let (a, b) = (image(spec_a).await, image(spec_b).await);
    let src = seeded_registry(&a, "app", "a").await;
    crate::support::seed(&b, &src.host(), "app", "b").await;
    let scratch = Scratch::new("docker-many");
    let archive = scratch.path().join("images.tar");
    let target = format!("docker-archive:{}", archive.display());

    let mut expected = Vec::new();
    let mut blobs = BTreeSet::new();
    for (tag, image) in [("a", &a), ("b", &b)] {
        let (manifest, config, layers) = platform_image(image, "linux/amd64");
        let out = Mirror::copy(&format!("{}/app:{tag}", src.host()), &target)
            .args(["--platform", "linux/amd64", "--json"])
            .run()
            .await;
        out.expect_success();
        let report = out.json();
        let name = format!("{}/app:{tag}", src.host());
        assert_eq!(
            crate::support::strings(&report, "/docker_archive/repo_tags"),
            std::slice::from_ref(&name)
        );
        if tag == "b" {
            assert_eq!(
                num(&report, "/blobs/skipped"),
                1,
                "the shared base layer: {report:#}"
            );
        }
        blobs.extend([manifest, config.clone()]);
        blobs.extend(layers.iter().cloned());
        expected.push((vec![name], config, layers));
    }
    // An unnamed layout's only image: RepoTags null.
    let single = image(ImageSpec::single_layer("it-docker-untagged", 30_007)).await;
    Mirror::copy(&format!("oci:{}", single.layout.display()), &target)
        .run()
        .await
        .expect_success();
    blobs.extend(all_digests(&single));

    let entries = docker_manifest_json(&archive);
    assert_eq!(entries.len(), 3, "{entries:#?}");
    for (entry, (tags, config, layers)) in entries.iter().zip(&expected) {
        assert_eq!(crate::support::strings(entry, "/RepoTags"), *tags);
        assert_eq!(file_digest(&archive, &entry["Config"]), *config);
        let stored = stored_layers(&archive, entry);
        assert_eq!(stored, *layers);
    }
    assert_eq!(entries[2]["RepoTags"], Value::Null, "{:#}", entries[2]);
    // Every blob once (archive_blobs lists each entry), nothing else.
    let stored = archive_blobs(&archive);
    assert_eq!(
        stored.iter().cloned().collect::<BTreeSet<_>>().len(),
        stored.len(),
        "a blob is stored twice"
    );
    assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), blobs);
    assert!(leftovers(scratch.path()).is_empty());
}

/// The generator's layouts on disk (OCI and Docker media types) as sources:
/// by tag, and as "the only image" with the destination keeping its ref name.
/// The layout is only read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_layouts_are_sources() {
    let oci = image(three_platforms("it-layout-gen", 34)).await;
    let docker = image(ImageSpec::small("it-layout-gen-docker", 35).docker()).await;
    let single = image(ImageSpec::single_layer("it-layout-gen-single", 123_457)).await;
    let dst = open_registry().await;

    for (repo, image) in [
        ("gen/oci", &oci),
        ("gen/docker", &docker),
        ("gen/single", &single),
    ] {
        let index_before = std::fs::read(image.layout.join("index.json")).expect("index.json");
        let files_before = layout_blobs(&image.layout);

        let out = copy_json(
            &loc("oci", &image.layout, Some("latest")),
            &format!("{}/{repo}:v1", dst.host()),
        )
        .await;
        let report = out.json();
        assert_eq!(text(&report, "/digest"), image.root_digest().to_string());
        assert_eq!(
            text(&report, "/media_type"),
            image.root.media_type().to_string()
        );
        assert_landed(&dst.host(), repo, "v1", image, &ANON).await;

        // No tag on either side: the only image, under its ref name.
        Mirror::copy(
            &loc("oci", &image.layout, None),
            &format!("{}/{repo}", dst.host()),
        )
        .run()
        .await
        .expect_success();
        assert_landed(&dst.host(), repo, "latest", image, &ANON).await;

        assert_eq!(
            std::fs::read(image.layout.join("index.json")).expect("index.json"),
            index_before,
            "the source layout's index.json changed"
        );
        assert_eq!(layout_blobs(&image.layout), files_before);
    }

    // A tag the layout does not have: exit 1, naming what it has.
    let out = Mirror::copy(
        &loc("oci", &oci.layout, Some("nope")),
        &format!("{}/gen/oci:nope", dst.host()),
    )
    .run()
    .await;
    out.expect_code(1);
    assert!(
        out.stderr.contains("nope") && out.stderr.contains("latest"),
        "{}",
        out.describe()
    );
    assert_no_manifest(&dst.host(), "gen/oci", "nope", &ANON).await;
}

// ---- hostile and damaged input -------------------------------------------------

/// A tar holding a complete, valid layout of `image` plus one hostile entry.
fn hostile_archive(image: &GeneratedImage, file: &Path, hostile: &RawEntry) {
    let mut entries = layout_entries(&image.layout).expect("reading the layout");
    entries.push(hostile.clone());
    write_raw_tar(file, &entries).expect("writing the archive");
}

/// An archive with an entry that escapes (`..`, an absolute name) or a link
/// where a layout file belongs (`blobs/`, `index.json`): refused by name with
/// exit 1, nothing written beside or above it, nothing sent to the registry.
/// A link elsewhere (as `docker save` writes) is ignored, never followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_archive_entries_are_refused() {
    let image = small_image().await;
    let dst = open_registry().await;
    let proxy = proxy_to(&dst).await;
    let cases = [
        RawEntry::file("../evil", &b"pwned\n"[..]),
        RawEntry::file("blobs/sha256/../../../evil", &b"pwned\n"[..]),
        RawEntry::file("/tmp/mirror-it-evil", &b"pwned\n"[..]),
        RawEntry::symlink("blobs/sha256/evil-link", "../../../../etc/passwd"),
        RawEntry::symlink("index.json", "/etc/passwd"),
        RawEntry::hard_link("blobs/evil-hard", "/etc/passwd"),
    ];
    for (i, hostile) in cases.iter().enumerate() {
        let scratch = Scratch::new("hostile");
        let inner = scratch.path().join("a/b");
        std::fs::create_dir_all(&inner).expect("create the nest");
        let archive = inner.join("hostile.tar");
        hostile_archive(&image, &archive, hostile);
        let entry = hostile.name.as_str();
        let before: BTreeSet<PathBuf> = walk(scratch.path());
        let tag = format!("t{i}");

        let out = Mirror::copy(
            &loc("oci-archive", &archive, Some("latest")),
            &format!("{}/x:{tag}", proxy.host()),
        )
        .fails()
        .await;
        assert!(
            out.stderr.contains(entry),
            "the error should name the entry `{entry}`\n{}",
            out.describe()
        );
        assert_eq!(
            walk(scratch.path()),
            before,
            "files appeared around {}",
            archive.display()
        );
        assert!(!Path::new("/tmp/mirror-it-evil").exists());
        let log = proxy.requests();
        assert!(!log.iter().any(is_write), "{}", describe(&log));
        assert_no_manifest(&dst.host(), "x", &tag, &ANON).await;

        // inspect refuses it the same way.
        let out = Mirror::inspect(&loc("oci-archive", &archive, None))
            .run()
            .await;
        out.expect_code(1);
        assert!(out.stderr.contains(entry), "{}", out.describe());
    }

    // A link outside the layout's files is not read, so not refused.
    let scratch = Scratch::new("hostile-ignored");
    let archive = scratch.path().join("link.tar");
    hostile_archive(
        &image,
        &archive,
        &RawEntry::symlink("legacy-link", "/etc/passwd"),
    );
    let before = walk(scratch.path());
    Mirror::copy(
        &loc("oci-archive", &archive, Some("latest")),
        &format!("{}/x:ignored", proxy.host()),
    )
    .run()
    .await
    .expect_success();
    assert_landed(&dst.host(), "x", "ignored", &image, &ANON).await;
    assert_eq!(walk(scratch.path()), before);
}

/// Every path under `dir`.
fn walk(dir: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
            found.insert(entry.path());
        }
    }
    found
}

/// A byte flipped in a blob of a layout directory, and in a blob inside an
/// archive: exit 1 naming the digest mismatch, no tag and no corrupt blob at
/// the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_local_blob_fails_and_leaves_no_tag() {
    let image = small_image().await;
    let dst = open_registry().await;
    let scratch = Scratch::new("corrupt");
    let layer = image.largest_blob().expect("a layer").clone();
    let hex = layer.digest().digest().to_owned();

    // A layout directory.
    let dir = scratch.path().join("layout");
    copy_dir(&image.layout, &dir);
    let blob = dir.join("blobs/sha256").join(&hex);
    let mut bytes = std::fs::read(&blob).expect("the blob");
    bytes[1_000] ^= 0xff;
    std::fs::write(&blob, &bytes).expect("corrupt the blob");

    // An archive of the intact layout, then corrupted in place.
    let archive = scratch.path().join("image.tar");
    Mirror::copy(
        &loc("oci", &image.layout, None),
        &loc("oci-archive", &archive, Some("v1")),
    )
    .run()
    .await
    .expect_success();
    let entry = tar_entries(&archive)
        .into_iter()
        .find(|e| e.name.ends_with(&hex))
        .expect("the layer in the archive");
    let mut bytes = std::fs::read(&archive).expect("the archive");
    bytes[entry.offset as usize + 1_000] ^= 0xff;
    std::fs::write(&archive, &bytes).expect("corrupt the archive");

    for (source, tag) in [
        (loc("oci", &dir, Some("latest")), "from-dir"),
        (loc("oci-archive", &archive, Some("v1")), "from-archive"),
    ] {
        let out = Mirror::copy(&source, &format!("{}/app:{tag}", dst.host()))
            .fails()
            .await;
        let stderr = out.stderr_lower();
        assert!(
            stderr.contains(&hex[..12])
                && (stderr.contains("mismatch") || stderr.contains("digest")),
            "the error should name the digest mismatch of {}\n{}",
            layer.digest(),
            out.describe()
        );
        assert_no_manifest(&dst.host(), "app", tag, &ANON).await;
        assert!(
            !blob_exists(&dst.host(), "app", layer.digest(), &ANON)
                .await
                .expect("HEAD blob"),
            "the corrupt blob was committed at the destination"
        );
    }
}

// ---- interrupted export ----------------------------------------------------------

/// An export whose one blob keeps failing stops with exit 1 and no archive;
/// the blobs it verified wait in `FILE.partial/`; the re-run fetches only
/// what is missing and leaves the right archive and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_export_resumes() {
    let image = small_image().await;
    let src = seeded_registry(&image, "app", "v1").await;
    let proxy = proxy_to(&src).await;
    let scratch = Scratch::new("resume");
    let archive = scratch.path().join("export.tar");
    let partial = scratch.path().join("export.tar.partial");
    // The largest layer (amd64) goes first and breaks late, after a delay in
    // which the other blobs complete.
    let broken = image.largest_blob().expect("a layer").digest().to_string();
    let path = format!("/blobs/{broken}");
    proxy.add_rule(
        Rule::new(Fault::Delay(Duration::from_millis(1_500)))
            .method("GET")
            .path_contains(&path),
    );
    proxy.add_rule(
        Rule::new(Fault::ResetAfter { bytes: 10_000 })
            .method("GET")
            .path_contains(&path),
    );
    let source = format!("{}/app:v1", proxy.host());
    let target = loc("oci-archive", &archive, Some("v1"));

    let out = Mirror::copy(&source, &target)
        .args(["--retries", "1"])
        .fails()
        .await;
    assert!(
        !archive.exists(),
        "an archive was committed by a failed copy"
    );
    assert!(
        partial.is_dir(),
        "no {} after the failed copy\n{}",
        partial.display(),
        out.describe()
    );
    let kept = layout_blobs(&partial);
    assert!(
        !kept.contains(&broken),
        "the broken blob was kept: {kept:?}"
    );
    // Every file kept is intact.
    for digest in &kept {
        let bytes =
            std::fs::read(partial.join("blobs/sha256").join(&digest[7..])).expect("a kept blob");
        assert_eq!(&mirror_oci::digest_of(&bytes).to_string(), digest);
    }
    let kept_blobs: Vec<String> = image
        .blobs
        .iter()
        .map(|b| b.digest().to_string())
        .filter(|d| kept.contains(d))
        .collect();
    eprintln!(
        "kept {} of {} blobs in {}",
        kept_blobs.len(),
        image.blobs.len(),
        partial.display()
    );
    // 1.5 s is ages for seven small blobs on loopback.
    assert_eq!(
        kept_blobs.len(),
        image.blobs.len() - 1,
        "every blob but the broken one should wait in the partial layout"
    );
    assert!(
        !leftovers(scratch.path())
            .iter()
            .any(|p| p.ends_with(".tmp")),
        "{:?}",
        leftovers(scratch.path())
    );

    // The network is back.
    proxy.clear_rules();
    proxy.clear_requests();
    let out = Mirror::copy(&source, &target)
        .args(["--retries", "1", "--json"])
        .run()
        .await;
    out.expect_success();
    let report = out.json();
    assert_eq!(text(&report, "/digest"), image.root_digest().to_string());
    let log = proxy.requests();
    for digest in &kept_blobs {
        assert_eq!(
            blob_gets(&log, digest),
            0,
            "{digest} was kept in the partial layout but fetched again\n{}",
            describe(&log)
        );
    }
    assert_eq!(blob_gets(&log, &broken), 1, "{}", describe(&log));

    assert!(archive.is_file());
    assert!(!partial.exists(), "{} remains", partial.display());
    assert!(
        leftovers(scratch.path()).is_empty(),
        "left behind: {:?}",
        leftovers(scratch.path())
    );
    assert_eq!(
        archive_blobs(&archive),
        all_digests(&image).into_iter().collect::<Vec<_>>()
    );
    assert_eq!(
        skopeo_digest(&target, None)
            .await
            .expect("skopeo reads the archive"),
        image.root_digest().to_string()
    );
}

// ---- concurrent writers -------------------------------------------------------

/// Two `mirror` processes writing two images into one layout directory, and
/// into one archive, at the same time (rounds of it: the race is narrow).
/// Both exit 0, the result names both images and holds every blob of each,
/// and no lock, partial or temporary file is left.
///
/// Writers hold an advisory lock (`DIR/.mirror.lock`, `FILE.lock`) while they
/// update `index.json` or commit the archive, and merge what is there then;
/// without it, an `index.json` update got lost in about a third of the rounds
/// and archive commits removed each other's `FILE.partial/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_processes_writing_one_layout_lose_nothing() {
    let (spec_a, spec_b) = sharing_pair();
    let (a, b) = (image(spec_a).await, image(spec_b).await);
    let src = seeded_registry(&a, "app", "a").await;
    crate::support::seed(&b, &src.host(), "app", "b").await;
    let mut problems = Vec::new();
    for round in 0..10 {
        let scratch = Scratch::new("concurrent");
        for transport in ["oci", "oci-archive"] {
            let path = scratch.path().join(format!("{transport}-target"));
            let target = loc(transport, &path, None);
            let (out_a, out_b) = tokio::join!(
                Mirror::copy(&format!("{}/app:a", src.host()), &target).run(),
                Mirror::copy(&format!("{}/app:b", src.host()), &target).run(),
            );
            for out in [&out_a, &out_b] {
                if out.code != 0 {
                    problems.push(format!(
                        "round {round} {transport}: a writer failed\n{}",
                        out.describe()
                    ));
                }
            }
            let listed = inspect_local(&target).await;
            let blobs = if transport == "oci" {
                layout_blobs(&path)
            } else {
                archive_blobs(&path)
            };
            for (tag, image) in [("a", &a), ("b", &b)] {
                let entry = (Some(tag.to_owned()), image.root_digest().to_string());
                if !listed.contains(&entry) {
                    problems.push(format!(
                        "round {round} {transport}: {target} lacks `{tag}`: it lists {listed:?}"
                    ));
                }
                let missing: Vec<String> = all_digests(image)
                    .into_iter()
                    .filter(|d| !blobs.contains(d))
                    .collect();
                if !missing.is_empty() {
                    problems.push(format!(
                        "round {round} {transport}: {target} lacks blobs of `{tag}`: {missing:?}"
                    ));
                }
            }
        }
        let left = leftovers(scratch.path())
            .into_iter()
            .chain(lock_files(scratch.path()))
            .collect::<Vec<_>>();
        if !left.is_empty() {
            problems.push(format!("round {round}: left behind: {left:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Lock files (`*.lock`) under `dir`.
fn lock_files(dir: &Path) -> Vec<String> {
    walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "lock"))
        .map(|p| p.display().to_string())
        .collect()
}

/// While another process holds a layout's or an archive's lock (here: the
/// test itself, through `flock`), a writer waits, saying so once at info
/// level, and writes nothing the lock guards; once it is released the copy
/// completes and removes the lock file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_waits_for_another_process_holding_the_lock() {
    const HELD: Duration = Duration::from_millis(2_500);
    let image = small_image().await;
    let src = seeded_registry(&image, "app", "v1").await;
    let scratch = Scratch::new("lock-wait");
    let dir = scratch.path().join("layout");
    let archive = scratch.path().join("images.tar");
    std::fs::create_dir_all(&dir).expect("create the layout dir");
    for (transport, path, lock_file, guarded) in [
        (
            "oci",
            &dir,
            dir.join(".mirror.lock"),
            dir.join("index.json"),
        ),
        (
            "oci-archive",
            &archive,
            scratch.path().join("images.tar.lock"),
            archive.clone(),
        ),
    ] {
        let held = std::fs::File::create(&lock_file).expect("create the lock file");
        held.lock().expect("take the lock");
        let target = loc(transport, path, Some("v1"));
        let copy = Mirror::copy(&format!("{}/app:v1", src.host()), &target)
            .arg("-v")
            .run();
        let release = async {
            tokio::time::sleep(HELD).await;
            assert!(
                !guarded.exists(),
                "{} was written while another process held {}",
                guarded.display(),
                lock_file.display()
            );
            drop(held);
        };
        let (out, ()) = tokio::join!(copy, release);
        out.expect_success();
        assert!(
            out.elapsed >= HELD,
            "{target}: the copy did not wait for the lock\n{}",
            out.describe()
        );
        let waiting = format!("waiting for another mirror writing {}", path.display());
        assert_eq!(
            out.stderr.matches(&waiting).count(),
            1,
            "{target}: expected `{waiting}` once\n{}",
            out.describe()
        );
        assert_eq!(
            inspect_local(&loc(transport, path, None)).await,
            vec![(Some("v1".to_owned()), image.root_digest().to_string())]
        );
        assert!(!lock_file.exists(), "{} remains", lock_file.display());
    }
    assert!(
        leftovers(scratch.path()).is_empty(),
        "left behind: {:?}",
        leftovers(scratch.path())
    );
}

// ---- a full disk -----------------------------------------------------------------

/// Whether this process runs as (effective uid) root.
fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// A tmpfs mounted over a directory, unmounted when dropped (lazily if a
/// process still uses it).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounting needs root: without it the test fails, saying so (it
    /// cannot check its claim otherwise).
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("create the mount point");
        let output = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("run mount");
        if output.status.success() {
            return Self {
                path: path.to_owned(),
            };
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            is_root(),
            "mounting a tmpfs (the full disk) needs root; run the tests as root \
             (scripts/test.sh does): {}",
            stderr.trim()
        );
        panic!(
            "mount -t tmpfs failed although we are root: {}",
            stderr.trim()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.path)
                .status();
        }
    }
}

/// Every file under `dir` whose name is a sha256 hex digest hashes to it.
fn assert_blobs_rehash(dir: &Path) {
    for path in walk(dir) {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if name.len() == 64 && path.parent().is_some_and(|p| p.ends_with("blobs/sha256")) {
            let bytes = std::fs::read(&path).expect("read a blob");
            assert_eq!(
                mirror_oci::digest_of(&bytes).to_string(),
                format!("sha256:{name}"),
                "{} does not hash to its name",
                path.display()
            );
        }
    }
}

/// Whether `text` names `path` itself (not only as the start of a longer
/// name such as `FILE.partial`).
fn mentions(text: &str, path: &Path) -> bool {
    let path = path.display().to_string();
    text.match_indices(&path).any(|(at, _)| {
        let mut rest = text[at + path.len()..].chars();
        match rest.next() {
            None => true,
            Some('.') => !rest.next().is_some_and(|c| c.is_alphanumeric()),
            Some(c) => !(c.is_alphanumeric() || c == '-' || c == '_' || c == '/'),
        }
    })
}

/// Whether stderr says in plain words that the disk is full, names `path`
/// and says what to do.
#[track_caller]
fn assert_says_disk_full(out: &crate::support::Output, path: &Path) {
    out.expect_code(1);
    out.expect_error_line();
    eprintln!("{}", out.stderr.trim());
    let stderr = out.stderr_lower();
    assert!(
        stderr.contains("no space left"),
        "stderr should say the disk is full\n{}",
        out.describe()
    );
    assert!(
        mentions(&out.stderr, path),
        "stderr should name {}\n{}",
        path.display(),
        out.describe()
    );
    assert!(
        stderr.contains("free") && stderr.contains("another directory"),
        "stderr should suggest freeing space or another directory\n{}",
        out.describe()
    );
}

/// A full disk (a 4 MiB tmpfs): a copy into a layout and into an archive
/// that does not fit fails with exit 1, saying the disk is full and where;
/// so does an archive commit that does not fit. The image copied there before
/// is still listed and whole (every blob re-hashes, it copies out), the
/// archive is byte for byte the one before, and no temporary or lock file
/// is left; what an archive copy had verified waits in `FILE.partial/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_cleanly_and_keeps_what_was_there() {
    let scratch = Scratch::new("disk-full");
    let disk = Tmpfs::mount(&scratch.path().join("disk"), "4m");
    let small = small_image().await;
    // Does not fit: a small layer that may land, then 8 MiB.
    let big = image(ImageSpec {
        name: "it-layout-disk-full-big".to_owned(),
        seed: 71,
        platforms: vec![mirror_testkit::PlatformSpec::new(
            "linux/amd64",
            vec![512 * 1024, 8 << 20],
        )],
        ..ImageSpec::default()
    })
    .await;
    // Fits once in FILE.partial/, not again in the archive it is committed to.
    let medium = image(ImageSpec::single_layer(
        "it-layout-disk-full-medium",
        2 << 20,
    ))
    .await;
    let src = seeded_registry(&small, "app", "small").await;
    crate::support::seed(&big, &src.host(), "app", "big").await;
    crate::support::seed(&medium, &src.host(), "app", "medium").await;
    let dst = open_registry().await;
    let dir = disk.path.join("layout");
    let archive = disk.path.join("images.tar");
    let partial = disk.path.join("images.tar.partial");
    let only_small = vec![(Some("small".to_owned()), small.root_digest().to_string())];

    for target in [loc("oci", &dir, None), loc("oci-archive", &archive, None)] {
        Mirror::copy(&format!("{}/app:small", src.host()), &target)
            .run()
            .await
            .expect_success();
    }
    let archive_before = std::fs::read(&archive).expect("the archive");

    // Blobs that do not fit.
    let out = Mirror::copy(&format!("{}/app:big", src.host()), &loc("oci", &dir, None))
        .run()
        .await;
    assert_says_disk_full(&out, &dir);
    let out = Mirror::copy(
        &format!("{}/app:big", src.host()),
        &loc("oci-archive", &archive, None),
    )
    .run()
    .await;
    assert_says_disk_full(&out, &archive);
    assert_eq!(
        std::fs::read(&archive).expect("the archive"),
        archive_before,
        "a failed copy changed the archive"
    );

    // An archive that does not fit: the blobs do, in the partial layout, but
    // the new archive (old one plus them) does not.
    let out = Mirror::copy(
        &format!("{}/app:medium", src.host()),
        &loc("oci-archive", &archive, None),
    )
    .run()
    .await;
    assert_says_disk_full(&out, &archive);
    assert!(
        mentions(&out.stderr, &partial),
        "the error should say where the verified blobs wait\n{}",
        out.describe()
    );
    let waiting = layout_blobs(&partial);
    assert!(
        all_digests(&medium).iter().all(|d| waiting.contains(d)),
        "the blobs should have fit and wait in {}: {waiting:?}",
        partial.display()
    );
    assert_eq!(
        std::fs::read(&archive).expect("the archive"),
        archive_before,
        "a failed commit changed the archive"
    );

    // No temporary or lock file; every blob anywhere is whole.
    let stray: Vec<String> = leftovers(&disk.path)
        .into_iter()
        .filter(|p| !p.ends_with(".partial"))
        .chain(lock_files(&disk.path))
        .collect();
    assert!(stray.is_empty(), "left behind: {stray:?}");
    assert_blobs_rehash(&disk.path);
    assert!(
        !ref_names(&std::fs::read(dir.join("index.json")).expect("index.json"))
            .iter()
            .any(|(_, digest)| digest == &big.root_digest().to_string()),
        "the layout names the image that did not fit"
    );

    // What was there before is listed and copies out whole.
    for (transport, path) in [("oci", &dir), ("oci-archive", &archive)] {
        assert_eq!(
            inspect_local(&loc(transport, path, None)).await,
            only_small,
            "{transport}"
        );
        let repo = format!("back-from-{transport}");
        Mirror::copy(
            &loc(transport, path, Some("small")),
            &format!("{}/{repo}:small", dst.host()),
        )
        .run()
        .await
        .expect_success();
        assert_landed(&dst.host(), &repo, "small", &small, &ANON).await;
    }
    drop(disk);
}

// ---- a real daemonless build ---------------------------------------------------

/// Runs a program; `Err` with its output when it cannot run or fails.
async fn run_tool(program: &str, args: &[&str]) -> Result<(), String> {
    mirror_testkit::run_tool(program, program, args)
        .await
        .map(drop)
        .map_err(|e| format!("{e:#}"))
}

/// `buildah bud --isolation chroot` + `buildah push oci:DIR:TAG`, then mirror
/// copies the layout to a registry: the digest buildah wrote is the one that
/// lands. buildah runs with its own storage under the scratch dir; where
/// buildah is missing or cannot build, the test fails with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildah_build_lands_in_a_registry() {
    mirror_testkit::require_tool("buildah", "buildah").unwrap_or_else(|e| panic!("{e}"));
    let scratch = Scratch::new("buildah");
    let context = scratch.path().join("context");
    std::fs::create_dir_all(&context).expect("create the build context");
    std::fs::write(context.join("hello.txt"), "hello from buildah\n").expect("hello.txt");
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY hello.txt /\n",
    )
    .expect("Dockerfile");
    let root = scratch.path().join("storage");
    let runroot = scratch.path().join("run");
    let layout = scratch.path().join("layout");
    let storage = [
        "--root",
        root.to_str().expect("utf-8 path"),
        "--runroot",
        runroot.to_str().expect("utf-8 path"),
        "--storage-driver",
        "vfs",
    ];
    let build: Vec<&str> = storage
        .iter()
        .copied()
        .chain([
            "bud",
            "--isolation",
            "chroot",
            "-t",
            "localhost/app:1",
            context.to_str().expect("utf-8 path"),
        ])
        .collect();
    run_tool("buildah", &build)
        .await
        .unwrap_or_else(|reason| panic!("buildah cannot build on this machine: {reason}"));
    let target = loc("oci", &layout, Some("1"));
    let push: Vec<&str> = storage
        .iter()
        .copied()
        .chain(["push", "localhost/app:1", &target])
        .collect();
    run_tool("buildah", &push)
        .await
        .unwrap_or_else(|e| panic!("buildah built but could not push: {e}"));
    // vfs storage may hold read-only directories; buildah removes its own.
    let rmi: Vec<&str> = storage.iter().copied().chain(["rmi", "--all"]).collect();
    let _ = run_tool("buildah", &rmi).await;

    let built = open_layout(&layout).expect("buildah's layout");
    let layout_digest = skopeo_digest(&target, None)
        .await
        .expect("skopeo reads buildah's layout");
    assert_eq!(layout_digest, built.root_digest().to_string());

    let dst = open_registry().await;
    assert_copies_root(&target, &format!("{}/app", dst.host()), &layout_digest).await;
    assert_landed(&dst.host(), "app", "1", &built, &ANON).await;
    assert_eq!(
        skopeo_digest(&format!("docker://{}/app:1", dst.host()), None)
            .await
            .expect("skopeo reads the registry"),
        layout_digest
    );
}

// ---- a real distribution -------------------------------------------------------

/// Runs a program that must finish within `limit`; it is killed when the
/// limit passes.
async fn run_tool_within(program: &str, args: &[&str], limit: Duration) -> Result<(), String> {
    tokio::time::timeout(limit, run_tool(program, args))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{program} {} did not finish within {limit:?}",
                args.join(" ")
            ))
        })
}

/// Where debootstrap downloads from.
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// debootstrap (minbase bookworm) + umoci: a real Debian root filesystem as
/// an OCI layout, copied to a registry and back into an archive. Needs root
/// and Debian's mirror: without either the test fails within seconds, saying
/// so (the committed fixtures/busybox layout covers a real image offline);
/// debootstrap gets 15 minutes (about a minute with a fast mirror).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debootstrap_debian_round_trip() {
    assert!(
        is_root(),
        "debootstrap needs root: run the tests as root (scripts/test.sh does)"
    );
    for (tool, package) in [
        ("debootstrap", "debootstrap"),
        ("umoci", "umoci"),
        ("curl", "curl"),
    ] {
        mirror_testkit::require_tool(tool, package).unwrap_or_else(|e| panic!("{e}"));
    }
    // curl honours http_proxy as debootstrap does.
    let release = format!("{DEBIAN_MIRROR}/dists/bookworm/Release");
    if let Err(e) = run_tool_within(
        "curl",
        &[
            "--fail",
            "--silent",
            "--show-error",
            "--connect-timeout",
            "15",
            "--output",
            "/dev/null",
            &release,
        ],
        Duration::from_secs(60),
    )
    .await
    {
        panic!(
            "Debian's mirror is unreachable from this machine ({release}), which this test \
             needs: {e}"
        );
    }
    let minutes = Duration::from_secs(60);
    let scratch = Scratch::new("debian");
    let rootfs = scratch.path().join("rootfs");
    let rootfs_text = rootfs.to_str().expect("utf-8 path");
    let started = std::time::Instant::now();
    run_tool_within(
        "debootstrap",
        &["--variant=minbase", "bookworm", rootfs_text, DEBIAN_MIRROR],
        15 * minutes,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("debootstrap took {:.1?}", started.elapsed());

    let layout = scratch.path().join("layout");
    let layout_text = layout.to_str().expect("utf-8 path");
    let image_ref = format!("{layout_text}:bookworm");
    for args in [
        &["init", "--layout", layout_text][..],
        &["new", "--image", &image_ref],
        &["insert", "--image", &image_ref, rootfs_text, "/"],
        &["config", "--image", &image_ref, "--config.cmd", "/bin/bash"],
    ] {
        run_tool_within("umoci", args, 5 * minutes)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    let built = open_layout(&layout).expect("umoci's layout");
    assert!(
        built.total_blob_bytes() > 10_000_000,
        "a Debian base should be tens of MB, got {}",
        built.total_blob_bytes()
    );
    let dst = open_registry().await;
    let source = loc("oci", &layout, Some("bookworm"));
    Mirror::copy(&source, &format!("{}/debian", dst.host()))
        .timeout(Duration::from_secs(600))
        .run()
        .await
        .expect_success();
    assert_landed(&dst.host(), "debian", "bookworm", &built, &ANON).await;

    let archive = scratch.path().join("debian.tar");
    let target = loc("oci-archive", &archive, None);
    Mirror::copy(&format!("{}/debian:bookworm", dst.host()), &target)
        .timeout(Duration::from_secs(600))
        .run()
        .await
        .expect_success();
    assert_eq!(
        inspect_local(&target).await,
        vec![(Some("bookworm".to_owned()), built.root_digest().to_string())]
    );
    assert_eq!(
        skopeo_digest(&loc("oci-archive", &archive, Some("bookworm")), None)
            .await
            .expect("skopeo reads the archive"),
        built.root_digest().to_string()
    );
}
