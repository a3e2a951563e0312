//! The sync file: every image a team keeps in step, in one YAML document.
//!
//! ```yaml
//! defaults:
//!   target: ecr                  # or HOST[/PATH], oci-archive:FILE, oci:DIR
//!   prefix: base/
//!   platforms: [linux/amd64, linux/arm64]
//!   repository: { tag-mutability: MUTABLE, scan-on-push: true }
//! images:
//!   - from: python:3.10-slim-buster
//!     to: cruddur-python
//!   - from: node
//!     tags: { semver: ">=20 <23", latest: 3, exclude: ['.*-rc.*'] }
//!   - from: oci:./backend-flask/out:latest
//!     to: backend-flask:latest
//!     repository: { tag-mutability: IMMUTABLE }
//! log-groups:
//!   - { name: cruddur, retention-days: 1 }
//! ```
//!
//! The key names are a contract (other people's files are written against
//! them): keys may be added, never renamed. Unknown keys, wrong types and
//! values that cannot work (a bad reference, regex, range or platform) are
//! errors naming `FILE:LINE:COL` and what was expected, before anything is
//! read from a registry. Relative `oci:`/`oci-archive:` paths are relative to
//! the file's directory (to the working directory for standard input).
//!
//! YAML is read with `serde-saphyr`: maintained, pure safe Rust, with node
//! locations for every value and limits against alias bombs. `serde_yaml` is
//! archived and `serde_yml` is unsound (RUSTSEC-2025-0068).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mirror_ecr::RepositorySettings;
use mirror_engine::ReferrerSelection;
use mirror_layout::FileLocation;
use mirror_oci::PlatformFilter;
use mirror_signature::Keyring;

use crate::error::{FileError, Origin};
use crate::location::ImageLocation;
use crate::select::TagFilter;

/// What the file asks for, checked and resolved.
#[derive(Debug, Clone)]
pub struct SyncFile {
    pub images: Vec<Entry>,
    pub log_groups: Vec<LogGroup>,
}

/// One image entry: a source, where it goes, which tags.
#[derive(Debug, Clone)]
pub struct Entry {
    pub from: ImageLocation,
    /// `NAME[:TAG]` at the target.
    pub to: Option<String>,
    pub target: Target,
    pub prefix: Option<String>,
    pub tags: Tags,
    pub platforms: Vec<PlatformFilter>,
    pub repository: RepositorySettings,
    /// `referrers:` of the entry or the file's defaults; `None`: the run's
    /// `--referrers`.
    pub referrers: Option<ReferrerSelection>,
    /// `require-signature:` of the entry or the file's defaults (keys read
    /// when the file is); `None`: the run's `--require-signature`.
    pub require_signature: Option<Arc<Keyring>>,
    pub origin: Option<Origin>,
}

/// Where an entry's images go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The caller's ECR registry (GetAuthorizationToken says which).
    Ecr,
    /// Repositories under a registry host and optional path: `HOST[/PATH]`.
    Registry(String),
    /// One layout or archive for every image, each under ref name `NAME:TAG`.
    Files(FileLocation),
    /// Exactly this destination, named as `mirror copy` names it.
    Exact(ImageLocation),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ecr => f.write_str("ecr"),
            Self::Registry(base) => f.write_str(base),
            Self::Files(file) => write!(f, "{file}"),
            Self::Exact(location) => write!(f, "{location}"),
        }
    }
}

/// Which tags of the source an entry copies.
#[derive(Debug, Clone)]
pub enum Tags {
    /// The tag or digest `from` names (`latest` when it names neither).
    Named,
    /// These tags, each checked with one HEAD; no listing.
    List(Vec<String>),
    /// The repository's tags (one listing), filtered.
    Select(TagFilter),
}

impl Tags {
    pub fn needs_listing(&self) -> bool {
        matches!(self, Self::Select(_))
    }
}

/// `log-groups` entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogGroup {
    pub name: String,
    pub retention_days: Option<i32>,
    pub origin: Option<Origin>,
}

mod check;
mod raw;

use check::{Checker, yaml_error};
use raw::RawFile;

// ---- reading and checking ----------------------------------------------------

/// How the file is named in messages, and where its relative paths start.
#[derive(Debug, Clone)]
pub struct FileName {
    /// As given (`mirror.yaml`, `-` for standard input shown as `<stdin>`).
    pub shown: String,
    /// Relative `oci:` / `oci-archive:` paths are joined to this.
    pub base: PathBuf,
}

