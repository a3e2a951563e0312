//! The headline command against the stand-ins: moto for the AWS control plane,
//! a distribution registry behind a gate with ECR's manners, and a Docker Hub
//! stand-in (bearer tokens, rate-limit headers, blobs redirected to a "CDN").
//! `mirror` reaches them only through `--registry-endpoint` and the AWS
//! endpoint variables: the same code path as real ECR and Docker Hub.

use mirror_testkit::{
    DockerHubStandIn, EcrOptions, EcrStandIn, GeneratedImage, ImageSpec, Moto, PushAuth,
    RequestRecord,
};
use serde_json::Value;

use crate::support::{Mirror, Scratch, assert_landed, fetch, image, num, small_image, text};

pub(crate) struct Aws {
    pub(crate) moto: Moto,
    pub(crate) ecr: EcrStandIn,
    pub(crate) hub: DockerHubStandIn,
}

pub(crate) async fn aws(options: EcrOptions) -> Aws {
    let moto = Moto::start()
        .await
        .expect("moto starts (./scripts/test.sh installs it)");
    let ecr = EcrStandIn::start(&moto, options)
        .await
        .expect("ECR stand-in starts");
    let hub = DockerHubStandIn::start()
        .await
        .expect("Docker Hub stand-in starts");
    Aws { moto, ecr, hub }
}

/// The stand-ins with a small image as Docker Hub's `alpine:3.20`.
async fn aws_with_alpine() -> (Aws, GeneratedImage) {
    let aws = aws(EcrOptions::default()).await;
    let small = small_image().await;
    aws.hub
        .seed(&small, "library/alpine", "3.20")
        .await
        .expect("seed");
    (aws, small)
}

impl Aws {
    /// `mirror ARGS...` with only the AWS variables (commands without registries).
    pub(crate) fn aws_only<I, S>(&self, args: I) -> Mirror
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        with_env(Mirror::new(args), self.moto.env())
    }

    /// `mirror ARGS...` with only endpoint mappings and AWS variables set.
    pub(crate) fn mirror<I, S>(&self, args: I) -> Mirror
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        with_env(self.with_endpoints(args), self.moto.env())
    }

    /// [`Aws::mirror`] with the ECR API reached through the stand-in's gate,
    /// which answers GetAccountSetting (BLOB_MOUNTING) as its options say.
    pub(crate) fn mirror_through_gate<I, S>(&self, args: I) -> Mirror
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        with_env(self.with_endpoints(args), self.ecr.aws_env(&self.moto))
    }

    /// `mirror ARGS...` with the stand-ins' endpoint mappings.
    fn with_endpoints<I, S>(&self, args: I) -> Mirror
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Mirror::new(args).args([
            "--registry-endpoint".to_owned(),
            self.ecr.endpoint_arg(),
            "--registry-endpoint".to_owned(),
            self.hub.endpoint_arg(),
        ])
    }

    /// The repository as moto has it, `None` when it does not exist.
    pub(crate) async fn repository(&self, name: &str) -> Option<Value> {
        self.moto
            .describe_repository(name)
            .await
            .expect("moto answers")
    }

    /// [`assert_landed`] at the ECR stand-in.
    pub(crate) async fn assert_landed(&self, repo: &str, tag: &str, image: &GeneratedImage) {
        assert_landed(&self.ecr.host(), repo, tag, image, &self.ecr_auth()).await;
    }

    pub(crate) fn ecr_auth(&self) -> PushAuth {
        self.ecr.auth()
    }

    pub(crate) fn ecr_writes(&self) -> Vec<RequestRecord> {
        self.ecr
            .requests()
            .into_iter()
            .filter(|r| matches!(r.method.as_str(), "PUT" | "POST" | "PATCH" | "DELETE"))
            .collect()
    }
}

/// `run` with these environment variables.
fn with_env(mut run: Mirror, env: Vec<(String, String)>) -> Mirror {
    for (key, value) in env {
        run = run.env(&key, value);
    }
    run
}

