//! Bearer auth end to end: distribution 2.8 accepts this token server's JWTs.

use std::time::Duration;

use mirror_testkit::{
    ImageSpec, PushAuth, PushTarget, Registry, TokenOptions, TokenServer, fetch_manifest, generate,
    push_layout, skopeo_digest,
};

fn options() -> TokenOptions {
    TokenOptions {
        users: vec![("carol".to_owned(), "pw".to_owned())],
        ..TokenOptions::default()
    }
}

#[tokio::test]
async fn token_registry_takes_pushes_and_pulls_through_the_token_server() {
    let tokens = TokenServer::start(options()).await.expect("token server");
    let registry = Registry::token(&tokens).await.expect("registry");
    let image = generate(&ImageSpec::small("token-push", 5)).expect("image");
    let carol = PushAuth::basic("carol", "pw");
    let target = PushTarget::new(&registry.host(), "org/app", "v1");

    push_layout(&image, &target.clone().with_auth(carol.clone()))
        .await
        .expect("push with a token");
    let requests = tokens.requests();
    assert!(!requests.is_empty());
    assert!(requests.iter().all(|r| r.granted));
    assert!(requests.iter().all(|r| r.user.as_deref() == Some("carol")));
    assert!(
        requests.iter().any(|r| r
            .scopes
            .contains(&"repository:org/app:pull,push".to_owned())),
        "{requests:?}"
    );

    // Anonymous pull is allowed (anonymous_pull), anonymous push is not.
    tokens.clear_requests();
    let (bytes, _, _) = fetch_manifest(&registry.host(), "org/app", "v1", &PushAuth::Anonymous)
        .await
        .expect("anonymous pull");
    assert_eq!(mirror_oci::digest_of(&bytes), image.root_digest());
    let requests = tokens.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].user, None);
    let other = generate(&ImageSpec::small("token-push-2", 6)).expect("image");
    let refused = push_layout(&other, &target)
        .await
        .expect_err("anonymous push");
    assert!(format!("{refused:#}").contains("401"), "{refused:#}");

    // Wrong password: the token server says 401 and records it.
    tokens.clear_requests();
    let wrong = fetch_manifest(
        &registry.host(),
        "org/app",
        "v1",
        &PushAuth::basic("carol", "wrong"),
    )
    .await
    .expect_err("wrong password");
    assert!(format!("{wrong:#}").contains("incorrect username or password"));
    let requests = tokens.requests();
    assert_eq!(requests.len(), 1);
    assert!(!requests[0].granted);

    // skopeo, a different client, goes through the same flow.
    let reference = format!("docker://{}/org/app:v1", registry.host());
    assert_eq!(
        skopeo_digest(&reference, Some(("carol", "pw")))
            .await
            .expect("skopeo"),
        image.root_digest().to_string()
    );
}

#[tokio::test]
async fn token_endpoint_answers_like_docker_hub() {
    let tokens = TokenServer::start(TokenOptions {
        anonymous_pull: false,
        ..options()
    })
    .await
    .expect("token server");
    assert_eq!(tokens.service(), "registry.test");
    assert!(tokens.realm().ends_with("/token"));
    let client = reqwest::Client::new();

    let answer: serde_json::Value = client
        .get(tokens.realm())
        .query(&[
            ("service", "registry.test"),
            ("scope", "repository:a/b:pull,push"),
            ("scope", "repository:c/d:pull"),
            ("account", "carol"),
        ])
        .basic_auth("carol", Some("pw"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["expires_in"], 300);
    assert_eq!(answer["token"], answer["access_token"]);
    assert!(
        answer["issued_at"]
            .as_str()
            .expect("issued_at")
            .ends_with('Z')
    );
    let claims = jwt_claims(answer["token"].as_str().expect("token"));
    assert_eq!(claims["aud"], "registry.test");
    assert_eq!(claims["sub"], "carol");
    assert_eq!(claims["iss"], tokens.issuer());
    assert_eq!(
        claims["access"],
        serde_json::json!([
            {"type": "repository", "name": "a/b", "actions": ["pull", "push"]},
            {"type": "repository", "name": "c/d", "actions": ["pull"]},
        ])
    );
    let header = jwt_part(answer["token"].as_str().expect("token"), 0);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], tokens.key_id());

    // Anonymous without anonymous_pull: a token that grants nothing.
    let answer: serde_json::Value = client
        .get(tokens.realm())
        .query(&[
            ("service", "registry.test"),
            ("scope", "repository:a/b:pull"),
        ])
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let claims = jwt_claims(answer["token"].as_str().expect("token"));
    assert_eq!(claims["access"][0]["actions"], serde_json::json!([]));

    // OAuth2 POST with a password, then with the refresh token it handed out.
    tokens.set_lifetime(Duration::from_secs(42));
    let answer: serde_json::Value = client
        .post(tokens.realm())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "password"),
            ("username", "carol"),
            ("password", "pw"),
            ("service", "registry.test"),
            ("scope", "repository:a/b:pull repository:e/f:push"),
            ("client_id", "mirror"),
            ("access_type", "offline"),
        ]))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["expires_in"], 42);
    let refresh = answer["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    let response = client
        .post(tokens.realm())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("service", "registry.test"),
            ("scope", "repository:a/b:pull"),
        ]))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    let bad = client
        .post(tokens.realm())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "password"),
            ("username", "carol"),
            ("password", "x"),
        ]))
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), 401);

    let requests = tokens.requests();
    assert_eq!(requests.len(), 5);
    assert_eq!(
        requests[2].scopes,
        vec![
            "repository:a/b:pull".to_owned(),
            "repository:e/f:push".to_owned()
        ]
    );
    assert_eq!(requests[3].user.as_deref(), Some("carol"));
    assert!(!requests[4].granted);
}

fn jwt_part(token: &str, index: usize) -> serde_json::Value {
    use base64::Engine as _;
    let part = token.split('.').nth(index).expect("jwt part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json")
}

fn jwt_claims(token: &str) -> serde_json::Value {
    jwt_part(token, 1)
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}
