//! The ECR stand-in: moto's repositories and credentials, a registry, and
//! the gate with ECR's manners (see the parent module for the list).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::gate::{
    Gate, GateBody, GateShared, Manners, Route, boxed, forward, full, header_text, parse_route,
    registry_error,
};
use super::referrers::ReferrersApi;
use crate::moto::{MOTO_ACCOUNT, Moto, MotoClient};
use crate::proxy::{Proxy, RequestRecord};
use crate::push::{MANIFEST_ACCEPT, PushAuth};
use crate::registry::Registry;

/// ECR's largest manifest.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// ECR behaviour that tests switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrOptions {
    /// Manifest PUTs (PutImage) allowed within any window of
    /// [`EcrOptions::manifest_put_window`] (1 s, as ECR's rate is per
    /// second); more answer 429 `TOOMANYREQUESTS`. `None` (the default): no
    /// limit.
    pub manifest_puts_per_second: Option<u32>,
    /// The sliding window the limit counts in (default 1 s). A test that
    /// must see a refusal makes it long, so that a slow machine cannot
    /// spread its PUTs out of one window.
    pub manifest_put_window: Duration,
    /// The account setting BLOB_MOUNTING. Off (the default, as for a new
    /// account): a mount POST is forwarded without `mount` and `from`, so it
    /// opens a normal upload session (202). On: a mount is forwarded only
    /// when a manifest pushed through the gate to `from` references the
    /// blob, as ECR requires; otherwise it opens a session too. The gate
    /// answers GetAccountSetting with it ([`EcrStandIn::aws_env`]).
    pub blob_mounting: bool,
    /// Answer manifest PUTs without `Location`, as ECR does (default on).
    pub omit_manifest_location: bool,
    /// Tell moto about every pushed manifest (PutImage with the manifest, its
    /// media type, digest and tag) so DescribeImages sees pushes (default
    /// on). Best effort: moto's refusals are ignored.
    pub sync_images_to_moto: bool,
}

impl Default for EcrOptions {
    fn default() -> Self {
        Self {
            manifest_puts_per_second: None,
            manifest_put_window: Duration::from_secs(1),
            blob_mounting: false,
            omit_manifest_location: true,
            sync_images_to_moto: true,
        }
    }
}

/// ECR: moto's repositories and credentials, a registry, and the gate.
pub struct EcrStandIn {
    gate: Gate,
    registry_host: String,
    user: String,
    password: Mutex<String>,
    referrers: Arc<ReferrersApi>,
    // Dropped after the gate that uses them.
    faults: Proxy,
    registry: Registry,
}

impl std::fmt::Debug for EcrStandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrStandIn")
            .field("gate", &self.gate.addr)
            .field("registry_host", &self.registry_host)
            .finish_non_exhaustive()
    }
}

impl EcrStandIn {
    /// Starts a registry with moto's ECR credentials, a fault proxy in front
    /// of it and the gate in front of that. `moto` must outlive the stand-in.
    pub async fn start(moto: &Moto, options: EcrOptions) -> anyhow::Result<Self> {
        let client = moto.client().clone();
        let (user, password, proxy_endpoint) = client
            .get_authorization_token()
            .await
            .context("asking moto for the ECR credentials")?;
        let registry_host = proxy_endpoint
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned();
        let registry = Registry::htpasswd(&user, &password).await?;
        let faults = Proxy::start(registry.addr()).await?;
        let referrers = Arc::new(ReferrersApi::default());
        let manners = Manners::Ecr(EcrManners {
            referrers: referrers.clone(),
            moto: client,
            options,
            challenge: format!(
                "Basic realm=\"https://{registry_host}/\",service=\"ecr.amazonaws.com\""
            ),
            known: Mutex::new(HashSet::new()),
            manifest_puts: Mutex::new(VecDeque::new()),
            tag_lock: tokio::sync::Mutex::new(()),
            committed: Box::default(),
        });
        let gate = Gate::start(faults.addr(), registry.addr(), manners).await?;
        Ok(Self {
            gate,
            registry_host,
            user,
            password: Mutex::new(password),
            referrers,
            faults,
            registry,
        })
    }

