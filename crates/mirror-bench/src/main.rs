//! `mirror-bench`: `mirror copy` against `skopeo copy --all` on real
//! registries, cold and warm, on loopback and over an emulated WAN link, over
//! HTTPS (the headline rows) and plain HTTP; and the headline command
//! `mirror IMAGE` against skopeo into an ECR stand-in.
//!
//! Not a test: run by hand, as root (mount and network namespaces), after a
//! release build of the CLI (`scripts/bench.sh` does both):
//!
//! ```text
//! cargo run --release -p mirror-bench -- \
//!     [--profile loopback-tls,wan-tls,loopback,wan,ecr,fleet,fleet-ecr|tls|all]
//!     [--scenarios python,big,archive] [--runs N]
//!     [--mirror PATH] [--python VENV/bin/python] [--markdown]
//! ```
//!
//! What it does:
//! - measures the CPU floor on the machine: sha256 of every byte once (the
//!   `sha2` crate mirror uses, and aws-lc) plus one user-space relay between
//!   two loopback sockets, reported as `x floor` (CPU / floor) per row; on the
//!   WAN profiles also the link floor (blob bytes at the link rate, `x link`);
//! - generates the python-like corpus (an index of 7 platforms, about 230 MB of
//!   blobs) and a 1 GiB single-layer image, and pushes both to a source
//!   `docker-registry`;
//! - copies them with each tool to a destination registry: the corpus cold
//!   (destination storage wiped; skopeo's blob cache hidden under a tmpfs) and
//!   then warm (again, onto the populated destination), the 1 GiB image cold;
//! - the TLS profiles (`loopback tls`, `wan tls`) put the same storage
//!   behind `docker-registry` over HTTPS, with a certificate from a CA the
//!   bench makes ([`TestCa`]): mirror gets `--ca-cert`, skopeo
//!   `--src-cert-dir` / `--dest-cert-dir`; HTTP/2 is negotiated by ALPN, as
//!   with every real registry. Their requests are counted from the
//!   registries' access logs;
//! - on loopback, the air gap: exports the corpus from the source registry
//!   into a new `oci-archive` file and imports it from an archive (written by
//!   this bench from the generated layout, the same file for both tools) into
//!   the emptied destination registry; temporary files of both tools go to
//!   the same disk (mirror's `FILE.partial/` beside the archive, skopeo's
//!   `--tmpdir` in the same directory);
//! - measures wall time, CPU seconds (user + sys) and peak RSS of the tool
//!   (`/usr/bin/time`), counts the requests each registry received by method
//!   (a recording [`Proxy`] in front of each plain registry on loopback, else
//!   the registry's access log), and checks after each run that the destination
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
//! (`nfq_delay.py`, PyPI NetfilterQueue) holds every packet entering the
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

mod args;
mod checks;
mod fleet;
mod floor;
mod machine;
mod measure;
mod report;
mod scenarios;
mod signed;
mod wan;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::{Context as _, bail};
use clap::Parser as _;
use mirror_testkit::{ImageSpec, Proxy, PushTarget, Registry, TestCa};

use crate::args::{Args, Profile, ProfileArg, ScenarioArg, Tool};
use crate::checks::{verify_archive, write_reference_archive};
use crate::fleet::{FLEET_CONDITION, FLEET_ECR_CONDITION, Fleet};
use crate::floor::CpuFloor;
use crate::machine::{check_root, workspace_root};
use crate::measure::{Endpoint, Results};
use crate::scenarios::{Bench, Corpus};
use crate::wan::Wan;

pub(crate) const PYTHON_REPO: &str = "python";
pub(crate) const PYTHON_TAG: &str = "3.10-slim-buster";
pub(crate) const BIG_REPO: &str = "big";
pub(crate) const BIG_TAG: &str = "1gib";
pub(crate) const BIG_SIZE: u64 = 1 << 30;
/// The tag of the corpus in the archives (the generated layout's ref name).
pub(crate) const ARCHIVE_TAG: &str = "latest";
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Where skopeo (as root) keeps its blob-info cache; hidden under a fresh
/// tmpfs for every skopeo run.
pub(crate) const SKOPEO_CACHE: &str = "/var/lib/containers/cache";
pub(crate) const TIME: &str = "/usr/bin/time";

