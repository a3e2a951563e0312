//! Locations in skopeo's transport syntax.
//!
//! | input | location |
//! |---|---|
//! | `docker://REF`, or a plain `REF` | [`Location::Registry`] (the caller parses `REF`) |
//! | `oci:DIR[:TAG]` | [`Location::OciDir`] |
//! | `oci-archive:FILE[:TAG]` | [`Location::OciArchive`] |
//! | `docker-archive:FILE[:NAME:TAG or @N]` | [`Location::DockerArchive`] (`@N`: to read only) |
//!
//! As in skopeo (containers/image on Unix), the path ends at the first `:` after
//! the transport and everything after it is the tag, which may itself contain
//! `:` and `/` (`oci:/srv/images:example.com/app:1.0` is the directory
//! `/srv/images`, tag `example.com/app:1.0`). A path containing `:` cannot be
//! written this way: use a symlink or a relative path without one.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::LayoutError;

/// Where images are read from or written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A registry reference, as written after `docker://` (or with no transport).
    Registry(String),
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

/// skopeo transports this crate does not implement, refused by name rather than
/// mistaken for a registry host.
const UNSUPPORTED: [&str; 6] = [
    "containers-storage",
    "dir",
    "docker-daemon",
    "ostree",
    "sif",
    "tarball",
];

impl Location {
    /// Parses `docker://REF`, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
    /// `docker-archive:FILE[:REF]`; anything else is a registry reference.
    pub fn parse(input: &str) -> Result<Self, LayoutError> {
        let invalid = |reason: &str| LayoutError::InvalidLocation {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = input.strip_prefix("docker://") {
            if rest.is_empty() {
                return Err(invalid("docker:// needs an image reference after it"));
            }
            return Ok(Self::Registry(rest.to_owned()));
        }
        let Some((transport, rest)) = input.split_once(':') else {
            return Ok(Self::Registry(input.to_owned()));
        };
        match transport {
            "oci" | "oci-archive" => {
                let (path, tag) = split_path(rest).map_err(|r| invalid(&r))?;
                if let Some(tag) = &tag {
                    validate_tag(tag)?;
                }
                Ok(if transport == "oci" {
                    Self::OciDir { path, tag }
                } else {
                    Self::OciArchive { path, tag }
                })
            }
            "docker-archive" => {
                let (path, reference) = split_path(rest).map_err(|r| invalid(&r))?;
                if let Some(reference) = &reference {
                    validate_archive_reference(reference).map_err(|r| invalid(&r))?;
                }
                Ok(Self::DockerArchive { path, reference })
            }
            "docker" => Err(invalid("write docker://REF (two slashes) or just REF")),
            t if UNSUPPORTED.contains(&t) => Err(invalid(&format!(
                "the {t}: transport is not supported (supported: docker://, oci:, oci-archive:, docker-archive:)"
            ))),
            _ => Ok(Self::Registry(input.to_owned())),
        }
    }

    /// The transport name as skopeo writes it (`docker` for registries).
    pub fn transport(&self) -> &'static str {
        match self {
            Self::Registry(_) => "docker",
            Self::OciDir { .. } => "oci",
            Self::OciArchive { .. } => "oci-archive",
            Self::DockerArchive { .. } => "docker-archive",
        }
    }

    /// The file or directory of a local location.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Registry(_) => None,
            Self::OciDir { path, .. }
            | Self::OciArchive { path, .. }
            | Self::DockerArchive { path, .. } => Some(path),
        }
    }

    /// The reference to hand the engine for this location: the tag (or
    /// docker-archive reference), or `""` for "the only image" as a source and
    /// "an untagged entry" as a destination. For a registry, the reference text.
    pub fn reference(&self) -> String {
        match self {
            Self::Registry(r) => r.clone(),
            Self::OciDir { tag, .. } | Self::OciArchive { tag, .. } => {
                tag.clone().unwrap_or_default()
            }
            Self::DockerArchive { reference, .. } => reference.clone().unwrap_or_default(),
        }
    }

    /// Whether this is a registry reference.
    pub fn is_registry(&self) -> bool {
        matches!(self, Self::Registry(_))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Registry(r) => write!(f, "docker://{r}"),
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

impl std::str::FromStr for Location {
    type Err = LayoutError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
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

    fn dir(path: &str, tag: Option<&str>) -> Location {
        Location::OciDir {
            path: path.into(),
            tag: tag.map(str::to_owned),
        }
    }

    #[test]
    fn oci_paths_split_at_the_first_colon() {
        assert_eq!(
            Location::parse("oci:/abs/path").unwrap(),
            dir("/abs/path", None)
        );
        assert_eq!(
            Location::parse("oci:/abs/path:v1").unwrap(),
            dir("/abs/path", Some("v1"))
        );
        assert_eq!(
            Location::parse("oci:rel/dir:example.com/app:1.0").unwrap(),
            dir("rel/dir", Some("example.com/app:1.0"))
        );
        assert_eq!(
            Location::parse("oci-archive:/tmp/a.tar:latest").unwrap(),
            Location::OciArchive {
                path: "/tmp/a.tar".into(),
                tag: Some("latest".into())
            }
        );
        assert_eq!(
            Location::parse("oci:/abs/path:v1").unwrap().to_string(),
            "oci:/abs/path:v1"
        );
    }

    #[test]
    fn registry_references_pass_through() {
        for input in ["python:3.10", "localhost:5000/app:1", "repo@sha256:abc"] {
            assert_eq!(
                Location::parse(input).unwrap(),
                Location::Registry(input.to_owned())
            );
        }
        assert_eq!(
            Location::parse("docker://localhost:5000/app").unwrap(),
            Location::Registry("localhost:5000/app".to_owned())
        );
        assert_eq!(Location::parse("alpine").unwrap().reference(), "alpine");
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
            "docker:alpine",
            "docker://",
            "dir:/tmp/x",
            "docker-archive:/x.tar:@x",
        ] {
            assert!(Location::parse(input).is_err(), "{input} should fail");
        }
        let by_digest = format!("docker-archive:/x.tar:app@{}", mirror_oci::digest_of(b"x"));
        assert!(Location::parse(&by_digest).is_err());
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
            Location::parse("docker-archive:/x.tar:busybox:latest").unwrap(),
            Location::DockerArchive {
                path: "/x.tar".into(),
                reference: Some("busybox:latest".into())
            }
        );
        assert_eq!(
            Location::parse("docker-archive:/x.tar:@1")
                .unwrap()
                .reference(),
            "@1"
        );
    }
}
