//! Failures the user must understand: usage errors (exit 2) before any
//! network traffic, registry errors (exit 1) with a readable `error:` line,
//! the cause of every final error on `cause:` lines (and in `--json`), and
//! `hint:` lines that name flags that exist.

use mirror_testkit::{Fault, PushAuth, Rule};

use crate::support::{
    MIRROR, Mirror, Scratch, assert_no_manifest, describe, is_write, open_registry, proxy_to,
    seeded_registry, small_app_v1, small_image,
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
    .fails()
    .await;
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
    let (_, src, dst) = small_app_v1().await;

    let out = Mirror::copy(
        &format!("{}/app:does-not-exist", src.host()),
        &format!("{}/app:v1", dst.host()),
    )
    .fails()
    .await;
    let stderr = out.stderr_lower();
    assert!(
        stderr.contains("does-not-exist") || stderr.contains("not found"),
        "the error should name the missing tag\n{}",
        out.describe()
    );
    assert_no_manifest(&dst.host(), "app", "v1", &ANON).await;

    // And a repository that does not exist at all.
    Mirror::copy(
        &format!("{}/nowhere/app:v1", src.host()),
        &format!("{}/app:v1", dst.host()),
    )
    .fails()
    .await;
}

/// Nothing listens at the source: exit 1 naming the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_registry_is_a_transfer_error() {
    let host = closed_port_host();
    let dst = open_registry().await;
    let out = Mirror::copy(&format!("{host}/app:v1"), &format!("{}/app:v1", dst.host()))
        .args(["--retries", "1"])
        .timeout(std::time::Duration::from_secs(60))
        .fails()
        .await;
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
    let (_, src, dst) = small_app_v1().await;
    let out = Mirror::copy_between(&src.host(), &dst.host(), "app:v1")
        .args(["--platform", "linux/riscv64"])
        .fails()
        .await;
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

/// The `cause:` lines of stderr, without their label.
fn causes(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("cause: "))
        .collect()
}

/// The `hint:` lines of stderr, without their label.
fn hints(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("hint: "))
        .collect()
}

/// Regression (issue 10.7): after retries stderr and `--json` said only
/// "gave up after 2 attempts"; the registry's 500 body was only in WARN lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_error_carries_the_last_failure_after_retries() {
    let (image, src, dst) = small_app_v1().await;
    let src_proxy = proxy_to(&src).await;
    let layer = image.blobs[1].digest().to_string();
    src_proxy.add_rule(
        Rule::new(Fault::Status {
            code: 500,
            retry_after: None,
            body: r#"{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}"#.to_owned(),
        })
        .method("GET")
        .path_contains(&format!("/blobs/{layer}")),
    );
    let run = |json: bool| {
        let mut run =
            Mirror::copy_between(&src_proxy.host(), &dst.host(), "app:v1").args(["--retries", "2"]);
        if json {
            run = run.arg("--json");
        }
        run.run()
    };
    let out = run(false).await;
    out.expect_code(1);
    let error_line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{}", out.describe()));
    assert!(error_line.contains(&layer[..19]), "{}", out.describe());
    let causes = causes(&out.stderr);
    assert!(
        causes
            .iter()
            .any(|c| c.contains("gave up after 2 attempts"))
            && causes
                .iter()
                .any(|c| c.contains("500") && c.contains("disk on fire")),
        "the last failure is a cause\n{}",
        out.describe()
    );

    let out = run(true).await;
    out.expect_code(1);
    let report = out.json();
    let json_causes: Vec<String> = crate::support::strings(&report, "/causes");
    assert!(
        json_causes.iter().any(|c| c.contains("disk on fire")),
        "{report:#}"
    );
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|e| e.contains(&layer[..19]))
    );
    assert_no_manifest(&dst.host(), "app", "v1", &ANON).await;
}

/// Regression (issue 10.7): HTTPS to a plain-HTTP registry said only "gave
/// up after 5 attempts"; the TLS error was in WARN lines and the fix
/// (`--insecure-registry`) nowhere. It is not retried either: it would fail
/// the same way five times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_a_plain_http_registry_says_tls_and_names_the_flag() {
    let (_, src, dst) = small_app_v1().await;
    let out = Mirror::new([
        "copy".to_owned(),
        format!("{}/app:v1", src.host()),
        format!("{}/app:v1", dst.host()),
        "--insecure-registry".to_owned(),
        dst.host(),
    ])
    .run()
    .await;
    out.expect_code(1);
    assert!(
        causes(&out.stderr)
            .iter()
            .any(|c| c.contains("TLS handshake failed")),
        "{}",
        out.describe()
    );
    let flag = format!("--insecure-registry {}", src.host());
    assert!(
        hints(&out.stderr).iter().any(|h| h.contains(&flag)),
        "a hint names {flag}\n{}",
        out.describe()
    );
    assert!(
        !out.stderr.contains("retrying") && !out.stderr.contains("gave up"),
        "a failed handshake is not retried\n{}",
        out.describe()
    );
}

/// Regression (issue 10.7): a digest mismatch read "connection failed:
/// client error (SendRequest): error from user's Body stream: ... blob
/// content does not match its digest": transport words over the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_mismatch_reads_as_one() {
    let (image, src, dst) = small_app_v1().await;
    let src_proxy = proxy_to(&src).await;
    let layer = image.blobs[1].digest().to_string();
    src_proxy.add_rule(
        Rule::new(Fault::FlipByte { offset: 100 })
            .method("GET")
            .path_contains(&format!("/blobs/{layer}")),
    );
    let out = Mirror::copy_between(&src_proxy.host(), &dst.host(), "app:v1")
        .run()
        .await;
    out.expect_code(1);
    let lower = out.stderr_lower();
    for misleading in [
        "sendrequest",
        "client error",
        "connection failed",
        "body stream",
    ] {
        assert!(
            !lower.contains(misleading),
            "{misleading}\n{}",
            out.describe()
        );
    }
    assert!(
        out.stderr.contains(&format!("blob {layer}"))
            && out.stderr.contains("failed on the source")
            && causes(&out.stderr)
                .iter()
                .any(|c| c.starts_with("blob content does not match its digest")),
        "{}",
        out.describe()
    );
    assert!(
        hints(&out.stderr)
            .iter()
            .any(|h| h.contains("does not match its digest; nothing referencing it was pushed")),
        "{}",
        out.describe()
    );
}

