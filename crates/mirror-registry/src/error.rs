//! Registry errors: which host, which operation, which object, what the registry
//! said (its error code decoded) and what to do about it.

use std::fmt;
use std::time::Duration;

use mirror_oci::ManifestError;
use serde::Deserialize;

/// What the client was doing when a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    HeadManifest,
    GetManifest,
    PutManifest,
    HeadBlob,
    GetBlob,
    StartUpload,
    PutBlob,
    MountBlob,
    ListTags,
    ListReferrers,
    Token,
    CancelUpload,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::HeadManifest => "checking manifest",
            Self::GetManifest => "fetching manifest",
            Self::PutManifest => "pushing manifest",
            Self::HeadBlob => "checking blob",
            Self::GetBlob => "fetching blob",
            Self::StartUpload => "starting upload",
            Self::PutBlob => "uploading blob",
            Self::MountBlob => "mounting blob",
            Self::ListTags => "listing tags",
            Self::ListReferrers => "listing referrers of",
            Self::Token => "fetching a token",
            Self::CancelUpload => "cancelling upload",
        })
    }
}

/// Error codes of the OCI distribution spec (plus the ones registries add).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    TagInvalid,
    Other(String),
}

impl ErrorCode {
    fn parse(code: &str) -> Self {
        match code {
            "BLOB_UNKNOWN" => Self::BlobUnknown,
            "BLOB_UPLOAD_INVALID" => Self::BlobUploadInvalid,
            "BLOB_UPLOAD_UNKNOWN" => Self::BlobUploadUnknown,
            "DIGEST_INVALID" => Self::DigestInvalid,
            "MANIFEST_BLOB_UNKNOWN" => Self::ManifestBlobUnknown,
            "MANIFEST_INVALID" => Self::ManifestInvalid,
            "MANIFEST_UNKNOWN" => Self::ManifestUnknown,
            "NAME_INVALID" => Self::NameInvalid,
            "NAME_UNKNOWN" => Self::NameUnknown,
            "SIZE_INVALID" => Self::SizeInvalid,
            "UNAUTHORIZED" => Self::Unauthorized,
            "DENIED" => Self::Denied,
            "UNSUPPORTED" => Self::Unsupported,
            "TOOMANYREQUESTS" => Self::TooManyRequests,
            "TAG_INVALID" => Self::TagInvalid,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Self::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::SizeInvalid => "SIZE_INVALID",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Denied => "DENIED",
            Self::Unsupported => "UNSUPPORTED",
            Self::TooManyRequests => "TOOMANYREQUESTS",
            Self::TagInvalid => "TAG_INVALID",
            Self::Other(code) => code,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    code: Option<String>,
    message: Option<String>,
}

/// Decodes a registry error body (`{"errors":[{"code":..,"message":..}]}`).
pub(crate) fn decode_error_body(body: &[u8]) -> (Option<ErrorCode>, String) {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) if !parsed.errors.is_empty() => {
            let code = parsed.errors[0].code.as_deref().map(ErrorCode::parse);
            let message = parsed
                .errors
                .iter()
                .filter_map(|e| e.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            (code, message)
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(300).collect();
            (None, text)
        }
    }
}

/// How a request failed to get an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection (refused, unreachable, DNS).
    Connect,
    /// The TLS handshake failed: a plain-HTTP server, an untrusted or
    /// mismatched certificate.
    Tls,
    Timeout,
    /// The connection broke while the answer was being read.
    Read,
    Other,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "could not connect",
            Self::Tls => "the TLS handshake failed",
            Self::Timeout => "timed out",
            Self::Read => "the connection broke while reading the answer",
            Self::Other => "the connection failed",
        })
    }
}

/// Why authentication failed, for the binary to say what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// The registry wants credentials and none were found or sent.
    NoCredentials,
    /// The credentials sent were refused (wrong, expired, or lacking permission).
    Refused,
    /// The token server is plain HTTP; credentials are not sent over it.
    PlainHttpTokenServer,
    /// The token server is misconfigured or keeps failing.
    TokenServer,
    /// The registry sent a request on to another host (an upload location)
    /// that wanted credentials; the registry's own are not sent there.
    OtherHost,
}

