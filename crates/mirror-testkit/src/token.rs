//! A Docker Hub style token server for bearer-auth registries.
//!
//! Docker Hub, GHCR, Quay and most registries answer `401` with a `Bearer`
//! challenge and expect the client to fetch a short-lived JWT from a separate
//! token service. Distribution 2.8 can verify such tokens but ships no issuer,
//! so this module is one: `GET /token?service=..&scope=..` (Basic credentials
//! optional) and the OAuth2 `POST /token` form that Docker clients with
//! identity tokens use. It signs ES256 JWTs with a key whose self-signed
//! certificate the registry trusts, and records every request so tests can
//! count token round trips.
//!
//! What distribution 2.8 insists on: `kid` = the libtrust id of the signing
//! key, `aud` a single string equal to the service, `iss` equal to the
//! configured issuer, and `access` entries per repository.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::PublicKeyData as _;
use serde_json::json;

use crate::server::{AbortOnDrop, bind_loopback, spawn_accept_loop};

const ISSUER: &str = "mirror-testkit-token-issuer";

/// What the token server grants and how long its tokens live.
#[derive(Debug, Clone)]
pub struct TokenOptions {
    /// Known users and their passwords: a user with the right password gets
    /// every action it asks for, on every repository it asks for.
    pub users: Vec<(String, String)>,
    /// Whether a request without credentials gets `pull` (and only `pull`).
    pub anonymous_pull: bool,
    /// The token lifetime (`expires_in`). Distribution accepts expired tokens
    /// for about 60 s more (leeway).
    pub lifetime: Duration,
    /// The `service` (and JWT audience) the registry is configured with.
    pub service: String,
}

impl Default for TokenOptions {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            anonymous_pull: true,
            lifetime: Duration::from_secs(300),
            service: "registry.test".to_owned(),
        }
    }
}

/// One request the token server answered, in order of arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The user named by Basic credentials or the OAuth2 form; `None` when
    /// anonymous.
    pub user: Option<String>,
    /// The requested scopes as sent (`repository:NAME:pull,push`).
    pub scopes: Vec<String>,
    /// Whether a token was issued. A token can still grant less than asked
    /// (anonymous push); `false` means the credentials were refused (401) or
    /// the request was malformed.
    pub granted: bool,
}

struct State {
    users: HashMap<String, String>,
    anonymous_pull: bool,
    lifetime: Mutex<Duration>,
    service: String,
    key: EcdsaKeyPair,
    kid: String,
    requests: Mutex<Vec<TokenRequest>>,
    /// Refresh ("identity") tokens handed out by `POST /token`, by user.
    refresh_tokens: Mutex<HashMap<String, String>>,
}

/// A running token server on 127.0.0.1, stopped on drop.
pub struct TokenServer {
    addr: SocketAddr,
    state: Arc<State>,
    cert_path: PathBuf,
    _dir: tempfile::TempDir,
    _task: AbortOnDrop,
}

impl std::fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServer")
            .field("addr", &self.addr)
            .field("service", &self.state.service)
            .finish_non_exhaustive()
    }
}

