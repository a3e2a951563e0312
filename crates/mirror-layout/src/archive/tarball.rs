//! The archive file itself: `oci-layout`, `index.json` (and Docker's
//! `manifest.json`), then the blobs in name order, with fixed metadata so
//! that equal contents give equal bytes.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::LayoutError;
use crate::fsutil::{TempGuard, no_follow};
use crate::index::OCI_LAYOUT_FILE;
use crate::store::{Span, TarIndex};

/// Where a blob of the new archive comes from.
pub(super) enum BlobSource {
    Archive(Span),
    File(PathBuf),
}

pub(super) struct Metadata<'a> {
    pub(super) index: &'a [u8],
    /// Docker's `manifest.json` (a docker-archive).
    pub(super) manifest_json: Option<&'a [u8]>,
}

/// Writes the archive to `tmp` (removed on failure) and fsyncs it. The
/// caller holds the archive's lock, so a `tmp` already there is a leftover
/// (of a writer killed mid-commit) or was planted: it is removed (a link, not
/// what it points at) and the file created anew, never opened through a link.
pub(super) fn write_tar(
    tmp: &Path,
    metadata: &Metadata<'_>,
    blobs: &BTreeMap<String, BlobSource>,
    existing: Option<&TarIndex>,
) -> Result<(), LayoutError> {
    let io = |e| LayoutError::write(tmp, e);
    match std::fs::remove_file(tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(io)?;
    let mut guard = TempGuard::new(tmp.to_owned());
    let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(
        crate::fsutil::WRITE_BUFFER,
        file,
    ));
    append(&mut builder, "oci-layout", OCI_LAYOUT_FILE).map_err(io)?;
    append(&mut builder, "index.json", metadata.index).map_err(io)?;
    if let Some(manifest_json) = metadata.manifest_json {
        append(&mut builder, "manifest.json", manifest_json).map_err(io)?;
    }
    append_dir(&mut builder, "blobs/").map_err(io)?;
    let mut last_dir = String::new();
    for (name, source) in blobs {
        let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("blobs");
        if dir != last_dir {
            append_dir(&mut builder, &format!("{dir}/")).map_err(io)?;
            last_dir = dir.to_owned();
        }
        match source {
            BlobSource::File(path) => {
                let file = no_follow(std::fs::OpenOptions::new().read(true))
                    .open(path)
                    .map_err(|e| LayoutError::read(path, e))?;
                let file_metadata = file.metadata().map_err(|e| LayoutError::read(path, e))?;
                if !file_metadata.is_file() {
                    return Err(LayoutError::read(
                        path,
                        std::io::Error::other("not a regular file"),
                    ));
                }
                let size = file_metadata.len();
                let reader = std::io::BufReader::with_capacity(crate::fsutil::WRITE_BUFFER, file);
                builder
                    .append_data(&mut file_header(size), name, reader)
                    .map_err(io)?;
            }
            BlobSource::Archive(span) => {
                let Some(tar) = existing else {
                    continue;
                };
                let reader = std::io::BufReader::with_capacity(
                    crate::fsutil::WRITE_BUFFER,
                    tar.blocking_reader(*span),
                );
                builder
                    .append_data(&mut file_header(span.size), name, reader)
                    .map_err(io)?;
            }
        }
    }
    let mut writer = builder.into_inner().map_err(io)?;
    writer.flush().map_err(io)?;
    let file = writer.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    drop(file);
    guard.disarm();
    Ok(())
}

/// The size of the tar [`write_tar`] writes (near enough: names longer than a
/// ustar header holds take an extension block more).
pub(super) fn tar_size(metadata: &Metadata<'_>, blobs: &BTreeMap<String, BlobSource>) -> u64 {
    let entry = |size: u64| 512 + size.div_ceil(512) * 512;
    let mut total =
        entry(OCI_LAYOUT_FILE.len() as u64) + entry(metadata.index.len() as u64) + 3 * 512;
    if let Some(manifest_json) = metadata.manifest_json {
        total += entry(manifest_json.len() as u64);
    }
    for (name, source) in blobs {
        total += entry(match source {
            BlobSource::Archive(span) => span.size,
            BlobSource::File(path) => std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        });
        total += if name.len() > 100 { 1024 } else { 0 };
    }
    // The end-of-archive blocks, and the record padding.
    (total + 1024).div_ceil(10_240) * 10_240
}

fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn append<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    builder.append_data(&mut file_header(bytes.len() as u64), name, bytes)
}

fn append_dir<W: std::io::Write>(builder: &mut tar::Builder<W>, name: &str) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(0o755);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    builder.append_data(&mut header, name, std::io::empty())
}
