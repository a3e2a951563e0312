//! Why a run could not be planned, and why one tag of it failed. Messages
//! name the entry, the object and what was expected, never a command-line
//! flag or file key alone: the same error comes from `mirror copy` and from a
//! sync file, and each front end adds its own hint (see
//! [`SyncError::hint_topic`]). Each error says only its own part; what caused
//! it is its `source()`, so a front end can print the chain and find the
//! typed errors in it ([`causes`] joins it for one line).

use std::error::Error;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use mirror_ecr::EcrError;
use mirror_ecr::logs::LogsError;
use mirror_engine::{CopyError, EndpointError};
use mirror_layout::LayoutError;
use mirror_oci::ReferenceError;
use mirror_registry::RegistryError;

/// Where an entry came from, for messages: `FILE:LINE:COL` in a sync file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// `ORIGIN: ` before a message, when the entry has one.
pub(crate) struct At<'a>(pub &'a Option<Origin>);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(origin) => write!(f, "{origin}: "),
            None => Ok(()),
        }
    }
}

/// Why a location could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("`{input}` is not a location: {reason}")]
    Invalid { input: String, reason: String },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    File(#[from] LayoutError),
}

/// Why a sync file cannot be used. Always before anything was read from a
/// registry or written anywhere.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read the sync file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not YAML, an unknown key, a wrong type or a value out of range.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        line: u64,
        column: u64,
        message: String,
    },
}

/// How the command line should treat an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request cannot be carried out as written (exit 2).
    Usage,
    /// Something failed on the way (exit 1).
    Failed,
}

/// What a front end may want to explain under an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintTopic {
    /// A local image needs a repository name (`--to` / `to:`).
    NameLocalImage,
    /// A name with a tag where each selected tag keeps its own.
    DropTheTag,
    /// Tag selection needs a repository, not one tag of it.
    NameTheRepository,
    /// AWS credentials or region are missing.
    Aws,
}

/// Why a run could not be planned (nothing has been written when this is returned).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{at}{what} `{input}`", at = At(.origin))]
    Location {
        origin: Option<Origin>,
        what: &'static str,
        input: String,
        #[source]
        source: Box<LocationError>,
    },
    #[error("{at}{location} has no repository name to write it under", at = At(.origin))]
    NoRepositoryName {
        origin: Option<Origin>,
        location: String,
    },
    #[error("{at}{reason}", at = At(.origin))]
    RepositoryName {
        origin: Option<Origin>,
        reason: String,
    },
    #[error(
        "{at}{destination} names one tag, but several tags of {source_name} are selected and each is written under its own",
        at = At(.origin)
    )]
    OneTagForMany {
        origin: Option<Origin>,
        destination: String,
        source_name: String,
    },
    #[error(
        "{at}{location} names one tag or digest; tags are selected from a whole repository (give {name})",
        at = At(.origin)
    )]
    SelectionFromOneTag {
        origin: Option<Origin>,
        location: String,
        name: String,
    },
    #[error("{at}tags cannot be listed from {location}", at = At(.origin))]
    CannotList {
        origin: Option<Origin>,
        location: String,
    },
    #[error(
        "{at}{location} holds one image per name; several selected tags cannot all be written there",
        at = At(.origin)
    )]
    TargetTakesOneImage {
        origin: Option<Origin>,
        location: String,
    },
    #[error(
        "{at}no tag matches {filter} in {source_name} (it has {count} tag{s})",
        at = At(.origin),
        filter = if .filter.is_empty() { "at all" } else { .filter.as_str() },
        s = if *.count == 1 { "" } else { "s" }
    )]
    NothingSelected {
        origin: Option<Origin>,
        source_name: String,
        /// The selection in words (`regex `1.*`, latest 3`), or empty.
        filter: String,
        count: usize,
    },
    #[error(
        "{at}two entries write {destination}{first}: each destination tag may come from one source only",
        at = At(.second),
        first = .first.as_ref().map(|o| format!(" (the other is at {o})")).unwrap_or_default()
    )]
    DuplicateDestination {
        destination: String,
        first: Option<Origin>,
        second: Option<Origin>,
    },
    #[error("{at}a dry run writes nothing, so it cannot plan a write into {location}", at = At(.origin))]
    DryRunIntoFiles {
        origin: Option<Origin>,
        location: String,
    },
    #[error("no AWS region configured: set AWS_REGION or a profile region (for example us-east-1)")]
    NoRegion,
    #[error(transparent)]
    Aws(EcrError),
    #[error("cannot use {reference}")]
    Registry {
        reference: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("{at}source {name}: listing tags failed", at = At(.origin))]
    Listing {
        origin: Option<Origin>,
        name: String,
        #[source]
        source: Box<ListingError>,
    },
    #[error("cannot open {location}")]
    Open {
        location: String,
        #[source]
        source: Box<LayoutError>,
    },
}

