//! Locks that serialise writers of one layout or archive: in this process
//! ([`path_lock`]) and across processes (an advisory `flock(2)` on a lock
//! file, through std's `File::try_lock` family).
//!
//! Lock files are created on demand (never through a symbolic link planted
//! at their path) and removed by the last holder on release, so nothing
//! stays behind once writers are done. Removal is safe because a
//! process that obtains a lock checks that its file is still the one linked at
//! the path, and otherwise tries again on the new file.
//!
//! Locks are polled (`try_lock` with a backoff on the async runtime) rather
//! than awaited on the blocking pool: a dropped future leaves no thread behind
//! that would still wait for, and then take, the lock.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard};

use crate::error::LayoutError;
use crate::fsutil::{is_link, no_follow, path_lock, planted_link};

/// The first wait between two attempts; it doubles up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(5);
const MAX_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Many holders at once (writers that add to a shared staging area).
    Shared,
    /// One holder (read-modify-write of the state every writer shares).
    Exclusive,
}

/// Both locks on one target, released (in-process last) when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    _file: FileLock,
    _read: Option<OwnedRwLockReadGuard<()>>,
    _write: Option<OwnedRwLockWriteGuard<()>>,
}

/// Takes the in-process lock on `key`, then the advisory lock on `lock_file`
/// (its directory is created if missing). `what` is the file or directory
/// written, for the message shown while another process holds the lock.
pub(crate) async fn hold(
    key: &Path,
    lock_file: &Path,
    mode: Mode,
    what: &Path,
) -> Result<Held, LayoutError> {
    let local = path_lock(key);
    let (read, write) = match mode {
        Mode::Shared => (Some(local.read_owned().await), None),
        Mode::Exclusive => (None, Some(local.write_owned().await)),
    };
    let file = FileLock::acquire(lock_file, mode, what).await?;
    Ok(Held {
        _file: file,
        _read: read,
        _write: write,
    })
}

/// An advisory lock on a lock file; `None` where the file system has no locks.
#[derive(Debug)]
pub(crate) struct FileLock {
    held: Option<(File, PathBuf, Mode)>,
}

impl FileLock {
    pub(crate) async fn acquire(path: &Path, mode: Mode, what: &Path) -> Result<Self, LayoutError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| LayoutError::io("creating", dir, e))?;
        }
        let mut waiting: Option<Waiting> = None;
        let mut delay = FIRST_POLL;
        loop {
            // Opened afresh on every attempt: the holder may remove the file.
            // Never through a link: a dangling one planted at the path would
            // have the open create its target.
            let file = no_follow(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false),
            )
            .open(path)
            .map_err(|e| {
                if is_link(&e) {
                    planted_link(path, "a lock file")
                } else {
                    LayoutError::io("opening the lock file", path, e)
                }
            })?;
            let attempt = match mode {
                Mode::Shared => file.try_lock_shared(),
                Mode::Exclusive => file.try_lock(),
            };
            match attempt {
                Ok(()) if is_linked(&file, path) => {
                    return Ok(Self {
                        held: Some((file, path.to_owned(), mode)),
                    });
                }
                // Its last holder removed it before we locked it: again, on
                // the file now at the path.
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    drop(file);
                    if waiting.is_none() {
                        waiting = Some(Waiting::start(path, what));
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_POLL);
                }
                Err(TryLockError::Error(e)) if unsupported(&e) => {
                    static WARNED: AtomicBool = AtomicBool::new(false);
                    if !WARNED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "{}: this file system does not support file locks ({e}); another \
                             mirror writing {} at the same time could lose an image",
                            path.display(),
                            what.display()
                        );
                    }
                    return Ok(Self { held: None });
                }
                Err(TryLockError::Error(e)) => {
                    return Err(LayoutError::io("locking", path, e));
                }
            }
        }
    }
}

