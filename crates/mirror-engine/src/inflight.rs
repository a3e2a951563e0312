//! Run-wide tables of shared work: a blob transfer, a manifest fetch or an
//! image push wanted by several copies of one run runs once.
//!
//! Work belongs to no copy in particular. Every copy that wants it holds a
//! [`Claim`]; the work runs on its own task while any claim is held and is
//! aborted when the last one goes, so one image's failure (which drops its
//! claims) never cancels work another image still waits for. Failures leave
//! the table at once, so the next copy that wants the same key tries again;
//! successes stay when the table remembers them (a blob already copied is not
//! copied again in this run).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio_util::task::TaskTracker;

use crate::error::CopyError;

/// Every task of shared work, so that the end of a run can wait for the ones
/// it aborted to be dropped (see [`crate::settle`]).
static WORK: LazyLock<TaskTracker> = LazyLock::new(TaskTracker::new);

/// Waits, at most `limit`, for every task of shared work started so far to
/// end; false when the limit ran out first.
pub(crate) async fn settle_work(limit: std::time::Duration) -> bool {
    mirror_registry::background::settle_tracker(&WORK, limit).await
}

/// What a piece of shared work ends with.
pub(crate) type Outcome<T> = Result<T, Arc<CopyError>>;

type SharedOutcome<T> = Shared<BoxFuture<'static, Outcome<T>>>;

struct Entry<T: Clone> {
    /// Tells this run of the work from a later one under the same key.
    id: u64,
    claims: usize,
    done: bool,
    abort: tokio::task::AbortHandle,
    outcome: SharedOutcome<T>,
}

/// Shared work by key. `remember`: keep successes for the rest of the run
/// (else only work in flight is shared).
pub(crate) struct Table<K, T: Clone> {
    entries: Mutex<HashMap<K, Entry<T>>>,
    next_id: Mutex<u64>,
    remember: bool,
}

impl<K, T> Table<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(remember: bool) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            next_id: Mutex::new(0),
            remember,
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry<T>>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Joins the work under `key`, or starts it (`start` is called only then)
    /// on a task of its own.
    pub(crate) fn claim<F>(self: &Arc<Self>, key: K, start: F) -> Claim<K, T>
    where
        F: FnOnce() -> BoxFuture<'static, Outcome<T>>,
    {
        let mut entries = self.entries();
        if let Some(entry) = entries.get_mut(&key) {
            entry.claims += 1;
            return Claim {
                table: Arc::downgrade(self),
                key,
                id: entry.id,
                outcome: entry.outcome.clone(),
            };
        }
        let id = {
            let mut next = self
                .next_id
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *next += 1;
            *next
        };
        let work = start();
        let table = Arc::downgrade(self);
        let settle_key = key.clone();
        let task = WORK.spawn(async move {
            let outcome = work.await;
            if let Some(table) = table.upgrade() {
                table.settle(&settle_key, id, outcome.is_ok());
            }
            outcome
        });
        let abort = task.abort_handle();
        let outcome = task
            .map(|joined| joined.unwrap_or_else(|_| Err(Arc::new(CopyError::Cancelled))))
            .boxed()
            .shared();
        entries.insert(
            key.clone(),
            Entry {
                id,
                claims: 1,
                done: false,
                abort,
                outcome: outcome.clone(),
            },
        );
        Claim {
            table: Arc::downgrade(self),
            key,
            id,
            outcome,
        }
    }

    /// Joins the work under `key` if there is any (in flight, or a success
    /// remembered); `None` when there is none (never started, failed, or
    /// aborted). Never starts anything: a follower waits on a leader's work
    /// this way without owning it, and keeps it alive while it waits.
    pub(crate) fn join(self: &Arc<Self>, key: &K) -> Option<Claim<K, T>> {
        let mut entries = self.entries();
        let entry = entries.get_mut(key)?;
        entry.claims += 1;
        Some(Claim {
            table: Arc::downgrade(self),
            key: key.clone(),
            id: entry.id,
            outcome: entry.outcome.clone(),
        })
    }

    /// The work finished: a failure is forgotten, a success kept if remembered.
    fn settle(&self, key: &K, id: u64, succeeded: bool) {
        let mut entries = self.entries();
        if entries.get(key).is_some_and(|e| e.id == id) {
            if succeeded && self.remember {
                if let Some(entry) = entries.get_mut(key) {
                    entry.done = true;
                }
            } else {
                entries.remove(key);
            }
        }
    }

    fn add_claim(&self, key: &K, id: u64) {
        if let Some(entry) = self.entries().get_mut(key).filter(|e| e.id == id) {
            entry.claims += 1;
        }
    }

    /// A claim went: work nobody wants any more is aborted and forgotten.
    fn release(&self, key: &K, id: u64) {
        let mut entries = self.entries();
        let Some(entry) = entries.get_mut(key).filter(|e| e.id == id) else {
            return;
        };
        entry.claims = entry.claims.saturating_sub(1);
        if entry.claims == 0 && !entry.done {
            entry.abort.abort();
            entries.remove(key);
        }
    }
}

