//! The fleet profile (`--profile fleet`): `mirror sync FILE` against
//! `skopeo sync --all` with the equivalent YAML, over HTTPS on loopback (the
//! bench's CA), on a fleet of 20 repositories x 3 tags whose images share
//! their base layers (as a team's images share a distribution's), cold onto
//! an empty destination and warm again.
//!
//! Besides the usual columns, the registries' access logs say what crossed:
//! blob bytes pulled from the source, blob uploads and mounts at the
//! destination, set against the fleet's distinct blobs.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;

use anyhow::Context as _;
use mirror_testkit::{EcrStandIn, ImageSpec, PlatformSpec, PushAuth, PushTarget, Registry};

use crate::args::{Profile, Scenario, Tool, run_label};
use crate::checks::{verify, wipe};
use crate::measure::{Counter, Endpoint, Measurement, Results};
use crate::scenarios::{Bench, Corpus, EcrDestination, aws_calls};

pub(crate) const FLEET_REPOSITORIES: usize = 20;
pub(crate) const FLEET_TAGS: [&str; 3] = ["1", "2", "3"];
/// Seeds every image's base layers: the blobs the whole fleet shares.
const FLEET_BASE_SEED: u64 = 0x00f1_ee70;

/// How the fleet profile is set up, for the report.
pub(crate) const FLEET_CONDITION: &str = "fleet: 20 repositories x 3 tags, each tag an index of 2 platforms (a 24-25 MB base layer shared by the whole fleet, a 1 MB and an 8 KB layer of its own), between the loopback HTTPS registries; mirror runs `mirror sync FILE --ca-cert CA` (targets named by the file), skopeo `skopeo sync --all --src yaml --dest docker --dest-cert-dir DIR FILE HOST` (the YAML's cert-dir for the source); cold = empty destination, warm = the same sync again; MB/s = distinct blob bytes / wall time";

/// How the fleet-into-ECR profile is set up, for the report.
pub(crate) const FLEET_ECR_CONDITION: &str = "fleet ecr: the fleet from the loopback HTTPS source into the ECR stand-in (a fresh moto and gate for every run, manifest PUTs above 10/s answered 429), once with ECR's account setting BLOB_MOUNTING enabled (the gate mounts a blob only from a repository with a pushed manifest that references it, as ECR does) and once disabled (a mount request opens a plain upload session); mirror runs `mirror sync FILE --ca-cert CA --registry-endpoint ECR_HOST=http://GATE` with `target: ecr` and moto's AWS environment (its token, the 20 repository creations and the setting's read are in its numbers); skopeo runs `skopeo sync --all --dest-creds AWS:TOKEN --dest-tls-verify=false` after the bench created the 20 repositories and fetched the token, untimed (favours skopeo); requests at the destination counted by the gate";

/// The fleet's images, each pushed as `fleetN:TAG`.
pub(crate) struct Fleet {
    pub(crate) images: Vec<Corpus>,
}

fn spec(repository: usize, tag: usize) -> ImageSpec {
    ImageSpec {
        name: format!("fleet-{repository}-{tag}"),
        seed: 70_000 + (repository * FLEET_TAGS.len() + tag) as u64,
        base_seed: Some(FLEET_BASE_SEED),
        always_index: true,
        platforms: vec![
            PlatformSpec::new("linux/amd64", vec![25_000_000, 1_000_000, 8_000]),
            PlatformSpec::new("linux/arm64/v8", vec![24_000_000, 900_000, 7_000]),
        ],
        ..ImageSpec::default()
    }
}

impl Fleet {
    /// Generates the fleet (cached like every generated image).
    pub(crate) async fn generate() -> anyhow::Result<Self> {
        tokio::task::spawn_blocking(|| {
            let mut images = Vec::new();
            for repository in 0..FLEET_REPOSITORIES {
                // A corpus names its repository with a `&'static str`: these
                // 20 short names live as long as the bench anyway.
                let repo: &'static str = Box::leak(format!("fleet{repository}").into_boxed_str());
                for (index, tag) in FLEET_TAGS.iter().enumerate() {
                    let image = mirror_testkit::generate(&spec(repository, index))?;
                    images.push(Corpus { image, repo, tag });
                }
            }
            Ok(Self { images })
        })
        .await?
    }

