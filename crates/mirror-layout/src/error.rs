//! Errors that name the path and say what went wrong. Hints that depend only
//! on the kind of error are the binary's (`bin/mirror/failure.rs`); the ones
//! here depend on the error's own data (how much space a commit needs).

use std::io;
use std::path::{Path, PathBuf};

use mirror_engine::EndpointError;
use mirror_oci::ManifestError;

/// Why a layout, archive or location could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("`{input}` is not a location: {reason}")]
    InvalidLocation { input: String, reason: String },
    #[error(
        "`{tag}` is not a valid tag for an OCI layout: expected components of letters and digits \
         joined by `-._:@+` or `--`, separated by `/` (for example `latest` or `example.com/app:1.0`)"
    )]
    InvalidTag { tag: String },
    #[error("`{reference}` cannot name a docker-archive image: {reason}")]
    InvalidRepoTag { reference: String, reason: String },
    #[error("{path} is not an OCI image layout (no oci-layout file)")]
    NotALayout { path: PathBuf },
    #[error("{path} declares imageLayoutVersion {version:?}; only 1.x layouts are supported")]
    UnsupportedVersion { path: PathBuf, version: String },
    #[error("{path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{location} has no image tagged `{tag}`; it has: {}", list_names(.known))]
    UnknownTag {
        location: String,
        tag: String,
        known: Vec<String>,
    },
    #[error(
        "{location} holds {count} images; name one with {location}:TAG (tags: {})",
        list_names(.known)
    )]
    Ambiguous {
        location: String,
        count: usize,
        known: Vec<String>,
    },
    #[error("{location} holds no image")]
    Empty { location: String },
    #[error("{archive}: refusing archive entry `{entry}`: {reason}")]
    HostileEntry {
        archive: PathBuf,
        entry: String,
        reason: String,
    },
    #[error(
        "invalid digest `{digest}` ({context}): only sha256 and sha512 with lowercase hex are accepted"
    )]
    InvalidDigest { digest: String, context: String },
    #[error("{location} lacks blob {digest}")]
    MissingBlob { location: String, digest: String },
    #[error("blob {digest} in {location} is {actual} bytes but its descriptor says {expected}")]
    SizeMismatch {
        location: String,
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "no space left on the device holding {} (the disk is full, writing {}); nothing was \
         committed\n  hint: free some space there or write to another directory, then run the \
         copy again: blobs already written are kept and skipped",
        .device.display(),
        shown(.path)
    )]
    StorageFull { device: PathBuf, path: PathBuf },
    #[error(
        "no space left on the device holding {} (the disk is full) {}; nothing was committed to \
         {}\n  hint: free {} or write the archive to another directory, then run the copy \
         again: the blobs already verified wait in {} and are reused (delete it to give up)",
        .device.display(),
        match .needed {
            Some(bytes) => format!("writing {} ({}: an archive is rewritten whole, beside the old one)", .archive.display(), mib(*bytes)),
            None => format!("staging {} in {}", .archive.display(), .partial.display()),
        },
        .archive.display(),
        match .needed {
            Some(bytes) => format!("at least {}", mib(*bytes)),
            None => "some space there".to_owned(),
        },
        .partial.display()
    )]
    ArchiveFull {
        /// The directory that holds the archive.
        device: PathBuf,
        archive: PathBuf,
        /// `FILE.partial/`, where verified blobs wait for the commit.
        partial: PathBuf,
        /// The size of the archive a commit was writing.
        needed: Option<u64>,
    },
    #[error("manifest {digest} in {location} is {size} bytes, over the {limit}-byte limit")]
    ManifestTooLarge {
        location: String,
        digest: String,
        size: u64,
        limit: usize,
    },
    #[error("{location} has no manifest {digest}")]
    UnknownManifest { location: String, digest: String },
    #[error("{location}: manifest {digest}")]
    Manifest {
        location: String,
        digest: String,
        #[source]
        source: Box<ManifestError>,
    },
    #[error("{path}: {reason}\n  hint: {hint}")]
    Refused {
        path: PathBuf,
        reason: String,
        hint: String,
    },
    #[error("the fallback tag index {tag}")]
    ReferrersIndex {
        tag: String,
        #[source]
        source: mirror_oci::ReferrersIndexError,
    },
    #[error("{0} is a registry reference, not a local layout or archive")]
    NotLocal(String),
    /// A failure of the engine's side of a write (the blob stream).
    #[error(transparent)]
    Endpoint(EndpointError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// A path for a message: a temporary file as the directory it is in.
fn shown(path: &Path) -> String {
    match (path.file_name(), path.parent()) {
        (Some(name), Some(dir)) if name.to_string_lossy().starts_with(".tmp-") => {
            format!("a temporary file in {}", dir.display())
        }
        _ => path.display().to_string(),
    }
}

/// Bytes as MiB, rounded up to a tenth.
fn mib(bytes: u64) -> String {
    format!(
        "{:.1} MiB",
        (bytes as f64 / 1_048_576.0 * 10.0).ceil() / 10.0
    )
}

fn list_names(names: &[String]) -> String {
    if names.is_empty() {
        "no tagged images".to_owned()
    } else {
        names.join(", ")
    }
}

impl LayoutError {
    /// An I/O error while doing `what` to `path`; ENOSPC becomes [`LayoutError::StorageFull`].
    pub(crate) fn io(what: &str, path: &Path, source: io::Error) -> Self {
        if is_storage_full(&source) {
            return Self::StorageFull {
                device: device_of(path),
                path: path.to_owned(),
            };
        }
        Self::Io {
            context: format!("{what} {}", path.display()),
            source,
        }
    }

    /// An I/O error while writing `path` (which is never committed on failure).
    pub(crate) fn write(path: &Path, source: io::Error) -> Self {
        Self::io("writing", path, source)
    }

    pub(crate) fn read(path: &Path, source: io::Error) -> Self {
        Self::io("reading", path, source)
    }
}

/// Whether an I/O error means the disk is full.
pub fn is_storage_full(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::StorageFull || error.raw_os_error() == Some(28)
}

/// The directory a file lives in, for "no space left on the device holding DIR".
fn device_of(path: &Path) -> PathBuf {
    let mut dir = path.parent().unwrap_or(path);
    // Name the top of what this crate writes (the layout or archive's directory)
    // rather than blobs/sha256.
    while dir
        .file_name()
        .is_some_and(|n| n == "sha256" || n == "sha512" || n == "blobs")
    {
        match dir.parent() {
            Some(parent) => dir = parent,
            None => break,
        }
    }
    if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir.to_owned()
    }
}

