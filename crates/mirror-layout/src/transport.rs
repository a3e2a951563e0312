//! Local image locations in skopeo's transport syntax.
//!
//! | input | location |
//! |---|---|
//! | `oci:DIR[:TAG]` | [`FileLocation::OciDir`] |
//! | `oci-archive:FILE[:TAG]` | [`FileLocation::OciArchive`] |
//! | `docker-archive:FILE[:NAME:TAG or @N]` | [`FileLocation::DockerArchive`] (`@N`: to read only) |
//!
//! Registry references (`docker://REF` or a plain `REF`) and the choice
//! between them and these are `mirror-sync`'s `ImageLocation`; this crate
//! only reads and writes files.
//!
//! As in skopeo (containers/image on Unix), the path ends at the first `:` after
//! the transport and everything after it is the tag, which may itself contain
//! `:` and `/` (`oci:/srv/images:example.com/app:1.0` is the directory
//! `/srv/images`, tag `example.com/app:1.0`). A path containing `:` cannot be
//! written this way: use a symlink or a relative path without one.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::LayoutError;

/// An image in local files: a layout directory or an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileLocation {
    /// An OCI image layout directory; no tag: the only image (source) or an
    /// untagged entry (destination).
    OciDir { path: PathBuf, tag: Option<String> },
    /// A tar of an OCI image layout.
    OciArchive { path: PathBuf, tag: Option<String> },
    /// A `docker save` tar; `reference` is a `RepoTags` entry (`NAME:TAG`), or
    /// `@N` for the Nth image to read.
    DockerArchive {
        path: PathBuf,
        reference: Option<String>,
    },
}