pub(crate) fn mutability(repository: &Value) -> String {
    repository["imageTagMutability"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// `mirror python:3.10-slim-buster --to cruddur-python`: the repository is
/// created with the asked mutability, every platform lands with identical
/// digests, the pull limit is read, and a re-run writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headline_command_creates_the_repository_and_lands_every_platform() {
    let aws = aws(EcrOptions::default()).await;
    let python = aws.hub.seed_python().await.expect("seed python");

    let out = aws
        .mirror([
            "python:3.10-slim-buster",
            "--to",
            "cruddur-python",
            "--tag-mutability",
            "MUTABLE",
            "--json",
        ])
        .run()
        .await;
    out.expect_success();
    let report = out.json();
    assert_eq!(report["kind"], "index");
    assert_eq!(report["platforms"].as_array().map(Vec::len), Some(7));
    assert_eq!(report["repository"]["created"], true, "{report}");
    // One token for the whole run, sent as Basic from the first request on.
    assert_eq!(aws.moto.count_calls("GetAuthorizationToken"), 1);
    assert!(
        aws.ecr.requests().iter().all(|r| r.status != 401),
        "a request to ECR went without the token"
    );
    assert!(
        report["rate_limit"]["limit"].as_u64().is_some(),
        "Docker Hub's pull limit is read: {report}"
    );

    let repo = aws
        .repository("cruddur-python")
        .await
        .expect("the repository exists in moto");
    assert_eq!(mutability(&repo), "MUTABLE");
    aws.assert_landed("cruddur-python", "3.10-slim-buster", &python)
        .await;

    // Blobs came through the CDN redirect, never with Docker Hub's credentials.
    assert!(
        aws.hub
            .cdn_requests()
            .iter()
            .all(|r| r.authorization.is_none()),
        "Authorization was forwarded to the CDN host"
    );

    // A warm re-run: one HEAD per side, nothing written.
    aws.ecr.clear_requests();
    aws.hub.clear_requests();
    let again = aws
        .mirror([
            "python:3.10-slim-buster",
            "--to",
            "cruddur-python",
            "--json",
        ])
        .run()
        .await;
    again.expect_success();
    assert_eq!(again.json()["up_to_date"], true);
    assert!(
        again.json()["platforms"].is_null(),
        "a warm run never read the index, so its platforms are unknown: {}",
        again.json()
    );
    assert!(aws.ecr_writes().is_empty(), "a warm re-run wrote to ECR");
    let manifest_heads = |requests: Vec<RequestRecord>| {
        requests
            .iter()
            // A 401 is the auth handshake ("plus auth"), not a second look.
            .filter(|r| r.method == "HEAD" && r.path.contains("/manifests/") && r.status != 401)
            .count()
    };
    assert_eq!(manifest_heads(aws.ecr.requests()), 1);
    assert_eq!(manifest_heads(aws.hub.requests()), 1);
    assert!(
        aws.hub
            .requests()
            .iter()
            .all(|r| r.method != "GET" || !r.path.contains("/manifests/")),
        "a warm re-run spent a Docker Hub pull"
    );

    // verify agrees, and DescribeImages shows the pushed image.
    let verify = aws
        .mirror([
            "verify",
            "python:3.10-slim-buster",
            "--to",
            "cruddur-python",
            "--json",
        ])
        .run()
        .await;
    verify.expect_success();
    assert_eq!(verify.json()["match"], true);
}

/// Without --to the repository is the image's path without `library/`, with
/// the asked settings; --no-create refuses a missing repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_name_settings_and_no_create() {
    let (aws, small) = aws_with_alpine().await;

    let refused = aws
        .mirror(["alpine:3.20", "--prefix", "base/", "--no-create"])
        .run()
        .await;
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("base/alpine"),
        "{}",
        refused.describe()
    );
    assert!(aws.ecr_writes().is_empty(), "--no-create still wrote");

    let out = aws
        .mirror([
            "alpine:3.20",
            "--prefix",
            "base/",
            "--tag-mutability",
            "IMMUTABLE",
            "--scan-on-push",
            "--repo-tag",
            "team=platform",
        ])
        .run()
        .await;
    out.expect_success();
    let repo = aws.repository("base/alpine").await.expect("created");
    assert_eq!(mutability(&repo), "IMMUTABLE");
    assert_eq!(
        repo["imageScanningConfiguration"]["scanOnPush"], true,
        "{repo}"
    );
    aws.assert_landed("base/alpine", "3.20", &small).await;

    // Asking for other settings later is reported, not applied.
    let drift = aws
        .mirror([
            "alpine:3.20",
            "--prefix",
            "base/",
            "--tag-mutability",
            "MUTABLE",
        ])
        .run()
        .await;
    drift.expect_success();
    assert!(drift.stderr.contains("IMMUTABLE"), "{}", drift.describe());
    let repo = aws.repository("base/alpine").await.expect("still there");
    assert_eq!(mutability(&repo), "IMMUTABLE");
}

