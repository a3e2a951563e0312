//! Copies that should work: what lands, what is skipped, what is not touched.

use std::collections::BTreeSet;
use std::path::Path;

use mirror_testkit::{
    GeneratedImage, ImageSpec, PlatformSpec, Proxy, PushAuth, RequestRecord, blob_exists,
    open_layout, skopeo_digest, skopeo_inspect_raw,
};
use serde_json::{Value, json};

use crate::support::{
    Mirror, Scratch, asks_presence, assert_landed, assert_no_manifest, blob_gets, blob_writes,
    copy_json, describe, fetch, flag, image, is_ping, is_write, num, open_registry, proxy_to, seed,
    seeded_registry, small_app_v1, small_image, strings, text,
};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ANON: PushAuth = PushAuth::Anonymous;

/// What the source's and the destination's proxies saw, and both described.
fn logs_of(src: &Proxy, dst: &Proxy) -> (Vec<RequestRecord>, Vec<RequestRecord>, String) {
    let (src_log, dst_log) = (src.requests(), dst.requests());
    let logs = format!(
        "source log:\n{}\ndestination log:\n{}",
        describe(&src_log),
        describe(&dst_log)
    );
    (src_log, dst_log, logs)
}

/// The python-shaped index (7 platforms, each with an attestation manifest)
/// lands byte for byte: same root digest, every child manifest and blob, and
/// skopeo reads the same bytes at both ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_platform_index_with_attestations_lands_byte_for_byte() {
    let image = image(ImageSpec::python_like().with_attestations()).await;
    assert_eq!(image.manifests.len(), 14, "7 images + 7 attestations");
    let src = seeded_registry(&image, "library/python", "3.10-slim").await;
    let dst = open_registry().await;
    let source = format!("{}/library/python:3.10-slim", src.host());
    let destination = format!("{}/mirror/python:3.10-slim", dst.host());

    let out = copy_json(&source, &destination).await;
    let report = out.json();

    assert_landed(&dst.host(), "mirror/python", "3.10-slim", &image, &ANON).await;

    // An independent client agrees, byte for byte.
    let raw_src = skopeo_inspect_raw(&format!("docker://{source}"), None)
        .await
        .expect("skopeo reads the source");
    let raw_dst = skopeo_inspect_raw(&format!("docker://{destination}"), None)
        .await
        .expect("skopeo reads the destination");
    assert!(raw_src == raw_dst, "skopeo sees different root manifests");
    let arm64 = image
        .image_manifests()
        .into_iter()
        .find(|(_, p)| {
            p.as_ref()
                .is_some_and(|p| p.architecture().to_string() == "arm64")
        })
        .expect("an arm64 child")
        .0;
    let child = format!("docker://{}/mirror/python@{}", dst.host(), arm64.digest());
    assert_eq!(
        skopeo_digest(&child, None)
            .await
            .expect("skopeo reads a child"),
        arm64.digest().to_string()
    );

    // The report.
    assert_eq!(text(&report, "/source"), source);
    assert_eq!(text(&report, "/destination"), destination);
    assert_eq!(text(&report, "/digest"), image.root_digest().to_string());
    assert_eq!(text(&report, "/media_type"), OCI_INDEX);
    assert_eq!(text(&report, "/kind"), "index");
    assert!(!flag(&report, "/up_to_date"));
    assert!(!flag(&report, "/dry_run"));
    assert!(report["filtered"].is_null(), "no --platform: {report:#}");
    let platforms = strings(&report, "/platforms");
    for (_, platform) in image.image_manifests() {
        let platform = platform.expect("children have platforms");
        let name = mirror_oci::platform_string(&platform);
        assert!(
            platforms.contains(&name),
            "{name} missing from the report's platforms {platforms:?}"
        );
    }
    let children = image.manifests.len() as u64;
    let manifests = num(&report, "/manifests/copied");
    assert!(
        manifests == children || manifests == children + 1,
        "manifests.copied = {manifests}, expected the {children} children (and the root): {report:#}"
    );
    assert_eq!(num(&report, "/blobs/copied"), image.blobs.len() as u64);
    assert_eq!(num(&report, "/blobs/skipped"), 0);
    assert_eq!(num(&report, "/bytes"), image.total_blob_bytes());
    assert!(num(&report, "/requests/put") >= image.blobs.len() as u64);
}