    pub(crate) async fn push(&self, host: &str) -> anyhow::Result<()> {
        for corpus in &self.images {
            mirror_testkit::push_layout(
                &corpus.image,
                &PushTarget::new(host, corpus.repo, corpus.tag),
            )
            .await
            .with_context(|| format!("pushing {}:{}", corpus.repo, corpus.tag))?;
        }
        Ok(())
    }

    fn repositories(&self) -> BTreeSet<&'static str> {
        self.images.iter().map(|c| c.repo).collect()
    }

    /// Distinct blobs of the whole fleet: (count, bytes).
    pub(crate) fn distinct_blobs(&self) -> (usize, u64) {
        let blobs: BTreeMap<String, u64> = self
            .images
            .iter()
            .flat_map(|c| c.image.blobs.iter())
            .map(|b| (b.digest().to_string(), b.size()))
            .collect();
        (blobs.len(), blobs.values().sum())
    }

    /// Distinct blobs per repository, summed: what a copier without mounts
    /// uploads.
    fn blobs_per_repository(&self) -> usize {
        let pairs: BTreeSet<(&str, String)> = self
            .images
            .iter()
            .flat_map(|c| {
                c.image
                    .blobs
                    .iter()
                    .map(|b| (c.repo, b.digest().to_string()))
            })
            .collect();
        pairs.len()
    }

    /// `mirror sync`'s file.
    fn mirror_yaml(&self, source: &str, destination: &str) -> String {
        let tags: Vec<String> = FLEET_TAGS.iter().map(|t| format!("'{t}'")).collect();
        let mut yaml = format!("defaults:\n  target: {destination}\nimages:\n");
        for repo in self.repositories() {
            yaml.push_str(&format!(
                "  - from: {source}/{repo}\n    tags: [{}]\n",
                tags.join(", ")
            ));
        }
        yaml
    }

    /// `skopeo sync --src yaml`'s file.
    fn skopeo_yaml(&self, source: &str, cert_dir: &std::path::Path) -> String {
        let tags: Vec<String> = FLEET_TAGS.iter().map(|t| format!("'{t}'")).collect();
        let mut yaml = format!(
            "'{source}':\n  cert-dir: '{}'\n  images:\n",
            cert_dir.display()
        );
        for repo in self.repositories() {
            yaml.push_str(&format!("    {repo}: [{}]\n", tags.join(", ")));
        }
        yaml
    }
}

/// What crossed in one run, from the registries' access logs.
#[derive(Debug, Default)]
struct Traffic {
    /// Blob bytes the source served (`GET .../blobs/...`, 200).
    pulled: u64,
    /// Blob uploads the destination completed (`PUT .../blobs/uploads/...`, 201).
    uploads: usize,
    /// Cross-repository mounts the destination made (`POST ...?mount=`, 201).
    mounts: usize,
}

impl Traffic {
    /// What crossed, against the fleet's distinct blobs, for the report.
    fn describe(&self, fleet: &Fleet) -> String {
        let (distinct, distinct_bytes) = fleet.distinct_blobs();
        format!(
            "{:.0} MB of blobs pulled from the source (the fleet's distinct blobs: {distinct}, {:.0} MB); {} blob uploads and {} mounts at the destination ({} repository-blob pairs)",
            self.pulled as f64 / 1e6,
            distinct_bytes as f64 / 1e6,
            self.uploads,
            self.mounts,
            fleet.blobs_per_repository(),
        )
    }
}

