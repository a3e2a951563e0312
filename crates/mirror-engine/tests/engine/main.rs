//! The engine against in-memory endpoints ([`memory`]): ordering, dedup,
//! cancellation and failure isolation between copies, in milliseconds.

mod memory;
mod mounts;

use std::sync::Arc;
use std::time::Duration;

use mirror_engine::{
    CopyError, CopyOptions, CopyReport, CopyRequest, EndpointError, Engine, EngineOptions, GaveUp,
    Limit, MAX_NESTING, Silent,
};
use mirror_oci::Digest;
use mirror_registry::{ErrorCode, Operation, RegistryError};
use tokio::task::JoinHandle;

use memory::{Image, Log, Memory, Op, blob, image, index};

/// A copy of `source:tag` to `destination:tag`.
fn request(source: &Arc<Memory>, destination: &Arc<Memory>, tag: &str) -> CopyRequest {
    CopyRequest {
        source: source.clone(),
        source_reference: tag.to_owned(),
        destination: destination.clone(),
        destination_reference: tag.to_owned(),
        source_label: format!("source:{tag}"),
        destination_label: format!("destination:{tag}"),
        options: CopyOptions::default(),
    }
}

fn engine() -> Engine {
    Engine::new(EngineOptions::default(), Arc::new(Silent))
}

/// Starts a copy on a task of its own.
fn start(engine: &Engine, request: CopyRequest) -> JoinHandle<Result<CopyReport, CopyError>> {
    let engine = engine.clone();
    tokio::spawn(async move { engine.copy(request).await })
}

/// Runs a future with a bound, so that a hang fails the test instead.
async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .expect("the engine finished in time")
}

/// A two-platform index: each image has a config and two layers.
fn two_platforms(seed: &str) -> Image {
    let amd = image(
        &format!("{seed}-amd64"),
        &[
            blob(&format!("{seed}-a1"), 3000),
            blob(&format!("{seed}-a2"), 500),
        ],
    );
    let arm = image(
        &format!("{seed}-arm64"),
        &[
            blob(&format!("{seed}-b1"), 2000),
            blob(&format!("{seed}-b2"), 700),
        ],
    );
    index(&[(&amd, "linux/amd64"), (&arm, "linux/arm64")])
}

/// Every manifest PUT at `destination` came after the blobs and child
/// manifests it references were there; the tag went last.
fn assert_children_first(log: &Log, destination: &Memory, image: &Image) {
    let ops = log.of(&mirror_engine::Destination::name(destination));
    let position = |wanted: &dyn Fn(&Op) -> bool| ops.iter().position(wanted);
    for manifest in &image.manifests {
        let pushed = position(
            &|op| matches!(op, Op::PutManifest { digest, .. } if digest == manifest.digest()),
        )
        .unwrap_or_else(|| panic!("{} was never pushed: {ops:#?}", manifest.digest()));
        for blob in manifest.blobs() {
            let committed = position(&|op| matches!(op, Op::Committed(d) if d == blob.digest()))
                .unwrap_or_else(|| panic!("blob {} never landed", blob.digest()));
            assert!(
                committed < pushed,
                "manifest {} went up before its blob {}: {ops:#?}",
                manifest.digest(),
                blob.digest()
            );
        }
        for child in manifest.children() {
            let child_pushed = position(
                &|op| matches!(op, Op::PutManifest { digest, .. } if digest == child.digest()),
            )
            .unwrap_or_else(|| panic!("child {} never pushed", child.digest()));
            assert!(
                child_pushed < pushed,
                "index {} went up before its child {}: {ops:#?}",
                manifest.digest(),
                child.digest()
            );
        }
    }
    assert!(
        matches!(ops.last(), Some(Op::Finish)),
        "finish comes last: {ops:#?}"
    );
}

fn gets_of(log: &Log, source: &Memory, digest: &Digest) -> usize {
    log.count(
        &mirror_engine::Source::name(source),
        |op| matches!(op, Op::GetBlob(d) if d == digest),
    )
}

fn manifest_gets(log: &Log, source: &Memory, digest: &Digest) -> usize {
    log.count(
        &mirror_engine::Source::name(source),
        |op| matches!(op, Op::GetManifest(d) if d == digest),
    )
}

