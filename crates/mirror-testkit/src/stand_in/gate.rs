//! The gate: a small HTTP/1.1 reverse proxy in front of a stand-in's registry
//! that records every request and lets the stand-in's manners ([`Manners`])
//! answer, change or pass on each one. Shared by the ECR and Docker Hub
//! stand-ins (and the CDN's request records).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use super::docker_hub::HubManners;
use super::ecr::EcrManners;
use crate::proxy::RequestRecord;
use crate::server::{AbortOnDrop, bind_loopback, spawn_http1_server};

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(super) type GateBody = BoxBody<Bytes, BoxError>;

pub(super) struct Gate {
    pub(super) addr: SocketAddr,
    pub(super) shared: Arc<GateShared>,
    _task: AbortOnDrop,
}

/// Which service the gate plays.
pub(super) enum Manners {
    Ecr(EcrManners),
    DockerHub(HubManners),
}

pub(super) struct GateShared {
    /// Where requests go: the fault proxy in front of the registry.
    pub(super) upstream: SocketAddr,
    /// The registry itself, for the gate's own look-ups.
    pub(super) registry: SocketAddr,
    pub(super) client: Client<HttpConnector, GateBody>,
    pub(super) lookups: reqwest::Client,
    pub(super) records: Mutex<Vec<RequestRecord>>,
    pub(super) manners: Manners,
}

impl GateShared {
    pub(super) fn requests(&self) -> Vec<RequestRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub(super) fn clear_requests(&self) {
        if let Ok(mut records) = self.records.lock() {
            records.clear();
        }
    }
}

impl Gate {
    pub(super) async fn start(
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
        let task = spawn_http1_server(listener, shared.clone(), handle);
        Ok(Self {
            addr,
            shared,
            _task: task,
        })
    }
}

pub(super) fn start_record(records: &Mutex<Vec<RequestRecord>>, req: &Request<Incoming>) -> usize {
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
        at: crate::proxy::since_start(),
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
pub(super) fn finish_record<S>(
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

pub(super) fn boxed<B>(body: B) -> GateBody
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

pub(super) fn full(bytes: impl Into<Bytes>) -> GateBody {
    boxed(Full::new(bytes.into()))
}

pub(super) fn empty() -> GateBody {
    boxed(Empty::<Bytes>::new())
}

/// Sends the request on to the fault proxy, `Host` unchanged (so the
/// registry's `Location` URLs point back at the gate).
pub(super) async fn forward(shared: &GateShared, req: Request<GateBody>) -> Response<GateBody> {
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

pub(super) fn text_answer(status: u16, text: String) -> Response<GateBody> {
    let mut response = Response::new(full(text));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    response
}

/// A distribution-style error answer: `{"errors":[{"code","message"}]}`.
pub(super) fn registry_error(status: u16, code: &str, message: &str) -> Response<GateBody> {
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
pub(super) enum Route<'a> {
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
pub(super) fn parse_route(path: &str) -> Option<(&str, Route<'_>)> {
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

pub(super) fn header_text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
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
}
