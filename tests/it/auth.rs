//! Credentials: Basic (htpasswd, like ECR) from flags, the environment, a
//! Docker config file and credential helpers in Docker's order; bearer tokens (like Docker Hub) with one token request
//! per repository, not per blob; secrets never printed.

use base64::Engine as _;
use mirror_testkit::{
    PushAuth, PushTarget, Registry, TokenOptions, TokenServer, push_layout, skopeo_digest,
};

use crate::support::{
    Mirror, Scratch, assert_landed, assert_no_manifest, open_registry, seeded_registry, small_image,
};

const USER: &str = "mirror-bot";
const PASSWORD: &str = "pw-Sup3r-s3cret-9f1c";

/// Standard base64 (with padding), for Docker's `auths.*.auth`.
fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn htpasswd_registry() -> Registry {
    Registry::htpasswd(USER, PASSWORD)
        .await
        .expect("start an htpasswd docker-registry")
}

fn basic() -> PushAuth {
    PushAuth::basic(USER, PASSWORD)
}

/// `--dest-creds` and `MIRROR_DEST_CREDS` against a Basic-auth destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_destination_with_flag_and_environment() {
    let image = small_image().await;
    let src = seeded_registry(&image, "app", "v1").await;
    let dst = htpasswd_registry().await;
    let source = format!("{}/app:v1", src.host());
    let creds = format!("{USER}:{PASSWORD}");

    let out = Mirror::copy(&source, &format!("{}/app:flag", dst.host()))
        .args(["--dest-creds", &creds, "-v"])
        .run()
        .await;
    out.expect_success();
    out.expect_not_leaked(PASSWORD);
    assert_landed(&dst.host(), "app", "flag", &image, &basic()).await;

    let out = Mirror::copy(&source, &format!("{}/app:env", dst.host()))
        .env("MIRROR_DEST_CREDS", &creds)
        .run()
        .await;
    out.expect_success();
    out.expect_not_leaked(PASSWORD);
    assert_landed(&dst.host(), "app", "env", &image, &basic()).await;
}

/// `--src-creds` against a Basic-auth source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_source_with_src_creds() {
    let image = small_image().await;
    let src = htpasswd_registry().await;
    push_layout(
        &image,
        &PushTarget::new(&src.host(), "private/app", "v1").with_auth(basic()),
    )
    .await
    .expect("seed the source");
    let dst = open_registry().await;

    let out = Mirror::copy(
        &format!("{}/private/app:v1", src.host()),
        &format!("{}/app:v1", dst.host()),
    )
    .args(["--src-creds", &format!("{USER}:{PASSWORD}")])
    .run()
    .await;
    out.expect_success();
    out.expect_not_leaked(PASSWORD);
    assert_landed(&dst.host(), "app", "v1", &image, &PushAuth::Anonymous).await;
}

/// Credentials from `$DOCKER_CONFIG/config.json` (`auths` with a base64
/// `user:password`), as `docker login` writes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_docker_config() {
    let image = small_image().await;
    let src = seeded_registry(&image, "app", "v1").await;
    let dst = htpasswd_registry().await;
    let config = Scratch::new("docker-config");
    let auth = base64(format!("{USER}:{PASSWORD}").as_bytes());
    std::fs::write(
        config.path().join("config.json"),
        serde_json::json!({"auths": {dst.host(): {"auth": auth}}}).to_string(),
    )
    .expect("write config.json");

    let out = Mirror::copy_between(&src.host(), &dst.host(), "app:v1")
        .env("DOCKER_CONFIG", config.path().to_string_lossy())
        .arg("-v")
        .run()
        .await;
    out.expect_success();
    out.expect_not_leaked(PASSWORD);
    out.expect_not_leaked(&auth);
    assert_landed(&dst.host(), "app", "v1", &image, &basic()).await;
}

/// A credential helper on PATH speaking Docker's protocol (`get`, the server
/// URL on stdin, JSON on stdout), answering `user:password` and noting every
/// server it was asked about in `log`.
fn credential_helper(
    bin: &std::path::Path,
    name: &str,
    user: &str,
    password: &str,
) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let log = bin.join(format!("{name}.log"));
    let program = bin.join(format!("docker-credential-{name}"));
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread -r server\necho \"$server\" >> '{}'\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}\\n' \"$server\"\n",
            log.display()
        ),
    )
    .expect("write the helper");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))
        .expect("make the helper executable");
    log
}

/// The servers a helper was asked about, in order.
fn asked(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Docker's order with working helpers: the host's `credHelpers` entry
/// beats `credsStore`, and `credsStore` beats `auths` (here holding a wrong
/// password), each asked only about the host that challenged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_helpers_come_before_creds_store_and_auths() {
    let image = small_image().await;
    let src = seeded_registry(&image, "app", "v1").await;
    let dst = htpasswd_registry().await;
    let config = Scratch::new("docker-config-helpers");
    let bin = config.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let right = credential_helper(&bin, "mirror-right", USER, PASSWORD);
    let wrong = credential_helper(&bin, "mirror-wrong", USER, "wrong-helper-pw-3a9c");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let wrong_auth = base64(format!("{USER}:wrong-auths-pw-81d0").as_bytes());
    let run = |config_json: serde_json::Value, tag: &'static str| {
        std::fs::write(config.path().join("config.json"), config_json.to_string())
            .expect("write config.json");
        Mirror::copy(
            &format!("{}/app:v1", src.host()),
            &format!("{}/app:{tag}", dst.host()),
        )
        .env("DOCKER_CONFIG", config.path().to_string_lossy())
        .env("PATH", path.clone())
        .arg("-v")
        .run()
    };

    let out = run(
        serde_json::json!({
            "auths": {dst.host(): {"auth": wrong_auth}},
            "credsStore": "mirror-wrong",
            "credHelpers": {dst.host(): "mirror-right"},
        }),
        "helper",
    )
    .await;
    out.expect_success();
    out.expect_not_leaked(PASSWORD);
    assert_landed(&dst.host(), "app", "helper", &image, &basic()).await;
    assert_eq!(asked(&right), [dst.host()]);
    assert!(
        asked(&wrong).is_empty(),
        "credsStore was asked: {:?}",
        asked(&wrong)
    );

    let out = run(
        serde_json::json!({
            "auths": {dst.host(): {"auth": wrong_auth}},
            "credsStore": "mirror-right",
        }),
        "store",
    )
    .await;
    out.expect_success();
    out.expect_not_leaked(PASSWORD);
    assert_landed(&dst.host(), "app", "store", &image, &basic()).await;
    assert_eq!(asked(&right), [dst.host(), dst.host()]);
}

