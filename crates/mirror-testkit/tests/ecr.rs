//! The ECR and Docker Hub stand-ins against moto and real registries: if
//! these pass, the manners the project's end-to-end tests rely on are there.

use std::time::Duration;

use base64::Engine as _;
use mirror_testkit::{
    DockerHubStandIn, EcrOptions, EcrStandIn, GeneratedImage, ImageSpec, Moto, PushAuth,
    PushTarget, fetch_blob_digest, fetch_manifest, generate, push_layout,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ECR_HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

fn small(name: &str) -> GeneratedImage {
    generate(&ImageSpec::small(name, 7)).expect("generate image")
}

/// moto and an ECR stand-in in front of it.
async fn moto_and_ecr() -> (Moto, EcrStandIn) {
    let moto = Moto::start().await.expect("moto starts");
    let ecr = EcrStandIn::start(&moto, EcrOptions::default())
        .await
        .expect("the ECR stand-in starts");
    (moto, ecr)
}

/// `library/python:3.10-slim-buster` through the testkit's fetcher
/// (anonymous bearer flow): its bytes and content type.
async fn python_from(hub: &DockerHubStandIn) -> (bytes::Bytes, String) {
    let (bytes, content_type, _) = fetch_manifest(
        &hub.host(),
        "library/python",
        "3.10-slim-buster",
        &PushAuth::Anonymous,
    )
    .await
    .expect("fetching python from the Docker Hub stand-in");
    (bytes, content_type)
}

async fn json_of(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON body")
}

#[test]
fn stand_ins_can_be_shared_between_tasks_and_statics() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Moto>();
    shareable::<mirror_testkit::MotoClient>();
    shareable::<EcrStandIn>();
    shareable::<DockerHubStandIn>();
}

#[tokio::test]
async fn moto_hands_out_the_documented_account_token_and_endpoint() {
    let moto = Moto::start().await.unwrap();
    let (user, password, proxy_endpoint) = moto.get_authorization_token().await.unwrap();
    assert_eq!(user, "AWS");
    assert_eq!(password, "123456789012-auth-token");
    assert_eq!(proxy_endpoint, format!("https://{ECR_HOST}"));

    let env = moto.env();
    let get = |key: &str| {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("AWS_ENDPOINT_URL"), moto.endpoint());
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
    assert_eq!(get("AWS_REGION"), "us-east-1");
    assert_eq!(get("AWS_DEFAULT_REGION"), "us-east-1");
    assert_eq!(get("AWS_ACCESS_KEY_ID"), "testing");
    assert_eq!(get("AWS_EC2_METADATA_DISABLED"), "true");

    assert_eq!(moto.describe_repository("team/app").await.unwrap(), None);
    let created = moto
        .create_repository("team/app", "IMMUTABLE")
        .await
        .unwrap();
    assert_eq!(created["repositoryUri"], format!("{ECR_HOST}/team/app"));
    let described = moto.describe_repository("team/app").await.unwrap().unwrap();
    assert_eq!(described["imageTagMutability"], "IMMUTABLE");
    assert!(moto.describe_images("team/app").await.unwrap().is_empty());

    moto.client()
        .logs("CreateLogGroup", json!({"logGroupName": "/mirror/test"}))
        .await
        .unwrap();
    let groups = moto.describe_log_groups("/mirror").await.unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["logGroupName"], "/mirror/test");

    // The testkit's own calls are not the code under test's.
    assert_eq!(moto.calls(), vec![]);
    // Someone else's (an SDK's) are, by operation.
    let response = client()
        .post(format!("{}/", moto.endpoint()))
        .header(
            "x-amz-target",
            "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
        )
        .header("content-type", "application/x-amz-json-1.1")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ecr/aws4_request, \
             SignedHeaders=host, Signature=x",
        )
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(moto.count_calls("GetAuthorizationToken"), 1);
    let calls = moto.calls();
    assert_eq!(calls[0].service.as_deref(), Some("ecr"));
    moto.clear_calls();
    assert_eq!(moto.count_calls("GetAuthorizationToken"), 0);
}

