//! The request loop every registry call goes through, as named steps:
//! wait for the first request to learn the host's auth scheme, take a
//! permit, authorize (only URLs on the registry itself get credentials),
//! build, send, then judge the answer (auth challenge, redirect, final, or
//! transient) and back off within the retry budget.

use std::time::{Duration, Instant};

use bytes::Bytes;
use mirror_oci::BlobStream;
use reqwest::header::{
    AUTHORIZATION, HeaderMap, HeaderValue, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, warn};
use url::Url;

use crate::auth::{Scheme, Scopes, parse_challenge};
use crate::client::RegistryClient;
use crate::error::{AuthFailure, Operation, RegistryError, TransportKind, decode_error_body};
use crate::host::{Host, lock};
use crate::ratelimit::RateLimit;
use crate::redact::redact_url;
pub(crate) use crate::response::{
    api_error, error_answer, parse_retry_after, read_capped, read_limited, storage_error,
};

/// What a request sends as its body.
pub(crate) enum CallBody {
    Empty,
    Bytes(Bytes),
    /// A stream can be sent once: such a call is never retried here (the engine
    /// restarts the whole blob transfer with a fresh GET and upload session).
    /// The mutex only makes a `Call` `Sync` (it is borrowed across awaits);
    /// it is taken exactly once, never contended.
    Stream(std::sync::Mutex<Option<BlobStream>>, u64),
}

/// One logical request.
pub(crate) struct Call {
    pub operation: Operation,
    pub target: String,
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: CallBody,
    pub scopes: Scopes,
    pub follow_redirects: bool,
    /// Give up after the first transient failure (best-effort clean-ups).
    pub once: bool,
}

/// A response and the per-host request permit it holds until dropped.
pub(crate) struct Answer {
    pub response: reqwest::Response,
    pub permit: OwnedSemaphorePermit,
    /// The call it answers, to name it in an error.
    operation: Operation,
    target: String,
    method: Method,
}

impl Answer {
    fn new(call: &Call, response: reqwest::Response, permit: OwnedSemaphorePermit) -> Self {
        Self {
            response,
            permit,
            operation: call.operation,
            target: call.target.clone(),
            method: call.method.clone(),
        }
    }

    /// An answer the caller did not expect, as an error naming the call.
    pub async fn into_error(self, host: &Host) -> RegistryError {
        error_answer(
            host,
            self.operation,
            &self.target,
            &self.method,
            self.response,
        )
        .await
    }
}

/// How one call stands between its attempts.
struct Attempts {
    started: Instant,
    delays: Box<dyn Iterator<Item = Duration> + Send>,
    count: u32,
    /// A stream body is sent once: such a call is never tried again.
    replayable: bool,
    reauthenticated: bool,
    stale_token: Option<String>,
}

/// What one attempt came to.
enum Outcome {
    /// An answer for the caller: a success, or an error status that is not transient.
    Answer(Answer),
    /// Send again at once, not counted as an attempt: the auth scheme or the
    /// transport was learnt.
    Again,
    /// A failure that waiting may cure; `retry_after` is the server's wish.
    Transient {
        error: RegistryError,
        retry_after: Option<Duration>,
    },
    /// Final.
    Failed(RegistryError),
}

/// What an attempt holds while its answer is judged.
struct Sent<'host> {
    permit: OwnedSemaphorePermit,
    /// Held by the request that learns the host's auth scheme.
    probe: Option<tokio::sync::MutexGuard<'host, ()>>,
    authorization: Option<String>,
    /// The URL is on the registry (credentials went with it).
    on_registry: bool,
    at: Instant,
}

impl RegistryClient {
    /// Sends a call with auth, retries and redirects; returns the first answer
    /// that is not a transient failure or an auth challenge.
    pub(crate) async fn execute(
        &self,
        host: &Host,
        mut call: Call,
    ) -> Result<Answer, RegistryError> {
        let policy = &self.inner.options.retry;
        let mut attempts = Attempts {
            started: Instant::now(),
            delays: Box::new(policy.delays()),
            count: 0,
            replayable: true,
            reauthenticated: false,
            stale_token: None,
        };
        loop {
            attempts.count += 1;
            match self.attempt(host, &mut call, &mut attempts).await? {
                Outcome::Answer(answer) => return Ok(answer),
                Outcome::Failed(error) => return Err(error),
                Outcome::Again => attempts.count -= 1,
                Outcome::Transient { error, retry_after } => {
                    self.back_off(host, &call, &mut attempts, error, retry_after)
                        .await?;
                }
            }
        }
    }

