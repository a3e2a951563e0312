//! Requests that outlive the call that made them and should still reach the
//! registry before the process exits: the cancellation of an upload session
//! whose transfer was dropped mid-way (its image failed, so nothing awaits it
//! any more). They run on tasks of their own; [`settle`] waits for them.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use tokio_util::task::TaskTracker;

static TASKS: LazyLock<TaskTracker> = LazyLock::new(TaskTracker::new);

/// Starts `work` on `runtime`, tracked until it ends.
pub(crate) fn spawn(
    runtime: &tokio::runtime::Handle,
    work: impl Future<Output = ()> + Send + 'static,
) {
    TASKS.spawn_on(work, runtime);
}

/// Waits, at most `limit`, for the requests started so far (and any started
/// while waiting) to end; false when the limit ran out first. For the end of
/// a run, before the process exits and its runtime drops what is unfinished.
pub async fn settle(limit: Duration) -> bool {
    settle_tracker(&TASKS, limit).await
}

/// Waits, at most `limit`, for every task `tracker` holds to end (those
/// spawned while waiting too); false when the limit ran out first.
pub async fn settle_tracker(tracker: &TaskTracker, limit: Duration) -> bool {
    tracker.close();
    let settled = tokio::time::timeout(limit, tracker.wait()).await.is_ok();
    tracker.reopen();
    settled
}