impl From<LayoutError> for EndpointError {
    fn from(error: LayoutError) -> Self {
        match error {
            LayoutError::Manifest { source, .. } => EndpointError::Manifest(*source),
            LayoutError::Io { context, source } => EndpointError::Io { context, source },
            LayoutError::Endpoint(error) => error,
            other => EndpointError::backend(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_is_storage_full_with_a_clear_message() {
        let path = Path::new("/data/out/blobs/sha256/.tmp-abc");
        let err = LayoutError::write(path, io::Error::from_raw_os_error(28));
        let text = err.to_string();
        assert!(matches!(err, LayoutError::StorageFull { .. }), "{text}");
        assert!(
            text.starts_with(
                "no space left on the device holding /data/out (the disk is full, writing a \
                 temporary file in /data/out/blobs/sha256); nothing was committed\n  hint: free \
                 some space there or write to another directory"
            ),
            "{text}"
        );
        let endpoint: EndpointError = err.into();
        assert!(endpoint.to_string().contains("nothing was committed"));
    }

    #[test]
    fn a_full_archive_says_where_its_blobs_wait_and_what_it_needs() {
        let error = |needed| LayoutError::ArchiveFull {
            device: "/media/usb".into(),
            archive: "/media/usb/images.tar".into(),
            partial: "/media/usb/images.tar.partial".into(),
            needed,
        };
        let text = error(Some(3 * 1_048_576 + 1)).to_string();
        assert_eq!(
            text,
            "no space left on the device holding /media/usb (the disk is full) writing \
             /media/usb/images.tar (3.1 MiB: an archive is rewritten whole, beside the old one); \
             nothing was committed to /media/usb/images.tar\n  hint: free at least 3.1 MiB or \
             write the archive to another directory, then run the copy again: the blobs already \
             verified wait in /media/usb/images.tar.partial and are reused (delete it to give up)"
        );
        let text = error(None).to_string();
        assert!(
            text.contains(
                "(the disk is full) staging /media/usb/images.tar in /media/usb/images.tar.partial;"
            ) && text
                .contains("hint: free some space there or write the archive to another directory"),
            "{text}"
        );
    }

    #[test]
    fn dev_full_is_reported_as_storage_full() {
        use std::io::Write as _;
        let Ok(mut file) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let error = file
            .write_all(&[0; 4096])
            .and_then(|()| file.flush())
            .unwrap_err();
        assert!(is_storage_full(&error), "{error:?}");
    }

    #[test]
    fn unknown_tag_lists_known_names() {
        let err = LayoutError::UnknownTag {
            location: "oci:/x".into(),
            tag: "v2".into(),
            known: vec!["v1".into(), "latest".into()],
        };
        assert_eq!(
            err.to_string(),
            "oci:/x has no image tagged `v2`; it has: v1, latest"
        );
    }
}
