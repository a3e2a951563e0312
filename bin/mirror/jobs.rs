//! Copy jobs: `mirror IMAGE...` (into the caller's ECR registry), `mirror copy
//! SRC DST` (any registry; ECR hosts get ECR's auth and manners) and `mirror
//! verify`. Several images run concurrently under the engine's shared bounds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mirror_ecr::{EcrAuth, EcrDestination, EcrHost, Pacer, RepositorySettings};
use mirror_engine::{
    CopyOptions, CopyReport, CopyRequest, Destination, Engine, EngineOptions, RegistryEndpoint,
    Source,
};
use mirror_layout::Location;
use mirror_oci::Reference;
use mirror_registry::{Credentials, RegistryClient, Repository};
use serde_json::json;

use crate::cli::{CommonCopyArgs, CopyArgs, EcrArgs, MirrorArgs, TransportArgs, VerifyArgs};
use crate::progress::{Mode, Progress};
use crate::{
    Failure, client, destination_reference, parse_credentials, parse_reference, requests_json,
    source_reference, summary,
};

/// One end of a copy: a registry repository or a local layout/archive.
#[derive(Debug, Clone)]
enum End {
    Registry(Reference),
    Local(Location),
}

impl End {
    /// skopeo-style transports (`oci:`, `oci-archive:`, `docker-archive:`,
    /// `docker://`); anything else is a registry reference.
    fn parse(text: &str, what: &str) -> Result<Self, Failure> {
        match Location::parse(text).map_err(|e| Failure::usage(format!("{what} `{text}`: {e}")))? {
            Location::Registry(r) => Ok(Self::Registry(parse_reference(&r, what)?)),
            local => Ok(Self::Local(local)),
        }
    }

    fn label(&self) -> String {
        match self {
            Self::Registry(r) => r.to_string(),
            Self::Local(l) => l.to_string(),
        }
    }

    /// The tag this end names, if the user wrote one.
    fn explicit_tag(&self) -> Option<String> {
        match self {
            Self::Registry(r) => r
                .has_explicit_tag()
                .then(|| r.tag().map(str::to_owned))
                .flatten(),
            Self::Local(Location::OciDir { tag, .. } | Location::OciArchive { tag, .. }) => {
                tag.clone()
            }
            Self::Local(_) => None,
        }
    }

    /// What the engine asks this end for (a source) or writes as (a destination).
    fn engine_reference(&self) -> String {
        match self {
            Self::Registry(r) => r
                .digest()
                .map(ToString::to_string)
                .or_else(|| r.tag().map(str::to_owned))
                .unwrap_or_else(|| "latest".to_owned()),
            Self::Local(l) => l.reference(),
        }
    }
}

/// One image to copy.
struct Job {
    source: End,
    destination: End,
}

/// AWS state for one region: the ECR API client, registry credentials, pacing.
#[derive(Clone)]
struct EcrRegion {
    api: aws_sdk_ecr::Client,
    auth: Arc<EcrAuth>,
    pacer: Arc<Pacer>,
}

/// Test hook and escape hatch: ECR token lifetime in seconds, replacing the
/// `expiresAt` GetAuthorizationToken returns (refresh happens at half of it).
const TOKEN_LIFETIME_ENV: &str = "MIRROR_ECR_TOKEN_LIFETIME_SECS";

