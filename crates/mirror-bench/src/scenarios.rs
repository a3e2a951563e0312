//! The scenarios: each tool copies the corpus cold and warm, the 1 GiB image
//! cold, the corpus into and out of an oci-archive, and into the ECR
//! stand-in; every copy is checked at its destination before it counts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use mirror_testkit::{EcrOptions, EcrStandIn, GeneratedImage, Moto, PushAuth, Registry, TestCa};
use serde_json::Value;

use crate::args::{Args, Profile, Scenario, Tool, run_label};
use crate::checks::{remove_archive, verify, verify_archive, wipe};
use crate::floor::CpuFloor;
use crate::measure::{Counter, Counts, Endpoint, Measurement, Results, run_timed};
use crate::{ARCHIVE_TAG, ECR_MANIFEST_PUTS_PER_SECOND, SKOPEO_CACHE};

/// An image pushed to the source registry.
pub(crate) struct Corpus {
    pub(crate) image: GeneratedImage,
    pub(crate) repo: &'static str,
    pub(crate) tag: &'static str,
}

pub(crate) struct Bench {
    pub(crate) args: Args,
    pub(crate) mirror: PathBuf,
    pub(crate) tools: Vec<Tool>,
    pub(crate) skipped: Vec<String>,
    /// The python-like corpus cold and warm.
    pub(crate) python: bool,
    /// The signed python (loopback TLS only).
    pub(crate) signed: Option<crate::signed::Signed>,
    /// The air gap scenarios: the archive both tools import from.
    pub(crate) reference_archive: Option<PathBuf>,
    /// The ECR profile's `moto_server`.
    pub(crate) moto_server: Option<PathBuf>,
    /// The CPU floor measured at the start, if it could be.
    pub(crate) floor: Option<CpuFloor>,
    /// Signs the HTTPS registries' certificates; both tools trust it.
    pub(crate) ca: TestCa,
    pub(crate) workdir: tempfile::TempDir,
}

