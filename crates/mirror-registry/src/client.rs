//! The request loop every registry call goes through: per-host state, auth
//! (challenge, token cache with single flight, Basic), retries with backoff and
//! `Retry-After`, a bound on requests per host, redirects that never carry the
//! registry's credentials to another host, and plain HTTP only where allowed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use mirror_oci::{BlobStream, Reference};
use reqwest::header::{
    AUTHORIZATION, HeaderMap, HeaderValue, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};
use url::Url;

use crate::auth::{Scheme, Scopes, Token, TokenResponse, parse_challenge};
use crate::credentials::{CredentialProvider, CredentialStore, Credentials};
use crate::error::{Operation, RegistryError, decode_error_body};
use crate::ratelimit::RateLimit;
use crate::redact::redact_url;
use crate::repository::Repository;
use crate::stats::RequestStats;

/// How hard to retry transient failures (408, 429, 5xx, connection errors).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// A `Retry-After` longer than this fails the request instead of waiting.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .build()
    }
}

/// Settings for a [`RegistryClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Hosts (`host[:port]`) that may be reached over plain HTTP or with
    /// unverified TLS. No other host ever is.
    pub insecure_registries: Vec<String>,
    /// Extra PEM files of trusted roots, added to the system roots.
    pub ca_certs: Vec<PathBuf>,
    /// `host -> base URL`: reach a registry through another address (VPC
    /// endpoints, proxies, test stand-ins). Credentials stay keyed by `host`.
    pub endpoints: HashMap<String, Url>,
    pub retry: RetryPolicy,
    /// Requests in flight per registry host.
    pub max_requests_per_host: usize,
    pub user_agent: String,
    pub connect_timeout: Duration,
    /// Longest silence while reading a response before giving up on it.
    pub read_timeout: Duration,
    /// A blob body must bring 16 KiB per this much time spent waiting on
    /// it, or it fails (and is fetched again): a server trickling bytes is
    /// never silent for `read_timeout`.
    pub stall_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            ca_certs: Vec::new(),
            endpoints: HashMap::new(),
            retry: RetryPolicy::default(),
            max_requests_per_host: 16,
            user_agent: format!("mirror/{}", env!("CARGO_PKG_VERSION")),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

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
}

/// A response and the per-host request permit it holds until dropped.
pub(crate) struct Answer {
    pub response: reqwest::Response,
    pub permit: OwnedSemaphorePermit,
}

/// Everything known about one registry host for one set of credentials.
pub(crate) struct Host {
    /// The host as named in references (`docker.io` maps to `registry-1.docker.io`).
    pub name: String,
    base: Mutex<Url>,
    insecure: bool,
    scheme: Mutex<Scheme>,
    probe: tokio::sync::Mutex<()>,
    explicit: Option<Credentials>,
    provider: Option<Arc<dyn CredentialProvider>>,
    credentials: tokio::sync::OnceCell<Option<Credentials>>,
    tokens: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Token>>>>>,
    permits: Arc<Semaphore>,
    rate_limit: Mutex<Option<RateLimit>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Host {
    pub fn base(&self) -> Url {
        lock(&self.base).clone()
    }

    fn scheme(&self) -> Scheme {
        lock(&self.scheme).clone()
    }

    pub fn rate_limit(&self) -> Option<RateLimit> {
        *lock(&self.rate_limit)
    }

    /// Whether a URL is served by this registry (credentials may go there).
    fn owns(&self, url: &Url) -> bool {
        let base = self.base();
        url.scheme() == base.scheme()
            && url.host_str() == base.host_str()
            && url.port_or_known_default() == base.port_or_known_default()
    }
}

/// A host's state is keyed by its name and the credentials used there.
type HostKey = (String, Option<String>);

/// A reqwest client built on first use; `roots: None` accepts any certificate
/// (only for hosts named by `--insecure-registry`).
struct LazyClient {
    options: ClientOptions,
    roots: Option<Vec<reqwest::Certificate>>,
    client: std::sync::OnceLock<Result<reqwest::Client, String>>,
}

impl LazyClient {
    fn new(options: ClientOptions, roots: Option<Vec<reqwest::Certificate>>) -> Self {
        Self {
            options,
            roots,
            client: std::sync::OnceLock::new(),
        }
    }

