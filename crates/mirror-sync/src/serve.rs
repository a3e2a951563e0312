//! `mirror sync --every D --listen ADDR`: a small HTTP/1.1 server (hyper,
//! already in the tree through reqwest) answering `/metrics` with the last
//! round's numbers in the Prometheus text format ([`crate::metrics`]) and
//! `/healthz` with `200 ok` while the daemon runs. Every answer is rendered
//! from [`Status`], which the round loop updates when a round ends; nothing
//! a scrape does reaches the copies.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::metrics::{Rounds, daemon_text};
use crate::run::RunReport;

/// OpenMetrics, as prometheus-client encodes it; Prometheus asks for it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A client that has not sent its request head by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait to be accepted, so a flood of
/// idle clients costs a bounded number of tasks and sockets.
const MAX_CONNECTIONS: usize = 64;

/// What the daemon has done so far, shared by the round loop and the server.
#[derive(Debug, Default)]
pub struct Status {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The metrics text, rendered when a round ends.
    metrics: Option<String>,
    rounds: Rounds,
    last_success: Option<f64>,
    /// One line about the last round, for `/healthz`.
    last_round: Option<String>,
}

impl Status {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The guarded data stays consistent: every update is one assignment.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A round ended at `ended` (seconds since the epoch) with `report`, or
    /// without one when its file could not be read (`error`).
    pub fn round_ended(&self, report: Option<&RunReport>, ended: f64, error: Option<&str>) {
        let mut inner = self.lock();
        let failed = match report {
            Some(report) => report.failed() > 0,
            None => true,
        };
        if failed {
            inner.rounds.failed += 1;
        } else {
            inner.rounds.succeeded += 1;
            inner.last_success = Some(ended);
        }
        inner.last_round = Some(match (report, error) {
            (_, Some(error)) => format!("last round: not run: {error}"),
            (Some(report), None) => format!(
                "last round: {} of {} failed, {:.1} s",
                report.failed(),
                report.tags.len() + report.log_groups.len(),
                report.seconds
            ),
            (None, None) => "last round: not run".to_owned(),
        });
        let text = daemon_text(report, Some(ended), inner.last_success, inner.rounds);
        inner.metrics = Some(text);
    }

    /// The rounds so far.
    pub fn rounds(&self) -> Rounds {
        self.lock().rounds
    }

    fn metrics(&self) -> String {
        let inner = self.lock();
        match &inner.metrics {
            Some(text) => text.clone(),
            None => daemon_text(None, None, None, inner.rounds),
        }
    }

    fn health(&self) -> String {
        let inner = self.lock();
        let rounds = inner.rounds;
        format!(
            "ok\nrounds: {} succeeded, {} failed\n{}\n",
            rounds.succeeded,
            rounds.failed,
            inner
                .last_round
                .as_deref()
                .unwrap_or("last round: none yet (the first is running)")
        )
    }
}

/// Binds `address` and serves `status` until the task is aborted; returns
/// the address bound (port 0 picks one) and the task.
pub async fn listen(
    address: SocketAddr,
    status: Arc<Status>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, never spin.
                    tracing::warn!("--listen {bound}: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let status = Arc::clone(&status);
            tokio::spawn(async move {
                let _slot = slot;
                let service = service_fn(move |request| {
                    let answer = answer(&status, &request);
                    async move { Ok::<_, Infallible>(answer) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!("--listen {bound}: a connection ended: {e}");
                }
            });
        }
    });
    Ok((bound, task))
}

fn answer(status: &Status, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (code, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            (StatusCode::OK, OPENMETRICS, status.metrics())
        }
        (&Method::GET | &Method::HEAD, "/healthz") => {
            (StatusCode::OK, "text/plain; charset=utf-8", status.health())
        }
        (&Method::GET | &Method::HEAD, _) => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: mirror sync serves /metrics and /healthz\n".to_owned(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET and HEAD\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_the_first_round_the_metrics_hold_only_the_rounds() {
        let status = Status::new();
        let text = status.metrics();
        assert!(
            text.contains("mirror_sync_rounds_total{result=\"succeeded\"} 0"),
            "{text}"
        );
        assert!(!text.contains("last_run_timestamp"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(status.health().contains("none yet"));
    }

    #[test]
    fn a_round_without_a_file_counts_as_failed_and_keeps_the_last_success() {
        let status = Status::new();
        status.round_ended(None, 1_700_000_000.0, Some("mirror.yaml:3:1: unknown key"));
        let text = status.metrics();
        assert!(
            text.contains("mirror_sync_rounds_total{result=\"failed\"} 1"),
            "{text}"
        );
        assert!(!text.contains("last_success"), "{text}");
        assert!(status.health().contains("unknown key"));
    }
}
