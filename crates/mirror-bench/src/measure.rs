//! Measuring one run: the tool under `/usr/bin/time` (wall, CPU, peak RSS),
//! the requests each registry received, and the medians over runs.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use mirror_testkit::{EcrStandIn, Proxy, Registry};

use crate::TIME;
use crate::args::{Profile, Scenario, Tool};
use crate::report::summary;

/// Requests per HTTP method.
pub(crate) type Counts = BTreeMap<String, f64>;

pub(crate) const METHODS: [&str; 5] = ["HEAD", "GET", "PUT", "POST", "PATCH"];

/// One run of one tool.
#[derive(Debug, Clone, Default)]
pub(crate) struct Measurement {
    pub(crate) wall: f64,
    pub(crate) cpu: f64,
    pub(crate) rss_mib: f64,
    /// Blob bytes the run had to move (0 for a warm run).
    pub(crate) bytes: f64,
    pub(crate) src: Counts,
    pub(crate) dst: Counts,
    /// AWS API calls the tool made (moto's recording; ECR profile only), by
    /// operation. Not in the request counts.
    pub(crate) aws: Counts,
}

impl Measurement {
    pub(crate) fn total(counts: &Counts) -> f64 {
        counts.values().fold(0.0, |a, b| a + b)
    }

    pub(crate) fn all_counts(&self) -> Counts {
        let mut all = self.src.clone();
        for (method, n) in &self.dst {
            *all.entry(method.clone()).or_default() += n;
        }
        all
    }

    pub(crate) fn requests(&self) -> f64 {
        Self::total(&self.src) + Self::total(&self.dst)
    }

    /// MB/s of blob bytes over the wall time; `None` when nothing moved.
    pub(crate) fn throughput(&self) -> Option<f64> {
        (self.bytes > 0.0 && self.wall > 0.0).then(|| self.bytes / 1e6 / self.wall)
    }
}

pub(crate) type Key = (Profile, Scenario, Tool);

#[derive(Default)]
pub(crate) struct Results {
    pub(crate) runs: BTreeMap<Key, Vec<Measurement>>,
    pub(crate) failures: Vec<String>,
}

impl Results {
    pub(crate) fn fail(&mut self, what: String) {
        eprintln!("FAILED: {what}");
        self.failures.push(what);
    }

    /// Keeps the measurement of one run, or its failure; whether it worked.
    pub(crate) fn record(
        &mut self,
        key: Key,
        label: &str,
        outcome: anyhow::Result<Measurement>,
    ) -> bool {
        match outcome {
            Ok(m) => {
                eprintln!("{label}: {}", summary(&m));
                self.runs.entry(key).or_default().push(m);
                true
            }
            Err(e) => {
                self.fail(format!("{label}: {e:#}"));
                false
            }
        }
    }
}