#[tokio::test]
async fn ecr_answers_name_unknown_until_moto_has_the_repository() {
    let (moto, ecr) = moto_and_ecr().await;
    assert_eq!(ecr.registry_host(), ECR_HOST);
    assert_eq!(
        ecr.endpoint_arg(),
        format!("{ECR_HOST}=http://{}", ecr.host())
    );
    assert_eq!(ecr.user(), "AWS");
    assert_eq!(ecr.password(), "123456789012-auth-token");

    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("AWS:123456789012-auth-token")
    );
    let http = client();
    let base = format!("http://{}", ecr.host());
    let get = |url: &str| http.get(url).header("authorization", &basic).send();

    // Basic AWS:<moto's password> gets past the registry.
    let root = get(&format!("{base}/v2/")).await.unwrap();
    assert_eq!(root.status(), StatusCode::OK);

    let tags = format!("{base}/v2/team/app/tags/list");
    let missing = get(&tags).await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        json_of(missing).await,
        json!({"errors": [{"code": "NAME_UNKNOWN", "message": "The repository with name 'team/app' does not exist in the registry with id '123456789012'"}]})
    );
    // Without credentials, 401 comes first, with ECR's challenge.
    let anonymous = http.get(&tags).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        format!("Basic realm=\"https://{ECR_HOST}/\",service=\"ecr.amazonaws.com\"")
    );

    // Created later in the test: seen at once.
    moto.create_repository("team/app", "MUTABLE").await.unwrap();
    let image = small("ecr-name-unknown");
    push_layout(
        &image,
        &PushTarget::new(&ecr.host(), "team/app", "v1").with_auth(ecr.auth()),
    )
    .await
    .unwrap();
    let listed = get(&tags).await.unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(json_of(listed).await["tags"], json!(["v1"]));
    assert_eq!(
        http.get(&tags).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let (bytes, _, digest) = fetch_manifest(&ecr.host(), "team/app", "v1", &ecr.auth())
        .await
        .unwrap();
    assert_eq!(mirror_oci::digest_of(&bytes), image.root_digest());
    assert_eq!(digest, Some(image.root_digest().to_string()));

    // Manifest PUTs have no Location; moto saw every manifest.
    let puts: Vec<_> = ecr
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/"))
        .collect();
    assert_eq!(puts.len(), 3);
    assert!(
        puts.iter()
            .all(|r| r.status == 201 && r.authorization.is_some())
    );
    let images = moto.describe_images("team/app").await.unwrap();
    assert_eq!(images.len(), 3);
    assert!(images.iter().any(|i| {
        i["imageDigest"] == image.root_digest().to_string() && i["imageTags"] == json!(["v1"])
    }));

    // A rotated password locks moto's token out until it is set back.
    ecr.set_password("rotated").unwrap();
    let refused = get(&tags).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    ecr.set_password("123456789012-auth-token").unwrap();
    let again = get(&tags).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn immutable_repository_refuses_an_existing_tag_even_with_the_same_digest() {
    let (moto, ecr) = moto_and_ecr().await;
    moto.create_repository("locked", "IMMUTABLE").await.unwrap();
    moto.create_repository("open", "MUTABLE").await.unwrap();
    let image = small("ecr-immutable");
    let target =
        |repo: &str, tag: &str| PushTarget::new(&ecr.host(), repo, tag).with_auth(ecr.auth());

    push_layout(&image, &target("locked", "v1")).await.unwrap();
    let err = push_layout(&image, &target("locked", "v1"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("400"), "{err}");
    let expected = json!({"errors": [{"code": "TAG_INVALID", "message": "The image tag 'v1' already exists in the 'locked' repository and cannot be overwritten because the repository is immutable."}]});
    assert!(err.contains(&expected.to_string()), "{err}");
    // Another tag of the same image is fine, and so are mutable repositories.
    push_layout(&image, &target("locked", "v2")).await.unwrap();
    push_layout(&image, &target("open", "v1")).await.unwrap();
    push_layout(&image, &target("open", "v1")).await.unwrap();

    // A repository made immutable later is immutable from then on.
    moto.client()
        .ecr(
            "PutImageTagMutability",
            json!({"repositoryName": "open", "imageTagMutability": "IMMUTABLE"}),
        )
        .await
        .unwrap();
    assert!(push_layout(&image, &target("open", "v1")).await.is_err());
}

#[tokio::test]
async fn patch_answers_201_and_upload_status_is_404() {
    let (moto, ecr) = moto_and_ecr().await;
    moto.create_repository("uploads", "MUTABLE").await.unwrap();
    let auth = {
        let PushAuth::Basic(user, password) = ecr.auth() else {
            panic!("basic")
        };
        (user, password)
    };
    let http = client();
    let started = http
        .post(format!("http://{}/v2/uploads/blobs/uploads/", ecr.host()))
        .basic_auth(&auth.0, Some(&auth.1))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let location = url::Url::parse(&format!("http://{}/", ecr.host()))
        .unwrap()
        .join(&location)
        .unwrap();
    assert_eq!(location.host_str(), Some("127.0.0.1"));

    let data = b"one whole layer in one PATCH".to_vec();
    let patched = http
        .patch(location.clone())
        .basic_auth(&auth.0, Some(&auth.1))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::CREATED);
    let location = patched.headers()["location"].to_str().unwrap().to_owned();
    let mut put = url::Url::parse(&format!("http://{}/", ecr.host()))
        .unwrap()
        .join(&location)
        .unwrap();
    let status = http
        .get(put.clone())
        .basic_auth(&auth.0, Some(&auth.1))
        .send()
        .await
        .expect("GET upload");
    assert_eq!(status.status(), StatusCode::NOT_FOUND);

    let digest = mirror_oci::digest_of(&data);
    put.query_pairs_mut().append_pair("digest", digest.as_ref());
    let done = http
        .put(put)
        .basic_auth(&auth.0, Some(&auth.1))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::CREATED);
    let records = ecr.requests();
    assert_eq!(
        records.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![202, 201, 404, 201]
    );
    assert_eq!(
        fetch_blob_digest(&ecr.host(), "uploads", &digest, &ecr.auth())
            .await
            .unwrap(),
        digest
    );
}