/// `(method, path, status, size)` of a combined-format access log line.
fn access_log_entry(line: &str) -> Option<(&str, &str, u16, u64)> {
    let (_, rest) = line.split_once("] \"")?;
    let (request, rest) = rest.split_once('"')?;
    let mut request = request.split(' ');
    let (method, path) = (request.next()?, request.next()?);
    let mut fields = rest.split_whitespace();
    let status = fields.next()?.parse().ok()?;
    let size = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    Some((method, path, status, size))
}

/// Blob bytes the source served since its last reset.
fn pulled(src: &Endpoint<'_>) -> u64 {
    src.log_lines()
        .iter()
        .filter_map(|line| access_log_entry(line))
        .filter(|(method, path, status, _)| {
            *method == "GET" && *status == 200 && path.contains("/blobs/sha256:")
        })
        .map(|(_, _, _, size)| size)
        .sum()
}

/// What crossed into the ECR stand-in, from its gate's records.
fn gate_traffic(src: &Endpoint<'_>, gate: &EcrStandIn) -> Traffic {
    let mut traffic = Traffic {
        pulled: pulled(src),
        ..Traffic::default()
    };
    for request in gate.requests() {
        match (request.method.as_str(), request.status) {
            ("PUT", 201) if request.path.contains("/blobs/uploads/") => traffic.uploads += 1,
            ("POST", 201)
                if request
                    .query
                    .as_deref()
                    .is_some_and(|q| q.contains("mount=")) =>
            {
                traffic.mounts += 1;
            }
            _ => {}
        }
    }
    traffic
}

fn traffic(src: &Endpoint<'_>, dst: &Endpoint<'_>) -> Traffic {
    let mut traffic = Traffic {
        pulled: pulled(src),
        ..Traffic::default()
    };
    for line in dst.log_lines() {
        match access_log_entry(&line) {
            Some(("PUT", path, 201, _)) if path.contains("/blobs/uploads/") => {
                traffic.uploads += 1;
            }
            Some(("POST", path, 201, _)) if path.contains("mount=") => traffic.mounts += 1,
            _ => {}
        }
    }
    traffic
}

impl Bench {
    /// The fleet profile: each tool syncs the fleet cold, then warm, `runs`
    /// times. Returns a note per tool on what crossed in its first cold run.
    pub(crate) async fn run_fleet_profile(
        &self,
        src: &mut Endpoint<'_>,
        dst: &mut Endpoint<'_>,
        destination: &Registry,
        fleet: &Fleet,
        results: &mut Results,
    ) -> anyhow::Result<Vec<String>> {
        let profile = Profile::Fleet;
        let runs = self.args.runs;
        let label = |scenario: Scenario, tool: Tool, run: u32| {
            run_label(profile, scenario, tool, run, runs)
        };
        let mut notes = Vec::new();
        for run in 1..=runs {
            for &tool in &self.tools {
                let cold = self
                    .measure_fleet(tool, src, dst, destination, fleet, true)
                    .await;
                let cold = match cold {
                    Ok((measurement, traffic)) => {
                        if run == 1 {
                            notes.push(format!(
                                "fleet cold, {}: {}",
                                tool.name(),
                                traffic.describe(fleet)
                            ));
                        }
                        Ok(measurement)
                    }
                    Err(e) => Err(e),
                };
                let key = (profile, Scenario::FleetCold, tool);
                if !results.record(key, &label(Scenario::FleetCold, tool, run), cold) {
                    results.fail(format!(
                        "{}: not run, the cold run failed",
                        label(Scenario::FleetWarm, tool, run)
                    ));
                    continue;
                }
                let warm = self
                    .measure_fleet(tool, src, dst, destination, fleet, false)
                    .await
                    .map(|(measurement, _)| measurement);
                let key = (profile, Scenario::FleetWarm, tool);
                results.record(key, &label(Scenario::FleetWarm, tool, run), warm);
            }
        }
        destination.wipe_storage()?;
        Ok(notes)
    }

