//! A recording, fault-injecting HTTP/1.1 reverse proxy in front of a real server.
//!
//! Two things are hard to test against a well-behaved registry: what the client
//! actually sent (how many manifest GETs, which Authorization header, whether a
//! blob was uploaded twice) and how it copes with a misbehaving network or
//! server (corrupt bytes, early EOF, bodies longer than announced or without
//! end, reset connections, 429/503 with `Retry-After`, slow links and
//! trickles, uploads acknowledged but never stored, headers rewritten (a
//! `Location` on another host), Docker Hub's rate-limit headers, a schema1
//! manifest). [`Proxy`] sits between the two and does both.
//!
//! Requests are forwarded unchanged, including the `Host` header as the client
//! sent it, so the registry builds `Location` URLs that point back at the
//! proxy. Bodies stream in both directions chunk by chunk (1 GiB blobs go
//! through in constant memory).

use std::net::SocketAddr;
use std::os::fd::{AsFd as _, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;

use crate::server::{AbortOnDrop, bind_loopback, spawn_accept_loop};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// How long a cut-off response waits after its last byte before the
/// connection goes, so that those bytes are flushed to the client first.
const FLUSH_GRACE: Duration = Duration::from_millis(50);

/// What a [`Rule`] does to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Inverts every bit of the response body byte at `offset`.
    FlipByte { offset: u64 },
    /// Sends `after` body bytes, then closes the connection cleanly; the
    /// original `Content-Length` stays, so the client sees an early EOF.
    Truncate { after: u64 },
    /// Sends `bytes` body bytes, then aborts the connection (TCP RST).
    ResetAfter { bytes: u64 },
    /// Answers with this status without contacting upstream.
    Status {
        code: u16,
        retry_after: Option<String>,
        body: String,
    },
    /// Waits this long before forwarding (or answering).
    Delay(Duration),
    /// Limits the response body to this rate (at a few bytes per second, a
    /// trickle: never silent long enough for a read timeout).
    Throttle { bytes_per_sec: u64 },
    /// Sends `extra` bytes of junk after the body (forwarded or answered),
    /// with no `Content-Length`: a body longer than the client expects.
    Extend { extra: u64 },
    /// Sends junk after the body for as long as the client reads, with no
    /// `Content-Length`: a body without end.
    Endless,
    /// Aborts the connection (TCP RST) as soon as the request head is in,
    /// without answering or reading the body.
    Reset,
    /// Reads the whole request body and answers as a registry that stored
    /// it would (201 with `Location` and `Docker-Content-Digest`: the
    /// `?digest=` of a blob upload, else the sha256 of the body), without
    /// contacting upstream: an upload acknowledged, then lost.
    AcceptAndLose,
    /// Adds headers to the response (e.g. `ratelimit-remaining: 76;w=21600`).
    AddHeaders(Vec<(String, String)>),
    /// Answers with this response without contacting upstream.
    ReplaceResponse {
        status: u16,
        content_type: String,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    },
    /// Replaces `find` with `replace` in every value of the upstream
    /// response's header `name` (e.g. a `Location` pointed at another host).
    RewriteHeader {
        name: String,
        find: String,
        replace: String,
    },
}

impl Fault {
    /// A bare status answer: no `Retry-After`, empty body.
    pub fn status(code: u16) -> Self {
        Self::Status {
            code,
            retry_after: None,
            body: String::new(),
        }
    }

    /// A status answer with `Retry-After` (seconds or an HTTP date).
    pub fn status_retry_after(code: u16, retry_after: impl Into<String>) -> Self {
        Self::Status {
            code,
            retry_after: Some(retry_after.into()),
            body: String::new(),
        }
    }
}

/// When a [`Fault`] applies: requests whose method matches (any when `None`)
/// and whose path-and-query contains `path_contains`, the first `times` of them
/// (every one when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub method: Option<String>,
    pub path_contains: String,
    pub times: Option<usize>,
    pub fault: Fault,
}

impl Rule {
    /// A rule matching every request, every time.
    pub fn new(fault: Fault) -> Self {
        Self {
            method: None,
            path_contains: String::new(),
            times: None,
            fault,
        }
    }