/// An immutable tag holding the same digest is a skip with no PUT; holding
/// another digest is a conflict naming both, and other images carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_tags_skip_or_conflict() {
    let aws = aws(EcrOptions::default()).await;
    let first = image(ImageSpec::small("immutable-a", 11)).await;
    let second = image(ImageSpec::small("immutable-b", 12)).await;
    let other = image(ImageSpec::small("immutable-c", 13)).await;
    aws.hub
        .seed(&first, "library/app", "1")
        .await
        .expect("seed");
    aws.hub
        .seed(&second, "library/app", "2")
        .await
        .expect("seed");
    aws.hub
        .seed(&other, "library/tool", "1")
        .await
        .expect("seed");

    aws.mirror([
        "app:1",
        "--to",
        "app:stable",
        "--tag-mutability",
        "IMMUTABLE",
    ])
    .run()
    .await
    .expect_success();
    let landed = fetch(&aws.ecr.host(), "app", "stable", &aws.ecr_auth()).await;

    aws.ecr.clear_requests();
    let same = aws
        .mirror(["app:1", "--to", "app:stable", "--json"])
        .run()
        .await;
    same.expect_success();
    assert_eq!(same.json()["up_to_date"], true);
    assert!(
        aws.ecr_writes()
            .iter()
            .all(|r| !r.path.contains("/manifests/")),
        "an identical immutable tag was PUT again"
    );

    let conflict = aws.mirror(["app:2", "--to", "app:stable"]).run().await;
    conflict.expect_code(1);
    assert!(
        conflict.stderr.contains(&landed.digest),
        "the conflict names the digest the tag holds: {}",
        conflict.describe()
    );
    let still = fetch(&aws.ecr.host(), "app", "stable", &aws.ecr_auth()).await;
    assert_eq!(
        still.digest, landed.digest,
        "the immutable tag was overwritten"
    );

    // Several images in one run: app:1 moves upstream and conflicts with the
    // immutable tag it landed under; tool:1 still lands.
    aws.mirror(["app:1"]).run().await.expect_success(); // repo `app`, tag 1, immutable
    aws.hub
        .seed(&second, "library/app", "1")
        .await
        .expect("re-seed");
    let mixed = aws.mirror(["app:1", "tool:1"]).run().await;
    mixed.expect_code(1);
    assert!(mixed.stderr.contains("app"), "{}", mixed.describe());
    aws.assert_landed("tool", "1", &other).await;
    let kept = fetch(&aws.ecr.host(), "app", "1", &aws.ecr_auth()).await;
    assert_eq!(
        kept.digest, landed.digest,
        "the immutable tag was overwritten"
    );
}

/// Stand-ins whose gate answers 429 above `limit` manifest PUTs a second,
/// with a python-like image (seed `seed`) on the hub as `python:TAG`.
async fn throttled_python(limit: u32, seed: u64, tag: &str) -> (Aws, GeneratedImage) {
    let aws = aws(EcrOptions {
        manifest_puts_per_second: Some(limit),
        ..EcrOptions::default()
    })
    .await;
    let img = image(ImageSpec::python_like_variant(seed)).await;
    aws.hub
        .seed(&img, "library/python", tag)
        .await
        .expect("seed");
    (aws, img)
}

