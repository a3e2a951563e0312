//! Cross-repository mounts within one run: the first repository of a
//! registry uploads a blob, the others mount it; a failed leader leaves its
//! followers to transfer; ECR's rule (a committed manifest in `from`) makes
//! followers wait one way only, so two images that lead each other's blobs
//! still finish.

use std::sync::Arc;

use mirror_engine::{EndpointError, MountSetting, MountWhen};
use mirror_oci::Digest;
use mirror_registry::{Operation, RegistryError};

use crate::memory::{Log, Memory, MemoryHost, Op, blob, image};
use crate::{bounded, engine, request, start};

/// Uploads of a blob that landed, across every repository of a test.
fn uploads(log: &Log, digest: &Digest) -> usize {
    log.entries()
        .iter()
        .filter(|e| e.op == Op::Committed(digest.clone()))
        .count()
}

/// Mounts of a blob into `repository`, with the repository mounted from.
fn mounts_into(log: &Log, repository: &Memory, digest: &Digest) -> Vec<String> {
    log.of(&mirror_engine::Destination::name(repository))
        .into_iter()
        .filter_map(|op| match op {
            Op::Mounted { digest: d, from } if d == *digest => Some(from),
            _ => None,
        })
        .collect()
}

/// A 400 to a blob upload: not worth another attempt.
fn refused() -> EndpointError {
    EndpointError::Registry(RegistryError::Api {
        host: "registry".into(),
        operation: Operation::PutBlob,
        target: "registry/a@blob".into(),
        status: 400,
        code: None,
        message: "refused".into(),
        retry_after: None,
    })
}

#[tokio::test]
async fn repositories_of_one_registry_mount_what_the_first_uploaded() {
    let log = Log::new();
    let source = Memory::new("src", &log);
    let host = MemoryHost::new("registry", MountWhen::BlobLinked);
    let repositories: Vec<Arc<Memory>> = ["a", "b", "c"]
        .iter()
        .map(|name| host.repository(name, &log))
        .collect();
    let base = blob("base", 6000);
    let app = image("app", &[base.clone(), blob("app-top", 300)]);
    source.seed(&app, "v1");
    let engine = engine();
    let copies: Vec<_> = repositories
        .iter()
        .map(|repository| start(&engine, request(&source, repository, "v1")))
        .collect();
    let mut mounted = 0;
    let mut bytes_mounted = 0;
    for copy in copies {
        let report = bounded(copy).await.expect("join").expect("copy");
        mounted += report.blobs.mounted;
        bytes_mounted += report.bytes_mounted;
    }
    let total: u64 = app.blobs.iter().map(|(d, _)| d.size()).sum();
    for (descriptor, _) in &app.blobs {
        let digest = descriptor.digest();
        assert_eq!(uploads(&log, digest), 1, "{digest} uploaded once");
        assert_eq!(crate::gets_of(&log, &source, digest), 1);
        for repository in &repositories {
            assert!(repository.has_blob(digest));
        }
    }
    assert_eq!(mounted, 2 * app.blobs.len() as u64);
    assert_eq!(bytes_mounted, 2 * total);
    assert!(engine.mount_notes().is_empty());
}

#[tokio::test]
async fn a_failed_leader_leaves_every_follower_to_land() {
    let log = Log::new();
    let source = Memory::new("src", &log);
    let host = MemoryHost::new("registry", MountWhen::BlobLinked);
    let (a, b, c) = (
        host.repository("a", &log),
        host.repository("b", &log),
        host.repository("c", &log),
    );
    let base = blob("base", 6000);
    let app = image("app", &[base.clone(), blob("app-top", 300)]);
    source.seed(&app, "v1");
    a.refuse_uploads(base.0.digest(), vec![refused()]);
    let gate = source.hold(base.0.digest());
    let engine = engine();
    // `a` leads (its transfer is under way) before the others claim.
    let leader = start(&engine, request(&source, &a, "v1"));
    bounded(log.wait_for(|e| e.op == Op::HeadBlob(base.0.digest().clone()))).await;
    let followers = [
        start(&engine, request(&source, &b, "v1")),
        start(&engine, request(&source, &c, "v1")),
    ];
    gate.open();
    bounded(leader)
        .await
        .expect("join")
        .expect_err("the leader's upload is refused");
    for follower in followers {
        bounded(follower)
            .await
            .expect("join")
            .expect("a follower lands without its leader");
    }
    assert!(b.has_blob(base.0.digest()) && c.has_blob(base.0.digest()));
    assert!(!a.has_blob(base.0.digest()));
    assert!(b.manifest("v1").is_some() && c.manifest("v1").is_some());
}