    fn get(&self) -> Result<&reqwest::Client, RegistryError> {
        self.client
            .get_or_init(|| {
                let options = &self.options;
                let builder = reqwest::Client::builder()
                    .user_agent(options.user_agent.clone())
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(options.connect_timeout)
                    .read_timeout(options.read_timeout)
                    .tcp_nodelay(true)
                    .pool_max_idle_per_host(options.max_requests_per_host.max(1))
                    .http2_adaptive_window(true);
                let builder = match &self.roots {
                    Some(roots) => builder.tls_certs_merge(roots.clone()),
                    None => builder.tls_danger_accept_invalid_certs(true),
                };
                builder.build().map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| RegistryError::Setup(format!("cannot set up HTTPS: {e}")))
    }
}

struct Inner {
    secure: LazyClient,
    insecure: LazyClient,
    options: ClientOptions,
    hosts: Mutex<HashMap<HostKey, Arc<Host>>>,
    store: CredentialStore,
    stats: Arc<RequestStats>,
}

/// A client for any number of registries; cheap to clone.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

impl RegistryClient {
    pub fn new(options: ClientOptions, store: CredentialStore) -> Result<Self, RegistryError> {
        let mut roots = Vec::new();
        for path in &options.ca_certs {
            let pem = std::fs::read(path).map_err(|e| {
                RegistryError::Setup(format!(
                    "cannot read CA certificate {}: {e}",
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                RegistryError::Setup(format!(
                    "{} holds no usable PEM certificate: {e}",
                    path.display()
                ))
            })?;
            roots.extend(certs);
        }
        // Built on first use: loading the system roots costs ~300 file reads,
        // which a run against insecure (local) registries never needs.
        let secure = LazyClient::new(options.clone(), Some(roots));
        let insecure = LazyClient::new(options.clone(), None);
        Ok(Self {
            inner: Arc::new(Inner {
                secure,
                insecure,
                options,
                hosts: Mutex::new(HashMap::new()),
                store,
                stats: Arc::new(RequestStats::default()),
            }),
        })
    }

    /// Request and retry counters for the whole run.
    pub fn stats(&self) -> &Arc<RequestStats> {
        &self.inner.stats
    }

    /// See [`ClientOptions::stall_timeout`].
    pub(crate) fn stall_timeout(&self) -> Duration {
        self.inner.options.stall_timeout
    }

    /// A handle on one repository. `credentials` overrides the credential store
    /// for this registry (`--src-creds`, `--dest-creds`).
    pub fn repository(
        &self,
        reference: &Reference,
        credentials: Option<Credentials>,
    ) -> Result<Repository, RegistryError> {
        let host = self.host(reference.api_host(), credentials, None)?;
        Ok(Repository::new(
            self.clone(),
            host,
            reference.registry().to_owned(),
            reference.repository().to_owned(),
        ))
    }

    /// A handle on one repository whose credentials come from `provider`
    /// (asked before requests, invalidated on a 401): ECR's expiring tokens.
    pub fn repository_with_provider(
        &self,
        reference: &Reference,
        provider: Arc<dyn CredentialProvider>,
    ) -> Result<Repository, RegistryError> {
        let host = self.host(reference.api_host(), None, Some(provider))?;
        Ok(Repository::new(
            self.clone(),
            host,
            reference.registry().to_owned(),
            reference.repository().to_owned(),
        ))
    }

    fn host(
        &self,
        name: &str,
        credentials: Option<Credentials>,
        provider: Option<Arc<dyn CredentialProvider>>,
    ) -> Result<Arc<Host>, RegistryError> {
        let key = (
            name.to_owned(),
            match &provider {
                Some(p) => Some(format!("provider:{:p}", Arc::as_ptr(p).cast::<()>())),
                None => credentials.as_ref().map(|c| format!("{c:?}")),
            },
        );
        let mut hosts = lock(&self.inner.hosts);
        if let Some(host) = hosts.get(&key) {
            return Ok(host.clone());
        }
        let insecure = self
            .inner
            .options
            .insecure_registries
            .iter()
            .any(|h| h == name);
        // Docker Hub's API host answers to the names users write, too.
        let aliases: &[&str] = if name == "registry-1.docker.io" {
            &["docker.io", "index.docker.io"]
        } else {
            &[]
        };
        let mapped = std::iter::once(name)
            .chain(aliases.iter().copied())
            .find_map(|n| self.inner.options.endpoints.get(n));
        let base = match mapped {
            Some(url) => url.clone(),
            None => Url::parse(&format!("https://{name}/")).map_err(|e| {
                RegistryError::Setup(format!("`{name}` is not a usable registry host: {e}"))
            })?,
        };
        let host = Arc::new(Host {
            name: name.to_owned(),
            base: Mutex::new(base),
            insecure,
            scheme: Mutex::new(if provider.as_ref().is_some_and(|p| p.preemptive_basic()) {
                Scheme::Basic
            } else {
                Scheme::Unknown
            }),
            probe: tokio::sync::Mutex::new(()),
            explicit: credentials,
            provider,
            credentials: tokio::sync::OnceCell::new(),
            tokens: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(
                self.inner.options.max_requests_per_host.max(1),
            )),
            rate_limit: Mutex::new(None),
        });
        hosts.insert(key, host.clone());
        Ok(host)
    }

    fn http_for(&self, host: &Host) -> Result<&reqwest::Client, RegistryError> {
        if host.insecure {
            self.inner.insecure.get()
        } else {
            self.inner.secure.get()
        }
    }

    async fn credentials(&self, host: &Host) -> Result<Option<Credentials>, RegistryError> {
        if let Some(c) = &host.explicit {
            return Ok(Some(c.clone()));
        }
        if let Some(provider) = &host.provider {
            return provider.credentials().await.map(Some);
        }
        let found = host
            .credentials
            .get_or_try_init(|| async {
                let registry = if host.name == "registry-1.docker.io" {
                    "docker.io"
                } else {
                    host.name.as_str()
                };
                self.inner.store.lookup(registry).await
            })
            .await?;
        Ok(found.clone())
    }

    /// The Authorization header for a request, fetching a token if needed.
    async fn authorization(
        &self,
        host: &Host,
        scopes: &Scopes,
        stale: Option<&str>,
    ) -> Result<Option<String>, RegistryError> {
        let credentials = match host.scheme() {
            Scheme::Unknown | Scheme::Anonymous => return Ok(None),
            Scheme::Basic => self.credentials(host).await?,
            Scheme::Bearer { realm, service } => {
                let token = self
                    .token(host, &realm, service.as_deref(), scopes, stale)
                    .await?;
                return Ok(Some(format!("Bearer {token}")));
            }
        };
        match credentials {
            Some(Credentials::Bearer(token)) => Ok(Some(format!("Bearer {token}"))),
            Some(c) => Ok(c.basic_header()),
            None => Err(RegistryError::Auth {
                host: host.name.clone(),
                detail: "the registry requires a username and password and none were found".to_owned(),
                hint: "pass --src-creds/--dest-creds USER:PASSWORD, or run `docker login` for this registry".to_owned(),
            }),
        }
    }

    /// A bearer token for these scopes: cached, refreshed before expiry, and
    /// single-flight (concurrent callers wait for one token request).
    async fn token(
        &self,
        host: &Host,
        realm: &str,
        service: Option<&str>,
        scopes: &Scopes,
        stale: Option<&str>,
    ) -> Result<String, RegistryError> {
        let slot = lock(&host.tokens).entry(scopes.key()).or_default().clone();
        let mut current = slot.lock().await;
        if let Some(token) = current.as_ref()
            && token.is_fresh()
            && stale != Some(token.value.as_str())
        {
            return Ok(token.value.clone());
        }
        let credentials = self.credentials(host).await?;
        if let Some(Credentials::Bearer(token)) = &credentials {
            return Ok(token.clone());
        }
        let token = self
            .fetch_token(host, realm, service, scopes, credentials.as_ref())
            .await?;
        let value = token.value.clone();
        *current = Some(token);
        Ok(value)
    }

    async fn fetch_token(
        &self,
        host: &Host,
        realm: &str,
        service: Option<&str>,
        scopes: &Scopes,
        credentials: Option<&Credentials>,
    ) -> Result<Token, RegistryError> {
        let auth_error = |detail: String, hint: &str| RegistryError::Auth {
            host: host.name.clone(),
            detail,
            hint: hint.to_owned(),
        };
        let mut url = Url::parse(realm).map_err(|_| {
            auth_error(
                format!("the registry named `{realm}` as its token server, which is not a URL"),
                "check the registry's auth configuration",
            )
        })?;
        if url.scheme() == "http" && credentials.is_some() && !host.insecure {
            return Err(auth_error(
                format!(
                    "the token server {} is plain HTTP; credentials are not sent over it",
                    redact_url(&url)
                ),
                "use an HTTPS token server, or name the registry with --insecure-registry if this is a test setup",
            ));
        }
        let http = self.http_for(host)?;
        let mut delays = self.inner.options.retry.delays();
        loop {
            let request = match credentials {
                Some(Credentials::IdentityToken { token, .. }) => {
                    let mut form = vec![
                        ("grant_type", "refresh_token".to_owned()),
                        ("refresh_token", token.clone()),
                        ("client_id", "mirror".to_owned()),
                        ("scope", scopes.0.join(" ")),
                    ];
                    if let Some(s) = service {
                        form.push(("service", s.to_owned()));
                    }
                    let body = url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(form)
                        .finish();
                    http.post(url.clone())
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(body)
                }
                _ => {
                    {
                        let mut pairs = url.query_pairs_mut();
                        pairs.clear();
                        if let Some(s) = service {
                            pairs.append_pair("service", s);
                        }
                        for scope in &scopes.0 {
                            pairs.append_pair("scope", scope);
                        }
                    }
                    let mut request = http.get(url.clone());
                    if let Some(header) = credentials.and_then(Credentials::basic_header) {
                        request = request.header(AUTHORIZATION, header);
                    }
                    request
                }
            };
            self.inner
                .stats
                .token
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let started = Instant::now();
            let result = request.send().await;
            let transient = match result {
                Ok(response) if response.status().is_success() => {
                    debug!(url = %redact_url(&url), elapsed = ?started.elapsed(), "token");
                    let body = read_limited(response, MAX_TOKEN_BYTES).await.map_err(|e| {
                        auth_error(format!("reading the token answer failed: {e}"), "retry")
                    })?;
                    let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
                        auth_error(
                            "the token server answered something that is not a token".to_owned(),
                            "check the registry's auth configuration",
                        )
                    })?;
                    return parsed.into_token().ok_or_else(|| {
                        auth_error(
                            "the token server answered without a token".to_owned(),
                            "check the registry's auth configuration",
                        )
                    });
                }
                Ok(response) if is_transient_status(response.status()) => {
                    format!("token server answered {}", response.status())
                }
                Ok(response) => {
                    let status = response.status();
                    let body = read_capped(response, 64 * 1024).await;
                    let (_, message) = decode_error_body(&body);
                    let hint = if credentials.is_some() {
                        "the credentials were refused: check the username and password or token (--src-creds/--dest-creds, docker login)"
                    } else {
                        "the registry wants credentials for this repository: pass --src-creds/--dest-creds or run `docker login`"
                    };
                    return Err(auth_error(
                        format!(
                            "token server answered {status} for {}{}",
                            scopes.key(),
                            if message.is_empty() {
                                String::new()
                            } else {
                                format!(": {message}")
                            }
                        ),
                        hint,
                    ));
                }
                Err(e) => format!("token request failed: {e}"),
            };
            match delays.next() {
                Some(delay) => {
                    self.inner
                        .stats
                        .retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warn!(host = %host.name, "{transient}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
                None => {
                    return Err(auth_error(
                        transient,
                        "the token server keeps failing; retry later",
                    ));
                }
            }
        }
    }

    /// Sends a call with auth, retries and redirects; returns the first answer
    /// that is not a transient failure or an auth challenge.
    pub(crate) async fn execute(
        &self,
        host: &Host,
        mut call: Call,
    ) -> Result<Answer, RegistryError> {
        let started = Instant::now();
        let policy = &self.inner.options.retry;
        let mut delays = policy.delays();
        let mut attempts = 0u32;
        let mut reauthenticated = false;
        let mut stale_token: Option<String> = None;
        let mut last_error: Option<RegistryError> = None;
        loop {
            attempts += 1;
            // The first request to a host learns its auth scheme; make concurrent
            // first requests wait for it instead of all collecting a 401.
            let probe_guard = if host.scheme() == Scheme::Unknown {
                let guard = host.probe.lock().await;
                (host.scheme() == Scheme::Unknown).then_some(guard)
            } else {
                None
            };
            let permit = host
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| RegistryError::Setup("request limiter closed".to_owned()))?;
            let authorization = self
                .authorization(host, &call.scopes, stale_token.as_deref())
                .await?;
            let body = match std::mem::replace(&mut call.body, CallBody::Empty) {
                CallBody::Empty => None,
                CallBody::Bytes(bytes) => {
                    call.body = CallBody::Bytes(bytes.clone());
                    Some((reqwest::Body::from(bytes.clone()), bytes.len() as u64))
                }
                CallBody::Stream(stream, length) => stream
                    .into_inner()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .map(|stream| (reqwest::Body::wrap_stream(stream), length)),
            };
            let replayable = !matches!(call.body, CallBody::Empty) || body.is_none();
            let mut request = self
                .http_for(host)?
                .request(call.method.clone(), call.url.clone())
                .headers(call.headers.clone());
            if let Some(value) = &authorization {
                request = request.header(AUTHORIZATION, value);
            }
            if let Some((body, length)) = body {
                request = request
                    .header(reqwest::header::CONTENT_LENGTH, length)
                    .body(body);
            } else if matches!(call.method, Method::PUT | Method::POST | Method::PATCH) {
                request = request.header(reqwest::header::CONTENT_LENGTH, 0);
            }
            let sent = Instant::now();
            let result = request.send().await;
            let tls_fallback = matches!(&result, Err(source) if host.insecure
                && call.url.scheme() == "https"
                && (source.is_connect() || source.is_request()));
            if !tls_fallback {
                // A TLS handshake refused by a plain-HTTP host never became a request.
                self.inner.stats.count(&call.method);
            }
            let error = match result {
                Err(source) => {
                    if tls_fallback {
                        // A host allowed to be insecure that does not speak TLS: plain HTTP from now on.
                        let mut base = lock(&host.base);
                        let _ = base.set_scheme("http");
                        drop(base);
                        let _ = call.url.set_scheme("http");
                        debug!(host = %host.name, "no TLS on insecure registry, using plain HTTP");
                        attempts -= 1;
                        continue;
                    }
                    debug!(method = %call.method, url = %redact_url(&call.url), error = %source, "request failed");
                    RegistryError::Transport {
                        host: host.name.clone(),
                        operation: call.operation,
                        target: call.target.clone(),
                        detail: describe_transport(&source) + &via(&host.name, &call.url),
                        source,
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    debug!(method = %call.method, url = %redact_url(&call.url), status = status.as_u16(), elapsed = ?sent.elapsed(), "request");
                    if let Some(limit) = RateLimit::from_headers(response.headers()) {
                        *lock(&host.rate_limit) = Some(limit);
                    }
                    if status == StatusCode::UNAUTHORIZED {
                        let challenge = response
                            .headers()
                            .get(WWW_AUTHENTICATE)
                            .and_then(|v| v.to_str().ok())
                            .and_then(parse_challenge);
                        let body = read_capped(response, 64 * 1024).await;
                        if let Some(challenge) = challenge {
                            let changed = *lock(&host.scheme) != challenge.scheme;
                            *lock(&host.scheme) = challenge.scheme.clone();
                            if let Some(scope) =
                                challenge.scope.filter(|s| s.starts_with("repository:"))
                            {
                                call.scopes = call.scopes.clone().with(scope);
                            }
                            if (!reauthenticated || changed) && replayable {
                                reauthenticated = true;
                                // Only credentials that were sent can be stale.
                                if let Some(provider) = &host.provider
                                    && authorization.is_some()
                                {
                                    provider.invalidate();
                                }
                                stale_token = authorization
                                    .as_deref()
                                    .and_then(|a| a.strip_prefix("Bearer "))
                                    .map(str::to_owned);
                                attempts -= 1;
                                drop(probe_guard);
                                continue;
                            }
                        }
                        if !replayable && let Some(provider) = &host.provider {
                            provider.invalidate();
                            return Err(RegistryError::CredentialsExpired {
                                host: host.name.clone(),
                                operation: call.operation,
                                target: call.target.clone(),
                            });
                        }
                        let (code, message) = decode_error_body(&body);
                        return Err(self.unauthorized(
                            host,
                            &call,
                            authorization.is_some(),
                            code,
                            message,
                        ));
                    }
                    if probe_guard.is_some() {
                        *lock(&host.scheme) = Scheme::Anonymous;
                    }
                    if call.follow_redirects && status.is_redirection() {
                        return self.follow_redirect(host, &call, response, permit).await;
                    }
                    if !is_transient_status(status) {
                        return Ok(Answer { response, permit });
                    }
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    let error = api_error(host, &call, response).await;
                    if let Some(wait) = retry_after {
                        if wait > policy.max_retry_after {
                            return Err(RegistryError::RateLimited {
                                host: host.name.clone(),
                                operation: call.operation,
                                target: call.target.clone(),
                                retry_after: wait,
                                limit: host.rate_limit().map(|l| l.to_string()),
                                hint: if host.name == "registry-1.docker.io" {
                                    "Docker Hub's pull limit is reached: log in (docker login or --src-creds) for a higher limit, or wait".to_owned()
                                } else {
                                    "wait and retry, or raise --max-retry-after".to_owned()
                                },
                            });
                        }
                        if replayable && attempts < policy.max_attempts {
                            self.inner
                                .stats
                                .retries
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            warn!(host = %host.name, "{error}; retrying in {wait:?} (Retry-After)");
                            drop(permit);
                            tokio::time::sleep(wait).await;
                            let _ = delays.next();
                            last_error = Some(error);
                            continue;
                        }
                    }
                    error
                }
            };
            drop(permit);
            drop(probe_guard);
            if !replayable {
                return Err(error);
            }
            match delays.next() {
                Some(delay) if attempts < policy.max_attempts => {
                    self.inner
                        .stats
                        .retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    warn!(host = %host.name, "{error}; retrying in {delay:.1?}");
                    tokio::time::sleep(delay).await;
                    last_error = Some(error);
                }
                _ => {
                    let _ = last_error;
                    return Err(if attempts > 1 {
                        RegistryError::RetriesExhausted {
                            host: host.name.clone(),
                            operation: call.operation,
                            target: call.target.clone(),
                            attempts,
                            elapsed: started.elapsed(),
                            last: Box::new(error),
                        }
                    } else {
                        error
                    });
                }
            }
        }
    }

    fn unauthorized(
        &self,
        host: &Host,
        call: &Call,
        sent_credentials: bool,
        code: Option<crate::ErrorCode>,
        message: String,
    ) -> RegistryError {
        let _ = code;
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
        let hint = if sent_credentials {
            "the credentials lack permission for this repository and action, or have expired"
        } else {
            "pass --src-creds/--dest-creds USER:PASSWORD, or run `docker login` for this registry"
        };
        RegistryError::Auth {
            host: host.name.clone(),
            detail,
            hint: hint.to_owned(),
        }
    }

    /// Follows a blob redirect. Credentials go only to the registry itself; a
    /// presigned URL on another host is fetched without them and never logged whole.
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
            debug!(to = %redact_url(&location), "following redirect");
            let mut request = self
                .http_for(host)?
                .request(call.method.clone(), location.clone())
                .headers(call.headers.clone());
            if host.owns(&location)
                && let Some(value) = self.authorization(host, &call.scopes, None).await?
            {
                request = request.header(AUTHORIZATION, value);
            }
            self.inner.stats.count(&call.method);
            response = request
                .send()
                .await
                .map_err(|source| RegistryError::Transport {
                    host: location.host_str().unwrap_or_default().to_owned(),
                    operation: call.operation,
                    target: call.target.clone(),
                    detail: format!(
                        "{} (redirected to {})",
                        describe_transport(&source),
                        redact_url(&location)
                    ),
                    source,
                })?;
            if !response.status().is_redirection() {
                if response.status().is_success() {
                    return Ok(Answer { response, permit });
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

/// Reads an error answer into a typed error (body capped, code decoded).
pub(crate) async fn api_error(
    host: &Host,
    call: &Call,
    response: reqwest::Response,
) -> RegistryError {
    let status = response.status().as_u16();
    let body = if call.method == Method::HEAD {
        Bytes::new()
    } else {
        read_capped(response, 64 * 1024).await
    };
    let (code, message) = decode_error_body(&body);
    RegistryError::Api {
        host: host.name.clone(),
        operation: call.operation,
        target: call.target.clone(),
        status,
        code,
        message,
    }
}

/// The most of a token answer read: a token is a few KiB; an endless
/// answer must not take the memory.
const MAX_TOKEN_BYTES: usize = 1024 * 1024;

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

async fn read_capped(mut response: reqwest::Response, cap: usize) -> Bytes {
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

/// ` (via ADDRESS)` when the request went somewhere other than the host's
/// own name: an endpoint mapping, or docker.io's registry-1.docker.io.
fn via(name: &str, url: &Url) -> String {
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

fn describe_transport(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "connection failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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
}
