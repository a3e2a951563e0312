//! Naming rules: which repository and tag an image gets at its destination.
//!
//! - Into a registry by name (ECR, or `target: HOST[/PATH]`): the source's
//!   repository path without Docker Hub's `library/` (`python:3.10` ->
//!   `python`, `ghcr.io/org/app` -> `org/app`) under an optional prefix, or
//!   the name given (`to: NAME[:TAG]`); the tag is the source's.
//! - Into a layout or archive of many images: the same name and tag as an
//!   `index.json` ref name, `NAME:TAG`.
//! - `mirror copy SRC DST`: DST as written; without a tag it keeps the
//!   source's (a layout's only ref name, a docker-archive's `NAME:TAG` in
//!   Docker's familiar form).

use mirror_layout::FileLocation;
use mirror_oci::Reference;

use crate::error::{Origin, SyncError};
use crate::file::Target;
use crate::location::ImageLocation;

/// The repository name an image gets by default: its path without Docker
/// Hub's `library/`, under `prefix`.
pub fn repository_name(source: &Reference, prefix: Option<&str>) -> String {
    let path = if source.is_docker_hub() {
        source
            .repository()
            .strip_prefix("library/")
            .unwrap_or(source.repository())
    } else {
        source.repository()
    };
    format!("{}{path}", prefix.unwrap_or(""))
}

/// `NAME[:TAG]` split at the tag's `:` (a `:` before the last `/` is a port).
pub fn split_name_tag(text: &str) -> (String, Option<String>) {
    match text.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_owned(), Some(tag.to_owned())),
        _ => (text.to_owned(), None),
    }
}

/// Which registry naming rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRules {
    /// ECR's repository-name grammar is checked before anything is sent.
    Ecr,
    /// Any registry: the reference grammar decides.
    Registry,
}

/// The repository name and tag an image gets under a name-giving target.
fn name_and_tag(
    source: &ImageLocation,
    to: Option<&str>,
    prefix: Option<&str>,
    origin: &Option<Origin>,
) -> Result<(String, Option<String>), SyncError> {
    match (to, source) {
        (Some(to), _) => {
            let (name, tag) = split_name_tag(to);
            Ok((format!("{}{name}", prefix.unwrap_or("")), tag))
        }
        (None, ImageLocation::Registry(source)) => Ok((repository_name(source, prefix), None)),
        (None, ImageLocation::File(file)) => Err(SyncError::NoRepositoryName {
            origin: origin.clone(),
            location: file.to_string(),
        }),
    }
}

/// Where an image goes in a registry named by `base` (`HOST` or
/// `HOST/PATH`): `base/NAME:TAG`, `base/NAME@DIGEST` for a source named by
/// digest alone.
pub fn registry_destination(
    base: &str,
    rules: NameRules,
    source: &ImageLocation,
    to: Option<&str>,
    prefix: Option<&str>,
    origin: &Option<Origin>,
) -> Result<Reference, SyncError> {
    let (name, tag) = name_and_tag(source, to, prefix, origin)?;
    let base = base.trim_end_matches('/');
    let repository = match base.split_once('/') {
        Some((_, path)) => format!("{path}/{name}"),
        None => name.clone(),
    };
    if rules == NameRules::Ecr {
        mirror_ecr::check_repository_name(&repository).map_err(|reason| {
            SyncError::RepositoryName {
                origin: origin.clone(),
                reason,
            }
        })?;
    }
    let source_reference = match source {
        ImageLocation::Registry(r) => r.clone(),
        // A local image keeps its layout tag, else `latest`.
        ImageLocation::File(_) => Reference::new(
            "localhost",
            "local",
            Some(source.explicit_tag().as_deref().unwrap_or("latest")),
            None,
        ),
    };
    let text = match (
        tag,
        source_reference.digest(),
        source_reference.has_explicit_tag(),
    ) {
        (Some(tag), _, _) => format!("{base}/{name}:{tag}"),
        (None, _, true) | (None, None, _) => format!(
            "{base}/{name}:{}",
            source_reference.tag().unwrap_or("latest")
        ),
        (None, Some(digest), false) => format!("{base}/{name}@{digest}"),
    };
    text.parse::<Reference>()
        .map_err(|e| SyncError::RepositoryName {
            origin: origin.clone(),
            reason: e.to_string(),
        })
}

/// The ref name an image gets in a layout or archive of many images: `NAME:TAG`.
pub fn file_destination(
    file: &FileLocation,
    source: &ImageLocation,
    to: Option<&str>,
    prefix: Option<&str>,
    origin: &Option<Origin>,
) -> Result<FileLocation, SyncError> {
    Ok(file.with_tag(Some(ref_name(source, to, prefix, origin)?)))
}

