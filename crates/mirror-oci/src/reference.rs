//! Docker-style image references, parsed by `oci-spec` and normalised the way the
//! Docker CLI does, plus the few facts the engine needs on top (the API host of
//! Docker Hub, whether the user wrote a tag).

use std::fmt;
use std::str::FromStr;

use oci_spec::distribution::{ParseError, Reference as OciReference};
use oci_spec::image::Digest;

use crate::digest::parse_digest;

/// Why a reference was refused; every message names the input and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error(
        "`{input}` is not an image reference: {reason} (expected [HOST[:PORT]/]NAME[:TAG][@sha256:DIGEST], for example python:3.10-slim-buster)"
    )]
    Invalid { input: String, reason: String },
    #[error(
        "`{input}` is not an image reference: repository names must be lowercase (try `{suggestion}`)"
    )]
    Uppercase { input: String, suggestion: String },
}

/// A normalised image reference: registry, repository, and a tag and/or digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
    explicit_tag: bool,
}

impl Reference {
    /// Builds a reference from parts (used when the destination is derived).
    pub fn new(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Self {
        Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            explicit_tag: tag.is_some(),
            digest,
        }
    }

    /// The registry as written after normalisation (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host the distribution API is served from: Docker Hub's is
    /// `registry-1.docker.io`, every other registry serves its own name.
    pub fn api_host(&self) -> &str {
        if self.is_docker_hub() {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    pub fn is_docker_hub(&self) -> bool {
        matches!(
            self.registry.as_str(),
            "docker.io" | "index.docker.io" | "registry-1.docker.io"
        )
    }

    /// The repository path (`library/python`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag; `latest` when neither tag nor digest was written.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Whether the user wrote the tag (a destination without one keeps the source's).
    pub fn has_explicit_tag(&self) -> bool {
        self.explicit_tag
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The tag if there is one, else the digest: what a manifest request names.
    pub fn reference_str(&self) -> String {
        match (&self.tag, &self.digest) {
            (_, Some(d)) => d.to_string(),
            (Some(t), None) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// A copy with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            tag: Some(tag.to_owned()),
            digest: None,
            explicit_tag: true,
            ..self.clone()
        }
    }

    /// A copy naming the same repository by digest only.
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            tag: None,
            digest: Some(digest),
            explicit_tag: false,
            ..self.clone()
        }
    }

    /// A copy with a different repository path.
    pub fn with_repository(&self, repository: &str) -> Self {
        Self {
            repository: repository.to_owned(),
            ..self.clone()
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let input = input.trim();
        let input = input.strip_prefix("docker://").unwrap_or(input);
        let parsed = OciReference::try_from(input).map_err(|error| describe(input, error))?;
        let explicit_tag = has_tag(input);
        let digest = match parsed.digest() {
            Some(d) => Some(parse_digest(d).map_err(|e| ReferenceError::Invalid {
                input: input.to_owned(),
                reason: e.to_string(),
            })?),
            None => None,
        };
        let mut registry = parsed.registry().to_owned();
        if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            registry = "docker.io".to_owned();
        }
        let mut repository = parsed.repository().to_owned();
        if registry == "docker.io" && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        // oci-spec fills in `latest` when only a digest is absent; keep a tag only
        // when it was written or when nothing else names the manifest.
        let tag = match (explicit_tag, &digest) {
            (true, _) => parsed.tag().map(str::to_owned),
            (false, None) => Some("latest".to_owned()),
            (false, Some(_)) => None,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
            explicit_tag,
        })
    }
}

/// Whether the last path component carries `:tag` (a `host:port/` prefix does not count).
fn has_tag(input: &str) -> bool {
    let name = input.split('@').next().unwrap_or(input);
    let last = name.rsplit('/').next().unwrap_or(name);
    last.contains(':')
}

fn describe(input: &str, error: ParseError) -> ReferenceError {
    let name = input.split(['@']).next().unwrap_or(input);
    let path_part = match name.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            rest
        }
        _ => name,
    };
    let path_no_tag = path_part.rsplit_once(':').map_or(path_part, |(p, _)| p);
    if path_no_tag.chars().any(|c| c.is_ascii_uppercase()) {
        return ReferenceError::Uppercase {
            input: input.to_owned(),
            suggestion: input.replacen(path_no_tag, &path_no_tag.to_ascii_lowercase(), 1),
        };
    }
    let reason = match error {
        ParseError::NameEmpty => "the name is empty".to_owned(),
        ParseError::DigestInvalidLength | ParseError::DigestInvalidFormat => {
            "the digest must be sha256: followed by 64 hex characters".to_owned()
        }
        other => other.to_string(),
    };
    ReferenceError::Invalid {
        input: input.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_image_gets_library_and_docker_hub_api_host() {
        let r: Reference = "python:3.10-slim-buster".parse().unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.repository(), "library/python");
        assert_eq!(r.tag(), Some("3.10-slim-buster"));
        assert!(r.has_explicit_tag());
        assert_eq!(r.to_string(), "docker.io/library/python:3.10-slim-buster");
    }

    #[test]
    fn host_port_and_default_tag() {
        let r: Reference = "127.0.0.1:5000/team/app".parse().unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "team/app");
        assert_eq!(r.tag(), Some("latest"));
        assert!(!r.has_explicit_tag());
    }

    #[test]
    fn digest_only_has_no_tag() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let r: Reference = format!("localhost:5000/app@{d}").parse().unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().map(|d| d.to_string()), Some(d.clone()));
        assert_eq!(r.reference_str(), d);
    }

    #[test]
    fn uppercase_names_get_a_suggestion() {
        let err = "Python:3".parse::<Reference>().unwrap_err();
        assert!(err.to_string().contains("try `python:3`"), "{err}");
    }

    #[test]
    fn garbage_is_refused_with_the_input_named() {
        for bad in ["", "a b", "host:5000/", "repo@sha256:xyz", "repo:ta g"] {
            let err = bad.parse::<Reference>().unwrap_err();
            assert!(
                err.to_string().contains("not an image reference"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn docker_scheme_prefix_is_accepted() {
        let r: Reference = "docker://localhost:5000/a/b:c".parse().unwrap();
        assert_eq!(r.to_string(), "localhost:5000/a/b:c");
    }
}
