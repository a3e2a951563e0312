//! Local files for layout and archive tests: tars read entry by entry and
//! written by hand (hostile ones too, with names and entry types the `tar`
//! crate's builder refuses to write), and layout directories copied.
//!
//! The layout crate's own tests and the end-to-end tests both build and
//! inspect archives; they share these rather than each keeping a copy.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::Path;

use anyhow::{Context as _, bail};

/// One entry of a tar as its header says, and where its data starts.
#[derive(Debug, Clone)]
pub struct TarEntry {
    /// The name as stored (a leading `./` kept).
    pub name: String,
    pub kind: tar::EntryType,
    pub size: u64,
    pub mode: u32,
    pub mtime: u64,
    /// The offset of the entry's data in the file.
    pub offset: u64,
}

impl TarEntry {
    /// The name without a leading `./`.
    pub fn plain_name(&self) -> &str {
        self.name.trim_start_matches("./")
    }
}

/// Every entry of a tar, in order.
pub fn tar_entries(path: &Path) -> anyhow::Result<Vec<TarEntry>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    let mut entries = Vec::new();
    for entry in archive
        .entries()
        .with_context(|| format!("reading {} as a tar", path.display()))?
    {
        let entry = entry.with_context(|| format!("reading an entry of {}", path.display()))?;
        let header = entry.header();
        entries.push(TarEntry {
            name: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
            kind: header.entry_type(),
            size: entry.size(),
            mode: header.mode()?,
            mtime: header.mtime()?,
            offset: entry.raw_file_position(),
        });
    }
    Ok(entries)
}

/// The bytes of the file entry `name` (matched without a leading `./`).
pub fn tar_file(path: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let entry_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if entry_name.trim_start_matches("./") == name {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            return Ok(bytes);
        }
    }
    bail!("{} has no entry {name}", path.display())
}

/// The blobs of an archive (regular `blobs/sha256/HEX` entries) as
/// `sha256:HEX`, sorted; a blob stored twice is an error.
pub fn archive_blobs(path: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = BTreeSet::new();
    for entry in tar_entries(path)? {
        let Some(hex) = entry.plain_name().strip_prefix("blobs/sha256/") else {
            continue;
        };
        if hex.is_empty() || !entry.kind.is_file() {
            continue;
        }
        if !names.insert(format!("sha256:{hex}")) {
            bail!("{}: blob {hex} is stored twice", path.display());
        }
    }
    Ok(names.into_iter().collect())
}

/// The entry name of a blob with these bytes: `blobs/sha256/<hex>`.
pub fn blob_entry_name(bytes: &[u8]) -> String {
    format!("blobs/sha256/{}", mirror_oci::digest_of(bytes).digest())
}

/// Writes a tar of regular files `(name, bytes)`, in order.
pub fn write_tar(path: &Path, files: &[(&str, &[u8])]) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut builder = tar::Builder::new(file);
    for (name, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, *bytes)?;
    }
    builder.finish()?;
    Ok(())
}

/// A tar entry written from raw header fields: any name (`../x`, `/abs`),
/// any type byte, any link target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub name: String,
    pub kind: tar::EntryType,
    pub link: String,
    pub data: Vec<u8>,
}

impl RawEntry {
    /// A regular file.
    pub fn file(name: &str, data: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.to_owned(),
            kind: tar::EntryType::Regular,
            link: String::new(),
            data: data.into(),
        }
    }

    /// A symbolic link at `name` to `target`.
    pub fn symlink(name: &str, target: &str) -> Self {
        Self::of_kind(name, tar::EntryType::Symlink).linking_to(target)
    }

    /// A hard link at `name` to `target`.
    pub fn hard_link(name: &str, target: &str) -> Self {
        Self::of_kind(name, tar::EntryType::Link).linking_to(target)
    }

    /// An entry of this type without data (a directory, a device, a fifo).
    pub fn of_kind(name: &str, kind: tar::EntryType) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            link: String::new(),
            data: Vec::new(),
        }
    }

    fn linking_to(mut self, target: &str) -> Self {
        self.link = target.to_owned();
        self
    }
}

/// The files of a layout directory (`oci-layout`, `index.json`, then every
/// `blobs/sha256/*` in name order) as regular entries.
pub fn layout_entries(layout: &Path) -> anyhow::Result<Vec<RawEntry>> {
    let read = |name: &str| {
        std::fs::read(layout.join(name))
            .with_context(|| format!("reading {}/{name}", layout.display()))
    };
    let mut entries = vec![
        RawEntry::file("oci-layout", read("oci-layout")?),
        RawEntry::file("index.json", read("index.json")?),
    ];
    let mut blobs: Vec<String> = std::fs::read_dir(layout.join("blobs/sha256"))?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    blobs.sort();
    for hex in blobs {
        let name = format!("blobs/sha256/{hex}");
        entries.push(RawEntry::file(&name, read(&name)?));
    }
    Ok(entries)
}

/// Writes `entries` as a tar with old-style (v7) headers filled in by hand,
/// which is how names the `tar` builder refuses get in (names and link
/// targets up to 100 bytes).
pub fn write_raw_tar(path: &Path, entries: &[RawEntry]) -> anyhow::Result<()> {
    let mut out = Vec::new();
    for entry in entries {
        if entry.name.len() > 100 || entry.link.len() > 100 {
            bail!(
                "{}: a raw tar name or link is at most 100 bytes",
                entry.name
            );
        }
        let mut header = tar::Header::new_old();
        {
            let old = header.as_old_mut();
            old.name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
            old.linkname[..entry.link.len()].copy_from_slice(entry.link.as_bytes());
        }
        header.set_size(entry.data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(entry.kind);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&entry.data);
        out.extend(std::iter::repeat_n(0, (512 - entry.data.len() % 512) % 512));
    }
    out.extend(std::iter::repeat_n(0, 1024));
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Copies a directory tree of regular files (a layout) to `to`.
pub fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_tars_keep_what_the_builder_refuses_and_read_back() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("raw.tar");
        let blob = b"blob bytes";
        write_raw_tar(
            &path,
            &[
                RawEntry::file("oci-layout", &b"{}"[..]),
                RawEntry::file(&blob_entry_name(blob), &blob[..]),
                RawEntry::symlink("../escape", "/etc/passwd"),
                RawEntry::of_kind("blobs/sha256/x/", tar::EntryType::Directory),
            ],
        )
        .expect("writing a raw tar");
        let entries = tar_entries(&path).expect("reading it back");
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "oci-layout",
                blob_entry_name(blob).as_str(),
                "../escape",
                "blobs/sha256/x/"
            ]
        );
        assert!(entries[2].kind.is_symlink());
        assert_eq!(tar_file(&path, "oci-layout").expect("a file"), b"{}");
        assert_eq!(
            archive_blobs(&path).expect("the blobs"),
            [mirror_oci::digest_of(blob).to_string()]
        );
    }
}