fn manifest_puts(log: &Log, destination: &Memory, digest: &Digest) -> usize {
    log.count(
        &mirror_engine::Destination::name(destination),
        |op| matches!(op, Op::PutManifest { digest: d, .. } if d == digest),
    )
}

#[tokio::test]
async fn an_index_lands_children_first_and_no_manifest_before_its_blobs() {
    let log = Log::new();
    let (source, destination) = (Memory::new("src", &log), Memory::new("dst", &log));
    let image = two_platforms("order");
    source.seed(&image, "v1");
    let report = bounded(engine().copy(request(&source, &destination, "v1")))
        .await
        .expect("copy");
    assert_children_first(&log, &destination, &image);
    assert_eq!(report.digest, *image.root.digest());
    assert_eq!(report.manifests.copied, 3);
    assert_eq!(report.blobs.copied, 6);
    assert_eq!(report.platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(
        destination.manifest("v1").map(|m| m.digest().clone()),
        Some(image.root.digest().clone())
    );
}

/// Nothing moves twice when two images of one run share layers, and a
/// second run finds everything in place with one HEAD per side.
#[tokio::test]
async fn blobs_shared_by_copies_move_once_and_a_warm_run_only_heads() {
    let log = Log::new();
    let (source, destination) = (Memory::new("src", &log), Memory::new("dst", &log));
    let base = blob("base", 4000);
    let a = image("a", &[base.clone(), blob("a-top", 100)]);
    let b = image("b", &[base.clone(), blob("b-top", 100)]);
    source.seed(&a, "a");
    source.seed(&b, "b");
    let engine = engine();
    let (ra, rb) = bounded(futures::future::join(
        engine.copy(request(&source, &destination, "a")),
        engine.copy(request(&source, &destination, "b")),
    ))
    .await;
    ra.expect("copy a");
    rb.expect("copy b");
    assert_eq!(gets_of(&log, &source, base.0.digest()), 1);
    assert_children_first(&log, &destination, &a);

    let before = log.entries().len();
    let warm = bounded(engine.copy(request(&source, &destination, "a")))
        .await
        .expect("warm copy");
    assert!(warm.up_to_date);
    let after: Vec<Op> = log.entries()[before..]
        .iter()
        .map(|e| e.op.clone())
        .collect();
    assert_eq!(
        after,
        [Op::Resolve("a".into()), Op::HeadManifest("a".into())],
        "a warm run is one HEAD per side"
    );
}

/// Regression (issue 10.4): a blob shared by two images was owned by the copy
/// that scheduled it, so that copy's failure cancelled the other image.
#[tokio::test]
async fn one_copys_failure_never_cancels_a_blob_another_copy_needs() {
    let log = Log::new();
    let (source, destination) = (Memory::new("src", &log), Memory::new("dst", &log));
    let shared = blob("shared", 8000);
    let corrupt = blob("corrupt", 3000);
    // The failing image lists its corrupt layer before the shared one.
    let failing = image("failing", &[corrupt.clone(), shared.clone()]);
    let healthy = image("healthy", &[shared.clone(), blob("healthy-top", 100)]);
    source.seed(&failing, "failing");
    source.seed(&healthy, "healthy");
    source.corrupt(corrupt.0.digest());
    let shared_gate = source.hold(shared.0.digest());
    let corrupt_gate = source.hold(corrupt.0.digest());
    let engine = engine();

    // The failing copy starts the shared transfer...
    let failing_copy = start(&engine, request(&source, &destination, "failing"));
    bounded(log.wait_for(|e| e.op == Op::UploadStarted(shared.0.digest().clone()))).await;
    // ...the healthy copy joins it (its own config transfer shows it has scheduled)...
    let healthy_config = healthy.blobs[0].0.digest().clone();
    let healthy_copy = start(&engine, request(&source, &destination, "healthy"));
    bounded(log.wait_for(|e| e.op == Op::Committed(healthy_config.clone()))).await;
    // ...and then the failing copy fails while the shared blob is mid-upload.
    corrupt_gate.open();
    let failed = bounded(failing_copy).await.expect("join");
    let error = failed.expect_err("the corrupt layer fails its copy");
    assert!(format!("{error:?}").contains("DigestMismatch"), "{error:?}");
    shared_gate.open();
    let report = bounded(healthy_copy)
        .await
        .expect("join")
        .expect("the healthy image is not cancelled by the other's failure");
    assert_eq!(report.digest, *healthy.root.digest());
    assert!(destination.has_blob(shared.0.digest()));
    assert_eq!(
        gets_of(&log, &source, shared.0.digest()),
        1,
        "{:#?}",
        log.entries()
    );
}

/// Regression (issue 10.4): a failed transfer stayed in the run-wide table, so
/// a later image needing the same blob got the old failure without a try.
#[tokio::test]
async fn a_failed_transfer_is_forgotten_so_a_later_copy_tries_again() {
    let log = Log::new();
    let (source, destination) = (Memory::new("src", &log), Memory::new("dst", &log));
    let flaky = blob("flaky", 2000);
    let first = image("first", std::slice::from_ref(&flaky));
    let second = image("second", &[flaky.clone(), blob("second-top", 10)]);
    source.seed(&first, "first");
    source.seed(&second, "second");
    let engine = Engine::new(
        EngineOptions {
            blob_attempts: 2,
            ..EngineOptions::default()
        },
        Arc::new(Silent),
    );
    source.fail_gets(flaky.0.digest(), 2);
    bounded(engine.copy(request(&source, &destination, "first")))
        .await
        .expect_err("two failing GETs exhaust two attempts");
    let report = bounded(engine.copy(request(&source, &destination, "second")))
        .await
        .expect("a later image tries the blob again");
    assert_eq!(report.blobs.copied, 3);
    assert_eq!(gets_of(&log, &source, flaky.0.digest()), 3);
}

/// A copy that is dropped (its caller gave up) cancels the transfers only it
/// wanted and leaves those another copy still wants running.
#[tokio::test]
async fn a_dropped_copy_cancels_only_the_transfers_no_other_copy_wants() {
    let log = Log::new();
    let (source, destination) = (Memory::new("src", &log), Memory::new("dst", &log));
    let own = blob("own", 5000);
    let shared = blob("shared", 6000);
    let dropped = image("dropped", &[own.clone(), shared.clone()]);
    let kept = image("kept", std::slice::from_ref(&shared));
    source.seed(&dropped, "dropped");
    source.seed(&kept, "kept");
    let own_gate = source.hold(own.0.digest());
    let shared_gate = source.hold(shared.0.digest());
    let engine = engine();

    let dropped_copy = start(&engine, request(&source, &destination, "dropped"));
    for digest in [own.0.digest(), shared.0.digest()] {
        bounded(log.wait_for(|e| e.op == Op::UploadStarted(digest.clone()))).await;
    }
    let kept_config = kept.blobs[0].0.digest().clone();
    let kept_copy = start(&engine, request(&source, &destination, "kept"));
    bounded(log.wait_for(|e| e.op == Op::Committed(kept_config.clone()))).await;

    dropped_copy.abort();
    bounded(log.wait_for(|e| e.op == Op::StreamDropped(own.0.digest().clone()))).await;
    own_gate.open();
    shared_gate.open();
    let report = bounded(kept_copy)
        .await
        .expect("join")
        .expect("the kept copy is not cancelled");
    assert_eq!(report.digest, *kept.root.digest());
    assert!(destination.has_blob(shared.0.digest()));
    assert!(
        !destination.has_blob(own.0.digest()),
        "a transfer nobody wants any more was not cancelled"
    );
    assert_eq!(gets_of(&log, &source, shared.0.digest()), 1);
}

/// Regression (issue 10.5): an index listing one child 10,000 times cost
/// 30,016 requests and reported 10,001 manifests and 10,000 platforms.
#[tokio::test]
async fn an_index_listing_one_child_many_times_visits_it_once() {
    let log = Log::new();
    let (source, destination) = (Memory::new("src", &log), Memory::new("dst", &log));
    let child = image("child", &[blob("child-layer", 100)]);
    let children: Vec<(&Image, &str)> = (0..10_000).map(|_| (&child, "linux/amd64")).collect();
    let root = index(&children);
    source.seed(&root, "v1");
    let report = bounded(engine().copy(request(&source, &destination, "v1")))
        .await
        .expect("copy");
    let digest = child.root.digest();
    assert_eq!(manifest_gets(&log, &source, digest), 1);
    assert_eq!(manifest_puts(&log, &destination, digest), 1);
    assert_eq!(
        log.count("dst", |op| matches!(op, Op::HeadManifest(_))),
        2,
        "the tag and the child, once each"
    );
    assert_eq!(report.manifests.copied, 2);
    assert_eq!(report.platforms, ["linux/amd64"]);
    assert_eq!(report.blobs.copied, 2);
}

/// Regression (issue 10.5): A -> B x100 -> C x100 fetched C 10,000 times.
#[tokio::test]
async fn a_fan_out_of_one_digest_fetches_each_manifest_once() {
    let log = Log::new();
    let (source, destination) = (Memory::new("src", &log), Memory::new("dst", &log));
    let leaf = image("leaf", &[blob("leaf-layer", 100)]);
    let middle = index(&(0..100).map(|_| (&leaf, "linux/amd64")).collect::<Vec<_>>());
    let top = index(
        &(0..100)
            .map(|_| (&middle, "linux/amd64"))
            .collect::<Vec<_>>(),
    );
    source.seed(&top, "v1");
    let report = bounded(engine().copy(request(&source, &destination, "v1")))
        .await
        .expect("copy");
    for manifest in [&leaf.root, &middle.root] {
        assert_eq!(manifest_gets(&log, &source, manifest.digest()), 1);
        assert_eq!(manifest_puts(&log, &destination, manifest.digest()), 1);
    }
    assert_eq!(report.manifests.copied, 3);
    assert_children_first(&log, &destination, &top);
}

/// A copy runs on any task: its future is `Send` and owns what it needs.
#[test]
fn a_copy_can_be_spawned() {
    fn spawnable<T: std::future::Future + Send + 'static>(_: &T) {}
    let log = Log::new();
    let (source, destination) = (Memory::new("src", &log), Memory::new("dst", &log));
    let engine = engine();
    let copy = async move { engine.copy(request(&source, &destination, "v1")).await };
    spawnable(&copy);
}

/// Two tags of one image copied at once: every manifest is fetched and
/// pushed once for the run, not once per tag.
#[tokio::test]
async fn two_tags_of_one_image_share_every_manifest() {
    let log = Log::new();
    let (source, destination) = (Memory::new("src", &log), Memory::new("dst", &log));
    let image = two_platforms("tags");
    source.seed(&image, "3.12");
    source.seed(&image, "3.12.1");
    let engine = engine();
    let (a, b) = bounded(futures::future::join(
        engine.copy(request(&source, &destination, "3.12")),
        engine.copy(request(&source, &destination, "3.12.1")),
    ))
    .await;
    a.expect("3.12");
    b.expect("3.12.1");
    for manifest in &image.manifests {
        assert_eq!(manifest_gets(&log, &source, manifest.digest()), 1);
    }
    for child in &image.manifests[1..] {
        assert_eq!(manifest_puts(&log, &destination, child.digest()), 1);
    }
    for tag in ["3.12", "3.12.1"] {
        assert_eq!(
            destination.manifest(tag).map(|m| m.digest().clone()),
            Some(image.root.digest().clone())
        );
    }
}

/// A source with more distinct manifests than the cap fails before anything
/// is written, naming the cap; so does nesting past the depth bound.
#[tokio::test]
async fn walking_past_a_cap_fails_naming_it_and_writes_nothing() {
    let log = Log::new();
    let (source, destination) = (Memory::new("src", &log), Memory::new("dst", &log));
    let children: Vec<Image> = (0..6)
        .map(|i| image(&format!("wide-{i}"), &[blob(&format!("wide-{i}-l"), 10)]))
        .collect();
    let wide = index(
        &children
            .iter()
            .map(|c| (c, "linux/amd64"))
            .collect::<Vec<_>>(),
    );
    source.seed(&wide, "wide");
    let engine = Engine::new(
        EngineOptions {
            max_manifests: 5,
            ..EngineOptions::default()
        },
        Arc::new(Silent),
    );
    let error = bounded(engine.copy(request(&source, &destination, "wide")))
        .await
        .expect_err("7 manifests are over a cap of 5");
    assert!(
        matches!(
            error,
            CopyError::Limit {
                limit: Limit::Manifests(5),
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "source:wide references more than 5 distinct manifests, the most one copy walks"
    );

    let mut deep = image("deep", &[blob("deep-l", 10)]);
    for _ in 0..MAX_NESTING {
        deep = index(&[(&deep, "linux/amd64")]);
    }
    source.seed(&deep, "deep");
    let error = bounded(engine.copy(request(&source, &destination, "deep")))
        .await
        .expect_err("too deep");
    assert!(
        matches!(
            error,
            CopyError::Limit {
                limit: Limit::Nesting(MAX_NESTING),
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        log.count("dst", |op| matches!(
            op,
            Op::PutManifest { .. } | Op::UploadStarted(_)
        )),
        0,
        "nothing is written: {:#?}",
        log.entries()
    );
}

/// A 429 answer to a blob upload, as the registry client reports it.
fn throttled(wait: Duration) -> EndpointError {
    EndpointError::Registry(RegistryError::Api {
        host: "dst".into(),
        operation: Operation::PutBlob,
        target: "dst@blob".into(),
        status: 429,
        code: Some(ErrorCode::TooManyRequests),
        message: "slow down".into(),
        retry_after: Some(wait),
    })
}

/// Regression (issue 10.6): blob uploads answered 429 with `Retry-After: 2`
/// were retried after 0.36, 0.84, 1.28 s: the engine's own backoff.
#[tokio::test(start_paused = true)]
async fn blob_retries_wait_at_least_what_the_server_asked() {
    let log = Log::new();
    let (source, destination) = (Memory::new("src", &log), Memory::new("dst", &log));
    let layer = blob("throttled", 1000);
    let image = image("throttled", std::slice::from_ref(&layer));
    source.seed(&image, "v1");
    let asked = Duration::from_secs(2);
    destination.refuse_uploads(
        layer.0.digest(),
        vec![throttled(asked), throttled(asked), throttled(asked)],
    );
    let report = bounded(engine().copy(request(&source, &destination, "v1")))
        .await
        .expect("the fourth upload goes through");
    assert_eq!(report.retries, 3);
    let starts: Vec<tokio::time::Instant> = log
        .entries()
        .iter()
        .filter(|e| e.op == Op::UploadStarted(layer.0.digest().clone()))
        .map(|e| e.at)
        .collect();
    assert_eq!(starts.len(), 4);
    for pair in starts.windows(2) {
        let waited = pair[1] - pair[0];
        assert!(waited >= asked, "retried after {waited:?}, asked {asked:?}");
    }
}

/// A server asking for longer than the retry budget fails the blob at once,
/// saying how long it asked for, instead of sleeping that long.
#[tokio::test(start_paused = true)]
async fn a_retry_after_past_the_budget_fails_at_once() {
    let log = Log::new();
    let (source, destination) = (Memory::new("src", &log), Memory::new("dst", &log));
    let layer = blob("patient", 1000);
    let image = image("patient", std::slice::from_ref(&layer));
    source.seed(&image, "v1");
    destination.refuse_uploads(layer.0.digest(), vec![throttled(Duration::from_secs(3600))]);
    let engine = Engine::new(
        EngineOptions {
            max_retry_after: Duration::from_secs(60),
            ..EngineOptions::default()
        },
        Arc::new(Silent),
    );
    let started = tokio::time::Instant::now();
    let error = bounded(engine.copy(request(&source, &destination, "v1")))
        .await
        .expect_err("an hour is past the budget");
    assert!(started.elapsed() < Duration::from_secs(60), "it waited");
    let CopyError::Shared(blob_error) = &error else {
        panic!("{error:?}")
    };
    assert!(
        matches!(
            **blob_error,
            CopyError::Blob {
                gave_up: GaveUp::RetryAfter { .. },
                attempts: 1,
                ..
            }
        ),
        "{blob_error:?}"
    );
    assert!(
        error.to_string().ends_with(
            "it asked to wait 3600s before another attempt, longer than the 60s retry budget"
        ),
        "{error}"
    );
}
