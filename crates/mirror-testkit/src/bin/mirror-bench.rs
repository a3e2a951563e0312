//! `mirror-bench`: `mirror copy` against `skopeo copy --all` on real
//! registries, cold and warm, on loopback and over an emulated WAN link; and
//! the headline command `mirror IMAGE` against skopeo into an ECR stand-in.
//!
//! Not a test: run by hand, as root (mount and network namespaces), after a
//! release build of the CLI (`scripts/bench.sh` does both):
//!
//! ```text
//! cargo run --release -p mirror-testkit --bin mirror-bench -- \
//!     [--profile loopback|wan|ecr|all] [--scenarios python,big,archive] [--runs N]
//!     [--mirror PATH] [--python VENV/bin/python] [--markdown]
//! ```
//!
//! What it does:
//! - generates the python-like corpus (an index of 7 platforms, about 230 MB of
//!   blobs) and a 1 GiB single-layer image, and pushes both to a source
//!   `docker-registry`;
//! - copies them with each tool to a destination registry: the corpus cold
//!   (destination storage wiped; skopeo's blob cache hidden under a tmpfs) and
//!   then warm (again, onto the populated destination), the 1 GiB image cold;
//! - on loopback, the air gap: exports the corpus from the source registry
//!   into a new `oci-archive` file and imports it from an archive (written by
//!   this bench from the generated layout, the same file for both tools) into
//!   the emptied destination registry; temporary files of both tools go to
//!   the same disk (mirror's `FILE.partial/` beside the archive, skopeo's
//!   `--tmpdir` in the same directory);
//! - measures wall time, CPU seconds (user + sys) and peak RSS of the tool
//!   (`/usr/bin/time`), counts the requests each registry received by method
//!   (a recording [`Proxy`] in front of each, or the source registry's access
//!   log on the WAN profile), and checks after each run that the destination
//!   (registry or archive) holds exactly the source's index, manifests and
//!   blobs (every archive blob re-hashed);
//! - reports throughput as the blob bytes a run moves over its wall time (none
//!   for a warm run);
//! - prints the median of `--runs` runs per scenario and the mirror/skopeo
//!   ratios, as plain text or (`--markdown`) as tables for the README.
//!
//! The WAN profile puts the source registry in a network namespace
//! (`mirror-bench`, veth pair 10.213.0.1/30 - 10.213.0.2/30) behind a `tbf`
//! rate limit on both ends and an added round-trip time: an NFQUEUE program
//! (`bench/nfq_delay.py`, PyPI NetfilterQueue) holds every packet entering the
//! namespace for the whole RTT (netem is not available on these kernels).
//! Delaying only the packets that enter the namespace gives the same RTT as
//! half each way, and keeps the held packets off the sending sockets' TCP
//! small-queue budget, which would otherwise throttle the registry to a few
//! packets per RTT. Without NetfilterQueue the link has the rate limit only,
//! and the output says so. Namespace, veth pair and rules are removed on exit
//! (the namespace's rules go with it), also after an error, a panic or Ctrl-C.
//!
//! The ECR profile copies python (cold, warm) and the 1 GiB image (cold) from
//! the loopback source into the testkit's [`EcrStandIn`]: moto as the control
//! plane and a registry behind the gate with ECR's manners, a fresh one (moto
//! too) for every cold run. mirror runs the headline command as a user would
//! (`mirror SRC/python:3.10-slim-buster` with moto's AWS environment and
//! `--registry-endpoint ACCOUNT.dkr.ecr.REGION.amazonaws.com=http://GATE`):
//! it fetches the token, creates the repository and pushes, all timed. skopeo
//! does what the walkthrough's user does: the repository is created in moto
//! and the token fetched before its timed run (neither is timed or counted,
//! which favours skopeo), then `skopeo copy --all --dest-creds AWS:TOKEN`.
//! Registry requests are counted by the source's proxy and the gate's log;
//! mirror's AWS API calls (moto's recording) are reported beside the tables.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use mirror_testkit::{
    EcrOptions, EcrStandIn, GeneratedImage, ImageSpec, Moto, Proxy, PushAuth, PushTarget, Registry,
};
use serde_json::Value;

const PYTHON_REPO: &str = "python";
const PYTHON_TAG: &str = "3.10-slim-buster";
const BIG_REPO: &str = "big";
const BIG_TAG: &str = "1gib";
const BIG_SIZE: u64 = 1 << 30;
/// The tag of the corpus in the archives (the generated layout's ref name).
const ARCHIVE_TAG: &str = "latest";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

const NETNS: &str = "mirror-bench";
const VETH_HOST: &str = "mbench-h";
const VETH_NS: &str = "mbench-n";
const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const NS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
const NS_PORT: u16 = 5000;
const NFQUEUE_NUM: u16 = 4213;
const NFQ_DELAY_PY: &str = include_str!("../../bench/nfq_delay.py");

/// Where skopeo (as root) keeps its blob-info cache; hidden under a fresh
/// tmpfs for every skopeo run.
const SKOPEO_CACHE: &str = "/var/lib/containers/cache";
const TIME: &str = "/usr/bin/time";

/// ECR's PutImage quota (per account and region): the gate answers 429 above
/// it, and mirror paces itself to it by default.
const ECR_MANIFEST_PUTS_PER_SECOND: u32 = 10;
/// How the ECR profile is set up, for the report.
const ECR_CONDITIONS: [&str; 2] = [
    "ecr: source registry on 127.0.0.1 behind a recording proxy; destination an ECR stand-in, a fresh one (moto too) for every cold run: moto as the AWS API, a registry (htpasswd user AWS, moto's token) behind a gate with ECR's manners (Basic challenge, NAME_UNKNOWN for repositories moto lacks, PATCH 201, no blob mounting, manifest PUTs above 10/s answered 429, each pushed manifest sent to moto's PutImage); destination requests counted from the gate's log (401 handshakes included)",
    "ecr: mirror runs the headline command `mirror 127.0.0.1:PORT/python:3.10-slim-buster --registry-endpoint 123456789012.dkr.ecr.us-east-1.amazonaws.com=http://GATE` with moto's AWS environment: its token fetch, repository look-up and creation are in its numbers; skopeo runs `skopeo copy --all --preserve-digests --dest-creds AWS:TOKEN docker://SRC docker://GATE/python:TAG` after the bench created the repository in moto and fetched the token, neither timed nor counted (favours skopeo)",
];