/// The gate refuses the PUT past its limit by count, not by the clock: the
/// window is an hour, so a slow machine cannot spread the PUTs over two
/// windows (a 1 s window made this test flake when three PUTs took longer).
#[tokio::test]
async fn manifest_puts_above_the_limit_are_refused_however_slow_the_machine() {
    let moto = Moto::start().await.unwrap();
    let options = EcrOptions {
        manifest_puts_per_second: Some(2),
        manifest_put_window: Duration::from_secs(3600),
        ..EcrOptions::default()
    };
    let ecr = EcrStandIn::start(&moto, options).await.unwrap();
    moto.create_repository("busy", "MUTABLE").await.unwrap();
    let image = generate(&ImageSpec::single_layer("ecr-throttle", 2048)).unwrap();
    // Seeded behind the gate: the seeding PUTs do not count.
    push_layout(
        &image,
        &PushTarget::new(&ecr.registry().host(), "busy", "v0").with_auth(ecr.auth()),
    )
    .await
    .unwrap();

    let manifest = image.read_blob(&image.root_digest()).unwrap();
    let url = format!(
        "http://{}/v2/busy/manifests/{}",
        ecr.host(),
        image.root_digest()
    );
    let (user, password) = (ecr.user(), ecr.password());
    let http = client();
    let put = || {
        http.put(&url)
            .basic_auth(&user, Some(&password))
            .header("content-type", image.root.media_type().to_string())
            .body(manifest.clone())
            .send()
    };
    let mut statuses = Vec::new();
    let mut refusal = None;
    for _ in 0..4 {
        let response = put().await.expect("manifest PUT");
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS && refusal.is_none() {
            refusal = Some(json_of(response).await);
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(
        refusal,
        Some(json!({"errors": [{"code": "TOOMANYREQUESTS", "message": "Rate exceeded"}]}))
    );
    // Refused PUTs never reached the registry.
    let reached = ecr
        .faults()
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/"))
        .count();
    assert_eq!(reached, 2);
}

async fn mount_status(blob_mounting: bool) -> (u16, Option<String>) {
    let moto = Moto::start().await.expect("moto");
    let options = EcrOptions {
        blob_mounting,
        ..EcrOptions::default()
    };
    let ecr = EcrStandIn::start(&moto, options)
        .await
        .expect("ECR stand-in");
    moto.create_repository("base", "MUTABLE")
        .await
        .expect("create base");
    moto.create_repository("derived", "MUTABLE")
        .await
        .expect("create derived");
    let image = small("ecr-mount");
    push_layout(
        &image,
        &PushTarget::new(&ecr.host(), "base", "v1").with_auth(ecr.auth()),
    )
    .await
    .expect("seed base");
    ecr.clear_requests();
    let layer = &image.blobs[1];
    let response = client()
        .post(format!(
            "http://{}/v2/derived/blobs/uploads/?mount={}&from=base",
            ecr.host(),
            layer.digest()
        ))
        .basic_auth(ecr.user(), Some(ecr.password()))
        .header("content-length", "0")
        .send()
        .await
        .expect("mount POST");
    // The record keeps what the client sent; the fault proxy sees what the
    // registry got.
    let records = ecr.requests();
    assert_eq!(
        records[0].query.as_deref(),
        Some(format!("mount={}&from=base", layer.digest()).as_str())
    );
    let behind = ecr.faults().requests();
    let forwarded_query = behind.last().and_then(|r| r.query.clone());
    (response.status().as_u16(), forwarded_query)
}

#[tokio::test]
async fn blob_mounts_work_only_when_mounting_is_on() {
    let (status, query) = mount_status(false).await;
    assert_eq!(status, 202, "mounting off opens a normal session");
    assert_eq!(query, None);
    let (status, query) = mount_status(true).await;
    assert_eq!(status, 201, "mounting on mounts");
    assert!(query.expect("forwarded query").starts_with("mount="));
}

/// An anonymous pull token for `repository` from the stand-in's challenge.
async fn anonymous_token(hub: &DockerHubStandIn, repository: &str) -> String {
    let http = client();
    let challenge = http
        .get(format!("http://{}/v2/{repository}/manifests/x", hub.host()))
        .send()
        .await
        .expect("challenge GET");
    assert_eq!(challenge.status(), StatusCode::UNAUTHORIZED);
    let header = challenge.headers()["www-authenticate"]
        .to_str()
        .expect("challenge header")
        .to_owned();
    assert!(
        header.contains("service=\"registry.docker.io\""),
        "{header}"
    );
    let realm = header
        .split("realm=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("realm in challenge");
    let token: Value = http
        .get(realm)
        .query(&[
            ("service", "registry.docker.io"),
            ("scope", &format!("repository:{repository}:pull")),
        ])
        .send()
        .await
        .expect("token GET")
        .json()
        .await
        .expect("token JSON");
    token["token"].as_str().expect("token in answer").to_owned()
}

#[tokio::test]
async fn docker_hub_serves_the_seeded_index_with_rate_limit_headers() {
    let hub = DockerHubStandIn::start()
        .await
        .expect("Docker Hub stand-in");
    assert_eq!(
        hub.endpoint_arg(),
        format!("registry-1.docker.io=http://{}", hub.host())
    );
    let image = small("hub-seed");
    hub.seed(&image, "library/python", "3.10-slim-buster")
        .await
        .unwrap();
    assert!(hub.requests().is_empty(), "seeding bypasses the gate");

    let token = anonymous_token(&hub, "library/python").await;
    let http = client();
    let manifest_url = format!(
        "http://{}/v2/library/python/manifests/3.10-slim-buster",
        hub.host()
    );
    let accept =
        "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";
    let get = || {
        http.get(&manifest_url)
            .bearer_auth(&token)
            .header("accept", accept)
            .send()
    };
    let first = get().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["ratelimit-limit"], "100;w=21600");
    assert_eq!(first.headers()["ratelimit-remaining"], "99;w=21600");
    let bytes = first.bytes().await.unwrap();
    assert_eq!(mirror_oci::digest_of(&bytes), image.root_digest());
    let second = get().await.unwrap();
    assert_eq!(second.headers()["ratelimit-remaining"], "98;w=21600");
    // HEAD shows the limit without using it.
    let head = http
        .head(&manifest_url)
        .bearer_auth(&token)
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["ratelimit-remaining"], "98;w=21600");
    assert_eq!(hub.remaining(), 98);

    // The testkit's fetcher (anonymous bearer flow) gets the same bytes.
    let (fetched, content_type) = python_from(&hub).await;
    assert_eq!(fetched, bytes);
    assert_eq!(content_type, "application/vnd.oci.image.index.v1+json");

    hub.set_remaining(0);
    let over = get().await.unwrap();
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(over.headers()["ratelimit-remaining"], "0;w=21600");
    assert_eq!(json_of(over).await["errors"][0]["code"], "TOOMANYREQUESTS");
}

#[tokio::test]
async fn docker_hub_blobs_redirect_to_a_cdn_that_refuses_authorization() {
    let hub = DockerHubStandIn::start().await.unwrap();
    let image = small("hub-cdn");
    hub.seed(&image, "library/alpine", "3").await.unwrap();
    let token = anonymous_token(&hub, "library/alpine").await;
    let layer = &image.blobs[1];
    let http = client();
    let redirect = http
        .get(format!(
            "http://{}/v2/library/alpine/blobs/{}",
            hub.host(),
            layer.digest()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&format!("http://{}/", hub.cdn_host())));
    assert!(location.contains("X-Amz-Signature="));

    let with_auth = http
        .get(&location)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(with_auth.status(), StatusCode::BAD_REQUEST);
    let plain = http.get(&location).send().await.unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(
        &mirror_oci::digest_of(&plain.bytes().await.unwrap()),
        layer.digest()
    );
    let unsigned = location.split('?').next().unwrap();
    assert_eq!(
        http.get(unsigned).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    // A client that follows redirects (and drops Authorization across
    // hosts, as reqwest does) just gets the blob.
    assert_eq!(
        &fetch_blob_digest(
            &hub.host(),
            "library/alpine",
            layer.digest(),
            &PushAuth::Anonymous
        )
        .await
        .unwrap(),
        layer.digest()
    );
    let cdn = hub.cdn_requests();
    assert!(cdn.last().unwrap().authorization.is_none());
    assert_eq!(cdn.last().unwrap().status, 200);
    // Blob GETs are not counted against the pull limit.
    assert_eq!(hub.remaining(), 100);
}

#[tokio::test]
async fn docker_hub_seeds_python_like_as_python_3_10_slim_buster() {
    let hub = DockerHubStandIn::start().await.unwrap();
    let image = hub.seed_python().await.unwrap();
    let (bytes, _) = python_from(&hub).await;
    assert_eq!(mirror_oci::digest_of(&bytes), image.root_digest());
    assert_eq!(image.manifests.len(), 7);
}