/// A short token lifetime makes mirror fetch new ECR credentials mid-run;
/// throttled manifest PUTs (429) are backed off and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refresh_and_manifest_throttling() {
    let (aws, img) = throttled_python(2, 21, "3.11").await;

    let out = aws
        .mirror([
            "python:3.11",
            "--manifest-puts-per-second",
            "100",
            "--max-concurrent-blobs",
            "2",
            "--json",
        ])
        .env("MIRROR_ECR_TOKEN_LIFETIME_SECS", "1")
        .run()
        .await;
    out.expect_success();
    aws.assert_landed("python", "3.11", &img).await;
    let throttled = aws
        .ecr
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/") && r.status == 429)
        .count();
    assert!(
        throttled > 0,
        "the stand-in never throttled: the test proves nothing"
    );
    assert!(num(&out.json(), "/retries") >= 1);
    assert!(
        aws.moto.count_calls("GetAuthorizationToken") >= 2,
        "the token was not refreshed: {} calls",
        aws.moto.count_calls("GetAuthorizationToken")
    );
}

/// Paced at the stand-in's own limit, an index's manifest PUTs (8 of them,
/// more than a second's worth) are never throttled. (How the pacer bursts is
/// unit-tested in mirror-ecr.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_puts_paced_to_the_quota_are_never_throttled() {
    let (aws, img) = throttled_python(3, 22, "3.12").await;

    let out = aws
        .mirror(["python:3.12", "--manifest-puts-per-second", "3", "--json"])
        .run()
        .await;
    out.expect_success();
    aws.assert_landed("python", "3.12", &img).await;
    let puts: Vec<_> = aws
        .ecr
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/"))
        .collect();
    assert_eq!(
        puts.iter().filter(|r| r.status == 429).count(),
        0,
        "mirror outran the quota it was given"
    );
    assert_eq!(puts.len(), img.manifests.len() + 1, "one PUT per manifest");
    assert_eq!(num(&out.json(), "/retries"), 0);
}

/// The rest of the walkthrough: log group with retention, FROM rewriting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_group_and_rewrite_from() {
    let aws = aws(EcrOptions::default()).await;
    let out = aws
        .aws_only([
            "log-group",
            "/cruddur/fargate-cluster",
            "--retention-days",
            "1",
        ])
        .run()
        .await;
    out.expect_success();
    let groups = aws
        .moto
        .describe_log_groups("/cruddur/fargate-cluster")
        .await
        .expect("moto answers");
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["retentionInDays"], 1);
    aws.aws_only([
        "log-group",
        "/cruddur/fargate-cluster",
        "--retention-days",
        "1",
    ])
    .run()
    .await
    .expect_success();
    aws.aws_only(["log-group", "/cruddur/x", "--retention-days", "10"])
        .run()
        .await
        .expect_code(2);

    let small = small_image().await;
    aws.hub
        .seed(&small, "library/python", "3.10-slim-buster")
        .await
        .expect("seed");
    aws.mirror(["python:3.10-slim-buster"])
        .run()
        .await
        .expect_success();
    let landed = fetch(
        &aws.ecr.host(),
        "python",
        "3.10-slim-buster",
        &aws.ecr_auth(),
    )
    .await;

    let dir = Scratch::new("rewrite");
    let dockerfile = dir.path().join("Dockerfile.prod");
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/dockerfiles/backend-flask.Dockerfile.prod"
    ))
    .expect("fixture");
    std::fs::write(&dockerfile, &fixture).expect("write");
    let path = dockerfile.display().to_string();

    let diff = aws.mirror(["rewrite-from", &path, "--pin"]).run().await;
    diff.expect_success();
    let ecr_ref = format!(
        "{}/python:3.10-slim-buster@{}",
        aws.ecr.registry_host(),
        landed.digest
    );
    assert!(
        diff.stdout.contains(&format!("+FROM {ecr_ref}")),
        "{}",
        diff.describe()
    );
    assert_eq!(
        std::fs::read_to_string(&dockerfile).expect("read"),
        fixture,
        "a diff wrote the file"
    );

    aws.mirror(["rewrite-from", &path, "--pin", "--write"])
        .run()
        .await
        .expect_success();
    let written = std::fs::read_to_string(&dockerfile).expect("read");
    assert!(written.contains(&format!("FROM {ecr_ref}")), "{written}");
    assert!(!written.contains("FROM python:3.10-slim-buster"));
}