/// What a user without AWS can run instead of `mirror IMAGE...`: the first
/// image into a local archive named after it (it needs no credentials).
fn without_aws(images: &[String]) -> String {
    let image = images.first().map_or("IMAGE", String::as_str);
    if ["oci:", "oci-archive:", "docker-archive:"]
        .iter()
        .any(|t| image.starts_with(t))
    {
        return format!(
            "without AWS, `mirror copy {image} HOST/REPO:TAG` copies it to any other registry"
        );
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    let stem = last
        .split([':', '@'])
        .find(|part| !part.is_empty() && !part.starts_with('.'))
        .unwrap_or("image");
    format!(
        "without AWS, `mirror copy {image} oci-archive:{stem}.tar` copies it into a local archive (or give any registry as DST)"
    )
}

async fn ecr_region(region: Option<&str>, puts_per_second: f64) -> Result<EcrRegion, Failure> {
    let config = mirror_ecr::aws_config(region).await;
    if config.region().is_none() {
        return Err(Failure::usage(
            "no AWS region configured: pass --region (for example --region us-east-1) or set AWS_REGION / a profile region",
        ));
    }
    let api = aws_sdk_ecr::Client::new(&config);
    let lifetime = std::env::var(TOKEN_LIFETIME_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    Ok(EcrRegion {
        auth: EcrAuth::new(api.clone(), lifetime),
        api,
        pacer: Pacer::per_second(puts_per_second),
    })
}

fn settings(args: &EcrArgs) -> Result<RepositorySettings, Failure> {
    let mut tags = Vec::new();
    for entry in &args.repo_tags {
        let (k, v) = entry
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("--repo-tag `{entry}`: expected KEY=VALUE")))?;
        tags.push((k.to_owned(), v.to_owned()));
    }
    let settings = RepositorySettings {
        tag_mutability: args.tag_mutability.clone(),
        exclusion_filters: args.tag_mutability_exclusions.clone(),
        scan_on_push: args.scan_on_push.then_some(true),
        encryption: args.encryption.clone(),
        kms_key: args.kms_key.clone(),
        tags,
        no_create: args.no_create,
    };
    settings.validate()?;
    Ok(settings)
}

/// The repository name an image gets in ECR: its path without Docker Hub's
/// `library/` (python:3.10 -> python), under an optional prefix.
fn ecr_name(source: &Reference, prefix: Option<&str>) -> String {
    let path = if source.is_docker_hub() {
        source
            .repository()
            .strip_prefix("library/")
            .unwrap_or(source.repository())
    } else {
        source.repository()
    };
    format!("{}{path}", prefix.unwrap_or(""))
}

/// `--to NAME[:TAG]` split; the tag defaults to the source's.
fn split_to(to: &str) -> (String, Option<String>) {
    match to.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_owned(), Some(tag.to_owned())),
        _ => (to.to_owned(), None),
    }
}

fn ecr_destination(
    registry: &EcrHost,
    source: &End,
    to: Option<&str>,
    prefix: Option<&str>,
) -> Result<Reference, Failure> {
    let (name, tag) = match (to, source) {
        (Some(to), _) => {
            let (name, tag) = split_to(to);
            (format!("{}{name}", prefix.unwrap_or("")), tag)
        }
        (None, End::Registry(source)) => (ecr_name(source, prefix), None),
        (None, End::Local(local)) => {
            return Err(Failure::usage(format!(
                "{local} has no repository name: add --to NAME[:TAG], for example --to backend-flask:latest"
            )));
        }
    };
    let source = match source {
        End::Registry(r) => r.clone(),
        // A local image keeps its layout tag, else `latest`.
        End::Local(_) => Reference::new(
            "localhost",
            "local",
            Some(source.explicit_tag().as_deref().unwrap_or("latest")),
            None,
        ),
    };
    let source = &source;
    mirror_ecr::check_repository_name(&name).map_err(Failure::usage)?;
    let reference = match (tag, source.digest(), source.has_explicit_tag()) {
        (Some(tag), _, _) => format!("{}/{name}:{tag}", registry.host),
        (None, _, true) | (None, None, _) => format!(
            "{}/{name}:{}",
            registry.host,
            source.tag().unwrap_or("latest")
        ),
        (None, Some(digest), false) => format!("{}/{name}@{digest}", registry.host),
    };
    parse_reference(&reference, "destination")
}

/// The caller's ECR registry, a registry client and its credentials (for
/// commands that read from ECR: rewrite-from).
pub(crate) async fn ecr_registry(
    region: Option<&str>,
    transport: &TransportArgs,
) -> Result<(EcrHost, RegistryClient, Arc<EcrAuth>), Failure> {
    let region = ecr_region(region, 10.0).await?;
    let registry = region.auth.registry().await?;
    Ok((registry, client(transport)?, region.auth))
}