#[tokio::test]
async fn with_mounts_off_every_repository_uploads_and_the_run_says_what_it_cost() {
    let log = Log::new();
    let source = Memory::new("src", &log);
    let host = MemoryHost::with_setting(
        "registry",
        MountWhen::ManifestCommitted,
        MountSetting::Disabled {
            reason: "BLOB_MOUNTING is DISABLED".into(),
            fix: Some("turn it on".into()),
        },
    );
    let (a, b) = (host.repository("a", &log), host.repository("b", &log));
    let app = image("app", &[blob("base", 6000)]);
    source.seed(&app, "v1");
    let engine = engine();
    let (ra, rb) = bounded(futures::future::join(
        engine.copy(request(&source, &a, "v1")),
        engine.copy(request(&source, &b, "v1")),
    ))
    .await;
    assert_eq!(
        ra.expect("a").blobs.mounted + rb.expect("b").blobs.mounted,
        0
    );
    for (descriptor, _) in &app.blobs {
        assert_eq!(uploads(&log, descriptor.digest()), 2);
    }
    let notes = engine.mount_notes();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].blobs, app.blobs.len() as u64);
    assert_eq!(
        notes[0].bytes,
        app.blobs.iter().map(|(d, _)| d.size()).sum::<u64>()
    );
    let line = notes[0].to_string();
    assert!(
        line.contains("BLOB_MOUNTING is DISABLED") && line.contains("turn it on"),
        "{line}"
    );
}

/// A follower on a registry that mounts only blobs of committed manifests
/// (ECR) waits for such a manifest in the leader's repository. Here `A`
/// leads X and `B` leads Y; the images that lead them fail, so the only
/// manifests that could commit X in `A` and Y in `B` are one image's, copied
/// to both, which needs both. Waiting both ways would hang; waits go only to
/// repositories seen earlier, so `A` uploads Y itself and `B` mounts X.
#[tokio::test]
async fn two_repositories_that_lead_each_others_blobs_still_finish() {
    let log = Log::new();
    let source = Memory::new("src", &log);
    let host = MemoryHost::new("ecr", MountWhen::ManifestCommitted);
    let (a, b) = (host.repository("a", &log), host.repository("b", &log));
    let (x, y) = (blob("x", 5000), blob("y", 4000));
    let (bad_a, bad_b) = (blob("bad-a", 100), blob("bad-b", 100));
    let leads_x = image("leads-x", &[x.clone(), bad_a.clone()]);
    let leads_y = image("leads-y", &[y.clone(), bad_b.clone()]);
    let both = image("both", &[x.clone(), y.clone()]);
    source.seed(&leads_x, "leads-x");
    source.seed(&leads_y, "leads-y");
    source.seed(&both, "both");
    source.corrupt(bad_a.0.digest());
    source.corrupt(bad_b.0.digest());
    let engine = engine();

    let first = start(&engine, request(&source, &a, "leads-x"));
    bounded(log.wait_for(|e| e.op == Op::HeadBlob(x.0.digest().clone()))).await;
    let second = start(&engine, request(&source, &b, "leads-y"));
    bounded(log.wait_for(|e| e.op == Op::HeadBlob(y.0.digest().clone()))).await;
    let both_a = start(&engine, request(&source, &a, "both"));
    let both_b = start(&engine, request(&source, &b, "both"));

    bounded(first)
        .await
        .expect("join")
        .expect_err("corrupt layer");
    bounded(second)
        .await
        .expect("join")
        .expect_err("corrupt layer");
    let report_a = bounded(both_a).await.expect("join").expect("both into a");
    let report_b = bounded(both_b).await.expect("join").expect("both into b");
    for repository in [&a, &b] {
        assert!(repository.has_blob(x.0.digest()) && repository.has_blob(y.0.digest()));
        assert!(repository.manifest("both").is_some());
    }
    assert_eq!(report_a.blobs.mounted, 0, "a waits for nobody later");
    assert_eq!(mounts_into(&log, &b, x.0.digest()), ["a"]);
    assert!(report_b.blobs.mounted >= 1);
    assert_eq!(
        log.count("ecr/b", |op| matches!(op, Op::MountRefused(_))),
        0,
        "b mounted only once a manifest in a held the blob: {:#?}",
        log.entries()
    );
}
