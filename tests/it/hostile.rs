//! Tried as an attacker (or an unlucky user) would: hostile registries and
//! storage hosts must not get credentials that belong to another host, make a
//! run hang, or put their secrets in our output.
//!
//! "Another host" is a second proxy on another port, in front of the same
//! registry: its log proves what it did (not) receive.

use std::time::Duration;

use mirror_testkit::{
    EcrOptions, EcrStandIn, Fault, GeneratedImage, ImageSpec, Moto, PlatformSpec, Proxy, PushAuth,
    PushTarget, Registry, RequestRecord, Rule, push_layout,
};

use crate::support::{
    Mirror, Output, assert_landed, assert_no_manifest, describe, image, is_write, num,
    open_registry, proxy_to, seed, small_image,
};

const USER: &str = "alice";
const PASSWORD: &str = "RIGHT-pw-8c1f07";
const WRONG: &str = "WRONG-pw-31d9aa";
const ANON: PushAuth = PushAuth::Anonymous;

/// A Basic-auth registry (like ECR) holding `image` at `app:v1`.
async fn private_registry_with(image: &GeneratedImage) -> Registry {
    let registry = Registry::htpasswd(USER, PASSWORD)
        .await
        .expect("start an htpasswd docker-registry");
    push_layout(
        image,
        &PushTarget::new(&registry.host(), "app", "v1").with_auth(basic()),
    )
    .await
    .expect("seed the private registry");
    registry
}

fn basic() -> PushAuth {
    PushAuth::basic(USER, PASSWORD)
}

fn creds(password: &str) -> String {
    format!("{USER}:{password}")
}

/// Requests in a log that carried an `Authorization` header.
fn credentialed(log: &[RequestRecord]) -> Vec<&RequestRecord> {
    log.iter().filter(|r| r.authorization.is_some()).collect()
}

#[track_caller]
fn assert_mentions(out: &Output, needles: &[&str], what: &str) {
    let stderr = out.stderr_lower();
    for needle in needles {
        assert!(
            stderr.contains(&needle.to_lowercase()),
            "{what}: stderr should mention {needle:?}\n{}",
            out.describe()
        );
    }
}

// ---- tag-list paging ---------------------------------------------------------

/// `Link: <http://OTHER-HOST/...>; rel="next"` on a tag list page sent the
/// source's Basic credentials to OTHER-HOST. The link is refused now: nothing
/// at all reaches the other host, and the error names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_list_page_on_another_host_gets_no_credentials() {
    let image = small_image().await;
    let src = private_registry_with(&image).await;
    let registry = proxy_to(&src).await;
    let other_host = proxy_to(&src).await;
    add_next_link(
        &registry,
        &format!(
            r#"<http://{}/v2/app/tags/list?n=1000&last=v1>; rel="next""#,
            other_host.host()
        ),
        "/tags/list",
    );
    let dst = open_registry().await;

    let out = all_tags(&registry, &dst)
        .args(["--src-creds", &creds(PASSWORD)])
        .run()
        .await;
    let leaked = credentialed(&other_host.requests()).len();
    assert_eq!(
        leaked,
        0,
        "the other host got credentials\n{}",
        describe(&other_host.requests())
    );
    assert!(
        other_host.requests().is_empty(),
        "the next page on another host is refused, not fetched\n{}",
        describe(&other_host.requests())
    );
    assert_ne!(out.code, 0, "{}", out.describe());
    out.expect_error_line();
    out.expect_not_leaked(PASSWORD);
    assert_mentions(
        &out,
        &["another host", &other_host.host()],
        "the refused link",
    );
    assert_no_manifest(&dst.host(), "app", "v1", &ANON).await;
}

