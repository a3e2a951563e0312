//! Where credentials come from: explicit flags, docker's config.json (`auths`,
//! `credHelpers`, `credsStore`) and `DOCKER_AUTH_CONFIG`, and containers'
//! auth.json (skopeo, podman), each read by the rules of the tool that writes
//! it, so that mirror sends what `docker pull` or `skopeo copy` would.
//!
//! Lookups are lazy: a registry that never asks for credentials never causes a
//! credential helper to run.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::error::RegistryError;

/// Credentials for one registry. `Debug` never shows secrets.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Username and password (or access token used as a password).
    Basic { username: String, password: String },
    /// A refresh token from `docker login` (`identitytoken`), exchanged via OAuth2.
    IdentityToken { username: String, token: String },
    /// A registry bearer token used as is.
    Bearer(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}:<redacted>)"),
            Self::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username}:<redacted>)")
            }
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl Credentials {
    /// Parses `USER:PASSWORD` (the password may itself contain `:`).
    pub fn parse_user_password(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(Self::Basic {
                username: user.to_owned(),
                password: password.to_owned(),
            }),
            _ => Err("credentials must be USER:PASSWORD".to_owned()),
        }
    }

    /// The `Authorization: Basic` value for these credentials, if they are Basic.
    pub(crate) fn basic_header(&self) -> Option<String> {
        match self {
            Self::Basic { username, password } => {
                let raw = format!("{username}:{password}");
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ))
            }
            _ => None,
        }
    }

    pub fn username(&self) -> Option<&str> {
        match self {
            Self::Basic { username, .. } | Self::IdentityToken { username, .. } => Some(username),
            Self::Bearer(_) => None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    // BTreeMaps: when several keys name the same host, the first in key
    // order wins, the same on every run.
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// `DOCKER_AUTH_CONFIG`: only `auths` entries with `auth`, as Docker takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvironmentConfig {
    #[serde(default)]
    auths: BTreeMap<String, EnvironmentEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvironmentEntry {
    auth: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

/// Whose rules a credentials file follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// Docker's `config.json`, read as the docker CLI reads it.
    Docker,
    /// containers' `auth.json` (skopeo, podman, buildah).
    Containers,
}

/// Where credentials come from: `DOCKER_AUTH_CONFIG`, then the files, each
/// read by its own tool's rules, the first that knows the host winning.
#[derive(Debug, Default, Clone)]
pub struct CredentialStore {
    /// `DOCKER_AUTH_CONFIG`, consulted before Docker's file as Docker does.
    environment: Option<String>,
    files: Vec<(PathBuf, Dialect)>,
}

/// Docker Hub's key in Docker's config: `docker login` stores Hub
/// credentials under it, and Docker looks them up under nothing else.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
const DOCKER_AUTH_CONFIG: &str = "DOCKER_AUTH_CONFIG";

impl CredentialStore {
    /// No stored credentials: only what is passed explicitly.
    pub fn empty() -> Self {
        Self::default()
    }

    /// What docker and the containers tools use: `DOCKER_AUTH_CONFIG`,
    /// `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`), then
    /// `$REGISTRY_AUTH_FILE` and `$XDG_RUNTIME_DIR/containers/auth.json`.
    pub fn from_environment() -> Self {
        let mut files = Vec::new();
        let docker_dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")));
        if let Some(dir) = docker_dir {
            files.push((dir.join("config.json"), Dialect::Docker));
        }
        if let Some(file) = std::env::var_os("REGISTRY_AUTH_FILE") {
            files.push((PathBuf::from(file), Dialect::Containers));
        }
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
            files.push((
                Path::new(&dir).join("containers/auth.json"),
                Dialect::Containers,
            ));
        }
        Self {
            environment: std::env::var(DOCKER_AUTH_CONFIG)
                .ok()
                .filter(|v| !v.is_empty()),
            files,
        }
    }

    /// Only the given Docker config file.
    pub fn from_file(path: impl Into<PathBuf>) -> Self {
        Self {
            environment: None,
            files: vec![(path.into(), Dialect::Docker)],
        }
    }

    /// Only the given containers `auth.json`.
    pub fn from_auth_file(path: impl Into<PathBuf>) -> Self {
        Self {
            environment: None,
            files: vec![(path.into(), Dialect::Containers)],
        }
    }

    /// Finds credentials for a registry host (`docker.io` for Docker Hub,
    /// `host:port`).
    pub async fn lookup(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        if let Some(text) = &self.environment
            && let Some(found) = lookup_environment(text, registry)?
        {
            return Ok(Some(found));
        }
        for (file, dialect) in &self.files {
            let text = match tokio::fs::read(file).await {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(RegistryError::Setup(format!(
                        "cannot read {}: {e}",
                        file.display()
                    )));
                }
            };
            let config: ConfigFile = serde_json::from_slice(&text).map_err(|e| {
                RegistryError::Setup(format!(
                    "{} is not a valid docker config file: {e}",
                    file.display()
                ))
            })?;
            let found = match dialect {
                Dialect::Docker => lookup_docker(&config, registry, file).await?,
                Dialect::Containers => lookup_containers(&config, registry, file).await?,
            };
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// The key Docker files a registry's credentials under: Docker Hub's
/// historical index URL, else the host (`host:port`) itself.
fn docker_key(registry: &str) -> &str {
    if is_docker_hub(registry) {
        DOCKER_HUB_KEY
    } else {
        registry
    }
}

/// The host of a key written as a URL (`https://h:5000/v2/` -> `h:5000`),
/// or the key up to its first `/`.
fn key_host(key: &str) -> &str {
    let key = key.split_once("://").map_or(key, |(_, rest)| rest);
    key.split('/').next().unwrap_or(key)
}

/// `DOCKER_AUTH_CONFIG`: exact keys only, before any file.
fn lookup_environment(text: &str, registry: &str) -> Result<Option<Credentials>, RegistryError> {
    let config: EnvironmentConfig = serde_json::from_str(text).map_err(|e| {
        RegistryError::Setup(format!(
            "{DOCKER_AUTH_CONFIG} is not valid: {e} (expected {{\"auths\":{{\"HOST\":{{\"auth\":\"BASE64(USER:PASSWORD)\"}}}}}})"
        ))
    })?;
    let Some(entry) = config.auths.get(docker_key(registry)) else {
        return Ok(None);
    };
    let entry = AuthEntry {
        auth: Some(entry.auth.clone()),
        ..AuthEntry::default()
    };
    decode_entry(&entry, registry, DOCKER_AUTH_CONFIG)
}

/// Docker's rules (docker/cli `GetAuthConfig`): the host's `credHelpers`
/// entry, else `credsStore`; a helper, once chosen, is the only answer
/// (`auths` is not consulted when it has nothing). Without a helper,
/// `auths`: the exact key, else the first key (in key order) whose host
/// is the registry. Docker Hub's credentials live only under
/// `https://index.docker.io/v1/`.
async fn lookup_docker(
    config: &ConfigFile,
    registry: &str,
    file: &Path,
) -> Result<Option<Credentials>, RegistryError> {
    let key = docker_key(registry);
    let helper = config
        .cred_helpers
        .get(key)
        .or(config.creds_store.as_ref())
        .filter(|helper| !helper.is_empty());
    if let Some(helper) = helper {
        return run_helper(helper, key).await;
    }
    let entry = config.auths.get(key).or_else(|| {
        (key != DOCKER_HUB_KEY)
            .then(|| {
                config
                    .auths
                    .iter()
                    .find(|(candidate, _)| key_host(candidate) == key)
                    .map(|(_, entry)| entry)
            })
            .flatten()
    });
    match entry {
        Some(entry) => decode_entry(entry, registry, &file.display().to_string()),
        None => Ok(None),
    }
}

/// containers/image's rules: the host's `credHelpers` entry, else `auths`
/// under the exact host, else the first key (in key order) that names the
/// same host (scheme and path dropped; Docker Hub's names are one). No
/// `credsStore`.
async fn lookup_containers(
    config: &ConfigFile,
    registry: &str,
    file: &Path,
) -> Result<Option<Credentials>, RegistryError> {
    if let Some(helper) = config.cred_helpers.get(registry) {
        return run_helper(helper, registry).await;
    }
    let same_host = |key: &str| {
        let host = key_host(key);
        host == registry || (is_docker_hub(host) && is_docker_hub(registry))
    };
    let entry = config.auths.get(registry).or_else(|| {
        config
            .auths
            .iter()
            .find(|(key, _)| same_host(key))
            .map(|(_, entry)| entry)
    });
    match entry {
        Some(entry) => decode_entry(entry, registry, &file.display().to_string()),
        None => Ok(None),
    }
}

/// An `auths` entry as credentials; `origin` names the file (or variable)
/// in errors.
fn decode_entry(
    entry: &AuthEntry,
    registry: &str,
    origin: &str,
) -> Result<Option<Credentials>, RegistryError> {
    let invalid = || {
        RegistryError::Setup(format!(
            "the `auth` entry for {registry} in {origin} is not base64 of USER:PASSWORD"
        ))
    };
    let (mut username, mut password) = (entry.username.clone(), entry.password.clone());
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| invalid())?;
        let raw = String::from_utf8(raw).map_err(|_| invalid())?;
        let (u, p) = raw.split_once(':').ok_or_else(invalid)?;
        username = Some(u.to_owned());
        password = Some(p.to_owned());
    }
    if let Some(token) = entry.registrytoken.clone().filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials::Bearer(token)));
    }
    if let Some(token) = entry.identitytoken.clone().filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials::IdentityToken {
            username: username.unwrap_or_default(),
            token,
        }));
    }
    Ok(match (username, password) {
        (Some(username), Some(password)) if !username.is_empty() => {
            Some(Credentials::Basic { username, password })
        }
        _ => None,
    })
}

