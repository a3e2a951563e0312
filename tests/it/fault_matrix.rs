//! The standing fault matrix: every fault a hostile or unlucky source,
//! destination or operator can inflict on one copy, one row each, through
//! one harness, with the same end state asserted for all of them.
//!
//! The bed is shaped like the headline use: a source with bearer tokens
//! (Docker Hub's manner), a destination with Basic credentials (ECR's), each
//! behind a fault-injecting proxy, plus two hosts that are neither (a storage
//! host a blob redirect may point at, and another host an upload `Location`
//! may name). Each row injects its fault, runs
//! `mirror copy --json -vvv SRC DST` with both credentials, and then checks:
//!
//! - the run ends (a hung run is killed and fails its row), with the exit
//!   code the row expects;
//! - no manifest at the destination references a missing blob or manifest;
//! - credentials reached only their own host (source tokens only the
//!   source, destination Basic only the destination, nothing the other
//!   hosts), and the token server saw only the source's user;
//! - no password, Basic value or bearer token in stdout or stderr;
//! - the exact same command, faults cleared, completes and lands the
//!   source's digest.
//!
//! The suite prints one line: faults tried, held.
//! `FAULT_MATRIX_ROWS=TEXT` runs only the rows whose name contains TEXT;
//! `FAULT_MATRIX_VERBOSE=1` prints every row's run and request logs.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use mirror_testkit::{
    Fault, GeneratedImage, ImageSpec, PlatformSpec, Proxy, PushAuth, PushTarget, Registry,
    RequestRecord, Rule, TokenOptions, TokenServer, blob_exists, push_layout,
};
use serde_json::Value;

use crate::support::{Mirror, Output, describe, image, try_fetch};

const SOURCE_USER: &str = "matrix-reader";
const SOURCE_PASSWORD: &str = "src-pw-Kq7-s3cret-4d1e";
const DESTINATION_USER: &str = "matrix-writer";
const DESTINATION_PASSWORD: &str = "dst-pw-Zt9-s3cret-8b2f";
const SOURCE_REPOSITORY: &str = "library/app";
const TAG: &str = "v1";
/// Longest a faulted run may take before it counts as hung.
const RUN_LIMIT: Duration = Duration::from_secs(90);
/// Rows run at once (each row runs the binary, twice).
const ROWS_AT_ONCE: usize = 3;

/// Two platforms of three layers; the largest layer (96 KiB) is the one most
/// faults hit, the smallest manifests travel whole.
fn spec() -> ImageSpec {
    ImageSpec {
        name: "fault-matrix".to_owned(),
        seed: 7_001,
        platforms: vec![
            PlatformSpec::new("linux/amd64", vec![96 * 1024, 8 * 1024, 512]),
            PlatformSpec::new("linux/arm64/v8", vec![60 * 1024, 6 * 1024, 700]),
        ],
        ..ImageSpec::default()
    }
}

// ---- the bed ---------------------------------------------------------------

/// The servers every row shares; rows write to their own repository.
struct Bed {
    image: GeneratedImage,
    tokens: TokenServer,
    source: Registry,
    destination: Registry,
    /// An open registry holding the same image: where a blob redirect of the
    /// source points (a storage host that needs no credentials).
    storage: Registry,
}

impl Bed {
    async fn start() -> Self {
        let image = image(spec()).await;
        let tokens = TokenServer::start(TokenOptions {
            users: vec![(SOURCE_USER.to_owned(), SOURCE_PASSWORD.to_owned())],
            anonymous_pull: false,
            ..TokenOptions::default()
        })
        .await
        .expect("start the token server");
        let source = Registry::token(&tokens)
            .await
            .expect("start the source registry");
        push_layout(
            &image,
            &PushTarget::new(&source.host(), SOURCE_REPOSITORY, TAG)
                .with_auth(PushAuth::basic(SOURCE_USER, SOURCE_PASSWORD)),
        )
        .await
        .expect("seed the source");
        let destination = Registry::htpasswd(DESTINATION_USER, DESTINATION_PASSWORD)
            .await
            .expect("start the destination registry");
        let storage = Registry::open().await.expect("start the storage registry");
        push_layout(
            &image,
            &PushTarget::new(&storage.host(), SOURCE_REPOSITORY, TAG),
        )
        .await
        .expect("seed the storage host");
        Self {
            image,
            tokens,
            source,
            destination,
            storage,
        }
    }

