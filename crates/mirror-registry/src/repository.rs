//! One repository on one registry: the distribution API calls the engine makes.

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
use url::Url;

use crate::auth::Scopes;
use crate::client::{Answer, Call, CallBody, Host, RegistryClient, api_error};
use crate::error::{Operation, RegistryError};
use crate::ratelimit::RateLimit;

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
#[derive(Debug, Clone)]
pub struct UploadSession {
    url: Url,
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
            _ => {
                let call = self.call(
                    Operation::HeadManifest,
                    self.target(reference),
                    Method::HEAD,
                    self.url(&format!("manifests/{reference}")),
                    false,
                );
                Err(api_error(&self.host, &call, answer.response).await)
            }
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
            let call = self.call(
                Operation::GetManifest,
                target,
                Method::GET,
                self.url(""),
                false,
            );
            return Err(api_error(&self.host, &call, answer.response).await);
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
                    detail: format!("reading the manifest failed: {source}"),
                    source,
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
            _ => {
                let call = self.call(
                    Operation::HeadBlob,
                    self.target(&digest),
                    Method::HEAD,
                    self.url(""),
                    false,
                );
                Err(api_error(&self.host, &call, answer.response).await)
            }
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
            let call = self.call(
                Operation::GetBlob,
                self.target(&digest),
                Method::GET,
                self.url(""),
                false,
            );
            return Err(api_error(&self.host, &call, answer.response).await);
        }
        let Answer { response, permit } = answer;
        let stream = response
            .bytes_stream()
            .map_err(|e| StreamError::Source(Box::new(e)))
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
            let call = self.call(
                Operation::StartUpload,
                target,
                Method::POST,
                self.url(""),
                true,
            );
            return Err(api_error(&self.host, &call, answer.response).await);
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
            _ => {
                let call = self.call(
                    Operation::MountBlob,
                    target,
                    Method::POST,
                    self.url(""),
                    true,
                );
                Err(api_error(&self.host, &call, answer.response).await)
            }
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
        Ok(UploadSession { url })
    }

    /// Uploads a whole blob in one streaming `PUT <session>?digest=` with
    /// Content-Length (never chunked: ECR breaks multi-part uploads). If the
    /// stream fails, even in place of its last chunk, the upload fails and the
    /// blob never becomes visible. Never retried here: the engine restarts
    /// the transfer with a fresh GET and a fresh session.
    pub async fn put_blob(
        &self,
        session: UploadSession,
        descriptor: &Descriptor,
        body: BlobStream,
    ) -> Result<(), RegistryError> {
        let digest = descriptor.digest().to_string();
        let target = self.target(&digest);
        let mut url = session.url;
        url.query_pairs_mut().append_pair("digest", &digest);
        let mut call = self.call(Operation::PutBlob, target.clone(), Method::PUT, url, true);
        call.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        call.body = CallBody::Stream(std::sync::Mutex::new(Some(body)), descriptor.size());
        let answer = self.send(call).await?;
        if answer.response.status() != StatusCode::CREATED && !answer.response.status().is_success()
        {
            let call = self.call(Operation::PutBlob, target, Method::PUT, self.url(""), true);
            return Err(api_error(&self.host, &call, answer.response).await);
        }
        Ok(())
    }

    /// Every tag, following `Link` pagination with pages of at most 1000.
    pub async fn tags(&self) -> Result<Vec<String>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut tags = Vec::new();
        let mut url = self.url("tags/list");
        url.query_pairs_mut().append_pair("n", "1000");
        let target = format!("{}/{}", self.registry, self.name);
        for _page in 0..10_000 {
            let call = self.call(
                Operation::ListTags,
                target.clone(),
                Method::GET,
                url.clone(),
                false,
            );
            let answer = self.send(call).await?;
            if !answer.response.status().is_success() {
                let call = self.call(
                    Operation::ListTags,
                    target.clone(),
                    Method::GET,
                    self.url(""),
                    false,
                );
                return Err(api_error(&self.host, &call, answer.response).await);
            }
            let next = answer
                .response
                .headers()
                .get(LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(|link| {
                    let inner = link
                        .split(';')
                        .next()?
                        .trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>');
                    answer.response.url().join(inner).ok()
                });
            let body =
                answer
                    .response
                    .bytes()
                    .await
                    .map_err(|source| RegistryError::Transport {
                        host: self.host.name.clone(),
                        operation: Operation::ListTags,
                        target: target.clone(),
                        detail: "reading the tag list failed".to_owned(),
                        source,
                    })?;
            let page: TagList =
                serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                    host: self.host.name.clone(),
                    operation: Operation::ListTags,
                    target: target.clone(),
                    detail: format!("the tag list is not valid JSON: {e}"),
                })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(n) => url = n,
                None => break,
            }
        }
        Ok(tags)
    }
}
