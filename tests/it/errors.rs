//! Failures the user must understand: usage errors (exit 2) before any
//! network traffic, registry errors (exit 1) with a readable `error:` line.

use mirror_testkit::{Fault, PushAuth, Rule};

use crate::support::{
    Mirror, assert_no_manifest, describe, is_write, open_registry, proxy_to, seeded_registry,
    small_image,
};

const ANON: PushAuth = PushAuth::Anonymous;

/// A port nothing listens on (bound, then released).
fn closed_port_host() -> String {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind a port");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    addr.to_string()
}

/// An uppercase repository is not a reference: exit 2, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_references_are_usage_errors() {
    let host = closed_port_host();
    let good = format!("{host}/python:3");
    for (src, dst, bad) in [
        (
            "127.0.0.1:5000/Python:3".to_owned(),
            good.clone(),
            "127.0.0.1:5000/Python:3".to_owned(),
        ),
        (
            good.clone(),
            format!("{host}/bad//name:1"),
            format!("{host}/bad//name:1"),
        ),
        (
            good.clone(),
            format!("{host}/app:bad tag"),
            format!("{host}/app:bad tag"),
        ),
        (
            format!("{host}/app@sha256:1234"),
            good.clone(),
            format!("{host}/app@sha256:1234"),
        ),
    ] {
        let out = Mirror::copy(&src, &dst).run().await;
        out.expect_code(2);
        out.expect_error_line();
        assert!(
            out.stderr.contains(&bad),
            "the error should name the reference {bad:?}\n{}",
            out.describe()
        );
    }
    let out = Mirror::inspect("127.0.0.1:5000/Python:3").run().await;
    out.expect_code(2);
    assert!(
        out.stderr.contains("127.0.0.1:5000/Python:3"),
        "{}",
        out.describe()
    );
}

/// Bad flag values and missing arguments are usage errors (exit 2), found
/// before anything is contacted (the registry port is closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flag_values_are_usage_errors() {
    let host = closed_port_host();
    let (src, dst) = (format!("{host}/a:1"), format!("{host}/b:1"));
    let cases: &[&[&str]] = &[
        &["--platform", "linux"],
        &["--platform", "linux/amd64/v8/extra"],
        &["--max-concurrent-blobs", "many"],
        &["--max-concurrent-blobs", "0"],
        &["--retries", "-1"],
        &["--registry-endpoint", "no-equals-sign"],
        &["--no-such-flag"],
    ];
    for args in cases {
        let out = Mirror::copy(&src, &dst)
            .args(args.iter().copied())
            .run()
            .await;
        out.expect_code(2);
        assert!(
            !out.stderr.trim().is_empty(),
            "a usage error says what is wrong\n{}",
            out.describe()
        );
    }
    let out = Mirror::new(["copy", src.as_str()]).run().await;
    out.expect_code(2);
    // A config file that is missing, or has a misspelt key, names the file.
    let scratch = crate::support::Scratch::new("bad-config");
    let missing = scratch.path().join("missing.toml");
    let misspelt = scratch.path().join("misspelt.toml");
    std::fs::write(&misspelt, "[registry-endpoint]\n\"a\" = \"http://b\"\n").expect("write");
    for (file, says) in [(&missing, "missing.toml"), (&misspelt, "registry-endpoint")] {
        let out = Mirror::copy(&src, &dst)
            .args(["--config", file.to_str().expect("utf-8 path")])
            .run()
            .await;
        out.expect_code(2);
        assert!(
            out.stderr.contains(&*file.to_string_lossy()) && out.stderr.contains(says),
            "{}",
            out.describe()
        );
    }
    let out = Mirror::new(["no-such-command"]).run().await;
    out.expect_code(2);
}