    /// `skopeo sync --all` of the fleet from `source` (the YAML names the
    /// bench's CA for it) to `destination` reached with `options`.
    fn skopeo_sync(
        &self,
        fleet: &Fleet,
        source: &str,
        options: &[OsString],
        destination: &str,
    ) -> anyhow::Result<Vec<OsString>> {
        let file = self.workdir.path().join("fleet-skopeo.yaml");
        std::fs::write(&file, fleet.skopeo_yaml(source, &self.ca.cert_dir()))?;
        let mut command = self.skopeo_base();
        command.extend(["sync", "--all", "--src", "yaml", "--dest", "docker"].map(OsString::from));
        command.extend(options.iter().cloned());
        command.push(file.into());
        command.push(destination.into());
        Ok(command)
    }

    /// One sync of the fleet by `tool`, onto an emptied destination when
    /// `cold`; fails unless every tag is at the destination afterwards.
    async fn measure_fleet(
        &self,
        tool: Tool,
        src: &mut Endpoint<'_>,
        dst: &mut Endpoint<'_>,
        destination: &Registry,
        fleet: &Fleet,
        cold: bool,
    ) -> anyhow::Result<(Measurement, Traffic)> {
        if cold && let Some(first) = fleet.images.first() {
            wipe(destination, first).await?;
        }
        let dir = self.workdir.path();
        let command: Vec<OsString> = match tool {
            Tool::Mirror => {
                let file = dir.join("fleet-mirror.yaml");
                std::fs::write(&file, fleet.mirror_yaml(&src.host, &dst.host))?;
                vec![
                    self.mirror.clone().into(),
                    "sync".into(),
                    file.into(),
                    "--ca-cert".into(),
                    self.ca.ca_path().into(),
                    "--json".into(),
                ]
            }
            Tool::Skopeo => {
                let destination = ["--dest-cert-dir".into(), self.ca.cert_dir().into()];
                self.skopeo_sync(fleet, &src.host, &destination, &dst.host)?
            }
        };
        let bytes = if cold { fleet.distinct_blobs().1 } else { 0 };
        let measurement = self
            .timed(&command, &[], Some(&mut *src), Some(&mut *dst), bytes)
            .await?;
        let traffic = traffic(src, dst);
        for corpus in &fleet.images {
            verify(&destination.host(), &PushAuth::Anonymous, corpus)
                .await
                .with_context(|| {
                    format!(
                        "the destination does not hold {}:{}",
                        corpus.repo, corpus.tag
                    )
                })?;
        }
        Ok((measurement, traffic))
    }
}

impl Bench {
    /// The fleet into the ECR stand-in: each tool syncs it cold onto a fresh
    /// stand-in with blob mounting on, then onto one with it off, `runs`
    /// times. Returns a note per tool and setting on what crossed in its
    /// first run, and what mirror said about mounts.
    pub(crate) async fn run_fleet_ecr_profile(
        &self,
        src: &mut Endpoint<'_>,
        fleet: &Fleet,
        results: &mut Results,
    ) -> Vec<String> {
        let profile = Profile::FleetEcr;
        let runs = self.args.runs;
        let mut notes = Vec::new();
        for run in 1..=runs {
            for (scenario, mounting) in [
                (Scenario::FleetMountsOn, true),
                (Scenario::FleetMountsOff, false),
            ] {
                for &tool in &self.tools {
                    let label = run_label(profile, scenario, tool, run, runs);
                    let outcome =
                        match EcrDestination::start(self.moto_server.as_deref(), mounting).await {
                            Ok(ecr) => self.measure_fleet_ecr(tool, src, &ecr, fleet).await,
                            Err(e) => Err(e.context("starting the ECR stand-in")),
                        };
                    let outcome = outcome.map(|(measurement, traffic, said)| {
                        if run == 1 {
                            notes.push(format!(
                                "{}, {}: {}{}",
                                scenario.name(),
                                tool.name(),
                                traffic.describe(fleet),
                                said.map(|line| format!("; mirror said: `{line}`"))
                                    .unwrap_or_default(),
                            ));
                        }
                        measurement
                    });
                    results.record((profile, scenario, tool), &label, outcome);
                }
            }
        }
        notes
    }