/// A Docker manifest list stays a Docker manifest list: same bytes, same
/// media type (no conversion to OCI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_media_types_are_kept() {
    let image = image(ImageSpec::small("it-docker", 2).docker()).await;
    assert_eq!(image.root.media_type().to_string(), DOCKER_LIST);
    let src = seeded_registry(&image, "app", "v1").await;
    let dst = open_registry().await;
    let destination = format!("{}/app:v1", dst.host());

    let out = copy_json(&format!("{}/app:v1", src.host()), &destination).await;
    let report = out.json();
    assert_eq!(text(&report, "/media_type"), DOCKER_LIST);
    assert_eq!(text(&report, "/kind"), "index");
    assert_landed(&dst.host(), "app", "v1", &image, &ANON).await;
    assert_eq!(
        skopeo_digest(&format!("docker://{destination}"), None)
            .await
            .expect("skopeo reads the destination"),
        image.root_digest().to_string()
    );
}

/// A one-platform image (the root is a manifest, not an index).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_manifest_image_is_copied_as_an_image() {
    let image = image(ImageSpec::single_layer("it-single-300k", 300_000)).await;
    let src = seeded_registry(&image, "tools/app", "1.0").await;
    let dst = open_registry().await;

    let out = copy_json(
        &format!("{}/tools/app:1.0", src.host()),
        &format!("{}/tools/app:1.0", dst.host()),
    )
    .await;
    let report = out.json();
    assert_eq!(text(&report, "/kind"), "image");
    assert_eq!(text(&report, "/digest"), image.root_digest().to_string());
    assert_eq!(num(&report, "/blobs/copied"), 2, "config and layer");
    assert_landed(&dst.host(), "tools/app", "1.0", &image, &ANON).await;
}

/// `DST` without a tag or digest keeps the source's tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_without_tag_keeps_the_source_tag() {
    let image = small_image().await;
    let src = seeded_registry(&image, "team/app", "2.3.1").await;
    let dst = open_registry().await;

    let out = copy_json(
        &format!("{}/team/app:2.3.1", src.host()),
        &format!("{}/mirror/app", dst.host()),
    )
    .await;
    assert_landed(&dst.host(), "mirror/app", "2.3.1", &image, &ANON).await;
    assert_no_manifest(&dst.host(), "mirror/app", "latest", &ANON).await;
    assert_eq!(
        text(&out.json(), "/destination"),
        format!("{}/mirror/app:2.3.1", dst.host())
    );
}

/// A source by digest, a destination by tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_by_digest_lands_under_the_destination_tag() {
    let (image, src, dst) = small_app_v1().await;

    let out = copy_json(
        &format!("{}/app@{}", src.host(), image.root_digest()),
        &format!("{}/pinned/app:stable", dst.host()),
    )
    .await;
    assert_eq!(
        text(&out.json(), "/digest"),
        image.root_digest().to_string()
    );
    assert_landed(&dst.host(), "pinned/app", "stable", &image, &ANON).await;
}