/// Relative `Link`s (a path, or only a query) are pages of the same registry:
/// followed, with the credentials, and a tag seen twice is copied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_list_relative_links_are_followed_on_the_registry() {
    let image = small_image().await;
    let src = private_registry_with(&image).await;
    seed_with_auth(&image, &src.host(), "app", "v2").await;
    let registry = proxy_to(&src).await;
    add_next_link(
        &registry,
        r#"</v2/app/tags/list?last=v1&n=1000>; rel="next""#,
        "/tags/list?n=1000",
    );
    add_next_link(
        &registry,
        r#"<?last=v2&n=1000&page=3>; rel="next""#,
        "/tags/list?last=v1",
    );
    let dst = open_registry().await;

    let out = all_tags(&registry, &dst)
        .args(["--src-creds", &creds(PASSWORD)])
        .run()
        .await;
    out.expect_success();
    let log = registry.requests();
    let pages: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| r.path == "/v2/app/tags/list" && r.status == 200)
        .collect();
    assert_eq!(pages.len(), 3, "three pages\n{}", describe(&log));
    assert!(
        pages.iter().all(|r| r.authorization.is_some()),
        "pages of the registry itself go with its credentials\n{}",
        describe(&log)
    );
    assert!(
        pages[2]
            .query
            .as_deref()
            .is_some_and(|q| q.contains("page=3")),
        "{}",
        describe(&log)
    );
    for tag in ["v1", "v2"] {
        assert_landed(&dst.host(), "app", tag, &image, &ANON).await;
        let heads = log
            .iter()
            .filter(|r| {
                r.method == "HEAD"
                    && r.path.ends_with(&format!("/manifests/{tag}"))
                    && r.status == 200
            })
            .count();
        assert_eq!(
            heads,
            1,
            "{tag} was listed twice and copied once\n{}",
            describe(&log)
        );
    }
}

/// Every page `path_contains` matches at `registry` answers `Link: LINK`.
fn add_next_link(registry: &Proxy, link: &str, path_contains: &str) {
    registry.add_rule(
        Rule::new(Fault::AddHeaders(vec![(
            "Link".to_owned(),
            link.to_owned(),
        )]))
        .method("GET")
        .path_contains(path_contains),
    );
}

/// `mirror copy REGISTRY/app DST/app --all-tags`, cut off after a minute.
fn all_tags(registry: &Proxy, dst: &Registry) -> Mirror {
    Mirror::copy(
        &format!("{}/app", registry.host()),
        &format!("{}/app", dst.host()),
    )
    .arg("--all-tags")
    .timeout(Duration::from_secs(60))
}

async fn seed_with_auth(image: &GeneratedImage, host: &str, repo: &str, tag: &str) {
    push_layout(image, &PushTarget::new(host, repo, tag).with_auth(basic()))
        .await
        .unwrap_or_else(|e| panic!("seeding {host}/{repo}:{tag}: {e:#}"));
}

/// A registry whose `Link` leads back to the page it came from would be
/// paged forever (10,000 pages of the same tags before): the loop is cut at
/// once, and the error says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_list_that_links_back_to_itself_is_cut() {
    let image = small_image().await;
    let src = open_registry().await;
    seed(&image, &src.host(), "app", "v1").await;
    let registry = proxy_to(&src).await;
    add_next_link(
        &registry,
        r#"</v2/app/tags/list?n=1000>; rel="next""#,
        "/tags/list",
    );
    let dst = open_registry().await;

    let out = all_tags(&registry, &dst).run().await;
    let pages = registry
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/tags/list"))
        .count();
    assert!(pages <= 2, "{pages} tag-list pages for a loop");
    assert_ne!(out.code, 0, "{}", out.describe());
    assert_mentions(&out, &["loops"], "the paging loop");
    assert_no_manifest(&dst.host(), "app", "v1", &ANON).await;
}

// ---- upload sessions -----------------------------------------------------------

/// POST `/blobs/uploads/` answered with a `Location` on another host: the
/// PUTs went there with `--dest-creds`. They go without them now; that host
/// refusing (401) fails the copy with an error that names it, and nothing is
/// tagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_location_on_another_host_gets_no_credentials() {
    let image = small_image().await;
    let src = open_registry().await;
    seed(&image, &src.host(), "app", "v1").await;
    let dst = Registry::htpasswd(USER, PASSWORD)
        .await
        .expect("start an htpasswd docker-registry");
    let registry = proxy_to(&dst).await;
    let other_host = proxy_to(&dst).await;
    registry.add_rule(
        Rule::new(Fault::RewriteHeader {
            name: "location".to_owned(),
            find: registry.host(),
            replace: other_host.host(),
        })
        .method("POST")
        .path_contains("/blobs/uploads/"),
    );

    let out = Mirror::copy_between(&src.host(), &registry.host(), "app:v1")
        .args(["--dest-creds", &creds(PASSWORD), "--retries", "1"])
        .timeout(Duration::from_secs(60))
        .run()
        .await;
    let elsewhere = other_host.requests();
    assert!(
        elsewhere.iter().any(|r| r.method == "PUT"),
        "the upload went to the Location given\n{}",
        describe(&elsewhere)
    );
    assert!(
        credentialed(&elsewhere).is_empty(),
        "the other host got the destination's credentials\n{}",
        describe(&elsewhere)
    );
    out.expect_code(1);
    out.expect_error_line();
    out.expect_not_leaked(PASSWORD);
    assert_mentions(&out, &[&other_host.host()], "the upload's other host");
    assert_no_manifest(&registry.host(), "app", "v1", &basic()).await;
}

