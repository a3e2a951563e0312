//! The three kinds of registry, exercised with the testkit's own pusher and
//! with skopeo as an outside witness.

use mirror_testkit::{
    ImageSpec, PushAuth, PushTarget, Registry, blob_exists, fetch_blob_digest, fetch_manifest,
    generate, push_layout, skopeo_digest, skopeo_inspect_raw,
};

#[tokio::test]
async fn open_registry_takes_a_push_and_skopeo_reads_the_same_digest() {
    let registry = Registry::open().await.expect("registry");
    let image = generate(&ImageSpec::small("open-push", 1).with_attestations()).expect("image");
    let target = PushTarget::new(&registry.host(), "library/small", "v1");
    push_layout(&image, &target).await.expect("push");

    let (bytes, content_type, digest) = fetch_manifest(
        &registry.host(),
        "library/small",
        "v1",
        &PushAuth::Anonymous,
    )
    .await
    .expect("fetch");
    assert_eq!(content_type, "application/vnd.oci.image.index.v1+json");
    assert_eq!(mirror_oci::digest_of(&bytes), image.root_digest());
    assert_eq!(digest, Some(image.root_digest().to_string()));

    let reference = format!("docker://{}/library/small:v1", registry.host());
    assert_eq!(
        skopeo_digest(&reference, None).await.expect("skopeo"),
        image.root_digest().to_string()
    );
    let raw = skopeo_inspect_raw(&reference, None)
        .await
        .expect("skopeo raw");
    assert_eq!(
        raw,
        image.read_blob(&image.root_digest()).expect("root bytes")
    );

    for blob in &image.blobs {
        assert!(
            blob_exists(
                &registry.host(),
                "library/small",
                blob.digest(),
                &PushAuth::Anonymous
            )
            .await
            .expect("head")
        );
    }
    let layer = &image.blobs[1];
    assert_eq!(
        &fetch_blob_digest(
            &registry.host(),
            "library/small",
            layer.digest(),
            &PushAuth::Anonymous
        )
        .await
        .expect("get"),
        layer.digest()
    );
    // The log has distribution's access lines.
    // (The access line is written just after the response: allow a moment.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !registry
        .log_text()
        .contains("PUT /v2/library/small/manifests/v1")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            registry.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // A second push is all HEAD hits; a wipe makes the registry cold again.
    push_layout(&image, &target).await.expect("push again");
    registry.wipe_storage().expect("wipe");
    assert!(
        !blob_exists(
            &registry.host(),
            "library/small",
            layer.digest(),
            &PushAuth::Anonymous
        )
        .await
        .expect("head after wipe")
    );
    assert!(
        std::fs::read_dir(registry.storage_dir())
            .expect("dir")
            .next()
            .is_none()
    );
}

