//! Signatures, SBOMs and attestations travel with an image, through each
//! mechanism they hang off it by (the OCI 1.1 referrers API of the ECR
//! stand-in, the fallback tag index of distribution 2.8, cosign's `.sig` and
//! `.att` tags), into each kind of destination (a registry without the API,
//! the ECR stand-in with it, an oci-archive and back); and
//! `--require-signature` lets through only what a key signed, checked
//! against signatures Python's `cryptography` made.

use mirror_testkit::{
    Artifact, EcrOptions, Fault, GeneratedImage, ImageSpec, PushAuth, Registry, Rule, SigningKey,
    Subject, cosign_attestation, cosign_payload, cosign_signature, fallback_index, fetch_referrers,
    in_toto_provenance, list_tags, push_artifact, push_manifest_bytes, spdx_sbom,
};
use serde_json::Value;

use crate::ecr::aws;
use crate::support::{
    Mirror, Output, Scratch, assert_landed, assert_no_manifest, copy_json, describe, fetch, image,
    is_ping, is_write, num, open_registry, proxy_to, seeded_registry, small_app_v1, small_image,
    text, three_platforms, try_fetch,
};

const ANON: PushAuth = PushAuth::Anonymous;
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// `sha256-<hex>`: a subject's fallback tag.
fn fallback_tag(digest: &str) -> String {
    digest.replace(':', "-")
}

/// The root of a generated image as a subject.
fn root_of(image: &GeneratedImage) -> Subject {
    let bytes = image.read_blob(&image.root_digest()).expect("root bytes");
    Subject::of(image.root.media_type().as_ref(), &bytes)
}

/// A child manifest of a generated image as a subject.
fn child_of(image: &GeneratedImage, platform: &str) -> Subject {
    let (descriptor, _) = image
        .image_manifests()
        .into_iter()
        .find(|(_, p)| {
            p.as_ref()
                .is_some_and(|p| mirror_oci::platform_string(p) == platform)
        })
        .unwrap_or_else(|| panic!("no {platform} in the image"));
    let bytes = image.read_blob(descriptor.digest()).expect("child bytes");
    Subject::of(descriptor.media_type().as_ref(), &bytes)
}

/// A cosign signature of `subject` by `key` (simple signing payload).
fn signed_by(key: &SigningKey, subject: &Subject) -> (Vec<u8>, String) {
    let payload = cosign_payload("example.invalid/app", &subject.digest);
    let signature = key.sign(&payload).expect("python signs");
    (payload, signature)
}

/// Pushes `artifact` by its digest; returns the `OCI-Subject` answer.
async fn push(host: &str, repo: &str, auth: &PushAuth, artifact: &Artifact) -> Option<String> {
    push_artifact(host, repo, auth, artifact, artifact.digest.as_ref())
        .await
        .unwrap_or_else(|e| panic!("pushing {} to {host}/{repo}: {e:#}", artifact.digest))
}

/// Pushes `artifact` at one of cosign's tags.
async fn push_at(host: &str, repo: &str, artifact: &Artifact, tag: &str) {
    push_artifact(host, repo, &ANON, artifact, tag)
        .await
        .unwrap_or_else(|e| panic!("pushing {tag} to {host}/{repo}: {e:#}"));
}

/// cosign's signature tag of `subject`: `sha256-<hex>.sig`.
fn sig_tag(subject: &Subject) -> String {
    format!("{}.sig", fallback_tag(&subject.digest))
}

/// Pushes a fallback tag index of `subject` at `host/app` listing `artifacts`.
async fn push_fallback_index(host: &str, subject: &Subject, artifacts: &[&Artifact]) {
    push_manifest_bytes(
        host,
        "app",
        &ANON,
        &fallback_index(artifacts),
        INDEX,
        &fallback_tag(&subject.digest),
    )
    .await
    .unwrap_or_else(|e| panic!("pushing a fallback index to {host}/app: {e:#}"));
}

/// The small image at `app:v1` of a new registry, with an SPDX SBOM of its
/// root pushed and listed in the root's fallback tag index.
async fn with_listed_sbom() -> (GeneratedImage, Registry, Subject, Artifact) {
    let image = small_image().await;
    let src = seeded_registry(&image, "app", "v1").await;
    let root = root_of(&image);
    let sbom = spdx_sbom(&root, "app");
    push(&src.host(), "app", &ANON, &sbom).await;
    push_fallback_index(&src.host(), &root, &[&sbom]).await;
    (image, src, root, sbom)
}

