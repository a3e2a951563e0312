//! Where a layout's files are: a directory, or entries of a tar read in place.
//! Either way, nothing outside the layout is read: a directory's file reached
//! through a symbolic link out of it is refused like a tar's link entry.
//!
//! A tar is indexed once (entry name -> offset and size of its data) and never
//! extracted: blobs are streamed from their offset through a duplicate of the
//! file handle opened at indexing time, so the index always describes the
//! bytes that are read even if the file is replaced meanwhile.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use mirror_oci::{BlobStream, Digest, StreamError};

use crate::error::LayoutError;
use crate::fsutil::{blob_rel, contained, digest_of_blob_name};

/// Blob reads are 256 KiB at a time.
pub(crate) const READ_CHUNK: usize = 256 * 1024;

/// The data of one tar entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub offset: u64,
    pub size: u64,
}

/// A tar indexed in place.
#[derive(Debug)]
pub(crate) struct TarIndex {
    pub path: PathBuf,
    file: Arc<std::fs::File>,
    /// Regular files by normalised name (`blobs/sha256/<hex>`, `index.json`).
    pub files: HashMap<String, Span>,
    /// Symbolic and hard links outside `blobs/`, by name: their target as
    /// written. Never followed except by the docker-archive reader, and then only
    /// to another entry of the same archive.
    pub links: HashMap<String, (String, bool)>,
    /// (device, inode, length, mtime) when indexed, to notice a replaced file.
    pub identity: FileIdentity,
}

/// Enough of a file's metadata to tell whether it was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileIdentity {
    pub(crate) fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
            len: metadata.len(),
            mtime: metadata.mtime(),
            mtime_nsec: metadata.mtime_nsec(),
        }
    }
}

/// Files a reader opens by name, which must be regular files.
const METADATA_FILES: [&str; 4] = ["oci-layout", "index.json", "manifest.json", "repositories"];