    /// One try: probe guard, permit, authorization, request, answer.
    async fn attempt(
        &self,
        host: &Host,
        call: &mut Call,
        attempts: &mut Attempts,
    ) -> Result<Outcome, RegistryError> {
        let on_registry = match host.on_registry(&call.url) {
            Some(url) => {
                call.url = url;
                true
            }
            None => false,
        };
        // The first request to a host learns its auth scheme; make concurrent
        // first requests wait for it instead of all collecting a 401.
        let probe = if on_registry {
            self.first_request_guard(host).await
        } else {
            None
        };
        let permit = host.permits.acquire(&call.method).await?;
        // Credentials go only to the registry itself.
        let authorization = if on_registry {
            self.authorization(host, &call.scopes, attempts.stale_token.as_deref())
                .await?
        } else {
            None
        };
        let request =
            self.build_request(host, call, authorization.as_deref(), on_registry, attempts)?;
        let at = Instant::now();
        let result = request.send().await;
        let sent = Sent {
            permit,
            probe,
            authorization,
            on_registry,
            at,
        };
        Ok(match result {
            Err(source) => self.transport_failure(host, call, source, on_registry),
            Ok(response) => self.judge(host, call, response, sent, attempts).await,
        })
    }

    /// While the host's auth scheme is unknown, one request at a time learns it.
    async fn first_request_guard<'host>(
        &self,
        host: &'host Host,
    ) -> Option<tokio::sync::MutexGuard<'host, ()>> {
        if host.scheme() != Scheme::Unknown {
            return None;
        }
        let guard = host.probe.lock().await;
        (host.scheme() == Scheme::Unknown).then_some(guard)
    }

    fn build_request(
        &self,
        host: &Host,
        call: &mut Call,
        authorization: Option<&str>,
        on_registry: bool,
        attempts: &mut Attempts,
    ) -> Result<reqwest::RequestBuilder, RegistryError> {
        let body = match std::mem::replace(&mut call.body, CallBody::Empty) {
            CallBody::Empty => None,
            CallBody::Bytes(bytes) => {
                call.body = CallBody::Bytes(bytes.clone());
                Some((reqwest::Body::from(bytes.clone()), bytes.len() as u64))
            }
            CallBody::Stream(stream, length) => {
                attempts.replayable = false;
                stream
                    .into_inner()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .map(|stream| (reqwest::Body::wrap_stream(stream), length))
            }
        };
        let http = if on_registry {
            self.http_for(host)?
        } else {
            self.http_for_other(&call.url)?
        };
        let mut request = http
            .request(call.method.clone(), call.url.clone())
            .headers(call.headers.clone());
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        if let Some((body, length)) = body {
            request = request
                .header(reqwest::header::CONTENT_LENGTH, length)
                .body(body);
        } else if matches!(call.method, Method::PUT | Method::POST | Method::PATCH) {
            request = request.header(reqwest::header::CONTENT_LENGTH, 0);
        }
        Ok(request)
    }

    /// No answer at all: a host allowed to be insecure that does not speak
    /// TLS is tried again over plain HTTP; anything else is transient.
    fn transport_failure(
        &self,
        host: &Host,
        call: &mut Call,
        source: reqwest::Error,
        on_registry: bool,
    ) -> Outcome {
        let tls_refused = on_registry
            && host.insecure
            && call.url.scheme() == "https"
            && (source.is_connect() || source.is_request());
        if tls_refused {
            // The handshake never became a request: not counted.
            let _ = lock(&host.base).set_scheme("http");
            let _ = call.url.set_scheme("http");
            debug!(host = %host.name, "no TLS on insecure registry, using plain HTTP");
            return Outcome::Again;
        }
        self.inner.stats.count(&call.method);
        self.inner
            .stats
            .count_answer(&answering_host(host, &call.url, on_registry), None);
        debug!(method = %call.method, url = %redact_url(&call.url), error = %source, "request failed");
        let detail = if on_registry {
            via(&host.name, &call.url)
        } else {
            format!(
                " (at {}, where {} sent it)",
                redact_url(&call.url),
                host.name
            )
        };
        Outcome::Transient {
            error: RegistryError::Transport {
                host: host.name.clone(),
                operation: call.operation,
                target: call.target.clone(),
                kind: transport_kind(&source),
                detail,
                source: source.without_url(),
            },
            retry_after: None,
        }
    }

    /// An answer came: an auth challenge, a redirect, a final answer or a
    /// transient failure.
    async fn judge(
        &self,
        host: &Host,
        call: &mut Call,
        response: reqwest::Response,
        sent: Sent<'_>,
        attempts: &mut Attempts,
    ) -> Outcome {
        self.inner.stats.count(&call.method);
        let status = response.status();
        self.inner.stats.count_answer(
            &answering_host(host, &call.url, sent.on_registry),
            Some(status.as_u16()),
        );
        debug!(method = %call.method, url = %redact_url(&call.url), status = status.as_u16(), elapsed = ?sent.at.elapsed(), "request");
        if !sent.on_registry {
            return self
                .judge_elsewhere(host, call, response, sent.permit)
                .await;
        }
        if let Some(limit) = RateLimit::from_headers(response.headers()) {
            *lock(&host.rate_limit) = Some(limit);
        }
        if status == StatusCode::UNAUTHORIZED {
            return self
                .challenged(
                    host,
                    call,
                    response,
                    sent.authorization.as_deref(),
                    attempts,
                )
                .await;
        }
        if sent.probe.is_some() {
            *lock(&host.scheme) = Scheme::Anonymous;
        }
        drop(sent.probe);
        if call.follow_redirects && status.is_redirection() {
            return match self
                .follow_redirect(host, call, response, sent.permit)
                .await
            {
                Ok(answer) => Outcome::Answer(answer),
                Err(error) if error.is_transient() => Outcome::Transient {
                    error,
                    retry_after: None,
                },
                Err(error) => Outcome::Failed(error),
            };
        }
        if !is_transient_status(status) {
            return Outcome::Answer(Answer::new(call, response, sent.permit));
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        Outcome::Transient {
            error: api_error(host, call, response).await,
            retry_after,
        }
    }

    /// An answer from a URL on another host (an upload `Location` the
    /// registry pointed elsewhere). It went without credentials; if it wants
    /// some, that is an error that says so, and the registry's own auth state
    /// is left as it was.
    async fn judge_elsewhere(
        &self,
        host: &Host,
        call: &Call,
        response: reqwest::Response,
        permit: OwnedSemaphorePermit,
    ) -> Outcome {
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Outcome::Failed(RegistryError::Auth {
                host: host.name.clone(),
                detail: format!(
                    "{} {}: {} sent the request on to another host, {}, which answered {status}; \
                     {}'s credentials are sent only to {} itself",
                    call.operation,
                    call.target,
                    host.name,
                    origin_of(&call.url),
                    host.name,
                    host.name,
                ),
                failure: AuthFailure::OtherHost,
            });
        }
        if is_transient_status(status) {
            return Outcome::Transient {
                error: api_error(host, call, response).await,
                retry_after: None,
            };
        }
        Outcome::Answer(Answer::new(call, response, permit))
    }

    /// A 401 from the registry: learn the challenge and try once more with
    /// (fresh) credentials, or fail saying what was refused.
    async fn challenged(
        &self,
        host: &Host,
        call: &mut Call,
        response: reqwest::Response,
        sent_authorization: Option<&str>,
        attempts: &mut Attempts,
    ) -> Outcome {
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        let body = read_capped(response, 64 * 1024).await;
        if let Some(challenge) = challenge {
            let changed = *lock(&host.scheme) != challenge.scheme;
            *lock(&host.scheme) = challenge.scheme.clone();
            if let Some(scope) = challenge.scope.filter(|s| s.starts_with("repository:")) {
                call.scopes = call.scopes.clone().with(scope);
            }
            if (!attempts.reauthenticated || changed) && attempts.replayable {
                attempts.reauthenticated = true;
                // Only credentials that were sent can be stale.
                if let Some(provider) = &host.provider
                    && sent_authorization.is_some()
                {
                    provider.invalidate();
                }
                attempts.stale_token = sent_authorization
                    .and_then(|a| a.strip_prefix("Bearer "))
                    .map(str::to_owned);
                return Outcome::Again;
            }
        }
        if !attempts.replayable
            && let Some(provider) = &host.provider
        {
            provider.invalidate();
            return Outcome::Failed(RegistryError::CredentialsExpired {
                host: host.name.clone(),
                operation: call.operation,
                target: call.target.clone(),
            });
        }
        let (_code, message) = decode_error_body(&body);
        Outcome::Failed(self.unauthorized(host, call, sent_authorization.is_some(), message))
    }

    /// Waits before the next attempt, or says why there is none.
    async fn back_off(
        &self,
        host: &Host,
        call: &Call,
        attempts: &mut Attempts,
        error: RegistryError,
        retry_after: Option<Duration>,
    ) -> Result<(), RegistryError> {
        let policy = &self.inner.options.retry;
        if let Some(wait) = retry_after
            && wait > policy.max_retry_after
        {
            return Err(RegistryError::RateLimited {
                host: host.name.clone(),
                operation: call.operation,
                target: call.target.clone(),
                retry_after: wait,
                budget: policy.max_retry_after,
                limit: host.rate_limit().map(|l| l.to_string()),
            });
        }
        // A failed TLS handshake fails the same way every time.
        if !attempts.replayable || !error.is_transient() {
            return Err(error);
        }
        if call.once {
            // A best-effort clean-up gets one more try, at once, only when it
            // never reached the registry: a pooled connection the server had
            // closed (it just refused a streaming PUT without reading it).
            if attempts.count == 1 && matches!(error, RegistryError::Transport { .. }) {
                return Ok(());
            }
            return Err(error);
        }
        let backoff = attempts.delays.next();
        let wait = match (retry_after, backoff) {
            _ if attempts.count >= policy.max_attempts => None,
            (Some(wait), _) => Some((wait, " (Retry-After)")),
            (None, Some(delay)) => Some((delay, "")),
            (None, None) => None,
        };
        let Some((wait, why)) = wait else {
            return Err(if attempts.count > 1 {
                RegistryError::RetriesExhausted {
                    host: host.name.clone(),
                    operation: call.operation,
                    target: call.target.clone(),
                    attempts: attempts.count,
                    elapsed: attempts.started.elapsed(),
                    last: Box::new(error),
                }
            } else {
                error
            });
        };
        self.inner
            .stats
            .retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        warn!(host = %host.name, "{error}; retrying in {wait:.1?}{why}");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn unauthorized(
        &self,
        host: &Host,
        call: &Call,
        sent_credentials: bool,
        message: String,
    ) -> RegistryError {
        let detail = format!(
            "{} {} was refused{}{}",
            call.operation,
            call.target,
            if sent_credentials {
                " with the credentials given"
            } else {
                " without credentials"
            },
            if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            }
        );
        RegistryError::Auth {
            host: host.name.clone(),
            detail,
            failure: if sent_credentials {
                AuthFailure::Refused
            } else {
                AuthFailure::NoCredentials
            },
        }
    }

    /// Follows a blob redirect. Credentials go only to the registry itself; a
    /// presigned URL on another host is fetched without them and never logged
    /// whole, and its refusal is reported as the storage host's, redacted.
    async fn follow_redirect(
        &self,
        host: &Host,
        call: &Call,
        mut response: reqwest::Response,
        permit: OwnedSemaphorePermit,
    ) -> Result<Answer, RegistryError> {
        for _hop in 0..5 {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| response.url().join(l).ok())
                .ok_or_else(|| RegistryError::Protocol {
                    host: host.name.clone(),
                    operation: call.operation,
                    target: call.target.clone(),
                    detail: format!("redirect {} without a usable Location", response.status()),
                })?;
            refuse_downgrade(
                host,
                response.url(),
                &location,
                call.operation,
                &call.target,
            )?;
            debug!(to = %redact_url(&location), "following redirect");
            let own = host.on_registry(&location);
            let url = own.clone().unwrap_or(location);
            let http = match own {
                Some(_) => self.http_for(host)?,
                None => self.http_for_other(&url)?,
            };
            let mut request = http
                .request(call.method.clone(), url.clone())
                .headers(call.headers.clone());
            if own.is_some()
                && let Some(value) = self.authorization(host, &call.scopes, None).await?
            {
                request = request.header(AUTHORIZATION, value);
            }
            self.inner.stats.count(&call.method);
            response = request
                .send()
                .await
                .map_err(|source| RegistryError::Transport {
                    host: host.name.clone(),
                    operation: call.operation,
                    target: call.target.clone(),
                    kind: transport_kind(&source),
                    detail: format!(" (redirected to {})", redact_url(&url)),
                    source: source.without_url(),
                })?;
            if !response.status().is_redirection() {
                if response.status().is_success() {
                    return Ok(Answer::new(call, response, permit));
                }
                if own.is_none() {
                    return Err(storage_error(host, call, &url, response).await);
                }
                return Err(api_error(host, call, response).await);
            }
        }
        Err(RegistryError::Protocol {
            host: host.name.clone(),
            operation: call.operation,
            target: call.target.clone(),
            detail: "more than 5 redirects".to_owned(),
        })
    }
}

