//! One repository on one registry: the distribution API calls the engine makes.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use mirror_oci::{
    BlobStream, Descriptor, Digest, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, RawManifest, StreamError,
    parse_digest,
};
use reqwest::header::{
    ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, LINK, LOCATION,
};
use reqwest::{Method, StatusCode};
use tracing::debug;
use url::Url;

use crate::auth::Scopes;
use crate::client::{RegistryClient, TagListLimits};
use crate::error::{Operation, RegistryError, TransportKind};
use crate::execute::{Answer, Call, CallBody, origin_of, refuse_downgrade};
use crate::host::Host;
use crate::ratelimit::RateLimit;
use crate::redact::redact_url;

mod referrers;

pub use referrers::ReferrerListing;

/// What a manifest HEAD tells without spending a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: Option<String>,
    pub size: Option<u64>,
}

/// An open upload session (the `Location` of a POST to `/blobs/uploads/`).
///
/// [`Repository::put_blob`] closes it; a failed upload cancels it (DELETE,
/// best effort), and so does dropping it unused (a source GET that failed
/// after a mount answered with a session) or mid-upload (a transfer
/// cancelled because the image that wanted it failed), so that no session is
/// left open at the registry. Those cancellations run in the background:
/// [`crate::background::settle`] waits for them before the process exits.
pub struct UploadSession {
    url: Url,
    /// Who cancels the session if it is dropped before a PUT was answered.
    owner: Option<Repository>,
}

impl std::fmt::Debug for UploadSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UploadSession({})", redact_url(&self.url))
    }
}

impl Drop for UploadSession {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let url = self.url.clone();
            crate::background::spawn(&runtime, async move { owner.cancel_upload(url).await });
        }
    }
}

/// The answer to a cross-repository mount request.
#[derive(Debug)]
pub enum MountOutcome {
    /// 201: the blob is now in the destination repository.
    Mounted,
    /// 202: the registry did not mount and opened an upload session instead.
    NotMounted(UploadSession),
}

/// A repository on a registry.
#[derive(Clone)]
pub struct Repository {
    client: RegistryClient,
    host: Arc<Host>,
    registry: String,
    name: String,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({}/{})", self.registry, self.name)
    }
}

impl Repository {
    pub(crate) fn new(
        client: RegistryClient,
        host: Arc<Host>,
        registry: String,
        name: String,
    ) -> Self {
        Self {
            client,
            host,
            registry,
            name,
        }
    }

    /// The registry as named in references (`docker.io`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host API requests go to (`registry-1.docker.io`).
    pub fn api_host(&self) -> &str {
        &self.host.name
    }