/// Where `mirror IMAGE` puts an image in ECR (`python:3.10` -> `<registry>/python:3.10`).
pub(crate) fn ecr_target(
    registry: &EcrHost,
    source: &Reference,
    prefix: Option<&str>,
) -> Result<Reference, Failure> {
    ecr_destination(registry, &End::Registry(source.clone()), None, prefix)
}

/// `mirror IMAGE...`: into the caller's ECR registry.
pub(crate) async fn mirror_to_ecr(args: MirrorArgs, quiet: bool) -> Result<(), Failure> {
    if args.to.is_some() && args.images.len() > 1 {
        return Err(Failure::usage(
            "--to names one repository: give one image, or use --prefix for several",
        ));
    }
    if args.copy.all_tags
        && let Some(to) = &args.to
        && split_to(to).1.is_some()
    {
        return Err(Failure::usage(format!(
            "--all-tags copies each tag to the same tag: give --to a repository name without a tag (not `{to}`)"
        )));
    }
    let settings = settings(&args.ecr)?;
    let without_aws = without_aws(&args.images);
    let region = ecr_region(
        args.ecr.region.as_deref(),
        args.ecr.manifest_puts_per_second,
    )
    .await
    .map_err(|mut f| {
        f.message = format!("{}; {without_aws}", f.message);
        f
    })?;
    let registry = region.auth.registry().await.map_err(|e| match e {
        mirror_ecr::EcrError::NoCredentials { .. } => {
            Failure::transfer(format!("{e}; {without_aws}"))
        }
        _ => Failure::from(e).hint(without_aws.clone()),
    })?;
    let mut jobs = Vec::new();
    for image in &args.images {
        let source = End::parse(image, "image")?;
        let destination = ecr_destination(
            &registry,
            &source,
            args.to.as_deref(),
            args.prefix.as_deref(),
        )?;
        jobs.push(Job {
            source,
            destination: End::Registry(destination),
        });
    }
    let mut regions = HashMap::new();
    regions.insert(registry.region.clone(), region);
    run_jobs(
        jobs,
        &args.copy,
        None,
        &args.ecr,
        settings,
        &args.transport,
        regions,
        quiet,
    )
    .await
}

/// `destination` named by a digest or a tag (a tag from a layout's ref name is
/// checked against the registry tag grammar).
fn named_by(destination: &Reference, reference: &str) -> Result<Reference, Failure> {
    match mirror_oci::parse_digest(reference) {
        Ok(digest) => Ok(destination.with_digest(digest)),
        Err(_) => parse_reference(
            &format!("{}:{reference}", destination.name()),
            "destination",
        ),
    }
}

/// The ref name of a layout's only image, if it has exactly one, named.
async fn only_ref_name(location: &Location) -> Option<String> {
    match mirror_layout::list(location).await.ok()?.as_slice() {
        [(Some(name), _)] => Some(name.clone()),
        _ => None,
    }
}

/// The `RepoTags` entry a docker-archive gets from its source when the
/// destination names none: a registry reference in Docker's familiar form
/// (`docker.io/library/python:3.10` -> `python:3.10`), a local image's
/// `NAME:TAG`; `None` (an untagged image) when there is no such name.
async fn docker_repo_tag_from(source: &End) -> Option<String> {
    match source {
        End::Registry(r) => r.tag().map(|tag| format!("{}:{tag}", r.familiar_name())),
        End::Local(l) => {
            let named = match l {
                Location::DockerArchive { reference, .. } => reference.clone(),
                _ => source.explicit_tag(),
            };
            let name = match named {
                Some(name) => name,
                None => only_ref_name(l).await?,
            };
            mirror_layout::repo_tag_of(&name)
        }
    }
}

/// `mirror copy SRC DST`.
pub(crate) async fn copy(args: CopyArgs, quiet: bool) -> Result<(), Failure> {
    let source = End::parse(&args.source, "source")?;
    let destination = End::parse(&args.destination, "destination")?;
    let destination = if args.copy.all_tags {
        // Each tag is named per job (`expand_all_tags`).
        if destination.explicit_tag().is_some()
            || matches!(&destination, End::Registry(d) if d.digest().is_some())
        {
            return Err(Failure::usage(format!(
                "--all-tags copies each tag to the same tag: name the destination without one (not `{}`)",
                args.destination
            )));
        }
        destination
    } else {
        name_destination(&source, destination, &args.destination).await?
    };
    let settings = settings(&args.ecr)?;
    run_jobs(
        vec![Job {
            source,
            destination,
        }],
        &args.copy,
        args.dest_creds.as_deref(),
        &args.ecr,
        settings,
        &args.transport,
        HashMap::new(),
        quiet,
    )
    .await
}

