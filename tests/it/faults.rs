//! A misbehaving network or registry: corrupt bytes must fail the copy and
//! leave no tag behind; transient failures must be retried until it works.

use std::time::Duration;

use mirror_testkit::{Fault, PushAuth, Rule, blob_exists};

use crate::support::{
    Mirror, assert_landed, assert_no_manifest, blob_gets, describe, num, proxy_to, small_app_v1,
};

const ANON: PushAuth = PushAuth::Anonymous;

/// A layer whose bytes arrive corrupted on every GET: exit 1 naming the digest,
/// no tag at the destination and no corrupted blob either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_blob_fails_and_leaves_no_tag() {
    let (image, src, dst) = small_app_v1().await;
    let src_proxy = proxy_to(&src).await;
    let layer = image.largest_blob().expect("a layer").digest().clone();
    src_proxy.add_rule(
        Rule::new(Fault::FlipByte { offset: 1_000 })
            .method("GET")
            .path_contains(&format!("/blobs/{layer}")),
    );

    let out = Mirror::copy_between(&src_proxy.host(), &dst.host(), "app:v1")
        .args(["--retries", "2"])
        .fails()
        .await;
    let stderr = out.stderr_lower();
    assert!(
        stderr.contains("digest") && stderr.contains(&layer.digest()[..12]),
        "the error should name the digest mismatch of {layer}\n{}",
        out.describe()
    );
    assert!(
        blob_gets(&src_proxy.requests(), layer.as_ref()) >= 1,
        "{}",
        describe(&src_proxy.requests())
    );
    assert_no_manifest(&dst.host(), "app", "v1", &ANON).await;
    assert!(
        !blob_exists(&dst.host(), "app", &layer, &ANON)
            .await
            .expect("HEAD blob"),
        "the corrupted blob {layer} was committed at the destination"
    );
}

/// One of each transient failure, on source blob GETs and destination
/// uploads and manifest PUTs: the copy succeeds with the right digest and
/// reports its retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried() {
    let (image, src, dst) = small_app_v1().await;
    let src_proxy = proxy_to(&src).await;
    let dst_proxy = proxy_to(&dst).await;
    // blobs: [amd64 config, 64 KiB, 8 KiB, 512 B, arm64 config, 60 KiB, 6 KiB, 700 B]
    let blob = |i: usize| image.blobs[i].digest().to_string();
    let (reset, error, limited, truncated) = (blob(1), blob(5), blob(2), blob(6));
    let get = |digest: &str, fault: Fault| {
        Rule::new(fault)
            .method("GET")
            .path_contains(&format!("/blobs/{digest}"))
            .times(1)
    };
    src_proxy.add_rule(get(&reset, Fault::ResetAfter { bytes: 10_000 }));
    src_proxy.add_rule(get(&error, Fault::status(500)));
    src_proxy.add_rule(get(&limited, Fault::status_retry_after(429, "1")));
    src_proxy.add_rule(get(&truncated, Fault::Truncate { after: 1_000 }));
    dst_proxy.add_rule(
        Rule::new(Fault::status(500))
            .method("POST")
            .path_contains("/blobs/uploads/")
            .times(1),
    );
    dst_proxy.add_rule(
        Rule::new(Fault::status_retry_after(429, "1"))
            .method("PUT")
            .path_contains("/blobs/uploads/")
            .times(1),
    );
    dst_proxy.add_rule(
        Rule::new(Fault::status(503))
            .method("PUT")
            .path_contains("/manifests/")
            .times(1),
    );

    let out = Mirror::copy_between(&src_proxy.host(), &dst_proxy.host(), "app:v1")
        .arg("--json")
        .run()
        .await;
    let logs = || {
        format!(
            "source log:\n{}\ndestination log:\n{}",
            describe(&src_proxy.requests()),
            describe(&dst_proxy.requests())
        )
    };
    assert_eq!(out.code, 0, "{}\n{}", out.describe(), logs());
    let report = out.json();
    assert_eq!(
        crate::support::text(&report, "/digest"),
        image.root_digest().to_string()
    );
    assert_landed(&dst.host(), "app", "v1", &image, &ANON).await;
    assert!(num(&report, "/retries") >= 1, "{report:#}");
    let src_log = src_proxy.requests();
    for digest in [&reset, &error, &limited, &truncated] {
        assert!(
            blob_gets(&src_log, digest) >= 2,
            "{digest} failed once and must have been fetched again\n{}",
            logs()
        );
    }
    // Every destination fault was hit (and so retried past).
    let dst_log = dst_proxy.requests();
    for (method, path, status) in [
        ("POST", "/blobs/uploads/", 500),
        ("PUT", "/blobs/uploads/", 429),
        ("PUT", "/manifests/", 503),
    ] {
        assert!(
            dst_log
                .iter()
                .any(|r| r.method == method && r.path.contains(path) && r.status == status),
            "the {status} on {method} {path} never happened\n{}",
            logs()
        );
    }
    // Retry-After: 1 was honoured somewhere along the way.
    assert!(
        out.elapsed >= Duration::from_millis(900),
        "two 429s with Retry-After: 1, yet the copy took {:?}",
        out.elapsed
    );
}

/// A server error on every attempt: exit 1 after `--retries` attempts, and
/// no tag at the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_server_errors_fail_after_the_retries() {
    let (image, src, dst) = small_app_v1().await;
    let src_proxy = proxy_to(&src).await;
    let layer = image.blobs[1].digest().to_string();
    src_proxy.add_rule(
        Rule::new(Fault::status(503))
            .method("GET")
            .path_contains(&format!("/blobs/{layer}")),
    );

    Mirror::copy_between(&src_proxy.host(), &dst.host(), "app:v1")
        .args(["--retries", "2"])
        .timeout(Duration::from_secs(60))
        .fails()
        .await;
    let log = src_proxy.requests();
    assert_eq!(
        blob_gets(&log, &layer),
        2,
        "--retries 2 means two attempts of the failing GET\n{}",
        describe(&log)
    );
    assert_no_manifest(&dst.host(), "app", "v1", &ANON).await;
}