/// Inside one ECR registry blobs are mounted from the repository that holds
/// them when BLOB_MOUNTING is on; when it is off, the 202 answer's upload
/// session is used for the upload (no second POST).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_repository_mounts_on_and_off() {
    for mounting in [true, false] {
        let aws = aws(EcrOptions {
            blob_mounting: mounting,
            ..EcrOptions::default()
        })
        .await;
        let img = image(ImageSpec::small("mount", 31)).await;
        aws.hub.seed(&img, "library/app", "1").await.expect("seed");
        aws.mirror(["app:1", "--to", "team-a/app:1"])
            .run()
            .await
            .expect_success();
        aws.ecr.clear_requests();
        let host = aws.ecr.registry_host();
        let out = aws
            .mirror([
                "copy".to_owned(),
                format!("{host}/team-a/app:1"),
                format!("{host}/team-b/app:1"),
                "--json".to_owned(),
            ])
            .run()
            .await;
        out.expect_success();
        let report = out.json();
        let blobs = img.blobs.len() as u64;
        aws.assert_landed("team-b/app", "1", &img).await;
        let requests = aws.ecr.requests();
        let blob_gets = requests
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/blobs/"))
            .count();
        let posts = requests.iter().filter(|r| r.method == "POST").count() as u64;
        if mounting {
            assert_eq!(num(&report, "/blobs/mounted"), blobs, "{report}");
            assert_eq!(blob_gets, 0, "mounted blobs were downloaded");
        } else {
            assert_eq!(num(&report, "/blobs/mounted"), 0, "{report}");
            assert_eq!(num(&report, "/blobs/copied"), blobs, "{report}");
            assert_eq!(
                posts, blobs,
                "the 202 session was not reused: {posts} POSTs"
            );
        }
    }
}

/// ECR refusing the credentials mid-run (401) makes mirror fetch a new token
/// once and carry on: on a manifest HEAD and on a streaming blob upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_mid_run_refreshes_the_token() {
    let aws = aws(EcrOptions::default()).await;
    let img = image(ImageSpec::small("refresh", 41)).await;
    aws.hub.seed(&img, "library/app", "1").await.expect("seed");
    let expired = || {
        mirror_testkit::Fault::ReplaceResponse {
        status: 401,
        content_type: "application/json".to_owned(),
        body: br#"{"errors":[{"code":"DENIED","message":"Your authorization token has expired. Reauthenticate and try again."}]}"#.to_vec(),
        headers: vec![(
            "WWW-Authenticate".to_owned(),
            format!(r#"Basic realm="https://{}/",service="ecr.amazonaws.com""#, aws.ecr.registry_host()),
        )],
    }
    };
    let faults = aws.ecr.faults();
    faults.add_rule(
        mirror_testkit::Rule::new(expired())
            .method("PUT")
            .path_contains("/blobs/uploads/")
            .times(1),
    );
    faults.add_rule(
        mirror_testkit::Rule::new(expired())
            .method("HEAD")
            .path_contains("/blobs/")
            .times(1),
    );
    aws.mirror(["app:1", "--to", "app:1"])
        .run()
        .await
        .expect_success();
    aws.assert_landed("app", "1", &img).await;
    let unauthorized = aws
        .ecr
        .requests()
        .iter()
        .filter(|r| r.status == 401)
        .count();
    assert!(
        unauthorized >= 2,
        "the faults never fired: the test proves nothing"
    );
    assert!(
        aws.moto.count_calls("GetAuthorizationToken") >= 2,
        "no new token after a 401"
    );
}