/// The second run of the same copy is one HEAD per side: the destination tag
/// already points at the source digest, so nothing is read or written.
/// (Referrers off: what looking for new ones costs on top is measured in
/// `referrers::another_tools_referrer_survives_and_a_warm_run_costs_what_the_readme_says`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_rerun_is_one_head_per_registry() {
    let (image, src, dst) = small_app_v1().await;
    let src_proxy = proxy_to(&src).await;
    let dst_proxy = proxy_to(&dst).await;
    let source = format!("{}/app:v1", src_proxy.host());
    let destination = format!("{}/app:v1", dst_proxy.host());

    let first = copy_json(&source, &destination).await;
    assert!(!flag(&first.json(), "/up_to_date"));
    assert_landed(&dst.host(), "app", "v1", &image, &ANON).await;

    src_proxy.clear_requests();
    dst_proxy.clear_requests();
    let second = Mirror::copy(&source, &destination)
        .args(["--json", "--referrers", "none"])
        .run()
        .await;
    second.expect_success();
    let report = second.json();
    let (src_log, dst_log, logs) = logs_of(&src_proxy, &dst_proxy);

    let tag_head = |log: &[mirror_testkit::RequestRecord]| -> Vec<String> {
        log.iter()
            .filter(|r| !is_ping(r))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    };
    assert_eq!(
        tag_head(&dst_log),
        vec!["HEAD /v2/app/manifests/v1".to_owned()],
        "destination: exactly one HEAD of the tag\n{logs}"
    );
    assert_eq!(
        tag_head(&src_log),
        vec!["HEAD /v2/app/manifests/v1".to_owned()],
        "source: exactly one HEAD of the tag\n{logs}"
    );
    assert!(!dst_log.iter().any(is_write), "{logs}");

    assert!(flag(&report, "/up_to_date"), "{report:#}");
    assert_eq!(text(&report, "/digest"), image.root_digest().to_string());
    assert_eq!(num(&report, "/manifests/copied"), 0);
    assert_eq!(num(&report, "/blobs/copied"), 0);
    assert_eq!(num(&report, "/bytes"), 0);
    assert_eq!(num(&report, "/requests/put"), 0);
    assert_eq!(num(&report, "/requests/post"), 0);
    assert_eq!(num(&report, "/requests/patch"), 0);
    assert_eq!(
        num(&report, "/requests/total"),
        (src_log.len() + dst_log.len()) as u64,
        "the report counts the requests the registries saw\n{logs}"
    );
}

/// Two images with the same base layers (per platform).
fn shared_base(name: &str, seed: u64) -> ImageSpec {
    ImageSpec {
        base_seed: Some(0x5EED_BA5E),
        ..ImageSpec::small(name, seed)
    }
}

fn digests(image: &GeneratedImage) -> BTreeSet<String> {
    image.blobs.iter().map(|b| b.digest().to_string()).collect()
}

/// Blobs the destination repository already holds are neither downloaded nor
/// uploaded; the rest are downloaded exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_already_at_the_destination_are_skipped() {
    let old = image(shared_base("it-shared-old", 11)).await;
    let new = image(shared_base("it-shared-new", 12)).await;
    let shared: BTreeSet<String> = digests(&old)
        .intersection(&digests(&new))
        .cloned()
        .collect();
    assert_eq!(shared.len(), 2, "one base layer per platform is shared");

    let src = seeded_registry(&new, "app", "new").await;
    let dst = seeded_registry(&old, "app", "old").await;
    let src_proxy = proxy_to(&src).await;
    let dst_proxy = proxy_to(&dst).await;

    let out = copy_json(
        &format!("{}/app:new", src_proxy.host()),
        &format!("{}/app:new", dst_proxy.host()),
    )
    .await;
    assert_landed(&dst.host(), "app", "new", &new, &ANON).await;

    let (src_log, dst_log, logs) = logs_of(&src_proxy, &dst_proxy);
    for digest in digests(&new) {
        let (gets, writes) = (blob_gets(&src_log, &digest), blob_writes(&dst_log, &digest));
        if shared.contains(&digest) {
            assert_eq!(gets, 0, "{digest} is at the destination: no GET\n{logs}");
            assert_eq!(
                writes, 0,
                "{digest} is at the destination: no upload\n{logs}"
            );
        } else {
            assert_eq!(gets, 1, "{digest} must be read exactly once\n{logs}");
        }
    }
    // Whether a blob is there is asked by a mount from the repository
    // itself (201: there; 202: the upload it opens carries the blob), never
    // by a HEAD first.
    let blob_heads = dst_log
        .iter()
        .filter(|r| r.method == "HEAD" && r.path.contains("/blobs/"))
        .count();
    assert_eq!(blob_heads, 0, "no blob HEAD at the destination\n{logs}");
    let present = dst_log
        .iter()
        .filter(|r| asks_presence(r) && r.status == 201)
        .count();
    assert_eq!(present, shared.len(), "{logs}");
    let report = out.json();
    assert_eq!(num(&report, "/blobs/skipped"), shared.len() as u64);
    assert_eq!(
        num(&report, "/blobs/copied"),
        (new.blobs.len() - shared.len()) as u64
    );
    let expected_bytes: u64 = new
        .blobs
        .iter()
        .filter(|b| !shared.contains(&b.digest().to_string()))
        .map(|b| b.size())
        .sum();
    assert_eq!(num(&report, "/bytes"), expected_bytes);
}