pub(crate) fn is_transient_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// Refuses a Location (redirect, upload session) that leaves HTTPS for plain
/// HTTP: whatever follows it (a blob body, an upload) would cross the network
/// unencrypted. Allowed only for a registry named by `--insecure-registry`.
pub(crate) fn refuse_downgrade(
    host: &Host,
    from: &Url,
    to: &Url,
    operation: Operation,
    target: &str,
) -> Result<(), RegistryError> {
    if from.scheme() == "https" && to.scheme() == "http" && !host.insecure {
        return Err(RegistryError::Protocol {
            host: host.name.clone(),
            operation,
            target: target.to_owned(),
            detail: format!(
                "refused a Location that leaves HTTPS for plain HTTP ({})",
                origin_of(to)
            ),
        });
    }
    Ok(())
}

/// `scheme://host[:port]` of a URL, for naming another host in errors.
pub(crate) fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// Who answered, for the per-host counts: the registry by its name, another
/// host (blob storage) by its address.
fn answering_host(host: &Host, url: &Url, on_registry: bool) -> String {
    match (on_registry, url.host_str()) {
        (false, Some(other)) => match url.port() {
            Some(port) => format!("{other}:{port}"),
            None => other.to_owned(),
        },
        _ => host.name.clone(),
    }
}

