//! Cross-repository mounts within one run: the first repository of a
//! destination registry that needs a blob transfers it (the leader); every
//! other repository there that needs the same digest mounts it from the
//! leader instead of moving the bytes again.
//!
//! Leaders are recorded by (registry host, digest) with the key of their
//! shared transfer, never with a claim on it: a follower joins the leader's
//! work only while it waits, so work nobody wants is still aborted. A leader
//! that failed or went leaves nothing to join, and the follower transfers
//! the blob itself (and leads from then on).
//!
//! Where the registry mounts only blobs of committed manifests (ECR), a
//! follower also waits for an image manifest referencing the blob to be
//! pushed in the leader's repository. Each copy that could push one holds a
//! [`CommitGuard`]; when the last goes without a push, waiting ends in
//! "failed". Waits go one way only, to leaders whose repository was first
//! seen earlier in the run, so two images that lead each other's blobs never
//! wait for each other's manifests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mirror_oci::Digest;
use tokio::sync::{OnceCell, watch};

use crate::endpoint::{Destination, MountOrigin, MountSetting};

/// Shared work is keyed by an endpoint's name and a digest.
pub(crate) type Key = (String, Digest);

/// The first repository of a registry to claim a blob in this run.
#[derive(Debug, Clone)]
pub(crate) struct Leader {
    /// Where followers mount from.
    pub origin: MountOrigin,
    /// The leader's transfer in the run-wide blob table.
    pub key: Key,
    /// When the leader's repository was first seen in the run.
    pub order: u64,
}

/// Whether a manifest referencing a blob is committed in a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    Pending,
    Committed,
    /// Every copy that could have pushed one is done without it.
    Failed,
}

struct CommitSlot {
    state: watch::Sender<Commit>,
    guards: usize,
}

/// What mounting would have saved at a registry whose account has it off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountNote {
    /// The registry host.
    pub host: String,
    /// Why mounts are off there.
    pub reason: String,
    /// How to turn them on, if anything can.
    pub fix: Option<String>,
    /// Blob transfers a mount would have replaced, and their bytes.
    pub blobs: u64,
    pub bytes: u64,
}