impl FileLocation {
    /// The transports this crate reads and writes, as skopeo names them.
    pub const TRANSPORTS: [&'static str; 3] = ["oci", "oci-archive", "docker-archive"];

    /// Parses `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` and
    /// `docker-archive:FILE[:REF]`; `None` when `input` names none of these
    /// transports (a registry reference, for the caller to parse).
    pub fn parse(input: &str) -> Result<Option<Self>, LayoutError> {
        let invalid = |reason: &str| LayoutError::InvalidLocation {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let Some((transport, rest)) = input.split_once(':') else {
            return Ok(None);
        };
        Ok(Some(match transport {
            "oci" | "oci-archive" => {
                let (path, tag) = split_path(rest).map_err(|r| invalid(&r))?;
                if let Some(tag) = &tag {
                    validate_tag(tag)?;
                }
                if transport == "oci" {
                    Self::OciDir { path, tag }
                } else {
                    Self::OciArchive { path, tag }
                }
            }
            "docker-archive" => {
                let (path, reference) = split_path(rest).map_err(|r| invalid(&r))?;
                if let Some(reference) = &reference {
                    validate_archive_reference(reference).map_err(|r| invalid(&r))?;
                }
                Self::DockerArchive { path, reference }
            }
            _ => return Ok(None),
        }))
    }

    /// The transport name as skopeo writes it.
    pub fn transport(&self) -> &'static str {
        match self {
            Self::OciDir { .. } => "oci",
            Self::OciArchive { .. } => "oci-archive",
            Self::DockerArchive { .. } => "docker-archive",
        }
    }

    /// The file or directory.
    pub fn path(&self) -> &Path {
        match self {
            Self::OciDir { path, .. }
            | Self::OciArchive { path, .. }
            | Self::DockerArchive { path, .. } => path,
        }
    }

    /// The reference to hand the engine for this location: the tag (or
    /// docker-archive reference), or `""` for "the only image" as a source and
    /// "an untagged entry" as a destination.
    pub fn reference(&self) -> String {
        match self {
            Self::OciDir { tag, .. } | Self::OciArchive { tag, .. } => {
                tag.clone().unwrap_or_default()
            }
            Self::DockerArchive { reference, .. } => reference.clone().unwrap_or_default(),
        }
    }

    /// The same location naming another tag (a docker-archive: another `NAME:TAG`).
    pub fn with_tag(&self, tag: Option<String>) -> Self {
        match self {
            Self::OciDir { path, .. } => Self::OciDir {
                path: path.clone(),
                tag,
            },
            Self::OciArchive { path, .. } => Self::OciArchive {
                path: path.clone(),
                tag,
            },
            Self::DockerArchive { path, .. } => Self::DockerArchive {
                path: path.clone(),
                reference: tag,
            },
        }
    }
}

impl fmt::Display for FileLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OciDir { path, tag } | Self::OciArchive { path, tag } => {
                write!(f, "{}:{}", self.transport(), path.display())?;
                match tag {
                    Some(tag) => write!(f, ":{tag}"),
                    None => Ok(()),
                }
            }
            Self::DockerArchive { path, reference } => {
                write!(f, "docker-archive:{}", path.display())?;
                match reference {
                    Some(r) => write!(f, ":{r}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// `PATH[:REST]`, split at the first `:` as containers/image does on Unix.
fn split_path(rest: &str) -> Result<(PathBuf, Option<String>), String> {
    let (path, tag) = match rest.split_once(':') {
        Some((path, tag)) => (path, Some(tag)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err("the path is empty".to_owned());
    }
    if tag == Some("") {
        return Err("nothing follows the `:` after the path (drop it, or name a tag)".to_owned());
    }
    Ok((PathBuf::from(path), tag.map(str::to_owned)))
}

/// Whether `tag` is a valid `org.opencontainers.image.ref.name`: components of
/// alphanumerics joined by one of `-._:@+` (or `--`), separated by `/`.
pub fn is_valid_ref_name(tag: &str) -> bool {
    !tag.is_empty() && tag.split('/').all(valid_component)
}

fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return false;
    }
    let mut run = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() {
            if !(run.is_empty() || run.len() == 1 || run == "--") {
                return false;
            }
            run.clear();
        } else if b"-._:@+".contains(&b) {
            run.push(b as char);
        } else {
            return false;
        }
    }
    true
}

/// Checks a tag for an OCI layout or archive.
pub fn validate_tag(tag: &str) -> Result<(), LayoutError> {
    if is_valid_ref_name(tag) {
        Ok(())
    } else {
        Err(LayoutError::InvalidTag {
            tag: tag.to_owned(),
        })
    }
}

fn validate_archive_reference(reference: &str) -> Result<(), String> {
    if let Some(index) = reference.strip_prefix('@') {
        return index
            .parse::<usize>()
            .map(|_| ())
            .map_err(|_| format!("`@{index}` is not an image index (expected @0, @1, ...)"));
    }
    let parsed: mirror_oci::Reference = reference
        .parse()
        .map_err(|e: mirror_oci::ReferenceError| e.to_string())?;
    if parsed.digest().is_some() {
        return Err("a docker-archive image is named by NAME:TAG, not by digest".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A location these tests know to be a file location.
    fn parse(input: &str) -> Result<FileLocation, LayoutError> {
        FileLocation::parse(input).map(|l| l.expect("a file transport"))
    }

    fn dir(path: &str, tag: Option<&str>) -> FileLocation {
        FileLocation::OciDir {
            path: path.into(),
            tag: tag.map(str::to_owned),
        }
    }

    #[test]
    fn oci_paths_split_at_the_first_colon() {
        assert_eq!(parse("oci:/abs/path").unwrap(), dir("/abs/path", None));
        assert_eq!(
            parse("oci:/abs/path:v1").unwrap(),
            dir("/abs/path", Some("v1"))
        );
        assert_eq!(
            parse("oci:rel/dir:example.com/app:1.0").unwrap(),
            dir("rel/dir", Some("example.com/app:1.0"))
        );
        assert_eq!(
            parse("oci-archive:/tmp/a.tar:latest").unwrap(),
            FileLocation::OciArchive {
                path: "/tmp/a.tar".into(),
                tag: Some("latest".into())
            }
        );
        assert_eq!(
            parse("oci:/abs/path:v1").unwrap().to_string(),
            "oci:/abs/path:v1"
        );
    }

    #[test]
    fn other_transports_are_not_files() {
        for input in [
            "python:3.10",
            "localhost:5000/app:1",
            "docker://x/y",
            "alpine",
        ] {
            assert_eq!(FileLocation::parse(input).unwrap(), None, "{input}");
        }
    }

    #[test]
    fn bad_locations_are_refused() {
        for input in [
            "oci:",
            "oci::tag",
            "oci:/x:",
            "oci:/x:bad tag",
            "oci:/x:-lead",
            "oci:/x:a..b",
            "oci:/x:a//b",
            "docker-archive:/x.tar:@x",
        ] {
            assert!(parse(input).is_err(), "{input} should fail");
        }
        let by_digest = format!("docker-archive:/x.tar:app@{}", mirror_oci::digest_of(b"x"));
        assert!(parse(&by_digest).is_err());
    }

    #[test]
    fn ref_names_follow_the_annotation_grammar() {
        for good in [
            "latest",
            "v1.0",
            "a--b",
            "example.com/app:1.0",
            "a@b+c",
            "A_1",
        ] {
            assert!(is_valid_ref_name(good), "{good}");
        }
        for bad in [
            "", "a---b", "a-.b", "-a", "a-", "a b", "a/", "/a", "a/../b", "..",
        ] {
            assert!(!is_valid_ref_name(bad), "{bad}");
        }
    }

    #[test]
    fn docker_archive_references() {
        assert_eq!(
            parse("docker-archive:/x.tar:busybox:latest").unwrap(),
            FileLocation::DockerArchive {
                path: "/x.tar".into(),
                reference: Some("busybox:latest".into())
            }
        );
        assert_eq!(parse("docker-archive:/x.tar:@1").unwrap().reference(), "@1");
    }
}
