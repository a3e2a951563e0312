//! Stand-ins for Amazon ECR and Docker Hub: real registries behind a gate
//! that gives them the manners of the real services.
//!
//! The engine must reach a stand-in through the same code path it uses for
//! the real service, with only an endpoint mapping for the registry host
//! (`--registry-endpoint HOST=http://127.0.0.1:PORT`). So the stand-ins keep
//! the real host names and put the behaviour that matters to a copier in a
//! small HTTP/1.1 reverse proxy of their own, the gate:
//!
//! - [`EcrStandIn`]: moto ([`Moto`]) is the control plane; a distribution
//!   registry with htpasswd user `AWS` and the password moto's
//!   GetAuthorizationToken decodes to is the data plane. The gate answers
//!   `NAME_UNKNOWN` for repositories moto does not know, `TAG_INVALID` for a
//!   tag push to an immutable repository whose tag exists (even with the same
//!   digest), 201 to PATCH, 429 `TOOMANYREQUESTS` above a manifest PUT rate,
//!   400 to a tag list page size `n` above 1000,
//!   404 to GET on an upload session, drops cross-repository mount requests
//!   unless blob mounting is on, omits `Location` on manifest PUTs, and tells
//!   moto about every pushed manifest (PutImage) so DescribeImages agrees.
//! - [`DockerHubStandIn`]: a bearer-token registry (service
//!   `registry.docker.io`, anonymous pull) whose manifest GETs carry
//!   `ratelimit-limit` / `ratelimit-remaining` and run out (429), and whose
//!   blob GETs redirect (307) to a presigned-URL "CDN" that refuses an
//!   `Authorization` header, as S3 does.
//!
//! Between the gate and the registry sits a testkit [`Proxy`]
//! ([`EcrStandIn::faults`]): its rules inject faults behind the gate's
//! manners. The gate records every request it gets as a [`RequestRecord`].
//!
//! ```no_run
//! use mirror_testkit::{EcrOptions, EcrStandIn, ImageSpec, Moto, PushTarget};
//! # async fn demo() -> anyhow::Result<()> {
//! let moto = Moto::start().await?;
//! let ecr = EcrStandIn::start(&moto, EcrOptions::default()).await?;
//! moto.create_repository("team/app", "IMMUTABLE").await?;
//! // Seed or check through the gate with ECR's credentials...
//! let image = mirror_testkit::generate(&ImageSpec::small("demo", 1))?;
//! let target = PushTarget::new(&ecr.host(), "team/app", "v1").with_auth(ecr.auth());
//! mirror_testkit::push_layout(&image, &target).await?;
//! // ...and run `mirror` with moto's environment and the endpoint mapping:
//! // mirror copy ... --registry-endpoint {ecr.endpoint_arg()}   envs: moto.env()
//! assert_eq!(moto.describe_images("team/app").await?.len(), 3);
//! # Ok(()) }
//! ```

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

use crate::image::GeneratedImage;
use crate::moto::{MOTO_ACCOUNT, Moto, MotoClient};
use crate::proxy::{Proxy, RequestRecord};
use crate::push::{PushAuth, PushTarget, push_layout};
use crate::referrers::ReferrersApi;
use crate::registry::Registry;
use crate::server::{AbortOnDrop, bind_loopback, spawn_accept_loop};
use crate::token::{TokenOptions, TokenServer};

/// The Docker Hub API host that `docker.io/...` references resolve to.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";
/// The token service Docker Hub names in its challenge.
const DOCKER_HUB_SERVICE: &str = "registry.docker.io";
/// The user that seeds the Docker Hub stand-in (a "free account").
const HUB_USER: &str = "mirror-testkit";
/// ECR's largest manifest.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Every manifest type, so that the registry finds what it stored.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type GateBody = BoxBody<Bytes, BoxError>;

/// ECR behaviour that tests switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrOptions {
    /// Manifest PUTs (PutImage) allowed within any 1 s window; more answer
    /// 429 `TOOMANYREQUESTS`. `None` (the default): no limit.
    pub manifest_puts_per_second: Option<u32>,
    /// The account setting BLOB_MOUNTING. Off (the default, as for a new
    /// account): a mount POST is forwarded without `mount` and `from`, so it
    /// opens a normal upload session (202).
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

