//! What the client knows about one registry host for one set of credentials,
//! and the two rules that keep those credentials safe: state is keyed by the
//! whole secret, and only URLs on the registry itself are its own.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, RandomState};
use std::sync::{Arc, Mutex};

use reqwest::Method;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;

use crate::auth::{Scheme, Token};
use crate::credentials::{CredentialProvider, Credentials};
use crate::error::RegistryError;
use crate::ratelimit::RateLimit;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Everything known about one registry host for one set of credentials.
pub(crate) struct Host {
    /// The host as named in references (`docker.io` maps to `registry-1.docker.io`).
    pub name: String,
    pub base: Mutex<Url>,
    /// Named by `--insecure-registry`: plain HTTP or unverified TLS allowed.
    pub insecure: bool,
    pub scheme: Mutex<Scheme>,
    /// Held by the first request while it learns the auth scheme.
    pub probe: tokio::sync::Mutex<()>,
    pub explicit: Option<Credentials>,
    pub provider: Option<Arc<dyn CredentialProvider>>,
    pub credentials: tokio::sync::OnceCell<Option<Credentials>>,
    pub tokens: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Token>>>>>,
    pub permits: Permits,
    pub rate_limit: Mutex<Option<RateLimit>>,
}

impl Host {
    pub fn new(
        name: &str,
        base: Url,
        insecure: bool,
        credentials: Option<Credentials>,
        provider: Option<Arc<dyn CredentialProvider>>,
        max_requests: usize,
    ) -> Self {
        let scheme = if provider.as_ref().is_some_and(|p| p.preemptive_basic()) {
            Scheme::Basic
        } else {
            Scheme::Unknown
        };
        Self {
            name: name.to_owned(),
            base: Mutex::new(base),
            insecure,
            scheme: Mutex::new(scheme),
            probe: tokio::sync::Mutex::new(()),
            explicit: credentials,
            provider,
            credentials: tokio::sync::OnceCell::new(),
            tokens: Mutex::new(HashMap::new()),
            permits: Permits::new(max_requests),
            rate_limit: Mutex::new(None),
        }
    }

    pub fn base(&self) -> Url {
        lock(&self.base).clone()
    }

    pub fn scheme(&self) -> Scheme {
        lock(&self.scheme).clone()
    }

    pub fn rate_limit(&self) -> Option<RateLimit> {
        *lock(&self.rate_limit)
    }

    /// The URL to send a request for `url` to when `url` is on this registry
    /// (so its credentials may go with it); `None` for any other host.
    ///
    /// On the registry means the same scheme, host and port as the address
    /// requests go to. A URL on the registry's own name while it is reached
    /// through an endpoint mapping (a VPC endpoint answering with absolute
    /// URLs on the public name) is the registry too, and is reached through
    /// the mapping, as everything else.
    pub fn on_registry(&self, url: &Url) -> Option<Url> {
        let base = self.base();
        if same_origin(url, &base) {
            return Some(url.clone());
        }
        let named = Url::parse(&format!("https://{}/", self.name)).ok()?;
        if named != base && same_origin(url, &named) {
            let mut rebased = url.clone();
            rebased.set_scheme(base.scheme()).ok()?;
            rebased.set_host(base.host_str()).ok()?;
            rebased.set_port(base.port()).ok()?;
            return Some(rebased);
        }
        None
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Requests in flight to one host, with reads and writes counted apart.
///
/// A blob GET keeps its permit for as long as its body streams, so that the
/// bound covers the connections busy with bodies and not just request heads.
/// That body is drained by an upload (POST, then a streaming PUT), which
/// needs a permit of its own. When the source and the destination are one
/// host object (ECR to ECR in one registry, mounting off), a single budget
/// lets N GETs hold every permit while each of their uploads waits for one:
/// a hang. Two budgets make that impossible: an upload waits only for other
/// writes, and every write holding a permit is already streaming from a GET
/// that holds its own read permit (the engine opens the GET before it starts
/// the upload), so every write in flight finishes and frees its permit.
///
/// Releasing the GET's permit once its headers are in would also break the
/// cycle, but then the bound would stop counting the connections that carry
/// bodies, which is most of what a per-host bound is for; and a host may now
/// see up to twice the bound when it is both source and destination, which
/// is the price of never deadlocking.
pub(crate) struct Permits {
    reads: Arc<Semaphore>,
    writes: Arc<Semaphore>,
}

impl Permits {
    fn new(per_direction: usize) -> Self {
        Self {
            reads: Arc::new(Semaphore::new(per_direction.max(1))),
            writes: Arc::new(Semaphore::new(per_direction.max(1))),
        }
    }

    /// A permit from the budget of this method's direction.
    pub async fn acquire(&self, method: &Method) -> Result<OwnedSemaphorePermit, RegistryError> {
        let budget = if matches!(*method, Method::GET | Method::HEAD) {
            &self.reads
        } else {
            &self.writes
        };
        budget
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| RegistryError::Setup("request limiter closed".to_owned()))
    }
}

/// Who a host's state belongs to: hosts with different identities never
/// share tokens, learnt schemes or credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Identity {
    /// Credentials from the credential store (or none).
    Stored,
    /// Explicit credentials, by a salted digest of the whole secret: two
    /// passwords for one user are two identities, and the key holds nothing
    /// that could reveal a secret if it were ever printed.
    Explicit(String),
    /// A credential provider (ECR), by the provider object.
    Provider(usize),
}