    /// One cold sync of the fleet by `tool` into the fresh stand-in `ecr`;
    /// fails unless every tag is there afterwards. Also returns what crossed
    /// and mirror's line about mounts, if it printed one.
    async fn measure_fleet_ecr(
        &self,
        tool: Tool,
        src: &mut Endpoint<'_>,
        ecr: &EcrDestination,
        fleet: &Fleet,
    ) -> anyhow::Result<(Measurement, Traffic, Option<String>)> {
        let dir = self.workdir.path();
        let (command, envs): (Vec<OsString>, _) = match tool {
            Tool::Mirror => {
                let file = dir.join("fleet-ecr-mirror.yaml");
                std::fs::write(&file, fleet.mirror_yaml(&src.host, "ecr"))?;
                let command = vec![
                    self.mirror.clone().into(),
                    "sync".into(),
                    file.into(),
                    "--ca-cert".into(),
                    self.ca.ca_path().into(),
                    "--registry-endpoint".into(),
                    ecr.stand_in.endpoint_arg().into(),
                    "--json".into(),
                ];
                (command, ecr.stand_in.aws_env(&ecr.moto))
            }
            // What a skopeo user does first: create each repository and get
            // the password, here before the clock starts.
            Tool::Skopeo => {
                for repository in fleet.repositories() {
                    ecr.moto
                        .create_repository(repository, "MUTABLE")
                        .await
                        .with_context(|| format!("creating {repository} for skopeo"))?;
                }
                let (user, password, _) = ecr
                    .moto
                    .get_authorization_token()
                    .await
                    .context("fetching the ECR password for skopeo")?;
                let destination = [
                    "--dest-tls-verify=false".into(),
                    "--dest-creds".into(),
                    format!("{user}:{password}").into(),
                ];
                let command =
                    self.skopeo_sync(fleet, &src.host, &destination, &ecr.stand_in.host())?;
                (command, Vec::new())
            }
        };
        let mut dst = Endpoint {
            host: ecr.stand_in.host(),
            tls: false,
            counter: Counter::Gate(&ecr.stand_in),
        };
        ecr.moto.clear_calls();
        let mut measurement = self
            .timed(
                &command,
                &envs,
                Some(&mut *src),
                Some(&mut dst),
                fleet.distinct_blobs().1,
            )
            .await?;
        measurement.aws = aws_calls(&ecr.moto);
        let traffic = gate_traffic(src, &ecr.stand_in);
        let said = std::fs::read_to_string(dir.join("stderr.txt"))
            .unwrap_or_default()
            .lines()
            .find(|line| line.contains("cross-repository mounts"))
            .map(str::to_owned);
        for corpus in &fleet.images {
            verify(&ecr.stand_in.host(), &ecr.stand_in.auth(), corpus)
                .await
                .with_context(|| {
                    format!(
                        "the ECR stand-in does not hold {}:{}",
                        corpus.repo, corpus.tag
                    )
                })?;
        }
        Ok((measurement, traffic, said))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines_are_read() {
        let line = r#"127.0.0.1 - - [01/Dec/2026:04:40:00 +0000] "PUT /v2/fleet0/blobs/uploads/abc?digest=sha256%3A00 HTTP/2.0" 201 0 "" "mirror""#;
        assert_eq!(
            access_log_entry(line),
            Some((
                "PUT",
                "/v2/fleet0/blobs/uploads/abc?digest=sha256%3A00",
                201,
                0
            ))
        );
        let line = r#"127.0.0.1 - - [01/Dec/2026:04:40:00 +0000] "GET /v2/fleet0/blobs/sha256:00 HTTP/2.0" 200 1234 "" "skopeo""#;
        assert_eq!(
            access_log_entry(line),
            Some(("GET", "/v2/fleet0/blobs/sha256:00", 200, 1234))
        );
        assert_eq!(access_log_entry("time=x level=info msg=started"), None);
    }
}