/// Writes an OCI layout whose index holds the root manifests of two
/// one-platform images (labelled as two platforms), so that its children
/// share blobs.
fn compose_index(dir: &Path, a: &GeneratedImage, b: &GeneratedImage) -> GeneratedImage {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).expect("create blobs dir");
    for image in [a, b] {
        let from = image.layout.join("blobs").join("sha256");
        for entry in std::fs::read_dir(&from).expect("read blobs") {
            let entry = entry.expect("dir entry");
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') || blobs.join(&name).exists() {
                continue;
            }
            if std::fs::hard_link(entry.path(), blobs.join(&name)).is_err() {
                std::fs::copy(entry.path(), blobs.join(&name)).expect("copy a blob");
            }
        }
    }
    let child = |image: &GeneratedImage, platform: Value| {
        json!({
            "mediaType": image.root.media_type().to_string(),
            "digest": image.root_digest().to_string(),
            "size": image.root.size(),
            "platform": platform,
        })
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            child(a, json!({"architecture": "amd64", "os": "linux"})),
            child(b, json!({"architecture": "amd64", "os": "linux", "variant": "v3"})),
        ],
    });
    let bytes = serde_json::to_vec(&index).expect("serialise the index");
    let digest = mirror_oci::digest_of(&bytes);
    std::fs::write(blobs.join(digest.digest()), &bytes).expect("write the index");
    let layout_index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_INDEX,
            "digest": digest.to_string(),
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&layout_index).expect("serialise index.json"),
    )
    .expect("write index.json");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    open_layout(dir).expect("open the composed layout")
}

/// Within one run, a blob that several manifests use is downloaded and
/// uploaded once, even with every blob in flight at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_shared_within_one_index_move_once() {
    let one = |name: &str, seed: u64| ImageSpec {
        name: name.to_owned(),
        seed,
        base_seed: Some(0xD0D0_CACA),
        platforms: vec![PlatformSpec::new(
            "linux/amd64",
            vec![200 * 1024, 16 * 1024, 4 * 1024],
        )],
        ..ImageSpec::default()
    };
    let a = image(one("it-dedup-a", 21)).await;
    let b = image(one("it-dedup-b", 22)).await;
    let shared: BTreeSet<String> = digests(&a).intersection(&digests(&b)).cloned().collect();
    assert_eq!(shared.len(), 1, "the base layer is shared");
    let scratch = Scratch::new("composed");
    let composed = compose_index(scratch.path(), &a, &b);
    assert_eq!(composed.manifests.len(), 2);
    assert_eq!(composed.blobs.len(), a.blobs.len() + b.blobs.len() - 1);

    let src = seeded_registry(&composed, "app", "both").await;
    let dst = open_registry().await;
    let src_proxy = proxy_to(&src).await;
    let dst_proxy = proxy_to(&dst).await;
    let out = Mirror::copy(
        &format!("{}/app:both", src_proxy.host()),
        &format!("{}/app:both", dst_proxy.host()),
    )
    .args(["--json", "--max-concurrent-blobs", "16"])
    .run()
    .await;
    out.expect_success();
    assert_landed(&dst.host(), "app", "both", &composed, &ANON).await;

    let (src_log, dst_log, logs) = logs_of(&src_proxy, &dst_proxy);
    for digest in digests(&composed) {
        assert_eq!(
            blob_gets(&src_log, &digest),
            1,
            "{digest}: one GET at the source\n{logs}"
        );
        assert!(
            blob_writes(&dst_log, &digest) <= 1,
            "{digest}: at most one upload\n{logs}"
        );
    }
    let report = out.json();
    assert_eq!(num(&report, "/blobs/copied"), composed.blobs.len() as u64);
    assert_eq!(num(&report, "/bytes"), composed.total_blob_bytes());
}