/// The destination as the copy will write it: a registry destination without
/// a tag keeps the source's (or a layout's only ref name), a layout or archive
/// without one takes the source's tag, a docker-archive gets Docker's
/// `RepoTags` entry (as given, in familiar form, else the source's name).
async fn name_destination(source: &End, destination: End, given: &str) -> Result<End, Failure> {
    Ok(match destination {
        End::Registry(d) => {
            let reference = match source {
                End::Registry(s) => destination_reference(s, &d),
                End::Local(_) if d.has_explicit_tag() || d.digest().is_some() => d.reference_str(),
                End::Local(l) => match source.explicit_tag() {
                    Some(tag) => tag,
                    None => only_ref_name(l)
                        .await
                        .unwrap_or_else(|| "latest".to_owned()),
                },
            };
            End::Registry(named_by(&d, &reference)?)
        }
        End::Local(Location::OciDir { path, tag: None }) => End::Local(Location::OciDir {
            path,
            tag: source.explicit_tag(),
        }),
        End::Local(Location::OciArchive { path, tag: None }) => End::Local(Location::OciArchive {
            path,
            tag: source.explicit_tag(),
        }),
        End::Local(Location::DockerArchive { path, reference }) => {
            let reference = match reference {
                Some(r) => Some(
                    mirror_layout::repo_tag(&r)
                        .map_err(|e| Failure::usage(format!("destination `{given}`: {e}")))?,
                ),
                None => docker_repo_tag_from(source).await,
            };
            End::Local(Location::DockerArchive { path, reference })
        }
        other => other,
    })
}

/// Builds registry endpoints for both sides, ECR ones with ECR's auth.
struct Endpoints<'a> {
    client: RegistryClient,
    regions: HashMap<String, EcrRegion>,
    ecr: &'a EcrArgs,
}

impl Endpoints<'_> {
    async fn region(&mut self, host: &EcrHost) -> Result<EcrRegion, Failure> {
        if let Some(r) = self.regions.get(&host.region) {
            return Ok(r.clone());
        }
        let r = ecr_region(Some(&host.region), self.ecr.manifest_puts_per_second).await?;
        self.regions.insert(host.region.clone(), r.clone());
        Ok(r)
    }

    async fn repository(
        &mut self,
        reference: &Reference,
        creds: Option<Credentials>,
    ) -> Result<(Repository, Option<EcrRegion>), Failure> {
        match EcrHost::parse(reference.registry()) {
            Some(host) if creds.is_none() => {
                let region = self.region(&host).await?;
                let repo = self
                    .client
                    .repository_with_provider(reference, region.auth.clone())?;
                Ok((repo, Some(region)))
            }
            _ => Ok((self.client.repository(reference, creds)?, None)),
        }
    }
}