    /// The gate's `127.0.0.1:PORT`: where clients connect.
    pub fn host(&self) -> String {
        self.gate.addr.to_string()
    }

    /// The gate's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.gate.addr
    }

    /// moto's environment with the ECR API sent through the gate, which
    /// answers GetAccountSetting BLOB_MOUNTING from
    /// [`EcrOptions::blob_mounting`] (moto has no account settings) and
    /// passes every other call on to moto.
    pub fn aws_env(&self, moto: &Moto) -> Vec<(String, String)> {
        let gate = format!("http://{}", self.gate.addr);
        moto.env()
            .into_iter()
            .map(|(key, value)| {
                if key == "AWS_ENDPOINT_URL_ECR" {
                    (key, gate.clone())
                } else {
                    (key, value)
                }
            })
            .collect()
    }

    /// The registry host name moto's proxyEndpoint names:
    /// `123456789012.dkr.ecr.us-east-1.amazonaws.com`.
    pub fn registry_host(&self) -> String {
        self.registry_host.clone()
    }

    /// `HOST=http://127.0.0.1:PORT`, the value of `mirror --registry-endpoint`
    /// that sends the ECR host to the gate.
    pub fn endpoint_arg(&self) -> String {
        format!("{}=http://{}", self.registry_host, self.gate.addr)
    }

    /// The registry user (`AWS`).
    pub fn user(&self) -> String {
        self.user.clone()
    }

    /// The password the registry accepts now (moto's unless changed with
    /// [`EcrStandIn::set_password`]).
    pub fn password(&self) -> String {
        self.password.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Basic credentials for the testkit's pusher and fetchers.
    pub fn auth(&self) -> PushAuth {
        PushAuth::basic(&self.user, &self.password())
    }

    /// Makes the registry accept `password` (and no longer the previous one)
    /// for user `AWS`, on the live registry. moto's token never changes, so
    /// setting anything but moto's password makes every token moto hands out
    /// fail (401) until it is set back.
    pub fn set_password(&self, password: &str) -> anyhow::Result<()> {
        self.registry.set_password(&self.user, password)?;
        if let Ok(mut current) = self.password.lock() {
            *current = password.to_owned();
        }
        Ok(())
    }

    /// Every request the gate got, in order of arrival, with the status the
    /// gate answered.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.gate.shared.requests()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.gate.shared.clear_requests();
    }

    /// The fault-injecting proxy between the gate and the registry: its
    /// rules apply to what the gate lets through.
    pub fn faults(&self) -> &Proxy {
        &self.faults
    }

    /// The registry behind it all (storage, log).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The stand-in's referrers API (ECR keeps referrers itself).
    pub fn referrers(&self) -> &ReferrersApi {
        &self.referrers
    }
}

pub(super) struct EcrManners {
    /// ECR's referrers API, which the registry behind the gate lacks.
    referrers: Arc<ReferrersApi>,
    moto: MotoClient,
    options: EcrOptions,
    /// ECR's Basic challenge, in place of distribution's.
    challenge: String,
    /// Repositories moto confirmed (never the missing ones: a repository
    /// created later in a test must be seen).
    known: Mutex<HashSet<String>>,
    /// When recent manifest PUTs were let through, for the rate limit.
    manifest_puts: Mutex<VecDeque<Instant>>,
    /// Makes "does the tag exist, then PUT" atomic for immutable tags.
    tag_lock: tokio::sync::Mutex<()>,
    /// Per repository, the blobs that manifests pushed through the gate
    /// reference: what ECR lets other repositories mount. (Boxed: keeps
    /// the gate's `Manners` variants close in size.)
    committed: Box<Mutex<HashMap<String, HashSet<String>>>>,
}