/// The endpoint mapping from the config file alone: `$XDG_CONFIG_HOME/mirror/
/// config.toml` maps both registry hosts, no flag or MIRROR_* variable is
/// set, and the image lands. Then a file (`--config`) that maps the ECR host
/// to a closed port, overridden by `--registry-endpoint`: the flag wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_mapping_from_the_config_file() {
    let (aws, small) = aws_with_alpine().await;
    let toml_entry = |arg: String| {
        let (host, url) = arg.split_once('=').expect("HOST=URL");
        format!("\"{host}\" = \"{url}\"\n")
    };
    let scratch = Scratch::new("config-file");
    let xdg = scratch.path().join("xdg");
    std::fs::create_dir_all(xdg.join("mirror")).expect("config dir");
    std::fs::write(
        xdg.join("mirror/config.toml"),
        format!(
            "[registry-endpoints]\n{}{}",
            toml_entry(aws.ecr.endpoint_arg()),
            toml_entry(aws.hub.endpoint_arg())
        ),
    )
    .expect("write config.toml");

    let out = aws
        .aws_only(["alpine:3.20", "--json"])
        .env("XDG_CONFIG_HOME", xdg.to_string_lossy())
        .run()
        .await;
    out.expect_success();
    aws.assert_landed("alpine", "3.20", &small).await;

    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind a port");
    let closed = listener.local_addr().expect("local addr");
    drop(listener);
    let stale = scratch.path().join("stale.toml");
    let ecr_arg = aws.ecr.endpoint_arg();
    let (ecr_host, _) = ecr_arg.split_once('=').expect("HOST=URL");
    std::fs::write(
        &stale,
        format!(
            "[registry-endpoints]\n\"{}\" = \"http://{closed}\"\n{}",
            ecr_host,
            toml_entry(aws.hub.endpoint_arg())
        ),
    )
    .expect("write stale.toml");
    let config = stale.to_string_lossy().into_owned();
    let refused = aws
        .aws_only(["alpine:3.20", "--config", config.as_str(), "--retries", "1"])
        .run()
        .await;
    refused.expect_code(1);
    assert!(
        refused.stderr.contains(&closed.to_string()),
        "the file's endpoint was used: {}",
        refused.describe()
    );
    let overridden = aws
        .aws_only([
            "alpine:3.20",
            "--config",
            config.as_str(),
            "--registry-endpoint",
            aws.ecr.endpoint_arg().as_str(),
            "--json",
        ])
        .run()
        .await;
    overridden.expect_success();
    assert_eq!(
        overridden.json()["up_to_date"],
        true,
        "{}",
        overridden.describe()
    );
}

/// A caller whose IAM policy lacks an action (moto enforcing IAM for real:
/// signatures and policies) gets an error naming the action to grant, and
/// nothing is created or pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_iam_permission_names_the_action() {
    let (aws, _) = aws_with_alpine().await;
    let (key, secret) = aws
        .moto
        .iam_user(
            "ci",
            &["ecr:GetAuthorizationToken", "ecr:DescribeRepositories"],
        )
        .await
        .expect("IAM user in moto");
    aws.moto.enforce_iam(true).await.expect("enforce IAM");

    let denied = aws
        .mirror(["alpine:3.20"])
        .env("AWS_ACCESS_KEY_ID", key.as_str())
        .env("AWS_SECRET_ACCESS_KEY", secret.as_str())
        .run()
        .await;
    let logs = aws
        .aws_only(["log-group", "/cruddur/app", "--retention-days", "1"])
        .env("AWS_ACCESS_KEY_ID", key.as_str())
        .env("AWS_SECRET_ACCESS_KEY", secret.as_str())
        .run()
        .await;
    aws.moto
        .enforce_iam(false)
        .await
        .expect("stop enforcing IAM");

    denied.expect_code(1);
    assert!(
        denied.stderr.contains("ecr:CreateRepository")
            && denied.stderr.contains("mirror iam-policy"),
        "{}",
        denied.describe()
    );
    assert!(
        !denied.stderr.contains(&secret),
        "the secret key leaked: {}",
        denied.describe()
    );
    assert!(
        aws.repository("alpine").await.is_none(),
        "a repository was created without the permission"
    );
    assert!(aws.ecr_writes().is_empty(), "blobs went to ECR anyway");

    logs.expect_code(1);
    assert!(
        logs.stderr.contains("logs:CreateLogGroup"),
        "{}",
        logs.describe()
    );
    assert!(
        aws.moto
            .describe_log_groups("/cruddur/app")
            .await
            .expect("moto answers")
            .is_empty(),
        "a log group was created without the permission"
    );
}