/// `--all-tags`: one job per tag of each source repository (listed in pages
/// of at most 1000, ECR's limit), each to the same tag at the destination.
async fn expand_all_tags(
    jobs: Vec<Job>,
    common: &CommonCopyArgs,
    endpoints: &mut Endpoints<'_>,
    src_creds: Option<Credentials>,
) -> Result<Vec<Job>, Failure> {
    let filter = common
        .tag_regex
        .as_deref()
        .map(|re| {
            regex::Regex::new(&format!("^(?:{re})$"))
                .map_err(|e| Failure::usage(format!("--tag-regex `{re}`: {e}")))
        })
        .transpose()?;
    let mut expanded = Vec::new();
    for job in jobs {
        let End::Registry(source) = &job.source else {
            return Err(Failure::usage(format!(
                "--all-tags lists a registry repository's tags; {} is a local image",
                job.source.label()
            )));
        };
        if source.has_explicit_tag() || source.digest().is_some() {
            return Err(Failure::usage(format!(
                "--all-tags copies every tag of a repository: give `{}`, not `{source}`",
                source.name()
            )));
        }
        let (repo, _) = endpoints.repository(source, src_creds.clone()).await?;
        let tags = repo
            .tags()
            .await
            .map_err(|e| Failure::from(e).context(format!("source {}", source.name())))?;
        let tags: Vec<String> = tags
            .into_iter()
            .filter(|t| filter.as_ref().is_none_or(|f| f.is_match(t)))
            .collect();
        if tags.is_empty() {
            return Err(Failure::transfer(format!(
                "source {}: no tag{} to copy",
                source.name(),
                common
                    .tag_regex
                    .as_deref()
                    .map(|re| format!(" matches --tag-regex `{re}`"))
                    .unwrap_or_default()
            )));
        }
        for tag in tags {
            let destination = match &job.destination {
                End::Registry(d) => End::Registry(parse_reference(
                    &format!("{}:{tag}", d.name()),
                    "destination",
                )?),
                End::Local(Location::OciDir { path, .. }) => End::Local(Location::OciDir {
                    path: path.clone(),
                    tag: Some(tag.clone()),
                }),
                End::Local(Location::OciArchive { path, .. }) => End::Local(Location::OciArchive {
                    path: path.clone(),
                    tag: Some(tag.clone()),
                }),
                End::Local(other) => {
                    return Err(Failure::usage(format!(
                        "--all-tags writes to a registry, an oci: layout or an oci-archive:, not {other}"
                    )));
                }
            };
            expanded.push(Job {
                source: End::Registry(source.with_tag(&tag)),
                destination,
            });
        }
    }
    Ok(expanded)
}