/// `run` with `--require-signature` of `key` and `--json`, expected to
/// succeed: its report.
async fn run_signed(run: Mirror, key: &SigningKey) -> Value {
    let out = run
        .args([
            "--require-signature".to_owned(),
            format!("cosign:{}", key.public_pem.display()),
            "--json".to_owned(),
        ])
        .run()
        .await;
    out.expect_success();
    out.json()
}

/// The report's count of referrers `field` (copied, left_out...) is `expected`.
#[track_caller]
fn assert_referrers(out: &Output, field: &str, expected: u64) {
    let pointer = format!("/referrers/{field}");
    assert_eq!(num(&out.json(), &pointer), expected, "{}", out.describe());
}

/// The digests a fallback tag index lists at `host/repo`.
async fn listed_at(host: &str, repo: &str, subject: &str) -> Vec<String> {
    let index = fetch(host, repo, &fallback_tag(subject), &ANON).await;
    assert_eq!(index.content_type, INDEX, "the fallback tag holds an index");
    digests_of(&index.json())
}

fn digests_of(index: &Value) -> Vec<String> {
    let mut digests: Vec<String> = index["manifests"]
        .as_array()
        .expect("an index")
        .iter()
        .map(|d| text(d, "/digest").to_owned())
        .collect();
    digests.sort();
    digests
}

fn sorted(digests: &[&Artifact]) -> Vec<String> {
    let mut all: Vec<String> = digests.iter().map(|a| a.digest.to_string()).collect();
    all.sort();
    all
}

/// Each artifact is at `host/repo` byte for byte, with its blobs.
async fn assert_artifacts_landed(host: &str, repo: &str, auth: &PushAuth, artifacts: &[&Artifact]) {
    for artifact in artifacts {
        let landed = fetch(host, repo, artifact.digest.as_ref(), auth).await;
        assert_eq!(
            landed.bytes,
            artifact.manifest.to_vec(),
            "{} differs at {host}/{repo}",
            artifact.digest
        );
        for blob in &artifact.blobs {
            let digest = mirror_oci::digest_of(blob);
            assert!(
                mirror_testkit::blob_exists(host, repo, &digest, auth)
                    .await
                    .expect("HEAD blob"),
                "blob {digest} of {} is missing at {host}/{repo}",
                artifact.digest
            );
        }
    }
}