/// `mirror app --all-tags`: every tag of Docker Hub's repository lands in
/// one ECR repository; then ECR as the source (`mirror copy --all-tags`,
/// the gate refusing tag-list pages above 1000 as ECR does) into a layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_tags_into_ecr_and_back_out() {
    let aws = aws(EcrOptions::default()).await;
    let images = [
        ("1.0", image(ImageSpec::small("ecr-all-tags-a", 21)).await),
        ("1.1", image(ImageSpec::small("ecr-all-tags-b", 22)).await),
    ];
    for (tag, img) in &images {
        aws.hub.seed(img, "library/app", tag).await.expect("seed");
    }

    let out = aws.mirror(["app", "--all-tags", "--json"]).run().await;
    out.expect_success();
    for (tag, img) in &images {
        aws.assert_landed("app", tag, img).await;
    }
    assert!(
        aws.repository("app").await.is_some(),
        "the repository was created once for every tag"
    );

    aws.ecr.clear_requests();
    let scratch = Scratch::new("ecr-all-tags");
    let layout = format!("oci:{}", scratch.path().join("out").display());
    let ecr_arg = aws.ecr.endpoint_arg();
    let (ecr_host, _) = ecr_arg.split_once('=').expect("HOST=URL");
    let out = aws
        .mirror(["copy", &format!("{ecr_host}/app"), &layout, "--all-tags"])
        .run()
        .await;
    out.expect_success();
    let listed = aws
        .ecr
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/tags/list") && r.status == 200)
        .collect::<Vec<_>>();
    assert_eq!(listed.len(), 1, "one page of tags: {listed:?}");
    assert_eq!(listed[0].query.as_deref(), Some("n=1000"));
    let inspect = Mirror::inspect(&layout).arg("--json").run().await;
    inspect.expect_success();
    let mut listed: Vec<(String, String)> = inspect.json()["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| (text(i, "/name").to_owned(), text(i, "/digest").to_owned()))
        .collect();
    listed.sort();
    let expected: Vec<(String, String)> = images
        .iter()
        .map(|(tag, img)| (tag.to_string(), img.root_digest().to_string()))
        .collect();
    assert_eq!(listed, expected, "{}", inspect.describe());
}

/// `mirror iam-policy` against moto enforcing IAM: the `--push` policy is
/// enough for the walkthrough (the headline command and the log group succeed
/// with nothing else granted), the `--pull` policy cannot create or push.
/// moto evaluates ECR and Logs calls against resource `*` (it has no
/// per-repository resources), so the statements' resources are widened here:
/// this checks the action sets; the resource ARNs are unit-tested in
/// mirror-ecr's iam.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_policies_grant_what_the_walkthrough_needs() {
    let (aws, small) = aws_with_alpine().await;
    let user = |access: &'static str, name: &'static str| {
        let aws = &aws;
        async move {
            let printed = Mirror::new([
                "iam-policy",
                access,
                "alpine",
                "--log-group",
                "/cruddur/app",
            ])
            .run()
            .await;
            printed.expect_success();
            let mut policy: Value =
                serde_json::from_str(&printed.stdout).expect("the policy is JSON");
            assert_eq!(policy["Version"], "2012-10-17");
            for statement in policy["Statement"].as_array_mut().expect("statements") {
                statement["Resource"] = Value::from("*");
            }
            aws.moto
                .iam_user_with_policy(name, &policy.to_string())
                .await
                .expect("IAM user with the printed policy")
        }
    };
    let push = user("--push", "mirror-role").await;
    let pull = user("--pull", "task-execution-role").await;
    aws.moto.enforce_iam(true).await.expect("enforce IAM");
    let as_user = |run: Mirror, (key, secret): &(String, String)| {
        run.env("AWS_ACCESS_KEY_ID", key.as_str())
            .env("AWS_SECRET_ACCESS_KEY", secret.as_str())
            .run()
    };
    let refused = as_user(aws.mirror(["alpine:3.20", "--to", "pulled"]), &pull).await;
    let pushed = as_user(
        aws.mirror(["alpine:3.20", "--tag-mutability", "IMMUTABLE"]),
        &push,
    )
    .await;
    let logs = as_user(
        aws.aws_only(["log-group", "/cruddur/app", "--retention-days", "7"]),
        &push,
    )
    .await;
    aws.moto
        .enforce_iam(false)
        .await
        .expect("stop enforcing IAM");

    pushed.expect_success();
    aws.assert_landed("alpine", "3.20", &small).await;
    logs.expect_success();
    let groups = aws
        .moto
        .describe_log_groups("/cruddur/app")
        .await
        .expect("moto answers");
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["retentionInDays"], 7);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("AWS denied ecr:"),
        "the pull policy may not create or push: {}",
        refused.describe()
    );
    assert!(aws.repository("pulled").await.is_none());
}