impl std::fmt::Display for MountNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cross-repository mounts are off at {} ({}): {} blob{} ({} bytes) crossed the wire again that mounts would have saved",
            self.host,
            self.reason,
            self.blobs,
            if self.blobs == 1 { "" } else { "s" },
            self.bytes
        )?;
        if let Some(fix) = &self.fix {
            write!(f, "; {fix}")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Missed {
    blobs: u64,
    bytes: u64,
}

/// The run-wide mount registry.
#[derive(Default)]
pub(crate) struct Mounts {
    leaders: Mutex<HashMap<(String, Digest), Leader>>,
    /// Destination repositories (by endpoint name) in the order first seen.
    order: Mutex<HashMap<String, u64>>,
    /// The account setting per registry host, read once.
    settings: Mutex<HashMap<String, Arc<OnceCell<MountSetting>>>>,
    commits: Mutex<HashMap<Key, CommitSlot>>,
    /// Per host: transfers a mount would have replaced, had it been on.
    missed: Mutex<HashMap<String, Missed>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Mounts {
    /// The order in which the run first saw this destination repository.
    pub(crate) fn order_of(&self, repository: &str) -> u64 {
        let mut order = lock(&self.order);
        let next = order.len() as u64;
        *order.entry(repository.to_owned()).or_insert(next)
    }

    /// Records `candidate` as the leader of its digest at its host unless
    /// another repository leads already: then that leader is returned.
    pub(crate) fn lead_or_follow(&self, digest: &Digest, candidate: Leader) -> Option<Leader> {
        let mut leaders = lock(&self.leaders);
        let slot = (candidate.origin.host.clone(), digest.clone());
        match leaders.get(&slot) {
            Some(leader) if leader.key != candidate.key => Some(leader.clone()),
            Some(_) => None,
            None => {
                leaders.insert(slot, candidate);
                None
            }
        }
    }

    /// A follower whose leader failed leads from now on (unless another
    /// follower took over first).
    pub(crate) fn take_over(&self, digest: &Digest, failed: &Leader, successor: Leader) {
        let mut leaders = lock(&self.leaders);
        let slot = (successor.origin.host.clone(), digest.clone());
        if leaders.get(&slot).is_some_and(|l| l.key == failed.key) {
            leaders.insert(slot, successor);
        }
    }

    /// The registry's mount setting, asked once per run and host.
    pub(crate) async fn setting(&self, host: &str, destination: &dyn Destination) -> MountSetting {
        let cell = lock(&self.settings)
            .entry(host.to_owned())
            .or_default()
            .clone();
        cell.get_or_init(|| destination.mount_setting())
            .await
            .clone()
    }

    /// A blob moved again because mounts are off at `host`.
    pub(crate) fn missed(&self, host: &str, bytes: u64) {
        let mut missed = lock(&self.missed);
        let entry = missed.entry(host.to_owned()).or_default();
        entry.blobs += 1;
        entry.bytes += bytes;
    }

    /// One note per registry whose account has mounts off, for the run's end.
    pub(crate) fn notes(&self) -> Vec<MountNote> {
        let settings: Vec<(String, MountSetting)> = lock(&self.settings)
            .iter()
            .filter_map(|(host, cell)| cell.get().map(|s| (host.clone(), s.clone())))
            .collect();
        let missed = lock(&self.missed);
        let mut notes: Vec<MountNote> = settings
            .into_iter()
            .filter_map(|(host, setting)| match setting {
                MountSetting::Enabled => None,
                MountSetting::Disabled { reason, fix } => {
                    let (blobs, bytes) = missed.get(&host).map_or((0, 0), |m| (m.blobs, m.bytes));
                    Some(MountNote {
                        host,
                        reason,
                        fix,
                        blobs,
                        bytes,
                    })
                }
            })
            .collect();
        notes.sort_by(|a, b| a.host.cmp(&b.host));
        notes
    }

    /// A copy that may push image manifests referencing these blobs in
    /// `repository`: until the guard goes, a follower waiting for such a
    /// manifest keeps waiting.
    pub(crate) fn could_commit(
        self: &Arc<Self>,
        repository: &str,
        blobs: impl IntoIterator<Item = Digest>,
    ) -> CommitGuard {
        let mut commits = lock(&self.commits);
        let mut keys = Vec::new();
        for digest in blobs {
            let key = (repository.to_owned(), digest);
            let slot = commits.entry(key.clone()).or_insert_with(|| CommitSlot {
                state: watch::Sender::new(Commit::Pending),
                guards: 0,
            });
            if *slot.state.borrow() == Commit::Committed {
                continue;
            }
            if *slot.state.borrow() == Commit::Failed {
                slot.state.send_replace(Commit::Pending);
            }
            slot.guards += 1;
            keys.push(key);
        }
        CommitGuard {
            mounts: Arc::downgrade(self),
            keys,
        }
    }

    /// An image manifest referencing these blobs is now in `repository`.
    pub(crate) fn committed(&self, repository: &str, blobs: impl IntoIterator<Item = Digest>) {
        let mut commits = lock(&self.commits);
        for digest in blobs {
            let slot = commits
                .entry((repository.to_owned(), digest))
                .or_insert_with(|| CommitSlot {
                    state: watch::Sender::new(Commit::Pending),
                    guards: 0,
                });
            slot.state.send_replace(Commit::Committed);
        }
    }

    /// Waits until a manifest referencing the blob is committed in the
    /// repository (`true`) or no copy that could push one is left (`false`).
    pub(crate) async fn wait_committed(&self, key: &Key) -> bool {
        let mut state = {
            let commits = lock(&self.commits);
            let Some(slot) = commits.get(key) else {
                return false;
            };
            slot.state.subscribe()
        };
        matches!(
            state.wait_for(|s| *s != Commit::Pending).await.map(|s| *s),
            Ok(Commit::Committed)
        )
    }

    fn release(&self, keys: &[Key]) {
        let mut commits = lock(&self.commits);
        for key in keys {
            let Some(slot) = commits.get_mut(key) else {
                continue;
            };
            slot.guards = slot.guards.saturating_sub(1);
            if slot.guards == 0 && *slot.state.borrow() == Commit::Pending {
                slot.state.send_replace(Commit::Failed);
            }
        }
    }
}

/// A copy's promise that it may still push manifests referencing some
/// blobs; dropping it (the copy is done, failed or cancelled) ends the
/// waits that only it could have satisfied.
pub(crate) struct CommitGuard {
    mounts: std::sync::Weak<Mounts>,
    keys: Vec<Key>,
}

impl Drop for CommitGuard {
    fn drop(&mut self) {
        if let Some(mounts) = self.mounts.upgrade() {
            mounts.release(&self.keys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        mirror_oci::digest_of(&[n])
    }

    #[tokio::test]
    async fn a_commit_wait_ends_committed_or_failed_when_the_last_guard_goes() {
        let mounts = Arc::new(Mounts::default());
        let key = ("r".to_owned(), digest(1));
        assert!(!mounts.wait_committed(&key).await, "nobody could commit it");
        let first = mounts.could_commit("r", [digest(1)]);
        let second = mounts.could_commit("r", [digest(1)]);
        let waiter = {
            let mounts = mounts.clone();
            let key = key.clone();
            tokio::spawn(async move { mounts.wait_committed(&key).await })
        };
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one copy could still commit it");
        drop(second);
        assert!(
            !waiter.await.expect("join"),
            "every copy went without a push"
        );

        let guard = mounts.could_commit("r", [digest(1)]);
        let waiter = {
            let mounts = mounts.clone();
            tokio::spawn(async move { mounts.wait_committed(&key).await })
        };
        mounts.committed("r", [digest(1)]);
        assert!(waiter.await.expect("join"));
        drop(guard);
        assert!(
            mounts.wait_committed(&("r".to_owned(), digest(1))).await,
            "a commit stays"
        );
    }

    #[test]
    fn the_first_repository_leads_and_a_successor_takes_over_a_failed_leader() {
        let mounts = Mounts::default();
        let leader = |repository: &str, order| Leader {
            origin: MountOrigin {
                host: "h".to_owned(),
                repository: repository.to_owned(),
            },
            key: (format!("h/{repository}"), digest(2)),
            order,
        };
        assert!(mounts.lead_or_follow(&digest(2), leader("a", 0)).is_none());
        assert!(mounts.lead_or_follow(&digest(2), leader("a", 0)).is_none());
        let found = mounts
            .lead_or_follow(&digest(2), leader("b", 1))
            .expect("a leads");
        assert_eq!(found.origin.repository, "a");
        mounts.take_over(&digest(2), &found, leader("b", 1));
        mounts.take_over(&digest(2), &found, leader("c", 2));
        let now = mounts
            .lead_or_follow(&digest(2), leader("d", 3))
            .expect("b leads");
        assert_eq!(now.origin.repository, "b");
    }
}