/// Referrers pushed to the ECR stand-in through its referrers API (a
/// signature, an SPDX SBOM, in-toto provenance, and a signature of the
/// SBOM, listed two per page) land on distribution 2.8, which has no
/// referrers API, in fallback tag indexes; the signature verifies with the
/// key that made it (found as a referrer); a second run finds them there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_referrers_from_ecr_land_in_fallback_indexes_on_distribution() {
    let scratch = Scratch::new("referrers-api");
    let key = SigningKey::generate(scratch.path(), "cosign").expect("a key");
    let aws = aws(EcrOptions::default()).await;
    aws.moto
        .create_repository("app", "MUTABLE")
        .await
        .expect("create the repository");
    let image = small_image().await;
    let ecr = aws.ecr.host();
    let auth = aws.ecr.auth();
    mirror_testkit::push_layout(
        &image,
        &mirror_testkit::PushTarget::new(&ecr, "app", "v1").with_auth(auth.clone()),
    )
    .await
    .expect("seed ECR");
    let root = root_of(&image);
    let signature = cosign_signature(Some(&root), &[signed_by(&key, &root)]);
    let sbom = spdx_sbom(&root, "app");
    let provenance = in_toto_provenance(&root);
    let sbom_signature = cosign_signature(
        Some(&sbom.as_subject()),
        &[signed_by(&key, &sbom.as_subject())],
    );
    for artifact in [&signature, &sbom, &provenance] {
        assert_eq!(
            push(&ecr, "app", &auth, artifact).await.as_deref(),
            Some(root.digest.as_str()),
            "the stand-in answers OCI-Subject"
        );
    }
    push(&ecr, "app", &auth, &sbom_signature).await;
    aws.ecr.referrers().set_page_size(2);

    let dst = open_registry().await;
    let dst_proxy = proxy_to(&dst).await;
    let source = format!("{}/app:v1", aws.ecr.registry_host());
    let destination = format!("{}/app:v1", dst_proxy.host());
    let report = run_signed(
        aws.mirror([
            "copy",
            &source,
            &destination,
            "--insecure-registry",
            &dst_proxy.host(),
        ]),
        &key,
    )
    .await;
    assert_eq!(num(&report, "/referrers/copied"), 4, "{report:#}");
    assert_eq!(num(&report, "/referrers/failed"), 0, "{report:#}");
    assert_eq!(
        text(&report, "/signature/found_at"),
        "referrer",
        "{report:#}"
    );
    assert_eq!(
        text(&report, "/signature/signature"),
        signature.digest.to_string()
    );

    let pages = aws
        .ecr
        .requests()
        .into_iter()
        .filter(|r| r.path == format!("/v2/app/referrers/{}", root.digest) && r.status == 200)
        .count();
    assert!(pages >= 2, "the second page was not read: {pages} pages");
    assert_landed(&dst.host(), "app", "v1", &image, &ANON).await;
    assert_artifacts_landed(
        &dst.host(),
        "app",
        &ANON,
        &[&signature, &sbom, &provenance, &sbom_signature],
    )
    .await;
    assert_eq!(
        listed_at(&dst.host(), "app", &root.digest).await,
        sorted(&[&signature, &sbom, &provenance])
    );
    assert_eq!(
        listed_at(&dst.host(), "app", sbom.digest.as_ref()).await,
        sorted(&[&sbom_signature])
    );
    // Every referrer after its blobs and its subject, each fallback index
    // after what it lists, the tag last.
    let writes: Vec<String> = dst_proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/"))
        .map(|r| r.path.rsplit('/').next().unwrap_or_default().to_owned())
        .collect();
    let at = |reference: &str| {
        writes
            .iter()
            .position(|w| w == reference)
            .unwrap_or_else(|| panic!("{reference} was not pushed: {writes:?}"))
    };
    assert!(at(&root.digest) < at(signature.digest.as_ref()));
    assert!(at(signature.digest.as_ref()) < at(&fallback_tag(&root.digest)));
    assert!(at(sbom.digest.as_ref()) < at(sbom_signature.digest.as_ref()));
    assert_eq!(writes.last().map(String::as_str), Some("v1"), "{writes:?}");

    dst_proxy.clear_requests();
    let again = aws
        .mirror([
            "copy",
            &source,
            &destination,
            "--insecure-registry",
            &dst_proxy.host(),
            "--json",
        ])
        .run()
        .await;
    again.expect_success();
    let report = again.json();
    assert_eq!(report["up_to_date"], true);
    assert_eq!(num(&report, "/referrers/skipped"), 4, "{report:#}");
    assert_eq!(num(&report, "/referrers/copied"), 0, "{report:#}");
    assert!(
        !dst_proxy.requests().iter().any(is_write),
        "a warm run wrote: {}",
        describe(&dst_proxy.requests())
    );
}

/// A distribution 2.8 source with an SBOM and provenance in a fallback tag
/// index and cosign's `.sig` and `.att` tags, mirrored into the ECR
/// stand-in with the headline command: the stand-in's referrers API lists
/// the SBOM and the provenance (it answered `OCI-Subject`, so no fallback
/// index was written), cosign's tags hold the same manifests, and the
/// `.sig` signature verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_and_cosign_tags_reach_the_ecr_referrers_api() {
    let scratch = Scratch::new("referrers-ecr");
    let key = SigningKey::generate(scratch.path(), "cosign").expect("a key");
    let image = small_image().await;
    let src = seeded_registry(&image, "app", "v1").await;
    let host = src.host();
    let root = root_of(&image);
    let sbom = spdx_sbom(&root, "app");
    let provenance = in_toto_provenance(&root);
    for artifact in [&sbom, &provenance] {
        assert_eq!(push(&host, "app", &ANON, artifact).await, None);
    }
    push_fallback_index(&host, &root, &[&sbom, &provenance]).await;
    let signature = cosign_signature(None, &[signed_by(&key, &root)]);
    let attestation = cosign_attestation(&root, &key).expect("an attestation");
    let sig_tag = sig_tag(&root);
    let att_tag = format!("{}.att", fallback_tag(&root.digest));
    push_at(&host, "app", &signature, &sig_tag).await;
    push_at(&host, "app", &attestation, &att_tag).await;

    let aws = aws(EcrOptions::default()).await;
    let report = run_signed(
        aws.mirror([
            &format!("{host}/app:v1"),
            "--to",
            "app",
            "--insecure-registry",
            &host,
        ]),
        &key,
    )
    .await;
    assert_eq!(num(&report, "/referrers/copied"), 4, "{report:#}");
    assert_eq!(text(&report, "/signature/found_at"), sig_tag, "{report:#}");

    let ecr = aws.ecr.host();
    let auth = aws.ecr.auth();
    assert_landed(&ecr, "app", "v1", &image, &auth).await;
    let listed = fetch_referrers(&ecr, "app", &root.digest, &auth)
        .await
        .expect("the referrers API answers");
    assert_eq!(digests_of(&listed), sorted(&[&sbom, &provenance]));
    assert_artifacts_landed(
        &ecr,
        "app",
        &auth,
        &[&sbom, &provenance, &signature, &attestation],
    )
    .await;
    for (tag, artifact) in [(&sig_tag, &signature), (&att_tag, &attestation)] {
        let landed = fetch(&ecr, "app", tag, &auth).await;
        assert_eq!(landed.digest, artifact.digest.to_string(), "{tag}");
    }
    let fallback_puts: Vec<_> = aws
        .ecr
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with(&fallback_tag(&root.digest)))
        .collect();
    assert!(
        fallback_puts.is_empty(),
        "a fallback index was pushed to a registry that answers OCI-Subject: {}",
        describe(&fallback_puts)
    );
}