    fn destination_auth() -> PushAuth {
        PushAuth::basic(DESTINATION_USER, DESTINATION_PASSWORD)
    }

    /// The largest layer, which most faults hit.
    fn layer(&self) -> String {
        self.image
            .largest_blob()
            .expect("a layer")
            .digest()
            .to_string()
    }
}

/// One row's proxies: in front of the source, the destination, and the two
/// hosts that are neither.
struct Hosts {
    source: Proxy,
    destination: Proxy,
    /// In front of the storage registry (a redirect target).
    storage: Proxy,
    /// In front of the destination registry, under another address (an
    /// upload `Location` on another host).
    elsewhere: Proxy,
}

impl Hosts {
    async fn start(bed: &Bed) -> Self {
        let proxy = |registry: &Registry| Proxy::start(registry.addr());
        Self {
            source: proxy(&bed.source).await.expect("a source proxy"),
            destination: proxy(&bed.destination).await.expect("a destination proxy"),
            storage: proxy(&bed.storage).await.expect("a storage proxy"),
            elsewhere: proxy(&bed.destination).await.expect("another proxy"),
        }
    }

    fn all(&self) -> [&Proxy; 4] {
        [
            &self.source,
            &self.destination,
            &self.storage,
            &self.elsewhere,
        ]
    }
}

// ---- the rows ----------------------------------------------------------------

/// Which proxy a rule goes to.
#[derive(Debug, Clone, Copy)]
enum Side {
    Source,
    Destination,
}

/// What a row expects of the faulted run's exit code (a crash fails every
/// row but the kill rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// 0: the fault was retried past.
    Succeeds,
    /// Non-zero: the copy failed, saying why.
    Fails,
    /// The row is about the end state only (the binary is killed, or either
    /// outcome is right).
    Any,
}

/// The moment a `kill -9` comes: once the proxies' logs satisfy this.
type Moment = fn(&Context<'_>) -> bool;

/// What a row knows when it builds its rules or watches for its moment.
struct Context<'a> {
    bed: &'a Bed,
    hosts: &'a Hosts,
    repository: String,
}

impl Context<'_> {
    fn layer(&self) -> String {
        self.bed.layer()
    }

    fn blob_path(&self) -> String {
        format!("/blobs/{}", self.layer())
    }
}

