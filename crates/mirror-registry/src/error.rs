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

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered with an error status.
    #[error("{operation} {target} on {host}: {status}{code}{message}{hint}",
        code = code.as_ref().map(|c| format!(" {}", c.as_str())).unwrap_or_default(),
        message = if message.is_empty() { String::new() } else { format!(": {message}") },
        hint = hint_for(*status, code.as_ref(), *operation).map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Api {
        host: String,
        operation: Operation,
        target: String,
        status: u16,
        code: Option<ErrorCode>,
        message: String,
    },
    /// The request never got an answer (connection refused, reset, timeout, TLS).
    #[error("{operation} {target} on {host}: {detail}")]
    Transport {
        host: String,
        operation: Operation,
        target: String,
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
    #[error("authentication to {host} failed: {detail}\n  hint: {hint}")]
    Auth {
        host: String,
        detail: String,
        hint: String,
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
    #[error("{host} is rate limiting {operation} {target}: retry after {retry_after:?}{extra}\n  hint: {hint}",
        extra = limit.as_ref().map(|l| format!(" ({l})")).unwrap_or_default())]
    RateLimited {
        host: String,
        operation: Operation,
        target: String,
        retry_after: Duration,
        limit: Option<String>,
        hint: String,
    },
    /// A manifest was refused (schema 1, too large, digest mismatch, malformed).
    #[error("{operation} {target} on {host}: {source}")]
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
            Self::Transport { .. } | Self::CredentialsExpired { .. } => true,
            // A fresh GET gets a fresh presigned URL.
            Self::Storage { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            Self::RetriesExhausted { .. } => false,
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
}

fn hint_for(status: u16, code: Option<&ErrorCode>, operation: Operation) -> Option<&'static str> {
    Some(match (status, code) {
        (_, Some(ErrorCode::Unauthorized)) | (401, _) => {
            "the registry wants credentials: pass --src-creds/--dest-creds USER:PASSWORD, or log in with `docker login`"
        }
        (_, Some(ErrorCode::Denied)) | (403, _) => {
            "the credentials are valid but lack permission for this repository and action"
        }
        (_, Some(ErrorCode::NameUnknown)) => {
            "the repository does not exist on this registry: check the name, or create it first"
        }
        (_, Some(ErrorCode::ManifestUnknown)) if operation != Operation::PutManifest => {
            "no manifest with that tag or digest: check the tag with `mirror inspect`"
        }
        (_, Some(ErrorCode::TagInvalid)) => {
            "the tag exists in an immutable repository and cannot be overwritten"
        }
        (_, Some(ErrorCode::ManifestBlobUnknown)) => {
            "the registry does not hold a blob this manifest references"
        }
        (_, Some(ErrorCode::TooManyRequests)) | (429, _) => {
            "the registry is throttling requests: lower --jobs / --max-concurrent-blobs or retry later"
        }
        _ => return None,
    })
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
    fn api_errors_carry_a_hint() {
        let e = RegistryError::Api {
            host: "r.example".into(),
            operation: Operation::PutManifest,
            target: "app:1".into(),
            status: 404,
            code: Some(ErrorCode::NameUnknown),
            message: "repository name not known to registry".into(),
        };
        let text = e.to_string();
        assert!(
            text.contains("pushing manifest app:1 on r.example: 404 NAME_UNKNOWN"),
            "{text}"
        );
        assert!(
            text.contains("hint: the repository does not exist"),
            "{text}"
        );
    }
}