#[derive(Debug, Parser)]
#[command(
    name = "mirror-bench",
    about = "Benchmark mirror (`mirror copy`, and `mirror IMAGE` into an ECR stand-in) against `skopeo copy --all` on real registries (run as root)"
)]
struct Args {
    /// Network conditions: loopback, wan (source registry in a network
    /// namespace behind a rate limit and an added RTT), ecr (the headline
    /// command `mirror IMAGE` into an ECR stand-in: moto and a gated
    /// registry), or all three.
    #[arg(long, value_enum, default_value_t = ProfileArg::Loopback)]
    profile: ProfileArg,
    /// Runs per scenario; the tables show the median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// The mirror CLI [default: <workspace>/target/release/mirror]. Skipped
    /// (and said so) when it does not exist.
    #[arg(long)]
    mirror: Option<PathBuf>,
    /// The tools to compare.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Tool::Mirror, Tool::Skopeo])]
    tools: Vec<Tool>,
    /// Print markdown tables (for the README) instead of plain text.
    #[arg(long)]
    markdown: bool,
    /// Scenarios to run: python (the python-like index, cold and warm), big
    /// (the 1 GiB image, cold), archive (export to and import from an
    /// oci-archive; loopback only).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values_t = [ScenarioArg::Python, ScenarioArg::Big, ScenarioArg::Archive]
    )]
    scenarios: Vec<ScenarioArg>,
    /// Leave out the 1 GiB image (the same as leaving `big` out of --scenarios).
    #[arg(long)]
    no_big: bool,
    /// WAN: the tbf rate on both ends of the link.
    #[arg(long, default_value = "200mbit")]
    rate: String,
    /// WAN: the round-trip time added by the NFQUEUE program, in ms.
    #[arg(long, default_value_t = 40)]
    rtt_ms: u32,
    /// WAN: a Python with NetfilterQueue installed [default:
    /// <workspace>/.venv/bin/python]. ECR: the `moto_server` beside it, if
    /// there is one, is the default of --moto-server.
    #[arg(long)]
    python: Option<PathBuf>,
    /// ECR: the `moto_server` to run [default: beside --python, else
    /// $MOTO_SERVER, <workspace>/.venv/bin/moto_server or the first on PATH].
    #[arg(long)]
    moto_server: Option<PathBuf>,
    /// Kill a tool run that takes longer than this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProfileArg {
    Loopback,
    Wan,
    Ecr,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScenarioArg {
    Python,
    Big,
    Archive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Tool {
    Mirror,
    Skopeo,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Mirror => "mirror",
            Tool::Skopeo => "skopeo",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Profile {
    Loopback,
    Wan,
    Ecr,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Loopback => "loopback",
            Profile::Wan => "wan",
            Profile::Ecr => "ecr",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    PythonCold,
    PythonWarm,
    BigCold,
    ArchiveExport,
    ArchiveImport,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::PythonCold => "python cold",
            Scenario::PythonWarm => "python warm",
            Scenario::BigCold => "1 GiB cold",
            Scenario::ArchiveExport => "archive export",
            Scenario::ArchiveImport => "archive import",
        }
    }
}

/// Requests per HTTP method.
type Counts = BTreeMap<String, f64>;

const METHODS: [&str; 5] = ["HEAD", "GET", "PUT", "POST", "PATCH"];

/// One run of one tool.
#[derive(Debug, Clone, Default)]
struct Measurement {
    wall: f64,
    cpu: f64,
    rss_mib: f64,
    /// Blob bytes the run had to move (0 for a warm run).
    bytes: f64,
    src: Counts,
    dst: Counts,
    /// AWS API calls the tool made (moto's recording; ECR profile only), by
    /// operation. Not in the request counts.
    aws: Counts,
}

impl Measurement {
    fn total(counts: &Counts) -> f64 {
        counts.values().fold(0.0, |a, b| a + b)
    }

    fn all_counts(&self) -> Counts {
        let mut all = self.src.clone();
        for (method, n) in &self.dst {
            *all.entry(method.clone()).or_default() += n;
        }
        all
    }

    fn requests(&self) -> f64 {
        Self::total(&self.src) + Self::total(&self.dst)
    }

    /// MB/s of blob bytes over the wall time; `None` when nothing moved.
    fn throughput(&self) -> Option<f64> {
        (self.bytes > 0.0 && self.wall > 0.0).then(|| self.bytes / 1e6 / self.wall)
    }
}

type Key = (Profile, Scenario, Tool);

#[derive(Default)]
struct Results {
    runs: BTreeMap<Key, Vec<Measurement>>,
    failures: Vec<String>,
}

impl Results {
    fn fail(&mut self, what: String) {
        eprintln!("FAILED: {what}");
        self.failures.push(what);
    }

    /// Keeps the measurement of one run, or its failure; whether it worked.
    fn record(&mut self, key: Key, label: &str, outcome: anyhow::Result<Measurement>) -> bool {
        match outcome {
            Ok(m) => {
                eprintln!("{label}: {}", summary(&m));
                self.runs.entry(key).or_default().push(m);
                true
            }
            Err(e) => {
                self.fail(format!("{label}: {e:#}"));
                false
            }
        }
    }
}

/// How the requests a registry receives are counted.
enum Counter<'a> {
    Proxy(&'a Proxy),
    /// The ECR stand-in's gate (its 401 handshakes included).
    Gate(&'a EcrStandIn),
    /// The registry's access log, from a byte offset on.
    AccessLog(&'a Registry, usize),
}

/// A registry as a tool sees it: the host:port it is given and how its
/// requests are counted.
struct Endpoint<'a> {
    host: String,
    counter: Counter<'a>,
}

impl Endpoint<'_> {
    fn reset(&mut self) {
        match &mut self.counter {
            Counter::Proxy(proxy) => proxy.clear_requests(),
            Counter::Gate(gate) => gate.clear_requests(),
            Counter::AccessLog(registry, from) => *from = registry.log_text().len(),
        }
    }

    fn counts(&self) -> Counts {
        let mut counts = Counts::new();
        match &self.counter {
            Counter::Proxy(proxy) => {
                for request in proxy.requests() {
                    *counts.entry(request.method).or_default() += 1.0;
                }
            }
            Counter::Gate(gate) => {
                for request in gate.requests() {
                    *counts.entry(request.method).or_default() += 1.0;
                }
            }
            Counter::AccessLog(registry, from) => {
                let log = registry.log_text();
                for method in log
                    .get(*from..)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(access_log_method)
                {
                    *counts.entry(method.to_owned()).or_default() += 1.0;
                }
            }
        }
        counts
    }
}

/// The method of a combined-format access log line
/// (`10.213.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 ...`); `None` for the
/// registry's other (logrus) lines.
fn access_log_method(line: &str) -> Option<&str> {
    let (client, _) = line.split_once(' ')?;
    client.parse::<std::net::IpAddr>().ok()?;
    let (_, request) = line.split_once("] \"")?;
    let (method, rest) = request.split_once(' ')?;
    rest.starts_with('/').then_some(method)
}

/// An image pushed to the source registry.
struct Corpus {
    image: GeneratedImage,
    repo: &'static str,
    tag: &'static str,
}