#[allow(clippy::too_many_arguments)]
async fn run_jobs(
    jobs: Vec<Job>,
    common: &CommonCopyArgs,
    dest_creds: Option<&str>,
    ecr: &EcrArgs,
    settings: RepositorySettings,
    transport: &TransportArgs,
    regions: HashMap<String, EcrRegion>,
    quiet: bool,
) -> Result<(), Failure> {
    let src_creds = parse_credentials(common.src_creds.as_deref(), "--src-creds")?;
    let dest_creds = parse_credentials(dest_creds, "--dest-creds")?;
    let mut endpoints = Endpoints {
        client: client(transport)?,
        regions,
        ecr,
    };
    let jobs = if common.all_tags {
        expand_all_tags(jobs, common, &mut endpoints, src_creds.clone()).await?
    } else {
        jobs
    };
    let progress = Progress::new(Mode::detect(quiet));
    let engine = Engine::new(
        EngineOptions {
            max_concurrent_blobs: common.max_concurrent_blobs,
            blob_attempts: transport.retries,
            max_manifests: common.max_manifests,
            max_retry_after: Duration::from_secs(transport.max_retry_after),
            ..EngineOptions::default()
        },
        progress.clone(),
    );
    let mut requests = Vec::new();
    let mut ecr_destinations: Vec<Option<Arc<EcrDestination>>> = Vec::new();
    let mut source_repos: Vec<Option<Repository>> = Vec::new();
    for job in &jobs {
        let source: Arc<dyn Source> = match &job.source {
            End::Registry(r) => {
                let (repo, _) = endpoints.repository(r, src_creds.clone()).await?;
                source_repos.push(Some(repo.clone()));
                Arc::new(RegistryEndpoint::new(repo))
            }
            End::Local(l) => {
                source_repos.push(None);
                mirror_layout::open_source(l).await?
            }
        };
        let destination: Arc<dyn Destination> = match &job.destination {
            End::Registry(r) => match endpoints.repository(r, dest_creds.clone()).await? {
                (repo, Some(region)) => {
                    let d = Arc::new(EcrDestination::new(
                        RegistryEndpoint::new(repo),
                        region.api.clone(),
                        settings.clone(),
                        region.pacer.clone(),
                    ));
                    ecr_destinations.push(Some(d.clone()));
                    d
                }
                (repo, None) => {
                    ecr_destinations.push(None);
                    Arc::new(RegistryEndpoint::new(repo))
                }
            },
            End::Local(l) => {
                ecr_destinations.push(None);
                if common.dry_run {
                    return Err(Failure::usage(
                        "--dry-run is for registry destinations; a local layout is only written by a real copy",
                    ));
                }
                mirror_layout::open_destination(l)
                    .await
                    .map_err(|e| Failure::from(e).context(format!("destination `{l}`")))?
            }
        };
        requests.push(CopyRequest {
            source,
            source_reference: job.source.engine_reference(),
            destination,
            destination_reference: job.destination.engine_reference(),
            source_label: job.source.label(),
            destination_label: job.destination.label(),
            options: CopyOptions {
                platforms: common.platforms.clone(),
                include_foreign: common.include_foreign,
                dry_run: common.dry_run,
            },
        });
    }
    progress.spawn_ticker();
    let results = futures::future::join_all(requests.into_iter().map(|r| engine.copy(r))).await;
    progress.stop();
    // An up-to-date tag needs no repository call; when settings were asked for,
    // still read the repository back so that drift is reported.
    if settings != RepositorySettings::default() && !common.dry_run {
        for d in ecr_destinations.iter().flatten() {
            if d.repository_outcome().is_none() {
                let _ = d.ensure_repository().await;
            }
        }
    }
    let stats = endpoints.client.stats().snapshot();

    let mut failures = Vec::new();
    let mut usage_failures = 0;
    let mut single_error = None;
    let mut json_reports = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        let job = &jobs[i];
        let repo_note = ecr_destinations[i]
            .as_ref()
            .and_then(|d| d.repository_outcome().cloned());
        // What Docker sees of a docker-archive, read back from the file.
        let result = match (result, &job.destination) {
            (Ok(report), End::Local(Location::DockerArchive { path, .. })) => {
                match mirror_layout::saved_image(path, &report.digest).await {
                    Ok(saved) => Ok((report, Some(saved))),
                    Err(e) => Err(Failure::from(e).context(job.destination.label())),
                }
            }
            (Ok(report), _) => Ok((report, None)),
            (Err(error), _) => Err(Failure::from(error)),
        };
        match result {
            Ok((report, saved)) => {
                if !quiet {
                    if let Some(outcome) = &repo_note {
                        repository_lines(job, outcome, &settings);
                    }
                    eprint!("{}", summary(&report, &stats, &common.platforms));
                    if let (Some(limit), End::Registry(r)) = (
                        source_repos[i].as_ref().and_then(Repository::rate_limit),
                        &job.source,
                    ) {
                        eprintln!("  pull limit at {}: {limit}", r.registry());
                    }
                    if let (Some(saved), End::Local(location)) = (&saved, &job.destination) {
                        eprintln!("{}", docker_archive_note(location, saved, &report));
                    }
                }
                let mut value = report_json(
                    &report,
                    &stats,
                    source_repos[i].as_ref(),
                    repo_note.as_ref(),
                );
                if let (Some(saved), Some(object)) = (&saved, value.as_object_mut()) {
                    object.insert(
                        "docker_archive".into(),
                        json!({
                            "image_id": saved.image_id.to_string(),
                            "repo_tags": saved.repo_tags,
                        }),
                    );
                }
                json_reports.push(value);
            }
            Err(error) => {
                let mut value = error.json();
                if let Some(object) = value.as_object_mut() {
                    object.insert("source".into(), json!(job.source.label()));
                    object.insert("destination".into(), json!(job.destination.label()));
                }
                json_reports.push(value);
                failures.push(job.source.label());
                usage_failures += usize::from(error.exit == crate::failure::Exit::Usage);
                if jobs.len() > 1 {
                    error.print(Some(&format!(
                        "{} -> {}",
                        job.source.label(),
                        job.destination.label()
                    )));
                } else {
                    single_error = Some(error);
                }
            }
        }
    }
    if !quiet {
        for note in engine.mount_notes() {
            eprintln!("note: {note}");
        }
    }
    if common.json {
        if json_reports.len() == 1 {
            println!("{}", json_reports[0]);
        } else {
            println!("{}", serde_json::Value::Array(json_reports));
        }
    }
    // Usage errors only (a request that cannot be carried out as asked): 2.
    let code = if usage_failures > 0 && usage_failures == failures.len() {
        Failure::usage
    } else {
        Failure::transfer
    };
    if failures.is_empty() {
        Ok(())
    } else if let Some(error) = single_error {
        Err(error)
    } else {
        Err(code(format!(
            "{} of {} images failed: {}",
            failures.len(),
            jobs.len(),
            failures.join(", ")
        )))
    }
}

