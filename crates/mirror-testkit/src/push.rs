//! A minimal, independent registry client: push a generated layout, read back
//! what landed.
//!
//! Tests need to seed source registries and to check destinations without
//! trusting the code under test, so this deliberately shares nothing with the
//! project's registry crate. It does the plain, well-trodden thing: Basic or
//! bearer auth from the `WWW-Authenticate` challenge, `HEAD` then
//! `POST` + one streaming `PUT ?digest=` per blob, child manifests by digest,
//! the root by tag, exact bytes with their media type. Plain HTTP only.

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::StreamExt as _;
use mirror_oci::{Descriptor, Digest, Hasher};
use reqwest::{Method, RequestBuilder, Response, StatusCode, header};

use crate::image::GeneratedImage;

/// Every manifest type, so that the registry serves what it stored (without
/// the OCI types distribution answers 404; without any, it converts Docker v2
/// manifests to schema1).
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Credentials for [`push_layout`] and the fetch helpers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushAuth {
    Anonymous,
    /// User and password, sent as Basic to the registry (htpasswd) or to the
    /// token realm (bearer).
    Basic(String, String),
}

impl PushAuth {
    /// `Basic(user, password)` from string slices.
    pub fn basic(user: &str, password: &str) -> Self {
        Self::Basic(user.to_owned(), password.to_owned())
    }
}

/// Where [`push_layout`] pushes: `host/repository:tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    /// `127.0.0.1:PORT` (plain HTTP).
    pub host: String,
    pub repository: String,
    pub tag: String,
    pub auth: PushAuth,
}

impl PushTarget {
    /// A target without credentials.
    pub fn new(host: &str, repository: &str, tag: &str) -> Self {
        Self {
            host: host.to_owned(),
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            auth: PushAuth::Anonymous,
        }
    }

    /// The same target with credentials.
    pub fn with_auth(mut self, auth: PushAuth) -> Self {
        self.auth = auth;
        self
    }
}

/// Pushes every blob (skipping those already there), the child manifests by
/// digest and the root by tag.
pub async fn push_layout(image: &GeneratedImage, target: &PushTarget) -> anyhow::Result<()> {
    let mut session = Session::new(&target.host, &target.repository, &target.auth, "pull,push")?;
    for blob in &image.blobs {
        push_blob(&mut session, image, blob)
            .await
            .with_context(|| format!("pushing blob {}", blob.digest()))?;
    }
    for (manifest, _platform) in &image.manifests {
        put_manifest(&mut session, image, manifest, manifest.digest().as_ref()).await?;
    }
    put_manifest(&mut session, image, &image.root, &target.tag).await
}

/// Pushes an artifact's blobs and then its manifest as `reference` (a tag
/// or its digest); returns the `OCI-Subject` the registry answered with.
pub async fn push_artifact(
    host: &str,
    repository: &str,
    auth: &PushAuth,
    artifact: &crate::signing::Artifact,
    reference: &str,
) -> anyhow::Result<Option<String>> {
    let mut session = Session::new(host, repository, auth, "pull,push")?;
    for blob in &artifact.blobs {
        push_bytes(&mut session, blob)
            .await
            .with_context(|| format!("pushing a blob of {}", artifact.digest))?;
    }
    put_manifest_bytes(
        &mut session,
        &artifact.manifest,
        &artifact.media_type,
        reference,
    )
    .await
}

/// PUTs manifest bytes as `reference` (a referrers index by its tag, say);
/// returns the `OCI-Subject` answer header.
pub async fn push_manifest_bytes(
    host: &str,
    repository: &str,
    auth: &PushAuth,
    manifest: &[u8],
    media_type: &str,
    reference: &str,
) -> anyhow::Result<Option<String>> {
    let mut session = Session::new(host, repository, auth, "pull,push")?;
    let manifest = Bytes::copy_from_slice(manifest);
    put_manifest_bytes(&mut session, &manifest, media_type, reference).await
}