struct Bench {
    args: Args,
    mirror: PathBuf,
    tools: Vec<Tool>,
    skipped: Vec<String>,
    /// The python-like corpus cold and warm.
    python: bool,
    /// The air gap scenarios: the archive both tools import from.
    reference_archive: Option<PathBuf>,
    /// The ECR profile's `moto_server`.
    moto_server: Option<PathBuf>,
    workdir: tempfile::TempDir,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // Dropping `run` on Ctrl-C drops the registries and the WAN guard: no
    // namespace or registry process is left behind.
    let outcome = tokio::select! {
        outcome = run(args) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("mirror-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs everything; `Ok(false)` when a run failed or a copy was wrong.
async fn run(args: Args) -> anyhow::Result<bool> {
    check_root()?;
    mirror_testkit::require_tool("skopeo", "skopeo")?;
    mirror_testkit::require_tool("unshare", "util-linux")?;
    if !Path::new(TIME).is_file() {
        bail!("{TIME} not found: apt-get install -y time");
    }
    let profiles = match args.profile {
        ProfileArg::Loopback => vec![Profile::Loopback],
        ProfileArg::Wan => vec![Profile::Wan],
        ProfileArg::Ecr => vec![Profile::Ecr],
        ProfileArg::All => vec![Profile::Loopback, Profile::Wan, Profile::Ecr],
    };
    if profiles.contains(&Profile::Wan) {
        mirror_testkit::require_tool("ip", "iproute2")?;
        mirror_testkit::require_tool("tc", "iproute2")?;
        mirror_testkit::require_tool("iptables", "iptables")?;
    }
    let moto_server = if profiles.contains(&Profile::Ecr) {
        let beside_python = args
            .python
            .as_ref()
            .map(|python| python.with_file_name("moto_server"))
            .filter(|path| path.is_file());
        let program = match args.moto_server.clone().or(beside_python) {
            Some(program) => program,
            None => mirror_testkit::find_moto_server().context(
                "the ecr profile runs moto (scripts/bench.sh installs moto[server] into .venv; or pass --moto-server)",
            )?,
        };
        if !program.is_file() {
            bail!("--moto-server {} does not exist", program.display());
        }
        Some(program)
    } else {
        None
    };

    let root = workspace_root();
    let mirror = args
        .mirror
        .clone()
        .unwrap_or_else(|| root.join("target/release/mirror"));
    let mut tools = Vec::new();
    let mut skipped = Vec::new();
    for &tool in &args.tools {
        if tools.contains(&tool) {
            continue;
        }
        if tool == Tool::Mirror && !mirror.is_file() {
            let note = format!(
                "mirror: skipped, {} does not exist (cargo build --release --bin mirror)",
                mirror.display()
            );
            eprintln!("{note}");
            skipped.push(note);
            continue;
        }
        tools.push(tool);
    }
    if tools.is_empty() {
        bail!("no tool to run");
    }
    std::fs::create_dir_all(SKOPEO_CACHE).with_context(|| format!("creating {SKOPEO_CACHE}"))?;
    let wanted = |scenario| args.scenarios.contains(&scenario);
    let (run_python, run_big, run_archive) = (
        wanted(ScenarioArg::Python),
        wanted(ScenarioArg::Big) && !args.no_big,
        wanted(ScenarioArg::Archive),
    );
    if run_archive && !profiles.contains(&Profile::Loopback) {
        let note = "archive: skipped, it runs on the loopback profile only".to_owned();
        eprintln!("{note}");
        skipped.push(note);
    }
    if !(run_python || run_big || run_archive && profiles.contains(&Profile::Loopback)) {
        bail!("no scenario to run (--scenarios, --no-big, --profile)");
    }

    let mut bench = Bench {
        mirror,
        tools,
        skipped,
        python: run_python,
        reference_archive: None,
        moto_server,
        workdir: tempfile::Builder::new().prefix("mirror-bench-").tempdir()?,
        args,
    };

    eprintln!(
        "generating images (cached under {})",
        mirror_testkit::cache_root().display()
    );
    let python =
        tokio::task::spawn_blocking(|| mirror_testkit::generate(&ImageSpec::python_like()))
            .await??;
    let python = Corpus {
        image: python,
        repo: PYTHON_REPO,
        tag: PYTHON_TAG,
    };
    let big = if !run_big {
        None
    } else {
        let image = tokio::task::spawn_blocking(|| {
            mirror_testkit::generate(&ImageSpec::single_layer("bench-1gib", BIG_SIZE))
        })
        .await??;
        Some(Corpus {
            image,
            repo: BIG_REPO,
            tag: BIG_TAG,
        })
    };

    let source = Registry::open().await?;
    let destination = Registry::open().await?;
    eprintln!(
        "pushing the images to the source registry {}",
        source.host()
    );
    for corpus in std::iter::once(&python).chain(big.as_ref()) {
        mirror_testkit::push_layout(
            &corpus.image,
            &PushTarget::new(&source.host(), corpus.repo, corpus.tag),
        )
        .await
        .with_context(|| format!("pushing {}:{}", corpus.repo, corpus.tag))?;
    }
    if run_archive && profiles.contains(&Profile::Loopback) {
        let path = bench.workdir.path().join("reference.tar");
        eprintln!(
            "writing the archive both tools import from: {}",
            path.display()
        );
        let (layout, job_path) = (python.image.layout.clone(), path.clone());
        tokio::task::spawn_blocking(move || write_reference_archive(&layout, &job_path)).await??;
        verify_archive(&path, &python.image, ARCHIVE_TAG)
            .context("the reference archive does not hold the corpus")?;
        bench.reference_archive = Some(path);
    }
    let source_proxy = Proxy::start(source.addr()).await?;
    let destination_proxy = Proxy::start(destination.addr()).await?;

    let mut results = Results::default();
    let mut conditions = Vec::new();
    for profile in profiles {
        let mut dst = Endpoint {
            host: destination_proxy.host(),
            counter: Counter::Proxy(&destination_proxy),
        };
        match profile {
            Profile::Loopback => {
                conditions.push(
                    "loopback: both registries on 127.0.0.1, each behind a recording proxy"
                        .to_owned(),
                );
                let mut src = Endpoint {
                    host: source_proxy.host(),
                    counter: Counter::Proxy(&source_proxy),
                };
                bench
                    .run_profile(
                        profile,
                        &mut src,
                        &mut dst,
                        &destination,
                        &python,
                        big.as_ref(),
                        &mut results,
                    )
                    .await?;
            }
            Profile::Wan => {
                let wan = Wan::start(&bench.args, source.storage_dir(), &python).await?;
                conditions.push(wan.describe(&bench.args));
                let Some(registry) = wan.registry.as_ref() else {
                    bail!("the WAN source registry is gone");
                };
                let mut src = Endpoint {
                    host: registry.host(),
                    counter: Counter::AccessLog(registry, 0),
                };
                bench
                    .run_profile(
                        profile,
                        &mut src,
                        &mut dst,
                        &destination,
                        &python,
                        big.as_ref(),
                        &mut results,
                    )
                    .await?;
                drop(wan);
            }
            Profile::Ecr => {
                conditions.extend(ECR_CONDITIONS.map(str::to_owned));
                let mut src = Endpoint {
                    host: source_proxy.host(),
                    counter: Counter::Proxy(&source_proxy),
                };
                bench
                    .run_ecr_profile(&mut src, &python, big.as_ref(), &mut results)
                    .await;
            }
        }
    }

    let report = bench.report(&results, &conditions);
    print!("{report}");
    if !results.failures.is_empty() {
        eprintln!("\n{} FAILURE(S):", results.failures.len());
        for failure in &results.failures {
            eprintln!("  - {failure}");
        }
    }
    Ok(results.failures.is_empty())
}

impl Bench {
    #[allow(clippy::too_many_arguments)]
    async fn run_profile(
        &self,
        profile: Profile,
        src: &mut Endpoint<'_>,
        dst: &mut Endpoint<'_>,
        destination: &Registry,
        python: &Corpus,
        big: Option<&Corpus>,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let runs = self.args.runs;
        let label = |scenario: Scenario, tool: Tool, run: u32| {
            run_label(profile, scenario, tool, run, runs)
        };
        if self.python {
            for run in 1..=runs {
                for &tool in &self.tools {
                    let cold = self
                        .measure(tool, src, dst, destination, python, true)
                        .await;
                    let key = (profile, Scenario::PythonCold, tool);
                    if !results.record(key, &label(Scenario::PythonCold, tool, run), cold) {
                        results.fail(format!(
                            "{}: not run, the cold run failed",
                            label(Scenario::PythonWarm, tool, run)
                        ));
                        continue;
                    }
                    let warm = self
                        .measure(tool, src, dst, destination, python, false)
                        .await;
                    let key = (profile, Scenario::PythonWarm, tool);
                    results.record(key, &label(Scenario::PythonWarm, tool, run), warm);
                }
            }
        }
        if let Some(big) = big {
            for run in 1..=runs {
                for &tool in &self.tools {
                    let cold = self.measure(tool, src, dst, destination, big, true).await;
                    let key = (profile, Scenario::BigCold, tool);
                    results.record(key, &label(Scenario::BigCold, tool, run), cold);
                }
            }
        }
        if profile == Profile::Loopback
            && let Some(reference) = &self.reference_archive
        {
            for run in 1..=runs {
                for &tool in &self.tools {
                    let export = self.measure_export(tool, src, python).await;
                    let key = (profile, Scenario::ArchiveExport, tool);
                    results.record(key, &label(Scenario::ArchiveExport, tool, run), export);
                    let import = self
                        .measure_import(tool, dst, destination, python, reference)
                        .await;
                    let key = (profile, Scenario::ArchiveImport, tool);
                    results.record(key, &label(Scenario::ArchiveImport, tool, run), import);
                }
            }
        }
        // Leave the destination empty for the next profile.
        destination.wipe_storage()?;
        Ok(())
    }

    /// One copy of `corpus` by `tool` from `src` to `dst`: onto an emptied
    /// destination when `cold`. Fails when the tool fails or the destination
    /// does not hold exactly the source's image afterwards.
    async fn measure(
        &self,
        tool: Tool,
        src: &mut Endpoint<'_>,
        dst: &mut Endpoint<'_>,
        destination: &Registry,
        corpus: &Corpus,
        cold: bool,
    ) -> anyhow::Result<Measurement> {
        if cold {
            wipe(destination, corpus).await?;
        }
        let source = format!("docker://{}/{}:{}", src.host, corpus.repo, corpus.tag);
        let target = format!("docker://{}/{}:{}", dst.host, corpus.repo, corpus.tag);
        let bytes = if cold {
            corpus.image.total_blob_bytes()
        } else {
            0
        };
        let measurement = self
            .timed_copy(tool, &source, &target, Some(src), Some(dst), bytes)
            .await?;
        verify(&destination.host(), &PushAuth::Anonymous, corpus)
            .await
            .context("the destination does not hold the source's image")?;
        Ok(measurement)
    }

    /// The ECR profile: python cold then warm, and the 1 GiB image cold, each
    /// cold run into a fresh stand-in. Failures are recorded.
    async fn run_ecr_profile(
        &self,
        src: &mut Endpoint<'_>,
        python: &Corpus,
        big: Option<&Corpus>,
        results: &mut Results,
    ) {
        let profile = Profile::Ecr;
        let runs = self.args.runs;
        let label = |scenario: Scenario, tool: Tool, run: u32| {
            run_label(profile, scenario, tool, run, runs)
        };
        let mut plan = Vec::new();
        if self.python {
            plan.push((python, Scenario::PythonCold, Some(Scenario::PythonWarm)));
        }
        if let Some(big) = big {
            plan.push((big, Scenario::BigCold, None));
        }
        for (corpus, cold, warm) in plan {
            for run in 1..=runs {
                for &tool in &self.tools {
                    let not_run = |results: &mut Results| {
                        if let Some(warm) = warm {
                            results.fail(format!(
                                "{}: not run, the cold run failed",
                                label(warm, tool, run)
                            ));
                        }
                    };
                    let destination = match EcrDestination::start(self.moto_server.as_deref()).await
                    {
                        Ok(destination) => destination,
                        Err(e) => {
                            results.fail(format!(
                                "{}: starting the ECR stand-in: {e:#}",
                                label(cold, tool, run)
                            ));
                            not_run(results);
                            continue;
                        }
                    };
                    let outcome = self
                        .measure_ecr(tool, src, &destination, corpus, true)
                        .await;
                    if !results.record((profile, cold, tool), &label(cold, tool, run), outcome) {
                        not_run(results);
                        continue;
                    }
                    if let Some(warm) = warm {
                        // Untimed: let the cold run's manifest PUTs leave the
                        // gate's one-second window, or the warm run's first
                        // PUTs meet the 429s the cold run earned (skopeo
                        // gives up on a throttled manifest PUT).
                        tokio::time::sleep(Duration::from_millis(1100)).await;
                        let outcome = self
                            .measure_ecr(tool, src, &destination, corpus, false)
                            .await;
                        results.record((profile, warm, tool), &label(warm, tool, run), outcome);
                    }
                }
            }
        }
    }

    /// One copy of `corpus` by `tool` from `src` into the ECR stand-in, the
    /// way a user does it with that tool: onto an empty stand-in when `cold`.
    /// Fails when the tool fails or the destination does not hold exactly the
    /// source's image afterwards.
    async fn measure_ecr(
        &self,
        tool: Tool,
        src: &mut Endpoint<'_>,
        ecr: &EcrDestination,
        corpus: &Corpus,
        cold: bool,
    ) -> anyhow::Result<Measurement> {
        let image = format!("{}/{}:{}", src.host, corpus.repo, corpus.tag);
        let (command, envs) = match tool {
            // The headline command: token, repository and push are its job.
            Tool::Mirror => {
                let command: Vec<OsString> = vec![
                    self.mirror.clone().into(),
                    image.into(),
                    "--insecure-registry".into(),
                    src.host.clone().into(),
                    "--registry-endpoint".into(),
                    ecr.stand_in.endpoint_arg().into(),
                    "--json".into(),
                ];
                (command, ecr.moto.env())
            }
            // What the walkthrough's user does before `docker push`, here
            // before the clock starts: create the repository (once), get the
            // password (`aws ecr get-login-password`).
            Tool::Skopeo => {
                if cold {
                    ecr.moto
                        .create_repository(corpus.repo, "MUTABLE")
                        .await
                        .context("creating the repository for skopeo")?;
                }
                let (user, password, _) = ecr
                    .moto
                    .get_authorization_token()
                    .await
                    .context("fetching the ECR password for skopeo")?;
                let target = format!(
                    "docker://{}/{}:{}",
                    ecr.stand_in.host(),
                    corpus.repo,
                    corpus.tag
                );
                let command = self.skopeo_command(
                    &format!("docker://{image}"),
                    &target,
                    &["--dest-creds".into(), format!("{user}:{password}").into()],
                );
                (command, Vec::new())
            }
        };
        let mut dst = Endpoint {
            host: ecr.stand_in.host(),
            counter: Counter::Gate(&ecr.stand_in),
        };
        let bytes = if cold {
            corpus.image.total_blob_bytes()
        } else {
            0
        };
        ecr.moto.clear_calls();
        let mut measurement = self
            .timed(&command, &envs, Some(src), Some(&mut dst), bytes)
            .await?;
        measurement.aws = aws_calls(&ecr.moto);
        if tool == Tool::Mirror && cold {
            let stdout = std::fs::read_to_string(self.workdir.path().join("stdout.txt"))?;
            let report: Value = serde_json::from_str(stdout.trim())
                .with_context(|| format!("mirror --json printed no report: {stdout:?}"))?;
            if report["repository"]["created"] != true {
                bail!("mirror did not report creating the repository: {report}");
            }
        }
        verify(&ecr.stand_in.host(), &ecr.stand_in.auth(), corpus)
            .await
            .context("the ECR stand-in does not hold the source's image")?;
        Ok(measurement)
    }

    /// Air gap, connected side: `corpus` from the source registry into a new
    /// oci-archive (removed afterwards), checked blob by blob.
    async fn measure_export(
        &self,
        tool: Tool,
        src: &mut Endpoint<'_>,
        corpus: &Corpus,
    ) -> anyhow::Result<Measurement> {
        let archive = self
            .workdir
            .path()
            .join(format!("export-{}.tar", tool.name()));
        remove_archive(&archive)?;
        let source = format!("docker://{}/{}:{}", src.host, corpus.repo, corpus.tag);
        let target = format!("oci-archive:{}:{}", archive.display(), corpus.tag);
        let measurement = self
            .timed_copy(
                tool,
                &source,
                &target,
                Some(src),
                None,
                corpus.image.total_blob_bytes(),
            )
            .await?;
        let (path, image, tag) = (archive.clone(), corpus.image.clone(), corpus.tag);
        tokio::task::spawn_blocking(move || verify_archive(&path, &image, tag))
            .await?
            .context("the archive does not hold the source's image")?;
        remove_archive(&archive)?;
        Ok(measurement)
    }

    /// Air gap, disconnected side: `corpus` from the reference archive into
    /// the emptied destination registry.
    async fn measure_import(
        &self,
        tool: Tool,
        dst: &mut Endpoint<'_>,
        destination: &Registry,
        corpus: &Corpus,
        reference: &Path,
    ) -> anyhow::Result<Measurement> {
        wipe(destination, corpus).await?;
        let source = format!("oci-archive:{}:{ARCHIVE_TAG}", reference.display());
        let target = format!("docker://{}/{}:{}", dst.host, corpus.repo, corpus.tag);
        let measurement = self
            .timed_copy(
                tool,
                &source,
                &target,
                None,
                Some(dst),
                corpus.image.total_blob_bytes(),
            )
            .await?;
        verify(&destination.host(), &PushAuth::Anonymous, corpus)
            .await
            .context("the destination does not hold the archive's image")?;
        Ok(measurement)
    }

    /// `tool` copies `source` to `target` (skopeo's transport syntax, which
    /// mirror reads too) under `/usr/bin/time`; the registries given count
    /// the requests they receive.
    async fn timed_copy(
        &self,
        tool: Tool,
        source: &str,
        target: &str,
        src: Option<&mut Endpoint<'_>>,
        dst: Option<&mut Endpoint<'_>>,
        bytes: u64,
    ) -> anyhow::Result<Measurement> {
        let hosts: Vec<String> = [src.as_deref(), dst.as_deref()]
            .into_iter()
            .flatten()
            .map(|e| e.host.clone())
            .collect();
        let command: Vec<OsString> = match tool {
            Tool::Mirror => {
                let mut command: Vec<OsString> = vec![
                    self.mirror.clone().into(),
                    "copy".into(),
                    source.into(),
                    target.into(),
                ];
                for host in hosts {
                    command.push("--insecure-registry".into());
                    command.push(host.into());
                }
                command.push("--json".into());
                command
            }
            Tool::Skopeo => self.skopeo_command(source, target, &[]),
        };
        self.timed(&command, &[], src, dst, bytes).await
    }

    /// `skopeo copy --all --preserve-digests` (TLS not verified, `extra`
    /// options before the references) with its blob-info cache hidden.
    fn skopeo_command(&self, source: &str, target: &str, extra: &[OsString]) -> Vec<OsString> {
        // A private mount namespace with a fresh tmpfs over the blob-info
        // cache: every run starts without what earlier runs learned.
        // Archives are unpacked and assembled under --tmpdir: the same
        // disk as mirror's partial layout beside the archive.
        let mut command: Vec<OsString> = vec![
                "unshare".into(),
                "-m".into(),
                "sh".into(),
                "-c".into(),
                format!(
                    "mount -t tmpfs tmpfs {SKOPEO_CACHE} || {{ echo 'cannot hide the skopeo cache' >&2; exit 125; }}; exec \"$@\""
                )
                .into(),
                "sh".into(),
                "skopeo".into(),
                "--tmpdir".into(),
                self.workdir.path().into(),
                "copy".into(),
                "--all".into(),
                "--preserve-digests".into(),
                "--src-tls-verify=false".into(),
                "--dest-tls-verify=false".into(),
        ];
        command.extend(extra.iter().cloned());
        command.push(source.into());
        command.push(target.into());
        command
    }

    /// Runs `command` (with `envs` added to its environment) under
    /// `/usr/bin/time`; the registries given count the requests they receive.
    async fn timed(
        &self,
        command: &[OsString],
        envs: &[(String, String)],
        mut src: Option<&mut Endpoint<'_>>,
        mut dst: Option<&mut Endpoint<'_>>,
        bytes: u64,
    ) -> anyhow::Result<Measurement> {
        if let Some(endpoint) = src.as_deref_mut() {
            endpoint.reset();
        }
        if let Some(endpoint) = dst.as_deref_mut() {
            endpoint.reset();
        }
        let usage = run_timed(
            command,
            envs,
            self.workdir.path(),
            Duration::from_secs(self.args.timeout),
        )
        .await?;
        Ok(Measurement {
            wall: usage.wall,
            cpu: usage.cpu,
            rss_mib: usage.rss_kib / 1024.0,
            bytes: bytes as f64,
            src: src.map(|e| e.counts()).unwrap_or_default(),
            dst: dst.map(|e| e.counts()).unwrap_or_default(),
            aws: Counts::new(),
        })
    }

    fn report(&self, results: &Results, conditions: &[String]) -> String {
        let md = self.args.markdown;
        let mut out = String::new();
        let date = time::OffsetDateTime::now_utc().date();
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let header = format!(
            "mirror vs skopeo, {date}: {cpus} CPUs ({}), {} GiB RAM, median of {} run(s)",
            cpu_model(),
            memory_gib(),
            self.args.runs
        );
        let mut notes = Vec::new();
        if let Some(calls) = aws_calls_note(results) {
            notes.push(calls);
        }
        notes.extend(self.skipped.iter().cloned());
        if md {
            out.push_str(&format!("**{header}**\n\n"));
            for condition in conditions {
                out.push_str(&format!("- {condition}\n"));
            }
            out.push_str(&format!(
                "- python: an index of 7 platforms, {:.0} MB of blobs; 1 GiB: one layer; cold = empty destination (skopeo's blob cache hidden), warm = the same copy again; MB/s = blob bytes moved / wall time\n",
                python_mb()
            ));
            if self.reference_archive.is_some() {
                out.push_str(
                    "- archive export: python from the source registry into a new oci-archive file; archive import: python from an oci-archive (written by the bench, the same file for both tools) into the empty destination registry; skopeo's --tmpdir on the same disk as mirror's FILE.partial/\n",
                );
            }
            for note in &notes {
                out.push_str(&format!("- {note}\n"));
            }
            out.push('\n');
        } else {
            out.push_str(&format!("\n{header}\n"));
            for condition in conditions {
                out.push_str(&format!("  {condition}\n"));
            }
            for note in &notes {
                out.push_str(&format!("  {note}\n"));
            }
            out.push('\n');
        }

        let mut table = Table::new(
            3,
            &[
                "profile",
                "scenario",
                "tool",
                "wall s",
                "CPU s",
                "peak RSS MiB",
                "MB/s",
                "requests",
                "HEAD",
                "GET",
                "PUT",
                "POST",
                "PATCH",
                "other",
                "src / dst",
            ],
        );
        for (&(profile, scenario, tool), runs) in &results.runs {
            let m = median(runs);
            let all = m.all_counts();
            let other: f64 = all
                .iter()
                .filter(|(method, _)| !METHODS.contains(&method.as_str()))
                .map(|(_, n)| n)
                .fold(0.0, |a, b| a + b);
            let mut row = vec![
                profile.name().to_owned(),
                scenario.name().to_owned(),
                tool.name().to_owned(),
                format!("{:.2}", m.wall),
                format!("{:.2}", m.cpu),
                format!("{:.0}", m.rss_mib),
                m.throughput()
                    .map_or_else(|| "-".to_owned(), |t| format!("{t:.0}")),
                count(m.requests()),
            ];
            for method in METHODS {
                row.push(count(all.get(method).copied().unwrap_or_default()));
            }
            row.push(count(other));
            row.push(format!(
                "{} / {}",
                count(Measurement::total(&m.src)),
                count(Measurement::total(&m.dst))
            ));
            table.row(row);
        }
        out.push_str(&table.render(md));

        let mut ratios = Table::new(
            2,
            &["profile", "scenario", "wall", "CPU", "peak RSS", "requests"],
        );
        let mut any_ratio = false;
        for (&(profile, scenario, tool), runs) in &results.runs {
            if tool != Tool::Mirror {
                continue;
            }
            let Some(skopeo) = results.runs.get(&(profile, scenario, Tool::Skopeo)) else {
                continue;
            };
            let (m, s) = (median(runs), median(skopeo));
            any_ratio = true;
            ratios.row(vec![
                profile.name().to_owned(),
                scenario.name().to_owned(),
                ratio(m.wall, s.wall),
                ratio(m.cpu, s.cpu),
                ratio(m.rss_mib, s.rss_mib),
                ratio(m.requests(), s.requests()),
            ]);
        }
        out.push('\n');
        if any_ratio {
            out.push_str(if md {
                "mirror / skopeo (below 1 = mirror uses less):\n\n"
            } else {
                "mirror / skopeo (below 1 = mirror uses less)\n"
            });
            out.push_str(&ratios.render(md));
        } else {
            out.push_str("mirror / skopeo: no ratios (mirror or skopeo did not run)\n");
        }
        if !results.failures.is_empty() {
            out.push_str(&format!(
                "\n{} run(s) FAILED and are not in the medians (see stderr)\n",
                results.failures.len()
            ));
        }
        out
    }
}

/// The AWS API calls of each ECR run (the median per operation), for the
/// notes; `None` when no run made any.
fn aws_calls_note(results: &Results) -> Option<String> {
    let mut parts = Vec::new();
    for (&(profile, scenario, tool), runs) in &results.runs {
        let m = median(runs);
        if profile != Profile::Ecr {
            continue;
        }
        let calls = if m.aws.is_empty() {
            "none".to_owned()
        } else {
            m.aws
                .iter()
                .map(|(action, n)| format!("{action} {}", count(*n)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        parts.push(format!("{} {}: {calls}", scenario.name(), tool.name()));
    }
    (!parts.is_empty()).then(|| {
        format!(
            "ecr: AWS API calls in the timed run (moto's recording; not in the request columns): {}",
            parts.join("; ")
        )
    })
}

fn python_mb() -> f64 {
    let spec = ImageSpec::python_like();
    let bytes: u64 = spec.platforms.iter().flat_map(|p| p.layers.iter()).sum();
    bytes as f64 / 1e6
}

fn summary(m: &Measurement) -> String {
    let throughput = m
        .throughput()
        .map(|t| format!(", {t:.0} MB/s"))
        .unwrap_or_default();
    format!(
        "wall {:.2} s, CPU {:.2} s, peak RSS {:.0} MiB{throughput}, {} requests (src {}, dst {})",
        m.wall,
        m.cpu,
        m.rss_mib,
        count(m.requests()),
        count(Measurement::total(&m.src)),
        count(Measurement::total(&m.dst)),
    )
}

fn count(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.1}")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        if a == 0.0 {
            "=".to_owned()
        } else {
            "n/a".to_owned()
        }
    } else {
        format!("{:.2}", a / b)
    }
}

fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The median of each number on its own.
fn median(runs: &[Measurement]) -> Measurement {
    let counts = |pick: fn(&Measurement) -> &Counts| {
        let mut methods: Vec<String> = runs.iter().flat_map(|m| pick(m).keys().cloned()).collect();
        methods.sort();
        methods.dedup();
        methods
            .into_iter()
            .map(|method| {
                let values = runs
                    .iter()
                    .map(|m| pick(m).get(&method).copied().unwrap_or_default())
                    .collect();
                (method, median_of(values))
            })
            .collect()
    };
    Measurement {
        wall: median_of(runs.iter().map(|m| m.wall).collect()),
        cpu: median_of(runs.iter().map(|m| m.cpu).collect()),
        rss_mib: median_of(runs.iter().map(|m| m.rss_mib).collect()),
        bytes: median_of(runs.iter().map(|m| m.bytes).collect()),
        src: counts(|m| &m.src),
        dst: counts(|m| &m.dst),
        aws: counts(|m| &m.aws),
    }
}

struct Table {
    header: Vec<String>,
    /// The first columns hold text (left-aligned), the others numbers.
    text_columns: usize,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(text_columns: usize, header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            text_columns,
            rows: Vec::new(),
        }
    }

    fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn render(&self, markdown: bool) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|r| r.get(i).map_or(0, String::len))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let numeric = |i: usize| i >= self.text_columns;
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, cell)| {
                    let width = widths.get(i).copied().unwrap_or(0);
                    if numeric(i) {
                        format!("{cell:>width$}")
                    } else {
                        format!("{cell:<width$}")
                    }
                })
                .collect();
            if markdown {
                format!("| {} |\n", padded.join(" | "))
            } else {
                format!("{}\n", padded.join("  ").trim_end())
            }
        };
        let mut out = line(&self.header);
        if markdown {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, &w)| {
                    if numeric(i) {
                        format!("{}:", "-".repeat(w.max(2) - 1))
                    } else {
                        "-".repeat(w.max(1))
                    }
                })
                .collect();
            out.push_str(&format!("| {} |\n", rule.join(" | ")));
        }
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// What `/usr/bin/time` and our clock saw of one run.
struct Usage {
    wall: f64,
    cpu: f64,
    rss_kib: f64,
}