impl TarIndex {
    /// Indexes a tar, refusing entries that could not have come from an OCI
    /// tool or that name things outside the archive (see the crate docs).
    pub(crate) fn open(path: &Path) -> Result<Self, LayoutError> {
        let file = std::fs::File::open(path).map_err(|e| LayoutError::read(path, e))?;
        let metadata = file.metadata().map_err(|e| LayoutError::read(path, e))?;
        if !metadata.is_file() {
            return Err(LayoutError::Refused {
                path: path.to_owned(),
                reason: "is not a file".to_owned(),
                hint: "an archive location names a tar file".to_owned(),
            });
        }
        let length = metadata.len();
        // The clone shares the file offset: fine while indexing, before any
        // reader exists; afterwards every read is positioned.
        let reader = file.try_clone().map_err(|e| LayoutError::read(path, e))?;
        let mut archive = tar::Archive::new(std::io::BufReader::new(reader));
        let malformed = |reason: String| LayoutError::Malformed {
            path: path.to_owned(),
            reason,
        };
        let hostile = |entry: &str, reason: &str| LayoutError::HostileEntry {
            archive: path.to_owned(),
            entry: entry.to_owned(),
            reason: reason.to_owned(),
        };
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        let entries = archive
            .entries_with_seek()
            .map_err(|e| malformed(format!("not a tar archive: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| malformed(format!("not a readable tar archive: {e}")))?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let name = normalise(&raw).map_err(|reason| hostile(&raw, reason))?;
            let kind = entry.header().entry_type();
            let in_blobs = name == "blobs" || name.starts_with("blobs/");
            if kind.is_dir() {
                let allowed = !in_blobs
                    || name == "blobs"
                    || name == "blobs/sha256"
                    || name == "blobs/sha512";
                if !allowed {
                    return Err(hostile(&raw, "unexpected directory inside blobs/"));
                }
                continue;
            }
            if kind.is_pax_global_extensions() {
                continue;
            }
            if kind.is_symlink() || kind.is_hard_link() {
                if in_blobs || METADATA_FILES.contains(&name.as_str()) {
                    return Err(hostile(
                        &raw,
                        if kind.is_symlink() {
                            "a symbolic link where a regular file belongs"
                        } else {
                            "a hard link where a regular file belongs"
                        },
                    ));
                }
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                links.insert(name, (target, kind.is_symlink()));
                continue;
            }
            if !(kind.is_file() || kind.is_contiguous()) {
                return Err(hostile(
                    &raw,
                    &format!("not a regular file (tar entry type {:?})", kind),
                ));
            }
            if in_blobs && digest_of_blob_name(&name).is_none() {
                return Err(hostile(
                    &raw,
                    "not a blob name: expected blobs/sha256/<64 lowercase hex> or blobs/sha512/<128 lowercase hex>",
                ));
            }
            let span = Span {
                offset: entry.raw_file_position(),
                size: entry.size(),
            };
            let end = span.offset.checked_add(span.size);
            if end.is_none_or(|end| end > length) {
                return Err(malformed(format!(
                    "entry `{raw}` ends past the end of the file: the archive is truncated"
                )));
            }
            if files.insert(name, span).is_some() {
                return Err(hostile(&raw, "the same name appears twice"));
            }
        }
        Ok(Self {
            path: path.to_owned(),
            file: Arc::new(file),
            files,
            links,
            identity: FileIdentity::of(&metadata),
        })
    }

    /// Reads a whole entry (small ones: metadata, manifests, configs).
    pub(crate) async fn read(self: &Arc<Self>, span: Span) -> Result<Vec<u8>, LayoutError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut bytes = Vec::with_capacity(usize::try_from(span.size).unwrap_or(0));
            this.blocking_reader(span)
                .read_to_end(&mut bytes)
                .map_err(|e| LayoutError::read(&this.path, e))?;
            if bytes.len() as u64 != span.size {
                return Err(LayoutError::Malformed {
                    path: this.path.clone(),
                    reason: "the archive is truncated".to_owned(),
                });
            }
            Ok(bytes)
        })
        .await
        .map_err(|e| LayoutError::Io {
            context: format!("reading {}", self.path.display()),
            source: std::io::Error::other(e),
        })?
    }

    /// A blocking reader of a span. Reads are positioned (`pread`), so any
    /// number of readers share the one file handle.
    pub(crate) fn blocking_reader(&self, span: Span) -> SpanReader {
        SpanReader {
            file: self.file.clone(),
            offset: span.offset,
            remaining: span.size,
        }
    }

    /// Streams a span in 256 KiB chunks, each read on the blocking pool.
    pub(crate) fn stream(&self, span: Span) -> BlobStream {
        let reader = self.blocking_reader(span);
        futures::stream::try_unfold(reader, |mut reader| async move {
            if reader.remaining == 0 {
                return Ok(None);
            }
            let (reader, chunk) = tokio::task::spawn_blocking(move || {
                let want = usize::try_from(reader.remaining)
                    .unwrap_or(READ_CHUNK)
                    .min(READ_CHUNK);
                let mut buffer = vec![0; want];
                let n = reader.read(&mut buffer)?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the archive ends inside this blob",
                    ));
                }
                buffer.truncate(n);
                Ok((reader, Bytes::from(buffer)))
            })
            .await
            .map_err(std::io::Error::other)??;
            Ok(Some((chunk, reader)))
        })
        .map_err(|e: std::io::Error| StreamError::Source(Box::new(e)))
        .boxed()
    }

    /// A regular file entry, following links (docker-archive only) within the
    /// archive: at most 8 hops, never out of it.
    pub(crate) fn resolve_file(&self, name: &str) -> Option<Span> {
        let mut current = normalise(name).ok()?;
        for _ in 0..8 {
            if let Some(span) = self.files.get(&current) {
                return Some(*span);
            }
            let (target, symbolic) = self.links.get(&current)?;
            let joined = if *symbolic && !target.starts_with('/') {
                match current.rsplit_once('/') {
                    Some((dir, _)) => format!("{dir}/{target}"),
                    None => target.clone(),
                }
            } else {
                // Hard links name their target from the archive root.
                target.clone()
            };
            current = normalise_lexically(&joined)?;
        }
        None
    }
}

/// Reads a byte range of a file with positioned reads (no shared offset).
#[derive(Debug)]
pub(crate) struct SpanReader {
    file: Arc<std::fs::File>,
    offset: u64,
    remaining: u64,
}

impl std::io::Read for SpanReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt as _;
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        self.offset += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Turns a tokio reader into a blob stream of 256 KiB chunks; read errors are
/// transient stream errors (the engine retries them).
pub(crate) fn stream_reader<R: tokio::io::AsyncRead + Send + 'static>(reader: R) -> BlobStream {
    tokio_util::io::ReaderStream::with_capacity(reader, READ_CHUNK)
        .map_err(|e| StreamError::Source(Box::new(e)))
        .boxed()
}

/// An entry name as a relative path without `.`: refuses absolute names and
/// `..` components.
pub(crate) fn normalise(raw: &str) -> Result<String, &'static str> {
    if raw.is_empty() {
        return Err("an empty name");
    }
    let mut parts = Vec::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => match part.to_str() {
                Some(part) => parts.push(part),
                None => return Err("a name that is not UTF-8"),
            },
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err("an absolute path"),
            Component::ParentDir => return Err("a `..` component"),
        }
    }
    if parts.is_empty() {
        return Ok(String::new());
    }
    Ok(parts.join("/"))
}