/// Another tool's referrer already in the destination's fallback index
/// survives the merge, entry and all; the warm re-run then costs one HEAD
/// per side plus the referrer look-ups the README states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tools_referrer_survives_and_a_warm_run_costs_what_the_readme_says() {
    let (_, src, root, sbom) = with_listed_sbom().await;

    let dst = open_registry().await;
    // Another tool's scan report, in its own fallback index entry shape.
    let report_artifact = in_toto_provenance(&Subject {
        media_type: root.media_type.clone(),
        digest: root.digest.clone(),
        size: root.size,
    });
    push(&dst.host(), "app", &ANON, &report_artifact).await;
    let mut theirs = report_artifact.listing();
    theirs["annotations"]["com.example.scanner"] = Value::from("kept as written");
    let their_index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [theirs.clone()],
    });
    push_manifest_bytes(
        &dst.host(),
        "app",
        &ANON,
        their_index.to_string().as_bytes(),
        INDEX,
        &fallback_tag(&root.digest),
    )
    .await
    .expect("destination fallback index");

    let src_proxy = proxy_to(&src).await;
    let dst_proxy = proxy_to(&dst).await;
    let source = format!("{}/app:v1", src_proxy.host());
    let destination = format!("{}/app:v1", dst_proxy.host());
    let out = copy_json(&source, &destination).await;
    assert_referrers(&out, "copied", 1);
    let merged = fetch(&dst.host(), "app", &fallback_tag(&root.digest), &ANON)
        .await
        .json();
    assert_eq!(
        merged["manifests"][0], theirs,
        "the other tool's entry changed"
    );
    assert_eq!(
        digests_of(&merged),
        sorted(&[&report_artifact, &sbom]),
        "{merged:#}"
    );

    src_proxy.clear_requests();
    dst_proxy.clear_requests();
    let warm = copy_json(&source, &destination).await;
    let report = warm.json();
    assert_eq!(report["up_to_date"], true);
    assert_eq!(num(&report, "/referrers/skipped"), 1, "{report:#}");
    let calls = |proxy: &mirror_testkit::Proxy| -> Vec<String> {
        let mut calls: Vec<String> = proxy
            .requests()
            .iter()
            .filter(|r| !is_ping(r) && r.status != 401)
            .map(|r| {
                let what = r.path.rsplit('/').nth(1).unwrap_or_default();
                format!("{} {what}", r.method)
            })
            .collect();
        calls.sort();
        calls
    };
    // Source: the tag's HEAD, one referrers probe (404: no API, remembered
    // for the image's other manifests), one tag listing (which fallback and
    // cosign tags exist), the root's fallback index.
    assert_eq!(
        calls(&src_proxy),
        [
            "GET manifests",
            "GET referrers",
            "GET tags",
            "HEAD manifests"
        ],
        "source:\n{}",
        describe(&src_proxy.requests())
    );
    // Destination: the tag's HEAD, the root (to learn its children), one
    // referrers probe, the root's fallback index.
    assert_eq!(
        calls(&dst_proxy),
        [
            "GET manifests",
            "GET manifests",
            "GET referrers",
            "HEAD manifests"
        ],
        "destination:\n{}",
        describe(&dst_proxy.requests())
    );
}