/// A schema 1 manifest is refused with an error that says so, and nothing
/// is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema1_manifest_is_refused() {
    let image = small_image().await;
    let src = seeded_registry(&image, "legacy/app", "old").await;
    let dst = open_registry().await;
    let src_proxy = proxy_to(&src).await;
    let dst_proxy = proxy_to(&dst).await;
    let schema1 = serde_json::json!({
        "schemaVersion": 1,
        "name": "legacy/app",
        "tag": "old",
        "architecture": "amd64",
        "fsLayers": [
            {"blobSum": "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}
        ],
        "history": [{"v1Compatibility": "{\"id\":\"e45a5af57b00862e5ef5782a9925979a02ba2b12dff832fd0991335f4a11e5c5\"}"}],
        "signatures": [{
            "header": {"jwk": {"crv": "P-256", "kty": "EC", "x": "x", "y": "y"}, "alg": "ES256"},
            "signature": "c2lnbmF0dXJl",
            "protected": "eyJmb3JtYXRMZW5ndGgiOjEsImZvcm1hdFRhaWwiOiJDbjAiLCJ0aW1lIjoiMjAxNy0wMS0wMVQwMDowMDowMFoifQ"
        }]
    });
    let body = serde_json::to_vec_pretty(&schema1).expect("schema1 body");
    for method in ["GET", "HEAD"] {
        src_proxy.add_rule(
            Rule::new(Fault::ReplaceResponse {
                status: 200,
                content_type: "application/vnd.docker.distribution.manifest.v1+prettyjws"
                    .to_owned(),
                body: body.clone(),
                headers: vec![],
            })
            .method(method)
            .path_contains("/manifests/old"),
        );
    }

    let out = Mirror::copy(
        &format!("{}/legacy/app:old", src_proxy.host()),
        &format!("{}/app:old", dst_proxy.host()),
    )
    .run()
    .await;
    out.expect_code(1);
    out.expect_error_line();
    assert!(
        out.stderr_lower().contains("schema 1"),
        "the error should say `schema 1`\n{}",
        out.describe()
    );
    let dst_log = dst_proxy.requests();
    assert!(
        !dst_log.iter().any(is_write),
        "nothing is written for a refused manifest\n{}",
        describe(&dst_log)
    );
    assert_no_manifest(&dst.host(), "app", "old", &ANON).await;
}

/// A tag the source does not have: exit 1, saying what was not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_source_tag_is_not_found() {
    let image = small_image().await;
    let src = seeded_registry(&image, "app", "v1").await;
    let dst = open_registry().await;

    let out = Mirror::copy(
        &format!("{}/app:does-not-exist", src.host()),
        &format!("{}/app:v1", dst.host()),
    )
    .run()
    .await;
    out.expect_code(1);
    out.expect_error_line();
    let stderr = out.stderr_lower();
    assert!(
        stderr.contains("does-not-exist") || stderr.contains("not found"),
        "the error should name the missing tag\n{}",
        out.describe()
    );
    assert_no_manifest(&dst.host(), "app", "v1", &ANON).await;

    // And a repository that does not exist at all.
    let out = Mirror::copy(
        &format!("{}/nowhere/app:v1", src.host()),
        &format!("{}/app:v1", dst.host()),
    )
    .run()
    .await;
    out.expect_code(1);
    out.expect_error_line();
}

/// Nothing listens at the source: exit 1 naming the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_registry_is_a_transfer_error() {
    let host = closed_port_host();
    let dst = open_registry().await;
    let out = Mirror::copy(&format!("{host}/app:v1"), &format!("{}/app:v1", dst.host()))
        .args(["--retries", "1"])
        .timeout(std::time::Duration::from_secs(60))
        .run()
        .await;
    out.expect_code(1);
    out.expect_error_line();
    assert!(
        out.stderr.contains(&host),
        "the error should name {host}\n{}",
        out.describe()
    );
}

/// `--platform` that the index does not have: exit 1 naming the platform,
/// nothing tagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_not_in_the_index_is_an_error() {
    let image = small_image().await;
    let src = seeded_registry(&image, "app", "v1").await;
    let dst = open_registry().await;
    let out = Mirror::copy(
        &format!("{}/app:v1", src.host()),
        &format!("{}/app:v1", dst.host()),
    )
    .args(["--platform", "linux/riscv64"])
    .run()
    .await;
    out.expect_code(1);
    out.expect_error_line();
    assert!(
        out.stderr.contains("linux/riscv64"),
        "the error should name the platform\n{}",
        out.describe()
    );
    assert_no_manifest(&dst.host(), "app", "v1", &ANON).await;
}

/// A newcomer without AWS runs the headline command: one `error:` line that
/// says what is missing and names the command that works without it (the
/// same image into a local archive), exit 2 without a region and 1 without
/// credentials; a local build gets a registry as the alternative.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_headline_command_without_aws_names_what_works_without_it() {
    let without_aws = |args: &[&str]| {
        Mirror::new(args.iter().copied())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .run()
    };
    let no_region = without_aws(&["python:3.10-slim-buster"]).await;
    let no_credentials = without_aws(&["python:3.10-slim-buster", "--region", "us-east-1"]).await;
    let local = without_aws(&["oci:./out:latest", "--to", "backend-flask"]).await;
    for (out, code, missing, instead) in [
        (
            &no_region,
            2,
            "no AWS region configured",
            "`mirror copy python:3.10-slim-buster oci-archive:python.tar`",
        ),
        (
            &no_credentials,
            1,
            "no AWS credentials found",
            "`mirror copy python:3.10-slim-buster oci-archive:python.tar`",
        ),
        (
            &local,
            2,
            "no AWS region configured",
            "`mirror copy oci:./out:latest HOST/REPO:TAG`",
        ),
    ] {
        out.expect_code(code);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line\n{}", out.describe());
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(missing),
            "{}",
            out.describe()
        );
        assert!(
            lines[0].contains(&format!("without AWS, {instead}")),
            "{}",
            out.describe()
        );
    }
}
