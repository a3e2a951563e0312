//! Docker-style image references, parsed and normalised the way the Docker CLI
//! does, plus the few facts the engine needs on top (the API host of Docker Hub,
//! whether the user wrote a tag).
//!
//! The grammar is distribution's (the one `oci-spec` implements), checked by hand:
//! `oci-spec`'s parser compiles a Unicode regex that costs ~25 ms of CPU per
//! process, a quarter of a warm `mirror copy`.

use std::fmt;
use std::str::FromStr;

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

    /// The name as Docker shows it (`python`, `org/app`, `ghcr.io/org/app`):
    /// Docker Hub's registry and its `library/` for official images left out.
    pub fn familiar_name(&self) -> String {
        if !self.is_docker_hub() {
            return self.name();
        }
        match self.repository.strip_prefix("library/") {
            Some(official) if !official.contains('/') => official.to_owned(),
            _ => self.repository.clone(),
        }
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
        let invalid = |reason: &str| ReferenceError::Invalid {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => (
                n,
                Some(parse_digest(d).map_err(|_| {
                    invalid("the digest must be sha256: followed by 64 hex characters")
                })?),
            ),
            None => (input, None),
        };
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        if name.is_empty() {
            return Err(invalid("the name is empty"));
        }
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(invalid(
                "a tag is 1-128 letters, digits, `_`, `.` or `-` and does not start with `.` or `-`",
            ));
        }
        // Docker's rule: the first component is a registry when it has a `.` or
        // a `:`, is `localhost`, or has uppercase letters.
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first, rest)
            }
            _ => ("docker.io", name),
        };
        if !valid_registry(registry) {
            return Err(invalid(
                "the registry must be a host name or address, with an optional :port",
            ));
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase {
                input: input.to_owned(),
                suggestion: input.replacen(path, &path.to_ascii_lowercase(), 1),
            });
        }
        if !path.split('/').all(valid_path_component) {
            return Err(invalid(
                "repository path components are lowercase letters and digits, separated by `.`, `_`, `__` or dashes",
            ));
        }
        if name.len() > 255 {
            return Err(invalid("the name is longer than 255 characters"));
        }
        let registry = match registry {
            "index.docker.io" | "registry-1.docker.io" => "docker.io",
            other => other,
        };
        let repository = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        let explicit_tag = tag.is_some();
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
            explicit_tag,
        })
    }
}

fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    tag.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `host[:port]`: dot-separated labels of letters, digits and inner dashes.
fn valid_registry(registry: &str) -> bool {
    let (host, port) = match registry.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (registry, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !host.is_empty()
        && host.split('.').all(label_ok)
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()))
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or one or more `-`.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
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
    fn familiar_names_drop_docker_hub_and_library() {
        for (input, familiar) in [
            ("python:3.10", "python"),
            ("docker.io/library/python:3.10", "python"),
            ("index.docker.io/org/app", "org/app"),
            ("docker.io/library/a/b", "library/a/b"),
            ("ghcr.io/org/app:1", "ghcr.io/org/app"),
            ("localhost:5000/library/app", "localhost:5000/library/app"),
        ] {
            let r: Reference = input.parse().unwrap();
            assert_eq!(r.familiar_name(), familiar, "{input}");
        }
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

    #[test]
    fn grammar_edges() {
        let r: Reference = "localhost/app".parse().unwrap();
        assert_eq!((r.registry(), r.repository()), ("localhost", "app"));
        let r: Reference = "127.0.0.1:5000/a/b__c-d--e.f:v1.0_x".parse().unwrap();
        assert_eq!(r.repository(), "a/b__c-d--e.f");
        assert_eq!(r.tag(), Some("v1.0_x"));
        let digest = format!("sha256:{}", "a".repeat(64));
        let r: Reference = format!("ghcr.io/o/app:1@{digest}").parse().unwrap();
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.digest().map(|d| d.to_string()), Some(digest));
        for bad in [
            "",
            "a:b:c",
            "app@sha256:xyz",
            "a..b",
            "-a",
            "a/",
            "/a",
            "h:99999999/a",
            "a:.x",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad} should be refused");
        }
        assert!(matches!(
            "127.0.0.1:5000/Python:3".parse::<Reference>(),
            Err(ReferenceError::Uppercase { .. })
        ));
    }
}