/// Docker Hub's pull limit as the stand-in reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerHubOptions {
    /// `ratelimit-limit`: manifest GETs allowed per window (default 100).
    pub limit: u32,
    /// The window in seconds (`w=`, default 21600).
    pub window_seconds: u32,
    /// Answer blob GETs with a 307 to a presigned URL on the stand-in's CDN
    /// (default on, as Docker Hub does). The CDN serves the registry's
    /// storage directly, so [`DockerHubStandIn::faults`] rules do not touch
    /// redirected blob bodies: turn this off to inject blob faults.
    pub redirect_blobs: bool,
}

impl Default for DockerHubOptions {
    fn default() -> Self {
        Self {
            limit: 100,
            window_seconds: 21_600,
            redirect_blobs: true,
        }
    }
}

/// Docker Hub: a token server, a bearer-auth registry, the gate and a CDN.
pub struct DockerHubStandIn {
    gate: Gate,
    cdn: Cdn,
    password: String,
    faults: Proxy,
    registry: Registry,
    tokens: TokenServer,
}

impl std::fmt::Debug for DockerHubStandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerHubStandIn")
            .field("gate", &self.gate.addr)
            .field("cdn", &self.cdn.addr)
            .finish_non_exhaustive()
    }
}

impl DockerHubStandIn {
    /// With the default limit (100 per 6 h) and blob redirects.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(DockerHubOptions::default()).await
    }

    /// With these options.
    pub async fn start_with(options: DockerHubOptions) -> anyhow::Result<Self> {
        let password = crate::unique_token();
        let tokens = TokenServer::start(TokenOptions {
            users: vec![(HUB_USER.to_owned(), password.clone())],
            anonymous_pull: true,
            service: DOCKER_HUB_SERVICE.to_owned(),
            ..TokenOptions::default()
        })
        .await?;
        let registry = Registry::token(&tokens).await?;
        let faults = Proxy::start(registry.addr()).await?;
        let cdn_shared = Arc::new(CdnShared {
            storage: registry.storage_dir().to_path_buf(),
            signature: crate::unique_token(),
            records: Mutex::new(Vec::new()),
        });
        let cdn = Cdn::start(cdn_shared.clone()).await?;
        let manners = Manners::DockerHub(HubManners {
            limit: options.limit,
            window_seconds: options.window_seconds,
            remaining: AtomicU32::new(options.limit),
            cdn: options
                .redirect_blobs
                .then(|| (cdn.addr, cdn_shared.clone())),
        });
        let gate = Gate::start(faults.addr(), registry.addr(), manners).await?;
        Ok(Self {
            gate,
            cdn,
            password,
            faults,
            registry,
            tokens,
        })
    }

    /// The gate's `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.gate.addr.to_string()
    }

    /// The gate's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.gate.addr
    }

    /// `registry-1.docker.io`.
    pub fn registry_host(&self) -> String {
        DOCKER_HUB_HOST.to_owned()
    }

    /// `registry-1.docker.io=http://127.0.0.1:PORT`, for
    /// `mirror --registry-endpoint`.
    pub fn endpoint_arg(&self) -> String {
        format!("{DOCKER_HUB_HOST}=http://{}", self.gate.addr)
    }

    /// The CDN's `127.0.0.1:PORT`, where blob GETs are redirected.
    pub fn cdn_host(&self) -> String {
        self.cdn.addr.to_string()
    }

    /// A user with push rights (a "free account"), for seeding and for
    /// authenticated pulls.
    pub fn auth(&self) -> PushAuth {
        PushAuth::basic(HUB_USER, &self.password)
    }

    /// Pushes `image` as `repository:tag` (official images are
    /// `library/NAME`) straight to the registry: the pull limit and the
    /// recorded requests are untouched.
    pub async fn seed(
        &self,
        image: &GeneratedImage,
        repository: &str,
        tag: &str,
    ) -> anyhow::Result<()> {
        let target = PushTarget::new(&self.registry.host(), repository, tag).with_auth(self.auth());
        push_layout(image, &target)
            .await
            .with_context(|| format!("seeding the Docker Hub stand-in with {repository}:{tag}"))
    }

    /// Generates [`crate::ImageSpec::python_like`] (about 230 MB, cached) and
    /// seeds it as `library/python:3.10-slim-buster`, which is what
    /// `python:3.10-slim-buster` resolves to.
    pub async fn seed_python(&self) -> anyhow::Result<GeneratedImage> {
        let spec = crate::image::ImageSpec::python_like();
        let image = tokio::task::spawn_blocking(move || crate::image::generate(&spec)).await??;
        self.seed(&image, "library/python", "3.10-slim-buster")
            .await?;
        Ok(image)
    }

    /// Manifest GETs left before 429 (the next `ratelimit-remaining`).
    pub fn remaining(&self) -> u32 {
        match &self.gate.shared.manners {
            Manners::DockerHub(hub) => hub.remaining.load(Ordering::SeqCst),
            Manners::Ecr(_) => 0,
        }
    }

    /// Sets the manifest GETs left (e.g. 0 to be over the limit).
    pub fn set_remaining(&self, remaining: u32) {
        if let Manners::DockerHub(hub) = &self.gate.shared.manners {
            hub.remaining.store(remaining, Ordering::SeqCst);
        }
    }

    /// Every request the gate and the CDN got (CDN paths start with
    /// `/registry-v2/`), in order of arrival.
    pub fn requests(&self) -> Vec<RequestRecord> {
        let mut all = self.gate.shared.requests();
        all.extend(self.cdn.shared.requests());
        all
    }

    /// Only the CDN's requests.
    pub fn cdn_requests(&self) -> Vec<RequestRecord> {
        self.cdn.shared.requests()
    }

    /// Forgets the recorded requests (gate and CDN).
    pub fn clear_requests(&self) {
        self.gate.shared.clear_requests();
        if let Ok(mut records) = self.cdn.shared.records.lock() {
            records.clear();
        }
    }

    /// The token server (its requests show the token round trips).
    pub fn tokens(&self) -> &TokenServer {
        &self.tokens
    }

    /// The fault-injecting proxy between the gate and the registry.
    pub fn faults(&self) -> &Proxy {
        &self.faults
    }

    /// The registry behind it all.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