    /// The repository path.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Docker Hub's pull-limit reading from the last answer that carried one.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.host.rate_limit()
    }

    fn url(&self, path: &str) -> Url {
        let base = self.host.base();
        let mut url = base.clone();
        url.set_path(&format!("/v2/{}/{}", self.name, path));
        url.set_query(None);
        url
    }

    fn call(
        &self,
        operation: Operation,
        target: String,
        method: Method,
        url: Url,
        push: bool,
    ) -> Call {
        Call {
            operation,
            target,
            method,
            url,
            headers: HeaderMap::new(),
            body: CallBody::Empty,
            scopes: Scopes::repository(&self.name, push),
            follow_redirects: false,
            once: false,
        }
    }

    fn target(&self, reference: &str) -> String {
        let sep = if reference.contains(':') && reference.starts_with("sha") {
            "@"
        } else {
            ":"
        };
        format!("{}/{}{sep}{reference}", self.registry, self.name)
    }

    async fn send(&self, call: Call) -> Result<Answer, RegistryError> {
        self.client.execute(&self.host, call).await
    }

    /// HEADs a manifest by tag or digest; `None` when the registry has no such manifest.
    /// Costs nothing against Docker Hub's pull limit.
    pub async fn head_manifest(
        &self,
        reference: &str,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        let mut call = self.call(
            Operation::HeadManifest,
            self.target(reference),
            Method::HEAD,
            self.url(&format!("manifests/{reference}")),
            false,
        );
        call.headers
            .insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let answer = self.send(call).await?;
        let response = &answer.response;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let header = response
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let media_type = response
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let size = response
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let digest = match header.as_deref().map(parse_digest) {
                    Some(Ok(d)) => d,
                    // No digest header: only a GET can tell (some registries omit it on HEAD).
                    _ => {
                        return Ok(Some(self.get_manifest(reference, None).await.map(|m| {
                            ManifestHead {
                                digest: m.digest().clone(),
                                media_type: Some(m.media_type().to_owned()),
                                size: Some(m.size()),
                            }
                        })?));
                    }
                };
                Ok(Some(ManifestHead {
                    digest,
                    media_type,
                    size,
                }))
            }
            _ => Err(answer.into_error(&self.host).await),
        }
    }

    /// GETs a manifest and checks it: against `expected` when fetching by digest,
    /// else against the registry's `Docker-Content-Digest`. Size-capped.
    pub async fn get_manifest(
        &self,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<RawManifest, RegistryError> {
        let target = self.target(reference);
        let mut call = self.call(
            Operation::GetManifest,
            target.clone(),
            Method::GET,
            self.url(&format!("manifests/{reference}")),
            false,
        );
        call.headers
            .insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let answer = self.send(call).await?;
        if !answer.response.status().is_success() {
            return Err(answer.into_error(&self.host).await);
        }
        let headers = answer.response.headers().clone();
        let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let manifest_error = |source| RegistryError::Manifest {
            host: self.host.name.clone(),
            operation: Operation::GetManifest,
            target: target.clone(),
            source: Box::new(source),
        };
        if let Some(length) = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            && length > MAX_MANIFEST_BYTES
        {
            return Err(manifest_error(mirror_oci::ManifestError::TooLarge {
                size: length,
            }));
        }
        let mut response = answer.response;
        let mut body = Vec::new();
        while let Some(chunk) =
            response
                .chunk()
                .await
                .map_err(|source| RegistryError::Transport {
                    host: self.host.name.clone(),
                    operation: Operation::GetManifest,
                    target: target.clone(),
                    kind: TransportKind::Read,
                    detail: String::new(),
                    source: source.without_url(),
                })?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_MANIFEST_BYTES {
                return Err(manifest_error(mirror_oci::ManifestError::TooLarge {
                    size: body.len(),
                }));
            }
        }
        let header_digest = headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_digest(v).ok());
        let check = expected.cloned().or(header_digest);
        let bytes = Bytes::from(body);
        match check {
            Some(digest) => RawManifest::parse_verified(bytes, content_type, &digest),
            None => RawManifest::parse(bytes, content_type),
        }
        .map_err(manifest_error)
    }

    /// PUTs the exact manifest bytes with their media type, by tag or digest.
    pub async fn put_manifest(
        &self,
        reference: &str,
        manifest: &RawManifest,
    ) -> Result<(), RegistryError> {
        self.put_manifest_with_subject(reference, manifest)
            .await
            .map(|_| ())
    }

    /// Whether the repository holds a blob of the right size. 404 and 403 mean
    /// "copy it", as does a size that differs from the descriptor's.
    pub async fn blob_exists(&self, descriptor: &Descriptor) -> Result<bool, RegistryError> {
        let digest = descriptor.digest().to_string();
        let call = self.call(
            Operation::HeadBlob,
            self.target(&digest),
            Method::HEAD,
            self.url(&format!("blobs/{digest}")),
            false,
        );
        let answer = self.send(call).await?;
        let response = &answer.response;
        match response.status() {
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => Ok(false),
            s if s.is_success() => {
                let size = response
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                Ok(size.is_none_or(|s| s == descriptor.size()))
            }
            s if s.is_redirection() => Ok(true),
            _ => Err(answer.into_error(&self.host).await),
        }
    }

    /// GETs a blob as a stream of unverified chunks (the engine verifies).
    /// Redirects are followed without the registry's credentials.
    pub async fn get_blob(&self, descriptor: &Descriptor) -> Result<BlobStream, RegistryError> {
        let digest = descriptor.digest().to_string();
        let mut call = self.call(
            Operation::GetBlob,
            self.target(&digest),
            Method::GET,
            self.url(&format!("blobs/{digest}")),
            false,
        );
        call.follow_redirects = true;
        let answer = self.send(call).await?;
        if !answer.response.status().is_success() {
            return Err(answer.into_error(&self.host).await);
        }
        let Answer {
            response, permit, ..
        } = answer;
        // Without the URL: a presigned one carries its signature.
        let body = response
            .bytes_stream()
            .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e.without_url()) })
            .boxed();
        let stream = crate::stall::guard(body, self.client.stall_timeout())
            .map_err(StreamError::Source)
            .map(move |chunk| {
                let _held = &permit;
                chunk
            });
        Ok(stream.boxed())
    }

    /// Opens an upload session (`POST /v2/<name>/blobs/uploads/`).
    pub async fn start_upload(
        &self,
        descriptor: &Descriptor,
    ) -> Result<UploadSession, RegistryError> {
        let target = self.target(descriptor.digest().as_ref());
        let call = self.call(
            Operation::StartUpload,
            target.clone(),
            Method::POST,
            self.url("blobs/uploads/"),
            true,
        );
        let answer = self.send(call).await?;
        if answer.response.status() != StatusCode::ACCEPTED {
            return Err(answer.into_error(&self.host).await);
        }
        self.session_from(&answer.response, Operation::StartUpload, &target)
    }

    /// Asks the registry to mount a blob from another repository on it. A 202 is
    /// not an error: it carries an upload session to use instead.
    pub async fn mount_blob(
        &self,
        descriptor: &Descriptor,
        from: &str,
    ) -> Result<MountOutcome, RegistryError> {
        let digest = descriptor.digest().to_string();
        let target = self.target(&digest);
        let mut url = self.url("blobs/uploads/");
        url.query_pairs_mut()
            .append_pair("mount", &digest)
            .append_pair("from", from);
        let mut call = self.call(
            Operation::MountBlob,
            target.clone(),
            Method::POST,
            url,
            true,
        );
        call.scopes = call.scopes.with(format!("repository:{from}:pull"));
        let answer = self.send(call).await?;
        match answer.response.status() {
            StatusCode::CREATED => Ok(MountOutcome::Mounted),
            StatusCode::ACCEPTED => Ok(MountOutcome::NotMounted(self.session_from(
                &answer.response,
                Operation::MountBlob,
                &target,
            )?)),
            _ => Err(answer.into_error(&self.host).await),
        }
    }

    fn session_from(
        &self,
        response: &reqwest::Response,
        operation: Operation,
        target: &str,
    ) -> Result<UploadSession, RegistryError> {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok());
        let url = location
            .and_then(|l| response.url().join(l).ok())
            .ok_or_else(|| RegistryError::Protocol {
                host: self.host.name.clone(),
                operation,
                target: target.to_owned(),
                detail: "upload session answer without a usable Location header".to_owned(),
            })?;
        refuse_downgrade(&self.host, response.url(), &url, operation, target)?;
        Ok(UploadSession {
            url,
            owner: Some(self.clone()),
        })
    }

    /// Uploads a whole blob in one streaming `PUT <session>?digest=` with
    /// Content-Length (never chunked: ECR breaks multi-part uploads). If the
    /// stream fails, even in place of its last chunk, the upload fails and the
    /// blob never becomes visible; the session is then cancelled. Never
    /// retried here: the engine restarts the transfer with a fresh GET and a
    /// fresh session.
    pub async fn put_blob(
        &self,
        mut session: UploadSession,
        descriptor: &Descriptor,
        body: BlobStream,
    ) -> Result<(), RegistryError> {
        let digest = descriptor.digest().to_string();
        let mut url = session.url.clone();
        url.query_pairs_mut().append_pair("digest", &digest);
        let mut call = self.call(
            Operation::PutBlob,
            self.target(&digest),
            Method::PUT,
            url,
            true,
        );
        call.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        call.body = CallBody::Stream(std::sync::Mutex::new(Some(body)), descriptor.size());
        // Until the registry answers, dropping this call (its transfer
        // cancelled) leaves the session to its drop, which cancels it.
        let result = match self.send(call).await {
            Ok(answer) if answer.response.status().is_success() => Ok(()),
            Ok(answer) => Err(answer.into_error(&self.host).await),
            Err(error) => Err(error),
        };
        // From here this call closes or cancels the session, not its drop.
        session.owner = None;
        if result.is_err() {
            self.cancel_upload(session.url.clone()).await;
        }
        result
    }

    /// Cancels an upload session (`DELETE <session>`), best effort: one
    /// attempt, and its failure is only logged.
    async fn cancel_upload(&self, session: Url) {
        let mut call = self.call(
            Operation::CancelUpload,
            format!("{}/{}", self.registry, self.name),
            Method::DELETE,
            session,
            true,
        );
        call.once = true;
        match self.send(call).await {
            Ok(answer) => {
                debug!(
                    status = answer.response.status().as_u16(),
                    "upload session cancelled"
                );
            }
            Err(error) => debug!(%error, "cancelling the upload session failed"),
        }
    }

    /// Every tag once, following `Link` pagination with pages of at most
    /// 1000, within [`TagListLimits`]. A next page on another host is
    /// refused: a tag list is the registry's own answer, and the credentials
    /// that read the first page belong to it alone.
    pub async fn tags(&self) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let target = format!("{}/{}", self.registry, self.name);
        let refused = |detail: String| RegistryError::Protocol {
            host: self.host.name.clone(),
            operation: Operation::ListTags,
            target: target.clone(),
            detail,
        };
        let mut pages = TagPages::new(self.client.inner.options.tag_list);
        let mut url = self.url("tags/list");
        url.query_pairs_mut().append_pair("n", "1000");
        loop {
            pages.visit(&url).map_err(refused)?;
            let call = self.call(
                Operation::ListTags,
                target.clone(),
                Method::GET,
                url.clone(),
                false,
            );
            let answer = self.send(call).await?;
            if !answer.response.status().is_success() {
                return Err(answer.into_error(&self.host).await);
            }
            let next = next_link(answer.response.headers());
            let page_url = answer.response.url().clone();
            let body = self
                .read_page(
                    answer.response,
                    pages.limits.max_page_bytes,
                    Operation::ListTags,
                    &target,
                )
                .await?
                .ok_or_else(|| {
                    refused(format!(
                        "a page of the tag list is over {} bytes (the cap on a page): refused",
                        pages.limits.max_page_bytes
                    ))
                })?;
            let page: TagList = serde_json::from_slice(&body)
                .map_err(|e| refused(format!("the tag list is not valid JSON: {e}")))?;
            pages.add(page.tags.unwrap_or_default()).map_err(refused)?;
            let Some(link) = next else {
                return Ok(pages.tags);
            };
            let resolved = page_url.join(&link).map_err(|e| {
                refused(format!(
                    "the tag list's next page `{link}` is not a URL: {e}"
                ))
            })?;
            url = self.host.on_registry(&resolved).ok_or_else(|| {
                refused(format!(
                    "the tag list's next page (its Link header) is on another host, {}: \
                     refused, tag pages are read only from the registry itself, which \
                     holds the credentials",
                    origin_of(&resolved)
                ))
            })?;
        }
    }
}

