//! How a request gets its `Authorization` header: the host's credentials
//! (explicit, from a provider, or looked up once in the credential store),
//! Basic, or a bearer token from the realm the registry named, cached per
//! scope, refreshed before expiry and fetched by one caller at a time.

use std::time::Instant;

use reqwest::header::AUTHORIZATION;
use tracing::{debug, warn};
use url::Url;

use crate::auth::{Scheme, Scopes, Token, TokenResponse};
use crate::client::RegistryClient;
use crate::credentials::Credentials;
use crate::error::{AuthFailure, RegistryError, decode_error_body};
use crate::execute::is_transient_status;
use crate::host::{Host, lock};
use crate::redact::redact_url;

impl RegistryClient {
    pub(crate) async fn credentials(
        &self,
        host: &Host,
    ) -> Result<Option<Credentials>, RegistryError> {
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
    pub(crate) async fn authorization(
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
                detail: "the registry requires a username and password and none were found"
                    .to_owned(),
                failure: AuthFailure::NoCredentials,
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
        let auth_error = |detail: String, failure: AuthFailure| RegistryError::Auth {
            host: host.name.clone(),
            detail,
            failure,
        };
        let mut url = Url::parse(realm).map_err(|_| {
            auth_error(
                format!("the registry named `{realm}` as its token server, which is not a URL"),
                AuthFailure::TokenServer,
            )
        })?;
        if url.scheme() == "http" && credentials.is_some() && !host.insecure {
            return Err(auth_error(
                format!(
                    "the token server {} is plain HTTP; credentials are not sent over it",
                    redact_url(&url)
                ),
                AuthFailure::PlainHttpTokenServer,
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
                    let body = response.bytes().await.map_err(|e| {
                        auth_error(
                            format!("reading the token answer failed: {e}"),
                            AuthFailure::TokenServer,
                        )
                    })?;
                    let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
                        auth_error(
                            "the token server answered something that is not a token".to_owned(),
                            AuthFailure::TokenServer,
                        )
                    })?;
                    return parsed.into_token().ok_or_else(|| {
                        auth_error(
                            "the token server answered without a token".to_owned(),
                            AuthFailure::TokenServer,
                        )
                    });
                }
                Ok(response) if is_transient_status(response.status()) => {
                    format!("token server answered {}", response.status())
                }
                Ok(response) => {
                    let status = response.status();
                    let body = response.bytes().await.unwrap_or_default();
                    let (_, message) = decode_error_body(&body);
                    let failure = if credentials.is_some() {
                        AuthFailure::Refused
                    } else {
                        AuthFailure::NoCredentials
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
                        failure,
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
                    return Err(auth_error(transient, AuthFailure::TokenServer));
                }
            }
        }
    }
}
