//! `mirror sync FILE --every D --listen ADDR`: the daemon keeps a fleet in
//! step round after round, a real Prometheus scrapes its `/metrics` and the
//! test reads the values back through Prometheus's query API, and SIGTERM
//! ends it cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mirror_testkit::{ImageSpec, Prometheus, PushAuth};

use crate::support::{Mirror, Scratch, assert_landed, image, open_registry, seed, try_fetch};
use crate::sync::{sync, sync_file};

const ANON: PushAuth = PushAuth::Anonymous;
/// Rounds run every second: a minute is dozens of them.
const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `probe` until it yields, at most [`PATIENCE`]; panics naming `what`.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("its address")
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client")
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// A query's one value as Prometheus has it now (none yet: `None`).
async fn scraped(prometheus: &Prometheus, promql: &str) -> Option<f64> {
    prometheus
        .value(promql)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nPrometheus log:\n{}", prometheus.log_text()))
}

/// The daemon copies the file's image in its first round, copies the new
/// digest when upstream moves the tag, keeps running (and counting) when an
/// edited file makes a round fail, serves `/healthz` and `/metrics` that a
/// real Prometheus scrapes, and finishes its round and exits 0 on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_keeps_the_fleet_in_step_and_prometheus_reads_its_rounds() {
    let first = image(ImageSpec::small("daemon-a", 71)).await;
    let second = image(ImageSpec::small("daemon-b", 72)).await;
    let source = open_registry().await;
    seed(&first, &source.host(), "app", "1").await;
    let destination = open_registry().await;
    let (src, dst) = (source.host(), destination.host());
    let scratch = Scratch::new("daemon");
    let body = format!("defaults:\n  target: {dst}\nimages:\n  - from: {src}/app:1\n");
    let file = sync_file(&scratch, "mirror.yaml", &body);
    let listen = free_port();
    let listen_arg = listen.to_string();
    let hosts = [src.clone(), dst.clone()];
    let daemon = sync(&file, &hosts, ["--every", "1s", "--listen", &listen_arg]).spawn();
    let prometheus = Prometheus::scraping(listen, "mirror")
        .await
        .expect("Prometheus (Debian's `prometheus`, installed by scripts/test.sh)");

    // Round one copied the image, and Prometheus saw it succeed.
    let succeeded = r#"mirror_sync_rounds_total{job="mirror",result="succeeded"}"#;
    eventually("a succeeded round scraped by Prometheus", || async {
        scraped(&prometheus, succeeded).await.filter(|n| *n >= 1.0)
    })
    .await;
    assert_landed(&dst, "app", "1", &first, &ANON).await;
    assert_eq!(
        scraped(&prometheus, r#"up{job="mirror"}"#).await,
        Some(1.0),
        "Prometheus scrapes the daemon"
    );
    eventually("a round that found the tag up to date", || async {
        scraped(&prometheus, r#"mirror_sync_tags{state="up-to-date"}"#)
            .await
            .filter(|n| *n == 1.0)
    })
    .await;

    // Upstream moves the tag: a later round copies the new digest.
    seed(&second, &src, "app", "1").await;
    let moved = second.root_digest().to_string();
    eventually("the moved tag copied by a later round", || async {
        try_fetch(&dst, "app", "1", &ANON)
            .await
            .ok()
            .filter(|f| f.digest == moved)
    })
    .await;
    assert_landed(&dst, "app", "1", &second, &ANON).await;

    // The file is read again every round: an entry whose source does not
    // exist fails those rounds, counted, and the daemon goes on.
    let broken = format!("{body}  - from: {src}/missing:1\n");
    std::fs::write(&file, broken).expect("edit the sync file");
    let failed = r#"mirror_sync_rounds_total{job="mirror",result="failed"}"#;
    eventually("a failed round scraped by Prometheus", || async {
        scraped(&prometheus, failed).await.filter(|n| *n >= 1.0)
    })
    .await;
    let last_success = scraped(&prometheus, "mirror_sync_last_success_timestamp_seconds")
        .await
        .expect("the last success survives failed rounds");
    assert!(last_success > 1.0e9, "{last_success}");
    eventually("a scrape of the failed round's tag", || async {
        scraped(&prometheus, r#"mirror_sync_tags{state="failed"}"#)
            .await
            .filter(|n| *n == 1.0)
    })
    .await;

    let (status, health) = get(&format!("http://{listen}/healthz")).await;
    assert_eq!(status, 200, "{health}");
    assert!(
        health.starts_with("ok\n") && health.contains("failed"),
        "{health}"
    );
    let (status, metrics) = get(&format!("http://{listen}/metrics")).await;
    assert_eq!(status, 200, "{metrics}");
    assert!(metrics.contains("mirror_sync_rounds_total"), "{metrics}");
    let (status, _) = get(&format!("http://{listen}/nothing")).await;
    assert_eq!(status, 404);

    daemon.terminate();
    let (out, finished) = daemon.finish(Duration::from_secs(30)).await;
    assert!(
        finished,
        "SIGTERM did not end the daemon: {}",
        out.describe()
    );
    out.expect_success();
    assert!(out.stderr.contains("stopped after"), "{}", out.describe());
    // Destination unchanged by the failing rounds.
    assert_landed(&dst, "app", "1", &second, &ANON).await;
}

/// The daemon's flags are checked before anything runs.
#[tokio::test]
async fn daemon_flags_that_cannot_work_are_usage_errors() {
    let scratch = Scratch::new("daemon-flags");
    let file = sync_file(
        &scratch,
        "mirror.yaml",
        "defaults:\n  target: oci:./out\nimages: []\n",
    );
    // --listen serves a daemon's numbers: without --every there is none.
    let out = Mirror::new(["sync", &file, "--listen", "127.0.0.1:0"])
        .run()
        .await;
    out.expect_code(2);
    assert!(out.stderr.contains("--every"), "{}", out.describe());
    // Every round reads the file again: standard input cannot be.
    let out = Mirror::new(["sync", "-f", "-", "--every", "1m"])
        .run()
        .await;
    out.expect_code(2);
    assert!(out.stderr.contains("not `-`"), "{}", out.describe());
    // A bundle is written or read once, not every round.
    let out = Mirror::new(["sync", &file, "--every", "1m", "--to-archive", "b.tar"])
        .run()
        .await;
    out.expect_code(2);
    assert!(out.stderr.contains("--to-archive"), "{}", out.describe());
    // A duration people write, at least a second.
    let out = Mirror::new(["sync", &file, "--every", "soon"]).run().await;
    out.expect_code(2);
    assert!(out.stderr.contains("--every"), "{}", out.describe());
    let out = Mirror::new(["sync", &file, "--every", "10ms"]).run().await;
    out.expect_code(2);
    assert!(out.stderr.contains("second"), "{}", out.describe());
}
