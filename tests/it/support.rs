//! What every test needs: run the binary, make and seed registries, check
//! what landed, read proxy logs.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mirror_testkit::{
    GeneratedImage, ImageSpec, Proxy, PushAuth, PushTarget, Registry, RequestRecord, blob_exists,
    fetch_manifest, generate, push_layout,
};
use serde_json::Value;

/// The binary under test.
pub const MIRROR: &str = env!("CARGO_BIN_EXE_mirror");

/// How long one run of the binary may take before the test fails (the 1 GiB
/// test sets its own).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

// ---- scratch directories ---------------------------------------------------

/// A directory under cargo's per-test-target tmp dir, removed on drop.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "it-{label}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a scratch dir");
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A HOME for the binary with an empty Docker config, so that nothing from the
/// machine running the tests (credentials, proxies) leaks into a run. Shared
/// by every run; nothing is ever written into it by the tests.
fn sandbox_home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("it-home");
        for sub in ["docker", "run", "config"] {
            std::fs::create_dir_all(home.join(sub)).expect("create the sandbox HOME");
        }
        home
    })
}

// ---- running the binary ----------------------------------------------------

/// One finished run of the binary.
#[derive(Debug)]
pub struct Output {
    pub command: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// Peak resident set size in KiB (`/usr/bin/time -f %M`), when measured.
    pub peak_rss_kib: Option<u64>,
}

