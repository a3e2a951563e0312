//! ECR registry credentials: GetAuthorizationToken through the AWS SDK's default
//! credential chain, sent as Basic on every registry request, refreshed at
//! half-life and after a 401.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use futures::future::{BoxFuture, FutureExt as _};
use mirror_registry::{CredentialProvider, Credentials, RegistryError};
use tracing::{debug, warn};

use crate::error::{EcrError, classify};
use crate::host::EcrHost;

/// ECR tokens live 12 hours.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(12 * 3600);

struct Current {
    credentials: Credentials,
    fetched: Instant,
    lifetime: Duration,
}

/// Registry credentials for the caller's ECR registry.
pub struct EcrAuth {
    client: aws_sdk_ecr::Client,
    current: tokio::sync::Mutex<Option<Current>>,
    invalidated: AtomicBool,
    lifetime_override: Option<Duration>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for EcrAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrAuth")
            .field("fetches", &self.fetches.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl EcrAuth {
    /// `lifetime_override` replaces the token's own expiry (tests, and emulators
    /// that answer with an expiry in the past).
    pub fn new(client: aws_sdk_ecr::Client, lifetime_override: Option<Duration>) -> Arc<Self> {
        Arc::new(Self {
            client,
            current: tokio::sync::Mutex::new(None),
            invalidated: AtomicBool::new(false),
            lifetime_override,
            fetches: AtomicU64::new(0),
        })
    }

    /// How many GetAuthorizationToken calls were made.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The caller's registry (from `proxyEndpoint`), fetching a token if needed.
    pub async fn registry(&self) -> Result<EcrHost, EcrError> {
        let (fresh, endpoint) = self.fetch().await?;
        *self.current.lock().await = Some(fresh);
        EcrHost::parse(&endpoint).ok_or_else(|| EcrError::Unusable {
            action: "GetAuthorizationToken",
            what: format!("`{endpoint}`, which is not an ECR registry host"),
        })
    }

    async fn fetch(&self) -> Result<(Current, String), EcrError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let output = self
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| classify("ecr:GetAuthorizationToken", e))?;
        let data = output
            .authorization_data()
            .first()
            .ok_or_else(|| EcrError::Unusable {
                action: "GetAuthorizationToken",
                what: "no authorization data".to_owned(),
            })?;
        let token = data.authorization_token().unwrap_or_default();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| EcrError::Unusable {
                action: "GetAuthorizationToken",
                what: "a token that is not base64 USER:PASSWORD".to_owned(),
            })?;
        let credentials =
            Credentials::parse_user_password(&decoded).map_err(|_| EcrError::Unusable {
                action: "GetAuthorizationToken",
                what: "a token that is not USER:PASSWORD".to_owned(),
            })?;
        let lifetime = self.lifetime_override.unwrap_or_else(|| {
            data.expires_at()
                .and_then(|t| SystemTime::try_from(*t).ok())
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                // An expiry in the past (emulators) must not make every request refetch.
                .filter(|d| *d > Duration::from_secs(60))
                .unwrap_or(DEFAULT_LIFETIME)
        });
        let endpoint = data.proxy_endpoint().unwrap_or_default().to_owned();
        Ok((
            Current {
                credentials,
                fetched: Instant::now(),
                lifetime,
            },
            endpoint,
        ))
    }

    async fn current(&self) -> Result<Credentials, RegistryError> {
        let mut current = self.current.lock().await;
        let invalidated = self.invalidated.swap(false, Ordering::AcqRel);
        if let Some(c) = current.as_ref()
            && !invalidated
            && c.fetched.elapsed() < c.lifetime / 2
        {
            return Ok(c.credentials.clone());
        }
        match self.fetch().await {
            Ok((fresh, _)) => {
                debug!(lifetime = ?fresh.lifetime, "ECR token fetched");
                let credentials = fresh.credentials.clone();
                *current = Some(fresh);
                Ok(credentials)
            }
            // Past half-life but not expired: keep the old token through a failed refresh.
            Err(error) => match current.as_ref() {
                Some(c) if !invalidated && c.fetched.elapsed() < c.lifetime => {
                    warn!(%error, "refreshing the ECR token failed; using the current one");
                    Ok(c.credentials.clone())
                }
                _ => Err(RegistryError::CredentialProvider {
                    source: Box::new(error),
                }),
            },
        }
    }
}

impl CredentialProvider for EcrAuth {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, RegistryError>> {
        self.current().boxed()
    }

    fn invalidate(&self) {
        self.invalidated.store(true, Ordering::Release);
    }

    fn preemptive_basic(&self) -> bool {
        true
    }
}