/// Failed uploads left their sessions open at the registry: each one is
/// cancelled now (DELETE), after a refused PUT and after a source blob that
/// turned out corrupt mid-stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_uploads_cancel_their_sessions() {
    let image = small_image().await;
    let src = open_registry().await;
    seed(&image, &src.host(), "app", "v1").await;
    let dst = open_registry().await;
    let layer = image.largest_blob().expect("a layer").digest().to_string();
    let hex = layer.trim_start_matches("sha256:").to_owned();

    // The destination refuses every upload PUT of one layer.
    let registry = proxy_to(&dst).await;
    registry.add_rule(
        Rule::new(Fault::status(500))
            .method("PUT")
            .path_contains(&hex),
    );
    let out = Mirror::copy_between(&src.host(), &registry.host(), "app:v1")
        .args(["--retries", "2"])
        .timeout(Duration::from_secs(90))
        .run()
        .await;
    out.expect_code(1);
    assert_failed_uploads_cancelled(&registry, &dst, &hex);

    // The source serves that layer corrupt: the upload fails mid-body.
    let source = proxy_to(&src).await;
    source.add_rule(
        Rule::new(Fault::FlipByte { offset: 1_000 })
            .method("GET")
            .path_contains(&format!("/blobs/{layer}")),
    );
    let registry = proxy_to(&dst).await;
    let out = Mirror::copy(
        &format!("{}/app:v1", source.host()),
        &format!("{}/corrupt:v1", registry.host()),
    )
    .args(["--retries", "1"])
    .timeout(Duration::from_secs(90))
    .run()
    .await;
    out.expect_code(1);
    assert_failed_uploads_cancelled(&registry, &dst, &hex);
}

/// A failed image cancels the transfers nothing else wants, some of them
/// mid-upload: their sessions are cancelled too, before the process exits.
/// One layer arrives corrupt (the copy fails at once: content is never
/// retried) while the largest trickles from the source, its PUT still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_image_cancels_the_sessions_of_its_other_uploads() {
    let image = small_image().await;
    let src = open_registry().await;
    seed(&image, &src.host(), "app", "v1").await;
    let dst = open_registry().await;
    let mut layers: Vec<_> = image.blobs.iter().collect();
    layers.sort_by_key(|b| std::cmp::Reverse(b.size()));
    let slow = layers[0].digest().to_string();
    let corrupt = layers[1].digest().to_string();

    let source = proxy_to(&src).await;
    source.add_rule(
        Rule::new(Fault::Throttle {
            bytes_per_sec: 4 * 1024,
        })
        .method("GET")
        .path_contains(&format!("/blobs/{slow}")),
    );
    source.add_rule(
        Rule::new(Fault::FlipByte { offset: 1_000 })
            .method("GET")
            .path_contains(&format!("/blobs/{corrupt}")),
    );
    let registry = proxy_to(&dst).await;
    let out = Mirror::copy(
        &format!("{}/app:v1", source.host()),
        &format!("{}/app:v1", registry.host()),
    )
    .timeout(Duration::from_secs(90))
    .run()
    .await;
    out.expect_code(1);
    assert!(
        out.stderr.contains(&corrupt),
        "the failure names the corrupt layer:\n{}",
        out.stderr
    );
    // Every session the destination opened was committed or cancelled,
    // the trickling layer's among them (it cannot have landed).
    let log = registry.requests();
    let slow_hex = slow.trim_start_matches("sha256:");
    let opened = log
        .iter()
        .filter(|r| r.method == "POST" && r.status == 202)
        .count();
    let committed: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| r.method == "PUT" && r.status == 201)
        .collect();
    assert!(
        !committed
            .iter()
            .any(|r| r.query.as_deref().is_some_and(|q| q.contains(slow_hex))),
        "the trickling layer {slow} landed before the failure\n{}",
        describe(&log)
    );
    let cancelled: Vec<&RequestRecord> = log.iter().filter(|r| r.method == "DELETE").collect();
    // A transfer dropped while its PUT's 201 was on the way cancels a
    // session the registry has just closed: that DELETE finds nothing (404).
    let closed: std::collections::BTreeSet<&str> = committed
        .iter()
        .chain(&cancelled)
        .map(|r| r.path.as_str())
        .collect();
    let cancelled_once: std::collections::BTreeSet<&str> =
        cancelled.iter().map(|r| r.path.as_str()).collect();
    assert!(
        closed.len() == opened && cancelled_once.len() == cancelled.len(),
        "{opened} upload sessions opened, {} committed and {} cancelled (each once)\n{}",
        committed.len(),
        cancelled.len(),
        describe(&log)
    );
    for delete in &cancelled {
        let landed = committed.iter().any(|put| put.path == delete.path);
        assert!(
            if landed {
                delete.status == 404
            } else {
                matches!(delete.status, 204 | 404)
            },
            "cancelling {}: {}\n{}",
            delete.path,
            delete.status,
            describe(&log)
        );
    }
    assert_cancelled_sessions_gone(&dst, &cancelled, &log);
}

