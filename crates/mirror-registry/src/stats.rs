//! Counts of requests and retries, for the report and the benchmark.

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