/// ` (via ADDRESS)` when the request went somewhere other than the host's
/// own name: an endpoint mapping, or docker.io's registry-1.docker.io.
pub(crate) fn via(name: &str, url: &Url) -> String {
    let address = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return String::new(),
    };
    if address == name {
        String::new()
    } else {
        format!(" (via {}://{address})", url.scheme())
    }
}

/// What kind of failure kept a request from an answer. A TLS error sits deep
/// in the chain, inside `io::Error`s (nested) whose `source()` skips it.
pub(crate) fn transport_kind(error: &reqwest::Error) -> TransportKind {
    fn is_tls(error: &(dyn std::error::Error + 'static)) -> bool {
        if error.is::<rustls::Error>() {
            return true;
        }
        let mut io = error.downcast_ref::<std::io::Error>();
        while let Some(inner) = io.and_then(std::io::Error::get_ref) {
            if inner.is::<rustls::Error>() {
                return true;
            }
            io = inner.downcast_ref::<std::io::Error>();
        }
        false
    }
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if is_tls(e) {
            return TransportKind::Tls;
        }
        current = e.source();
    }
    if error.is_timeout() {
        TransportKind::Timeout
    } else if error.is_connect() {
        TransportKind::Connect
    } else if error.is_body() || error.is_decode() {
        TransportKind::Read
    } else {
        TransportKind::Other
    }
}

pub(crate) fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        let future = std::time::SystemTime::now() + Duration::from_secs(30);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(future)).unwrap();
        assert!(parsed <= Duration::from_secs(30) && parsed >= Duration::from_secs(28));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn locations_that_leave_https_for_http_are_refused_unless_insecure() {
        let url = |s: &str| Url::parse(s).unwrap();
        let from = url("https://r.example/v2/app/blobs/uploads/");
        let plain = url("http://r.example/v2/app/blobs/uploads/abc");
        let tls = url("https://storage.example/abc");
        for insecure in [false, true] {
            let host = Host::new(
                "r.example",
                url("https://r.example"),
                insecure,
                None,
                None,
                4,
            );
            let refused = refuse_downgrade(&host, &from, &plain, Operation::StartUpload, "app");
            assert_eq!(refused.is_err(), !insecure, "insecure: {insecure}");
            if let Err(error) = refused {
                assert!(error.to_string().contains("plain HTTP"), "{error}");
            }
            refuse_downgrade(&host, &from, &tls, Operation::StartUpload, "app").unwrap();
            refuse_downgrade(&host, &plain, &plain, Operation::StartUpload, "app").unwrap();
        }
    }
}
