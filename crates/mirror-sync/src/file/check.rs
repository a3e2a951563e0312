//! Checks and resolves each value of a sync file, naming `FILE:LINE:COL`
//! and what was expected when a value cannot work.

use std::path::Path;
use std::sync::Arc;

use mirror_ecr::RepositorySettings;
use mirror_engine::ReferrerSelection;
use mirror_layout::FileLocation;
use mirror_oci::PlatformFilter;
use mirror_signature::Keyring;
use serde_saphyr::Spanned;

use super::raw::{RawRepository, RawStrings, RawTags};
use super::{FileName, Tags, Target};
use crate::error::{FileError, Origin};
use crate::location::ImageLocation;
use crate::select::TagFilter;

/// A YAML or shape error with its position.
pub(super) fn yaml_error(error: &serde_saphyr::Error, name: &FileName) -> FileError {
    let (line, column) = error
        .location()
        .map_or((1, 1), |l| (l.line().max(1), l.column().max(1)));
    let message = error.without_snippet().to_string();
    // The library appends its own "at line L column C"; ours leads.
    let message = match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    };
    FileError::Invalid {
        file: name.shown.clone(),
        line,
        column,
        message,
    }
}

pub(super) struct Checker<'a> {
    pub(super) name: &'a FileName,
}

impl Checker<'_> {
    pub(super) fn origin<T>(&self, value: &Spanned<T>) -> Origin {
        Origin {
            file: self.name.shown.clone(),
            line: value.referenced.line(),
            column: value.referenced.column(),
        }
    }

    /// `referrers:`: what `--referrers` takes, as one string or a list.
    pub(super) fn referrers(
        &self,
        value: &Spanned<RawStrings>,
    ) -> Result<ReferrerSelection, FileError> {
        let text = value.value.items().join(",");
        text.parse::<ReferrerSelection>().map_err(|e| {
            self.invalid(
                value,
                format!(
                    "referrers `{text}`: {e} (expected all, none, or some of signature, sbom, attestation and artifact types)"
                ),
            )
        })
    }

    /// `require-signature:`: `cosign:KEY.pub` keys (relative paths start at
    /// the file's directory), read now so that a missing or unusable key is
    /// an error before anything moves.
    pub(super) fn keyring(&self, value: &Spanned<RawStrings>) -> Result<Arc<Keyring>, FileError> {
        let keys: Vec<String> = value
            .value
            .items()
            .iter()
            .map(|key| match key.strip_prefix("cosign:") {
                Some(path) if !path.is_empty() && Path::new(path).is_relative() => {
                    format!("cosign:{}", self.name.base.join(path).display())
                }
                _ => key.clone(),
            })
            .collect();
        Keyring::load(&keys).map(Arc::new).map_err(|e| {
            self.invalid(
                value,
                format!("require-signature: {e} (expected cosign:KEY.pub, or a list of them)"),
            )
        })
    }

    pub(super) fn invalid<T>(&self, value: &Spanned<T>, message: String) -> FileError {
        FileError::Invalid {
            file: self.name.shown.clone(),
            line: value.referenced.line(),
            column: value.referenced.column(),
            message,
        }
    }

    /// Relative paths of local locations start at the file's directory.
    pub(super) fn rebase(&self, file: FileLocation) -> FileLocation {
        let path = file.path();
        if path.is_absolute() {
            return file;
        }
        let joined = self.name.base.join(path);
        match file {
            FileLocation::OciDir { tag, .. } => FileLocation::OciDir { path: joined, tag },
            FileLocation::OciArchive { tag, .. } => FileLocation::OciArchive { path: joined, tag },
            FileLocation::DockerArchive { reference, .. } => FileLocation::DockerArchive {
                path: joined,
                reference,
            },
        }
    }

    pub(super) fn location(
        &self,
        text: &Spanned<String>,
        key: &str,
    ) -> Result<ImageLocation, FileError> {
        match ImageLocation::parse(&text.value) {
            Ok(ImageLocation::File(file)) => Ok(ImageLocation::File(self.rebase(file))),
            Ok(location) => Ok(location),
            Err(e) => Err(self.invalid(
                text,
                format!(
                    "`{key}`: {e} (expected an image reference such as python:3.10-slim-buster, or oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG])"
                ),
            )),
        }
    }

    pub(super) fn target(&self, text: &Spanned<String>) -> Result<Target, FileError> {
        let value = text.value.trim();
        let expected = "expected `ecr`, a registry HOST[/PATH], `oci-archive:FILE` or `oci:DIR`";
        if value == "ecr" {
            return Ok(Target::Ecr);
        }
        match FileLocation::parse(value) {
            Ok(Some(
                file @ (FileLocation::OciDir { tag: None, .. }
                | FileLocation::OciArchive { tag: None, .. }),
            )) => {
                return Ok(Target::Files(self.rebase(file)));
            }
            Ok(Some(_)) => {
                return Err(self.invalid(
                    text,
                    format!(
                        "target `{value}`: a target names a whole layout or archive (each image gets NAME:TAG in it); {expected}"
                    ),
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(self.invalid(text, format!("target `{value}`: {e}"))),
        }
        // HOST[/PATH]: a reference without tag or digest.
        let probe = format!("{}/probe", value.trim_end_matches('/'));
        let host_like = value
            .split('/')
            .next()
            .is_some_and(|h| h.contains('.') || h.contains(':') || h == "localhost");
        match probe.parse::<mirror_oci::Reference>() {
            Ok(r) if host_like && !r.has_explicit_tag() && r.digest().is_none() => {
                Ok(Target::Registry(value.trim_end_matches('/').to_owned()))
            }
            _ => Err(self.invalid(text, format!("target `{value}`: {expected}"))),
        }
    }

    pub(super) fn platforms(
        &self,
        list: Option<&[Spanned<String>]>,
    ) -> Result<Vec<PlatformFilter>, FileError> {
        list.unwrap_or_default()
            .iter()
            .map(|p| {
                p.value
                    .parse::<PlatformFilter>()
                    .map_err(|e| self.invalid(p, e.to_string()))
            })
            .collect()
    }

    pub(super) fn tags(&self, tags: &Spanned<RawTags>) -> Result<Tags, FileError> {
        let invalid = |e: crate::select::FilterError| self.invalid(tags, format!("tags: {e}"));
        Ok(match &tags.value {
            RawTags::List(list) => {
                if list.is_empty() {
                    return Err(self.invalid(tags, "tags: the list is empty".to_owned()));
                }
                for tag in list {
                    if !is_valid_tag(tag) {
                        return Err(self.invalid(
                            tags,
                            format!("tags: `{tag}` is not a tag (up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`)"),
                        ));
                    }
                }
                Tags::List(list.clone())
            }
            RawTags::Select {
                regex,
                exclude,
                semver,
                latest,
            } => {
                let mut filter = TagFilter::all();
                if let Some(regex) = regex {
                    filter = filter.with_regex(regex).map_err(invalid)?;
                }
                for pattern in exclude {
                    filter = filter.with_exclude(pattern).map_err(invalid)?;
                }
                if let Some(range) = semver {
                    filter = filter.with_semver(range).map_err(invalid)?;
                }
                if let Some(count) = latest {
                    filter = filter.with_latest(*count).map_err(invalid)?;
                }
                Tags::Select(filter)
            }
        })
    }

    pub(super) fn repository(
        &self,
        defaults: &RawRepository,
        entry: Option<&RawRepository>,
    ) -> Result<RepositorySettings, FileError> {
        let entry = entry.cloned().unwrap_or_default();
        let mutability = entry
            .tag_mutability
            .or_else(|| defaults.tag_mutability.clone());
        let encryption = entry.encryption.or_else(|| defaults.encryption.clone());
        if let Some(m) = &mutability
            && !mirror_ecr::TAG_MUTABILITY_VALUES.contains(&m.value.as_str())
        {
            return Err(self.invalid(
                m,
                format!(
                    "repository: tag-mutability `{}`: expected one of {}",
                    m.value,
                    mirror_ecr::TAG_MUTABILITY_VALUES.join(", ")
                ),
            ));
        }
        if let Some(e) = &encryption
            && !matches!(e.value.as_str(), "AES256" | "KMS" | "KMS_DSSE")
        {
            return Err(self.invalid(
                e,
                format!(
                    "repository: encryption `{}`: expected AES256, KMS or KMS_DSSE",
                    e.value
                ),
            ));
        }
        let settings = RepositorySettings {
            tag_mutability: mutability.as_ref().map(|m| m.value.clone()),
            exclusion_filters: entry
                .tag_mutability_exclusions
                .or_else(|| defaults.tag_mutability_exclusions.clone())
                .unwrap_or_default(),
            scan_on_push: entry.scan_on_push.or(defaults.scan_on_push),
            encryption: encryption.as_ref().map(|e| e.value.clone()),
            kms_key: entry.kms_key.or_else(|| defaults.kms_key.clone()),
            tags: entry
                .tags
                .or_else(|| defaults.tags.clone())
                .unwrap_or_default()
                .into_iter()
                .collect(),
            no_create: !entry.create.or(defaults.create).unwrap_or(true),
        };
        if let Err(e) = settings.validate() {
            let at = mutability.as_ref().or(encryption.as_ref());
            let message = format!("repository: {e}");
            return Err(match at {
                Some(at) => self.invalid(at, message),
                None => FileError::Invalid {
                    file: self.name.shown.clone(),
                    line: 1,
                    column: 1,
                    message,
                },
            });
        }
        Ok(settings)
    }
}

/// Docker's tag grammar: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub(super) fn is_valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}