/// How a repository treats a tag push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mutability {
    Mutable,
    Immutable,
}

impl EcrManners {
    pub(super) async fn handle(
        &self,
        shared: &GateShared,
        req: Request<Incoming>,
    ) -> Response<GateBody> {
        if req.headers().contains_key("x-amz-target") {
            return self.control_plane(shared, req).await;
        }
        let path = req.uri().path().to_owned();
        let Some((name, route)) = parse_route(&path) else {
            return self.finish(forward(shared, req.map(boxed)).await, false);
        };
        let authorization = header_text(req.headers(), header::AUTHORIZATION);
        match self.exists(name).await {
            Ok(true) => {}
            Ok(false) => {
                // Without valid credentials ECR answers 401 first.
                if !self.authorized(shared, authorization.as_deref()).await {
                    return self.finish(forward(shared, req.map(boxed)).await, false);
                }
                return registry_error(
                    404,
                    "NAME_UNKNOWN",
                    &format!(
                        "The repository with name '{name}' does not exist in the registry with id '{MOTO_ACCOUNT}'"
                    ),
                );
            }
            Err(e) => return registry_error(500, "UNKNOWN", &format!("gate: asking moto: {e:#}")),
        }
        let method = req.method().clone();
        match (&method, route) {
            (&Method::PUT, Route::Manifest(reference)) => {
                self.put_manifest(shared, req, name, reference, authorization.as_deref())
                    .await
            }
            (&Method::PATCH, Route::Upload) => {
                let mut response = self.finish(forward(shared, req.map(boxed)).await, false);
                if response.status() == StatusCode::ACCEPTED {
                    *response.status_mut() = StatusCode::CREATED;
                }
                response
            }
            (&Method::GET, Route::Referrers) => {
                if !self.authorized(shared, authorization.as_deref()).await {
                    // The registry behind has no such route to challenge from.
                    let mut denied = registry_error(401, "UNAUTHORIZED", "authentication required");
                    if let Ok(challenge) = HeaderValue::from_str(&self.challenge) {
                        denied
                            .headers_mut()
                            .insert(header::WWW_AUTHENTICATE, challenge);
                    }
                    return denied;
                }
                self.referrers
                    .answer(name, &path, req.uri().query())
                    .map(full)
            }
            (&Method::GET, Route::Upload) => registry_error(
                404,
                "BLOB_UPLOAD_UNKNOWN",
                "blob upload unknown to registry",
            ),
            // ECR refuses tag-list pages larger than 1000.
            (&Method::GET, Route::Tags)
                if req
                    .uri()
                    .query()
                    .unwrap_or_default()
                    .split('&')
                    .filter_map(|pair| pair.strip_prefix("n="))
                    .any(|n| !n.parse::<u32>().is_ok_and(|n| (1..=1000).contains(&n))) =>
            {
                registry_error(
                    400,
                    "PAGINATION_NUMBER_INVALID",
                    "invalid number of results requested: n must be between 1 and 1000",
                )
            }
            (&Method::POST, Route::UploadStart) if !self.mount_allowed(req.uri().query()) => {
                let req = without_mount(req);
                self.finish(forward(shared, req.map(boxed)).await, false)
            }
            _ => self.finish(forward(shared, req.map(boxed)).await, false),
        }
    }