impl TokenServer {
    /// Generates a signing key and certificate and starts serving.
    pub async fn start(options: TokenOptions) -> anyhow::Result<Self> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating the token signing key")?;
        let mut params = rcgen::CertificateParams::new(vec!["mirror-testkit-token".to_owned()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mirror-testkit token issuer");
        let cert = params.self_signed(&key_pair)?;
        let dir = tempfile::Builder::new()
            .prefix("mirror-testkit-token-")
            .tempdir()?;
        let cert_path = dir.path().join("token-issuer.pem");
        std::fs::write(&cert_path, cert.pem())?;

        let kid = libtrust_key_id(&key_pair.subject_public_key_info());
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key_pair.serialized_der())
                .map_err(|e| anyhow::anyhow!("loading the token signing key: {e}"))?;

        let state = Arc::new(State {
            users: options.users.into_iter().collect(),
            anonymous_pull: options.anonymous_pull,
            lifetime: Mutex::new(options.lifetime),
            service: options.service,
            key,
            kid,
            requests: Mutex::new(Vec::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
        });
        let (listener, addr) = bind_loopback().await?;
        let serve_state = state.clone();
        let task = spawn_accept_loop(listener, move |stream| {
            let state = serve_state.clone();
            async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        });
        Ok(Self {
            addr,
            state,
            cert_path,
            _dir: dir,
            _task: task,
        })
    }

    /// The realm for the registry's challenge: `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The service name (JWT audience).
    pub fn service(&self) -> String {
        self.state.service.clone()
    }

    /// The JWT issuer the registry must be configured with.
    pub fn issuer(&self) -> String {
        ISSUER.to_owned()
    }

    /// The PEM certificate of the signing key (the registry's `rootcertbundle`).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The libtrust key id put in every token's `kid` header.
    pub fn key_id(&self) -> String {
        self.state.kid.clone()
    }

    /// Every token request so far, in order of arrival.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        if let Ok(mut requests) = self.state.requests.lock() {
            requests.clear();
        }
    }

    /// Changes the lifetime (`expires_in`) of tokens issued from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        if let Ok(mut current) = self.state.lifetime.lock() {
            *current = lifetime;
        }
    }
}

/// The libtrust key id distribution looks up `kid` with: base32 of the first
/// 240 bits of sha256(DER SubjectPublicKeyInfo), in 12 groups of 4 characters.
pub(crate) fn libtrust_key_id(spki_der: &[u8]) -> String {
    let digest = mirror_oci::digest_of(spki_der);
    let bytes = hex::decode(digest.digest()).unwrap_or_default();
    let encoded = data_encoding::BASE32.encode(&bytes[..30.min(bytes.len())]);
    encoded
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

type Answer = Response<Full<Bytes>>;

async fn handle(state: &State, req: Request<Incoming>) -> Answer {
    if req.uri().path() != "/token" {
        return json_response(StatusCode::NOT_FOUND, &json!({"details": "not found"}));
    }
    match *req.method() {
        Method::GET => handle_get(state, &req),
        Method::POST => handle_post(state, req).await,
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"details": "GET or POST /token"}),
        ),
    }
}

fn handle_get(state: &State, req: &Request<Incoming>) -> Answer {
    let params = form_pairs(req.uri().query().unwrap_or_default().as_bytes());
    let scopes = scopes_of(&params, false);
    let basic = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_basic);
    match basic {
        Some((user, password)) => {
            if state.users.get(&user) == Some(&password) {
                issue(state, Some(user), scopes, None)
            } else {
                refuse(state, Some(user), scopes)
            }
        }
        None => issue(state, None, scopes, None),
    }
}

async fn handle_post(state: &State, req: Request<Incoming>) -> Answer {
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "invalid_request", "error_description": "unreadable form"}),
            );
        }
    };
    let params = form_pairs(&body);
    let scopes = scopes_of(&params, true);
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let offline = get("access_type").as_deref() == Some("offline");
    match get("grant_type").as_deref() {
        Some("password") => {
            let user = get("username").unwrap_or_default();
            let password = get("password").unwrap_or_default();
            if state.users.get(&user) == Some(&password) {
                let refresh = offline.then(|| new_refresh_token(state, &user));
                issue(state, Some(user), scopes, refresh)
            } else {
                refuse(state, Some(user), scopes)
            }
        }
        Some("refresh_token") => {
            let token = get("refresh_token").unwrap_or_default();
            let user = state
                .refresh_tokens
                .lock()
                .ok()
                .and_then(|t| t.get(&token).cloned());
            match user {
                Some(user) => issue(state, Some(user), scopes, Some(token)),
                None => refuse(state, None, scopes),
            }
        }
        _ => {
            record(state, None, scopes, false);
            json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "unsupported_grant_type"}),
            )
        }
    }
}