/// Every upload PUT of the blob `hex` was followed by one DELETE of its
/// session, and a session whose DELETE the registry accepted (204) is gone
/// from its storage. The DELETE may also be answered 404: when part of a
/// body that failed mid-stream landed before the failure, the stored size
/// no longer matches the session's `_state`, and distribution refuses every
/// request with that state (BLOB_UPLOAD_INVALID; it means to cancel the
/// session then, but closes the writer first and the cancel fails, so the
/// session waits for the registry's upload purge). No client can do more.
#[track_caller]
fn assert_failed_uploads_cancelled(registry: &Proxy, storage: &Registry, hex: &str) {
    let log = registry.requests();
    let puts: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| r.method == "PUT" && r.query.as_deref().is_some_and(|q| q.contains(hex)))
        .collect();
    assert!(!puts.is_empty(), "no upload of {hex}\n{}", describe(&log));
    let mut deletes = Vec::new();
    for put in puts {
        assert_ne!(
            put.status,
            201,
            "the upload of {hex} failed\n{}",
            describe(&log)
        );
        let cancelled = log
            .iter()
            .filter(|r| r.method == "DELETE" && r.path == put.path)
            .collect::<Vec<_>>();
        assert!(
            cancelled.len() == 1 && matches!(cancelled[0].status, 204 | 404),
            "the session {} is cancelled once\n{}",
            put.path,
            describe(&log)
        );
        deletes.push(cancelled[0]);
    }
    assert_cancelled_sessions_gone(storage, &deletes, &log);
}

/// A session whose DELETE the registry accepted (204) is gone from its
/// storage; the walk must find `_uploads` folders, or it proves nothing.
#[track_caller]
fn assert_cancelled_sessions_gone(
    storage: &Registry,
    deletes: &[&RequestRecord],
    log: &[RequestRecord],
) {
    let (folders, open) = upload_sessions(storage.storage_dir());
    assert!(
        folders > 0,
        "no `_uploads` folder under {}: the check below would see nothing",
        storage.storage_dir().display()
    );
    for delete in deletes.iter().filter(|d| d.status == 204) {
        let session = delete.path.rsplit('/').next().unwrap_or_default();
        assert!(
            !open.iter().any(|path| path.ends_with(session)),
            "the session {session} is still open at the registry: {open:?}\n{}",
            describe(log)
        );
    }
}

/// The `_uploads` folders distribution's filesystem storage has
/// (`repositories/NAME/_uploads`), and the upload sessions open in them: a
/// session's folder with its `startedat` or `data` file. A cancelled
/// session's folder can stay behind holding only `hashstates/` (the registry
/// stores the hash state when it closes the cancelled writer, after deleting
/// the folder); nothing can resume it.
fn upload_sessions(storage: &std::path::Path) -> (usize, Vec<std::path::PathBuf>) {
    fn walk(dir: &std::path::Path, folders: &mut usize, sessions: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for path in entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
            if path.file_name().is_some_and(|n| n == "_uploads") {
                *folders += 1;
                sessions.extend(
                    std::fs::read_dir(&path)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path())
                        .filter(|s| s.join("startedat").exists() || s.join("data").exists()),
                );
            } else {
                walk(&path, folders, sessions);
            }
        }
    }
    let (mut folders, mut sessions) = (0, Vec::new());
    walk(storage, &mut folders, &mut sessions);
    (folders, sessions)
}

// ---- credentials keyed by the whole secret ---------------------------------------

