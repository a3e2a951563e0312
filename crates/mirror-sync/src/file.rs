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

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mirror_ecr::RepositorySettings;
use mirror_engine::ReferrerSelection;
use mirror_layout::FileLocation;
use mirror_oci::PlatformFilter;
use mirror_signature::Keyring;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

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

// ---- the YAML shape ---------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    #[serde(default)]
    defaults: Option<RawDefaults>,
    #[serde(default)]
    images: Vec<Spanned<RawImage>>,
    #[serde(default)]
    log_groups: Vec<Spanned<RawLogGroup>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDefaults {
    target: Option<Spanned<String>>,
    prefix: Option<String>,
    platforms: Option<Vec<Spanned<String>>>,
    repository: Option<RawRepository>,
    referrers: Option<Spanned<RawStrings>>,
    require_signature: Option<Spanned<RawStrings>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawImage {
    from: Spanned<String>,
    to: Option<Spanned<String>>,
    target: Option<Spanned<String>>,
    prefix: Option<String>,
    tags: Option<Spanned<RawTags>>,
    platforms: Option<Vec<Spanned<String>>>,
    repository: Option<RawRepository>,
    referrers: Option<Spanned<RawStrings>>,
    require_signature: Option<Spanned<RawStrings>>,
}

/// One string or a list of them: `referrers: signature,sbom` or
/// `referrers: [signature, sbom]`; `require-signature: cosign:KEY.pub` or a
/// list of keys.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawStrings {
    One(String),
    Many(Vec<String>),
}

impl RawStrings {
    fn items(&self) -> Vec<String> {
        match self {
            Self::One(text) => vec![text.clone()],
            Self::Many(items) => items.clone(),
        }
    }
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRepository {
    tag_mutability: Option<Spanned<String>>,
    tag_mutability_exclusions: Option<Vec<String>>,
    scan_on_push: Option<bool>,
    encryption: Option<Spanned<String>>,
    kms_key: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    /// `false`: only use an existing repository.
    create: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLogGroup {
    name: Spanned<String>,
    retention_days: Option<Spanned<i32>>,
}

/// `tags:` is a list of tags or a map of filters.
enum RawTags {
    List(Vec<String>),
    Select {
        regex: Option<String>,
        exclude: Vec<String>,
        semver: Option<String>,
        latest: Option<usize>,
    },
}

impl<'de> Deserialize<'de> for RawTags {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TagsVisitor;

        impl<'de> Visitor<'de> for TagsVisitor {
            type Value = RawTags;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a list of tags ([\"3.10\", \"3.11\"]) or a map with regex, exclude, semver, latest",
                )
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawTags, A::Error> {
                let mut tags = Vec::new();
                while let Some(tag) = seq.next_element::<TagText>()? {
                    tags.push(tag.0);
                }
                Ok(RawTags::List(tags))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawTags, A::Error> {
                const FIELDS: &[&str] = &["regex", "exclude", "semver", "latest"];
                let (mut regex, mut exclude, mut semver, mut latest) = (None, None, None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "regex" if regex.is_none() => regex = Some(map.next_value()?),
                        "exclude" if exclude.is_none() => {
                            exclude = Some(map.next_value::<OneOrMany>()?.0);
                        }
                        "semver" if semver.is_none() => semver = Some(map.next_value()?),
                        "latest" if latest.is_none() => latest = Some(map.next_value()?),
                        known if FIELDS.contains(&known) => {
                            return Err(de::Error::duplicate_field(
                                FIELDS[FIELDS.iter().position(|f| *f == known).unwrap_or(0)],
                            ));
                        }
                        other => return Err(de::Error::unknown_field(other, FIELDS)),
                    }
                }
                Ok(RawTags::Select {
                    regex,
                    exclude: exclude.unwrap_or_default(),
                    semver,
                    latest,
                })
            }
        }

        deserializer.deserialize_any(TagsVisitor)
    }
}

/// A tag as written: `3.10` stays the text `3.10`, not the number 3.1.
struct TagText(String);

impl<'de> Deserialize<'de> for TagText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl Visitor<'_> for TextVisitor {
            type Value = TagText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a tag (quote tags that look like numbers: \"3.10\")")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<TagText, E> {
                Ok(TagText(v.to_owned()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TagText, E> {
                Ok(TagText(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<TagText, E> {
                Err(E::custom(
                    "this tag reads as a number: quote it (\"3.10\"), or 3.10 becomes 3.1",
                ))
            }
        }

        deserializer.deserialize_any(TextVisitor)
    }
}

/// `exclude: '.*-rc.*'` or `exclude: [a, b]`.
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;

        impl<'de> Visitor<'de> for ListVisitor {
            type Value = OneOrMany;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a regular expression or a list of them")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut all = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    all.push(item);
                }
                Ok(OneOrMany(all))
            }
        }

        deserializer.deserialize_any(ListVisitor)
    }
}

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

/// A YAML or shape error with its position.
fn yaml_error(error: &serde_saphyr::Error, name: &FileName) -> FileError {
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

struct Checker<'a> {
    name: &'a FileName,
}

impl Checker<'_> {
    fn origin<T>(&self, value: &Spanned<T>) -> Origin {
        Origin {
            file: self.name.shown.clone(),
            line: value.referenced.line(),
            column: value.referenced.column(),
        }
    }

    /// `referrers:`: what `--referrers` takes, as one string or a list.
    fn referrers(&self, value: &Spanned<RawStrings>) -> Result<ReferrerSelection, FileError> {
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
    fn keyring(&self, value: &Spanned<RawStrings>) -> Result<Arc<Keyring>, FileError> {
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

    fn invalid<T>(&self, value: &Spanned<T>, message: String) -> FileError {
        FileError::Invalid {
            file: self.name.shown.clone(),
            line: value.referenced.line(),
            column: value.referenced.column(),
            message,
        }
    }

    /// Relative paths of local locations start at the file's directory.
    fn rebase(&self, file: FileLocation) -> FileLocation {
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

    fn location(&self, text: &Spanned<String>, key: &str) -> Result<ImageLocation, FileError> {
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

    fn target(&self, text: &Spanned<String>) -> Result<Target, FileError> {
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

    fn platforms(
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

    fn tags(&self, tags: &Spanned<RawTags>) -> Result<Tags, FileError> {
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

    fn repository(
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
fn is_valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
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