/// Regression (issue 10.10): `--insecure-registry http://host:5000` or
/// `host:5000/` was accepted and never matched any reference. From a flag,
/// the environment or the config file: exit 2 with the form that works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insecure_registry_with_a_scheme_or_path_is_a_usage_error() {
    let host = closed_port_host();
    let (src, dst) = (format!("{host}/a:1"), format!("{host}/b:1"));
    for given in [
        format!("http://{host}"),
        format!("{host}/"),
        format!("https://{host}/v2/"),
    ] {
        let out = Mirror::new([
            "copy",
            src.as_str(),
            dst.as_str(),
            "--insecure-registry",
            &given,
        ])
        .run()
        .await;
        out.expect_code(2);
        assert!(
            out.stderr
                .contains(&format!("without a scheme or a path: {host}")),
            "{}",
            out.describe()
        );
        let out = Mirror::new(["copy", src.as_str(), dst.as_str()])
            .env("MIRROR_INSECURE_REGISTRY", given.clone())
            .run()
            .await;
        out.expect_code(2);
    }
    let scratch = Scratch::new("insecure-config");
    let config = scratch.path().join("config.toml");
    std::fs::write(
        &config,
        format!("insecure-registries = [\"http://{host}\"]\n"),
    )
    .expect("write config");
    let out = Mirror::new(["copy", src.as_str(), dst.as_str()])
        .args(["--config", config.to_str().expect("utf-8 path")])
        .run()
        .await;
    out.expect_code(2);
    assert!(
        out.stderr.contains("config.toml") && out.stderr.contains(&host),
        "{}",
        out.describe()
    );
}

/// Regression (issue 10.10): with MIRROR_DEST_CREDS set, clap's usage line
/// read `mirror copy --dest-creds <USER:PASS> <SOURCE> <DESTINATION>`, as if
/// the flag were required.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_from_the_environment_is_not_shown_as_required() {
    let out = Mirror::new(["copy"])
        .env("MIRROR_DEST_CREDS", "user:secret-pw")
        .env("MIRROR_INSECURE_REGISTRY", "localhost:5000")
        .run()
        .await;
    out.expect_code(2);
    let usage = out
        .stderr
        .lines()
        .find(|l| l.starts_with("Usage:"))
        .unwrap_or_else(|| panic!("{}", out.describe()));
    assert!(
        !usage.contains("--dest-creds") && !usage.contains("--insecure-registry"),
        "{}",
        out.describe()
    );
    out.expect_not_leaked("secret-pw");
}

/// Runs mirror under a terminal (`script` gives it a pty); what the
/// terminal showed.
async fn in_terminal(args: &[String], env: &[(&str, &str)]) -> String {
    let line = std::iter::once(MIRROR.to_owned())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut command = tokio::process::Command::new("script");
    command
        .args(["-qec", &line, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("TERM", "xterm");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), command.output())
        .await
        .expect("mirror under script finished")
        .expect("run script (util-linux)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Regression (issue 10.10): log lines carried ANSI colours into pipes and
/// CI logs. Colours only on a terminal without `CI` or `NO_COLOR`. Each run
/// logs a WARN line: one 500 on a blob GET, retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_are_plain_in_a_pipe_under_ci_and_with_no_color() {
    /// How a coloured level ends: the reset right after it.
    const COLOURED_WARN: &str = "WARN\u{1b}[0m";
    let (image, src, dst) = small_app_v1().await;
    let src_proxy = proxy_to(&src).await;
    let fault = Rule::new(Fault::status(500))
        .method("GET")
        .path_contains(&format!("/blobs/{}", image.blobs[1].digest()))
        .times(1);
    // A new destination repository each run, so the blob is fetched again.
    let args = |run: &str| -> Vec<String> {
        vec![
            "copy".to_owned(),
            format!("{}/app:v1", src_proxy.host()),
            format!("{}/{run}:v1", dst.host()),
            "--insecure-registry".to_owned(),
            src_proxy.host(),
            "--insecure-registry".to_owned(),
            dst.host(),
        ]
    };

    src_proxy.add_rule(fault.clone());
    let piped = Mirror::new(args("piped"))
        .without_env("NO_COLOR")
        .run()
        .await;
    piped.expect_success();
    assert!(piped.stderr.contains("WARN"), "{}", piped.describe());
    assert!(
        !piped.stderr.contains('\u{1b}'),
        "colours in a pipe\n{}",
        piped.describe()
    );

    src_proxy.add_rule(fault.clone());
    let coloured = in_terminal(&args("terminal"), &[]).await;
    assert!(
        coloured.contains(COLOURED_WARN),
        "a terminal gets colours (else this test could not tell)\n{coloured:?}"
    );
    for (run, env) in [("ci", ("CI", "true")), ("no-color", ("NO_COLOR", "1"))] {
        src_proxy.add_rule(fault.clone());
        let plain = in_terminal(&args(run), &[env]).await;
        assert!(plain.contains("WARN"), "{plain}");
        assert!(
            !plain.contains(COLOURED_WARN),
            "{env:?}: colours in {plain:?}"
        );
    }
}
