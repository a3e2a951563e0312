//! `mirror inspect`: what a reference points at, read-only.

use std::collections::BTreeSet;

use mirror_testkit::{PushAuth, PushTarget, Registry, push_layout};
use serde_json::Value;

use crate::support::{
    Mirror, describe, is_write, num, proxy_to, seeded_registry, small_image, text,
};

/// The index: digest, media type, size and one entry per platform.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_an_index() {
    let image = small_image().await;
    let registry = seeded_registry(&image, "app", "v1").await;
    let proxy = proxy_to(&registry).await;
    let reference = format!("{}/app:v1", proxy.host());

    let out = Mirror::inspect(&reference).arg("--json").run().await;
    out.expect_success();
    let report = out.json();
    assert_eq!(text(&report, "/reference"), reference);
    assert_eq!(text(&report, "/digest"), image.root_digest().to_string());
    assert_eq!(
        text(&report, "/media_type"),
        image.root.media_type().to_string()
    );
    assert_eq!(num(&report, "/size"), image.root.size());
    assert_eq!(text(&report, "/kind"), "index");
    let manifests = report["manifests"].as_array().expect("manifests array");
    assert_eq!(manifests.len(), image.manifests.len(), "{report:#}");
    for ((descriptor, platform), entry) in image.manifests.iter().zip(manifests) {
        assert_eq!(text(entry, "/digest"), descriptor.digest().to_string());
        assert_eq!(
            text(entry, "/media_type"),
            descriptor.media_type().to_string()
        );
        assert_eq!(num(entry, "/size"), descriptor.size());
        let expected = platform.as_ref().map(mirror_oci::platform_string);
        assert_eq!(entry["platform"].as_str(), expected.as_deref(), "{entry:#}");
    }
    let log = proxy.requests();
    assert!(!log.iter().any(is_write), "{}", describe(&log));
    assert!(
        !log.iter().any(|r| r.path.contains("/blobs/")),
        "inspecting an index needs no blobs\n{}",
        describe(&log)
    );

    // Without --json: something human, naming the digest.
    let out = Mirror::inspect(&reference).run().await;
    out.expect_success();
    assert!(
        out.stdout.contains(&image.root_digest().to_string()),
        "{}",
        out.describe()
    );
}

/// A child image by digest: kind image, its config and layers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_an_image_by_digest() {
    let image = small_image().await;
    let registry = seeded_registry(&image, "app", "v1").await;
    let (child, _) = image.manifests[0].clone();
    let manifest: Value =
        serde_json::from_slice(&image.read_blob(child.digest()).expect("child bytes"))
            .expect("child JSON");
    let layers: BTreeSet<String> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_owned())
        .collect();
    let config = manifest["config"]["digest"]
        .as_str()
        .expect("config")
        .to_owned();

    let out = Mirror::inspect(&format!("{}/app@{}", registry.host(), child.digest()))
        .arg("--json")
        .run()
        .await;
    out.expect_success();
    let report = out.json();
    assert_eq!(text(&report, "/kind"), "image");
    assert_eq!(text(&report, "/digest"), child.digest().to_string());
    assert_eq!(num(&report, "/size"), child.size());
    let blobs: BTreeSet<String> = report["blobs"]
        .as_array()
        .unwrap_or_else(|| panic!("blobs array: {report:#}"))
        .iter()
        .map(|b| {
            b.as_str()
                .or_else(|| b["digest"].as_str())
                .unwrap_or_else(|| panic!("blob entry without digest: {b}"))
                .to_owned()
        })
        .collect();
    assert!(
        blobs.is_superset(&layers),
        "every layer is listed: {report:#}"
    );
    let mut all = layers.clone();
    all.insert(config);
    assert!(blobs.is_subset(&all), "nothing else is listed: {report:#}");
}

/// `--creds` against a Basic-auth registry; without them, exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_with_credentials() {
    let image = small_image().await;
    let registry = Registry::htpasswd("viewer", "viewer-pw-88d1")
        .await
        .expect("htpasswd registry");
    push_layout(
        &image,
        &PushTarget::new(&registry.host(), "app", "v1")
            .with_auth(PushAuth::basic("viewer", "viewer-pw-88d1")),
    )
    .await
    .expect("seed");
    let reference = format!("{}/app:v1", registry.host());

    let out = Mirror::inspect(&reference)
        .args(["--creds", "viewer:viewer-pw-88d1", "--json"])
        .run()
        .await;
    out.expect_success();
    out.expect_not_leaked("viewer-pw-88d1");
    assert_eq!(
        text(&out.json(), "/digest"),
        image.root_digest().to_string()
    );

    Mirror::inspect(&reference)
        .args(["--retries", "1"])
        .fails()
        .await;
}