/// Runs `command` under `/usr/bin/time` in its own process group, killing
/// the group after `timeout`. Output goes to files in `workdir`; a failure
/// carries the end of stderr.
async fn run_timed(
    command: &[OsString],
    envs: &[(String, String)],
    workdir: &Path,
    timeout: Duration,
) -> anyhow::Result<Usage> {
    let time_file = workdir.join("time.txt");
    let stdout_file = workdir.join("stdout.txt");
    let stderr_file = workdir.join("stderr.txt");
    let _ = std::fs::remove_file(&time_file);
    let shown = command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = tokio::process::Command::new(TIME)
        .arg("-f")
        .arg("%e %U %S %M")
        .arg("-o")
        .arg(&time_file)
        .args(command)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_file)?)
        .stderr(std::fs::File::create(&stderr_file)?)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let started = Instant::now();
    // Kills the tool too (not only /usr/bin/time) on timeout or when this
    // future is dropped (Ctrl-C).
    let mut group = KillGroup(child.id());
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status?,
        Err(_) => {
            drop(group);
            let _ = child.wait().await;
            bail!("{shown}: killed after {timeout:?}");
        }
    };
    group.0 = None;
    let wall = started.elapsed().as_secs_f64();
    if !status.success() {
        let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{shown}: {status}\n{}", tail.join("\n"));
    }
    let text = std::fs::read_to_string(&time_file)
        .with_context(|| format!("reading {}", time_file.display()))?;
    let fields: Vec<f64> = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {TIME} output {text:?}"))?;
    let [_elapsed, user, sys, rss_kib] = fields[..] else {
        bail!("unexpected {TIME} output {text:?}");
    };
    Ok(Usage {
        wall,
        cpu: user + sys,
        rss_kib,
    })
}

