//! Where credentials come from: explicit flags, docker's config.json (`auths`,
//! `credHelpers`, `credsStore`), and containers' auth.json (skopeo, podman).
//!
//! Lookups are lazy: a registry that never asks for credentials never causes a
//! credential helper to run.

use std::collections::HashMap;
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
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
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

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

/// Credential sources consulted in order: docker config (helpers first), then
/// containers' auth.json files.
#[derive(Debug, Default, Clone)]
pub struct CredentialStore {
    files: Vec<PathBuf>,
}

const DOCKER_HUB_ALIASES: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io"];
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

impl CredentialStore {
    /// No stored credentials: only what is passed explicitly.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The files docker and the containers tools use: `$DOCKER_CONFIG/config.json`
    /// (default `~/.docker/config.json`), `$REGISTRY_AUTH_FILE`, and
    /// `$XDG_RUNTIME_DIR/containers/auth.json`.
    pub fn from_environment() -> Self {
        let mut files = Vec::new();
        let docker_dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")));
        if let Some(dir) = docker_dir {
            files.push(dir.join("config.json"));
        }
        if let Some(file) = std::env::var_os("REGISTRY_AUTH_FILE") {
            files.push(PathBuf::from(file));
        }
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
            files.push(Path::new(&dir).join("containers/auth.json"));
        }
        Self { files }
    }

    /// Only the given config file (tests, `--authfile`).
    pub fn from_file(path: impl Into<PathBuf>) -> Self {
        Self {
            files: vec![path.into()],
        }
    }

    /// Finds credentials for a registry host (`docker.io`, `host:port`).
    pub async fn lookup(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        for file in &self.files {
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
            if let Some(found) = lookup_in(&config, registry, file).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

fn is_docker_hub(host: &str) -> bool {
    DOCKER_HUB_ALIASES.contains(&host)
}

/// `https://index.docker.io/v1/` -> `index.docker.io`; `http://h:5000/x` -> `h:5000`.
fn normalise_key(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

fn same_registry(key: &str, registry: &str) -> bool {
    let key = normalise_key(key);
    key == registry || (is_docker_hub(key) && is_docker_hub(registry))
}

async fn lookup_in(
    config: &ConfigFile,
    registry: &str,
    file: &Path,
) -> Result<Option<Credentials>, RegistryError> {
    let server_url = if is_docker_hub(registry) {
        DOCKER_HUB_KEY.to_owned()
    } else {
        registry.to_owned()
    };
    if let Some((_, helper)) = config
        .cred_helpers
        .iter()
        .find(|(k, _)| same_registry(k, registry))
    {
        return run_helper(helper, &server_url).await;
    }
    if let Some((_, entry)) = config
        .auths
        .iter()
        .find(|(k, _)| same_registry(k, registry))
        && let Some(found) = decode_entry(entry, registry, file)?
    {
        return Ok(Some(found));
    }
    if let Some(store) = &config.creds_store {
        return run_helper(store, &server_url).await;
    }
    Ok(None)
}

fn decode_entry(
    entry: &AuthEntry,
    registry: &str,
    file: &Path,
) -> Result<Option<Credentials>, RegistryError> {
    let invalid = || {
        RegistryError::Setup(format!(
            "the `auth` entry for {registry} in {} is not base64 of USER:PASSWORD",
            file.display()
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

    #[tokio::test]
    async fn docker_hub_entries_match_every_alias() {
        let dir = std::env::temp_dir().join(format!("mirror-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("hubuser:hubpass");
        std::fs::write(&file, format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"localhost:5000":{{"username":"u","password":"p"}}}}}}"#)).unwrap();
        let store = CredentialStore::from_file(&file);
        let hub = store.lookup("docker.io").await.unwrap().unwrap();
        assert_eq!(hub.username(), Some("hubuser"));
        assert!(
            store
                .lookup("registry-1.docker.io")
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            store
                .lookup("localhost:5000")
                .await
                .unwrap()
                .unwrap()
                .username(),
            Some("u")
        );
        assert!(store.lookup("other:5000").await.unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_missing_helper_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("mirror-cred-helper-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.json");
        std::fs::write(
            &file,
            r#"{"credHelpers":{"example.com":"nonexistent-helper-xyz"}}"#,
        )
        .unwrap();
        let err = CredentialStore::from_file(&file)
            .lookup("example.com")
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("docker-credential-nonexistent-helper-xyz"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