// --- the gate ----------------------------------------------------------------

struct Gate {
    addr: SocketAddr,
    shared: Arc<GateShared>,
    _task: AbortOnDrop,
}

enum Manners {
    Ecr(EcrManners),
    DockerHub(HubManners),
}

struct GateShared {
    /// Where requests go: the fault proxy in front of the registry.
    upstream: SocketAddr,
    /// The registry itself, for the gate's own look-ups.
    registry: SocketAddr,
    client: Client<HttpConnector, GateBody>,
    lookups: reqwest::Client,
    records: Mutex<Vec<RequestRecord>>,
    manners: Manners,
}

impl GateShared {
    fn requests(&self) -> Vec<RequestRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn clear_requests(&self) {
        if let Ok(mut records) = self.records.lock() {
            records.clear();
        }
    }
}

impl Gate {
    async fn start(
        upstream: SocketAddr,
        registry: SocketAddr,
        manners: Manners,
    ) -> anyhow::Result<Self> {
        let mut client = Client::builder(TokioExecutor::new());
        client.pool_idle_timeout(None::<Duration>);
        let lookups = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()?;
        let shared = Arc::new(GateShared {
            upstream,
            registry,
            client: client.build_http(),
            lookups,
            records: Mutex::new(Vec::new()),
            manners,
        });
        let (listener, addr) = bind_loopback().await?;
        let serve_shared = shared.clone();
        let task = spawn_accept_loop(listener, move |stream| {
            let shared = serve_shared.clone();
            async move {
                let service = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(handle(shared, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        });
        Ok(Self {
            addr,
            shared,
            _task: task,
        })
    }
}

fn start_record(records: &Mutex<Vec<RequestRecord>>, req: &Request<Incoming>) -> usize {
    let header = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let record = RequestRecord {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        status: 0,
        authorization: header(header::AUTHORIZATION),
        request_content_length: header(header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
        response_bytes: 0,
    };
    match records.lock() {
        Ok(mut records) => {
            records.push(record);
            records.len() - 1
        }
        Err(_) => usize::MAX,
    }
}

/// Sets the record's status and counts the body bytes as they go out.
fn finish_record<S>(
    owner: Arc<S>,
    records: fn(&S) -> &Mutex<Vec<RequestRecord>>,
    index: usize,
    response: Response<GateBody>,
) -> Response<GateBody>
where
    S: Send + Sync + 'static,
{
    let update = move |owner: &S, f: &dyn Fn(&mut RequestRecord)| {
        if let Ok(mut all) = records(owner).lock()
            && let Some(record) = all.get_mut(index)
        {
            f(record);
        }
    };
    let status = response.status().as_u16();
    update(&owner, &|r| r.status = status);
    let mut sent = 0u64;
    response.map(move |body| {
        body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                sent += data.len() as u64;
                let total = sent;
                update(&owner, &|r| r.response_bytes = total);
            }
            frame
        })
        .boxed()
    })
}

async fn handle(shared: Arc<GateShared>, req: Request<Incoming>) -> Response<GateBody> {
    let index = start_record(&shared.records, &req);
    let response = match &shared.manners {
        Manners::Ecr(ecr) => ecr.handle(&shared, req).await,
        Manners::DockerHub(hub) => hub.handle(&shared, req).await,
    };
    finish_record(shared, |s| &s.records, index, response)
}

fn boxed<B>(body: B) -> GateBody
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

fn full(bytes: impl Into<Bytes>) -> GateBody {
    boxed(Full::new(bytes.into()))
}

fn empty() -> GateBody {
    boxed(Empty::<Bytes>::new())
}

/// Sends the request on to the fault proxy, `Host` unchanged (so the
/// registry's `Location` URLs point back at the gate).
async fn forward(shared: &GateShared, req: Request<GateBody>) -> Response<GateBody> {
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let uri = format!("http://{}{}", shared.upstream, path_and_query);
    match uri.parse() {
        Ok(uri) => parts.uri = uri,
        Err(e) => return text_answer(502, format!("gate: bad upstream URI {uri}: {e}")),
    }
    match shared
        .client
        .request(Request::from_parts(parts, body))
        .await
    {
        Ok(response) => response.map(boxed),
        Err(e) => text_answer(502, format!("gate: upstream failed: {e}")),
    }
}

fn text_answer(status: u16, text: String) -> Response<GateBody> {
    let mut response = Response::new(full(text));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    response
}

/// A distribution-style error answer: `{"errors":[{"code","message"}]}`.
fn registry_error(status: u16, code: &str, message: &str) -> Response<GateBody> {
    let body = json!({"errors": [{"code": code, "message": message}]});
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

/// What a `/v2/NAME/...` path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route<'a> {
    Manifest(&'a str),
    Blob(&'a str),
    /// `POST /v2/NAME/blobs/uploads/`.
    UploadStart,
    /// `/v2/NAME/blobs/uploads/UUID`.
    Upload,
    Tags,
    Referrers,
}

/// The repository name and what the path addresses; `None` for `/v2/`,
/// `/v2/_catalog` and anything else.
fn parse_route(path: &str) -> Option<(&str, Route<'_>)> {
    let rest = path.strip_prefix("/v2/")?;
    let named = |i: usize, route: Route<'static>| (i > 0).then(|| (&rest[..i], route));
    if let Some(i) = rest.rfind("/manifests/") {
        let reference = &rest[i + "/manifests/".len()..];
        if !reference.is_empty() && !reference.contains('/') && i > 0 {
            return Some((&rest[..i], Route::Manifest(reference)));
        }
    }
    if let Some(i) = rest.rfind("/blobs/uploads") {
        let tail = &rest[i + "/blobs/uploads".len()..];
        if tail.is_empty() || tail == "/" {
            return named(i, Route::UploadStart);
        }
        if tail.starts_with('/') && !tail[1..].contains('/') {
            return named(i, Route::Upload);
        }
    }
    if let Some(i) = rest.rfind("/blobs/") {
        let digest = &rest[i + "/blobs/".len()..];
        if !digest.is_empty() && !digest.contains('/') && i > 0 {
            return Some((&rest[..i], Route::Blob(digest)));
        }
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return (!name.is_empty()).then_some((name, Route::Tags));
    }
    if let Some(i) = rest.rfind("/referrers/") {
        return named(i, Route::Referrers);
    }
    None
}

fn header_text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

// --- ECR manners ---------------------------------------------------------------

struct EcrManners {
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
}

/// How a repository treats a tag push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mutability {
    Mutable,
    Immutable,
}

impl EcrManners {
    async fn handle(&self, shared: &GateShared, req: Request<Incoming>) -> Response<GateBody> {
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
            (&Method::POST, Route::UploadStart) if !self.options.blob_mounting => {
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

    /// Counts a manifest PUT in the sliding 1 s window, or refuses it.
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
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
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

// --- Docker Hub manners ----------------------------------------------------------

struct HubManners {
    limit: u32,
    window_seconds: u32,
    remaining: AtomicU32,
    /// Where blob GETs are redirected, when they are.
    cdn: Option<(SocketAddr, Arc<CdnShared>)>,
}

impl HubManners {
    async fn handle(&self, shared: &GateShared, req: Request<Incoming>) -> Response<GateBody> {
        let path = req.uri().path().to_owned();
        let route = parse_route(&path);
        match (req.method().clone(), route) {
            (Method::GET, Some((_, Route::Manifest(_)))) => {
                // Take one pull before asking; give it back unless it served.
                let taken = self
                    .remaining
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if !taken {
                    let mut response = registry_error(
                        429,
                        "TOOMANYREQUESTS",
                        "You have reached your unauthenticated pull rate limit. https://www.docker.com/increase-rate-limit",
                    );
                    self.add_limit_headers(response.headers_mut());
                    return response;
                }
                let mut response = forward(shared, req.map(boxed)).await;
                if response.status() != StatusCode::OK {
                    self.remaining.fetch_add(1, Ordering::SeqCst);
                }
                self.add_limit_headers(response.headers_mut());
                response
            }
            (Method::HEAD, Some((_, Route::Manifest(_)))) => {
                let mut response = forward(shared, req.map(boxed)).await;
                self.add_limit_headers(response.headers_mut());
                response
            }
            (Method::GET, Some((_, Route::Blob(digest)))) if self.cdn.is_some() => {
                self.redirect_blob(shared, req, digest).await
            }
            _ => forward(shared, req.map(boxed)).await,
        }
    }

    fn add_limit_headers(&self, headers: &mut HeaderMap) {
        let window = self.window_seconds;
        let remaining = self.remaining.load(Ordering::SeqCst);
        for (name, value) in [
            ("ratelimit-limit", format!("{};w={window}", self.limit)),
            ("ratelimit-remaining", format!("{remaining};w={window}")),
            ("docker-ratelimit-source", "127.0.0.1".to_owned()),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }

    /// Asks the registry with `HEAD` (auth, existence); a 200 becomes a 307
    /// to the CDN, anything else is answered by the real GET.
    async fn redirect_blob(
        &self,
        shared: &GateShared,
        req: Request<Incoming>,
        digest: &str,
    ) -> Response<GateBody> {
        let Some((cdn_addr, cdn)) = &self.cdn else {
            return forward(shared, req.map(boxed)).await;
        };
        let (parts, _empty_body) = req.into_parts();
        let rebuild = |method: Method| {
            let mut request = Request::new(empty());
            *request.method_mut() = method;
            *request.uri_mut() = parts.uri.clone();
            *request.headers_mut() = parts.headers.clone();
            request
        };
        let head = forward(shared, rebuild(Method::HEAD)).await;
        let hex = digest.strip_prefix("sha256:").unwrap_or_default();
        if head.status() != StatusCode::OK || hex.len() < 2 {
            return forward(shared, rebuild(Method::GET)).await;
        }
        let location = format!(
            "http://{cdn_addr}/registry-v2/docker/registry/v2/blobs/sha256/{}/{hex}/data\
             ?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIATESTKITCDN%2F20260101%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20260101T000000Z&X-Amz-Expires=1200&X-Amz-SignedHeaders=host\
             &X-Amz-Signature={}",
            &hex[..2],
            cdn.signature,
        );
        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        response
    }
}

// --- the CDN -------------------------------------------------------------------

/// Serves blobs from the registry's storage at presigned-looking URLs, and
/// refuses requests that carry `Authorization` the way S3 does.
struct Cdn {
    addr: SocketAddr,
    shared: Arc<CdnShared>,
    _task: AbortOnDrop,
}

struct CdnShared {
    storage: PathBuf,
    signature: String,
    records: Mutex<Vec<RequestRecord>>,
}

impl CdnShared {
    fn requests(&self) -> Vec<RequestRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Cdn {
    async fn start(shared: Arc<CdnShared>) -> anyhow::Result<Self> {
        let (listener, addr) = bind_loopback().await?;
        let serve_shared = shared.clone();
        let task = spawn_accept_loop(listener, move |stream| {
            let shared = serve_shared.clone();
            async move {
                let service = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move {
                        let index = start_record(&shared.records, &req);
                        let response = cdn_answer(&shared, &req).await;
                        Ok::<_, Infallible>(finish_record(shared, |s| &s.records, index, response))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        });
        Ok(Self {
            addr,
            shared,
            _task: task,
        })
    }
}

fn s3_error(status: u16, code: &str, message: &str) -> Response<GateBody> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut response = Response::new(full(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    response
}

async fn cdn_answer(shared: &CdnShared, req: &Request<Incoming>) -> Response<GateBody> {
    if req.headers().contains_key(header::AUTHORIZATION) {
        return s3_error(
            400,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
             Signature query string parameter or the Authorization header should be specified",
        );
    }
    let signed = url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "X-Amz-Signature" && v == shared.signature.as_str());
    if !signed {
        return s3_error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    let Some(relative) = req
        .uri()
        .path()
        .strip_prefix("/registry-v2/")
        .filter(|p| p.split('/').all(|c| !c.is_empty() && c != "." && c != ".."))
    else {
        return s3_error(404, "NoSuchKey", "The specified key does not exist.");
    };
    let path = shared.storage.join(relative);
    let Ok(file) = tokio::fs::File::open(&path).await else {
        return s3_error(404, "NoSuchKey", "The specified key does not exist.");
    };
    let length = file.metadata().await.map(|m| m.len()).unwrap_or_default();
    let is_head = req.method() == Method::HEAD;
    let body = if is_head {
        empty()
    } else {
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
        StreamBody::new(futures::StreamExt::map(stream, |chunk| {
            chunk.map(Frame::data).map_err(BoxError::from)
        }))
        .boxed()
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_the_name_from_what_it_addresses() {
        assert_eq!(
            parse_route("/v2/a/b/manifests/v1"),
            Some(("a/b", Route::Manifest("v1")))
        );
        assert_eq!(
            parse_route("/v2/a/manifests/sha256:ab"),
            Some(("a", Route::Manifest("sha256:ab")))
        );
        assert_eq!(
            parse_route("/v2/a/b/blobs/sha256:ab"),
            Some(("a/b", Route::Blob("sha256:ab")))
        );
        assert_eq!(
            parse_route("/v2/a/blobs/uploads/"),
            Some(("a", Route::UploadStart))
        );
        assert_eq!(
            parse_route("/v2/a/blobs/uploads/0f-uuid"),
            Some(("a", Route::Upload))
        );
        assert_eq!(parse_route("/v2/x/y/tags/list"), Some(("x/y", Route::Tags)));
        assert_eq!(
            parse_route("/v2/manifests/blobs/sha256:ab"),
            Some(("manifests", Route::Blob("sha256:ab")))
        );
        assert_eq!(parse_route("/v2/"), None);
        assert_eq!(parse_route("/v2/_catalog"), None);
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