/// The line that says plainly what a docker-archive keeps and what it does not.
fn docker_archive_note(
    location: &Location,
    saved: &mirror_layout::SavedImage,
    report: &CopyReport,
) -> String {
    let file = location
        .path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let oci = match location.reference().as_str() {
        "" => format!("oci-archive:{file}"),
        tag => format!("oci-archive:{file}:{tag}"),
    };
    format!(
        "note: docker-archive:{file} keeps the image config (image ID {}) and layers; docker load \
         (classic image store) and skopeo will not know the manifest digest {} (mirror keeps it \
         when it reads the file, as docker-archive:{file} or {oci})",
        saved.image_id, report.digest
    )
}

fn repository_lines(
    job: &Job,
    outcome: &mirror_ecr::RepositoryOutcome,
    settings: &RepositorySettings,
) {
    let End::Registry(destination) = &job.destination else {
        return;
    };
    let repo = format!("{}/{}", destination.registry(), destination.repository());
    if outcome.created {
        eprintln!(
            "created repository {repo} (tag mutability {})",
            settings.tag_mutability.as_deref().unwrap_or("MUTABLE")
        );
    }
    for drift in &outcome.drift {
        eprintln!("note: repository {repo} exists and its {drift}; left unchanged");
    }
}

fn report_json(
    report: &CopyReport,
    stats: &mirror_registry::StatsSnapshot,
    source: Option<&Repository>,
    repository: Option<&mirror_ecr::RepositoryOutcome>,
) -> serde_json::Value {
    let mut value = serde_json::to_value(report).unwrap_or_else(|_| json!({}));
    if let Some(object) = value.as_object_mut() {
        object.insert("retries".into(), json!(report.retries + stats.retries));
        object.insert("requests".into(), requests_json(stats));
        // A warm run decides on one HEAD per side and never reads the index:
        // its platforms are unknown (null), not none.
        if report.up_to_date && report.kind == "index" && report.platforms.is_empty() {
            object.insert("platforms".into(), serde_json::Value::Null);
        }
        object.insert(
            "rate_limit".into(),
            source.and_then(Repository::rate_limit).map_or(serde_json::Value::Null, |r| {
                json!({"limit": r.limit, "remaining": r.remaining, "window_seconds": r.window_seconds})
            }),
        );
        if let Some(outcome) = repository {
            object.insert(
                "repository".into(),
                json!({"created": outcome.created, "drift": outcome.drift, "uri": outcome.uri}),
            );
        }
    }
    value
}