/// An image into an oci-archive and back out into a registry keeps its
/// referrers: the archive's index.json lists the SBOM (unnamed, with its
/// artifact type) and cosign's tag, the archive still holds one image, the
/// signature verifies from the archive, and the registry gets its fallback
/// index and `.sig` tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oci_archive_round_trip_keeps_referrers() {
    let scratch = Scratch::new("referrers-archive");
    let key = SigningKey::generate(scratch.path(), "cosign").expect("a key");
    let (image, src, root, sbom) = with_listed_sbom().await;
    let signature = cosign_signature(None, &[signed_by(&key, &root)]);
    let sig_tag = sig_tag(&root);
    push_at(&src.host(), "app", &signature, &sig_tag).await;

    let archive = scratch.path().join("app.tar");
    let out = copy_json(
        &format!("{}/app:v1", src.host()),
        &format!("oci-archive:{}:v1", archive.display()),
    )
    .await;
    assert_referrers(&out, "copied", 2);
    let index = archive_index(&archive);
    let entries = index["manifests"].as_array().expect("entries");
    assert!(
        entries
            .iter()
            .any(|e| e["digest"] == sbom.digest.to_string()
                && e["artifactType"] == "application/spdx+json"
                && e.pointer("/annotations/org.opencontainers.image.ref.name")
                    .is_none()),
        "the SBOM is not listed as a referrer: {index:#}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["digest"] == signature.digest.to_string()
                && e["annotations"]["org.opencontainers.image.ref.name"] == sig_tag.as_str()),
        "cosign's tag is not in index.json: {index:#}"
    );

    // Read back as "the only image": referrer entries name none.
    let dst = open_registry().await;
    let report = run_signed(
        Mirror::copy(
            &format!("oci-archive:{}", archive.display()),
            &format!("{}/app:v1", dst.host()),
        ),
        &key,
    )
    .await;
    assert_eq!(num(&report, "/referrers/copied"), 2, "{report:#}");
    assert_eq!(text(&report, "/signature/found_at"), sig_tag);
    assert_landed(&dst.host(), "app", "v1", &image, &ANON).await;
    assert_eq!(
        listed_at(&dst.host(), "app", &root.digest).await,
        sorted(&[&sbom])
    );
    assert_eq!(
        fetch(&dst.host(), "app", &sig_tag, &ANON).await.digest,
        signature.digest.to_string()
    );
}

/// The `index.json` of an oci-archive.
fn archive_index(path: &std::path::Path) -> Value {
    let file = std::fs::File::open(path).expect("the archive");
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("an entry");
        if entry.path().expect("a path").to_string_lossy() == "index.json" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).expect("index.json");
            return serde_json::from_str(&text).expect("JSON");
        }
    }
    panic!("no index.json in {}", path.display())
}

/// `--require-signature` with two keys: a signature by either lets an image
/// through; a tampered payload, a stranger's key, a signature naming
/// another digest and no signature at all are each refused with the reason,
/// nothing is written for them, and the good image lands all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_signature_refuses_what_no_key_signed_and_others_carry_on() {
    let scratch = Scratch::new("referrers-require");
    let ours = SigningKey::generate(scratch.path(), "ours").expect("a key");
    let second = SigningKey::generate(scratch.path(), "second").expect("a key");
    let stranger = SigningKey::generate(scratch.path(), "stranger").expect("a key");
    let src = open_registry().await;
    let host = src.host();
    let cases = [
        "good", "second", "tampered", "stranger", "other", "unsigned",
    ];
    let mut images = Vec::new();
    for (i, tag) in cases.iter().enumerate() {
        let img = image(ImageSpec::small(&format!("require-{tag}"), 700 + i as u64)).await;
        crate::support::seed(&img, &host, "app", tag).await;
        images.push((tag.to_owned(), img));
    }
    let other_image = &images[0].1;
    for (tag, img) in &images {
        let root = root_of(img);
        let signed = match *tag {
            "good" => Some(signed_by(&ours, &root)),
            "second" => Some(signed_by(&second, &root)),
            "tampered" => {
                let (payload, signature) = signed_by(&ours, &root);
                let mut tampered = String::from_utf8(payload).expect("JSON payload");
                tampered = tampered.replace("example.invalid/app", "example.invalid/evil");
                Some((tampered.into_bytes(), signature))
            }
            "stranger" => Some(signed_by(&stranger, &root)),
            // A valid signature of another image, placed at this one's tag.
            "other" => Some(signed_by(&ours, &root_of(other_image))),
            _ => None,
        };
        if let Some(signed) = signed {
            let manifest = cosign_signature(None, &[signed]);
            push_at(&host, "app", &manifest, &sig_tag(&root)).await;
        }
    }
    let tags = list_tags(&host, "app", &ANON).await.expect("tags");
    assert_eq!(tags.len(), cases.len() + 5, "{tags:?}");

    let dst = open_registry().await;
    let dst_proxy = proxy_to(&dst).await;
    let out = Mirror::copy(&format!("{host}/app"), &format!("{}/app", dst_proxy.host()))
        .args([
            "--all-tags",
            "--require-signature",
            &format!("cosign:{}", ours.public_pem.display()),
            "--require-signature",
            &format!("cosign:{}", second.public_pem.display()),
        ])
        .run()
        .await;
    out.expect_code(1);
    let stderr = out.stderr.clone();
    assert!(
        stderr.contains("hint: sign it by digest with `cosign sign`"),
        "no hint for a refused image\n{}",
        out.describe()
    );
    for (expected, reason) in [
        ("tampered", "does not verify with any of the keys"),
        ("stranger", "does not verify with any of the keys"),
        (
            "other",
            &format!("signs {}, not this image", root_of(other_image).digest),
        ),
        ("unsigned", "no cosign signature found"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("/app:{expected} ")) && l.contains("refused")),
            "{expected} was not refused\n{}",
            out.describe()
        );
        assert!(stderr.contains(reason), "no `{reason}`\n{}", out.describe());
    }
    assert!(
        stderr.contains("4 of 6 images failed"),
        "{}",
        out.describe()
    );
    for (tag, img) in &images {
        match *tag {
            "good" | "second" => assert_landed(&dst.host(), "app", tag, img, &ANON).await,
            _ => {
                assert_no_manifest(&dst.host(), "app", tag, &ANON).await;
                let root = img.root_digest().to_string();
                let own = img.blobs.iter().chain(img.manifests.iter().map(|(d, _)| d));
                for blob in own {
                    let hex = blob.digest().digest().to_owned();
                    assert!(
                        !dst_proxy.requests().iter().any(|r| is_write(r)
                            && (r.path.contains(&hex)
                                || r.query.as_deref().is_some_and(|q| q.contains(&hex)))),
                        "something of the refused image {tag} ({root}) was written"
                    );
                }
            }
        }
    }
    assert!(
        try_fetch(
            &dst.host(),
            "app",
            &format!("{}.sig", fallback_tag(&root_of(&images[2].1).digest)),
            &ANON
        )
        .await
        .is_err(),
        "a refused image's signature tag was copied"
    );
}

