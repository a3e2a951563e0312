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
use mirror_testkit::{ImageSpec, PlatformSpec, PushAuth, PushTarget, Registry};

use crate::args::{Profile, Scenario, Tool, run_label};
use crate::checks::{verify, wipe};
use crate::measure::{Endpoint, Measurement, Results};
use crate::scenarios::{Bench, Corpus};

pub(crate) const FLEET_REPOSITORIES: usize = 20;
pub(crate) const FLEET_TAGS: [&str; 3] = ["1", "2", "3"];
/// Seeds every image's base layers: the blobs the whole fleet shares.
const FLEET_BASE_SEED: u64 = 0x00f1_ee70;

/// How the fleet profile is set up, for the report.
pub(crate) const FLEET_CONDITION: &str = "fleet: 20 repositories x 3 tags, each tag an index of 2 platforms (a 24-25 MB base layer shared by the whole fleet, a 1 MB and an 8 KB layer of its own), between the loopback HTTPS registries; mirror runs `mirror sync FILE --ca-cert CA` (targets named by the file), skopeo `skopeo sync --all --src yaml --dest docker --dest-cert-dir DIR FILE HOST` (the YAML's cert-dir for the source); cold = empty destination, warm = the same sync again; MB/s = distinct blob bytes / wall time";

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

fn traffic(src: &Endpoint<'_>, dst: &Endpoint<'_>) -> Traffic {
    let mut traffic = Traffic::default();
    for line in src.log_lines() {
        if let Some(("GET", path, 200, size)) = access_log_entry(&line)
            && path.contains("/blobs/sha256:")
        {
            traffic.pulled += size;
        }
    }
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
        let (distinct, distinct_bytes) = fleet.distinct_blobs();
        for run in 1..=runs {
            for &tool in &self.tools {
                let cold = self
                    .measure_fleet(tool, src, dst, destination, fleet, true)
                    .await;
                let cold = match cold {
                    Ok((measurement, traffic)) => {
                        if run == 1 {
                            notes.push(format!(
                                "fleet cold, {}: {:.0} MB of blobs pulled from the source (the fleet's distinct blobs: {distinct}, {:.0} MB); {} blob uploads and {} mounts at the destination ({} repository-blob pairs)",
                                tool.name(),
                                traffic.pulled as f64 / 1e6,
                                distinct_bytes as f64 / 1e6,
                                traffic.uploads,
                                traffic.mounts,
                                fleet.blobs_per_repository(),
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
                let file = dir.join("fleet-skopeo.yaml");
                std::fs::write(&file, fleet.skopeo_yaml(&src.host, &self.ca.cert_dir()))?;
                let mut command = self.skopeo_base();
                command.extend(
                    [
                        "sync",
                        "--all",
                        "--src",
                        "yaml",
                        "--dest",
                        "docker",
                        "--dest-cert-dir",
                    ]
                    .map(OsString::from),
                );
                command.push(self.ca.cert_dir().into());
                command.push(file.into());
                command.push(dst.host.clone().into());
                command
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