/// `mirror verify IMAGE [DST]`.
pub(crate) async fn verify(args: VerifyArgs) -> Result<(), Failure> {
    let source = parse_reference(&args.image, "image")?;
    let src_creds = parse_credentials(args.src_creds.as_deref(), "--src-creds")?;
    let dest_creds = parse_credentials(args.dest_creds.as_deref(), "--dest-creds")?;
    let ecr_args = EcrArgs {
        region: args.region.clone(),
        tag_mutability: None,
        tag_mutability_exclusions: Vec::new(),
        scan_on_push: false,
        encryption: None,
        kms_key: None,
        repo_tags: Vec::new(),
        no_create: true,
        manifest_puts_per_second: 10.0,
    };
    let mut endpoints = Endpoints {
        client: client(&args.transport)?,
        regions: HashMap::new(),
        ecr: &ecr_args,
    };
    let destination = match &args.destination {
        Some(d) => {
            let d = parse_reference(d, "destination")?;
            named_by(&d, &destination_reference(&source, &d))?
        }
        None => {
            let region = ecr_region(args.region.as_deref(), 10.0).await?;
            let registry = region.auth.registry().await?;
            endpoints.regions.insert(registry.region.clone(), region);
            ecr_destination(
                &registry,
                &End::Registry(source.clone()),
                args.to.as_deref(),
                args.prefix.as_deref(),
            )?
        }
    };
    let (src, _) = endpoints.repository(&source, src_creds).await?;
    let (dst, dst_region) = endpoints.repository(&destination, dest_creds).await?;
    let src_ref = source_reference(&source);
    let dst_ref = destination
        .digest()
        .map(ToString::to_string)
        .or_else(|| destination.tag().map(str::to_owned))
        .unwrap_or_else(|| "latest".to_owned());
    let src_head = src
        .head_manifest(&src_ref)
        .await?
        .ok_or_else(|| Failure::transfer(format!("{source} was not found at the source")))?;
    let dst_head = dst.head_manifest(&dst_ref).await?;
    let mut rows = Vec::new();
    let mut all_match = dst_head.as_ref().map(|h| &h.digest) == Some(&src_head.digest);
    rows.push(json!({
        "what": "tag",
        "source": src_head.digest.to_string(),
        "destination": dst_head.as_ref().map(|h| h.digest.to_string()),
        "match": all_match,
    }));
    let root = src
        .get_manifest(src_head.digest.as_ref(), Some(&src_head.digest))
        .await?;
    for child in root.children() {
        let present = dst.head_manifest(child.digest().as_ref()).await?.is_some();
        all_match &= present;
        rows.push(json!({
            "what": child.platform().as_ref().map(mirror_oci::platform_string).unwrap_or_else(|| "manifest".to_owned()),
            "source": child.digest().to_string(),
            "destination": present.then(|| child.digest().to_string()),
            "match": present,
        }));
    }
    let mut images = Vec::new();
    if let Some(region) = dst_region {
        let output = region
            .api
            .describe_images()
            .repository_name(destination.repository())
            .send()
            .await;
        match output {
            Ok(output) => {
                for detail in output.image_details() {
                    images.push(json!({
                        "digest": detail.image_digest(),
                        "tags": detail.image_tags(),
                        "pushed_at": detail.image_pushed_at().map(|t| t.to_string()),
                        "size": detail.image_size_in_bytes(),
                    }));
                }
            }
            Err(error) => {
                eprintln!(
                    "note: DescribeImages on {} failed: {}",
                    destination.repository(),
                    aws_sdk_ecr::error::DisplayErrorContext(&error)
                );
            }
        }
    }
    if args.json {
        println!(
            "{}",
            json!({"source": source.to_string(), "destination": destination.to_string(), "match": all_match, "manifests": rows, "images": images})
        );
    } else {
        println!("{source} -> {destination}");
        for row in &rows {
            println!(
                "  {:<16} {} {}",
                row["what"].as_str().unwrap_or(""),
                row["source"].as_str().unwrap_or(""),
                if row["match"].as_bool().unwrap_or(false) {
                    "ok"
                } else {
                    "MISSING OR DIFFERENT"
                }
            );
        }
        for image in &images {
            println!(
                "  in ECR: {} tags {} pushed {} size {}",
                image["digest"].as_str().unwrap_or(""),
                image["tags"],
                image["pushed_at"].as_str().unwrap_or("?"),
                image["size"]
            );
        }
    }
    if all_match {
        Ok(())
    } else {
        Err(
            Failure::transfer(format!("{destination} does not match {source}")).hint(format!(
                "run `mirror copy {source} {destination}` (or `mirror {source}`) to bring it up to date"
            )),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_names_drop_library() {
        let r: Reference = "python:3.10-slim-buster".parse().unwrap();
        assert_eq!(ecr_name(&r, None), "python");
        assert_eq!(ecr_name(&r, Some("mirror/")), "mirror/python");
        let r: Reference = "ghcr.io/org/app:1".parse().unwrap();
        assert_eq!(ecr_name(&r, None), "org/app");
        assert_eq!(
            split_to("cruddur-python"),
            ("cruddur-python".to_owned(), None)
        );
        assert_eq!(
            split_to("team/python:3.10"),
            ("team/python".to_owned(), Some("3.10".to_owned()))
        );
    }
}