/// Why a tag listing failed (the registry's or the layout's error is its
/// source, for a front end to find in the chain).
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    #[error("{0}")]
    Registry(#[source] RegistryError),
    #[error("{0}")]
    File(#[source] LayoutError),
}

impl From<RegistryError> for ListingError {
    fn from(error: RegistryError) -> Self {
        Self::Registry(error)
    }
}

impl From<LayoutError> for ListingError {
    fn from(error: LayoutError) -> Self {
        Self::File(error)
    }
}

impl SyncError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Open { source, .. } if is_usage_layout(source) => ErrorKind::Usage,
            Self::Aws(_)
            | Self::Listing { .. }
            | Self::NothingSelected { .. }
            | Self::Open { .. } => ErrorKind::Failed,
            _ => ErrorKind::Usage,
        }
    }

    /// What a front end may add under this error.
    pub fn hint_topic(&self) -> Option<HintTopic> {
        match self {
            Self::NoRepositoryName { .. } => Some(HintTopic::NameLocalImage),
            Self::OneTagForMany { .. } => Some(HintTopic::DropTheTag),
            Self::SelectionFromOneTag { .. } => Some(HintTopic::NameTheRepository),
            Self::NoRegion => Some(HintTopic::Aws),
            Self::Aws(EcrError::NoCredentials { .. }) => Some(HintTopic::Aws),
            _ => None,
        }
    }
}

fn is_usage_layout(error: &LayoutError) -> bool {
    matches!(
        error,
        LayoutError::InvalidRepoTag { .. } | LayoutError::InvalidTag { .. }
    )
}

/// Why one tag (or log group) of a run failed: the copy's own error, or
/// what stopped it before the copy began. Shared, so that reports stay
/// cloneable; its `source()` is the typed error itself (a [`CopyError`], a
/// [`SyncError`], a [`LogsError`]), so a front end finds it by downcasting
/// the chain.
#[derive(Debug, Clone)]
pub enum RunError {
    /// The copy (or a HEAD the plan sent for it) failed.
    Copy(Arc<CopyError>),
    /// The tag's source or destination could not be set up.
    Setup(Arc<SyncError>),
    /// Ensuring a log group failed.
    Logs(Arc<LogsError>),
    /// A dry run ensures nothing.
    DryRun,
}

impl RunError {
    /// Whether the request cannot be carried out as asked (not a transfer
    /// that failed).
    pub fn is_usage(&self) -> bool {
        match self {
            Self::Copy(error) => {
                error.is_usage()
                    || chain(error.as_ref()).any(|link| {
                        link.downcast_ref::<EndpointError>()
                            .and_then(|e| match e {
                                EndpointError::Backend(inner) => {
                                    inner.downcast_ref::<LayoutError>()
                                }
                                _ => None,
                            })
                            .or_else(|| link.downcast_ref::<LayoutError>())
                            .is_some_and(is_usage_layout)
                    })
            }
            Self::Setup(error) => error.kind() == ErrorKind::Usage,
            Self::Logs(_) | Self::DryRun => false,
        }
    }

    /// The message and its causes on one line (`a: b: c`), for plans and
    /// summaries.
    pub fn one_line(&self) -> String {
        causes(self).join(": ")
    }
}

impl From<CopyError> for RunError {
    fn from(error: CopyError) -> Self {
        Self::Copy(Arc::new(error))
    }
}

impl From<SyncError> for RunError {
    fn from(error: SyncError) -> Self {
        Self::Setup(Arc::new(error))
    }
}

impl From<LogsError> for RunError {
    fn from(error: LogsError) -> Self {
        Self::Logs(Arc::new(error))
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Copy(e) => e.fmt(f),
            Self::Setup(e) => e.fmt(f),
            Self::Logs(e) => e.fmt(f),
            Self::DryRun => f.write_str("not ensured: dry run"),
        }
    }
}

impl Error for RunError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Copy(e) => Some(e.as_ref()),
            Self::Setup(e) => Some(e.as_ref()),
            Self::Logs(e) => Some(e.as_ref()),
            Self::DryRun => None,
        }
    }
}

/// Two run errors are the same when they say the same (plans compare states).
impl PartialEq for RunError {
    fn eq(&self, other: &Self) -> bool {
        self.one_line() == other.one_line()
    }
}

impl Eq for RunError {}

impl serde::Serialize for RunError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.one_line())
    }
}

/// An error and its sources, outermost first.
fn chain<'a>(error: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |e: &&'a (dyn Error + 'static)| (*e).source())
}

/// What an error and its sources say, outermost first, each text once (a
/// wrapper that repeats its source's message is left out).
pub fn causes(error: &(dyn Error + 'static)) -> Vec<String> {
    let mut texts: Vec<String> = Vec::new();
    for link in chain(error) {
        let text = link.to_string();
        if text.is_empty() || texts.contains(&text) {
            continue;
        }
        texts.push(text);
    }
    texts
}
