//! moto as the AWS control plane of the ECR stand-in: a `moto_server` child
//! process on a free port of 127.0.0.1, killed on drop.
//!
//! `mirror` talks to ECR (CreateRepository, DescribeRepositories,
//! GetAuthorizationToken, ...) and CloudWatch Logs through the AWS SDK; in
//! tests the SDK is pointed at moto with [`Moto::env`]. The test then reads
//! back what the engine did through moto's JSON API ([`MotoClient`]), and
//! counts the engine's calls in moto's request recording ([`Moto::calls`]).
//!
//! moto routes a request to a service by the credential scope of its SigV4
//! `Authorization` header (`Credential=KEY/DATE/REGION/SERVICE/aws4_request`)
//! and never checks the signature; a request without that header falls to S3.
//! The account is always 123456789012 ([`MOTO_ACCOUNT`]); GetAuthorizationToken
//! always answers base64("AWS:123456789012-auth-token"), proxyEndpoint
//! `https://123456789012.dkr.ecr.REGION.amazonaws.com` and an `expiresAt` in
//! 2015.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::child::{ChildServer, Readiness, Ready, free_port};

/// The account moto serves by default (and always, for the dummy credentials
/// of [`Moto::env`]).
pub const MOTO_ACCOUNT: &str = "123456789012";
/// The region of [`Moto::env`] and of [`MotoClient`]'s requests.
pub const MOTO_REGION: &str = "us-east-1";

/// How long `moto_server` may take to answer after start (about 1.2 s here).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The `User-Agent` of the testkit's own requests, left out of [`Moto::calls`].
const CLIENT_AGENT: &str = "mirror-testkit-moto-client";
const ECR_TARGET_PREFIX: &str = "AmazonEC2ContainerRegistry_V20150921";
const LOGS_TARGET_PREFIX: &str = "Logs_20140328";

/// A running `moto_server` on 127.0.0.1, stopped on drop.
pub struct Moto {
    addr: SocketAddr,
    client: MotoClient,
    recording: PathBuf,
    server: ChildServer,
    // Last so it is removed after the process is gone.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Moto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moto")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// One AWS API call moto received from someone other than the testkit (the
/// code under test), from moto's request recording.
#[derive(Debug, Clone, PartialEq)]
pub struct MotoCall {
    /// The service of the SigV4 credential scope (`ecr`, `logs`), if signed.
    pub service: Option<String>,
    /// The operation: the part of `X-Amz-Target` after the dot
    /// (`GetAuthorizationToken`).
    pub action: Option<String>,
    /// The JSON request body (`Value::Null` when empty or not JSON).
    pub body: Value,
}

impl Moto {
    /// Starts `moto_server`: `MOTO_SERVER` if set, else
    /// `<workspace>/.venv/bin/moto_server`, else the first on `PATH`.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_program(&find_moto_server()?).await
    }