    /// Only requests with this method (case-insensitive).
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_owned());
        self
    }

    /// Only requests whose path (with query) contains `needle`.
    pub fn path_contains(mut self, needle: &str) -> Self {
        self.path_contains = needle.to_owned();
        self
    }

    /// Only the first `n` matching requests.
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, method: &str, path_and_query: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && path_and_query.contains(&self.path_contains)
    }
}

/// Time since a fixed moment early in this process: the clock of
/// [`RequestRecord::at`].
pub fn since_start() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// One request that went through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The response status; 0 until the response head is known. 502 when
    /// upstream could not be reached.
    pub status: u16,
    /// The full `Authorization` header value the client sent.
    pub authorization: Option<String>,
    pub request_content_length: Option<u64>,
    /// Body bytes handed to the client (after faults).
    pub response_bytes: u64,
    /// When the request arrived, on a clock shared by every proxy of the
    /// process: compare requests with each other (how long
    /// a client waited between two), not with wall time.
    pub at: Duration,
}

struct ActiveRule {
    rule: Rule,
    used: usize,
}

struct Shared {
    upstream: SocketAddr,
    client: Client<HttpConnector, Incoming>,
    records: Mutex<Vec<RequestRecord>>,
    rules: Mutex<Vec<ActiveRule>>,
}

impl Shared {
    fn update(&self, index: usize, f: impl FnOnce(&mut RequestRecord)) {
        if let Ok(mut records) = self.records.lock()
            && let Some(record) = records.get_mut(index)
        {
            f(record);
        }
    }
}