/// `NAME:TAG` under the naming rules, checked against the ref-name grammar.
fn ref_name(
    source: &ImageLocation,
    to: Option<&str>,
    prefix: Option<&str>,
    origin: &Option<Origin>,
) -> Result<String, SyncError> {
    let (name, tag) = name_and_tag(source, to, prefix, origin)?;
    let tag = tag
        .or_else(|| source.explicit_tag())
        .or_else(|| source.registry().and_then(|r| r.tag().map(str::to_owned)))
        .unwrap_or_else(|| "latest".to_owned());
    let ref_name = format!("{name}:{tag}");
    mirror_layout::validate_tag(&ref_name).map_err(|e| SyncError::RepositoryName {
        origin: origin.clone(),
        reason: e.to_string(),
    })?;
    Ok(ref_name)
}

/// The prefix that names an image in an air-gap bundle as its target would
/// name its repository: a `HOST/PATH` target's `PATH/` before the entry's
/// own prefix (the host is left to the far side, so a bundle does not
/// depend on how the far side reaches its registry).
pub(crate) fn bundle_prefix(target: &Target, prefix: Option<&str>) -> String {
    let own = prefix.unwrap_or("");
    match target {
        Target::Registry(base) => match base.trim_end_matches('/').split_once('/') {
            Some((_, path)) => format!("{path}/{own}"),
            None => own.to_owned(),
        },
        Target::Ecr | Target::Files(_) | Target::Exact(_) => own.to_owned(),
    }
}

/// The ref name an image gets in an air-gap bundle (`mirror sync
/// --to-archive`): the repository path its target gives it, without the
/// registry host, and its tag (`base/python:3.10` for `python:3.10` under
/// `target: HOST/base`). The import maps it back to the same target.
pub fn bundle_ref_name(
    target: &Target,
    source: &ImageLocation,
    to: Option<&str>,
    prefix: Option<&str>,
    origin: &Option<Origin>,
) -> Result<String, SyncError> {
    ref_name(source, to, Some(&bundle_prefix(target, prefix)), origin)
}

/// The repository name and tag an entry gives one image, without its
/// prefix: what the import writes as `to:` to push a bundle's image where a
/// sync from the source would have.
pub(crate) fn unprefixed_name(
    source: &ImageLocation,
    to: Option<&str>,
    origin: &Option<Origin>,
) -> Result<String, SyncError> {
    Ok(name_and_tag(source, to, None, origin)?.0)
}

/// The destination reference as given, or with the source's tag when it has none.
pub fn destination_reference(source: &Reference, destination: &Reference) -> String {
    if let Some(digest) = destination.digest() {
        return digest.to_string();
    }
    if destination.has_explicit_tag() {
        return destination.tag().unwrap_or("latest").to_owned();
    }
    match (
        source.has_explicit_tag().then(|| source.tag()).flatten(),
        source.digest(),
    ) {
        (Some(tag), _) => tag.to_owned(),
        (None, Some(digest)) => digest.to_string(),
        (None, None) => source.tag().unwrap_or("latest").to_owned(),
    }
}

/// `destination` named by a digest or a tag (a tag from a layout's ref name is
/// checked against the registry tag grammar).
pub fn named_by(destination: &Reference, reference: &str) -> Result<Reference, SyncError> {
    match mirror_oci::parse_digest(reference) {
        Ok(digest) => Ok(destination.with_digest(digest)),
        Err(_) => {
            let text = format!("{}:{reference}", destination.name());
            text.parse().map_err(|e| SyncError::Location {
                origin: None,
                what: "destination",
                input: text,
                source: Box::new(crate::error::LocationError::Reference(e)),
            })
        }
    }
}

/// The ref name of a layout's only image, if it has exactly one, named.
async fn only_ref_name(location: &FileLocation) -> Option<String> {
    match mirror_layout::list(location).await.ok()?.as_slice() {
        [(Some(name), _)] => Some(name.clone()),
        _ => None,
    }
}

/// The `RepoTags` entry a docker-archive gets from its source when the
/// destination names none: a registry reference in Docker's familiar form
/// (`docker.io/library/python:3.10` -> `python:3.10`), a local image's
/// `NAME:TAG`; `None` (an untagged image) when there is no such name.
async fn docker_repo_tag_from(source: &ImageLocation) -> Option<String> {
    match source {
        ImageLocation::Registry(r) => r.tag().map(|tag| format!("{}:{tag}", r.familiar_name())),
        ImageLocation::File(file) => {
            let named = match file {
                FileLocation::DockerArchive { reference, .. } => reference.clone(),
                _ => source.explicit_tag(),
            };
            let name = match named {
                Some(name) => name,
                None => only_ref_name(file).await?,
            };
            mirror_layout::repo_tag_of(&name)
        }
    }
}