/// Runs `docker-credential-<helper> get` with the server URL on stdin.
async fn run_helper(helper: &str, server_url: &str) -> Result<Option<Credentials>, RegistryError> {
    let program = format!("docker-credential-{helper}");
    let fail = |detail: String| {
        RegistryError::Setup(format!(
            "credential helper {program} failed for {server_url}: {detail}"
        ))
    };
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("{e} (is {program} on PATH?)")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server_url.as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| fail("no answer within 60 s".to_owned()))?
        .map_err(|e| fail(e.to_string()))?;
    if !output.status.success() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(format!("exit status {}", output.status)));
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
        .map_err(|e| fail(format!("unreadable answer: {e}")))?;
    Ok(Some(if answer.username == "<token>" {
        Credentials::IdentityToken {
            username: String::new(),
            token: answer.secret,
        }
    } else {
        Credentials::Basic {
            username: answer.username,
            password: answer.secret,
        }
    }))
}

/// Credentials that change during a run (ECR's 12-hour passwords): asked for
/// before each request that needs them, told when the registry refused them.
pub trait CredentialProvider: Send + Sync {
    /// Current credentials; a provider refreshes them when they near expiry.
    fn credentials(&self) -> futures::future::BoxFuture<'_, Result<Credentials, RegistryError>>;

