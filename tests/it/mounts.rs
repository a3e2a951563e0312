//! Cross-repository mounts within one run (issue 15), against real
//! registries: the first repository of a registry that needs a blob uploads
//! it, every other one there mounts it; a failed leader leaves its followers
//! to land; a refused mount (202) carries the upload in the session it
//! opened; ECR mounts only with BLOB_MOUNTING on and only blobs of committed
//! manifests, and with it off the run says what moved twice.
//!
//! Until `mirror sync` lands, the binary reaches several repositories of a
//! distribution registry in one run only through the ECR command
//! (`mirror IMAGE... --prefix`), so the distribution cases drive the
//! library (one `Engine`, `RegistryEndpoint`s) against a real
//! `docker-registry` behind a recording proxy.

use std::sync::Arc;

use mirror_engine::{CopyOptions, CopyRequest, Engine, EngineOptions, RegistryEndpoint, Silent};
use mirror_registry::{ClientOptions, CredentialStore, RegistryClient};
use mirror_testkit::{
    EcrOptions, Fault, GeneratedImage, ImageSpec, PlatformSpec, Proxy, PushAuth, RequestRecord,
    Rule,
};

use crate::ecr::{Aws, aws};
use crate::support::{assert_landed, describe, image, num, open_registry, proxy_to, seed};

const ANON: PushAuth = PushAuth::Anonymous;

/// Image `i` of a fleet: a 1.5 MB base layer every image shares, and a
/// small layer and a config of its own.
async fn fleet_image(i: u64) -> GeneratedImage {
    image(ImageSpec {
        name: format!("fleet-{i}"),
        seed: 1500 + i,
        base_seed: Some(0xf1ee7),
        platforms: vec![PlatformSpec::new("linux/amd64", vec![1_500_000, 3_000])],
        ..ImageSpec::default()
    })
    .await
}

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// Completed uploads of a blob (`PUT ...?digest=`) in a request log.
fn uploads(requests: &[RequestRecord], digest: &str) -> usize {
    requests
        .iter()
        .filter(|r| {
            r.method == "PUT"
                && r.path.contains("/blobs/uploads/")
                && r.query.as_deref().is_some_and(|q| q.contains(hex(digest)))
                && (200..300).contains(&r.status)
        })
        .count()
}

/// Mount requests of a blob answered with this status.
fn mounts(requests: &[RequestRecord], digest: &str, status: u16) -> usize {
    requests
        .iter()
        .filter(|r| {
            r.method == "POST"
                && r.query
                    .as_deref()
                    .is_some_and(|q| q.contains("mount=") && q.contains(hex(digest)))
                && r.status == status
        })
        .count()
}

/// Fleet images `0..count`, each seeded as `app-i:v1` at `host`.
async fn seed_fleet(host: &str, count: usize) -> Vec<GeneratedImage> {
    let mut images = Vec::new();
    for i in 0..count {
        let fleet = fleet_image(i as u64).await;
        seed(&fleet, host, &format!("app-{i}"), "v1").await;
        images.push(fleet);
    }
    images
}

/// The base layer was uploaded `uploaded` times and mounted (201)
/// `mounted` times.
#[track_caller]
fn assert_base_moves(requests: &[RequestRecord], base: &str, uploaded: usize, mounted: usize) {
    assert_eq!(uploads(requests, base), uploaded, "{}", describe(requests));
    assert_eq!(
        mounts(requests, base, 201),
        mounted,
        "{}",
        describe(requests)
    );
}

/// Every fleet image landed at `host` as `PREFIXi:v1`.
async fn assert_fleet_landed(host: &str, prefix: &str, images: &[GeneratedImage], auth: &PushAuth) {
    for (i, fleet) in images.iter().enumerate() {
        assert_landed(host, &format!("{prefix}{i}"), "v1", fleet, auth).await;
    }
}