/// Resolves `..` lexically for a link target; `None` if it leaves the archive.
fn normalise_lexically(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    if path.starts_with('/') {
        return None;
    }
    Some(parts.join("/"))
}

/// Where a layout's files live.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    Dir(PathBuf),
    Tar(Arc<TarIndex>),
}

impl Store {
    /// The file or directory, for messages.
    pub(crate) fn path(&self) -> &Path {
        match self {
            Self::Dir(path) => path,
            Self::Tar(tar) => &tar.path,
        }
    }

    /// A top-level file (`oci-layout`, `index.json`): `None` if absent.
    pub(crate) async fn read_file(
        &self,
        name: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, LayoutError> {
        let too_large = |size: u64| LayoutError::Malformed {
            path: self.path().join(name),
            reason: format!("{size} bytes is more than the {limit} bytes allowed for it"),
        };
        match self {
            Self::Dir(root) => {
                let Some(path) = contained(root, name).await? else {
                    return Ok(None);
                };
                let metadata = match tokio::fs::metadata(&path).await {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(LayoutError::read(&path, e)),
                };
                if metadata.len() > limit {
                    return Err(too_large(metadata.len()));
                }
                tokio::fs::read(&path)
                    .await
                    .map(Some)
                    .map_err(|e| LayoutError::read(&path, e))
            }
            Self::Tar(tar) => match tar.files.get(name) {
                None => Ok(None),
                Some(span) if span.size > limit => Err(too_large(span.size)),
                Some(span) => tar.read(*span).await.map(Some),
            },
        }
    }

    /// The size of a stored blob, `None` if absent.
    pub(crate) async fn blob_len(&self, digest: &Digest) -> Result<Option<u64>, LayoutError> {
        let rel = blob_rel(digest, "blob")?;
        match self {
            Self::Dir(root) => {
                let Some(path) = contained(root, &rel).await? else {
                    return Ok(None);
                };
                match tokio::fs::metadata(&path).await {
                    Ok(m) if m.is_file() => Ok(Some(m.len())),
                    Ok(_) => Ok(None),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(LayoutError::read(&path, e)),
                }
            }
            Self::Tar(tar) => Ok(tar.files.get(&rel).map(|span| span.size)),
        }
    }

    /// A whole blob (`None` if absent); callers check the size first.
    pub(crate) async fn read_blob(&self, digest: &Digest) -> Result<Option<Bytes>, LayoutError> {
        let rel = blob_rel(digest, "blob")?;
        match self {
            Self::Dir(root) => {
                let Some(path) = contained(root, &rel).await? else {
                    return Ok(None);
                };
                match tokio::fs::read(&path).await {
                    Ok(bytes) => Ok(Some(Bytes::from(bytes))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(LayoutError::read(&path, e)),
                }
            }
            Self::Tar(tar) => match tar.files.get(&rel) {
                None => Ok(None),
                Some(span) => tar.read(*span).await.map(|b| Some(Bytes::from(b))),
            },
        }
    }

    /// Streams a blob, unverified.
    pub(crate) async fn stream_blob(&self, digest: &Digest) -> Result<BlobStream, LayoutError> {
        let rel = blob_rel(digest, "blob")?;
        match self {
            Self::Dir(root) => {
                let path = contained(root, &rel)
                    .await?
                    .unwrap_or_else(|| root.join(&rel));
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| LayoutError::read(&path, e))?;
                Ok(stream_reader(file))
            }
            Self::Tar(tar) => match tar.files.get(&rel) {
                Some(span) => Ok(tar.stream(*span)),
                None => Err(LayoutError::MissingBlob {
                    location: tar.path.display().to_string(),
                    digest: digest.to_string(),
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_escapes_refused() {
        assert_eq!(normalise("./blobs/sha256/ab").unwrap(), "blobs/sha256/ab");
        assert_eq!(normalise("index.json").unwrap(), "index.json");
        assert_eq!(normalise("blobs//sha256/").unwrap(), "blobs/sha256");
        assert!(normalise("/etc/passwd").is_err());
        assert!(normalise("../x").is_err());
        assert!(normalise("blobs/../../x").is_err());
        assert_eq!(normalise_lexically("a/../b/c").as_deref(), Some("b/c"));
        assert_eq!(normalise_lexically("../x"), None);
        assert_eq!(normalise_lexically("/x"), None);
    }
}