/// Two repositories of one registry: whatever the engine does (mount or
/// copy), the image lands and the report adds up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_between_repositories_of_one_registry() {
    let image = small_image().await;
    let registry = seeded_registry(&image, "upstream/app", "v1").await;
    let proxy = proxy_to(&registry).await;

    let out = copy_json(
        &format!("{}/upstream/app:v1", proxy.host()),
        &format!("{}/mirror/app:v1", proxy.host()),
    )
    .await;
    assert_landed(&registry.host(), "mirror/app", "v1", &image, &ANON).await;
    let report = out.json();
    let (copied, skipped, mounted) = (
        num(&report, "/blobs/copied"),
        num(&report, "/blobs/skipped"),
        num(&report, "/blobs/mounted"),
    );
    assert_eq!(
        copied + skipped + mounted,
        image.blobs.len() as u64,
        "{report:#}"
    );
    if mounted == image.blobs.len() as u64 {
        let log = proxy.requests();
        let gets = log
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/blobs/"))
            .count();
        assert_eq!(
            gets,
            0,
            "mounted blobs are not downloaded\n{}",
            describe(&log)
        );
        assert_eq!(num(&report, "/bytes"), 0);
    }
}

/// `--dry-run` reads what it needs to plan and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing() {
    let (image, src, dst) = small_app_v1().await;
    // Something already there, to make sure it is not touched either.
    seed(&image, &dst.host(), "other", "keep").await;
    let src_proxy = proxy_to(&src).await;
    let dst_proxy = proxy_to(&dst).await;

    let out = Mirror::copy_between(&src_proxy.host(), &dst_proxy.host(), "app:v1")
        .args(["--dry-run", "--json"])
        .run()
        .await;
    out.expect_success();
    let report = out.json();
    assert!(flag(&report, "/dry_run"), "{report:#}");
    assert_eq!(text(&report, "/digest"), image.root_digest().to_string());

    let dst_log = dst_proxy.requests();
    assert!(
        !dst_log.iter().any(is_write),
        "--dry-run wrote to the destination:\n{}",
        describe(&dst_log)
    );
    let src_log = src_proxy.requests();
    assert!(
        !src_log
            .iter()
            .any(|r| r.method == "GET" && r.path.contains("/blobs/")),
        "--dry-run downloaded blobs:\n{}",
        describe(&src_log)
    );
    assert_no_manifest(&dst.host(), "app", "v1", &ANON).await;
    for (child, _) in &image.manifests {
        assert_no_manifest(&dst.host(), "app", child.digest().as_ref(), &ANON).await;
    }
    let fetched = fetch(&dst.host(), "other", "keep", &ANON).await;
    assert_eq!(fetched.digest, image.root_digest().to_string());
    for blob in &image.blobs {
        assert!(
            !blob_exists(&dst.host(), "app", blob.digest(), &ANON)
                .await
                .expect("HEAD blob"),
            "--dry-run made {} visible in app",
            blob.digest()
        );
    }
}

/// `--all-tags`: every tag of the source repository lands under the same tag
/// (`--tag-regex` keeps the ones it matches in full); a source with a tag is
/// a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_tags_copies_every_tag_the_filter_keeps() {
    let images = [
        ("1.0", image(ImageSpec::small("all-tags-a", 11)).await),
        ("1.1", image(ImageSpec::small("all-tags-b", 12)).await),
        ("2.0", image(ImageSpec::small("all-tags-c", 13)).await),
    ];
    let src = open_registry().await;
    for (tag, img) in &images {
        seed(img, &src.host(), "app", tag).await;
    }
    let dst = open_registry().await;
    let from = format!("{}/app", src.host());

    let out = Mirror::copy(&from, &format!("{}/mirrored", dst.host()))
        .args(["--all-tags", "--tag-regex", r"1\..*", "--json"])
        .run()
        .await;
    out.expect_success();
    for (tag, img) in &images[..2] {
        assert_landed(&dst.host(), "mirrored", tag, img, &ANON).await;
    }
    assert_no_manifest(&dst.host(), "mirrored", "2.0", &ANON).await;

    // A tag that only starts like the filter is not kept: it matches in full.
    let out = Mirror::copy(&from, &format!("{}/none", dst.host()))
        .args(["--all-tags", "--tag-regex", "1"])
        .run()
        .await;
    out.expect_code(1);
    assert!(out.stderr.contains("no tag matches"), "{}", out.describe());

    let refused = Mirror::copy(&format!("{from}:1.0"), &format!("{}/x", dst.host()))
        .arg("--all-tags")
        .run()
        .await;
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("--all-tags"),
        "{}",
        refused.describe()
    );
}