    /// The registry answered 401 to these credentials: fetch new ones next time.
    fn invalidate(&self);

    /// The registry takes these credentials as Basic auth on every request
    /// (ECR): send them from the first request on, without the 401 round
    /// trip that would otherwise discover the scheme.
    fn preemptive_basic(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credentials::parse_user_password("me:s3cr3t:x").unwrap();
        assert_eq!(format!("{c:?}"), "Basic(me:<redacted>)");
        assert_eq!(
            c,
            Credentials::Basic {
                username: "me".into(),
                password: "s3cr3t:x".into()
            }
        );
    }

    /// A config file in a fresh directory, removed on drop.
    struct ConfigDir(PathBuf);

    impl ConfigDir {
        fn new(label: &str, config: &serde_json::Value) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "mirror-cred-{label}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
            Self(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join("config.json")
        }
    }

    impl Drop for ConfigDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn auth(user_password: &str) -> serde_json::Value {
        serde_json::json!({"auth": base64::engine::general_purpose::STANDARD.encode(user_password)})
    }

    /// The user `store` finds for `registry` is `expected`.
    async fn assert_user(store: &CredentialStore, registry: &str, expected: Option<&str>) {
        let found = store.lookup(registry).await.unwrap();
        assert_eq!(
            found.as_ref().map(|c| c.username().unwrap_or_default()),
            expected,
            "{registry}"
        );
    }

    #[tokio::test]
    async fn docker_hub_credentials_live_under_the_index_url_only() {
        let both = ConfigDir::new(
            "hub",
            &serde_json::json!({"auths": {
                "docker.io": auth("short-key:pw"),
                "https://index.docker.io/v1/": auth("index-url:pw"),
                "localhost:5000": {"username": "u", "password": "p"},
            }}),
        );
        let store = CredentialStore::from_file(both.file());
        for registry in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            assert_user(&store, registry, Some("index-url")).await;
        }
        assert_user(&store, "localhost:5000", Some("u")).await;
        assert_user(&store, "other:5000", None).await;