/// The pages and tags of one tag listing so far, within its limits.
struct TagPages {
    limits: TagListLimits,
    visited: HashSet<String>,
    seen: HashSet<String>,
    tags: Vec<String>,
}

impl TagPages {
    fn new(limits: TagListLimits) -> Self {
        Self {
            limits,
            visited: HashSet::new(),
            seen: HashSet::new(),
            tags: Vec::new(),
        }
    }

    /// Before fetching a page: refuses a page already read (the registry's
    /// links go round in a loop) and one past the cap on pages.
    fn visit(&mut self, url: &Url) -> Result<(), String> {
        if self.visited.len() >= self.limits.max_pages {
            return Err(format!(
                "the tag list goes on past {} pages (the cap on pages): refused, a registry \
                 that pages forever is broken or hostile",
                self.limits.max_pages
            ));
        }
        if !self.visited.insert(url.as_str().to_owned()) {
            return Err(format!(
                "the tag list loops: page {} links back to a page already read ({})",
                self.visited.len(),
                redact_url(url)
            ));
        }
        Ok(())
    }

    /// Adds a page's tags, each once; refuses more than the cap on tags.
    fn add(&mut self, page: Vec<String>) -> Result<(), String> {
        for tag in page {
            if self.seen.insert(tag.clone()) {
                self.tags.push(tag);
            }
            if self.tags.len() > self.limits.max_tags {
                return Err(format!(
                    "the tag list holds more than {} tags (the cap on tags): refused",
                    self.limits.max_tags
                ));
            }
        }
        Ok(())
    }
}

