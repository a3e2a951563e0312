//! Registries over HTTPS, as every real one is: a trust chain checked for real
//! (`--ca-cert`, no `--insecure-registry`), and requests multiplexed as HTTP/2
//! streams, which only TLS negotiates.
//!
//! Each TLS registry serves the storage of a plain one, so what landed is
//! checked through the plain one with the test kit's own client.

use std::net::{IpAddr, Ipv4Addr};

use mirror_testkit::{GeneratedImage, PushAuth, Registry, ServerCert, TestCa};

use crate::support::{
    Mirror, assert_landed, assert_no_manifest, num, open_registry, seeded_registry, small_image,
};

const ANON: PushAuth = PushAuth::Anonymous;

fn localhost_cert(ca: &TestCa) -> ServerCert {
    ca.server(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], &["localhost"])
        .expect("a server certificate")
}

async fn tls_registry(ca: &TestCa, storage_of: &Registry) -> Registry {
    Registry::open_tls(&localhost_cert(ca), Some(storage_of.storage_dir()))
        .await
        .expect("start a TLS docker-registry")
}

/// A small image at `app:v1` of a plain registry, served over TLS with a
/// certificate of a new CA, and an empty plain registry to copy to.
struct Setup {
    image: GeneratedImage,
    ca: TestCa,
    /// Holds the source's storage: alive as long as the TLS source.
    _plain_source: Registry,
    source: Registry,
    plain_destination: Registry,
}

async fn setup() -> Setup {
    let image = small_image().await;
    let ca = TestCa::new().expect("a CA");
    let plain_source = seeded_registry(&image, "app", "v1").await;
    let plain_destination = open_registry().await;
    let source = tls_registry(&ca, &plain_source).await;
    Setup {
        image,
        ca,
        _plain_source: plain_source,
        source,
        plain_destination,
    }
}

/// `mirror copy SOURCE/app:v1 DESTINATION/copied:v1`. Not `Mirror::copy`:
/// that names every host `--insecure-registry` (the one way to allow a hop
/// to plain HTTP).
fn copy_app(source: &Registry, destination: &Registry) -> Mirror {
    Mirror::new([
        "copy".to_owned(),
        format!("{}/app:v1", source.host()),
        format!("{}/copied:v1", destination.host()),
    ])
}

/// The registry's access log lines for `/v2/` requests, by protocol.
fn protocols(registry: &Registry) -> Vec<String> {
    registry
        .log_text()
        .lines()
        .filter_map(|line| {
            let (_, request) = line.split_once("] \"")?;
            let mut parts = request.split(' ');
            let (_method, path, protocol) = (parts.next()?, parts.next()?, parts.next()?);
            path.starts_with("/v2/")
                .then(|| protocol.trim_end_matches('"').to_owned())
        })
        .collect()
}

/// The whole image lands between two HTTPS registries trusted through
/// `--ca-cert` alone, and every request went over HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_between_tls_registries_over_http2_with_ca_cert() {
    let tls = setup().await;
    let (image, ca, plain_destination) = (&tls.image, &tls.ca, &tls.plain_destination);
    let source = &tls.source;
    let destination = tls_registry(ca, plain_destination).await;

    let out = copy_app(source, &destination)
        .arg("--ca-cert")
        .arg(ca.ca_path().to_string_lossy())
        .arg("--json")
        .run()
        .await;
    out.expect_success();
    assert_eq!(num(&out.json(), "/blobs/copied"), image.blobs.len() as u64);
    assert_landed(&plain_destination.host(), "copied", "v1", image, &ANON).await;

    for (side, registry) in [("source", source), ("destination", &destination)] {
        let seen = protocols(registry);
        assert!(!seen.is_empty(), "the {side} logged no requests");
        assert!(
            seen.iter().all(|p| p == "HTTP/2.0"),
            "the {side} saw {seen:?}, not only HTTP/2"
        );
    }
}

/// A registry whose certificate chains to no trusted root is refused: the
/// error says it is the certificate, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_by_name() {
    let tls = setup().await;
    let plain_destination = &tls.plain_destination;
    let destination = tls_registry(&tls.ca, plain_destination).await;

    let out = copy_app(&tls.source, &destination).run().await;
    out.expect_code(1);
    let stderr = out.stderr_lower();
    assert!(stderr.contains("certificate"), "{}", out.describe());
    assert_no_manifest(&plain_destination.host(), "copied", "v1", &ANON).await;
}

/// A TLS registry whose upload `Location` sends the blob to plain HTTP (a
/// front end that announces `http://`): mirror refuses that hop by name,
/// before a byte of the blob crosses unencrypted, and nothing lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_location_that_leaves_https_for_http_is_refused() {
    let tls = setup().await;
    let (ca, plain_destination) = (&tls.ca, &tls.plain_destination);
    let announced = format!("http://{}", plain_destination.host());
    let destination = Registry::open_tls_announcing(
        &localhost_cert(ca),
        Some(plain_destination.storage_dir()),
        &announced,
    )
    .await
    .expect("start a TLS docker-registry announcing plain HTTP");

    let out = copy_app(&tls.source, &destination)
        .arg("--ca-cert")
        .arg(ca.ca_path().to_string_lossy())
        .run()
        .await;
    out.expect_code(1);
    let stderr = out.stderr_lower();
    assert!(
        stderr.contains("leaves https for plain http") && stderr.contains(&announced),
        "{}",
        out.describe()
    );
    let plain_hits: Vec<String> = plain_destination
        .log_text()
        .lines()
        .filter(|line| line.contains("/v2/copied/"))
        .map(str::to_owned)
        .collect();
    assert!(
        plain_hits.is_empty(),
        "requests went to the plain HTTP registry: {plain_hits:?}"
    );
    assert_no_manifest(&plain_destination.host(), "copied", "v1", &ANON).await;
}