/// Everything that can go wrong talking to a registry. Each message says its
/// own part; the cause (the last failure, the transport error) is the source.
/// Nothing here names a command-line flag: the binary adds hints.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered with an error status.
    #[error("{operation} {target} on {host}: {status}{code}{message}",
        code = code.as_ref().map(|c| format!(" {}", c.as_str())).unwrap_or_default(),
        message = if message.is_empty() { String::new() } else { format!(": {message}") })]
    Api {
        host: String,
        operation: Operation,
        target: String,
        status: u16,
        code: Option<ErrorCode>,
        message: String,
        /// How long the registry asked to wait before another attempt.
        retry_after: Option<Duration>,
    },
    /// The request never got an answer (connection refused, reset, timeout, TLS).
    #[error("{operation} {target} on {host}: {kind}{detail}")]
    Transport {
        host: String,
        operation: Operation,
        target: String,
        kind: TransportKind,
        /// Where the request went, when that is not `host` (` (via http://...)`).
        detail: String,
        #[source]
        source: reqwest::Error,
    },
    /// Retries ran out; the last failure is the source.
    #[error("{operation} {target} on {host}: gave up after {attempts} attempts in {elapsed:.1?}")]
    RetriesExhausted {
        host: String,
        operation: Operation,
        target: String,
        attempts: u32,
        elapsed: Duration,
        #[source]
        last: Box<RegistryError>,
    },
    /// Authentication failed or was refused.
    #[error("authentication to {host} failed: {detail}")]
    Auth {
        host: String,
        detail: String,
        failure: AuthFailure,
    },
    /// A credential provider (ECR's tokens) failed; its own typed error is the source.
    #[error("getting registry credentials failed")]
    CredentialProvider {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// Expiring credentials (ECR tokens) were refused on a request that cannot be
    /// replayed (a streaming upload); they are refreshed, and a fresh attempt may pass.
    #[error("{host} refused expired credentials while {operation} {target}; they were refreshed")]
    CredentialsExpired {
        host: String,
        operation: Operation,
        target: String,
    },
    /// The registry asked us to wait longer than the retry budget allows.
    #[error("{host} is rate limiting {operation} {target}: it asked to wait {retry_after:.0?}, longer than the {budget:.0?} retry budget{extra}",
        extra = limit.as_ref().map(|l| format!(" ({l})")).unwrap_or_default())]
    RateLimited {
        host: String,
        operation: Operation,
        target: String,
        retry_after: Duration,
        budget: Duration,
        limit: Option<String>,
    },
    /// A manifest was refused (schema 1, too large, digest mismatch, malformed).
    #[error("{operation} {target} on {host}")]
    Manifest {
        host: String,
        operation: Operation,
        target: String,
        #[source]
        source: Box<ManifestError>,
    },
    /// The registry answered something the protocol does not allow.
    #[error("{operation} {target} on {host}: {detail}")]
    Protocol {
        host: String,
        operation: Operation,
        target: String,
        detail: String,
    },
    /// Client setup failed (bad CA file, unreadable config).
    #[error("{0}")]
    Setup(String),
    /// The storage host a registry redirected a request to (a presigned URL
    /// on S3, a CDN) refused it. It got no credentials of ours; what it said
    /// is redacted (S3 echoes the signed URL in its error body).
    #[error("{operation} {target} on {host}: the storage host {storage_host} refused the presigned URL {host} redirected to: {status}{message}",
        message = if message.is_empty() { String::new() } else { format!(" {message}") })]
    Storage {
        host: String,
        /// `scheme://host[:port]` of the storage host.
        storage_host: String,
        operation: Operation,
        target: String,
        status: u16,
        /// The storage service's code and message (`AccessDenied: Request
        /// has expired`), redacted.
        message: String,
    },
}

impl RegistryError {
    /// Whether trying again later could help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            Self::Transport { kind, .. } => *kind != TransportKind::Tls,
            Self::CredentialsExpired { .. } => true,
            // A fresh GET gets a fresh presigned URL.
            Self::Storage { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// The registry's error code, if it sent one.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Self::Api { code, .. } => code.as_ref(),
            Self::RetriesExhausted { last, .. } => last.code(),
            _ => None,
        }
    }

    /// The HTTP status, if the registry answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::RetriesExhausted { last, .. } => last.status(),
            _ => None,
        }
    }

    /// How long the registry asked to wait before another attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The operation that failed, when the error names one.
    pub fn operation(&self) -> Option<Operation> {
        match self {
            Self::Api { operation, .. }
            | Self::Transport { operation, .. }
            | Self::RetriesExhausted { operation, .. }
            | Self::CredentialsExpired { operation, .. }
            | Self::RateLimited { operation, .. }
            | Self::Manifest { operation, .. }
            | Self::Protocol { operation, .. }
            | Self::Storage { operation, .. } => Some(*operation),
            _ => None,
        }
    }

    /// The registry host the error is about, when it names one.
    pub fn host(&self) -> Option<&str> {
        match self {
            Self::Api { host, .. }
            | Self::Transport { host, .. }
            | Self::RetriesExhausted { host, .. }
            | Self::Auth { host, .. }
            | Self::CredentialsExpired { host, .. }
            | Self::RateLimited { host, .. }
            | Self::Manifest { host, .. }
            | Self::Protocol { host, .. }
            | Self::Storage { host, .. } => Some(host),
            Self::CredentialProvider { .. } | Self::Setup(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_registry_error_bodies() {
        let (code, message) = decode_error_body(br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#);
        assert_eq!(code, Some(ErrorCode::NameUnknown));
        assert_eq!(message, "repository name not known to registry");
        let (code, message) = decode_error_body(b"<html>bad gateway</html>");
        assert_eq!(code, None);
        assert_eq!(message, "<html>bad gateway</html>");
    }

    #[test]
    fn api_errors_say_what_failed_and_name_no_flags() {
        let e = RegistryError::Api {
            host: "r.example".into(),
            operation: Operation::PutManifest,
            target: "app:1".into(),
            status: 404,
            code: Some(ErrorCode::NameUnknown),
            message: "repository name not known to registry".into(),
            retry_after: None,
        };
        assert_eq!(
            e.to_string(),
            "pushing manifest app:1 on r.example: 404 NAME_UNKNOWN: repository name not known to registry"
        );
    }
}