    async fn put_manifest(
        &self,
        shared: &GateShared,
        req: Request<Incoming>,
        name: &str,
        reference: &str,
        authorization: Option<&str>,
    ) -> Response<GateBody> {
        if !self.admit_manifest_put() {
            return registry_error(429, "TOOMANYREQUESTS", "Rate exceeded");
        }
        let (parts, body) = req.into_parts();
        let manifest = match Limited::new(body, MAX_MANIFEST_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                return registry_error(400, "MANIFEST_INVALID", &format!("manifest invalid: {e}"));
            }
        };
        let media_type = header_text(&parts.headers, header::CONTENT_TYPE);
        let req = Request::from_parts(parts, full(manifest.clone()));
        let tag = (!reference.contains(':')).then_some(reference);
        let mutability = match tag {
            Some(tag) => match self.mutability(name, tag).await {
                Ok(mutability) => mutability,
                Err(e) => {
                    return registry_error(500, "UNKNOWN", &format!("gate: asking moto: {e:#}"));
                }
            },
            None => Mutability::Mutable,
        };
        let response = match (tag, mutability) {
            (Some(tag), Mutability::Immutable) => {
                let _guard = self.tag_lock.lock().await;
                if self.tag_exists(shared, name, tag, authorization).await {
                    return registry_error(
                        400,
                        "TAG_INVALID",
                        &format!(
                            "The image tag '{tag}' already exists in the '{name}' repository and cannot be overwritten because the repository is immutable."
                        ),
                    );
                }
                forward(shared, req).await
            }
            _ => forward(shared, req).await,
        };
        let mut response = self.finish(response, self.options.omit_manifest_location);
        let digest = header_text(response.headers(), "docker-content-digest")
            .unwrap_or_else(|| mirror_oci::digest_of(&manifest).to_string());
        if response.status() == StatusCode::CREATED {
            self.record_commit(name, &manifest);
        }
        if response.status() == StatusCode::CREATED
            && let Some(subject) =
                self.referrers
                    .record(name, &manifest, media_type.as_deref(), &digest)
            && let Ok(value) = HeaderValue::from_str(&subject)
        {
            response.headers_mut().insert("oci-subject", value);
        }
        if response.status() == StatusCode::CREATED && self.options.sync_images_to_moto {
            self.put_image(name, &manifest, media_type, tag, &digest)
                .await;
        }
        response
    }

    /// ECR's answer shape: its own Basic challenge; `Location` dropped from
    /// manifest PUT answers when asked.
    fn finish(&self, mut response: Response<GateBody>, drop_location: bool) -> Response<GateBody> {
        let headers = response.headers_mut();
        if headers.contains_key(header::WWW_AUTHENTICATE)
            && let Ok(value) = HeaderValue::from_str(&self.challenge)
        {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if drop_location {
            headers.remove(header::LOCATION);
        }
        response
    }

    /// Whether a mount POST may mount: blob mounting is on and a manifest
    /// committed in `from` references the blob. A POST without `mount` is
    /// a plain upload start and always passes.
    fn mount_allowed(&self, query: Option<&str>) -> bool {
        let pairs: HashMap<String, String> =
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let (Some(digest), Some(from)) = (pairs.get("mount"), pairs.get("from")) else {
            return true;
        };
        self.options.blob_mounting
            && self
                .committed
                .lock()
                .is_ok_and(|c| c.get(from).is_some_and(|blobs| blobs.contains(digest)))
    }

    /// Remembers the blobs an image manifest pushed to `name` references.
    fn record_commit(&self, name: &str, manifest: &[u8]) {
        let Ok(value) = serde_json::from_slice::<Value>(manifest) else {
            return;
        };
        let digests = std::iter::once(&value["config"])
            .chain(value["layers"].as_array().into_iter().flatten())
            .filter_map(|d| d["digest"].as_str().map(str::to_owned));
        if let Ok(mut committed) = self.committed.lock() {
            committed
                .entry(name.to_owned())
                .or_default()
                .extend(digests);
        }
    }

    /// The ECR API sent to the gate ([`EcrStandIn::aws_env`]):
    /// GetAccountSetting BLOB_MOUNTING answered here, the rest passed to moto.
    async fn control_plane(
        &self,
        shared: &GateShared,
        req: Request<Incoming>,
    ) -> Response<GateBody> {
        let target = header_text(req.headers(), "x-amz-target").unwrap_or_default();
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, 1 << 20).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return registry_error(400, "UNKNOWN", &format!("gate: request body: {e}")),
        };
        let asked: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if target.ends_with(".GetAccountSetting") && asked["name"] == "BLOB_MOUNTING" {
            let value = if self.options.blob_mounting {
                "ENABLED"
            } else {
                "DISABLED"
            };
            let mut response = Response::new(full(
                json!({"name": "BLOB_MOUNTING", "value": value}).to_string(),
            ));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            return response;
        }
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let mut request = shared.lookups.request(
            parts.method.clone(),
            format!("{}{path}", self.moto.endpoint()),
        );
        for (name, value) in &parts.headers {
            if name != header::HOST && name != header::CONTENT_LENGTH {
                request = request.header(name, value);
            }
        }
        match request.body(body).send().await {
            Ok(answer) => {
                let status = answer.status();
                let headers = answer.headers().clone();
                let bytes = answer.bytes().await.unwrap_or_default();
                let mut response = Response::new(full(bytes));
                *response.status_mut() = status;
                for (name, value) in &headers {
                    if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
                        response.headers_mut().insert(name, value.clone());
                    }
                }
                response
            }
            Err(e) => registry_error(502, "UNKNOWN", &format!("gate: moto: {e}")),
        }
    }

    /// Whether moto knows the repository (positive answers are cached).
    async fn exists(&self, name: &str) -> anyhow::Result<bool> {
        if self.known.lock().is_ok_and(|k| k.contains(name)) {
            return Ok(true);
        }
        let found = self.moto.describe_repository(name).await?.is_some();
        if found && let Ok(mut known) = self.known.lock() {
            known.insert(name.to_owned());
        }
        Ok(found)
    }

    /// The repository's current treatment of `tag`, asked fresh (a test may
    /// change it with PutImageTagMutability).
    async fn mutability(&self, name: &str, tag: &str) -> anyhow::Result<Mutability> {
        let repository = self
            .moto
            .describe_repository(name)
            .await?
            .unwrap_or(Value::Null);
        Ok(mutability_of(&repository, tag))
    }

    /// Whether the credentials get past the registry (`GET /v2/`).
    async fn authorized(&self, shared: &GateShared, authorization: Option<&str>) -> bool {
        let Some(authorization) = authorization else {
            return false;
        };
        shared
            .lookups
            .get(format!("http://{}/v2/", shared.registry))
            .header(header::AUTHORIZATION, authorization)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// `HEAD` of the tag on the registry with the client's credentials.
    async fn tag_exists(
        &self,
        shared: &GateShared,
        name: &str,
        tag: &str,
        authorization: Option<&str>,
    ) -> bool {
        let mut request = shared
            .lookups
            .head(format!(
                "http://{}/v2/{name}/manifests/{tag}",
                shared.registry
            ))
            .header(header::ACCEPT, MANIFEST_ACCEPT);
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        request
            .send()
            .await
            .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
    }

    /// Counts a manifest PUT in the sliding window, or refuses it.
    fn admit_manifest_put(&self) -> bool {
        let Some(limit) = self.options.manifest_puts_per_second else {
            return true;
        };
        let Ok(mut puts) = self.manifest_puts.lock() else {
            return true;
        };
        let now = Instant::now();
        while puts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.options.manifest_put_window)
        {
            puts.pop_front();
        }
        if puts.len() >= limit as usize {
            return false;
        }
        puts.push_back(now);
        true
    }

    /// PutImage on moto, so DescribeImages sees the push. Best effort.
    async fn put_image(
        &self,
        name: &str,
        manifest: &[u8],
        media_type: Option<String>,
        tag: Option<&str>,
        digest: &str,
    ) {
        let mut request = json!({
            "repositoryName": name,
            "imageManifest": String::from_utf8_lossy(manifest),
            "imageDigest": digest,
        });
        if let Some(map) = request.as_object_mut() {
            if let Some(media_type) = media_type {
                map.insert("imageManifestMediaType".to_owned(), json!(media_type));
            }
            if let Some(tag) = tag {
                map.insert("imageTag".to_owned(), json!(tag));
            }
        }
        let _ = self.moto.ecr("PutImage", request).await;
    }
}