impl Bench {
    #[expect(clippy::too_many_arguments, reason = "the run context of one profile")]
    pub(crate) async fn run_profile(
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
        if profile == Profile::LoopbackTls
            && let Some(signed) = &self.signed
        {
            for run in 1..=runs {
                for &tool in &self.tools {
                    for (scenario, cold) in
                        [(Scenario::SignedCold, true), (Scenario::SignedWarm, false)]
                    {
                        let mut outcome = self
                            .measure(tool, src, dst, destination, &signed.corpus, cold)
                            .await;
                        if tool == Tool::Mirror && outcome.is_ok() {
                            outcome = crate::signed::check_referrers(&destination.host(), signed)
                                .await
                                .and(outcome);
                        }
                        if !results.record(
                            (profile, scenario, tool),
                            &label(scenario, tool, run),
                            outcome,
                        ) && cold
                        {
                            break;
                        }
                    }
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
        if profile.is_loopback()
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
    pub(crate) async fn measure(
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
    pub(crate) async fn run_ecr_profile(
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
                    let destination =
                        match EcrDestination::start(self.moto_server.as_deref(), false).await {
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
    pub(crate) async fn measure_ecr(
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
                    (false, false),
                    &["--dest-creds".into(), format!("{user}:{password}").into()],
                );
                (command, Vec::new())
            }
        };
        let mut dst = Endpoint {
            host: ecr.stand_in.host(),
            tls: false,
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
    pub(crate) async fn measure_export(
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
    pub(crate) async fn measure_import(
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
    pub(crate) async fn timed_copy(
        &self,
        tool: Tool,
        source: &str,
        target: &str,
        src: Option<&mut Endpoint<'_>>,
        dst: Option<&mut Endpoint<'_>>,
        bytes: u64,
    ) -> anyhow::Result<Measurement> {
        let endpoints: Vec<(String, bool)> = [src.as_deref(), dst.as_deref()]
            .into_iter()
            .flatten()
            .map(|e| (e.host.clone(), e.tls))
            .collect();
        let command: Vec<OsString> = match tool {
            Tool::Mirror => {
                let mut command: Vec<OsString> = vec![
                    self.mirror.clone().into(),
                    "copy".into(),
                    source.into(),
                    target.into(),
                ];
                for (host, tls) in &endpoints {
                    if !tls {
                        command.push("--insecure-registry".into());
                        command.push(host.into());
                    }
                }
                if endpoints.iter().any(|(_, tls)| *tls) {
                    command.push("--ca-cert".into());
                    command.push(self.ca.ca_path().into());
                }
                command.push("--json".into());
                command
            }
            Tool::Skopeo => {
                let tls = |endpoint: Option<&Endpoint<'_>>| endpoint.is_some_and(|e| e.tls);
                self.skopeo_command(
                    source,
                    target,
                    (tls(src.as_deref()), tls(dst.as_deref())),
                    &[],
                )
            }
        };
        self.timed(&command, &[], src, dst, bytes).await
    }

    /// `skopeo --tmpdir DIR` with its blob-info cache hidden, before the
    /// subcommand.
    pub(crate) fn skopeo_base(&self) -> Vec<OsString> {
        // A private mount namespace with a fresh tmpfs over the blob-info
        // cache: every run starts without what earlier runs learned.
        // Archives are unpacked and assembled under --tmpdir: the same
        // disk as mirror's partial layout beside the archive.
        vec![
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
        ]
    }

    /// `skopeo copy --all --preserve-digests` (`extra` options before the
    /// references) with its blob-info cache hidden. A side reached over
    /// HTTPS (`tls`: source, target) trusts the bench's CA; the others are
    /// plain HTTP (TLS not verified, which lets skopeo fall back to HTTP).
    pub(crate) fn skopeo_command(
        &self,
        source: &str,
        target: &str,
        tls: (bool, bool),
        extra: &[OsString],
    ) -> Vec<OsString> {
        let mut command = self.skopeo_base();
        command.extend(["copy", "--all", "--preserve-digests"].map(OsString::from));
        for (side, tls) in [("src", tls.0), ("dest", tls.1)] {
            if tls {
                command.push(format!("--{side}-cert-dir").into());
                command.push(self.ca.cert_dir().into());
            } else {
                command.push(format!("--{side}-tls-verify=false").into());
            }
        }
        command.extend(extra.iter().cloned());
        command.push(source.into());
        command.push(target.into());
        command
    }

    /// Runs `command` (with `envs` added to its environment) under
    /// `/usr/bin/time`; the registries given count the requests they receive.
    pub(crate) async fn timed(
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
}

/// A fresh ECR stand-in: moto and a registry behind the gate. One serves a
/// cold run and the warm run after it.
pub(crate) struct EcrDestination {
    // Dropped before the moto it asks.
    pub(crate) stand_in: EcrStandIn,
    pub(crate) moto: Moto,
}

impl EcrDestination {
    /// A fresh moto and gate; `blob_mounting` is the account setting
    /// BLOB_MOUNTING the gate answers and obeys.
    pub(crate) async fn start(
        moto_server: Option<&Path>,
        blob_mounting: bool,
    ) -> anyhow::Result<Self> {
        let moto = match moto_server {
            Some(program) => Moto::start_program(program).await?,
            None => Moto::start().await?,
        };
        let options = EcrOptions {
            manifest_puts_per_second: Some(ECR_MANIFEST_PUTS_PER_SECOND),
            blob_mounting,
            ..EcrOptions::default()
        };
        let stand_in = EcrStandIn::start(&moto, options).await?;
        Ok(Self { stand_in, moto })
    }
}

/// The AWS API calls moto recorded (the testkit's own left out), by
/// operation.
pub(crate) fn aws_calls(moto: &Moto) -> Counts {
    let mut counts = Counts::new();
    for call in moto.calls() {
        let action = call.action.unwrap_or_else(|| "other".to_owned());
        *counts.entry(action).or_default() += 1.0;
    }
    counts
}
