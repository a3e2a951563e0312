//! `--platform`: one platform becomes a plain image, several become a new
//! index, all of them leave the index as it is.

use std::collections::BTreeSet;

use mirror_testkit::{GeneratedImage, PushAuth, blob_exists};

use crate::support::{
    Mirror, assert_landed, fetch, image, num, open_registry, seeded_registry, small_app_v1,
    small_image, strings, text, three_platforms,
};

const ANON: PushAuth = PushAuth::Anonymous;

/// The child manifest of `image` for an architecture, with its digest.
fn child(image: &GeneratedImage, architecture: &str) -> (String, Vec<String>) {
    let (descriptor, _) = image
        .image_manifests()
        .into_iter()
        .find(|(_, p)| {
            p.as_ref()
                .is_some_and(|p| p.architecture().to_string() == architecture)
        })
        .unwrap_or_else(|| panic!("no {architecture} child"));
    let manifest: serde_json::Value = serde_json::from_slice(
        &image
            .read_blob(descriptor.digest())
            .expect("read the child manifest"),
    )
    .expect("parse the child manifest");
    let mut blobs = vec![
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest")
            .to_owned(),
    ];
    for layer in manifest["layers"].as_array().expect("layers") {
        blobs.push(layer["digest"].as_str().expect("layer digest").to_owned());
    }
    (descriptor.digest().to_string(), blobs)
}

async fn exists(host: &str, repo: &str, digest: &str) -> bool {
    let digest = mirror_oci::parse_digest(digest).expect("a digest");
    blob_exists(host, repo, &digest, &ANON)
        .await
        .expect("HEAD blob")
}

/// `--platform linux/arm64` on a two-platform index: the destination tag is
/// the arm64 image manifest itself (same digest), with only its blobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_platform_becomes_an_image() {
    let image = small_image().await;
    let (arm64, arm64_blobs) = child(&image, "arm64");
    let (_amd64, amd64_blobs) = child(&image, "amd64");
    let src = seeded_registry(&image, "app", "v1").await;
    let dst = open_registry().await;

    let out = Mirror::copy(
        &format!("{}/app:v1", src.host()),
        &format!("{}/app:arm64", dst.host()),
    )
    .args(["--platform", "linux/arm64", "--json"])
    .run()
    .await;
    out.expect_success();
    let report = out.json();
    assert_eq!(text(&report, "/kind"), "image", "{report:#}");
    assert_eq!(text(&report, "/digest"), arm64);
    assert_eq!(text(&report, "/filtered/kind"), "image", "{report:#}");
    assert_eq!(text(&report, "/filtered/digest"), arm64);
    assert_eq!(
        strings(&report, "/platforms"),
        vec!["linux/arm64/v8"],
        "{report:#}"
    );
    assert_eq!(
        num(&report, "/blobs/copied"),
        arm64_blobs.len() as u64,
        "{report:#}"
    );

    let landed = fetch(&dst.host(), "app", "arm64", &ANON).await;
    assert_eq!(landed.digest, arm64);
    assert_eq!(
        landed.content_type,
        "application/vnd.oci.image.manifest.v1+json"
    );
    for blob in &arm64_blobs {
        assert!(exists(&dst.host(), "app", blob).await, "{blob} missing");
    }
    for blob in &amd64_blobs {
        assert!(
            !exists(&dst.host(), "app", blob).await,
            "{blob} (amd64) copied although filtered out"
        );
    }
}

/// Two of three platforms: a new index holding exactly those two, with a
/// digest of its own; the third platform's blobs stay behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_platforms_become_a_new_index() {
    let image = image(three_platforms("it-three", 5)).await;
    let (amd64, _) = child(&image, "amd64");
    let (arm64, _) = child(&image, "arm64");
    let (_arm, arm_blobs) = child(&image, "arm");
    let src = seeded_registry(&image, "app", "v1").await;
    let dst = open_registry().await;

    let out = Mirror::copy_between(&src.host(), &dst.host(), "app:v1")
        .args([
            "--platform",
            "linux/amd64",
            "--platform",
            "linux/arm64",
            "--json",
        ])
        .run()
        .await;
    out.expect_success();
    let report = out.json();
    let digest = text(&report, "/digest").to_owned();
    assert_ne!(digest, image.root_digest().to_string());
    assert_eq!(text(&report, "/kind"), "index");
    assert_eq!(text(&report, "/filtered/kind"), "index", "{report:#}");
    assert_eq!(text(&report, "/filtered/digest"), digest);
    let platforms: BTreeSet<String> = strings(&report, "/platforms").into_iter().collect();
    assert_eq!(
        platforms,
        BTreeSet::from(["linux/amd64".to_owned(), "linux/arm64/v8".to_owned()])
    );

    let landed = fetch(&dst.host(), "app", "v1", &ANON).await;
    assert_eq!(landed.digest, digest);
    assert_eq!(landed.content_type, image.root.media_type().to_string());
    let index = landed.json();
    let children: BTreeSet<String> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["digest"].as_str().expect("digest").to_owned())
        .collect();
    assert_eq!(children, BTreeSet::from([amd64.clone(), arm64.clone()]));
    for child in [&amd64, &arm64] {
        assert_eq!(fetch(&dst.host(), "app", child, &ANON).await.digest, *child);
    }
    for blob in &arm_blobs {
        assert!(
            !exists(&dst.host(), "app", blob).await,
            "{blob} (arm/v7) copied although filtered out"
        );
    }
}

/// Asking for every platform the index has changes nothing: same root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_platforms_keep_the_original_index() {
    let (image, src, dst) = small_app_v1().await;

    let out = Mirror::copy_between(&src.host(), &dst.host(), "app:v1")
        .args([
            "--platform",
            "linux/amd64",
            "--platform",
            "linux/arm64/v8",
            "--json",
        ])
        .run()
        .await;
    out.expect_success();
    let report = out.json();
    assert_eq!(
        text(&report, "/digest"),
        image.root_digest().to_string(),
        "{report:#}"
    );
    assert!(report["filtered"].is_null(), "{report:#}");
    assert_landed(&dst.host(), "app", "v1", &image, &ANON).await;
}
