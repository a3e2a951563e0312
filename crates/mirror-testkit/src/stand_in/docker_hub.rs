//! The Docker Hub stand-in: a token server, a bearer-auth registry, the
//! gate with Docker Hub's manners (pull limit headers, 429 when spent, blob
//! GETs redirected) and the CDN the redirects point at.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::gate::{
    BoxError, Gate, GateBody, GateShared, Manners, Route, boxed, empty, finish_record, forward,
    full, parse_route, registry_error, start_record,
};
use crate::image::GeneratedImage;
use crate::proxy::{Proxy, RequestRecord};
use crate::push::{PushAuth, PushTarget, push_layout};
use crate::registry::Registry;
use crate::server::{AbortOnDrop, bind_loopback, spawn_http1_server};
use crate::token::{TokenOptions, TokenServer};

/// The Docker Hub API host that `docker.io/...` references resolve to.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";
/// The token service Docker Hub names in its challenge.
const DOCKER_HUB_SERVICE: &str = "registry.docker.io";
/// The user that seeds the Docker Hub stand-in (a "free account").
const HUB_USER: &str = "mirror-testkit";

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

pub(super) struct HubManners {
    limit: u32,
    window_seconds: u32,
    pub(super) remaining: AtomicU32,
    /// Where blob GETs are redirected, when they are.
    cdn: Option<(SocketAddr, Arc<CdnShared>)>,
}

impl HubManners {
    pub(super) async fn handle(
        &self,
        shared: &GateShared,
        req: Request<Incoming>,
    ) -> Response<GateBody> {
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
        let task = spawn_http1_server(listener, shared.clone(), |shared, req| async move {
            let index = start_record(&shared.records, &req);
            let response = cdn_answer(&shared, &req).await;
            finish_record(shared, |s| &s.records, index, response)
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