impl Drop for FileLock {
    /// Removes the lock file if no one else holds it (a shared holder finds
    /// out by trying to take it exclusively), then unlocks by closing it.
    fn drop(&mut self) {
        if let Some((file, path, mode)) = self.held.take() {
            let alone = mode == Mode::Exclusive || file.try_lock().is_ok();
            if alone && is_linked(&file, &path) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Whether `file` is (still) the file at `path`.
fn is_linked(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let (Ok(open), linked) = (file.metadata(), std::fs::metadata(path)) else {
        // Cannot tell: the lock held is still a lock.
        return true;
    };
    match linked {
        Ok(linked) => open.dev() == linked.dev() && open.ino() == linked.ino(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => true,
    }
}

/// `flock` refused by the file system (some FUSE and network file systems).
fn unsupported(error: &std::io::Error) -> bool {
    // ENOLCK, ENOSYS, EOPNOTSUPP (Linux).
    error.kind() == std::io::ErrorKind::Unsupported
        || matches!(error.raw_os_error(), Some(37 | 38 | 95))
}

/// Tasks of this process waiting for a lock file: the first one says so.
struct Waiting {
    key: PathBuf,
}

fn waiters() -> std::sync::MutexGuard<'static, HashMap<PathBuf, usize>> {
    static WAITERS: OnceLock<Mutex<HashMap<PathBuf, usize>>> = OnceLock::new();
    WAITERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Waiting {
    fn start(lock_file: &Path, what: &Path) -> Self {
        let mut waiters = waiters();
        let count = waiters.entry(lock_file.to_owned()).or_insert(0);
        if *count == 0 {
            tracing::info!(
                "waiting for another mirror writing {} (lock file {})",
                what.display(),
                lock_file.display()
            );
        }
        *count += 1;
        Self {
            key: lock_file.to_owned(),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut waiters = waiters();
        if let Some(count) = waiters.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                waiters.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the task is still pending after a while.
    async fn still_waiting<T>(handle: &tokio::task::JoinHandle<T>) -> bool {
        tokio::time::sleep(Duration::from_millis(150)).await;
        !handle.is_finished()
    }

    #[tokio::test]
    async fn exclusive_waits_for_every_other_holder_and_the_file_goes_with_the_last() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("sub/x.lock");
        let what = dir.path().join("x");
        let first = FileLock::acquire(&path, Mode::Shared, &what)
            .await
            .expect("a shared lock");
        let second = FileLock::acquire(&path, Mode::Shared, &what)
            .await
            .expect("a shared lock");
        assert!(path.exists());

        let (p, w) = (path.clone(), what.clone());
        let writer = tokio::spawn(async move {
            FileLock::acquire(&p, Mode::Exclusive, &w)
                .await
                .expect("an exclusive lock")
        });
        assert!(still_waiting(&writer).await, "exclusive beside shared");
        drop(first);
        assert!(path.exists(), "removed while another holder had it");
        assert!(still_waiting(&writer).await, "exclusive beside shared");
        drop(second);
        let writer_lock = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the writer got the lock")
            .expect("the writer task");

        let (p, w) = (path.clone(), what.clone());
        let reader = tokio::spawn(async move {
            FileLock::acquire(&p, Mode::Shared, &w)
                .await
                .expect("a shared lock")
        });
        assert!(still_waiting(&reader).await, "shared beside exclusive");
        drop(writer_lock);
        let reader_lock = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the reader got the lock")
            .expect("the reader task");
        drop(reader_lock);
        assert!(!path.exists(), "the last holder leaves no lock file");
    }

    #[tokio::test]
    async fn a_removed_lock_file_is_not_trusted() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("x.lock");
        let what = dir.path().join("x");
        // A file opened before its holder removed it: locking it must not
        // count, and the next attempt locks the file at the path.
        let stale = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .expect("create the lock file");
        std::fs::remove_file(&path).expect("remove the lock file");
        stale.try_lock().expect("lock the removed file");
        assert!(!is_linked(&stale, &path));
        let lock = FileLock::acquire(&path, Mode::Exclusive, &what)
            .await
            .expect("an exclusive lock");
        let (file, _, _) = lock.held.as_ref().expect("a lock file");
        assert!(is_linked(file, &path));
    }

    #[tokio::test]
    async fn both_locks_serialise_holders_in_this_process() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let key = dir.path().join("target");
        let file = dir.path().join("target.lock");
        let first = hold(&key, &file, Mode::Exclusive, &key)
            .await
            .expect("the first lock");
        let (k, f) = (key.clone(), file.clone());
        let second = tokio::spawn(async move {
            hold(&k, &f, Mode::Exclusive, &k)
                .await
                .expect("the second lock")
        });
        assert!(still_waiting(&second).await);
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second holder got the lock")
            .expect("the second task");
        assert!(!file.exists());
    }
}
