//! A real Prometheus (Debian's `prometheus` package) scraping one target
//! every second: a `prometheus` child process on a free port of 127.0.0.1
//! with its own configuration and storage in a temporary directory, killed
//! on drop. The test reads what it scraped back through Prometheus's HTTP
//! query API ([`Prometheus::query`]), as a dashboard or an alert would.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::child::{ChildServer, Readiness, Ready, free_port};

/// Prometheus 2.42 starts in about a second here.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `prometheus` on 127.0.0.1, stopped on drop.
pub struct Prometheus {
    addr: SocketAddr,
    client: reqwest::Client,
    server: ChildServer,
    // Last so it is removed after the process is gone.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Prometheus {
    /// Starts `prometheus` (`PROMETHEUS` if set, else the one on `PATH`)
    /// scraping `http://TARGET/metrics` every second as job `job`.
    pub async fn scraping(target: SocketAddr, job: &str) -> anyhow::Result<Self> {
        let program = std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".to_owned());
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut prometheus = Self::spawn(&program, target, job)?;
            let url = format!("{}/-/ready", prometheus.endpoint());
            let readiness = Readiness {
                banner: "Server is ready to receive web requests.",
                url: &url,
                ready: |status| status == 200,
                timeout: READY_TIMEOUT,
            };
            match prometheus.server.wait_ready(readiness).await {
                Ok(()) => return Ok(prometheus),
                // A port picked by binding :0 can be taken before it binds it.
                Err(Ready::Exited(text))
                    if text.contains("address already in use") && attempts < 5 =>
                {
                    continue;
                }
                Err(Ready::Exited(text)) => bail!(
                    "{program} exited before it was ready (Debian's `prometheus` package; scripts/test.sh installs it); its log:\n{text}"
                ),
                Err(Ready::Timeout(text)) => {
                    bail!("{program} did not answer within {READY_TIMEOUT:?}; its log:\n{text}")
                }
            }
        }
    }

    fn spawn(program: &str, target: SocketAddr, job: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("mirror-testkit-prometheus-")
            .tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let log = dir.path().join("prometheus.log");
        let addr = free_port()?;
        let mut command = ChildServer::command(&log);
        command
            .arg(program)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir.path());
        let server = ChildServer::spawn(command, log, program)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .no_proxy()
            .build()?;
        Ok(Self {
            addr,
            client,
            server,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything Prometheus logged so far.
    pub fn log_text(&self) -> String {
        self.server.log_text()
    }

    /// An instant query: each series' labels and value, as Prometheus
    /// answers `GET /api/v1/query`.
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<(Value, f64)>> {
        let url = format!("{}/api/v1/query", self.endpoint());
        let answer: Value = self
            .client
            .get(&url)
            .query(&[("query", promql)])
            .send()
            .await
            .with_context(|| format!("GET {url}?query={promql}"))?
            .error_for_status()?
            .json()
            .await?;
        if answer["status"] != "success" {
            bail!("{promql}: Prometheus answered {answer}");
        }
        let Some(series) = answer["data"]["result"].as_array() else {
            bail!("{promql}: no result vector in {answer}");
        };
        series
            .iter()
            .map(|s| {
                let value = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("{promql}: no value in {s}"))?;
                Ok((s["metric"].clone(), value))
            })
            .collect()
    }

    /// The value of a query that names one series, if Prometheus has it.
    pub async fn value(&self, promql: &str) -> anyhow::Result<Option<f64>> {
        let series = self.query(promql).await?;
        match series.as_slice() {
            [] => Ok(None),
            [(_, value)] => Ok(Some(*value)),
            more => bail!("{promql}: {} series, expected one: {more:?}", more.len()),
        }
    }
}
