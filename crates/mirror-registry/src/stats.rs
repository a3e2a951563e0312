//! Counts of requests and retries, for the report and the benchmark.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by every request of a run.
#[derive(Debug, Default)]
pub struct RequestStats {
    pub requests: AtomicU64,
    pub head: AtomicU64,
    pub get: AtomicU64,
    pub put: AtomicU64,
    pub post: AtomicU64,
    pub patch: AtomicU64,
    pub token: AtomicU64,
    pub retries: AtomicU64,
    /// Answers by host and status class (`2xx` .. `5xx`, `error` when none came).
    answers: Mutex<BTreeMap<(String, &'static str), u64>>,
}

/// How many answers of one status class one host gave.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostAnswers {
    pub host: String,
    /// `2xx`, `3xx`, `4xx`, `5xx`, `429` (also counted in `4xx`), or `error`
    /// (no answer: connection refused, reset, timed out).
    pub class: &'static str,
    pub count: u64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub head: u64,
    pub get: u64,
    pub put: u64,
    pub post: u64,
    pub patch: u64,
    pub token: u64,
    pub retries: u64,
}

impl RequestStats {
    pub(crate) fn count(&self, method: &http::Method) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let counter = match *method {
            http::Method::HEAD => &self.head,
            http::Method::GET => &self.get,
            http::Method::PUT => &self.put,
            http::Method::POST => &self.post,
            http::Method::PATCH => &self.patch,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one answer (`None`: the request got none) from `host`.
    pub(crate) fn count_answer(&self, host: &str, status: Option<u16>) {
        let class = match status.map(|s| s / 100) {
            Some(2) => "2xx",
            Some(3) => "3xx",
            Some(4) => "4xx",
            Some(5) => "5xx",
            Some(_) => "other",
            None => "error",
        };
        let mut answers = self
            .answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *answers.entry((host.to_owned(), class)).or_default() += 1;
        if status == Some(429) {
            *answers.entry((host.to_owned(), "429")).or_default() += 1;
        }
    }

    /// Answers by host and status class, sorted.
    pub fn answers(&self) -> Vec<HostAnswers> {
        self.answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|((host, class), count)| HostAnswers {
                host: host.clone(),
                class,
                count: *count,
            })
            .collect()
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: load(&self.requests),
            head: load(&self.head),
            get: load(&self.get),
            put: load(&self.put),
            post: load(&self.post),
            patch: load(&self.patch),
            token: load(&self.token),
            retries: load(&self.retries),
        }
    }
}