/// Every tag of a repository (one page of up to 1000).
pub async fn list_tags(
    host: &str,
    repository: &str,
    auth: &PushAuth,
) -> anyhow::Result<Vec<String>> {
    let mut session = Session::new(host, repository, auth, "pull")?;
    let url = session.url("tags/list?n=1000");
    let response = session.send(|c| Ok(c.get(&url))).await?;
    let response = expect_status(response, &[StatusCode::OK], "GET", &url).await?;
    let body: serde_json::Value = response.json().await?;
    Ok(body["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// The referrers API's answer for `digest` (first page), as JSON.
pub async fn fetch_referrers(
    host: &str,
    repository: &str,
    digest: &str,
    auth: &PushAuth,
) -> anyhow::Result<serde_json::Value> {
    let mut session = Session::new(host, repository, auth, "pull")?;
    let url = session.url(&format!("referrers/{digest}"));
    let response = session.send(|c| Ok(c.get(&url))).await?;
    let response = expect_status(response, &[StatusCode::OK], "GET", &url).await?;
    Ok(response.json().await?)
}

/// `GET` a manifest with the full Accept list: its exact bytes, its
/// `Content-Type` and the `Docker-Content-Digest` header if any.
pub async fn fetch_manifest(
    host: &str,
    repository: &str,
    reference: &str,
    auth: &PushAuth,
) -> anyhow::Result<(Bytes, String, Option<String>)> {
    let mut session = Session::new(host, repository, auth, "pull")?;
    let url = session.url(&format!("manifests/{reference}"));
    let response = session
        .send(|c| Ok(c.get(&url).header(header::ACCEPT, MANIFEST_ACCEPT)))
        .await?;
    let response = expect_status(response, &[StatusCode::OK], "GET", &url).await?;
    let content_type = header_text(&response, header::CONTENT_TYPE).unwrap_or_default();
    let digest = header_text(&response, "docker-content-digest");
    Ok((response.bytes().await?, content_type, digest))
}

/// Whether `HEAD` of a blob answers 200 (false on 404).
pub async fn blob_exists(
    host: &str,
    repository: &str,
    digest: &Digest,
    auth: &PushAuth,
) -> anyhow::Result<bool> {
    let mut session = Session::new(host, repository, auth, "pull")?;
    let url = session.url(&format!("blobs/{digest}"));
    let response = session.send(|c| Ok(c.head(&url))).await?;
    match response.status() {
        StatusCode::OK => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        status => bail!("HEAD {url}: unexpected {status}"),
    }
}

/// Downloads a blob and returns the sha256 of what arrived.
pub async fn fetch_blob_digest(
    host: &str,
    repository: &str,
    digest: &Digest,
    auth: &PushAuth,
) -> anyhow::Result<Digest> {
    let mut session = Session::new(host, repository, auth, "pull")?;
    let url = session.url(&format!("blobs/{digest}"));
    let response = session.send(|c| Ok(c.get(&url))).await?;
    let response = expect_status(response, &[StatusCode::OK], "GET", &url).await?;
    let mut hasher = Hasher::Sha256(Default::default());
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        hasher.update(&chunk.with_context(|| format!("reading GET {url}"))?);
    }
    Ok(hasher.finish())
}

/// Starts a monolithic upload of blob `digest` unless the registry has it:
/// the URL to `PUT` its bytes to (`digest` added), or `None` when the blob is
/// there already.
async fn start_upload(session: &mut Session, digest: &str) -> anyhow::Result<Option<String>> {
    let url = session.url(&format!("blobs/{digest}"));
    let head = session.send(|c| Ok(c.head(&url))).await?;
    if head.status() == StatusCode::OK {
        return Ok(None);
    }
    let uploads = session.url("blobs/uploads/");
    let started = session
        .send(|c| Ok(c.post(&uploads).header(header::CONTENT_LENGTH, 0)))
        .await?;
    let started = expect_status(started, &[StatusCode::ACCEPTED], "POST", &uploads).await?;
    let location = header_text(&started, header::LOCATION)
        .with_context(|| format!("POST {uploads}: no Location header"))?;
    let mut put_url = url::Url::parse(&session.base)?.join(&location)?;
    put_url.query_pairs_mut().append_pair("digest", digest);
    Ok(Some(put_url.to_string()))
}

async fn push_blob(
    session: &mut Session,
    image: &GeneratedImage,
    blob: &Descriptor,
) -> anyhow::Result<()> {
    let digest = blob.digest().to_string();
    let Some(put_url) = start_upload(session, &digest).await? else {
        return Ok(());
    };
    let path = image.blob_path(blob.digest());
    let size = blob.size();
    let response = session
        .send(|c| {
            let file = std::fs::File::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let stream = tokio_util::io::ReaderStream::with_capacity(
                tokio::fs::File::from_std(file),
                256 * 1024,
            );
            Ok(c.put(&put_url)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::CONTENT_LENGTH, size)
                .body(reqwest::Body::wrap_stream(stream)))
        })
        .await?;
    expect_status(response, &[StatusCode::CREATED], "PUT", &put_url).await?;
    Ok(())
}

async fn push_bytes(session: &mut Session, blob: &Bytes) -> anyhow::Result<()> {
    let digest = mirror_oci::digest_of(blob).to_string();
    let Some(put_url) = start_upload(session, &digest).await? else {
        return Ok(());
    };
    let response = session
        .send(|c| {
            Ok(c.put(&put_url)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(blob.clone()))
        })
        .await?;
    expect_status(response, &[StatusCode::CREATED], "PUT", &put_url).await?;
    Ok(())
}

async fn put_manifest_bytes(
    session: &mut Session,
    bytes: &Bytes,
    media_type: &str,
    reference: &str,
) -> anyhow::Result<Option<String>> {
    let url = session.url(&format!("manifests/{reference}"));
    let response = session
        .send(|c| {
            Ok(c.put(&url)
                .header(header::CONTENT_TYPE, media_type)
                .body(bytes.clone()))
        })
        .await?;
    let response = expect_status(response, &[StatusCode::CREATED], "PUT", &url).await?;
    Ok(header_text(&response, "oci-subject"))
}

async fn put_manifest(
    session: &mut Session,
    image: &GeneratedImage,
    manifest: &Descriptor,
    reference: &str,
) -> anyhow::Result<()> {
    let bytes = Bytes::from(image.read_blob(manifest.digest())?);
    let media_type = manifest.media_type().to_string();
    let url = session.url(&format!("manifests/{reference}"));
    let response = session
        .send(|c| {
            Ok(c.put(&url)
                .header(header::CONTENT_TYPE, media_type.as_str())
                .body(bytes.clone()))
        })
        .await?;
    expect_status(response, &[StatusCode::CREATED], "PUT", &url).await?;
    Ok(())
}

fn header_text(response: &Response, name: impl header::AsHeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn expect_status(
    response: Response,
    expected: &[StatusCode],
    method: &str,
    url: &str,
) -> anyhow::Result<Response> {
    if expected.contains(&response.status()) {
        return Ok(response);
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    bail!("{method} {url}: {status}: {body}")
}

/// One repository on one registry, with the Authorization header that the
/// last challenge led to.
struct Session {
    client: reqwest::Client,
    base: String,
    repository: String,
    auth: PushAuth,
    actions: &'static str,
    authorization: Option<String>,
}

impl Session {
    fn new(
        host: &str,
        repository: &str,
        auth: &PushAuth,
        actions: &'static str,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Self {
            client,
            base: format!("http://{host}"),
            repository: repository.to_owned(),
            auth: auth.clone(),
            actions,
            authorization: None,
        })
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{}", self.base, self.repository, tail)
    }

    /// Sends the request `make` builds; on a 401, answers the challenge and
    /// sends a fresh one once more.
    async fn send(
        &mut self,
        make: impl Fn(&reqwest::Client) -> anyhow::Result<RequestBuilder>,
    ) -> anyhow::Result<Response> {
        let response = self.send_once(&make).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = header_text(&response, header::WWW_AUTHENTICATE)
            .context("401 without a WWW-Authenticate challenge")?;
        self.answer(&challenge).await?;
        self.send_once(&make).await
    }

    async fn send_once(
        &self,
        make: &impl Fn(&reqwest::Client) -> anyhow::Result<RequestBuilder>,
    ) -> anyhow::Result<Response> {
        let mut request = make(&self.client)?;
        if let Some(value) = &self.authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let request = request.build()?;
        let what = format!("{} {}", request.method(), request.url());
        self.client
            .execute(request)
            .await
            .with_context(|| format!("sending {what}"))
    }

    async fn answer(&mut self, challenge: &str) -> anyhow::Result<()> {
        let (scheme, params) = parse_challenge(challenge);
        let param = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        };
        if scheme.eq_ignore_ascii_case("basic") {
            let PushAuth::Basic(user, password) = &self.auth else {
                bail!("the registry wants Basic credentials and none were given");
            };
            let encoded = STANDARD.encode(format!("{user}:{password}"));
            self.authorization = Some(format!("Basic {encoded}"));
            return Ok(());
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            bail!("unsupported auth challenge: {challenge}");
        }
        let realm = param("realm").context("Bearer challenge without realm")?;
        let mut url = url::Url::parse(&realm).with_context(|| format!("token realm {realm}"))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = param("service") {
                query.append_pair("service", &service);
            }
            let ours = format!("repository:{}:{}", self.repository, self.actions);
            if let Some(scope) = param("scope").filter(|s| *s != ours) {
                query.append_pair("scope", &scope);
            }
            query.append_pair("scope", &ours);
        }
        let mut request = self.client.request(Method::GET, url.clone());
        if let PushAuth::Basic(user, password) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.with_context(|| format!("GET {url}"))?;
        let response = expect_status(response, &[StatusCode::OK], "GET", url.as_str()).await?;
        let body: serde_json::Value = response.json().await?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .context("token response without token")?;
        self.authorization = Some(format!("Bearer {token}"));
        Ok(())
    }
}

/// `Scheme k="v",k2="v, with comma",k3=bare` into the scheme and its pairs.
fn parse_challenge(challenge: &str) -> (String, Vec<(String, String)>) {
    let challenge = challenge.trim();
    let (scheme, rest) = challenge.split_once(' ').unwrap_or((challenge, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    (scheme.to_owned(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_commas_inside_quotes() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:1/token",service="registry.test",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(
            params,
            vec![
                ("realm".to_owned(), "http://127.0.0.1:1/token".to_owned()),
                ("service".to_owned(), "registry.test".to_owned()),
                ("scope".to_owned(), "repository:a/b:pull,push".to_owned()),
            ]
        );
        let (scheme, params) = parse_challenge(r#"Basic realm="mirror-testkit""#);
        assert_eq!(scheme, "Basic");
        assert_eq!(
            params,
            vec![("realm".to_owned(), "mirror-testkit".to_owned())]
        );
    }
}
