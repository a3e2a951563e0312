//! Copy errors: which side, which object, what went wrong. Each error's own
//! message says only its own part; what caused it is its `source()`, which
//! the binary prints as `cause:` lines and turns into hints and exit codes.
//! Nothing here names a command-line flag.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mirror_oci::Digest;

use crate::endpoint::EndpointError;

/// Which end of a copy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Source => "source",
            Self::Destination => "destination",
        })
    }
}

/// Why a blob transfer stopped trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// The failure is not one a fresh attempt can fix (wrong content, refusal).
    NotTransient,
    /// Every attempt failed.
    Attempts,
    /// The server asked to wait longer than the retry budget allows.
    RetryAfter { asked: Duration, budget: Duration },
}

/// A bound on how far one copy walks, hit by the source's manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Indexes nested deeper than this many levels (the root is level 1).
    Nesting(usize),
    /// More distinct manifests than this (root included).
    Manifests(usize),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nesting(n) => write!(f, "nests indexes more than {n} levels deep"),
            Self::Manifests(n) => write!(
                f,
                "references more than {n} distinct manifests, the most one copy walks"
            ),
        }
    }
}

/// Why a copy failed. Nothing referencing a failed blob was pushed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{side} {name} failed")]
    Endpoint {
        side: Side,
        name: String,
        #[source]
        source: EndpointError,
    },
    #[error("{reference} was not found at the source")]
    NotFound { reference: String },
    #[error(
        "blob {digest} ({size} bytes) failed on the {side}{}",
        match gave_up {
            GaveUp::NotTransient if *attempts <= 1 => String::new(),
            GaveUp::NotTransient | GaveUp::Attempts => format!(
                " after {attempts} attempt{}", if *attempts == 1 { "" } else { "s" }
            ),
            GaveUp::RetryAfter { asked, budget } => format!(
                ": it asked to wait {:.0?} before another attempt, longer than the {:.0?} retry budget",
                asked, budget
            ),
        }
    )]
    Blob {
        digest: Digest,
        size: u64,
        side: Side,
        attempts: u32,
        gave_up: GaveUp,
        #[source]
        source: EndpointError,
    },
    #[error("no platform of {reference} matches {wanted}; it has: {available}")]
    NoPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
    /// The destination takes one platform per image and the root (after
    /// the platform filter) is an index. Refused before anything is written.
    #[error(
        "{destination} holds one platform per image, and {reference} is an index of {}",
        .platforms.join(", ")
    )]
    SinglePlatform {
        destination: String,
        reference: String,
        platforms: Vec<String>,
    },
    /// The source's manifests go past a bound on the walk; nothing was written.
    #[error("{reference} {limit}")]
    Limit { reference: String, limit: Limit },
    /// A signature was required and no valid one by the given keys names
    /// the image. Checked before anything was written for it.
    #[error(
        "refused {reference} ({digest}): no valid cosign signature by {} names it; nothing was written for it{}",
        .keys.join(", "),
        .reasons.iter().map(|r| format!("\n  - {r}")).collect::<String>()
    )]
    Unsigned {
        reference: String,
        digest: Digest,
        keys: Vec<String>,
        reasons: Vec<String>,
    },
    #[error("the copy was cancelled")]
    Cancelled,
    /// Work shared with other copies of the same run (a blob, a manifest) failed.
    #[error(transparent)]
    Shared(Arc<CopyError>),
}

impl CopyError {
    /// Whether the request itself cannot be carried out as asked (the CLI's
    /// usage error), as opposed to a transfer that failed.
    pub fn is_usage(&self) -> bool {
        match self {
            Self::SinglePlatform { .. } => true,
            Self::Shared(inner) => inner.is_usage(),
            _ => false,
        }
    }

    pub(crate) fn source_side(name: String, source: EndpointError) -> Self {
        Self::Endpoint {
            side: Side::Source,
            name,
            source,
        }
    }

    pub(crate) fn destination_side(name: String, source: EndpointError) -> Self {
        Self::Endpoint {
            side: Side::Destination,
            name,
            source,
        }
    }
}