/// One engine copying `images[i]` from `source/app-i:v1` into
/// `destination/fleet-i:v1`, all at once; results in that order.
async fn copy_fleet(
    source: &str,
    destination: &str,
    count: usize,
    first_alone: Option<&Proxy>,
) -> Vec<Result<mirror_engine::CopyReport, mirror_engine::CopyError>> {
    let client = RegistryClient::new(
        ClientOptions {
            insecure_registries: vec![source.to_owned(), destination.to_owned()],
            ..ClientOptions::default()
        },
        CredentialStore::empty(),
    )
    .expect("registry client");
    let engine = Engine::new(EngineOptions::default(), Arc::new(Silent));
    let endpoint = |reference: String| {
        let reference: mirror_oci::Reference = reference.parse().expect("reference");
        Arc::new(RegistryEndpoint::new(
            client.repository(&reference, None).expect("repository"),
        ))
    };
    let request = |i: usize| CopyRequest {
        source: endpoint(format!("{source}/app-{i}:v1")),
        source_reference: "v1".into(),
        destination: endpoint(format!("{destination}/fleet-{i}:v1")),
        destination_reference: "v1".into(),
        source_label: format!("{source}/app-{i}:v1"),
        destination_label: format!("{destination}/fleet-{i}:v1"),
        options: CopyOptions::default(),
    };
    let spawn = |i: usize| {
        let engine = engine.clone();
        let request = request(i);
        tokio::spawn(async move { engine.copy(request).await })
    };
    let mut copies = Vec::new();
    let mut start = 0;
    if let Some(log) = first_alone {
        // The first copy leads: the others start once its upload began.
        copies.push(spawn(0));
        start = 1;
        let began = || {
            log.requests()
                .iter()
                .any(|r| r.method == "POST" && r.path.starts_with("/v2/fleet-0/blobs/uploads"))
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while !began() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the first copy starts uploading");
    }
    copies.extend((start..count).map(spawn));
    let mut results = Vec::new();
    for copy in copies {
        results.push(copy.await.expect("join"));
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_uploads_each_shared_blob_once_and_mounts_it_everywhere_else() {
    const N: usize = 4;
    let source = open_registry().await;
    let images = seed_fleet(&source.host(), N).await;
    let base = images[0].largest_blob().expect("base").clone();
    assert!(
        images.iter().all(|i| i.blobs.contains(&base)),
        "the base is shared"
    );
    let destination = open_registry().await;
    let log = proxy_to(&destination).await;

    let results = copy_fleet(&source.host(), &log.host(), N, None).await;
    let mut mounted = 0;
    let mut bytes_mounted = 0;
    for result in results {
        let report = result.expect("every image lands");
        mounted += report.blobs.mounted;
        bytes_mounted += report.bytes_mounted;
    }
    let requests = log.requests();
    let base_digest = base.digest().to_string();
    assert_base_moves(&requests, &base_digest, 1, N - 1);
    let mut unique = std::collections::HashSet::new();
    for fleet in &images {
        for blob in &fleet.blobs {
            if unique.insert(blob.digest().to_string()) && blob.digest() != base.digest() {
                assert_eq!(uploads(&requests, blob.digest().as_ref()), 1);
            }
        }
    }
    let all_uploads = requests
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/blobs/uploads/"))
        .count();
    assert_eq!(all_uploads, unique.len(), "uploads = unique blobs");
    assert_eq!(mounted, (N - 1) as u64);
    assert_eq!(bytes_mounted, (N as u64 - 1) * base.size());
    assert_fleet_landed(&destination.host(), "fleet-", &images, &ANON).await;
    eprintln!(
        "measured: {N} repositories, {} unique blobs: {all_uploads} uploads, {mounted} mounts",
        unique.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_leader_upload_leaves_every_follower_to_land() {
    const N: usize = 3;
    let source = open_registry().await;
    let images = seed_fleet(&source.host(), N).await;
    let destination = open_registry().await;
    let log = proxy_to(&destination).await;
    // Every blob upload of the leading repository is refused: not transient.
    log.add_rule(
        Rule::new(Fault::status(400))
            .method("PUT")
            .path_contains("/v2/fleet-0/blobs/uploads/"),
    );

    let results = copy_fleet(&source.host(), &log.host(), N, Some(&log)).await;
    let mut results = results.into_iter();
    results
        .next()
        .expect("leader")
        .expect_err("the leader's uploads are refused");
    for (i, result) in results.enumerate() {
        let i = i + 1;
        result.unwrap_or_else(|e| panic!("follower fleet-{i} fails with its leader: {e:?}"));
        assert_landed(
            &destination.host(),
            &format!("fleet-{i}"),
            "v1",
            &images[i],
            &ANON,
        )
        .await;
    }
}

// ---- ECR ---------------------------------------------------------------------

/// `mirror SRC/app-0:v1 SRC/app-1:v1 SRC/app-2:v1 --prefix fleet/` into the
/// ECR stand-in; returns the images, the base layer and the run's output.
async fn ecr_fleet(
    aws: &Aws,
) -> (
    Vec<GeneratedImage>,
    mirror_oci::Descriptor,
    crate::support::Output,
) {
    let source = open_registry().await;
    let images = seed_fleet(&source.host(), 3).await;
    let args = (0..images.len()).map(|i| format!("{}/app-{i}:v1", source.host()));
    let base = images[0].largest_blob().expect("base").clone();
    let out = aws
        .mirror_through_gate(args)
        .args([
            "--prefix",
            "fleet/",
            "--insecure-registry",
            source.host().as_str(),
            "--json",
        ])
        .run()
        .await;
    // Keep the source registry alive until the run is over.
    drop(source);
    (images, base, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_with_blob_mounting_on_uploads_each_blob_once_and_mounts_committed_ones() {
    let aws = aws(EcrOptions {
        blob_mounting: true,
        ..EcrOptions::default()
    })
    .await;
    let (images, base, out) = ecr_fleet(&aws).await;
    out.expect_success();
    let requests = aws.ecr.requests();
    let base_digest = base.digest().to_string();
    assert_base_moves(&requests, &base_digest, 1, 2);
    assert_eq!(
        mounts(&requests, &base_digest, 202),
        0,
        "every mount waited for a committed manifest: {}",
        describe(&requests)
    );
    let reports: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).expect("--json prints JSON");
    let reports = reports.as_array().expect("one report per image");
    let mounted: u64 = reports.iter().map(|r| num(r, "/blobs/mounted")).sum();
    let bytes_mounted: u64 = reports.iter().map(|r| num(r, "/bytes_mounted")).sum();
    assert_eq!(mounted, 2);
    assert_eq!(bytes_mounted, 2 * base.size());
    assert!(out.stderr.contains("mounted ("), "{}", out.stderr);
    assert!(!out.stderr.contains("mounts are off"), "{}", out.stderr);
    assert_fleet_landed(&aws.ecr.host(), "fleet/app-", &images, &aws.ecr.auth()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_with_blob_mounting_off_moves_shared_blobs_again_and_says_so_once() {
    let aws = aws(EcrOptions::default()).await;
    let (images, base, out) = ecr_fleet(&aws).await;
    out.expect_success();
    let requests = aws.ecr.requests();
    let base_digest = base.digest().to_string();
    assert_base_moves(&requests, &base_digest, 3, 0);
    let notes: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("mounts are off"))
        .collect();
    assert_eq!(notes.len(), 1, "{}", out.stderr);
    assert!(
        notes[0].contains("BLOB_MOUNTING is DISABLED")
            && notes[0].contains(&format!("2 blobs ({} bytes)", 2 * base.size()))
            && notes[0].contains("put-account-setting"),
        "{}",
        notes[0]
    );
    assert_fleet_landed(&aws.ecr.host(), "fleet/app-", &images, &aws.ecr.auth()).await;
}

/// A mount ECR refuses (the source repository's manifest was never pushed
/// through ECR, so no committed manifest there references the blob) opens
/// an upload session: the blob goes up through that session, no second POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_mount_uploads_through_the_session_it_opened() {
    let aws = aws(EcrOptions {
        blob_mounting: true,
        ..EcrOptions::default()
    })
    .await;
    let app = fleet_image(9).await;
    for name in ["team/source", "team/copy"] {
        aws.moto
            .create_repository(name, "MUTABLE")
            .await
            .expect("create repository");
    }
    // Straight into the registry behind the gate: ECR never saw it committed.
    mirror_testkit::push_layout(
        &app,
        &mirror_testkit::PushTarget::new(&aws.ecr.registry().host(), "team/source", "v1")
            .with_auth(aws.ecr.auth()),
    )
    .await
    .expect("seed behind the gate");
    let host = aws.ecr.registry_host();
    let out = aws
        .mirror_through_gate([
            "copy".to_owned(),
            format!("{host}/team/source:v1"),
            format!("{host}/team/copy:v1"),
            "--json".to_owned(),
        ])
        .run()
        .await;
    out.expect_success();
    let requests = aws.ecr.requests();
    let writes: Vec<&RequestRecord> = requests
        .iter()
        .filter(|r| r.path.starts_with("/v2/team/copy/blobs/uploads"))
        .collect();
    for blob in &app.blobs {
        let digest = blob.digest().to_string();
        assert_eq!(
            mounts(&requests, &digest, 202),
            1,
            "{}",
            describe(&requests)
        );
        assert_eq!(uploads(&requests, &digest), 1, "{}", describe(&requests));
    }
    let posts = writes.iter().filter(|r| r.method == "POST").count();
    assert_eq!(
        posts,
        app.blobs.len(),
        "one POST per blob, the mount's: {}",
        describe(&requests)
    );
    assert!(
        !writes.iter().any(|r| r.method == "DELETE"),
        "no session was cancelled: {}",
        describe(&requests)
    );
    assert_eq!(num(&out.json(), "/blobs/mounted"), 0);
    assert_landed(&aws.ecr.host(), "team/copy", "v1", &app, &aws.ecr.auth()).await;
}