/// The target of the `rel="next"` entry among `Link` headers (RFC 8288),
/// as written (relative or absolute).
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(link_entries)
        .find(|(_, rel)| {
            rel.split_whitespace()
                .any(|r| r.eq_ignore_ascii_case("next"))
        })
        .map(|(target, _)| target)
}

/// `<target>; rel="next", <other>; rel=prev` -> `[(target, next), (other, prev)]`.
fn link_entries(value: &str) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>').map(|n| open + n) else {
            break;
        };
        let target = rest[open + 1..close].trim().to_owned();
        rest = &rest[close + 1..];
        let params_end = rest.find('<').unwrap_or(rest.len());
        let rel = rest[..params_end]
            .split([';', ','])
            .filter_map(|param| param.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("rel"))
            .map(|(_, value)| value.trim().trim_matches('"').to_owned())
            .unwrap_or_default();
        entries.push((target, rel));
        rest = &rest[params_end..];
    }
    entries
}

impl Repository {
    /// A page of a listing (`operation` on `target`), or `None` when it is
    /// over `cap` bytes; a failed read is a transport error of the listing.
    async fn read_page(
        &self,
        response: reqwest::Response,
        cap: usize,
        operation: Operation,
        target: &str,
    ) -> Result<Option<Bytes>, RegistryError> {
        read_capped(response, cap)
            .await
            .map_err(|source| RegistryError::Transport {
                host: self.host.name.clone(),
                operation,
                target: target.to_owned(),
                kind: TransportKind::Read,
                detail: String::new(),
                source: source.without_url(),
            })
    }
}