impl Output {
    /// Everything about the run, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nexit code: {} (after {:.1?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.code, self.elapsed, self.stdout, self.stderr
        )
    }

    /// Panics unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            code,
            "expected exit code {code}\n{}",
            self.describe()
        );
        self
    }

    #[track_caller]
    pub fn expect_success(&self) -> &Self {
        self.expect_code(0)
    }

    /// stdout parsed as exactly one JSON object (nothing else on stdout).
    #[track_caller]
    pub fn json(&self) -> Value {
        match serde_json::from_str::<Value>(self.stdout.trim()) {
            Ok(value) if value.is_object() => value,
            Ok(other) => panic!(
                "--json printed a {} instead of an object\n{}",
                kind_of(&other),
                self.describe()
            ),
            Err(e) => panic!("stdout is not one JSON object: {e}\n{}", self.describe()),
        }
    }

    pub fn stderr_lower(&self) -> String {
        self.stderr.to_lowercase()
    }

    /// Panics if `secret` shows up on stdout or stderr.
    #[track_caller]
    pub fn expect_not_leaked(&self, secret: &str) {
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "the output contains a secret ({secret:?})\n{}",
            self.describe()
        );
    }

    /// Panics unless stderr has an `error:` line.
    #[track_caller]
    pub fn expect_error_line(&self) {
        assert!(
            self.stderr
                .lines()
                .any(|l| l.trim_start().starts_with("error:")),
            "expected an `error: ...` line on stderr\n{}",
            self.describe()
        );
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A run of the binary being put together.
#[derive(Debug, Clone)]
pub struct Mirror {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// Variables the run must not have, even the harness's own (`NO_COLOR`).
    unset: Vec<String>,
    timeout: Duration,
    measure_rss: bool,
}

impl Mirror {
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            args: args.into_iter().map(Into::into).collect(),
            envs: Vec::new(),
            unset: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            measure_rss: false,
        }
    }

    /// `mirror copy SRC DST --insecure-registry <each host>`: every registry
    /// in the tests is plain HTTP on 127.0.0.1.
    pub fn copy(src: &str, dst: &str) -> Self {
        let mut run = Self::new(["copy", src, dst]);
        for host in hosts_of(&[src, dst]) {
            run = run.args(["--insecure-registry", &host]);
        }
        run
    }

    /// `mirror copy SRC_HOST/IMAGE DST_HOST/IMAGE`: the same name on both
    /// registries.
    pub fn copy_between(src_host: &str, dst_host: &str, image: &str) -> Self {
        Self::copy(
            &format!("{src_host}/{image}"),
            &format!("{dst_host}/{image}"),
        )
    }

    /// `mirror inspect REF --insecure-registry <host>`.
    pub fn inspect(reference: &str) -> Self {
        let mut run = Self::new(["inspect", reference]);
        for host in hosts_of(&[reference]) {
            run = run.args(["--insecure-registry", &host]);
        }
        run
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.envs.push((key.to_owned(), value.into()));
        self
    }

    /// Runs without this variable, even one the harness sets (`NO_COLOR`).
    pub fn without_env(mut self, key: &str) -> Self {
        self.unset.push(key.to_owned());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Wraps the run in `/usr/bin/time -f %M` to learn its peak RSS.
    pub fn measure_rss(mut self) -> Self {
        self.measure_rss = true;
        self
    }

    /// The command line, with the sandboxed environment every run gets.
    fn command(&self, rss_file: Option<&Path>) -> (tokio::process::Command, String) {
        let mut command = match rss_file {
            Some(file) => {
                let mut command = tokio::process::Command::new("/usr/bin/time");
                command.args(["-f", "%M", "-o"]).arg(file).arg(MIRROR);
                command
            }
            None => tokio::process::Command::new(MIRROR),
        };
        let home = sandbox_home();
        command
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("DOCKER_CONFIG", home.join("docker"))
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1");
        for (key, value) in &self.envs {
            command.env(key, value);
        }
        for key in &self.unset {
            command.env_remove(key);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        (command, format!("mirror {}", self.args.join(" ")))
    }

    /// Runs it, expecting a failure: exit code 1 and an `error:` line.
    pub async fn fails(self) -> Output {
        let out = self.run().await;
        out.expect_code(1);
        out.expect_error_line();
        out
    }

    pub async fn run(self) -> Output {
        let rss_dir = self.measure_rss.then(|| Scratch::new("rss"));
        let rss_file = rss_dir.as_ref().map(|d| d.path().join("rss"));
        let (mut command, shown) = self.command(rss_file.as_deref());
        let started = Instant::now();
        let output = match tokio::time::timeout(self.timeout, command.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => panic!("could not run {MIRROR}: {e}"),
            Err(_) => panic!("`{shown}` did not finish within {:?}", self.timeout),
        };
        let elapsed = started.elapsed();
        let peak_rss_kib = rss_file.and_then(|file| {
            let text = std::fs::read_to_string(file).ok()?;
            // The last line is the number; earlier ones may say
            // "Command exited with non-zero status N".
            text.lines().last()?.trim().parse().ok()
        });
        Output {
            command: shown,
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed,
            peak_rss_kib,
        }
    }

    /// Starts the binary without waiting for it (to kill it midway, or to
    /// bound a run that may hang without failing the test).
    pub fn spawn(self) -> Running {
        let (mut command, shown) = self.command(None);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("could not run {MIRROR}: {e}"));
        let drain = |pipe: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>| {
            tokio::spawn(async move {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut bytes).await;
                }
                bytes
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
        Running {
            child,
            command: shown,
            started: Instant::now(),
            stdout,
            stderr,
        }
    }
}

/// A run of the binary in progress ([`Mirror::spawn`]).
#[derive(Debug)]
pub struct Running {
    child: tokio::process::Child,
    command: String,
    started: Instant,
    stdout: tokio::task::JoinHandle<Vec<u8>>,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
}

impl Running {
    /// Whether the binary has ended.
    pub fn has_ended(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, as Kubernetes and systemd stop a service.
    pub fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            let sent = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            assert!(
                sent.as_ref().is_ok_and(|s| s.success()),
                "kill -TERM {pid}: {sent:?}"
            );
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// Waits for the run to end, at most `limit`: a run still going then is
    /// killed, and `finished` is false. A killed run's code is -1.
    pub async fn finish(mut self, limit: Duration) -> (Output, bool) {
        let finished = tokio::time::timeout(limit, self.child.wait()).await.is_ok();
        if !finished {
            self.kill();
        }
        let status = self.child.wait().await.ok();
        let elapsed = self.started.elapsed();
        let stdout = self.stdout.await.unwrap_or_default();
        let stderr = self.stderr.await.unwrap_or_default();
        let output = Output {
            command: self.command,
            code: status.and_then(|s| s.code()).unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            elapsed,
            peak_rss_kib: None,
        };
        (output, finished)
    }
}

/// The registry hosts (`127.0.0.1:PORT`) of some references, each once.
/// Local locations (`oci:`, `oci-archive:`, `docker-archive:`) have none;
/// `docker://REF` is `REF`.
fn hosts_of(references: &[&str]) -> Vec<String> {
    const LOCAL: [&str; 3] = ["oci:", "oci-archive:", "docker-archive:"];
    let hosts: BTreeSet<String> = references
        .iter()
        .filter(|r| !LOCAL.iter().any(|t| r.starts_with(t)))
        .map(|r| r.strip_prefix("docker://").unwrap_or(r))
        .filter_map(|r| r.split_once('/').map(|(host, _)| host.to_owned()))
        .filter(|host| host.contains(':') || host.contains('.') || host == "localhost")
        .collect();
    hosts.into_iter().collect()
}

// ---- images ----------------------------------------------------------------

/// Generates (or finds in the on-disk cache) an image, once per test process.
pub async fn image(spec: ImageSpec) -> GeneratedImage {
    type Cells = Mutex<HashMap<String, Arc<OnceLock<GeneratedImage>>>>;
    static IMAGES: OnceLock<Cells> = OnceLock::new();
    let cell = {
        let mut images = IMAGES
            .get_or_init(Default::default)
            .lock()
            .expect("image cache lock");
        images.entry(spec.cache_key()).or_default().clone()
    };
    tokio::task::spawn_blocking(move || {
        cell.get_or_init(|| {
            generate(&spec).unwrap_or_else(|e| panic!("generating {:?}: {e:#}", spec.name))
        })
        .clone()
    })
    .await
    .expect("image generation task")
}

/// The small two-platform image most tests copy (amd64 and arm64/v8, three
/// small layers each: 8 blobs, 3 manifests).
pub async fn small_image() -> GeneratedImage {
    image(ImageSpec::small("it-small", 1)).await
}

/// Three small platforms (amd64, arm64/v8, arm/v7): enough to filter two of
/// them into a new index.
pub fn three_platforms(name: &str, seed: u64) -> ImageSpec {
    use mirror_testkit::PlatformSpec;
    ImageSpec {
        name: name.to_owned(),
        seed,
        platforms: vec![
            PlatformSpec::new("linux/amd64", vec![40 * 1024, 3 * 1024]),
            PlatformSpec::new("linux/arm64/v8", vec![36 * 1024, 2 * 1024]),
            PlatformSpec::new("linux/arm/v7", vec![30 * 1024, 1024]),
        ],
        ..ImageSpec::default()
    }
}

// ---- registries --------------------------------------------------------------

pub async fn open_registry() -> Registry {
    Registry::open()
        .await
        .expect("start an open docker-registry")
}

pub async fn proxy_to(registry: &Registry) -> Proxy {
    Proxy::start(registry.addr()).await.expect("start a proxy")
}

/// Pushes `image` to `host/repo:tag` without credentials.
pub async fn seed(image: &GeneratedImage, host: &str, repo: &str, tag: &str) {
    push_layout(image, &PushTarget::new(host, repo, tag))
        .await
        .unwrap_or_else(|e| panic!("seeding {host}/{repo}:{tag}: {e:#}"));
}

/// A registry holding `image` at `repo:tag`.
pub async fn seeded_registry(image: &GeneratedImage, repo: &str, tag: &str) -> Registry {
    let registry = open_registry().await;
    seed(image, &registry.host(), repo, tag).await;
    registry
}

/// The setup most copy tests start from: [`small_image`] at `app:v1` on a
/// source registry, and an empty destination registry.
pub async fn small_app_v1() -> (GeneratedImage, Registry, Registry) {
    let image = small_image().await;
    let src = seeded_registry(&image, "app", "v1").await;
    let dst = open_registry().await;
    (image, src, dst)
}

// ---- checking what landed ----------------------------------------------------

/// A manifest as the registry serves it: the sha256 of its bytes, its
/// `Content-Type` and its bytes.
#[derive(Debug)]
pub struct Fetched {
    pub digest: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl Fetched {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).expect("the manifest is JSON")
    }
}

pub async fn try_fetch(
    host: &str,
    repo: &str,
    reference: &str,
    auth: &PushAuth,
) -> anyhow::Result<Fetched> {
    let (bytes, content_type, _digest) = fetch_manifest(host, repo, reference, auth).await?;
    Ok(Fetched {
        digest: mirror_oci::digest_of(&bytes).to_string(),
        content_type,
        bytes: bytes.to_vec(),
    })
}

pub async fn fetch(host: &str, repo: &str, reference: &str, auth: &PushAuth) -> Fetched {
    try_fetch(host, repo, reference, auth)
        .await
        .unwrap_or_else(|e| panic!("fetching {host}/{repo}:{reference}: {e:#}"))
}

/// `mirror copy --json SRC DST`, expected to succeed: the run, for its
/// report.
pub async fn copy_json(src: &str, dst: &str) -> Output {
    let out = Mirror::copy(src, dst).arg("--json").run().await;
    out.expect_success();
    out
}

/// The root of `image` is at `host/repo:tag` with its exact digest and media
/// type, and every child manifest and blob of it is in `repo`.
pub async fn assert_landed(
    host: &str,
    repo: &str,
    tag: &str,
    image: &GeneratedImage,
    auth: &PushAuth,
) {
    let root = fetch(host, repo, tag, auth).await;
    assert_eq!(
        root.digest,
        image.root_digest().to_string(),
        "{host}/{repo}:{tag} has another digest than the source root"
    );
    assert_eq!(
        root.content_type,
        image.root.media_type().to_string(),
        "{host}/{repo}:{tag} is served with another media type"
    );
    for (child, _platform) in &image.manifests {
        let digest = child.digest().to_string();
        let fetched = fetch(host, repo, &digest, auth).await;
        assert_eq!(fetched.digest, digest, "child manifest {digest}");
        assert_eq!(
            fetched.content_type,
            child.media_type().to_string(),
            "child manifest {digest} media type"
        );
    }
    for blob in &image.blobs {
        let exists = blob_exists(host, repo, blob.digest(), auth)
            .await
            .unwrap_or_else(|e| panic!("HEAD blob {}: {e:#}", blob.digest()));
        assert!(exists, "blob {} is missing at {host}/{repo}", blob.digest());
    }
}

/// Nothing answers `host/repo:reference`.
pub async fn assert_no_manifest(host: &str, repo: &str, reference: &str, auth: &PushAuth) {
    if let Ok(found) = try_fetch(host, repo, reference, auth).await {
        panic!(
            "{host}/{repo}:{reference} exists ({}) but should not",
            found.digest
        );
    }
}

// ---- proxy logs --------------------------------------------------------------

/// A request that changes the registry.
pub fn is_write(r: &RequestRecord) -> bool {
    matches!(r.method.as_str(), "PUT" | "POST" | "PATCH" | "DELETE")
}

/// The `/v2/` ping (version check), which every client may send.
pub fn is_ping(r: &RequestRecord) -> bool {
    r.path == "/v2/" || r.path == "/v2"
}

/// A readable request log for assertion messages.
pub fn describe(requests: &[RequestRecord]) -> String {
    requests
        .iter()
        .map(|r| {
            let query = r
                .query
                .as_deref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            format!("  {} {}{} -> {}", r.method, r.path, query, r.status)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How many GETs of this blob the log holds.
pub fn blob_gets(requests: &[RequestRecord], digest: &str) -> usize {
    let suffix = format!("/blobs/{digest}");
    requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&suffix))
        .count()
}

/// How many writes name this blob (`?digest=` of an upload, or a mount).
pub fn blob_writes(requests: &[RequestRecord], digest: &str) -> usize {
    let hex = digest.trim_start_matches("sha256:");
    requests
        .iter()
        .filter(|r| is_write(r) && r.query.as_deref().is_some_and(|q| q.contains(hex)))
        .filter(|r| !asks_presence(r))
        .count()
}

/// A mount of a blob from the repository it is posted to: it writes
/// nothing, it asks whether the blob is there (`201`) and otherwise opens
/// the upload (`202`), whose PUT is the write.
pub fn asks_presence(r: &RequestRecord) -> bool {
    let from = r
        .query
        .as_deref()
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("from=")));
    r.method == "POST"
        && from.is_some_and(|from| {
            r.path == format!("/v2/{}/blobs/uploads/", from.replace("%2F", "/"))
        })
}

// ---- JSON --------------------------------------------------------------------

/// A number in the report, by JSON pointer (`/blobs/copied`).
#[track_caller]
pub fn num(report: &Value, pointer: &str) -> u64 {
    report
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("report has no number at {pointer}: {report:#}"))
}

/// A string in the report, by JSON pointer.
#[track_caller]
pub fn text<'a>(report: &'a Value, pointer: &str) -> &'a str {
    report
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("report has no string at {pointer}: {report:#}"))
}

/// A bool in the report, by JSON pointer.
#[track_caller]
pub fn flag(report: &Value, pointer: &str) -> bool {
    report
        .pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or_else(|| panic!("report has no bool at {pointer}: {report:#}"))
}

/// The strings of an array in the report, by JSON pointer.
#[track_caller]
pub fn strings(report: &Value, pointer: &str) -> Vec<String> {
    report
        .pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("report has no array at {pointer}: {report:#}"))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("non-string in {pointer}: {report:#}"))
                .to_owned()
        })
        .collect()
}
