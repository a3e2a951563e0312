//! Where an image is, in skopeo's transport syntax: a registry reference
//! (`docker://REF` or a plain `REF`) or local files (`oci:`, `oci-archive:`,
//! `docker-archive:`, parsed by `mirror-layout`, which reads and writes them).
//!
//! | input | location |
//! |---|---|
//! | `python:3.10`, `docker://localhost:5000/app:1` | [`ImageLocation::Registry`] |
//! | `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:REF]` | [`ImageLocation::File`] |
//!
//! skopeo transports mirror does not implement (`dir:`, `containers-storage:`
//! ...) are refused by name rather than mistaken for a registry host.

use std::fmt;

use mirror_layout::FileLocation;
use mirror_oci::Reference;

use crate::error::LocationError;

/// One end of a copy: a repository on a registry, or an image in local files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageLocation {
    Registry(Reference),
    File(FileLocation),
}

/// skopeo transports mirror does not implement.
const UNSUPPORTED: [&str; 6] = [
    "containers-storage",
    "dir",
    "docker-daemon",
    "ostree",
    "sif",
    "tarball",
];

impl ImageLocation {
    /// Parses any of the forms in the module docs.
    pub fn parse(input: &str) -> Result<Self, LocationError> {
        let invalid = |reason: String| LocationError::Invalid {
            input: input.to_owned(),
            reason,
        };
        if let Some(rest) = input.strip_prefix("docker://") {
            if rest.is_empty() {
                return Err(invalid(
                    "docker:// needs an image reference after it".to_owned(),
                ));
            }
            return Ok(Self::Registry(rest.parse()?));
        }
        if let Some(file) = FileLocation::parse(input)? {
            return Ok(Self::File(file));
        }
        if let Some((transport, _)) = input.split_once(':') {
            if transport == "docker" {
                return Err(invalid(
                    "write docker://REF (two slashes) or just REF".to_owned(),
                ));
            }
            if UNSUPPORTED.contains(&transport) {
                return Err(invalid(format!(
                    "the {transport}: transport is not supported (supported: docker://, oci:, oci-archive:, docker-archive:)"
                )));
            }
        }
        Ok(Self::Registry(input.parse()?))
    }

    /// The registry reference, if this is one.
    pub fn registry(&self) -> Option<&Reference> {
        match self {
            Self::Registry(reference) => Some(reference),
            Self::File(_) => None,
        }
    }

    /// The tag this location names, if one was written (a docker-archive's
    /// `NAME:TAG` is not a tag).
    pub fn explicit_tag(&self) -> Option<String> {
        match self {
            Self::Registry(r) => r
                .has_explicit_tag()
                .then(|| r.tag().map(str::to_owned))
                .flatten(),
            Self::File(FileLocation::OciDir { tag, .. } | FileLocation::OciArchive { tag, .. }) => {
                tag.clone()
            }
            Self::File(FileLocation::DockerArchive { .. }) => None,
        }
    }

    /// Whether this names a manifest by digest.
    pub fn has_digest(&self) -> bool {
        self.registry().is_some_and(|r| r.digest().is_some())
    }

    /// What the engine asks this location for (a source) or writes it as (a
    /// destination): a registry's digest or tag (`latest` when neither was
    /// written), a file location's tag or `""`.
    pub fn engine_reference(&self) -> String {
        match self {
            Self::Registry(r) => r
                .digest()
                .map(ToString::to_string)
                .or_else(|| r.tag().map(str::to_owned))
                .unwrap_or_else(|| "latest".to_owned()),
            Self::File(file) => file.reference(),
        }
    }

    /// The same location naming another tag.
    pub fn with_tag(&self, tag: &str) -> Self {
        match self {
            Self::Registry(r) => Self::Registry(r.with_tag(tag)),
            Self::File(file) => Self::File(file.with_tag(Some(tag.to_owned()))),
        }
    }
}

impl fmt::Display for ImageLocation {
    /// A registry as its full reference (`docker.io/library/python:3.10`),
    /// files in transport syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Registry(r) => write!(f, "{r}"),
            Self::File(file) => write!(f, "{file}"),
        }
    }
}

impl std::str::FromStr for ImageLocation {
    type Err = LocationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Self::parse(input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_references_and_files_are_told_apart() {
        for input in ["python:3.10", "localhost:5000/app:1", "alpine"] {
            let parsed = ImageLocation::parse(input).unwrap();
            assert_eq!(parsed, ImageLocation::Registry(input.parse().unwrap()));
        }
        assert_eq!(
            ImageLocation::parse("docker://localhost:5000/app").unwrap(),
            ImageLocation::Registry("localhost:5000/app".parse().unwrap())
        );
        assert!(matches!(
            ImageLocation::parse("oci:/x:v1").unwrap(),
            ImageLocation::File(FileLocation::OciDir { .. })
        ));
        assert_eq!(
            ImageLocation::parse("oci:/x:v1").unwrap().to_string(),
            "oci:/x:v1"
        );
    }

    #[test]
    fn other_transports_are_refused_by_name() {
        for (input, says) in [
            ("docker:alpine", "docker://"),
            ("docker://", "needs an image reference"),
            ("dir:/tmp/x", "dir: transport is not supported"),
            ("oci:", "path is empty"),
            ("Python:3", "lowercase"),
        ] {
            let err = ImageLocation::parse(input).unwrap_err().to_string();
            assert!(err.contains(says), "{input}: {err}");
        }
    }

    #[test]
    fn engine_references() {
        let at = |s: &str| ImageLocation::parse(s).unwrap().engine_reference();
        assert_eq!(at("python"), "latest");
        assert_eq!(at("python:3.10"), "3.10");
        assert_eq!(at("oci:/x"), "");
        assert_eq!(at("oci:/x:v1"), "v1");
        assert_eq!(
            ImageLocation::parse("oci:/x:v1")
                .unwrap()
                .with_tag("v2")
                .to_string(),
            "oci:/x:v2"
        );
    }
}
