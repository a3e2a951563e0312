//! A client for any number of registries: its settings, the two HTTP
//! clients (verified TLS, and unverified for `--insecure-registry` hosts
//! only), and the per-host state it keeps, one per host and identity. The
//! request loop itself is in the `execute` module.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use mirror_oci::Reference;
use url::Url;

use crate::credentials::{CredentialProvider, CredentialStore, Credentials};
use crate::error::RegistryError;
use crate::host::{Host, Identity, Salt, lock};
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
    pub(crate) fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .build()
    }
}

/// Bounds on listing a repository's tags, so that a hostile or broken
/// registry cannot page forever or fill memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagListLimits {
    /// Pages followed through `Link` headers, the first included.
    pub max_pages: usize,
    /// Tags in all pages together.
    pub max_tags: usize,
    /// Bytes of one page's body.
    pub max_page_bytes: usize,
}

impl Default for TagListLimits {
    fn default() -> Self {
        Self {
            max_pages: 10_000,
            max_tags: 1_000_000,
            max_page_bytes: 32 * 1024 * 1024,
        }
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
    /// Requests in flight per registry host and direction (reads and writes
    /// have a budget each; see the `host` module for why).
    pub max_requests_per_host: usize,
    pub user_agent: String,
    pub connect_timeout: Duration,
    /// Longest silence while reading a response before giving up on it.
    pub read_timeout: Duration,
    pub tag_list: TagListLimits,
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
            tag_list: TagListLimits::default(),
        }
    }
}

/// A host's state is keyed by its name and who it is used as.
type HostKey = (String, Identity);

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

pub(crate) struct Inner {
    secure: LazyClient,
    insecure: LazyClient,
    pub options: ClientOptions,
    hosts: Mutex<HashMap<HostKey, Arc<Host>>>,
    salt: Salt,
    pub store: CredentialStore,
    pub stats: Arc<RequestStats>,
}

/// A client for any number of registries; cheap to clone.
#[derive(Clone)]
pub struct RegistryClient {
    pub(crate) inner: Arc<Inner>,
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
                salt: Salt::new(),
                store,
                stats: Arc::new(RequestStats::default()),
            }),
        })
    }

    /// Request and retry counters for the whole run.
    pub fn stats(&self) -> &Arc<RequestStats> {
        &self.inner.stats
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
        let identity = Identity::of(credentials.as_ref(), provider.as_ref(), self.inner.salt);
        let key = (name.to_owned(), identity);
        let mut hosts = lock(&self.inner.hosts);
        if let Some(host) = hosts.get(&key) {
            return Ok(host.clone());
        }
        let options = &self.inner.options;
        let insecure = options.insecure_registries.iter().any(|h| h == name);
        // Docker Hub's API host answers to the names users write, too.
        let aliases: &[&str] = if name == "registry-1.docker.io" {
            &["docker.io", "index.docker.io"]
        } else {
            &[]
        };
        let mapped = std::iter::once(name)
            .chain(aliases.iter().copied())
            .find_map(|n| options.endpoints.get(n));
        let base = match mapped {
            Some(url) => url.clone(),
            None => Url::parse(&format!("https://{name}/")).map_err(|e| {
                RegistryError::Setup(format!("`{name}` is not a usable registry host: {e}"))
            })?,
        };
        let host = Arc::new(Host::new(
            name,
            base,
            insecure,
            credentials,
            provider,
            options.max_requests_per_host,
        ));
        hosts.insert(key, host.clone());
        Ok(host)
    }

    /// The HTTP client for the registry itself.
    pub(crate) fn http_for(&self, host: &Host) -> Result<&reqwest::Client, RegistryError> {
        if host.insecure {
            self.inner.insecure.get()
        } else {
            self.inner.secure.get()
        }
    }

    /// The HTTP client for a URL on another host (a storage host, an upload
    /// location elsewhere): unverified TLS only if that host itself is
    /// named by `--insecure-registry`.
    pub(crate) fn http_for_other(&self, url: &Url) -> Result<&reqwest::Client, RegistryError> {
        let address = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => String::new(),
        };
        if self.inner.options.insecure_registries.contains(&address) {
            self.inner.insecure.get()
        } else {
            self.inner.secure.get()
        }
    }
}