/// ECR's PutImage quota (per account and region): the gate answers 429 above
/// it, and mirror paces itself to it by default.
pub(crate) const ECR_MANIFEST_PUTS_PER_SECOND: u32 = 10;
/// How the ECR profile is set up, for the report.
pub(crate) const ECR_CONDITIONS: [&str; 2] = [
    "ecr: source registry on 127.0.0.1 behind a recording proxy; destination an ECR stand-in, a fresh one (moto too) for every cold run: moto as the AWS API, a registry (htpasswd user AWS, moto's token) behind a gate with ECR's manners (Basic challenge, NAME_UNKNOWN for repositories moto lacks, PATCH 201, no blob mounting, manifest PUTs above 10/s answered 429, each pushed manifest sent to moto's PutImage); destination requests counted from the gate's log (401 handshakes included)",
    "ecr: mirror runs the headline command `mirror 127.0.0.1:PORT/python:3.10-slim-buster --registry-endpoint 123456789012.dkr.ecr.us-east-1.amazonaws.com=http://GATE` with moto's AWS environment: its token fetch, repository look-up and creation are in its numbers; skopeo runs `skopeo copy --all --preserve-digests --dest-creds AWS:TOKEN docker://SRC docker://GATE/python:TAG` after the bench created the repository in moto and fetched the token, neither timed nor counted (favours skopeo)",
];

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
pub(crate) async fn run(args: Args) -> anyhow::Result<bool> {
    check_root()?;
    mirror_testkit::require_tool("skopeo", "skopeo")?;
    mirror_testkit::require_tool("unshare", "util-linux")?;
    if !Path::new(TIME).is_file() {
        bail!("{TIME} not found: apt-get install -y time");
    }
    let profiles = ProfileArg::expand(&args.profile);
    if profiles.iter().any(|p| p.is_wan()) {
        mirror_testkit::require_tool("ip", "iproute2")?;
        mirror_testkit::require_tool("tc", "iproute2")?;
        mirror_testkit::require_tool("iptables", "iptables")?;
    }
    let moto_server = if profiles.contains(&Profile::Ecr) || profiles.contains(&Profile::FleetEcr) {
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
    if run_archive && !profiles.iter().any(|p| p.is_loopback()) {
        let note = "archive: skipped, it runs on the loopback profiles only".to_owned();
        eprintln!("{note}");
        skipped.push(note);
    }
    if !(run_python || run_big || run_archive && profiles.iter().any(|p| p.is_loopback())) {
        bail!("no scenario to run (--scenarios, --no-big, --profile)");
    }

    let mut bench = Bench {
        mirror,
        tools,
        skipped,
        python: run_python,
        signed: None,
        reference_archive: None,
        moto_server,
        floor: None,
        ca: TestCa::new()?,
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

    eprintln!("measuring the CPU floor (sha256, socket relay)");
    bench.floor = match tokio::task::spawn_blocking(CpuFloor::measure).await? {
        Ok(floor) => Some(floor),
        Err(e) => {
            let note = format!("CPU floor: not measured ({e:#})");
            eprintln!("{note}");
            bench.skipped.push(note);
            None
        }
    };

    let fleet = if profiles.contains(&Profile::Fleet) || profiles.contains(&Profile::FleetEcr) {
        eprintln!("generating the fleet");
        Some(Fleet::generate().await?)
    } else {
        None
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
    if let Some(fleet) = &fleet {
        fleet.push(&source.host()).await?;
    }
    if run_python && profiles.contains(&Profile::LoopbackTls) {
        let signed = signed::push_signed(&source.host(), &python, bench.workdir.path()).await?;
        bench.signed = Some(signed);
    }
    if run_archive && profiles.iter().any(|p| p.is_loopback()) {
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
    // The HTTPS registries serve the plain ones' storage: what a tool
    // writes over TLS is checked (and wiped) through the plain ones.
    let certificate = bench.ca.server(
        &[IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(wan::NS_ADDR)],
        &["localhost"],
    )?;
    let (source_tls, destination_tls) = if profiles.iter().any(|p| p.is_tls()) {
        (
            Some(Registry::open_tls(&certificate, Some(source.storage_dir())).await?),
            Some(Registry::open_tls(&certificate, Some(destination.storage_dir())).await?),
        )
    } else {
        (None, None)
    };
    let tls_pair = || match (&source_tls, &destination_tls) {
        (Some(source), Some(destination)) => Ok((source, destination)),
        _ => Err(anyhow::anyhow!("the TLS registries are gone")),
    };

    let mut results = Results::default();
    let mut conditions = Vec::new();
    let mut wan: Option<Wan> = None;
    for profile in profiles {
        if profile.is_wan() && wan.is_none() {
            let link = Wan::start(&bench.args, source.storage_dir(), &python, &certificate).await?;
            conditions.push(link.describe(&bench.args));
            wan = Some(link);
        } else if !profile.is_wan() {
            // The link is needed no more (the WAN profiles run together).
            drop(wan.take());
        }
        let mut dst = if profile.is_tls() {
            Endpoint::logged(tls_pair()?.1)
        } else {
            Endpoint::proxied(&destination_proxy)
        };
        match profile {
            Profile::LoopbackTls | Profile::Loopback => {
                if profile == Profile::LoopbackTls && bench.signed.is_some() {
                    conditions.push(signed::SIGNED_CONDITION.to_owned());
                }
                conditions.push(if profile.is_tls() {
                    "loopback tls: both registries on 127.0.0.1 over HTTPS (a CA made by the bench: mirror --ca-cert, skopeo --src-cert-dir/--dest-cert-dir), HTTP/2 negotiated by ALPN; requests counted from the registries' access logs".to_owned()
                } else {
                    "loopback: both registries on 127.0.0.1 over plain HTTP, each behind a recording proxy".to_owned()
                });
                let mut src = if profile.is_tls() {
                    Endpoint::logged(tls_pair()?.0)
                } else {
                    Endpoint::proxied(&source_proxy)
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
            Profile::WanTls | Profile::Wan => {
                let Some(registry) = wan.as_ref().and_then(|wan| wan.registry(profile.is_tls()))
                else {
                    bail!("the WAN source registry is gone");
                };
                let mut src = Endpoint::logged(registry);
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
            Profile::Fleet => {
                let Some(fleet) = &fleet else {
                    bail!("the fleet was not generated");
                };
                conditions.push(FLEET_CONDITION.to_owned());
                let mut src = Endpoint::logged(tls_pair()?.0);
                let notes = bench
                    .run_fleet_profile(&mut src, &mut dst, &destination, fleet, &mut results)
                    .await?;
                conditions.extend(notes);
            }
            Profile::FleetEcr => {
                let Some(fleet) = &fleet else {
                    bail!("the fleet was not generated");
                };
                conditions.push(FLEET_ECR_CONDITION.to_owned());
                let mut src = Endpoint::logged(tls_pair()?.0);
                let notes = bench
                    .run_fleet_ecr_profile(&mut src, fleet, &mut results)
                    .await;
                conditions.extend(notes);
            }
            Profile::Ecr => {
                conditions.extend(ECR_CONDITIONS.map(str::to_owned));
                let mut src = Endpoint::proxied(&source_proxy);
                bench
                    .run_ecr_profile(&mut src, &python, big.as_ref(), &mut results)
                    .await;
            }
        }
    }

    drop(wan);

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