/// How the requests a registry receives are counted.
pub(crate) enum Counter<'a> {
    Proxy(&'a Proxy),
    /// The ECR stand-in's gate (its 401 handshakes included).
    Gate(&'a EcrStandIn),
    /// The registry's access log, from a byte offset on.
    AccessLog(&'a Registry, usize),
}

/// A registry as a tool sees it: the host:port it is given, whether it is
/// reached over HTTPS (trusting the bench's CA), and how its requests are
/// counted.
pub(crate) struct Endpoint<'a> {
    pub(crate) host: String,
    pub(crate) tls: bool,
    pub(crate) counter: Counter<'a>,
}

impl<'a> Endpoint<'a> {
    /// A plain-HTTP registry behind a recording proxy.
    pub(crate) fn proxied(proxy: &'a Proxy) -> Self {
        Self {
            host: proxy.host(),
            tls: false,
            counter: Counter::Proxy(proxy),
        }
    }

    /// A registry reached directly (HTTPS, or across the WAN link), its
    /// requests counted from its access log.
    pub(crate) fn logged(registry: &'a Registry) -> Self {
        Self {
            host: registry.host(),
            tls: registry.scheme() == "https",
            counter: Counter::AccessLog(registry, 0),
        }
    }

    pub(crate) fn reset(&mut self) {
        match &mut self.counter {
            Counter::Proxy(proxy) => proxy.clear_requests(),
            Counter::Gate(gate) => gate.clear_requests(),
            Counter::AccessLog(registry, from) => *from = registry.log_text().len(),
        }
    }

    /// The access log lines since the last reset; none for a registry
    /// counted by a proxy or the gate.
    pub(crate) fn log_lines(&self) -> Vec<String> {
        match &self.counter {
            Counter::AccessLog(registry, from) => registry
                .log_text()
                .get(*from..)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect(),
            Counter::Proxy(_) | Counter::Gate(_) => Vec::new(),
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        let mut counts = Counts::new();
        match &self.counter {
            Counter::Proxy(proxy) => {
                for request in proxy.requests() {
                    *counts.entry(request.method).or_default() += 1.0;
                }
            }
            Counter::Gate(gate) => {
                for request in gate.requests() {
                    *counts.entry(request.method).or_default() += 1.0;
                }
            }
            Counter::AccessLog(registry, from) => {
                let log = registry.log_text();
                for method in log
                    .get(*from..)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(access_log_method)
                {
                    *counts.entry(method.to_owned()).or_default() += 1.0;
                }
            }
        }
        counts
    }
}

/// The method of a combined-format access log line
/// (`10.213.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 ...`); `None` for the
/// registry's other (logrus) lines.
pub(crate) fn access_log_method(line: &str) -> Option<&str> {
    let (client, _) = line.split_once(' ')?;
    client.parse::<std::net::IpAddr>().ok()?;
    let (_, request) = line.split_once("] \"")?;
    let (method, rest) = request.split_once(' ')?;
    rest.starts_with('/').then_some(method)
}

pub(crate) fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The median of each number on its own.
pub(crate) fn median(runs: &[Measurement]) -> Measurement {
    let counts = |pick: fn(&Measurement) -> &Counts| {
        let mut methods: Vec<String> = runs.iter().flat_map(|m| pick(m).keys().cloned()).collect();
        methods.sort();
        methods.dedup();
        methods
            .into_iter()
            .map(|method| {
                let values = runs
                    .iter()
                    .map(|m| pick(m).get(&method).copied().unwrap_or_default())
                    .collect();
                (method, median_of(values))
            })
            .collect()
    };
    Measurement {
        wall: median_of(runs.iter().map(|m| m.wall).collect()),
        cpu: median_of(runs.iter().map(|m| m.cpu).collect()),
        rss_mib: median_of(runs.iter().map(|m| m.rss_mib).collect()),
        bytes: median_of(runs.iter().map(|m| m.bytes).collect()),
        src: counts(|m| &m.src),
        dst: counts(|m| &m.dst),
        aws: counts(|m| &m.aws),
    }
}

/// What `/usr/bin/time` and our clock saw of one run.
pub(crate) struct Usage {
    pub(crate) wall: f64,
    pub(crate) cpu: f64,
    pub(crate) rss_kib: f64,
}

/// Runs `command` under `/usr/bin/time` in its own process group, killing
/// the group after `timeout`. Output goes to files in `workdir`; a failure
/// carries the end of stderr.
pub(crate) async fn run_timed(
    command: &[OsString],
    envs: &[(String, String)],
    workdir: &Path,
    timeout: Duration,
) -> anyhow::Result<Usage> {
    let time_file = workdir.join("time.txt");
    let stdout_file = workdir.join("stdout.txt");
    let stderr_file = workdir.join("stderr.txt");
    let _ = std::fs::remove_file(&time_file);
    let shown = command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = tokio::process::Command::new(TIME)
        .arg("-f")
        .arg("%e %U %S %M")
        .arg("-o")
        .arg(&time_file)
        .args(command)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_file)?)
        .stderr(std::fs::File::create(&stderr_file)?)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let started = Instant::now();
    // Kills the tool too (not only /usr/bin/time) on timeout or when this
    // future is dropped (Ctrl-C).
    let mut group = KillGroup(child.id());
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status?,
        Err(_) => {
            drop(group);
            let _ = child.wait().await;
            bail!("{shown}: killed after {timeout:?}");
        }
    };
    group.0 = None;
    let wall = started.elapsed().as_secs_f64();
    if !status.success() {
        let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{shown}: {status}\n{}", tail.join("\n"));
    }
    let text = std::fs::read_to_string(&time_file)
        .with_context(|| format!("reading {}", time_file.display()))?;
    let fields: Vec<f64> = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {TIME} output {text:?}"))?;
    let [_elapsed, user, sys, rss_kib] = fields[..] else {
        bail!("unexpected {TIME} output {text:?}");
    };
    Ok(Usage {
        wall,
        cpu: user + sys,
        rss_kib,
    })
}

/// Kills a process group when dropped, unless emptied first.
pub(crate) struct KillGroup(Option<u32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines_give_their_method() {
        assert_eq!(
            access_log_method(
                r#"10.213.0.1 - - [28/Nov/2025:10:00:00 +0000] "HEAD /v2/python/blobs/sha256:ab HTTP/1.1" 200 0 "" "skopeo""#
            ),
            Some("HEAD")
        );
        assert_eq!(
            access_log_method(
                r#"time="2025-11-28T10:00:00Z" level=info msg="response completed" http.request.method=GET"#
            ),
            None
        );
    }

    #[test]
    fn medians_take_each_number_on_its_own() {
        let m = |wall: f64, gets: f64| Measurement {
            wall,
            src: Counts::from([("GET".to_owned(), gets)]),
            ..Measurement::default()
        };
        let median = median(&[m(3.0, 10.0), m(1.0, 30.0), m(2.0, 20.0)]);
        assert_eq!(median.wall, 2.0);
        assert_eq!(median.src.get("GET"), Some(&20.0));
        assert_eq!(median_of(vec![1.0, 2.0, 3.0, 4.0]), 2.5);
    }
}