/// A copy's hold on shared work; the work lives while any claim does.
pub(crate) struct Claim<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    table: Weak<Table<K, T>>,
    key: K,
    id: u64,
    outcome: SharedOutcome<T>,
}

impl<K, T> Claim<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// Waits for the work to end.
    pub(crate) async fn outcome(&self) -> Outcome<T> {
        self.outcome.clone().await
    }
}

impl<K, T> Clone for Claim<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    fn clone(&self) -> Self {
        if let Some(table) = self.table.upgrade() {
            table.add_claim(&self.key, self.id);
        }
        Self {
            table: self.table.clone(),
            key: self.key.clone(),
            id: self.id,
            outcome: self.outcome.clone(),
        }
    }
}

impl<K, T> Drop for Claim<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        if let Some(table) = self.table.upgrade() {
            table.release(&self.key, self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn counted(runs: &Arc<AtomicUsize>, result: Outcome<u32>) -> BoxFuture<'static, Outcome<u32>> {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            result
        }
        .boxed()
    }

    #[tokio::test]
    async fn claims_of_one_key_share_one_run_and_a_success_is_remembered() {
        let table = Table::<&str, u32>::new(true);
        let runs = Arc::new(AtomicUsize::new(0));
        let a = table.claim("k", || counted(&runs, Ok(7)));
        let b = table.claim("k", || counted(&runs, Ok(8)));
        assert_eq!(a.outcome().await.ok(), Some(7));
        assert_eq!(b.outcome().await.ok(), Some(7));
        drop((a, b));
        let c = table.claim("k", || counted(&runs, Ok(9)));
        assert_eq!(c.outcome().await.ok(), Some(7));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn join_finds_work_in_flight_or_remembered_and_never_starts_any() {
        let table = Table::<&str, u32>::new(true);
        let runs = Arc::new(AtomicUsize::new(0));
        assert!(table.join(&"k").is_none(), "nothing to join");
        let first = table.claim("k", || counted(&runs, Ok(3)));
        let joined = table.join(&"k").expect("in flight");
        drop(first);
        assert_eq!(
            joined.outcome().await.ok(),
            Some(3),
            "the join kept it alive"
        );
        drop(joined);
        let again = table.join(&"k").expect("remembered");
        assert_eq!(again.outcome().await.ok(), Some(3));
        let failed = table.claim("f", || counted(&runs, Err(Arc::new(CopyError::Cancelled))));
        assert!(failed.outcome().await.is_err());
        assert!(table.join(&"f").is_none(), "a failure is forgotten");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failure_is_forgotten() {
        let table = Table::<&str, u32>::new(true);
        let runs = Arc::new(AtomicUsize::new(0));
        let failed = table.claim("k", || counted(&runs, Err(Arc::new(CopyError::Cancelled))));
        assert!(failed.outcome().await.is_err());
        let retried = table.claim("k", || counted(&runs, Ok(1)));
        assert_eq!(retried.outcome().await.ok(), Some(1));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn work_is_aborted_when_its_last_claim_goes_and_not_before() {
        let table = Table::<&str, u32>::new(false);
        let finished = Arc::new(AtomicUsize::new(0));
        let slow = |finished: &Arc<AtomicUsize>| {
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Ok(1)
            }
            .boxed()
        };
        let first = table.claim("kept", || slow(&finished));
        let second = first.clone();
        drop(first);
        assert_eq!(
            second.outcome().await.ok(),
            Some(1),
            "one claim keeps it alive"
        );
        let lone = table.claim("dropped", || slow(&finished));
        drop(lone);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "the unclaimed work was aborted"
        );
        assert!(table.entries().is_empty());
    }
}