/// `mirror copy SRC DST`: the destination as the copy writes it. A registry
/// destination without a tag keeps the source's (or a layout's only ref
/// name), a layout or archive without one takes the source's tag, a
/// docker-archive gets Docker's `RepoTags` entry (as given, in familiar form,
/// else the source's name).
pub async fn copy_destination(
    source: &ImageLocation,
    destination: ImageLocation,
) -> Result<ImageLocation, SyncError> {
    Ok(match destination {
        ImageLocation::Registry(d) => {
            let reference = match source {
                ImageLocation::Registry(s) => destination_reference(s, &d),
                ImageLocation::File(_) if d.has_explicit_tag() || d.digest().is_some() => {
                    d.reference_str()
                }
                ImageLocation::File(file) => match source.explicit_tag() {
                    Some(tag) => tag,
                    None => only_ref_name(file)
                        .await
                        .unwrap_or_else(|| "latest".to_owned()),
                },
            };
            ImageLocation::Registry(named_by(&d, &reference)?)
        }
        ImageLocation::File(
            file @ (FileLocation::OciDir { tag: None, .. }
            | FileLocation::OciArchive { tag: None, .. }),
        ) => ImageLocation::File(file.with_tag(source.explicit_tag())),
        ImageLocation::File(FileLocation::DockerArchive { path, reference }) => {
            let reference = match reference {
                Some(r) => Some(
                    mirror_layout::repo_tag(&r).map_err(|e| SyncError::Location {
                        origin: None,
                        what: "destination",
                        input: format!("docker-archive:{}:{r}", path.display()),
                        source: Box::new(crate::error::LocationError::File(e)),
                    })?,
                ),
                None => docker_repo_tag_from(source).await,
            };
            ImageLocation::File(FileLocation::DockerArchive { path, reference })
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(text: &str) -> ImageLocation {
        ImageLocation::parse(text).unwrap()
    }

    #[test]
    fn repository_names_drop_library() {
        let r: Reference = "python:3.10-slim-buster".parse().unwrap();
        assert_eq!(repository_name(&r, None), "python");
        assert_eq!(repository_name(&r, Some("mirror/")), "mirror/python");
        let r: Reference = "ghcr.io/org/app:1".parse().unwrap();
        assert_eq!(repository_name(&r, None), "org/app");
        assert_eq!(
            split_name_tag("cruddur-python"),
            ("cruddur-python".to_owned(), None)
        );
        assert_eq!(
            split_name_tag("team/python:3.10"),
            ("team/python".to_owned(), Some("3.10".to_owned()))
        );
    }

    #[test]
    fn registry_destinations() {
        let host = "1.dkr.ecr.us-east-1.amazonaws.com";
        let at = |source: &str, to: Option<&str>, prefix: Option<&str>| {
            registry_destination(host, NameRules::Ecr, &location(source), to, prefix, &None)
                .map(|r| r.to_string())
        };
        assert_eq!(
            at("python:3.10-slim-buster", Some("cruddur-python"), None).unwrap(),
            format!("{host}/cruddur-python:3.10-slim-buster")
        );
        assert_eq!(
            at("python", None, Some("base/")).unwrap(),
            format!("{host}/base/python:latest")
        );
        assert_eq!(
            at("oci:/x:latest", Some("backend-flask:latest"), None).unwrap(),
            format!("{host}/backend-flask:latest")
        );
        assert!(matches!(
            at("oci:/x:latest", None, None),
            Err(SyncError::NoRepositoryName { .. })
        ));
        assert!(matches!(
            at("python", Some("Bad_Name"), None),
            Err(SyncError::RepositoryName { .. })
        ));
        let under = registry_destination(
            "registry.example.com/mirror/",
            NameRules::Registry,
            &location("node:22"),
            None,
            None,
            &None,
        )
        .unwrap();
        assert_eq!(under.to_string(), "registry.example.com/mirror/node:22");
    }

    #[test]
    fn bundle_names_are_target_paths_without_the_host() {
        let at = |target: Target, source: &str, to: Option<&str>, prefix: Option<&str>| {
            bundle_ref_name(&target, &location(source), to, prefix, &None).unwrap()
        };
        let registry = |base: &str| Target::Registry(base.to_owned());
        assert_eq!(at(Target::Ecr, "python:3.10", None, None), "python:3.10");
        assert_eq!(
            at(
                registry("far.example:5000/base"),
                "python:3.10",
                None,
                Some("team/")
            ),
            "base/team/python:3.10"
        );
        assert_eq!(
            at(
                registry("far.example:5000"),
                "ghcr.io/org/app:1",
                Some("app"),
                None
            ),
            "app:1"
        );
        assert_eq!(
            at(
                registry("far.example/a/b/"),
                "oci:/x:v1",
                Some("flask:2"),
                None
            ),
            "a/b/flask:2"
        );
    }

    #[test]
    fn file_destinations_are_ref_names() {
        let file = FileLocation::parse("oci-archive:/b.tar").unwrap().unwrap();
        let named = file_destination(&file, &location("python:3.10"), None, None, &None).unwrap();
        assert_eq!(named.to_string(), "oci-archive:/b.tar:python:3.10");
        let named = file_destination(
            &file,
            &location("oci:/x:latest"),
            Some("backend-flask"),
            None,
            &None,
        )
        .unwrap();
        assert_eq!(named.to_string(), "oci-archive:/b.tar:backend-flask:latest");
    }
}