/// A running proxy on 127.0.0.1, stopped on drop.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _task: AbortOnDrop,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Starts a proxy forwarding to `upstream` (plain HTTP).
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let mut client = Client::builder(TokioExecutor::new());
        client.pool_idle_timeout(None::<Duration>);
        let shared = Arc::new(Shared {
            upstream,
            client: client.build_http(),
            records: Mutex::new(Vec::new()),
            rules: Mutex::new(Vec::new()),
        });
        let (listener, addr) = bind_loopback().await?;
        let serve_shared = shared.clone();
        let task = spawn_accept_loop(listener, move |stream| {
            let shared = serve_shared.clone();
            async move {
                // A second descriptor of the socket lets a fault set SO_LINGER
                // to zero after hyper owns the stream; the socket closes (with
                // a RST then) only once this one is dropped too.
                let Ok(fd) = stream.as_fd().try_clone_to_owned() else {
                    return;
                };
                let conn = Arc::new(ConnCtl { fd });
                let service = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    let conn = conn.clone();
                    handle(shared, conn, req)
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

    /// The host:port clients should use (`127.0.0.1:PORT`).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The socket address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server requests are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared
            .records
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        if let Ok(mut records) = self.shared.records.lock() {
            records.clear();
        }
    }

    /// Adds a rule. Every rule matching a request applies (delays add up);
    /// an answering fault (`Status`, `ReplaceResponse`) keeps the request from
    /// upstream. Headers that are not valid HTTP are skipped.
    pub fn add_rule(&self, rule: Rule) {
        if let Ok(mut rules) = self.shared.rules.lock() {
            rules.push(ActiveRule { rule, used: 0 });
        }
    }

    /// Removes every rule.
    pub fn clear_rules(&self) {
        if let Ok(mut rules) = self.shared.rules.lock() {
            rules.clear();
        }
    }
}

struct ConnCtl {
    fd: OwnedFd,
}

impl ConnCtl {
    /// Makes the coming close of this connection a RST instead of a FIN.
    fn reset_on_close(&self) {
        let _ = socket2::SockRef::from(&self.fd).set_linger(Some(Duration::ZERO));
    }
}

#[derive(Clone, Copy)]
enum Cut {
    Truncate(u64),
    Reset(u64),
}

impl Cut {
    fn at(self) -> u64 {
        match self {
            Self::Truncate(n) | Self::Reset(n) => n,
        }
    }
}

/// A response made up by the proxy: status, headers, body.
type Answer = (u16, Vec<(String, String)>, Bytes);

/// What follows the real body.
#[derive(Clone, Copy)]
enum Tail {
    Junk(u64),
    Endless,
}

#[derive(Default)]
struct Plan {
    delay: Duration,
    answer: Option<Answer>,
    headers: Vec<(String, String)>,
    flip: Option<u64>,
    cut: Option<Cut>,
    throttle: Option<u64>,
    rewrites: Vec<(String, String, String)>,
    tail: Option<Tail>,
    reset: bool,
    lose: bool,
}

fn plan_for(shared: &Shared, method: &str, path_and_query: &str) -> Plan {
    let mut plan = Plan::default();
    let Ok(mut rules) = shared.rules.lock() else {
        return plan;
    };
    for active in rules.iter_mut() {
        if active.rule.times.is_some_and(|t| active.used >= t)
            || !active.rule.matches(method, path_and_query)
        {
            continue;
        }
        active.used += 1;
        match &active.rule.fault {
            Fault::FlipByte { offset } => plan.flip = Some(*offset),
            Fault::Truncate { after } => plan.cut = Some(Cut::Truncate(*after)),
            Fault::ResetAfter { bytes } => plan.cut = Some(Cut::Reset(*bytes)),
            Fault::Delay(d) => plan.delay += *d,
            Fault::Throttle { bytes_per_sec } => plan.throttle = Some((*bytes_per_sec).max(1)),
            Fault::Extend { extra } => plan.tail = Some(Tail::Junk(*extra)),
            Fault::Endless => plan.tail = Some(Tail::Endless),
            Fault::Reset => plan.reset = true,
            Fault::AcceptAndLose => plan.lose = true,
            Fault::AddHeaders(headers) => plan.headers.extend(headers.iter().cloned()),
            Fault::Status {
                code,
                retry_after,
                body,
            } => {
                if plan.answer.is_none() {
                    let content_type = if body.trim_start().starts_with('{') {
                        "application/json; charset=utf-8"
                    } else {
                        "text/plain; charset=utf-8"
                    };
                    let mut headers = vec![("content-type".to_owned(), content_type.to_owned())];
                    if let Some(retry_after) = retry_after {
                        headers.push(("retry-after".to_owned(), retry_after.clone()));
                    }
                    plan.answer = Some((*code, headers, Bytes::from(body.clone())));
                }
            }
            Fault::ReplaceResponse {
                status,
                content_type,
                body,
                headers,
            } => {
                if plan.answer.is_none() {
                    let mut all = vec![("content-type".to_owned(), content_type.clone())];
                    all.extend(headers.iter().cloned());
                    plan.answer = Some((*status, all, Bytes::from(body.clone())));
                }
            }
            Fault::RewriteHeader {
                name,
                find,
                replace,
            } => plan
                .rewrites
                .push((name.clone(), find.clone(), replace.clone())),
        }
    }
    plan
}

fn add_headers(headers: &mut hyper::HeaderMap, extra: &[(String, String)]) {
    for (name, value) in extra {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
}

fn rewrite_headers(headers: &mut hyper::HeaderMap, rewrites: &[(String, String, String)]) {
    for (name, find, replace) in rewrites {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        let values: Vec<HeaderValue> = headers
            .get_all(&name)
            .iter()
            .map(|v| match v.to_str() {
                Ok(text) => HeaderValue::from_str(&text.replace(find.as_str(), replace))
                    .unwrap_or_else(|_| v.clone()),
                Err(_) => v.clone(),
            })
            .collect();
        headers.remove(&name);
        for value in values {
            headers.append(name.clone(), value);
        }
    }
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// The answer of a registry that stored an upload: 201, `Location` and
/// `Docker-Content-Digest` (the blob upload's `?digest=`, else the body's).
fn stored_answer(path: &str, query: Option<&str>, body: &[u8]) -> Answer {
    let digest = query
        .and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix("digest="))
                .map(|d| d.replace("%3A", ":").replace("%3a", ":"))
        })
        .unwrap_or_else(|| mirror_oci::digest_of(body).to_string());
    // /v2/NAME/blobs/uploads/UUID -> /v2/NAME/blobs/DIGEST; a manifest PUT
    // keeps its path with the digest in place of the tag.
    let location = match path.split_once("/blobs/uploads/") {
        Some((name, _)) => format!("{name}/blobs/{digest}"),
        None => match path.rsplit_once("/manifests/") {
            Some((name, _)) => format!("{name}/manifests/{digest}"),
            None => path.to_owned(),
        },
    };
    let headers = vec![
        ("location".to_owned(), location),
        ("docker-content-digest".to_owned(), digest),
        ("content-length".to_owned(), "0".to_owned()),
    ];
    (201, headers, Bytes::new())
}