/// `--src-creds alice:RIGHT --dest-creds alice:WRONG` on one registry used
/// RIGHT for both (host state was keyed by the redacted Debug text). Either
/// order with a wrong password now fails with an auth error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_registry_two_passwords_are_kept_apart() {
    let image = small_image().await;
    let registry = private_registry_with(&image).await;
    let source = format!("{}/app:v1", registry.host());
    for (label, src_password, dst_password) in [
        ("wrong-destination", PASSWORD, WRONG),
        ("wrong-source", WRONG, PASSWORD),
    ] {
        let destination = format!("{}/{label}:v1", registry.host());
        let out = Mirror::copy(&source, &destination)
            .args([
                "--src-creds",
                &creds(src_password),
                "--dest-creds",
                &creds(dst_password),
                "--retries",
                "1",
            ])
            .run()
            .await;
        assert_eq!(out.code, 1, "{label}\n{}", out.describe());
        out.expect_not_leaked(PASSWORD);
        out.expect_not_leaked(WRONG);
        let stderr = out.stderr_lower();
        assert!(
            stderr.contains("auth") || stderr.contains("credential"),
            "{label}: the error should be about authentication\n{}",
            out.describe()
        );
        assert_no_manifest(&registry.host(), label, "v1", &basic()).await;
    }
    // Both right: the same two flags work.
    let out = Mirror::copy(&source, &format!("{}/both-right:v1", registry.host()))
        .args([
            "--src-creds",
            &creds(PASSWORD),
            "--dest-creds",
            &creds(PASSWORD),
        ])
        .run()
        .await;
    out.expect_success();
    assert_landed(&registry.host(), "both-right", "v1", &image, &basic()).await;
}

// ---- presigned storage URLs ----------------------------------------------------------

/// A presigned blob redirect whose storage host answers 403 with an S3 XML
/// body echoing the URL printed X-Amz-Signature, blamed the registry and
/// hinted at credentials that were never sent there. Now the storage host is
/// named, the presigned URL is said to be refused, and the body is redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_presigned_url_names_the_storage_host_and_keeps_its_secrets() {
    const SIGNATURE: &str = "5ec7e75167a7ae0f00d5e1c0ffee";
    const KEY_ID: &str = "AKIAHOSTILESTORAGE";
    let image = small_image().await;
    let src = private_registry_with(&image).await;
    let registry = proxy_to(&src).await;
    let storage = proxy_to(&src).await;
    let presigned = format!(
        "http://{}/bucket/docker/registry/v2/blobs/data?X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential={KEY_ID}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request\
         &X-Amz-Date=20260101T000000Z&X-Amz-Expires=1200&X-Amz-SignedHeaders=host\
         &X-Amz-Signature={SIGNATURE}",
        storage.host()
    );
    registry.add_rule(
        Rule::new(Fault::ReplaceResponse {
            status: 307,
            content_type: "text/plain".to_owned(),
            body: Vec::new(),
            headers: vec![("Location".to_owned(), presigned.clone())],
        })
        .method("GET")
        .path_contains("/blobs/sha256:"),
    );
    let echoed = presigned.replace('&', "&amp;");
    storage.add_rule(Rule::new(Fault::ReplaceResponse {
        status: 403,
        content_type: "application/xml".to_owned(),
        body: format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
             <Message>Request has expired</Message><Resource>{echoed}</Resource>\
             <AWSAccessKeyId>{KEY_ID}</AWSAccessKeyId><SignatureProvided>{SIGNATURE}</SignatureProvided>\
             <RequestId>4442587FB7D0A2F9</RequestId></Error>"
        )
        .into_bytes(),
        headers: Vec::new(),
    }));
    let dst = open_registry().await;

    let out = Mirror::copy_between(&registry.host(), &dst.host(), "app:v1")
        .args(["--src-creds", &creds(PASSWORD), "--retries", "1"])
        .timeout(Duration::from_secs(60))
        .fails()
        .await;
    for secret in [SIGNATURE, KEY_ID, PASSWORD] {
        out.expect_not_leaked(secret);
    }
    assert_mentions(
        &out,
        &[
            &storage.host(),
            "presigned",
            "AccessDenied",
            "Request has expired",
        ],
        "the storage host's refusal",
    );
    let stderr = out.stderr_lower();
    assert!(
        !stderr.contains("--src-creds") && !stderr.contains("lack permission"),
        "no credential hint for a host that got no credentials\n{}",
        out.describe()
    );
    let storage_log = storage.requests();
    assert!(!storage_log.is_empty(), "the redirect was followed");
    assert!(
        credentialed(&storage_log).is_empty(),
        "the storage host got the registry's credentials\n{}",
        describe(&storage_log)
    );
    assert_no_manifest(&dst.host(), "app", "v1", &ANON).await;
}