/// A private key given as the public one is a usage error (exit 2) that
/// says which file and how to get the public key, before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_key_to_require_signature_is_a_usage_error_with_a_hint() {
    let scratch = Scratch::new("referrers-private-key");
    let key = SigningKey::generate(scratch.path(), "cosign").expect("a key");
    // Nothing listens there: the key is refused before any request.
    let out = Mirror::copy("127.0.0.1:9/app:1", "127.0.0.1:9/copy:1")
        .args([
            "--require-signature",
            &format!("cosign:{}", key.private_pem.display()),
        ])
        .run()
        .await;
    out.expect_code(2);
    let private = key.private_pem.display().to_string();
    assert!(
        out.stderr.contains(&format!(
            "error: {private} is a private key, not a public one"
        )),
        "{}",
        out.describe()
    );
    assert!(
        out.stderr.contains(&format!(
            "hint: give the public key: the cosign.pub beside it, or what `cosign public-key` prints for {private}"
        )),
        "{}",
        out.describe()
    );
}

/// `--platform` keeps the referrers of the platforms kept; `--referrers`
/// picks kinds; `none` copies none; a docker-archive says once that it
/// cannot hold them and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_filter_referrer_choice_and_docker_archive() {
    let image = image(three_platforms("referrers-platforms", 801)).await;
    let src = seeded_registry(&image, "app", "v1").await;
    let host = src.host();
    let root = root_of(&image);
    let amd64 = child_of(&image, "linux/amd64");
    let arm64 = child_of(&image, "linux/arm64/v8");
    let scratch = Scratch::new("referrers-platforms");
    let key = SigningKey::generate(scratch.path(), "cosign").expect("a key");
    let root_signature = cosign_signature(Some(&root), &[signed_by(&key, &root)]);
    let amd64_sbom = spdx_sbom(&amd64, "amd64");
    let arm64_sbom = spdx_sbom(&arm64, "arm64");
    for (subject, artifact) in [
        (&root, &root_signature),
        (&amd64, &amd64_sbom),
        (&arm64, &arm64_sbom),
    ] {
        push(&host, "app", &ANON, artifact).await;
        push_fallback_index(&host, subject, &[artifact]).await;
    }

    let dst = open_registry().await;
    let dst_host = dst.host();
    let out = Mirror::copy(&format!("{host}/app:v1"), &format!("{dst_host}/amd64:v1"))
        .args(["--platform", "linux/amd64", "--json"])
        .run()
        .await;
    out.expect_success();
    assert_referrers(&out, "copied", 1);
    assert_eq!(
        listed_at(&dst_host, "amd64", &amd64.digest).await,
        sorted(&[&amd64_sbom])
    );
    assert_no_manifest(&dst_host, "amd64", &fallback_tag(&arm64.digest), &ANON).await;
    assert_no_manifest(&dst_host, "amd64", &fallback_tag(&root.digest), &ANON).await;

    let out = Mirror::copy(&format!("{host}/app:v1"), &format!("{dst_host}/signed:v1"))
        .args(["--referrers", "signature", "--json"])
        .run()
        .await;
    out.expect_success();
    let report = out.json();
    assert_eq!(num(&report, "/referrers/copied"), 1, "{report:#}");
    assert_eq!(num(&report, "/referrers/left_out"), 2, "{report:#}");
    assert_eq!(
        listed_at(&dst_host, "signed", &root.digest).await,
        sorted(&[&root_signature])
    );
    assert_no_manifest(&dst_host, "signed", &fallback_tag(&amd64.digest), &ANON).await;

    let out = Mirror::copy(&format!("{host}/app:v1"), &format!("{dst_host}/bare:v1"))
        .args(["--referrers", "none"])
        .run()
        .await;
    out.expect_success();
    let tags = list_tags(&dst_host, "bare", &ANON).await.expect("tags");
    assert_eq!(tags, ["v1"], "--referrers none copied referrer tags");

    let archive = scratch.path().join("docker.tar");
    let out = Mirror::copy(
        &format!("{host}/app:v1"),
        &format!("docker-archive:{}:app:v1", archive.display()),
    )
    .args(["--platform", "linux/arm64/v8", "--json"])
    .run()
    .await;
    out.expect_success();
    assert_referrers(&out, "left_out", 1);
    assert_eq!(
        out.stderr.matches("cannot hold referrers").count(),
        1,
        "{}",
        out.describe()
    );
}

