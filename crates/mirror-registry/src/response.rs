//! Reading a registry's answers: error bodies into typed errors (capped,
//! their codes decoded, secrets redacted), bodies read under a cap, and
//! `Retry-After`.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::RETRY_AFTER;
use url::Url;

use crate::error::{Operation, RegistryError, decode_error_body};
use crate::execute::{Call, origin_of};
use crate::host::Host;
use crate::redact::redact_text;

/// Reads an error answer into a typed error (body capped, code decoded).
pub(crate) async fn api_error(
    host: &Host,
    call: &Call,
    response: reqwest::Response,
) -> RegistryError {
    error_answer(host, call.operation, &call.target, &call.method, response).await
}

pub(crate) async fn error_answer(
    host: &Host,
    operation: Operation,
    target: &str,
    method: &Method,
    response: reqwest::Response,
) -> RegistryError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = if *method == Method::HEAD {
        Bytes::new()
    } else {
        read_capped(response, 64 * 1024).await
    };
    let (code, message) = decode_error_body(&body);
    RegistryError::Api {
        host: host.name.clone(),
        operation,
        target: target.to_owned(),
        status,
        code,
        message,
        retry_after,
    }
}

/// A storage host's refusal of the URL a registry redirected to: S3 and its
/// kind answer with XML that may echo the presigned URL, signature and all,
/// so only its `Code` and `Message` are kept, with every URL and signed
/// parameter in them redacted.
pub(crate) async fn storage_error(
    host: &Host,
    call: &Call,
    url: &Url,
    response: reqwest::Response,
) -> RegistryError {
    let status = response.status().as_u16();
    let body = read_capped(response, 64 * 1024).await;
    let text = String::from_utf8_lossy(&body);
    let element = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].trim().to_owned())
    };
    let message = match (element("Code"), element("Message")) {
        (None, None) => text.trim().chars().take(300).collect::<String>(),
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (code, message) => code.or(message).unwrap_or_default(),
    };
    RegistryError::Storage {
        host: host.name.clone(),
        storage_host: origin_of(url),
        operation: call.operation,
        target: call.target.clone(),
        status,
        message: redact_text(&message),
    }
}

/// A body, at most its first `cap` bytes: a longer one (endless, from a
/// hostile server) is cut there and then fails to parse where it is used.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Bytes, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        out.extend_from_slice(&chunk);
        if out.len() >= cap {
            out.truncate(cap);
            break;
        }
    }
    Ok(Bytes::from(out))
}

pub(crate) async fn read_capped(mut response: reqwest::Response, cap: usize) -> Bytes {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        out.extend_from_slice(&chunk);
        if out.len() >= cap {
            out.truncate(cap);
            break;
        }
    }
    Bytes::from(out)
}

/// `Retry-After` in seconds or as an HTTP date.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}
