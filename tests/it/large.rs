//! A 1 GiB layer: streamed through in bounded memory, digest intact.

use std::time::Duration;

use mirror_testkit::{ImageSpec, PushAuth, blob_exists};

use crate::support::{Mirror, fetch, image, num, open_registry, seeded_registry, text};

const GIB: u64 = 1 << 30;
/// Generous for a debug build; a buffered 1 GiB blob would be ten times this.
const MAX_RSS_KIB: u64 = 100 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_layer_streams_in_bounded_memory() {
    let image = image(ImageSpec::single_layer("it-1gib", GIB)).await;
    let layer = image.largest_blob().expect("the layer").clone();
    assert!(layer.size() > GIB);
    let src = seeded_registry(&image, "big/app", "v1").await;
    let dst = open_registry().await;

    let out = Mirror::copy(
        &format!("{}/big/app:v1", src.host()),
        &format!("{}/big/app:v1", dst.host()),
    )
    .arg("--json")
    .measure_rss()
    .timeout(Duration::from_secs(600))
    .run()
    .await;
    out.expect_success();
    let report = out.json();
    assert_eq!(text(&report, "/digest"), image.root_digest().to_string());
    assert_eq!(num(&report, "/bytes"), image.total_blob_bytes());

    let landed = fetch(&dst.host(), "big/app", "v1", &PushAuth::Anonymous).await;
    assert_eq!(landed.digest, image.root_digest().to_string());
    for blob in &image.blobs {
        assert!(
            blob_exists(&dst.host(), "big/app", blob.digest(), &PushAuth::Anonymous)
                .await
                .expect("HEAD blob"),
            "{} missing",
            blob.digest()
        );
    }

    // Unmeasured is a failure, not a pass: the bound is half of the claim.
    let kib = out.peak_rss_kib.unwrap_or_else(|| {
        panic!(
            "peak RSS was not measured (/usr/bin/time: apt-get install -y time)\n{}",
            out.describe()
        )
    });
    eprintln!(
        "1 GiB copy: {:.1?}, peak RSS {} MiB",
        out.elapsed,
        kib / 1024
    );
    assert!(
        kib < MAX_RSS_KIB,
        "peak RSS {} MiB for a 1 GiB layer (bound {} MiB)",
        kib / 1024,
        MAX_RSS_KIB / 1024
    );
}