#[tokio::test]
async fn docker_media_types_round_trip_with_the_same_digest() {
    let registry = Registry::open().await.expect("registry");
    let image = generate(
        &ImageSpec::small("docker-push", 2)
            .docker()
            .with_attestations(),
    )
    .expect("image");
    push_layout(
        &image,
        &PushTarget::new(&registry.host(), "docker/img", "latest"),
    )
    .await
    .expect("push");
    let (bytes, content_type, _) = fetch_manifest(
        &registry.host(),
        "docker/img",
        "latest",
        &PushAuth::Anonymous,
    )
    .await
    .expect("fetch");
    assert_eq!(
        content_type,
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    assert_eq!(mirror_oci::digest_of(&bytes), image.root_digest());
    let (child, _) = &image.manifests[0];
    let (bytes, content_type, _) = fetch_manifest(
        &registry.host(),
        "docker/img",
        child.digest().as_ref(),
        &PushAuth::Anonymous,
    )
    .await
    .expect("fetch child");
    assert_eq!(
        content_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(&mirror_oci::digest_of(&bytes), child.digest());
}

#[tokio::test]
async fn htpasswd_registry_refuses_anonymous_and_takes_the_right_password() {
    let registry = Registry::htpasswd("alice", "s3cret")
        .await
        .expect("registry");
    let image = generate(&ImageSpec::single_layer("htpasswd-small", 20_000)).expect("image");
    let target = PushTarget::new(&registry.host(), "team/app", "1.0");

    let anonymous = push_layout(&image, &target)
        .await
        .expect_err("anonymous push");
    assert!(format!("{anonymous:#}").contains("Basic"), "{anonymous:#}");
    let wrong = push_layout(
        &image,
        &target.clone().with_auth(PushAuth::basic("alice", "nope")),
    )
    .await
    .expect_err("wrong password");
    assert!(format!("{wrong:#}").contains("401"), "{wrong:#}");

    let alice = PushAuth::basic("alice", "s3cret");
    push_layout(&image, &target.clone().with_auth(alice.clone()))
        .await
        .expect("push with password");
    let (bytes, _, _) = fetch_manifest(&registry.host(), "team/app", "1.0", &alice)
        .await
        .expect("fetch");
    assert_eq!(mirror_oci::digest_of(&bytes), image.root_digest());
    let reference = format!("docker://{}/team/app:1.0", registry.host());
    assert_eq!(
        skopeo_digest(&reference, Some(("alice", "s3cret")))
            .await
            .expect("skopeo with creds"),
        image.root_digest().to_string()
    );
    assert!(skopeo_inspect_raw(&reference, None).await.is_err());

    // Rotating the password takes effect on the live registry.
    registry.set_password("alice", "rotated").expect("rotate");
    let old = fetch_manifest(&registry.host(), "team/app", "1.0", &alice).await;
    assert!(old.is_err(), "the old password still works");
    fetch_manifest(
        &registry.host(),
        "team/app",
        "1.0",
        &PushAuth::basic("alice", "rotated"),
    )
    .await
    .expect("new password");
    // And a second user can be added.
    registry.set_password("bob", "hunter2").expect("add bob");
    fetch_manifest(
        &registry.host(),
        "team/app",
        "1.0",
        &PushAuth::basic("bob", "hunter2"),
    )
    .await
    .expect("bob");
}

#[tokio::test]
async fn registries_get_their_own_ports_and_storage_and_stop_on_drop() {
    let a = Registry::open().await.expect("a");
    let b = Registry::open().await.expect("b");
    assert_ne!(a.addr(), b.addr());
    assert_ne!(a.storage_dir(), b.storage_dir());
    assert_eq!(a.host(), a.addr().to_string());
    let addr = a.addr();
    let storage = a.storage_dir().to_owned();
    drop(a);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening"
    );
    assert!(!storage.exists(), "storage not removed");
}

/// Run by the next test in a child process: holds a registry until killed.
#[tokio::test]
#[ignore = "helper for registry_dies_with_a_killed_test_process"]
async fn helper_holds_a_registry_until_killed() {
    let Some(file) = std::env::var_os("MIRROR_TESTKIT_ADDR_FILE") else {
        return;
    };
    let registry = Registry::open().await.expect("registry");
    std::fs::write(file, registry.host()).expect("write addr");
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
}

#[test]
fn registry_dies_with_a_killed_test_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("addr");
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--ignored",
            "--exact",
            "registry::helper_holds_a_registry_until_killed",
        ])
        .env("MIRROR_TESTKIT_ADDR_FILE", &file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn helper");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let addr = loop {
        if let Ok(addr) = std::fs::read_to_string(&file)
            && !addr.is_empty()
        {
            break addr;
        }
        assert!(std::time::Instant::now() < deadline, "helper never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(std::net::TcpStream::connect(&addr).is_ok());
    child.kill().expect("SIGKILL"); // no destructors run
    child.wait().expect("wait");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::net::TcpStream::connect(&addr).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "registry at {addr} outlived its test process"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Deletes the test's network namespace (and with it the veth pair).
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn ip(args: &[&str]) {
    let status = std::process::Command::new("ip")
        .args(args)
        .status()
        .expect("run ip");
    assert!(status.success(), "ip {}: {status}", args.join(" "));
}

#[tokio::test]
async fn a_registry_in_a_network_namespace_serves_another_registrys_storage() {
    let root = std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    assert!(
        root,
        "network namespaces need root: run the tests as root (scripts/test.sh does)"
    );
    mirror_testkit::require_tool("ip", "iproute2").unwrap_or_else(|e| panic!("{e}"));
    let pid = std::process::id();
    let netns = Netns(format!("mtk-test-{pid}"));
    let (host_end, ns_end) = (format!("mtk{pid}h"), format!("mtk{pid}n"));
    ip(&["netns", "add", &netns.0]);
    ip(&[
        "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end,
    ]);
    ip(&["link", "set", &ns_end, "netns", &netns.0]);
    ip(&["addr", "add", "10.213.1.1/30", "dev", &host_end]);
    ip(&["link", "set", &host_end, "up"]);
    let in_ns = |args: &[&str]| ip(&[&["netns", "exec", &netns.0, "ip"][..], args].concat());
    in_ns(&["addr", "add", "10.213.1.2/30", "dev", &ns_end]);
    in_ns(&["link", "set", &ns_end, "up"]);

    let local = Registry::open().await.expect("registry");
    let image = generate(&ImageSpec::small("netns-push", 7)).expect("image");
    push_layout(&image, &PushTarget::new(&local.host(), "app", "v1"))
        .await
        .expect("push");

    let addr = "10.213.1.2:5000".parse().expect("addr");
    let remote = Registry::open_in_netns(&netns.0, addr, Some(local.storage_dir()), None)
        .await
        .expect("registry in the namespace");
    assert_eq!(remote.host(), "10.213.1.2:5000");
    let (bytes, _, _) = fetch_manifest(&remote.host(), "app", "v1", &PushAuth::Anonymous)
        .await
        .expect("fetch across the veth pair");
    assert_eq!(mirror_oci::digest_of(&bytes), image.root_digest());
    assert!(
        remote
            .log_text()
            .contains("\"GET /v2/app/manifests/v1 HTTP/1.1\" 200"),
        "the access log records the request"
    );

    // The borrowed storage outlives the registry that served it.
    drop(remote);
    assert!(
        blob_exists(
            &local.host(),
            "app",
            image.blobs[0].digest(),
            &PushAuth::Anonymous
        )
        .await
        .expect("head")
    );
}