/// A referrer push the destination refuses (ECR has answered some with 405)
/// is a warning with the reason; the image itself lands and the run
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_referrer_push_is_reported_and_the_image_still_lands() {
    let image = small_image().await;
    let src = seeded_registry(&image, "app", "v1").await;
    let root = root_of(&image);
    let sbom = spdx_sbom(&root, "app");
    let provenance = in_toto_provenance(&root);
    for artifact in [&sbom, &provenance] {
        push(&src.host(), "app", &ANON, artifact).await;
    }
    push_fallback_index(&src.host(), &root, &[&sbom, &provenance]).await;
    let aws = aws(EcrOptions::default()).await;
    aws.ecr.faults().add_rule(
        Rule::new(Fault::ReplaceResponse {
            status: 405,
            content_type: "application/json".to_owned(),
            body: br#"{"errors":[{"code":"UNSUPPORTED","message":"Method Not Allowed"}]}"#.to_vec(),
            headers: Vec::new(),
        })
        .method("PUT")
        .path_contains(&format!("/manifests/{}", sbom.digest)),
    );
    let out = aws
        .mirror([
            &format!("{}/app:v1", src.host()),
            "--to",
            "app",
            "--insecure-registry",
            &src.host(),
            "--json",
        ])
        .run()
        .await;
    out.expect_success();
    let report = out.json();
    assert_eq!(num(&report, "/referrers/copied"), 1, "{report:#}");
    assert_eq!(num(&report, "/referrers/failed"), 1, "{report:#}");
    let errors = report["referrers"]["errors"].to_string();
    assert!(
        errors.contains(sbom.digest.as_ref()) && errors.contains("405"),
        "the reason names the referrer and the answer: {errors}"
    );
    assert!(
        out.stderr.contains("warning:") && out.stderr.contains("405"),
        "{}",
        out.describe()
    );
    let ecr = aws.ecr.host();
    let auth = aws.ecr.auth();
    assert_landed(&ecr, "app", "v1", &image, &auth).await;
    assert_artifacts_landed(&ecr, "app", &auth, &[&provenance]).await;
}