/// A page body, or `None` when it is over `cap` bytes.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Option<Bytes>, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(Bytes::from(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_pages: usize, max_tags: usize) -> TagListLimits {
        TagListLimits {
            max_pages,
            max_tags,
            ..TagListLimits::default()
        }
    }

    fn page(n: usize) -> Url {
        Url::parse(&format!("http://r.example/v2/a/tags/list?n=2&last=t{n}")).unwrap()
    }

    /// A hostile registry must not page forever: every cap says which it is.
    #[test]
    fn tag_pages_are_capped_and_loops_are_cut() {
        let mut pages = TagPages::new(limits(3, 100));
        for n in 0..3 {
            pages.visit(&page(n)).unwrap();
        }
        let err = pages.visit(&page(3)).unwrap_err();
        assert!(err.contains("past 3 pages (the cap on pages)"), "{err}");

        let mut pages = TagPages::new(limits(100, 100));
        pages.visit(&page(0)).unwrap();
        pages.visit(&page(1)).unwrap();
        let err = pages.visit(&page(0)).unwrap_err();
        assert!(err.contains("loops"), "{err}");

        let mut pages = TagPages::new(limits(100, 3));
        pages.add(vec!["a".into(), "b".into(), "a".into()]).unwrap();
        pages.add(vec!["b".into(), "c".into()]).unwrap();
        assert_eq!(pages.tags, ["a", "b", "c"], "each tag once, in order");
        let err = pages.add(vec!["d".into()]).unwrap_err();
        assert!(err.contains("more than 3 tags (the cap on tags)"), "{err}");
    }

    #[test]
    fn next_links_are_found_by_rel() {
        let mut headers = HeaderMap::new();
        headers.append(
            LINK,
            HeaderValue::from_static(r#"</v2/a/tags/list?last=x&n=2>; rel="prev", </v2/a/tags/list?last=y&n=2>; rel="next""#),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("/v2/a/tags/list?last=y&n=2")
        );
        let mut headers = HeaderMap::new();
        headers.append(LINK, HeaderValue::from_static("<?last=z>;rel=next"));
        assert_eq!(next_link(&headers).as_deref(), Some("?last=z"));
        let mut headers = HeaderMap::new();
        headers.append(
            LINK,
            HeaderValue::from_static(r#"</elsewhere>; rel="alternate""#),
        );
        assert_eq!(next_link(&headers), None);
    }
}
