//! Copy errors: which side, which object, what went wrong, what to do.

use std::fmt;
use std::sync::Arc;

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

/// Why a copy failed. Nothing referencing a failed blob was pushed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{side} {name}: {source}")]
    Endpoint {
        side: Side,
        name: String,
        #[source]
        source: EndpointError,
    },
    #[error(
        "{reference} was not found at the source\n  hint: check the tag or digest (`mirror inspect` shows what a reference resolves to)"
    )]
    NotFound { reference: String },
    #[error(
        "blob {digest} ({size} bytes) failed on the {side} after {attempts} attempt(s): {source}{hint}",
        hint = if matches!(side, Side::Source) && source.stream_error().is_some_and(|e| !e.is_transient()) {
            "\n  hint: the source served content that does not match its digest; nothing referencing it was pushed"
        } else { "" }
    )]
    Blob {
        digest: Digest,
        size: u64,
        side: Side,
        attempts: u32,
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
    /// `--platform`) is an index. Refused before anything is written.
    #[error(
        "{destination} holds one platform per image, and {reference} is an index of {}: choose \
         one with --platform {}",
        .platforms.join(", "),
        .platforms.first().map_or("OS/ARCH", String::as_str)
    )]
    SinglePlatform {
        destination: String,
        reference: String,
        platforms: Vec<String>,
    },
    /// `--require-signature`: no valid signature by the given keys names
    /// the image. Checked before anything was written for it.
    #[error(
        "refused {reference} ({digest}): no valid cosign signature by {} names it; nothing was written for it{}\n  hint: sign it (`cosign sign --key cosign.key IMAGE@DIGEST`), or require another key",
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
    /// A blob shared with another copy of the same run failed there.
    #[error("{0}")]
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