struct Row {
    name: &'static str,
    faults: fn(&Context<'_>) -> Vec<(Side, Rule)>,
    exit: Exit,
    /// Kill the binary (-9) at this moment.
    kill_at: Option<Moment>,
    /// `--retries` (attempts per request and per blob).
    retries: u32,
    /// Copy with `--all-tags` (the source's tag list is read).
    all_tags: bool,
}

fn get(path: &str, fault: Fault) -> Rule {
    Rule::new(fault).method("GET").path_contains(path)
}

fn put(path: &str, fault: Fault) -> Rule {
    Rule::new(fault).method("PUT").path_contains(path)
}

fn post(fault: Fault) -> Rule {
    Rule::new(fault)
        .method("POST")
        .path_contains("/blobs/uploads/")
}

const BLOB_PUT: &str = "/blobs/uploads/";
const MANIFEST_PUT: &str = "/manifests/";

/// A fault held for a minute: the moment to kill the binary in.
fn hold() -> Fault {
    Fault::Delay(Duration::from_secs(60))
}

/// Whether `log` holds a request matching `method` and `path` still waiting
/// for its answer.
fn waiting(log: &[RequestRecord], method: &str, path: &str) -> bool {
    log.iter()
        .any(|r| r.method == method && r.path.contains(path) && r.status == 0)
}

fn rows() -> Vec<Row> {
    let row = |name, faults, exit| Row {
        name,
        faults,
        exit,
        kill_at: None,
        retries: 3,
        all_tags: false,
    };
    vec![
        // ---- the source misbehaves
        row(
            "source: corrupt blob",
            |c| {
                vec![(
                    Side::Source,
                    get(&c.blob_path(), Fault::FlipByte { offset: 1_000 }),
                )]
            },
            Exit::Fails,
        ),
        row(
            "source: short blob (early EOF), once",
            |c| {
                vec![(
                    Side::Source,
                    get(&c.blob_path(), Fault::Truncate { after: 1_000 }).times(1),
                )]
            },
            Exit::Succeeds,
        ),
        // Bytes past the descriptor's size are never uploaded: the copy fails
        // (too long) or ends with the verified bytes, depending on whether
        // junk shares a chunk with the blob's last bytes.
        row(
            "source: long blob (junk after the bytes)",
            |c| {
                vec![(
                    Side::Source,
                    get(&c.blob_path(), Fault::Extend { extra: 64 * 1024 }),
                )]
            },
            Exit::Any,
        ),
        row(
            "source: endless blob",
            |c| vec![(Side::Source, get(&c.blob_path(), Fault::Endless))],
            Exit::Any,
        ),
        row(
            "source: 401 with an endless body",
            |_| {
                vec![
                    (
                        Side::Source,
                        Rule::new(Fault::Endless)
                            .method("GET")
                            .path_contains("/manifests/")
                            .times(1),
                    ),
                    (
                        Side::Source,
                        Rule::new(Fault::ReplaceResponse {
                            status: 401,
                            content_type: "application/json".to_owned(),
                            body: br#"{"errors":[{"code":"UNAUTHORIZED","message":""#.to_vec(),
                            headers: Vec::new(),
                        })
                        .method("GET")
                        .path_contains("/manifests/")
                        .times(1),
                    ),
                ]
            },
            Exit::Any,
        ),
        row(
            "source: endless manifest",
            |_| {
                vec![(
                    Side::Source,
                    get("/manifests/sha256:", Fault::Endless).times(1),
                )]
            },
            Exit::Any,
        ),
        row(
            "source: slow blob (32 KiB/s)",
            |c| {
                vec![(
                    Side::Source,
                    get(
                        &c.blob_path(),
                        Fault::Throttle {
                            bytes_per_sec: 32 * 1024,
                        },
                    ),
                )]
            },
            Exit::Succeeds,
        ),
        // Never silent for the read timeout: only the stall guard ends it
        // (one window, 30 s, with one attempt).
        Row {
            retries: 1,
            ..row(
                "source: trickling blob (4 bytes/s)",
                |c| {
                    vec![(
                        Side::Source,
                        get(&c.blob_path(), Fault::Throttle { bytes_per_sec: 4 }),
                    )]
                },
                Exit::Fails,
            )
        },
        row(
            "source: connection reset mid-blob, once",
            |c| {
                vec![(
                    Side::Source,
                    get(&c.blob_path(), Fault::ResetAfter { bytes: 10_000 }).times(1),
                )]
            },
            Exit::Succeeds,
        ),
        row(
            "source: 429 with Retry-After on a blob, twice",
            |c| {
                vec![(
                    Side::Source,
                    get(&c.blob_path(), Fault::status_retry_after(429, "1")).times(2),
                )]
            },
            Exit::Succeeds,
        ),
        row(
            "source: 503 with Retry-After on a manifest, once",
            |_| {
                vec![(
                    Side::Source,
                    get("/manifests/", Fault::status_retry_after(503, "1")).times(1),
                )]
            },
            Exit::Succeeds,
        ),
        row(
            "source: blob redirected to another host",
            |c| {
                let location = format!(
                    "http://{}/v2/{SOURCE_REPOSITORY}/blobs/{}",
                    c.hosts.storage.host(),
                    c.layer()
                );
                vec![(
                    Side::Source,
                    get(
                        &c.blob_path(),
                        Fault::ReplaceResponse {
                            status: 307,
                            content_type: "text/plain".to_owned(),
                            body: Vec::new(),
                            headers: vec![("location".to_owned(), location)],
                        },
                    ),
                )]
            },
            Exit::Succeeds,
        ),
        Row {
            all_tags: true,
            ..row(
                "source: tag list paged to another host",
                |c| {
                    let next = format!(
                        "<http://{}/v2/{SOURCE_REPOSITORY}/tags/list?n=100&last=v0>; rel=\"next\"",
                        c.hosts.storage.host()
                    );
                    vec![(
                        Side::Source,
                        get(
                            "/tags/list",
                            Fault::AddHeaders(vec![("link".to_owned(), next)]),
                        ),
                    )]
                },
                Exit::Any,
            )
        },
        // ---- the destination misbehaves
        row(
            "destination: 500 on upload POST, once",
            |_| vec![(Side::Destination, post(Fault::status(500)).times(1))],
            Exit::Succeeds,
        ),
        row(
            "destination: reset on upload POST, once",
            |_| vec![(Side::Destination, post(Fault::Reset).times(1))],
            Exit::Succeeds,
        ),
        row(
            "destination: 429 with Retry-After on upload POST, once",
            |_| {
                vec![(
                    Side::Destination,
                    post(Fault::status_retry_after(429, "1")).times(1),
                )]
            },
            Exit::Succeeds,
        ),
        row(
            "destination: 500 on blob PUT, once",
            |_| {
                vec![(
                    Side::Destination,
                    put(BLOB_PUT, Fault::status(500)).times(1),
                )]
            },
            Exit::Succeeds,
        ),
        row(
            "destination: reset on blob PUT, once",
            |_| vec![(Side::Destination, put(BLOB_PUT, Fault::Reset).times(1))],
            Exit::Succeeds,
        ),
        row(
            "destination: 429 with Retry-After on blob PUT, once",
            |_| {
                vec![(
                    Side::Destination,
                    put(BLOB_PUT, Fault::status_retry_after(429, "1")).times(1),
                )]
            },
            Exit::Succeeds,
        ),
        row(
            "destination: 500 on every blob PUT",
            |_| vec![(Side::Destination, put(BLOB_PUT, Fault::status(500)))],
            Exit::Fails,
        ),
        row(
            "destination: 500 on manifest PUT, once",
            |_| {
                vec![(
                    Side::Destination,
                    put(MANIFEST_PUT, Fault::status(500)).times(1),
                )]
            },
            Exit::Succeeds,
        ),
        row(
            "destination: reset on manifest PUT, once",
            |_| vec![(Side::Destination, put(MANIFEST_PUT, Fault::Reset).times(1))],
            Exit::Succeeds,
        ),
        row(
            "destination: 429 with Retry-After on manifest PUT, once",
            |_| {
                vec![(
                    Side::Destination,
                    put(MANIFEST_PUT, Fault::status_retry_after(429, "1")).times(1),
                )]
            },
            Exit::Succeeds,
        ),
        row(
            "destination: blob PUT accepted, then lost",
            |c| {
                vec![(
                    Side::Destination,
                    // Only the largest layer's upload (`?digest=` names it).
                    put(BLOB_PUT, Fault::AcceptAndLose)
                        .times(1)
                        .path_contains(c.layer().trim_start_matches("sha256:")),
                )]
            },
            Exit::Fails,
        ),
        row(
            "destination: upload Location on another host",
            |c| {
                vec![(
                    Side::Destination,
                    post(Fault::RewriteHeader {
                        name: "location".to_owned(),
                        find: c.hosts.destination.host(),
                        replace: c.hosts.elsewhere.host(),
                    }),
                )]
            },
            Exit::Any,
        ),
        // ---- kill -9
        Row {
            kill_at: Some(|c| {
                let path = c.blob_path();
                c.hosts
                    .source
                    .requests()
                    .iter()
                    .any(|r| r.method == "GET" && r.path.contains(&path) && r.response_bytes > 0)
            }),
            ..row(
                "kill -9 while a blob downloads",
                |c| {
                    vec![(
                        Side::Source,
                        get(
                            &c.blob_path(),
                            Fault::Throttle {
                                bytes_per_sec: 8_000,
                            },
                        ),
                    )]
                },
                Exit::Any,
            )
        },
        Row {
            kill_at: Some(|c| waiting(&c.hosts.destination.requests(), "PUT", BLOB_PUT)),
            ..row(
                "kill -9 while a blob uploads",
                |_| vec![(Side::Destination, put(BLOB_PUT, hold()).times(1))],
                Exit::Any,
            )
        },
        Row {
            kill_at: Some(|c| {
                waiting(&c.hosts.destination.requests(), "PUT", "/manifests/sha256:")
            }),
            ..row(
                "kill -9 at the first child manifest PUT",
                |_| {
                    vec![(
                        Side::Destination,
                        put("/manifests/sha256:", hold()).times(1),
                    )]
                },
                Exit::Any,
            )
        },
        Row {
            kill_at: Some(|c| {
                waiting(
                    &c.hosts.destination.requests(),
                    "PUT",
                    &format!("/manifests/{TAG}"),
                )
            }),
            ..row(
                "kill -9 at the root manifest PUT",
                |_| vec![(Side::Destination, put(&format!("/manifests/{TAG}"), hold()))],
                Exit::Any,
            )
        },
    ]
}

// ---- the harness ---------------------------------------------------------------

/// What one row found wrong; empty when the row held.
type Findings = Vec<String>;

/// A row's findings and what happened (its runs and every host's log).
struct Outcome {
    findings: Findings,
    logs: String,
}

async fn run_row(bed: &Bed, row: &Row, index: usize) -> Outcome {
    let hosts = Hosts::start(bed).await;
    let context = Context {
        bed,
        hosts: &hosts,
        repository: format!("matrix/row-{index}"),
    };
    for (side, rule) in (row.faults)(&context) {
        match side {
            Side::Source => hosts.source.add_rule(rule),
            Side::Destination => hosts.destination.add_rule(rule),
        }
    }
    let mut findings = Findings::new();
    let command = command(&context, row);

    let mut running = command.clone().spawn();
    if let Some(moment) = row.kill_at {
        let deadline = tokio::time::Instant::now() + RUN_LIMIT;
        loop {
            if moment(&context) {
                running.kill();
                break;
            }
            if running.has_ended() || tokio::time::Instant::now() > deadline {
                findings.push("the moment to kill the binary never came".to_owned());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (out, finished) = running.finish(RUN_LIMIT).await;
    if !finished {
        findings.push(format!("the run hung (killed after {RUN_LIMIT:?})"));
    }
    // A signal (an abort: memory exhausted), a panic (101) or a code past
    // 127 is a crash, whatever the fault.
    let crashed = out.code < 0 || out.code == 101 || out.code > 127;
    if finished && row.kill_at.is_none() {
        if crashed {
            findings.push(format!("the run crashed (exit code {})", out.code));
        } else if row.exit == Exit::Succeeds && out.code != 0 {
            findings.push(format!("exit code {}, expected success", out.code));
        } else if row.exit == Exit::Fails && out.code == 0 {
            findings.push("exit code 0, expected a failure".to_owned());
        }
        if out.code != 0 && !out.stderr.lines().any(|l| l.starts_with("error:")) {
            findings.push("a failed run without an `error:` line".to_owned());
        }
    }
    if finished && out.code == 0 {
        check_report(&out, bed, &mut findings);
    }
    findings.extend(consistency(bed, &context.repository).await);
    findings.extend(credentials(bed, &hosts));
    findings.extend(secrets(&out, &hosts));

    // The same command, faults gone, completes and lands the source's digest.
    for proxy in hosts.all() {
        proxy.clear_rules();
    }
    let (rerun, finished) = command.spawn().finish(RUN_LIMIT).await;
    if !finished || rerun.code != 0 {
        findings.push(format!(
            "the re-run did not complete (exit {}):\n{}",
            rerun.code,
            tail(&rerun.stderr)
        ));
    } else {
        findings.extend(landed(bed, &context.repository).await);
    }
    findings.extend(consistency(bed, &context.repository).await);
    findings.extend(credentials(bed, &hosts));
    findings.extend(secrets(&rerun, &hosts));

    let mut seen = BTreeSet::new();
    findings.retain(|finding| seen.insert(finding.clone()));
    let logs = format!(
        "{}\nsource log:\n{}\ndestination log:\n{}\nstorage log:\n{}\nother host log:\n{}",
        brief(&out),
        describe(&hosts.source.requests()),
        describe(&hosts.destination.requests()),
        describe(&hosts.storage.requests()),
        describe(&hosts.elsewhere.requests()),
    );
    Outcome { findings, logs }
}

/// `mirror copy --json -vvv SRC DST` with both credentials, every test host
/// allowed over plain HTTP.
fn command(context: &Context<'_>, row: &Row) -> Mirror {
    let hosts = context.hosts;
    let (source, destination) = if row.all_tags {
        (
            format!("{}/{SOURCE_REPOSITORY}", hosts.source.host()),
            format!("{}/{}", hosts.destination.host(), context.repository),
        )
    } else {
        (
            format!("{}/{SOURCE_REPOSITORY}:{TAG}", hosts.source.host()),
            format!("{}/{}:{TAG}", hosts.destination.host(), context.repository),
        )
    };
    let retries = row.retries.to_string();
    let mut command = Mirror::copy(&source, &destination);
    if row.all_tags {
        command = command.arg("--all-tags");
    }
    command.args([
        "--src-creds",
        &format!("{SOURCE_USER}:{SOURCE_PASSWORD}"),
        "--dest-creds",
        &format!("{DESTINATION_USER}:{DESTINATION_PASSWORD}"),
        "--insecure-registry",
        &hosts.storage.host(),
        "--insecure-registry",
        &hosts.elsewhere.host(),
        "--retries",
        &retries,
        "--json",
        "-vvv",
    ])
}

/// A run for a message: the command, the exit code, stdout and the end of
/// stderr (`-vvv` is long).
fn brief(out: &Output) -> String {
    format!(
        "command: {}\nexit code: {} (after {:.1?})\n--- stdout ---\n{}\n--- stderr (end) ---\n{}",
        out.command,
        out.code,
        out.elapsed,
        out.stdout,
        tail(&out.stderr)
    )
}

/// The last lines of a long text.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A successful run's report names the source's digest.
fn check_report(out: &Output, bed: &Bed, findings: &mut Findings) {
    match serde_json::from_str::<Value>(out.stdout.trim()) {
        Ok(report) => {
            let digest = report.pointer("/digest").and_then(Value::as_str);
            if digest != Some(bed.image.root_digest().as_ref()) {
                findings.push(format!("the report names digest {digest:?}"));
            }
        }
        Err(e) => findings.push(format!("--json printed no JSON object: {e}")),
    }
}

/// Every manifest of the image present in `repository` has every blob and
/// manifest it references: none was pushed before what it needs.
async fn consistency(bed: &Bed, repository: &str) -> Findings {
    let host = bed.destination.host();
    let auth = Bed::destination_auth();
    let mut findings = Findings::new();
    let mut references = vec![TAG.to_owned(), bed.image.root_digest().to_string()];
    references.extend(
        bed.image
            .manifests
            .iter()
            .map(|(d, _)| d.digest().to_string()),
    );
    for reference in references {
        let manifest = match try_fetch(&host, repository, &reference, &auth).await {
            Ok(found) => found.json(),
            Err(e) if format!("{e:#}").contains("404") => continue,
            Err(e) => {
                findings.push(format!("cannot read {repository}:{reference}: {e:#}"));
                continue;
            }
        };
        let children: Vec<&Value> = manifest["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        for child in children {
            let digest = child["digest"].as_str().unwrap_or_default();
            if try_fetch(&host, repository, digest, &auth).await.is_err() {
                findings.push(format!(
                    "{repository}:{reference} is there but its child manifest {digest} is not"
                ));
            }
        }
        let blobs = std::iter::once(&manifest["config"])
            .chain(manifest["layers"].as_array().into_iter().flatten())
            .filter_map(|d| d["digest"].as_str())
            .filter_map(|d| mirror_oci::parse_digest(d).ok());
        for digest in blobs {
            match blob_exists(&host, repository, &digest, &auth).await {
                Ok(true) => {}
                Ok(false) => findings.push(format!(
                    "{repository}:{reference} is there but its blob {digest} is not"
                )),
                Err(e) => findings.push(format!("HEAD {digest}: {e:#}")),
            }
        }
    }
    findings
}

/// The tag holds the source's exact root, and every blob is there.
async fn landed(bed: &Bed, repository: &str) -> Findings {
    let host = bed.destination.host();
    let auth = Bed::destination_auth();
    let mut findings = Findings::new();
    match try_fetch(&host, repository, TAG, &auth).await {
        Ok(root) if root.digest == bed.image.root_digest().to_string() => {}
        Ok(root) => findings.push(format!("the tag holds {}", root.digest)),
        Err(e) => findings.push(format!("the tag is missing after the re-run: {e:#}")),
    }
    for blob in &bed.image.blobs {
        if !blob_exists(&host, repository, blob.digest(), &auth)
            .await
            .unwrap_or(false)
        {
            findings.push(format!("blob {} missing after the re-run", blob.digest()));
        }
    }
    findings
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Every `Authorization` header a proxy saw.
fn authorizations(proxy: &Proxy) -> BTreeSet<String> {
    proxy
        .requests()
        .into_iter()
        .filter_map(|r| r.authorization)
        .collect()
}

/// Credentials reached only their own host.
fn credentials(bed: &Bed, hosts: &Hosts) -> Findings {
    let mut findings = Findings::new();
    let destination_basic = basic(DESTINATION_USER, DESTINATION_PASSWORD);
    for header in authorizations(&hosts.source) {
        if !header.starts_with("Bearer ") {
            findings.push(format!("the source was sent `{}`", shorten(&header)));
        }
    }
    let source_tokens = authorizations(&hosts.source);
    for header in authorizations(&hosts.destination) {
        if header != destination_basic {
            findings.push(format!(
                "the destination was sent `{}`{}",
                shorten(&header),
                if source_tokens.contains(&header) {
                    " (a source token)"
                } else {
                    ""
                }
            ));
        }
    }
    for (name, proxy) in [("storage", &hosts.storage), ("other", &hosts.elsewhere)] {
        for header in authorizations(proxy) {
            findings.push(format!("the {name} host was sent `{}`", shorten(&header)));
        }
    }
    for request in bed.tokens.requests() {
        if request.user.as_deref().is_some_and(|u| u != SOURCE_USER) {
            findings.push(format!(
                "the token server was sent the credentials of {:?}",
                request.user
            ));
        }
    }
    findings
}

/// No password, Basic value or bearer token the run used is in its output.
fn secrets(out: &Output, hosts: &Hosts) -> Findings {
    let mut secrets: BTreeSet<String> = [SOURCE_PASSWORD, DESTINATION_PASSWORD]
        .into_iter()
        .map(str::to_owned)
        .collect();
    for proxy in hosts.all() {
        for header in authorizations(proxy) {
            if let Some((_, value)) = header.split_once(' ') {
                secrets.insert(value.to_owned());
            }
        }
    }
    secrets.insert(
        basic(SOURCE_USER, SOURCE_PASSWORD)
            .trim_start_matches("Basic ")
            .to_owned(),
    );
    secrets
        .into_iter()
        .filter(|s| out.stdout.contains(s) || out.stderr.contains(s))
        .map(|s| format!("the output holds a secret: `{}`", shorten(&s)))
        .collect()
}

/// A secret as far as a message may show it.
fn shorten(secret: &str) -> String {
    let shown: String = secret.chars().take(16).collect();
    format!("{shown}...")
}

/// The matrix: every row, `ROWS_AT_ONCE` at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix() {
    run_matrix().await;
}

async fn run_matrix() {
    let bed = Arc::new(Bed::start().await);
    let rows = rows();
    // FAULT_MATRIX_ROWS=TEXT runs only the rows whose name contains TEXT.
    let only = std::env::var("FAULT_MATRIX_ROWS").ok();
    let chosen: Vec<_> = rows
        .iter()
        .enumerate()
        .filter(|(_, row)| only.as_deref().is_none_or(|text| row.name.contains(text)))
        .collect();
    let results: Vec<(&Row, Outcome)> = futures::stream::iter(chosen)
        .map(|(index, row)| {
            let bed = bed.clone();
            async move { (row, run_row(&bed, row, index).await) }
        })
        .buffer_unordered(ROWS_AT_ONCE)
        .collect()
        .await;
    if std::env::var_os("FAULT_MATRIX_VERBOSE").is_some() {
        for (row, outcome) in &results {
            let _ = writeln!(std::io::stderr(), "=== {}\n{}", row.name, outcome.logs);
        }
    }
    let held = results
        .iter()
        .filter(|(_, outcome)| outcome.findings.is_empty())
        .count();
    let summary = format!("fault matrix: {} faults tried, {held} held", results.len());
    // Straight to the process's stderr, past the test harness's capture.
    let _ = writeln!(std::io::stderr(), "{summary}");
    let failures: Vec<String> = results
        .iter()
        .filter(|(_, outcome)| !outcome.findings.is_empty())
        .map(|(row, outcome)| {
            format!(
                "=== {}\n{}\n{}",
                row.name,
                outcome.findings.join("\n"),
                outcome.logs
            )
        })
        .collect();
    assert!(failures.is_empty(), "{summary}\n{}", failures.join("\n\n"));
}
