//! A run's numbers in the Prometheus text format: `--metrics-file`, for the
//! node exporter's textfile collector, and `/metrics` of `mirror sync --every
//! --listen` ([`crate::serve`]). Every value describes the last run (gauges),
//! except `mirror_sync_last_success_timestamp_seconds`, which a failed run
//! carries over (from the file it replaces, or the daemon's memory) so that
//! an alert on its age keeps working, and the daemon's
//! `mirror_sync_rounds_total` counters.
//!
//! Encoded with `prometheus-client`, the Prometheus project's Rust client.

use std::path::Path;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::report::state_of;
use crate::run::{Outcome, RunReport};

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

const LAST_SUCCESS: &str = "mirror_sync_last_success_timestamp_seconds";

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The text for `report`, finished at `now` (seconds since the epoch);
/// `previous` is the file this run replaces, if any.
pub fn prometheus_text(report: &RunReport, now: f64, previous: Option<&str>) -> String {
    let last_success = if report.failed() == 0 {
        Some(now)
    } else {
        previous.and_then(previous_success)
    };
    render(Some(report), Some(now), last_success, None)
}

/// Rounds of a daemon (`mirror sync --every`) so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rounds {
    /// Rounds that ended with nothing failed.
    pub succeeded: u64,
    /// Rounds with a failed tag or log group, or whose file could not be read.
    pub failed: u64,
}

/// The daemon's text: the last round's `report` (none when no round has
/// run, or the last one could not read its file), when it ended, the last
/// round that ended with nothing failed, and the rounds so far.
pub fn daemon_text(
    report: Option<&RunReport>,
    ended: Option<f64>,
    last_success: Option<f64>,
    rounds: Rounds,
) -> String {
    render(report, ended, last_success, Some(rounds))
}

fn render(
    report: Option<&RunReport>,
    ended: Option<f64>,
    last_success: Option<f64>,
    rounds: Option<Rounds>,
) -> String {
    let mut registry = Registry::with_prefix("mirror_sync");
    if let Some(rounds) = rounds {
        let family = Family::<Labels, Counter>::default();
        registry.register(
            "rounds",
            "Rounds of this daemon, by result (succeeded: nothing failed)",
            family.clone(),
        );
        family
            .get_or_create(&labels(&[("result", "succeeded")]))
            .inc_by(rounds.succeeded);
        family
            .get_or_create(&labels(&[("result", "failed")]))
            .inc_by(rounds.failed);
    }
    if let Some(report) = report {
        register_report(&mut registry, report);
    }
    if let Some(at) = ended {
        let finished = FloatGauge::default();
        registry.register(
            "last_run_timestamp_seconds",
            "When the last run ended",
            finished.clone(),
        );
        finished.set(at);
    }
    if let Some(at) = last_success {
        let last = FloatGauge::default();
        registry.register(
            "last_success_timestamp_seconds",
            "When a run last ended with nothing failed",
            last.clone(),
        );
        last.set(at);
    }
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

fn register_report(registry: &mut Registry, report: &RunReport) {
    let tags = Family::<Labels, Gauge>::default();
    registry.register(
        "tags",
        "Selected tags of the last run, by outcome",
        tags.clone(),
    );
    for tag in &report.tags {
        tags.get_or_create(&labels(&[("state", state_of(&tag.outcome))]))
            .inc();
    }

    let blobs = Family::<Labels, Gauge>::default();
    registry.register(
        "blobs",
        "Blobs of the last run: copied, skipped (already there), mounted",
        blobs.clone(),
    );
    let bytes = Family::<Labels, Gauge>::default();
    registry.register(
        "blob_bytes",
        "Blob bytes of the last run: copied (streamed) and mounted (not moved)",
        bytes.clone(),
    );
    let (mut copied, mut skipped, mut mounted, mut bytes_copied, mut bytes_mounted) =
        (0, 0, 0, 0, 0);
    let mut retries = 0;
    for tag in &report.tags {
        if let Outcome::Copied(copy) | Outcome::UpToDate(copy) = &tag.outcome {
            copied += copy.blobs.copied;
            skipped += copy.blobs.skipped;
            mounted += copy.blobs.mounted;
            bytes_copied += copy.bytes;
            bytes_mounted += copy.bytes_mounted;
            retries += copy.retries;
        }
    }
    for (outcome, n) in [
        ("copied", copied),
        ("skipped", skipped),
        ("mounted", mounted),
    ] {
        blobs
            .get_or_create(&labels(&[("outcome", outcome)]))
            .set(saturating(n));
    }
    for (outcome, n) in [("copied", bytes_copied), ("mounted", bytes_mounted)] {
        bytes
            .get_or_create(&labels(&[("outcome", outcome)]))
            .set(saturating(n));
    }

    let requests = Family::<Labels, Gauge>::default();
    registry.register(
        "requests",
        "HTTP answers of the last run, by host and status class (429 also on its own; error: no answer)",
        requests.clone(),
    );
    for answers in &report.answers {
        requests
            .get_or_create(&labels(&[
                ("host", &answers.host),
                ("class", answers.class),
            ]))
            .set(saturating(answers.count));
    }
    let retried = Gauge::<i64>::default();
    registry.register(
        "retries",
        "Requests and blob transfers started over in the last run",
        retried.clone(),
    );
    retried.set(saturating(retries + report.requests.retries));

    let pulls = Family::<Labels, Gauge>::default();
    registry.register(
        "source_pulls",
        "Manifest GETs (pulls, for Docker Hub) sent to each source host in the last run",
        pulls.clone(),
    );
    for spent in &report.pulls {
        pulls
            .get_or_create(&labels(&[("host", &spent.host)]))
            .set(saturating(spent.spent));
    }

    let groups = Family::<Labels, Gauge>::default();
    registry.register(
        "log_groups",
        "Log groups the last run ensured, by outcome",
        groups.clone(),
    );
    for group in &report.log_groups {
        let outcome = if group.outcome.is_ok() {
            "ensured"
        } else {
            "failed"
        };
        groups.get_or_create(&labels(&[("outcome", outcome)])).inc();
    }

    let duration = FloatGauge::default();
    registry.register(
        "round_duration_seconds",
        "Wall time of the last run",
        duration.clone(),
    );
    duration.set(report.seconds);
}

/// `mirror_sync_last_success_timestamp_seconds` of an earlier file.
pub fn previous_success(text: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(LAST_SUCCESS)?.trim().parse().ok())
}

fn saturating(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Writes `text` to `path` atomically (a temporary file beside it, then a
/// rename), so that a collector never reads half a file.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "metrics".to_owned());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_keeps_the_last_success() {
        let before = "# TYPE mirror_sync_last_success_timestamp_seconds gauge\nmirror_sync_last_success_timestamp_seconds 1700000000.5\n";
        assert_eq!(previous_success(before), Some(1_700_000_000.5));
        assert_eq!(previous_success("# EOF\n"), None);
    }

    #[test]
    fn written_atomically_beside_the_target() {
        let dir = std::env::temp_dir().join(format!("mirror-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mirror.prom");
        write_atomically(&path, "a 1\n").unwrap();
        write_atomically(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "a temporary file was left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