fn new_refresh_token(state: &State, user: &str) -> String {
    let token = crate::unique_token();
    if let Ok(mut tokens) = state.refresh_tokens.lock() {
        tokens.insert(token.clone(), user.to_owned());
    }
    token
}

fn record(state: &State, user: Option<String>, scopes: Vec<String>, granted: bool) {
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(TokenRequest {
            user,
            scopes,
            granted,
        });
    }
}

fn refuse(state: &State, user: Option<String>, scopes: Vec<String>) -> Answer {
    record(state, user, scopes, false);
    json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"details": "incorrect username or password"}),
    )
}

fn issue(
    state: &State,
    user: Option<String>,
    scopes: Vec<String>,
    refresh_token: Option<String>,
) -> Answer {
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|scope| parse_scope(scope))
        .map(|(kind, name, actions)| {
            let granted: Vec<&str> = if user.is_some() {
                actions
            } else {
                actions
                    .into_iter()
                    .filter(|a| *a == "pull" && state.anonymous_pull && kind == "repository")
                    .collect()
            };
            json!({"type": kind, "name": name, "actions": granted})
        })
        .collect();
    let lifetime = state
        .lifetime
        .lock()
        .map(|l| *l)
        .unwrap_or(Duration::from_secs(300));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let claims = json!({
        "iss": ISSUER,
        "sub": user.clone().unwrap_or_default(),
        "aud": state.service,
        "exp": now + lifetime.as_secs(),
        "nbf": now.saturating_sub(1),
        "iat": now,
        "jti": crate::unique_token(),
        "access": access,
    });
    let token = match sign_jwt(state, &claims) {
        Ok(token) => token,
        Err(e) => {
            record(state, user, scopes, false);
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"details": e.to_string()}),
            );
        }
    };
    record(state, user, scopes, true);
    let issued_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut body = json!({
        "token": token,
        "access_token": token,
        "expires_in": lifetime.as_secs(),
        "issued_at": issued_at,
    });
    if let (Some(refresh), Some(map)) = (refresh_token, body.as_object_mut()) {
        map.insert("refresh_token".to_owned(), json!(refresh));
    }
    json_response(StatusCode::OK, &body)
}

fn sign_jwt(state: &State, claims: &serde_json::Value) -> anyhow::Result<String> {
    let header = json!({"typ": "JWT", "alg": "ES256", "kid": state.kid});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
    );
    let signature = state
        .key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .map_err(|e| anyhow::anyhow!("signing a token: {e}"))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    ))
}

/// `TYPE:NAME:ACTIONS`; the name may not hold ':' but the type may carry a
/// class (`repository(plugin)`), which is kept as is.
fn parse_scope(scope: &str) -> Option<(String, String, Vec<&str>)> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let actions = actions.split(',').filter(|a| !a.is_empty()).collect();
    Some((kind.to_owned(), name.to_owned(), actions))
}

/// Scopes may repeat (`scope=a&scope=b`); in the OAuth2 form one `scope`
/// holds several separated by spaces.
fn scopes_of(params: &[(String, String)], space_separated: bool) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| {
            if space_separated {
                v.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            } else {
                vec![v.clone()]
            }
        })
        .collect()
}

fn form_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_has_twelve_groups_of_four_base32_characters() {
        let kid = libtrust_key_id(b"any bytes");
        let groups: Vec<&str> = kid.split(':').collect();
        assert_eq!(groups.len(), 12);
        assert!(groups.iter().all(|g| {
            g.len() == 4
                && g.chars()
                    .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
        }));
    }

    #[test]
    fn scopes_parse_with_classes_and_several_actions() {
        assert_eq!(
            parse_scope("repository:library/python:pull,push"),
            Some((
                "repository".to_owned(),
                "library/python".to_owned(),
                vec!["pull", "push"]
            ))
        );
        assert_eq!(
            parse_scope("repository(plugin):a/b:pull"),
            Some((
                "repository(plugin)".to_owned(),
                "a/b".to_owned(),
                vec!["pull"]
            ))
        );
        assert_eq!(parse_scope("nonsense"), None);
    }
}