        // Docker never reads a `docker.io` key for Docker Hub; containers' auth.json does.
        let short = ConfigDir::new(
            "hub-short",
            &serde_json::json!({"auths": {"docker.io": auth("short-key:pw")}}),
        );
        assert_user(&CredentialStore::from_file(short.file()), "docker.io", None).await;
        assert_user(
            &CredentialStore::from_auth_file(short.file()),
            "docker.io",
            Some("short-key"),
        )
        .await;
    }

    #[tokio::test]
    async fn duplicate_keys_resolve_the_same_way_every_time() {
        // The exact host beats URL spellings of it; among URL spellings the
        // first in key order wins (Docker itself picks by map order).
        let exact = ConfigDir::new(
            "exact",
            &serde_json::json!({"auths": {
                "https://registry.example:5000/v2/": auth("url-v2:pw"),
                "registry.example:5000": auth("exact:pw"),
                "http://registry.example:5000": auth("url-http:pw"),
            }}),
        );
        let urls = ConfigDir::new(
            "urls",
            &serde_json::json!({"auths": {
                "https://registry.example:5000/v2/": auth("url-v2:pw"),
                "http://registry.example:5000": auth("url-http:pw"),
                "registry.example": auth("other-port:pw"),
            }}),
        );
        for _ in 0..8 {
            assert_user(
                &CredentialStore::from_file(exact.file()),
                "registry.example:5000",
                Some("exact"),
            )
            .await;
            assert_user(
                &CredentialStore::from_file(urls.file()),
                "registry.example:5000",
                Some("url-http"),
            )
            .await;
        }
    }

    #[tokio::test]
    async fn a_chosen_helper_is_the_only_answer() {
        // credHelpers for the host beats credsStore and auths; credsStore
        // beats auths. (A missing program shows which helper was chosen.)
        let config = ConfigDir::new(
            "order",
            &serde_json::json!({
                "auths": {"example.com": auth("from-auths:pw"), "plain.example": auth("plain:pw")},
                "credHelpers": {"example.com": "mirror-test-absent-host-helper", "https://index.docker.io/v1/": "mirror-test-absent-hub-helper"},
                "credsStore": "mirror-test-absent-store",
            }),
        );
        let store = CredentialStore::from_file(config.file());
        for (registry, program) in [
            (
                "example.com",
                "docker-credential-mirror-test-absent-host-helper",
            ),
            (
                "docker.io",
                "docker-credential-mirror-test-absent-hub-helper",
            ),
            (
                "plain.example",
                "docker-credential-mirror-test-absent-store",
            ),
        ] {
            let error = store.lookup(registry).await.unwrap_err().to_string();
            assert!(error.contains(program), "{registry}: {error}");
        }
        // An empty credsStore is no store.
        let empty = ConfigDir::new(
            "empty-store",
            &serde_json::json!({"auths": {"plain.example": auth("plain:pw")}, "credsStore": ""}),
        );
        assert_user(
            &CredentialStore::from_file(empty.file()),
            "plain.example",
            Some("plain"),
        )
        .await;
    }

    #[tokio::test]
    async fn containers_auth_json_ignores_creds_store() {
        let config = ConfigDir::new(
            "containers",
            &serde_json::json!({
                "auths": {"https://quay.example/v1/": auth("from-auths:pw")},
                "credsStore": "mirror-test-absent-store",
            }),
        );
        let store = CredentialStore::from_auth_file(config.file());
        assert_user(&store, "quay.example", Some("from-auths")).await;
    }

    #[tokio::test]
    async fn docker_auth_config_comes_first_and_is_checked() {
        let config = ConfigDir::new(
            "environment",
            &serde_json::json!({"auths": {"example.com": auth("from-file:pw")}}),
        );
        let environment = serde_json::json!({"auths": {
            "example.com": auth("from-environment:pw"),
            "https://index.docker.io/v1/": auth("hub-environment:pw"),
        }});
        let store = CredentialStore {
            environment: Some(environment.to_string()),
            ..CredentialStore::from_file(config.file())
        };
        assert_user(&store, "example.com", Some("from-environment")).await;
        assert_user(&store, "docker.io", Some("hub-environment")).await;
        let invalid = CredentialStore {
            environment: Some(r#"{"auths":{"example.com":{"username":"u"}}}"#.to_owned()),
            ..CredentialStore::from_file(config.file())
        };
        let error = invalid.lookup("example.com").await.unwrap_err().to_string();
        assert!(error.contains("DOCKER_AUTH_CONFIG"), "{error}");
    }
}