/// cosign appends signatures to one manifest at its tag: a destination
/// `.sig` holding a signature the source's lacks (one made at the
/// destination) is left as it is and reported; once the source's holds
/// every signature the destination's does, it replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_signature_the_source_lacks_is_never_dropped() {
    let scratch = Scratch::new("referrers-sig-merge");
    let publisher = SigningKey::generate(scratch.path(), "publisher").expect("a key");
    let mirror_team = SigningKey::generate(scratch.path(), "mirror-team").expect("a key");
    let (image, src, dst) = small_app_v1().await;
    let root = root_of(&image);
    let sig_tag = sig_tag(&root);
    let theirs = signed_by(&mirror_team, &root);
    let ours = signed_by(&publisher, &root);
    let at_destination = cosign_signature(None, std::slice::from_ref(&theirs));
    push_at(&dst.host(), "app", &at_destination, &sig_tag).await;
    push_at(
        &src.host(),
        "app",
        &cosign_signature(None, std::slice::from_ref(&ours)),
        &sig_tag,
    )
    .await;

    let source = format!("{}/app:v1", src.host());
    let destination = format!("{}/app:v1", dst.host());
    let out = copy_json(&source, &destination).await;
    let report = out.json();
    assert_eq!(num(&report, "/referrers/failed"), 1, "{report:#}");
    assert!(
        report["referrers"]["errors"]
            .to_string()
            .contains("holds signatures the source's"),
        "{report:#}"
    );
    assert_landed(&dst.host(), "app", "v1", &image, &ANON).await;
    assert_eq!(
        fetch(&dst.host(), "app", &sig_tag, &ANON).await.digest,
        at_destination.digest.to_string(),
        "the destination's signature was dropped"
    );

    // The publisher's .sig now holds both signatures: it replaces the
    // destination's, on a run that finds the image itself up to date.
    let both = cosign_signature(None, &[theirs, ours]);
    push_at(&src.host(), "app", &both, &sig_tag).await;
    let out = copy_json(&source, &destination).await;
    let report = out.json();
    assert_eq!(report["up_to_date"], true);
    assert_eq!(num(&report, "/referrers/copied"), 1, "{report:#}");
    assert_eq!(
        fetch(&dst.host(), "app", &sig_tag, &ANON).await.digest,
        both.digest.to_string()
    );
}

/// `require-signature:` in a sync file, in `defaults` and per entry (keys
/// relative to the file): each entry's images need a signature by its keys;
/// what no key signed is refused with nothing written, the rest lands. A key
/// that cannot be read is an error at its line before anything moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_files_require_signatures_per_entry() {
    let scratch = Scratch::new("referrers-sync-require");
    let ours = SigningKey::generate(scratch.path(), "ours").expect("a key");
    let second = SigningKey::generate(scratch.path(), "second").expect("a key");
    let src = open_registry().await;
    let host = src.host();
    let mut images = Vec::new();
    for (i, repo) in ["good", "second", "unsigned"].iter().enumerate() {
        let img = image(ImageSpec::small(
            &format!("sync-require-{repo}"),
            760 + i as u64,
        ))
        .await;
        crate::support::seed(&img, &host, repo, "1").await;
        let key = match *repo {
            "good" => Some(&ours),
            "second" => Some(&second),
            _ => None,
        };
        if let Some(key) = key {
            let root = root_of(&img);
            let manifest = cosign_signature(None, &[signed_by(key, &root)]);
            push_at(&host, repo, &manifest, &sig_tag(&root)).await;
        }
        images.push((*repo, img));
    }
    let dst = open_registry().await;
    let file = scratch.path().join("mirror.yaml");
    std::fs::write(
        &file,
        format!(
            "defaults:\n  target: {dst}\n  require-signature: cosign:ours.pub\nimages:\n  - from: {host}/good:1\n  - from: {host}/second:1\n    require-signature: [cosign:second.pub]\n  - from: {host}/unsigned:1\n",
            dst = dst.host()
        ),
    )
    .expect("the sync file");
    let file_arg = file.display().to_string();
    let out = Mirror::new(["sync", &file_arg])
        .args([
            "--insecure-registry",
            &host,
            "--insecure-registry",
            &dst.host(),
        ])
        .run()
        .await;
    out.expect_code(1);
    assert_landed(&dst.host(), "good", "1", &images[0].1, &ANON).await;
    assert_landed(&dst.host(), "second", "1", &images[1].1, &ANON).await;
    assert_no_manifest(&dst.host(), "unsigned", "1", &ANON).await;
    assert!(
        out.stderr.contains("no cosign signature found"),
        "{}",
        out.describe()
    );

    std::fs::write(
        &file,
        format!("images:\n  - from: {host}/good:1\n    require-signature: cosign:missing.pub\n"),
    )
    .expect("the sync file");
    let out = Mirror::new(["sync", &file_arg]).run().await;
    out.expect_code(2);
    assert!(
        out.stderr.contains("mirror.yaml:3:24") && out.stderr.contains("missing.pub"),
        "{}",
        out.describe()
    );
}