/// Forwards (or answers) one request; `Err` drops the connection unanswered.
async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnCtl>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, BoxError> {
    let method = req.method().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let header = |name: hyper::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let record = RequestRecord {
        method: method.clone(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        status: 0,
        authorization: header(hyper::header::AUTHORIZATION),
        request_content_length: header(hyper::header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
        response_bytes: 0,
        at: since_start(),
    };
    let index = match shared.records.lock() {
        Ok(mut records) => {
            records.push(record);
            records.len() - 1
        }
        Err(_) => usize::MAX,
    };
    let mut plan = plan_for(&shared, &method, &path_and_query);
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    if plan.reset {
        conn.reset_on_close();
        return Err("proxy fault: connection reset".into());
    }
    if plan.lose && plan.answer.is_none() {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().map(str::to_owned);
        let body = req.into_body().collect().await?.to_bytes();
        plan.answer = Some(stored_answer(&path, query.as_deref(), &body));
        return Ok(answered(&shared, &conn, index, plan));
    }
    if plan.answer.is_some() {
        return Ok(answered(&shared, &conn, index, plan));
    }

    let (mut parts, body) = req.into_parts();
    let uri = format!("http://{}{}", shared.upstream, path_and_query);
    match uri.parse() {
        Ok(uri) => parts.uri = uri,
        Err(e) => {
            return Ok(bad_gateway(
                &shared,
                index,
                format!("bad upstream URI {uri}: {e}"),
            ));
        }
    }
    let upstream_response = match shared
        .client
        .request(Request::from_parts(parts, body))
        .await
    {
        Ok(response) => response,
        Err(e) => {
            return Ok(bad_gateway(
                &shared,
                index,
                format!("proxy: upstream failed: {e}"),
            ));
        }
    };
    let status = upstream_response.status().as_u16();
    shared.update(index, |r| r.status = status);
    let (mut parts, body) = upstream_response.into_parts();
    rewrite_headers(&mut parts.headers, &plan.rewrites);
    add_headers(&mut parts.headers, &plan.headers);
    if plan.tail.is_some() {
        parts.headers.remove(hyper::header::CONTENT_LENGTH);
    }
    let run = BodyRun::new(Some(body), Bytes::new(), plan, shared, index, conn);
    Ok(Response::from_parts(parts, faulty_body(run)))
}

/// A response made up by the proxy, with the plan's body faults applied.
fn answered(
    shared: &Arc<Shared>,
    conn: &Arc<ConnCtl>,
    index: usize,
    mut plan: Plan,
) -> Response<ProxyBody> {
    let Some((status, headers, body)) = plan.answer.take() else {
        return bad_gateway(shared, index, "proxy: no answer planned".to_owned());
    };
    shared.update(index, |r| r.status = status);
    let mut parts = Response::new(()).into_parts().0;
    parts.status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    add_headers(&mut parts.headers, &headers);
    rewrite_headers(&mut parts.headers, &plan.rewrites);
    add_headers(&mut parts.headers, &plan.headers);
    if plan.tail.is_some() {
        parts.headers.remove(hyper::header::CONTENT_LENGTH);
    } else if !parts.headers.contains_key(hyper::header::CONTENT_LENGTH)
        && let Ok(length) = HeaderValue::from_str(&body.len().to_string())
    {
        parts.headers.insert(hyper::header::CONTENT_LENGTH, length);
    }
    let pending = flip_answer(plan.flip, body);
    let run = BodyRun::new(None, pending, plan, shared.clone(), index, conn.clone());
    Response::from_parts(parts, faulty_body(run))
}

/// An answered body with `FlipByte` applied.
fn flip_answer(flip: Option<u64>, body: Bytes) -> Bytes {
    match flip {
        Some(offset) if offset < body.len() as u64 => {
            let mut copy = BytesMut::from(&body[..]);
            let i = offset as usize;
            copy[i] = !copy[i];
            copy.freeze()
        }
        _ => body,
    }
}

fn bad_gateway(shared: &Shared, index: usize, message: String) -> Response<ProxyBody> {
    shared.update(index, |r| {
        r.status = 502;
        r.response_bytes = message.len() as u64;
    });
    let mut response = Response::new(full(Bytes::from(message)));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// Junk sent after a body, per frame.
const JUNK_FRAME: usize = 16 * 1024;

/// The state of one response body on its way to the client.
struct BodyRun {
    /// Upstream's body; `None` for an answer made up by the proxy (all of it
    /// in `pending` from the start).
    inner: Option<Incoming>,
    /// Bytes read from upstream, not yet handed on (faults already applied).
    pending: Bytes,
    /// Bytes handed on so far.
    sent: u64,
    flip: Option<u64>,
    cut: Option<Cut>,
    throttle: Option<u64>,
    tail: Option<Tail>,
    started: Option<Instant>,
    finished: bool,
    shared: Arc<Shared>,
    index: usize,
    conn: Arc<ConnCtl>,
}

fn faulty_body(run: BodyRun) -> ProxyBody {
    let stream = futures::stream::unfold(run, |mut run| async move {
        let item = run.next().await?;
        Some((item, run))
    });
    StreamBody::new(stream).boxed()
}

impl BodyRun {
    /// `pending`, then what `inner` (upstream's body, if any) yields, with
    /// the plan's body faults.
    fn new(
        inner: Option<Incoming>,
        pending: Bytes,
        plan: Plan,
        shared: Arc<Shared>,
        index: usize,
        conn: Arc<ConnCtl>,
    ) -> Self {
        Self {
            inner,
            pending,
            sent: 0,
            flip: plan.flip,
            cut: plan.cut,
            throttle: plan.throttle,
            tail: plan.tail,
            started: None,
            finished: false,
            shared,
            index,
            conn,
        }
    }

    async fn next(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(cut) = self.cut
                && self.sent >= cut.at()
            {
                self.finished = true;
                // Returning Pending for a moment lets hyper flush what was
                // sent; then the body ends short of its Content-Length
                // (hyper closes the connection) or fails (with a RST).
                tokio::time::sleep(FLUSH_GRACE).await;
                return match cut {
                    Cut::Truncate(_) => None,
                    Cut::Reset(_) => {
                        self.conn.reset_on_close();
                        Some(Err("proxy fault: connection reset".into()))
                    }
                };
            }
            if self.pending.is_empty() {
                let frame = match &mut self.inner {
                    Some(inner) => inner.frame().await,
                    None => None,
                };
                match frame {
                    None => {
                        self.inner = None;
                        match self.tail {
                            Some(Tail::Endless) => {
                                self.pending = Bytes::from(vec![b'j'; JUNK_FRAME]);
                            }
                            Some(Tail::Junk(left)) if left > 0 => {
                                let n = left.min(JUNK_FRAME as u64);
                                self.tail = Some(Tail::Junk(left - n));
                                self.pending = Bytes::from(vec![b'j'; n as usize]);
                            }
                            _ => {
                                self.finished = true;
                                return None;
                            }
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        self.finished = true;
                        return Some(Err(e.into()));
                    }
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => self.pending = self.flipped(data),
                        Err(other) => return Some(Ok(other)),
                    },
                }
                continue;
            }
            let mut n = self.pending.len() as u64;
            if let Some(cut) = self.cut {
                n = n.min(cut.at() - self.sent);
            }
            if let Some(rate) = self.throttle {
                n = n.min((rate / 20).max(1));
                let started = *self.started.get_or_insert_with(Instant::now);
                let due = Duration::from_secs_f64((self.sent + n) as f64 / rate as f64);
                tokio::time::sleep_until(started + due).await;
            }
            let piece = self.pending.split_to(n as usize);
            self.sent += n;
            let sent = self.sent;
            self.shared.update(self.index, |r| r.response_bytes = sent);
            return Some(Ok(Frame::data(piece)));
        }
    }

    /// Applies `FlipByte` to a chunk that starts at offset `self.sent`.
    fn flipped(&self, data: Bytes) -> Bytes {
        match self.flip {
            Some(offset) if offset >= self.sent && offset < self.sent + data.len() as u64 => {
                let mut copy = BytesMut::from(&data[..]);
                let i = (offset - self.sent) as usize;
                copy[i] = !copy[i];
                copy.freeze()
            }
            _ => data,
        }
    }
}