    /// Starts this `moto_server` (from a virtualenv of the caller's choosing).
    pub async fn start_program(program: &Path) -> anyhow::Result<Self> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut moto = Self::spawn(program)?;
            match moto.wait_ready().await {
                Ok(()) => return Ok(moto),
                // A port picked by binding :0 can be taken before moto binds it.
                Err(Ready::Exited(text))
                    if text.contains("Address already in use") && attempts < 5 =>
                {
                    continue;
                }
                Err(Ready::Exited(text)) => bail!(
                    "moto_server ({}) exited before it was ready; its log:\n{text}",
                    program.display()
                ),
                Err(Ready::Timeout(text)) => bail!(
                    "moto_server ({}) did not answer within {READY_TIMEOUT:?}; its log:\n{text}",
                    program.display()
                ),
            }
        }
    }

    fn spawn(program: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("mirror-testkit-moto-")
            .tempdir()?;
        let log = dir.path().join("moto.log");
        let recording = dir.path().join("recording.jsonl");
        let addr = free_port()?;
        let mut command = ChildServer::command(&log);
        command
            .arg(program)
            .args(["-H", "127.0.0.1", "-p"])
            .arg(addr.port().to_string())
            .env("MOTO_ENABLE_RECORDING", "true")
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .env("PYTHONUNBUFFERED", "1")
            // The account must stay the documented default.
            .env_remove("MOTO_ACCOUNT_ID")
            .current_dir(dir.path());
        let server = ChildServer::spawn(command, log, "moto_server")?;
        Ok(Self {
            addr,
            client: MotoClient::new(&format!("http://{addr}"))?,
            recording,
            server,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.client.endpoint().to_owned()
    }

    /// The socket address moto listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The environment that points an AWS SDK at this moto with dummy
    /// credentials: set it on the `mirror` child process.
    pub fn env(&self) -> Vec<(String, String)> {
        let endpoint = self.endpoint();
        [
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            // Service-specific endpoints win over AWS_ENDPOINT_URL: set them
            // too, so a stray one in the caller's environment cannot.
            ("AWS_ENDPOINT_URL_ECR", endpoint.as_str()),
            ("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", MOTO_REGION),
            ("AWS_DEFAULT_REGION", MOTO_REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// A cheap, cloneable client for moto's JSON API.
    pub fn client(&self) -> &MotoClient {
        &self.client
    }

    /// See [`MotoClient::describe_repository`].
    pub async fn describe_repository(&self, name: &str) -> anyhow::Result<Option<Value>> {
        self.client.describe_repository(name).await
    }

    /// See [`MotoClient::create_repository`].
    pub async fn create_repository(&self, name: &str, mutability: &str) -> anyhow::Result<Value> {
        self.client.create_repository(name, mutability).await
    }

    /// See [`MotoClient::describe_images`].
    pub async fn describe_images(&self, repository: &str) -> anyhow::Result<Vec<Value>> {
        self.client.describe_images(repository).await
    }

    /// See [`MotoClient::get_authorization_token`].
    pub async fn get_authorization_token(&self) -> anyhow::Result<(String, String, String)> {
        self.client.get_authorization_token().await
    }

    /// See [`MotoClient::describe_log_groups`].
    pub async fn describe_log_groups(&self, prefix: &str) -> anyhow::Result<Vec<Value>> {
        self.client.describe_log_groups(prefix).await
    }

    /// Every AWS API call moto received so far, except the testkit's own
    /// (those of [`MotoClient`], the ECR stand-in's lookups included), in
    /// order of arrival.
    pub fn calls(&self) -> Vec<MotoCall> {
        let Ok(file) = std::fs::File::open(&self.recording) else {
            return Vec::new();
        };
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
            .filter_map(|entry| recorded_call(&entry))
            .collect()
    }

    /// How many calls of this operation (`GetAuthorizationToken`) the code
    /// under test made.
    pub fn count_calls(&self, action: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.action.as_deref() == Some(action))
            .count()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        let _ = std::fs::write(&self.recording, b"");
    }

    /// Everything moto logged so far (werkzeug's access lines, tracebacks).
    pub fn log_text(&self) -> String {
        self.server.log_text()
    }

    async fn wait_ready(&mut self) -> Result<(), Ready> {
        let url = format!("http://{}/moto-api/", self.addr);
        // Werkzeug's banner proves that the server answering is ours.
        let banner = format!("Running on http://{}", self.addr);
        self.server
            .wait_ready(Readiness {
                banner: &banner,
                url: &url,
                ready: |status| (200..300).contains(&status),
                timeout: READY_TIMEOUT,
            })
            .await
    }
}

/// The workspace root: two levels above this crate's manifest.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `moto_server` [`Moto::start`] runs: `MOTO_SERVER` if set, else
/// `<workspace>/.venv/bin/moto_server`, else the first on `PATH`.
pub fn find_moto_server() -> anyhow::Result<PathBuf> {
    if let Some(explicit) = std::env::var_os("MOTO_SERVER") {
        let explicit = PathBuf::from(explicit);
        if crate::is_executable(&explicit) {
            return Ok(explicit);
        }
        bail!("MOTO_SERVER={} is not an executable", explicit.display());
    }
    let venv = workspace_root().join(".venv/bin/moto_server");
    if crate::is_executable(&venv) {
        return Ok(venv);
    }
    crate::require_tool("moto_server", "python3-venv").map_err(|_| {
        anyhow::anyhow!(
            "moto_server not found (looked for {} and on PATH): run ./scripts/test.sh, \
             which creates .venv with the pinned moto[server] (by hand: python3 -m venv .venv \
             && .venv/bin/pip install -r scripts/requirements-test.txt)",
            venv.display()
        )
    })
}

/// A recording line as a [`MotoCall`], or `None` for the testkit's own
/// requests and moto's own API.
fn recorded_call(entry: &Value) -> Option<MotoCall> {
    let headers = entry.get("headers")?.as_object()?;
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str())
    };
    if header("user-agent") == Some(CLIENT_AGENT) {
        return None;
    }
    let url = entry.get("url").and_then(Value::as_str).unwrap_or_default();
    if url.contains("/moto-api/") {
        return None;
    }
    let action = header("x-amz-target")
        .and_then(|t| t.split_once('.'))
        .map(|(_, action)| action.to_owned());
    let service = header("authorization").and_then(credential_service);
    let text = entry
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let bytes = if entry.get("body_encoded").and_then(Value::as_bool) == Some(true) {
        STANDARD.decode(text).unwrap_or_default()
    } else {
        text.as_bytes().to_vec()
    };
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Some(MotoCall {
        service,
        action,
        body,
    })
}

/// The service of a SigV4 `Authorization` header's credential scope.
fn credential_service(authorization: &str) -> Option<String> {
    let scope = authorization
        .split(|c: char| c == ',' || c.is_whitespace())
        .find_map(|part| part.strip_prefix("Credential="))?;
    scope.split('/').nth(3).map(str::to_owned)
}

/// moto's AWS JSON API over plain HTTP: what a test (or the ECR stand-in's
/// gate) reads back. moto ignores signatures, so requests carry an
/// `Authorization` header shaped like SigV4 only to name the service.
#[derive(Debug, Clone)]
pub struct MotoClient {
    endpoint: String,
    http: reqwest::Client,
    /// IAM access key id and secret to sign with (shared by clones: the
    /// stand-in's gate signs too once [`Moto::enforce_iam`] set them).
    credentials: Arc<Mutex<Option<(String, String)>>>,
}

impl MotoClient {
    /// A client for the moto at `endpoint` (`http://127.0.0.1:PORT`).
    pub fn new(endpoint: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .user_agent(CLIENT_AGENT)
            .build()?;
        Ok(Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            http,
            credentials: Arc::default(),
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn is_signing(&self) -> bool {
        self.credentials.lock().is_ok_and(|c| c.is_some())
    }

    /// Signs with this IAM user's keys from now on (moto enforcing IAM
    /// checks signatures; without keys, requests only name their service).
    pub fn sign_as(&self, access_key_id: &str, secret: &str) {
        if let Ok(mut credentials) = self.credentials.lock() {
            *credentials = Some((access_key_id.to_owned(), secret.to_owned()));
        }
    }

    /// A POST of `body` to moto for `service` with SigV4 headers: a real
    /// signature when [`MotoClient::sign_as`] gave keys, else a header shaped
    /// like SigV4 that only names the service (moto not enforcing IAM
    /// ignores signatures).
    fn post(
        &self,
        service: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let url = format!("{}/", self.endpoint);
        let mut request = self.http.post(&url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let credentials = self
            .credentials
            .lock()
            .map_err(|_| anyhow::anyhow!("moto client credentials lock poisoned"))?
            .clone();
        let Some((id, secret)) = credentials else {
            let authorization = format!(
                "AWS4-HMAC-SHA256 Credential=testing/20260101/{MOTO_REGION}/{service}/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=0"
            );
            return Ok(request
                .header("x-amz-date", "20260101T000000Z")
                .header("authorization", authorization)
                .body(body));
        };
        let identity =
            aws_credential_types::Credentials::new(id, secret, None, None, "mirror-testkit").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(MOTO_REGION)
            .name(service)
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()?
            .into();
        let signable = SignableRequest::new(
            "POST",
            &url,
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )?;
        let (instructions, _signature) = sign(signable, &params)?.into_parts();
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        Ok(request.body(body))
    }

    /// One IAM query-protocol call (form-encoded); the XML answer.
    pub async fn iam(&self, params: &[(&str, &str)]) -> anyhow::Result<String> {
        let action = params.first().map(|p| p.1).unwrap_or_default();
        let form = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .append_pair("Version", "2010-05-08")
            .finish();
        let response = self
            .post(
                "iam",
                &[("content-type", "application/x-www-form-urlencoded")],
                form.into_bytes(),
            )?
            .send()
            .await
            .with_context(|| format!("moto iam {action}: sending"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("moto iam {action}: {status}: {text}");
        }
        Ok(text)
    }

    /// One AWS JSON 1.1 call: the HTTP status and the parsed answer (an
    /// error answer has `__type` and `message`).
    pub async fn call(
        &self,
        service: &str,
        target: &str,
        request: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let body = serde_json::to_vec(request)?;
        let response = self
            .post(
                service,
                &[
                    ("x-amz-target", target),
                    ("content-type", "application/x-amz-json-1.1"),
                ],
                body,
            )?
            .send()
            .await
            .with_context(|| format!("moto {target}: sending"))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("moto {target}: reading the answer"))?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "moto {target}: {status} with a body that is not JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })?
        };
        Ok((status, value))
    }

    /// An ECR operation (`DescribeRepositories`); an AWS error is an `Err`
    /// naming its `__type`.
    pub async fn ecr(&self, action: &str, request: Value) -> anyhow::Result<Value> {
        self.expect_ok("ecr", ECR_TARGET_PREFIX, action, &request)
            .await
    }

    /// A CloudWatch Logs operation (`DescribeLogGroups`).
    pub async fn logs(&self, action: &str, request: Value) -> anyhow::Result<Value> {
        self.expect_ok("logs", LOGS_TARGET_PREFIX, action, &request)
            .await
    }

    async fn expect_ok(
        &self,
        service: &str,
        prefix: &str,
        action: &str,
        request: &Value,
    ) -> anyhow::Result<Value> {
        let (status, answer) = self
            .call(service, &format!("{prefix}.{action}"), request)
            .await?;
        if (200..300).contains(&status) {
            return Ok(answer);
        }
        let kind = answer
            .get("__type")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        let message = answer
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default();
        bail!("moto {service} {action}: {status} {kind}: {message}")
    }

    /// The repository object (`repositoryName`, `imageTagMutability`, ...),
    /// or `None` when moto does not know it.
    pub async fn describe_repository(&self, name: &str) -> anyhow::Result<Option<Value>> {
        let request = json!({ "repositoryNames": [name] });
        let (status, answer) = self
            .call(
                "ecr",
                &format!("{ECR_TARGET_PREFIX}.DescribeRepositories"),
                &request,
            )
            .await?;
        let kind = answer.get("__type").and_then(Value::as_str);
        match status {
            200..=299 => Ok(answer
                .get("repositories")
                .and_then(Value::as_array)
                .and_then(|r| r.first())
                .cloned()),
            // An invalid name (upper case, ...) cannot exist either.
            400 if matches!(
                kind,
                Some("RepositoryNotFoundException" | "InvalidParameterException")
            ) =>
            {
                Ok(None)
            }
            _ => bail!("moto ecr DescribeRepositories {name}: {status} {answer}"),
        }
    }

    /// Creates a repository with `imageTagMutability` = `mutability`
    /// (MUTABLE, IMMUTABLE, MUTABLE_WITH_EXCLUSION, IMMUTABLE_WITH_EXCLUSION);
    /// returns the repository object.
    pub async fn create_repository(&self, name: &str, mutability: &str) -> anyhow::Result<Value> {
        let answer = self
            .ecr(
                "CreateRepository",
                json!({ "repositoryName": name, "imageTagMutability": mutability }),
            )
            .await?;
        Ok(answer.get("repository").cloned().unwrap_or(Value::Null))
    }

    /// Every `imageDetails` entry of a repository (all pages).
    pub async fn describe_images(&self, repository: &str) -> anyhow::Result<Vec<Value>> {
        let mut images = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut request = json!({ "repositoryName": repository, "maxResults": 1000 });
            if let (Some(token), Some(map)) = (&next, request.as_object_mut()) {
                map.insert("nextToken".to_owned(), json!(token));
            }
            let answer = self.ecr("DescribeImages", request).await?;
            if let Some(page) = answer.get("imageDetails").and_then(Value::as_array) {
                images.extend(page.iter().cloned());
            }
            next = next_token(&answer);
            if next.is_none() {
                return Ok(images);
            }
        }
    }

    /// GetAuthorizationToken, decoded: `(user, password, proxy_endpoint)`.
    /// moto answers `("AWS", "123456789012-auth-token",
    /// "https://123456789012.dkr.ecr.us-east-1.amazonaws.com")`.
    pub async fn get_authorization_token(&self) -> anyhow::Result<(String, String, String)> {
        let answer = self.ecr("GetAuthorizationToken", json!({})).await?;
        let data = answer
            .get("authorizationData")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .context("GetAuthorizationToken without authorizationData")?;
        let token = data
            .get("authorizationToken")
            .and_then(Value::as_str)
            .context("GetAuthorizationToken without authorizationToken")?;
        let decoded = String::from_utf8(STANDARD.decode(token)?)?;
        let (user, password) = decoded
            .split_once(':')
            .context("authorizationToken is not USER:PASSWORD")?;
        let proxy_endpoint = data
            .get("proxyEndpoint")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Ok((
            user.to_owned(),
            password.to_owned(),
            proxy_endpoint.to_owned(),
        ))
    }

    /// Every log group whose name starts with `prefix` (all pages).
    pub async fn describe_log_groups(&self, prefix: &str) -> anyhow::Result<Vec<Value>> {
        let mut groups = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut request = json!({ "logGroupNamePrefix": prefix });
            if let (Some(token), Some(map)) = (&next, request.as_object_mut()) {
                map.insert("nextToken".to_owned(), json!(token));
            }
            let answer = self.logs("DescribeLogGroups", request).await?;
            if let Some(page) = answer.get("logGroups").and_then(Value::as_array) {
                groups.extend(page.iter().cloned());
            }
            next = next_token(&answer);
            if next.is_none() {
                return Ok(groups);
            }
        }
    }
}

fn next_token(answer: &Value) -> Option<String> {
    answer
        .get("nextToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// IAM enforcement: moto checks signatures and policies of every call once
/// it is on (it is off by default). The testkit's own calls are unsigned, so
/// sign as an administrator created when it is first switched on.
impl Moto {
    /// An IAM user allowed exactly `actions` (`ecr:GetAuthorizationToken`, ...)
    /// on every resource; returns its access key id and secret.
    pub async fn iam_user(&self, name: &str, actions: &[&str]) -> anyhow::Result<(String, String)> {
        let policy = json!({
            "Version": "2012-10-17",
            "Statement": [{ "Effect": "Allow", "Action": actions, "Resource": "*" }],
        })
        .to_string();
        self.iam_user_with_policy(name, &policy).await
    }

    /// An IAM user with this inline policy document (JSON); returns its
    /// access key id and secret.
    pub async fn iam_user_with_policy(
        &self,
        name: &str,
        policy: &str,
    ) -> anyhow::Result<(String, String)> {
        self.client
            .iam(&[("Action", "CreateUser"), ("UserName", name)])
            .await?;
        self.client
            .iam(&[
                ("Action", "PutUserPolicy"),
                ("UserName", name),
                ("PolicyName", "mirror-test"),
                ("PolicyDocument", policy),
            ])
            .await?;
        let answer = self
            .client
            .iam(&[("Action", "CreateAccessKey"), ("UserName", name)])
            .await?;
        let field = |tag: &str| {
            let open = format!("<{tag}>");
            let start = answer.find(&open)? + open.len();
            let end = answer[start..].find(&format!("</{tag}>"))? + start;
            Some(answer[start..end].to_owned())
        };
        match (field("AccessKeyId"), field("SecretAccessKey")) {
            (Some(id), Some(secret)) => Ok((id, secret)),
            _ => bail!("moto iam CreateAccessKey: no key in {answer}"),
        }
    }

    /// Turns IAM enforcement on (every later call must be signed by a known
    /// user and allowed by its policy) or off.
    pub async fn enforce_iam(&self, on: bool) -> anyhow::Result<()> {
        // The testkit's own calls (and the ECR stand-in's gate) go on
        // working as an administrator.
        if on && !self.client.is_signing() {
            let (id, secret) = self.iam_user("mirror-testkit-admin", &["*"]).await?;
            self.client.sign_as(&id, &secret);
        }
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()?
            .post(format!("{}/moto-api/reset-auth", self.endpoint()))
            .body(if on { "0" } else { "inf" })
            .send()
            .await
            .context("moto reset-auth")?;
        if !response.status().is_success() {
            bail!("moto reset-auth: {}", response.status());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_scope_names_the_service() {
        assert_eq!(
            credential_service(
                "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/ecr/aws4_request, \
                 SignedHeaders=host, Signature=x"
            ),
            Some("ecr".to_owned())
        );
        assert_eq!(credential_service("Basic abc"), None);
    }

    #[test]
    fn recording_lines_become_calls_without_our_own() {
        let ours = json!({
            "headers": {"User-Agent": CLIENT_AGENT, "X-Amz-Target": "A.B"},
            "method": "POST", "url": "http://x/", "body": "", "body_encoded": false
        });
        assert_eq!(recorded_call(&ours), None);
        let theirs = json!({
            "headers": {
                "User-Agent": "aws-sdk-rust",
                "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
                "Authorization": "AWS4-HMAC-SHA256 Credential=k/20260101/us-east-1/ecr/aws4_request, SignedHeaders=host, Signature=s"
            },
            "method": "POST", "url": "http://x/",
            "body": STANDARD.encode(b"{\"a\":1}"), "body_encoded": true
        });
        assert_eq!(
            recorded_call(&theirs),
            Some(MotoCall {
                service: Some("ecr".to_owned()),
                action: Some("GetAuthorizationToken".to_owned()),
                body: json!({"a": 1}),
            })
        );
    }
}