// ---- digests mirror cannot verify -----------------------------------------------------

/// An md5 digest in a source manifest reached the destination, which got the
/// blame for refusing it: the manifest is refused when it is read, with an
/// error naming the manifest and the digest, and the destination sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverifiable_digest_in_a_source_manifest_is_refused_before_the_destination() {
    const MD5: &str = "md5:d41d8cd98f00b204e9800998ecf8427e";
    let single = image(ImageSpec {
        name: "it-hostile-md5".to_owned(),
        seed: 5,
        platforms: vec![PlatformSpec::new("linux/amd64", vec![4 * 1024, 1024])],
        ..ImageSpec::default()
    })
    .await;
    let root = std::fs::read(single.blob_path(single.root.digest())).expect("read the root");
    let mut manifest: serde_json::Value = serde_json::from_slice(&root).expect("JSON");
    manifest["layers"][1]["digest"] = MD5.into();
    let crafted = serde_json::to_vec(&manifest).expect("serialize");
    let crafted_digest = mirror_oci::digest_of(&crafted).to_string();
    let src = open_registry().await;
    seed(&single, &src.host(), "app", "v1").await;
    let registry = proxy_to(&src).await;
    registry.add_rule(
        Rule::new(Fault::ReplaceResponse {
            status: 200,
            content_type: single.root.media_type().to_string(),
            body: crafted.clone(),
            headers: vec![("Docker-Content-Digest".to_owned(), crafted_digest.clone())],
        })
        .path_contains("/manifests/"),
    );
    let dst = open_registry().await;
    let destination = proxy_to(&dst).await;

    let out = Mirror::copy_between(&registry.host(), &destination.host(), "app:v1")
        .timeout(Duration::from_secs(60))
        .fails()
        .await;
    assert_mentions(
        &out,
        &[MD5, "cannot verify", &crafted_digest[..19]],
        "the unverifiable digest",
    );
    let log = destination.requests();
    assert!(
        !log.iter().any(|r| r.path.contains("md5") || is_write(r)),
        "the destination saw the md5 blob or a write\n{}",
        describe(&log)
    );
}

/// ECR to ECR in one registry with mounting off shares one host object between
/// the source and the destination: 64 blob GETs at `--max-concurrent-blobs 64`
/// must not hold every request permit while their uploads wait for one (a hang).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_to_ecr_with_many_blobs_does_not_deadlock_on_request_permits() {
    let moto = Moto::start()
        .await
        .expect("moto starts (./scripts/test.sh installs it)");
    let ecr = EcrStandIn::start(&moto, EcrOptions::default())
        .await
        .expect("ECR stand-in starts");
    for repository in ["source/app", "copy/app"] {
        moto.create_repository(repository, "MUTABLE")
            .await
            .expect("create the repository in moto");
    }
    // One platform, 63 small layers: 64 blobs with the config.
    let many = image(ImageSpec {
        name: "it-hostile-64-blobs".to_owned(),
        seed: 64,
        platforms: vec![PlatformSpec::new("linux/amd64", vec![3 * 1024; 63])],
        ..ImageSpec::default()
    })
    .await;
    assert_eq!(many.blobs.len(), 64);
    mirror_testkit::push_layout(
        &many,
        &mirror_testkit::PushTarget::new(&ecr.host(), "source/app", "v1").with_auth(ecr.auth()),
    )
    .await
    .expect("seed the source repository");

    let host = ecr.registry_host();
    let mut run = Mirror::new([
        "copy".to_owned(),
        format!("{host}/source/app:v1"),
        format!("{host}/copy/app:v1"),
        "--max-concurrent-blobs".to_owned(),
        "64".to_owned(),
        "--json".to_owned(),
        "--registry-endpoint".to_owned(),
        ecr.endpoint_arg(),
    ])
    .timeout(Duration::from_secs(120));
    for (key, value) in moto.env() {
        run = run.env(&key, value);
    }
    let out = run.run().await;
    out.expect_success();
    let report = out.json();
    assert_eq!(num(&report, "/blobs/copied"), 64, "{report}");
    assert_landed(&ecr.host(), "copy/app", "v1", &many, &ecr.auth()).await;
}