/// Kills a process group when dropped, unless emptied first.
struct KillGroup(Option<u32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Empties the destination registry, and checks that it is empty for clients.
async fn wipe(destination: &Registry, corpus: &Corpus) -> anyhow::Result<()> {
    destination.wipe_storage()?;
    // The registry keeps no blob descriptor cache (none configured): what was
    // wiped must be gone for clients too.
    if let Some(blob) = corpus.image.blobs.first()
        && mirror_testkit::blob_exists(
            &destination.host(),
            corpus.repo,
            blob.digest(),
            &PushAuth::Anonymous,
        )
        .await?
    {
        bail!(
            "the destination still serves {} after wipe_storage",
            blob.digest()
        );
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name (`FILE.partial`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Removes an archive and what a write of it may have left beside it.
fn remove_archive(path: &Path) -> anyhow::Result<()> {
    for leftover in [
        path.to_owned(),
        with_suffix(path, ".tmp"),
        with_suffix(path, ".partial"),
    ] {
        let removed = if leftover.is_dir() {
            std::fs::remove_dir_all(&leftover)
        } else {
            std::fs::remove_file(&leftover)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", leftover.display())),
        }
    }
    Ok(())
}

/// Writes a generated layout as an oci-archive (`oci-layout`, `index.json`,
/// then the blobs in name order, deterministic headers): the file both tools
/// import from, written by neither.
fn write_reference_archive(layout: &Path, path: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, file));
    builder.mode(tar::HeaderMode::Deterministic);
    builder.append_path_with_name(layout.join("oci-layout"), "oci-layout")?;
    builder.append_path_with_name(layout.join("index.json"), "index.json")?;
    let mut blobs = std::fs::read_dir(layout.join("blobs/sha256"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    blobs.sort();
    for blob in blobs {
        let name = blob.file_name().unwrap_or_default().to_string_lossy();
        builder.append_path_with_name(&blob, format!("blobs/sha256/{name}"))?;
    }
    let mut writer = builder.into_inner()?;
    writer.flush()?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(())
}

/// Checks that an oci-archive holds `image` under `tag`: `index.json` names
/// the root, every manifest and blob is there with the right bytes (each
/// re-hashed), and nothing temporary was left beside the file.
fn verify_archive(path: &Path, image: &GeneratedImage, tag: &str) -> anyhow::Result<()> {
    use std::io::Read as _;
    for suffix in [".partial", ".tmp"] {
        let leftover = with_suffix(path, suffix);
        if leftover.exists() {
            bail!("{} was left behind", leftover.display());
        }
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, file));
    let mut index = None;
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    let mut buffer = vec![0u8; 1 << 16];
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes())
            .trim_start_matches("./")
            .to_owned();
        if name == "index.json" {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            index = Some(bytes);
        } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let named = format!("sha256:{hex}");
            let digest = mirror_oci::parse_digest(&named)
                .with_context(|| format!("archive entry {name}"))?;
            let mut hasher = mirror_oci::Hasher::for_digest(&digest)
                .with_context(|| format!("archive entry {name}: no hasher"))?;
            loop {
                let n = entry.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
            }
            found.insert(named, hasher.finish().to_string());
        }
    }
    let index: Value =
        serde_json::from_slice(&index.context("no index.json")?).context("parsing index.json")?;
    let root = image.root_digest().to_string();
    let named = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["annotations"][REF_NAME] == tag && m["digest"] == root.as_str());
    if !named {
        bail!("index.json does not name {root} `{tag}`: {index}");
    }
    let expected = std::iter::once(root)
        .chain(image.manifests.iter().map(|(d, _)| d.digest().to_string()))
        .chain(image.blobs.iter().map(|d| d.digest().to_string()));
    for digest in expected {
        match found.get(&digest) {
            None => bail!("{digest} is missing"),
            Some(actual) if *actual != digest => bail!("{digest} holds other bytes ({actual})"),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Checks that the destination at `host` serves the corpus's root under its
/// tag with the source's digest, every child manifest by digest, and every
/// blob.
async fn verify(host: &str, auth: &PushAuth, corpus: &Corpus) -> anyhow::Result<()> {
    let (bytes, _, _) = mirror_testkit::fetch_manifest(host, corpus.repo, corpus.tag, auth).await?;
    let got = mirror_oci::digest_of(&bytes);
    let want = corpus.image.root_digest();
    if got != want {
        bail!(
            "{}:{} is {got}, the source's is {want}",
            corpus.repo,
            corpus.tag
        );
    }
    for (manifest, _) in &corpus.image.manifests {
        let digest = manifest.digest().to_string();
        let (bytes, _, _) = mirror_testkit::fetch_manifest(host, corpus.repo, &digest, auth)
            .await
            .with_context(|| format!("manifest {digest}"))?;
        if mirror_oci::digest_of(&bytes).to_string() != digest {
            bail!("manifest {digest} has other bytes");
        }
    }
    for blob in &corpus.image.blobs {
        if !mirror_testkit::blob_exists(host, corpus.repo, blob.digest(), auth).await? {
            bail!("blob {} is missing", blob.digest());
        }
    }
    Ok(())
}

/// A fresh ECR stand-in: moto and a registry behind the gate. One serves a
/// cold run and the warm run after it.
struct EcrDestination {
    // Dropped before the moto it asks.
    stand_in: EcrStandIn,
    moto: Moto,
}

impl EcrDestination {
    async fn start(moto_server: Option<&Path>) -> anyhow::Result<Self> {
        let moto = match moto_server {
            Some(program) => Moto::start_program(program).await?,
            None => Moto::start().await?,
        };
        let options = EcrOptions {
            manifest_puts_per_second: Some(ECR_MANIFEST_PUTS_PER_SECOND),
            ..EcrOptions::default()
        };
        let stand_in = EcrStandIn::start(&moto, options).await?;
        Ok(Self { stand_in, moto })
    }
}

/// The AWS API calls moto recorded (the testkit's own left out), by
/// operation.
fn aws_calls(moto: &Moto) -> Counts {
    let mut counts = Counts::new();
    for call in moto.calls() {
        let action = call.action.unwrap_or_else(|| "other".to_owned());
        *counts.entry(action).or_default() += 1.0;
    }
    counts
}

/// The emulated WAN link and the source registry behind it. Dropping it
/// stops the registry and the delay program and deletes the namespace (with
/// its veth pair, qdiscs and iptables rules).
struct Wan {
    registry: Option<Registry>,
    delay: Option<std::process::Child>,
    /// Why there is no added delay, if there is none.
    no_delay: Option<String>,
    connect_ms: Option<f64>,
    mbit: Option<f64>,
    /// Holds the delay program's script.
    dir: tempfile::TempDir,
}

impl Wan {
    async fn start(args: &Args, storage: &Path, python: &Corpus) -> anyhow::Result<Self> {
        // A namespace left by a run that was killed would hold our addresses.
        if netns_exists(NETNS) {
            eprintln!("removing the network namespace {NETNS} left by an earlier run");
            cmd("ip", &["netns", "del", NETNS])?;
        }
        if Path::new("/sys/class/net").join(VETH_HOST).exists() {
            cmd("ip", &["link", "del", VETH_HOST])?;
        }
        let mut wan = Wan {
            registry: None,
            delay: None,
            no_delay: None,
            connect_ms: None,
            mbit: None,
            dir: tempfile::Builder::new()
                .prefix("mirror-bench-wan-")
                .tempdir()?,
        };
        let host_cidr = format!("{HOST_ADDR}/30");
        let ns_cidr = format!("{NS_ADDR}/30");
        let tbf = [
            "root", "tbf", "rate", &args.rate, "burst", "256kb", "latency", "50ms",
        ];
        cmd("ip", &["netns", "add", NETNS])?;
        cmd(
            "ip",
            &[
                "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS,
            ],
        )?;
        cmd("ip", &["link", "set", VETH_NS, "netns", NETNS])?;
        cmd("ip", &["addr", "add", &host_cidr, "dev", VETH_HOST])?;
        cmd("ip", &["link", "set", VETH_HOST, "up"])?;
        in_netns(&["ip", "addr", "add", &ns_cidr, "dev", VETH_NS])?;
        in_netns(&["ip", "link", "set", VETH_NS, "up"])?;
        in_netns(&["ip", "link", "set", "lo", "up"])?;
        cmd(
            "tc",
            &[&["qdisc", "add", "dev", VETH_HOST][..], &tbf[..]].concat(),
        )?;
        in_netns(&[&["tc", "qdisc", "add", "dev", VETH_NS][..], &tbf[..]].concat())?;

        if args.rtt_ms > 0 {
            match wan.start_delay(args) {
                Ok(()) => {}
                Err(e) => {
                    let reason = format!("{e:#}");
                    eprintln!(
                        "WARNING: no added delay on the WAN link, rate limit only: {reason}\n\
                         (scripts/bench.sh installs NetfilterQueue into .venv)"
                    );
                    wan.no_delay = Some(reason);
                }
            }
        } else {
            wan.no_delay = Some("--rtt-ms 0".to_owned());
        }

        let addr = SocketAddr::from((NS_ADDR, NS_PORT));
        let registry = Registry::open_in_netns(NETNS, addr, Some(storage)).await?;
        wan.measure_link(&registry, python).await?;
        wan.registry = Some(registry);
        Ok(wan)
    }

    /// Starts the NFQUEUE program in the namespace, then sends it every
    /// packet that enters the namespace.
    fn start_delay(&mut self, args: &Args) -> anyhow::Result<()> {
        let python = args
            .python
            .clone()
            .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
        if !python.is_file() {
            bail!("{} does not exist", python.display());
        }
        let script = self.dir.path().join("nfq_delay.py");
        std::fs::write(&script, NFQ_DELAY_PY)?;
        // Niced: a starved delay program would add delay of its own.
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", NETNS, "nice", "-n", "-10"])
            .arg(&python)
            .arg(&script)
            .arg(NFQUEUE_NUM.to_string())
            .arg(args.rtt_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the NFQUEUE delay program")?;
        let mut first = String::new();
        if let Some(stdout) = child.stdout.take() {
            BufReader::new(stdout).read_line(&mut first)?;
        }
        if first.trim() != "ready" {
            drop(child.stdin.take());
            let _ = child.kill();
            let output = child.wait_with_output()?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().last().unwrap_or("no output");
            bail!(
                "the NFQUEUE delay program ({}) did not start: {last}",
                python.display()
            );
        }
        self.delay = Some(child);
        in_netns(&[
            "iptables",
            "-A",
            "INPUT",
            "-i",
            VETH_NS,
            "-j",
            "NFQUEUE",
            "--queue-num",
            &NFQUEUE_NUM.to_string(),
        ])?;
        Ok(())
    }

    /// Connect time (one RTT) and the throughput of one download of the
    /// largest blob, for the report.
    async fn measure_link(&mut self, registry: &Registry, python: &Corpus) -> anyhow::Result<()> {
        let mut best: Option<f64> = None;
        for _ in 0..3 {
            let started = Instant::now();
            let stream = tokio::net::TcpStream::connect(registry.addr()).await?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            drop(stream);
            best = Some(best.map_or(ms, |b: f64| b.min(ms)));
        }
        self.connect_ms = best;
        let Some(blob) = python.image.blobs.iter().max_by_key(|b| b.size()) else {
            return Ok(());
        };
        let started = Instant::now();
        let got = mirror_testkit::fetch_blob_digest(
            &registry.host(),
            python.repo,
            blob.digest(),
            &PushAuth::Anonymous,
        )
        .await?;
        let secs = started.elapsed().as_secs_f64();
        if &got != blob.digest() {
            bail!("the WAN source served other bytes for {}", blob.digest());
        }
        self.mbit = Some(blob.size() as f64 * 8.0 / secs / 1e6);
        eprintln!(
            "WAN link: connect {:.1} ms, one {:.0} MB blob at {:.0} Mbit/s",
            best.unwrap_or_default(),
            blob.size() as f64 / 1e6,
            self.mbit.unwrap_or_default()
        );
        Ok(())
    }

    fn describe(&self, args: &Args) -> String {
        let delay = match &self.no_delay {
            None => format!("+{} ms RTT (NFQUEUE)", args.rtt_ms),
            Some(reason) => format!("NO added delay ({reason}), rate limit only"),
        };
        format!(
            "wan: source registry in a network namespace over a veth pair, tbf {} both ways, {delay}; measured: TCP connect {:.1} ms, one blob download {:.0} Mbit/s; destination on 127.0.0.1 behind a recording proxy; source requests counted from its access log",
            args.rate,
            self.connect_ms.unwrap_or_default(),
            self.mbit.unwrap_or_default(),
        )
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        drop(self.registry.take());
        if let Some(mut delay) = self.delay.take() {
            drop(delay.stdin.take());
            let _ = delay.kill();
            let _ = delay.wait();
        }
        if netns_exists(NETNS)
            && let Err(e) = cmd("ip", &["netns", "del", NETNS])
        {
            eprintln!("cleaning up the WAN link: {e:#}");
        }
        // The host end goes with the namespace's end; make sure.
        if Path::new("/sys/class/net").join(VETH_HOST).exists() {
            let _ = cmd("ip", &["link", "del", VETH_HOST]);
        }
    }
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Runs a short command, failing with its stderr.
fn cmd(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn in_netns(command: &[&str]) -> anyhow::Result<()> {
    cmd("ip", &[&["netns", "exec", NETNS][..], command].concat())
}

fn check_root() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1));
    if uid != Some("0") {
        bail!(
            "run as root: the bench mounts a tmpfs over skopeo's cache and makes network namespaces"
        );
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn memory_gib() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or_else(
            || "?".to_owned(),
            |kib| format!("{:.0}", kib / 1024.0 / 1024.0),
        )
}

/// `loopback / python cold / mirror (run 1/3)`: how a run is named in progress lines.
fn run_label(profile: Profile, scenario: Scenario, tool: Tool, run: u32, runs: u32) -> String {
    format!(
        "{} / {} / {} (run {run}/{runs})",
        profile.name(),
        scenario.name(),
        tool.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines_give_their_method() {
        assert_eq!(
            access_log_method(
                r#"10.213.0.1 - - [28/Nov/2025:10:00:00 +0000] "HEAD /v2/python/blobs/sha256:ab HTTP/1.1" 200 0 "" "skopeo""#
            ),
            Some("HEAD")
        );
        assert_eq!(
            access_log_method(
                r#"time="2025-11-28T10:00:00Z" level=info msg="response completed" http.request.method=GET"#
            ),
            None
        );
    }

    #[test]
    fn archives_are_verified_blob_by_blob() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let image = mirror_testkit::generate_into(&ImageSpec::small("bench-unit", 7), dir.path())?;
        let archive = dir.path().join("a.tar");
        write_reference_archive(&image.layout, &archive)?;
        verify_archive(&archive, &image, ARCHIVE_TAG)?;
        assert!(verify_archive(&archive, &image, "other-tag").is_err());

        // A flipped byte in the largest blob.
        let largest = image
            .blobs
            .iter()
            .max_by_key(|b| b.size())
            .context("a blob")?
            .digest()
            .digest()
            .to_owned();
        let mut offset = None;
        for entry in tar::Archive::new(std::fs::File::open(&archive)?).entries()? {
            let entry = entry?;
            if entry.path_bytes().ends_with(largest.as_bytes()) {
                offset = Some(entry.raw_file_position());
            }
        }
        let mut bytes = std::fs::read(&archive)?;
        let at = usize::try_from(offset.context("the blob's entry")?)? + 100;
        bytes[at] ^= 0xff;
        let corrupt = dir.path().join("corrupt.tar");
        std::fs::write(&corrupt, &bytes)?;
        let err = verify_archive(&corrupt, &image, ARCHIVE_TAG).expect_err("a corrupt blob");
        assert!(err.to_string().contains("other bytes"), "{err:#}");

        // Leftovers of a write.
        std::fs::create_dir(with_suffix(&archive, ".partial"))?;
        assert!(verify_archive(&archive, &image, ARCHIVE_TAG).is_err());
        remove_archive(&archive)?;
        assert!(!archive.exists() && !with_suffix(&archive, ".partial").exists());
        Ok(())
    }

    #[test]
    fn medians_take_each_number_on_its_own() {
        let m = |wall: f64, gets: f64| Measurement {
            wall,
            src: Counts::from([("GET".to_owned(), gets)]),
            ..Measurement::default()
        };
        let median = median(&[m(3.0, 10.0), m(1.0, 30.0), m(2.0, 20.0)]);
        assert_eq!(median.wall, 2.0);
        assert_eq!(median.src.get("GET"), Some(&20.0));
        assert_eq!(median_of(vec![1.0, 2.0, 3.0, 4.0]), 2.5);
    }
}