impl FileName {
    pub fn of_path(path: &Path) -> Self {
        Self {
            shown: path.display().to_string(),
            base: path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        }
    }

    pub fn stdin() -> Self {
        Self {
            shown: "<stdin>".to_owned(),
            base: PathBuf::from("."),
        }
    }
}

impl SyncFile {
    /// Reads `path` (`-`: standard input).
    pub fn read(path: &Path) -> Result<Self, FileError> {
        if path == Path::new("-") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|source| {
                FileError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            return Self::parse(&text, &FileName::stdin());
        }
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &FileName::of_path(path))
    }

    /// Parses and checks a sync file's text.
    pub fn parse(text: &str, name: &FileName) -> Result<Self, FileError> {
        let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| yaml_error(&e, name))?;
        let checker = Checker { name };
        let defaults = raw.defaults.unwrap_or_default();
        let default_target = match &defaults.target {
            Some(target) => Some(checker.target(target)?),
            None => None,
        };
        let default_platforms = checker.platforms(defaults.platforms.as_deref())?;
        let default_repository = defaults.repository.unwrap_or_default();
        let default_referrers = match &defaults.referrers {
            Some(referrers) => Some(checker.referrers(referrers)?),
            None => None,
        };
        let default_keyring = match &defaults.require_signature {
            Some(keys) => Some(checker.keyring(keys)?),
            None => None,
        };
        let mut images = Vec::new();
        for image in raw.images {
            let at = checker.origin(&image);
            let image = image.value;
            let from = checker.location(&image.from, "from")?;
            let target = match &image.target {
                Some(target) => checker.target(target)?,
                None => default_target.clone().unwrap_or(Target::Ecr),
            };
            let tags = match &image.tags {
                None => Tags::Named,
                Some(tags) => checker.tags(tags)?,
            };
            if !matches!(tags, Tags::Named) && (from.explicit_tag().is_some() || from.has_digest())
            {
                return Err(checker.invalid(
                    &image.from,
                    format!(
                        "`{}` names one tag or digest, and `tags` selects tags of the repository: give the repository alone",
                        image.from.value
                    ),
                ));
            }
            let platforms = match &image.platforms {
                Some(list) => checker.platforms(Some(list))?,
                None => default_platforms.clone(),
            };
            let repository = checker.repository(&default_repository, image.repository.as_ref())?;
            let referrers = match &image.referrers {
                Some(referrers) => Some(checker.referrers(referrers)?),
                None => default_referrers.clone(),
            };
            let require_signature = match &image.require_signature {
                Some(keys) => Some(checker.keyring(keys)?),
                None => default_keyring.clone(),
            };
            images.push(Entry {
                from,
                to: image.to.map(|t| t.value),
                target,
                prefix: image.prefix.or_else(|| defaults.prefix.clone()),
                tags,
                platforms,
                repository,
                referrers,
                require_signature,
                origin: Some(at),
            });
        }
        let mut log_groups = Vec::new();
        for group in raw.log_groups {
            let at = checker.origin(&group);
            let name = &group.value.name;
            mirror_ecr::logs::check_log_group_name(&name.value)
                .map_err(|e| checker.invalid(name, e.to_string()))?;
            if let Some(days) = &group.value.retention_days {
                mirror_ecr::logs::check_retention(days.value)
                    .map_err(|e| checker.invalid(days, e.to_string()))?;
            }
            log_groups.push(LogGroup {
                name: name.value.clone(),
                retention_days: group.value.retention_days.as_ref().map(|d| d.value),
                origin: Some(at),
            });
        }
        if images.is_empty() && log_groups.is_empty() {
            return Err(FileError::Invalid {
                file: name.shown.clone(),
                line: 1,
                column: 1,
                message: "nothing to do: expected `images:` (a list of entries with `from:`) and/or `log-groups:`".to_owned(),
            });
        }
        Ok(Self { images, log_groups })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SyncFile, FileError> {
        SyncFile::parse(
            text,
            &FileName {
                shown: "mirror.yaml".to_owned(),
                base: PathBuf::from("/srv/team"),
            },
        )
    }

    /// The example of the issue and the README, key by key.
    #[test]
    fn the_documented_example_reads_as_written() {
        let file = parse(
            r#"
defaults:
  target: ecr
  prefix: base/
  platforms: [linux/amd64, linux/arm64]
  repository: { tag-mutability: MUTABLE, scan-on-push: true }
images:
  - from: python:3.10-slim-buster
    to: cruddur-python
  - from: node
    tags: { semver: ">=20 <23", latest: 3, exclude: ['.*-rc.*'] }
  - from: oci:./backend-flask/out:latest
    to: backend-flask:latest
    repository: { tag-mutability: IMMUTABLE }
log-groups:
  - { name: cruddur, retention-days: 1 }
"#,
        )
        .expect("the example is valid");
        let [python, node, backend] = file.images.as_slice() else {
            panic!("three entries: {:?}", file.images);
        };
        assert_eq!(python.target, Target::Ecr);
        assert_eq!(python.to.as_deref(), Some("cruddur-python"));
        assert_eq!(python.prefix.as_deref(), Some("base/"));
        assert_eq!(python.platforms.len(), 2);
        assert_eq!(python.repository.tag_mutability.as_deref(), Some("MUTABLE"));
        assert_eq!(python.repository.scan_on_push, Some(true));
        assert!(matches!(python.tags, Tags::Named));
        let Tags::Select(filter) = &node.tags else {
            panic!("node selects tags");
        };
        assert_eq!(
            filter.describe(),
            "exclude `.*-rc.*`, semver `>=20 <23`, latest 3"
        );
        assert_eq!(
            backend.from.to_string(),
            "oci:/srv/team/./backend-flask/out:latest"
        );
        assert_eq!(
            backend.repository.tag_mutability.as_deref(),
            Some("IMMUTABLE")
        );
        assert_eq!(
            backend.repository.scan_on_push,
            Some(true),
            "defaults fill in"
        );
        assert_eq!(
            backend.origin.as_ref().map(ToString::to_string).as_deref(),
            Some("mirror.yaml:12:5")
        );
        assert_eq!(
            file.log_groups,
            [LogGroup {
                name: "cruddur".to_owned(),
                retention_days: Some(1),
                origin: Some(Origin {
                    file: "mirror.yaml".to_owned(),
                    line: 16,
                    column: 5
                }),
            }]
        );
    }

    #[test]
    fn targets_and_their_errors() {
        let target = |t: &str| {
            parse(&format!(
                "defaults:\n  target: {t}\nimages:\n  - from: alpine\n"
            ))
            .map(|f| f.images[0].target.clone())
        };
        assert_eq!(
            target("registry.example.com/mirror/").unwrap(),
            Target::Registry("registry.example.com/mirror".to_owned())
        );
        assert_eq!(
            target("localhost:5000").unwrap(),
            Target::Registry("localhost:5000".to_owned())
        );
        assert!(
            matches!(target("oci-archive:bundle.tar").unwrap(), Target::Files(f) if f.path() == Path::new("/srv/team/bundle.tar"))
        );
        for bad in [
            "mirror",
            "registry.example.com/x:tag",
            "oci:/x:latest",
            "dir:/x",
        ] {
            let err = target(bad).expect_err(bad).to_string();
            assert!(err.starts_with("mirror.yaml:2:11: target"), "{bad}: {err}");
        }
    }

    #[test]
    fn retention_and_log_group_names_are_checked_where_written() {
        let err = parse("log-groups:\n  - { name: cruddur, retention-days: 2 }\n")
            .expect_err("2 days is not a CloudWatch retention")
            .to_string();
        assert!(err.starts_with("mirror.yaml:2:38:"), "{err}");
        let err = parse("{}\n").expect_err("nothing to do").to_string();
        assert!(err.contains("nothing to do"), "{err}");
    }

    #[test]
    fn referrers_default_per_file_and_per_entry() {
        let file = parse(
            "defaults:\n  referrers: none\nimages:\n  - from: alpine\n  - from: node\n    referrers: [signature, sbom]\n  - from: redis\n    referrers: signature\n",
        )
        .unwrap();
        let referrers: Vec<Option<ReferrerSelection>> =
            file.images.iter().map(|e| e.referrers.clone()).collect();
        assert_eq!(
            referrers,
            [
                Some("none".parse().unwrap()),
                Some("signature,sbom".parse().unwrap()),
                Some("signature".parse().unwrap()),
            ]
        );
        let unset = parse("images:\n  - from: alpine\n").unwrap();
        assert_eq!(unset.images[0].referrers, None);
        let err = parse("images:\n  - from: alpine\n    referrers: sometimes\n")
            .expect_err("not a referrer kind")
            .to_string();
        assert!(
            err.starts_with("mirror.yaml:3:16:") && err.contains("sometimes"),
            "{err}"
        );
    }
}