/// A salt for credential fingerprints, different in every client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Salt(u64);

impl Salt {
    pub fn new() -> Self {
        Self(RandomState::new().hash_one(std::process::id()))
    }
}

impl Identity {
    pub fn of(
        credentials: Option<&Credentials>,
        provider: Option<&Arc<dyn CredentialProvider>>,
        salt: Salt,
    ) -> Self {
        if let Some(provider) = provider {
            return Self::Provider(Arc::as_ptr(provider).cast::<()>() as usize);
        }
        let Some(credentials) = credentials else {
            return Self::Stored;
        };
        let (kind, parts): (&[u8], [&str; 2]) = match credentials {
            Credentials::Basic { username, password } => (b"basic", [username, password]),
            Credentials::IdentityToken { username, token } => {
                (b"identity-token", [username, token])
            }
            Credentials::Bearer(token) => (b"bearer", [token, ""]),
        };
        let mut text = salt.0.to_le_bytes().to_vec();
        text.extend_from_slice(kind);
        for part in parts {
            // Length-prefixed, so `a:bc` and `ab:c` never collide.
            text.extend_from_slice(&(part.len() as u64).to_le_bytes());
            text.extend_from_slice(part.as_bytes());
        }
        Self::Explicit(mirror_oci::digest_of(&text).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> Credentials {
        Credentials::Basic {
            username: user.to_owned(),
            password: password.to_owned(),
        }
    }

    /// Host state was keyed by the credentials' Debug text, which redacts the
    /// password: `--src-creds alice:RIGHT --dest-creds alice:WRONG` on one
    /// registry silently used RIGHT for both.
    #[test]
    fn identities_differ_by_the_whole_secret_and_never_show_it() {
        let salt = Salt::new();
        let id = |c: &Credentials| Identity::of(Some(c), None, salt);
        assert_eq!(id(&basic("alice", "RIGHT")), id(&basic("alice", "RIGHT")));
        assert_ne!(id(&basic("alice", "RIGHT")), id(&basic("alice", "WRONG")));
        assert_ne!(id(&basic("a", "bc")), id(&basic("ab", "c")));
        assert_ne!(
            id(&Credentials::Bearer("read-token".into())),
            id(&Credentials::Bearer("write-token".into()))
        );
        assert_ne!(
            id(&Credentials::Bearer("same".into())),
            id(&Credentials::IdentityToken {
                username: "same".into(),
                token: String::new()
            })
        );
        assert_eq!(Identity::of(None, None, salt), Identity::Stored);
        let shown = format!("{:?}", id(&basic("alice", "RIGHT")));
        assert!(
            !shown.contains("RIGHT") && !shown.contains("alice"),
            "{shown}"
        );
    }

    fn host(base: &str, name: &str) -> Host {
        Host::new(name, Url::parse(base).unwrap(), false, None, None, 4)
    }

    #[test]
    fn only_urls_on_the_registry_are_its_own() {
        let h = host("http://127.0.0.1:5000/", "127.0.0.1:5000");
        let own = Url::parse("http://127.0.0.1:5000/v2/a/blobs/uploads/x?_state=1").unwrap();
        assert_eq!(h.on_registry(&own), Some(own.clone()));
        for other in [
            "http://127.0.0.1:5001/v2/a/blobs/uploads/x",
            "http://localhost:5000/v2/a/blobs/uploads/x",
            "http://127.0.0.1/v2/a/blobs/uploads/x",
        ] {
            assert_eq!(h.on_registry(&Url::parse(other).unwrap()), None, "{other}");
        }
        // The registry's own name over HTTPS, while it is reached over plain
        // HTTP (an insecure registry that has no TLS): still the registry.
        let named = Url::parse("https://127.0.0.1:5000/v2/a/blobs/uploads/x").unwrap();
        assert_eq!(
            h.on_registry(&named),
            Some(Url::parse("http://127.0.0.1:5000/v2/a/blobs/uploads/x").unwrap())
        );
    }

    #[test]
    fn urls_on_a_mapped_registry_name_go_through_the_mapping() {
        let h = host(
            "http://127.0.0.1:9000/",
            "123.dkr.ecr.us-east-1.amazonaws.com",
        );
        let named =
            Url::parse("https://123.dkr.ecr.us-east-1.amazonaws.com/v2/a/blobs/uploads/x?s=1")
                .unwrap();
        assert_eq!(
            h.on_registry(&named).map(|u| u.to_string()),
            Some("http://127.0.0.1:9000/v2/a/blobs/uploads/x?s=1".to_owned())
        );
        let lookalike = Url::parse("https://123.dkr.ecr.us-east-1.amazonaws.com.evil/v2/").unwrap();
        assert_eq!(h.on_registry(&lookalike), None);
    }

    /// Reads and writes have separate budgets: with every read permit held
    /// (blob GETs streaming), a write still gets one.
    #[tokio::test]
    async fn writes_do_not_wait_behind_reads() {
        let permits = Permits::new(2);
        let _reads = (
            permits.acquire(&Method::GET).await.unwrap(),
            permits.acquire(&Method::HEAD).await.unwrap(),
        );
        let write = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            permits.acquire(&Method::PUT),
        )
        .await;
        assert!(write.is_ok(), "a PUT waited behind streaming GETs");
        let third_read = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            permits.acquire(&Method::GET),
        )
        .await;
        assert!(third_read.is_err(), "the read budget is still a bound");
    }
}