/// A wrong password fails with exit 1, says it is about authentication, and
/// nothing is tagged at the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_an_authentication_error() {
    let image = small_image().await;
    let src = seeded_registry(&image, "app", "v1").await;
    let dst = htpasswd_registry().await;
    let wrong = "wrong-pw-7d2e";

    let out = Mirror::copy_between(&src.host(), &dst.host(), "app:v1")
        .args(["--dest-creds", &format!("{USER}:{wrong}"), "--retries", "2"])
        .fails()
        .await;
    out.expect_not_leaked(wrong);
    let stderr = out.stderr_lower();
    assert!(
        stderr.contains("auth") || stderr.contains("credential"),
        "the error should be about authentication\n{}",
        out.describe()
    );
    assert_no_manifest(&dst.host(), "app", "v1", &basic()).await;
}

/// Both registries want bearer tokens from one token server (different
/// users): the copy works with a handful of token requests per repository,
/// not one per blob, and the tokens and passwords stay out of the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_fetched_once_per_repository() {
    let (alice, alice_pw) = ("alice", "alice-pw-41b7e2");
    let (bob, bob_pw) = ("bob", "bob-pw-0c93aa");
    let tokens = TokenServer::start(TokenOptions {
        users: vec![
            (alice.to_owned(), alice_pw.to_owned()),
            (bob.to_owned(), bob_pw.to_owned()),
        ],
        anonymous_pull: false,
        ..TokenOptions::default()
    })
    .await
    .expect("start the token server");
    let src = Registry::token(&tokens).await.expect("source registry");
    let dst = Registry::token(&tokens)
        .await
        .expect("destination registry");
    let image = small_image().await;
    push_layout(
        &image,
        &PushTarget::new(&src.host(), "library/app", "v1")
            .with_auth(PushAuth::basic(alice, alice_pw)),
    )
    .await
    .expect("seed the source");
    tokens.clear_requests();

    let out = Mirror::copy(
        &format!("{}/library/app:v1", src.host()),
        &format!("{}/mirror/app:v1", dst.host()),
    )
    .args([
        "--src-creds",
        &format!("{alice}:{alice_pw}"),
        "--dest-creds",
        &format!("{bob}:{bob_pw}"),
        "--json",
        "-v",
    ])
    .run()
    .await;
    out.expect_success();
    out.expect_not_leaked(alice_pw);
    out.expect_not_leaked(bob_pw);
    // No JWT (base64url JSON, so it starts with `eyJ`) in the output either.
    out.expect_not_leaked("eyJ");
    let requests = tokens.requests();
    let report = out.json();

    let shown = format!("{requests:#?}");
    assert!(
        requests.iter().all(|r| r.granted),
        "refused token requests: {shown}"
    );
    let by = |user: &str| {
        requests
            .iter()
            .filter(|r| r.user.as_deref() == Some(user))
            .count()
    };
    assert!(
        (1..=3).contains(&by(alice)),
        "source (alice) token requests: {shown}"
    );
    assert!(
        (1..=3).contains(&by(bob)),
        "destination (bob) token requests: {shown}"
    );
    assert_eq!(
        by(alice) + by(bob),
        requests.len(),
        "anonymous token requests: {shown}"
    );
    assert_eq!(
        crate::support::num(&report, "/requests/token"),
        requests.len() as u64,
        "{report:#}"
    );

    assert_landed(
        &dst.host(),
        "mirror/app",
        "v1",
        &image,
        &PushAuth::basic(bob, bob_pw),
    )
    .await;
    assert_eq!(
        skopeo_digest(
            &format!("docker://{}/mirror/app:v1", dst.host()),
            Some((bob, bob_pw))
        )
        .await
        .expect("skopeo reads the destination"),
        image.root_digest().to_string()
    );
}

/// A token server that refuses the destination user: exit 1 about
/// authentication, nothing tagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_bearer_token_is_an_authentication_error() {
    let tokens = TokenServer::start(TokenOptions {
        users: vec![("carol".to_owned(), "carol-pw-5e1d".to_owned())],
        anonymous_pull: true,
        ..TokenOptions::default()
    })
    .await
    .expect("start the token server");
    let dst = Registry::token(&tokens)
        .await
        .expect("destination registry");
    let image = small_image().await;
    let src = seeded_registry(&image, "app", "v1").await;

    let out = Mirror::copy_between(&src.host(), &dst.host(), "app:v1")
        .args(["--dest-creds", "carol:not-her-password", "--retries", "2"])
        .fails()
        .await;
    out.expect_not_leaked("not-her-password");
    let stderr = out.stderr_lower();
    assert!(
        stderr.contains("auth") || stderr.contains("credential"),
        "the error should be about authentication\n{}",
        out.describe()
    );
    assert_no_manifest(
        &dst.host(),
        "app",
        "v1",
        &PushAuth::basic("carol", "carol-pw-5e1d"),
    )
    .await;
}