/// IMMUTABLE and IMMUTABLE_WITH_EXCLUSION protect tags, except (with
/// exclusion) those matching a filter; MUTABLE_WITH_EXCLUSION protects only
/// the matching ones. Filters are WILDCARD patterns (`*`).
fn mutability_of(repository: &Value, tag: &str) -> Mutability {
    let setting = repository
        .get("imageTagMutability")
        .and_then(Value::as_str)
        .unwrap_or("MUTABLE");
    let excluded = || {
        repository
            .get("imageTagMutabilityExclusionFilters")
            .and_then(Value::as_array)
            .is_some_and(|filters| {
                filters.iter().any(|f| {
                    f.get("filter")
                        .and_then(Value::as_str)
                        .is_some_and(|pattern| wildcard_match(pattern, tag))
                })
            })
    };
    let immutable = match setting {
        "IMMUTABLE" => true,
        "IMMUTABLE_WITH_EXCLUSION" => !excluded(),
        "MUTABLE_WITH_EXCLUSION" => excluded(),
        _ => false,
    };
    if immutable {
        Mutability::Immutable
    } else {
        Mutability::Mutable
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == text;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The same request without the `mount` and `from` query parameters.
fn without_mount(mut req: Request<Incoming>) -> Request<Incoming> {
    let Some(query) = req.uri().query() else {
        return req;
    };
    let kept: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .filter(|(k, _)| k != "mount" && k != "from")
        .collect();
    let mut path_and_query = req.uri().path().to_owned();
    if !kept.is_empty() {
        path_and_query.push('?');
        path_and_query.push_str(
            &url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(kept)
                .finish(),
        );
    }
    if let Ok(uri) = path_and_query.parse() {
        *req.uri_mut() = uri;
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manners(limit: u32, window: Duration) -> EcrManners {
        EcrManners {
            referrers: Arc::default(),
            moto: MotoClient::new("http://127.0.0.1:9").expect("client"),
            options: EcrOptions {
                manifest_puts_per_second: Some(limit),
                manifest_put_window: window,
                ..EcrOptions::default()
            },
            challenge: String::new(),
            known: Mutex::new(HashSet::new()),
            manifest_puts: Mutex::new(VecDeque::new()),
            tag_lock: tokio::sync::Mutex::new(()),
            committed: Box::default(),
        }
    }

    #[test]
    fn the_manifest_put_window_counts_then_slides() {
        let counting = manners(2, Duration::from_secs(3600));
        let admitted: Vec<bool> = (0..4).map(|_| counting.admit_manifest_put()).collect();
        assert_eq!(admitted, [true, true, false, false]);

        // Waiting a whole window always frees it, however slow the machine.
        let window = Duration::from_millis(50);
        let sliding = manners(1, window);
        assert!(sliding.admit_manifest_put());
        std::thread::sleep(window * 2);
        assert!(sliding.admit_manifest_put());
    }

    #[test]
    fn exclusion_filters_use_wildcards() {
        assert!(wildcard_match("latest", "latest"));
        assert!(!wildcard_match("latest", "latest2"));
        assert!(wildcard_match("dev-*", "dev-1"));
        assert!(wildcard_match("*-rc*", "1.0-rc2"));
        assert!(!wildcard_match("a*a", "a"));
        let repository = json!({
            "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
            "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "latest"}]
        });
        assert_eq!(mutability_of(&repository, "latest"), Mutability::Mutable);
        assert_eq!(mutability_of(&repository, "v1"), Mutability::Immutable);
        assert_eq!(
            mutability_of(&json!({"imageTagMutability": "MUTABLE"}), "v1"),
            Mutability::Mutable
        );
    }
}
