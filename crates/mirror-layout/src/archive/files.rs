//! The files beside an archive while it is written: `FILE.partial/` (the
//! layout blobs land in), `FILE.tmp` (the next archive) and `FILE.lock`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::LayoutError;
use crate::fsutil::digest_of_blob_name;
use crate::lock::{Held, Mode, hold};

pub(super) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

pub(super) fn partial_path(target: &Path) -> PathBuf {
    with_suffix(target, ".partial")
}

pub(super) fn tmp_path(target: &Path) -> PathBuf {
    with_suffix(target, ".tmp")
}

/// [`LayoutError::ArchiveFull`] for an archive and its partial layout.
pub(super) fn archive_full(archive: &Path, partial: &Path, needed: Option<u64>) -> LayoutError {
    LayoutError::ArchiveFull {
        device: match archive.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        },
        archive: archive.to_owned(),
        partial: partial.to_owned(),
        needed,
    }
}

/// `FILE.lock`: see [`OciArchiveWriter`].
pub(super) fn lock_path(target: &Path) -> PathBuf {
    with_suffix(target, ".lock")
}

/// The archive's lock, in this process and across processes.
pub(super) async fn lock(target: &Path, mode: Mode) -> Result<Held, LayoutError> {
    hold(target, &lock_path(target), mode, target).await
}

/// The complete blobs of the partial layout, by archive name.
pub(super) async fn partial_blobs(root: &Path) -> Result<Vec<(String, PathBuf)>, LayoutError> {
    let mut found = Vec::new();
    for algorithm in ["sha256", "sha512"] {
        let dir = root.join("blobs").join(algorithm);
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(LayoutError::read(&dir, e)),
        };
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| LayoutError::read(&dir, e))?
        {
            let name = format!("blobs/{algorithm}/{}", entry.file_name().to_string_lossy());
            if digest_of_blob_name(&name).is_none() {
                continue;
            }
            // Only what this crate wrote: a verified file renamed into place,
            // never a link (it would put a file from elsewhere in the archive).
            let kind = entry
                .file_type()
                .await
                .map_err(|e| LayoutError::read(&entry.path(), e))?;
            if !kind.is_file() {
                return Err(LayoutError::Refused {
                    path: entry.path(),
                    reason: "is not a regular file; an archive's work directory holds only the \
                             verified blobs mirror wrote"
                        .to_owned(),
                    hint: "remove it (check who put it there), then run the copy again".to_owned(),
                });
            }
            found.push((name, entry.path()));
        }
    }
    Ok(found)
}