/// The walkthrough's own builds: a daemonless build's OCI layout lands in
/// ECR with `mirror oci:DIR:latest --to backend-flask:latest`, repository
/// created with the asked settings; without --to it is a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_builds_land_in_ecr() {
    let aws = aws(EcrOptions::default()).await;
    let backend = image(ImageSpec::small("ecr-backend-flask", 41)).await;
    let frontend = image(ImageSpec::small("ecr-frontend-react-js", 42).docker()).await;
    let layout = |img: &GeneratedImage| format!("oci:{}:latest", img.layout.display());

    let unnamed = aws.mirror([layout(&backend)]).run().await;
    unnamed.expect_code(2);
    assert!(unnamed.stderr.contains("--to"), "{}", unnamed.describe());

    for (img, name) in [
        (&backend, "backend-flask"),
        (&frontend, "frontend-react-js"),
    ] {
        let out = aws
            .mirror([
                layout(img).as_str(),
                "--to",
                &format!("{name}:latest"),
                "--tag-mutability",
                "MUTABLE",
                "--json",
            ])
            .run()
            .await;
        out.expect_success();
        assert_eq!(out.json()["digest"], img.root_digest().to_string());
        let repo = aws.repository(name).await.expect("created");
        assert_eq!(mutability(&repo), "MUTABLE");
        aws.assert_landed(name, "latest", img).await;
    }
}

/// `mirror verify` exits 1 when the destination no longer matches the
/// source (the tag moved upstream), says which, and still lists what ECR
/// holds (DescribeImages: digest, tags, pushed at, size).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_moved_tag() {
    let (aws, small) = aws_with_alpine().await;
    aws.mirror(["alpine:3.20"]).run().await.expect_success();
    let newer = image(ImageSpec::small("ecr-verify-newer", 43)).await;
    aws.hub
        .seed(&newer, "library/alpine", "3.20")
        .await
        .expect("move the tag upstream");

    let out = aws.mirror(["verify", "alpine:3.20", "--json"]).run().await;
    out.expect_code(1);
    let report = out.json();
    assert_eq!(report["match"], false, "{report:#}");
    // The index and its two images (pushed by digest), the index tagged.
    let images = report["images"].as_array().expect("DescribeImages rows");
    assert_eq!(images.len(), 3, "{report:#}");
    let tagged: Vec<&Value> = images
        .iter()
        .filter(|i| {
            i["tags"]
                .as_array()
                .is_some_and(|t| t.contains(&Value::from("3.20")))
        })
        .collect();
    assert_eq!(tagged.len(), 1, "{report:#}");
    assert_eq!(tagged[0]["digest"], small.root_digest().to_string());
    assert!(
        images.iter().all(|i| i["pushed_at"].is_string()),
        "{report:#}"
    );
    assert!(
        images
            .iter()
            .any(|i| i["size"].as_u64().is_some_and(|s| s > 0)),
        "{report:#}"
    );
    let rows = report["manifests"].as_array().expect("manifest rows");
    assert_eq!(rows[0]["what"], "tag");
    assert_eq!(rows[0]["source"], newer.root_digest().to_string());
    assert_eq!(rows[0]["destination"], small.root_digest().to_string());
}
