//! `mirror IMAGE...`, `mirror copy SRC DST`, `mirror sync [FILE]` and `mirror
//! verify`: flags become a `mirror-sync` request and options, one library
//! call plans and runs it, and this module prints what came back and picks
//! the exit code. Hints that name flags or file keys live here and in
//! `failure.rs`, not in the library.

use std::path::PathBuf;
use std::sync::Arc;

use mirror_ecr::RepositorySettings;
use mirror_oci::{PlatformFilter, Reference};
use mirror_sync::report::{
    copy_summary, docker_archive_note, plan_json, plan_text, repository_lines, run_json,
    run_summary, tag_json,
};
use mirror_sync::{
    EcrOptions, Entry, HintTopic, ImageLocation, Outcome, Registries, Request, RunOptions,
    RunReport, Session, SyncError, SyncFile, TagFilter, TagResult, TagState, Tags, Target,
};
use serde_json::json;

use crate::cli::{
    CommonCopyArgs, CopyArgs, CopyCommandArgs, EcrArgs, MirrorArgs, SyncArgs, TransportArgs,
    VerifyArgs,
};
use crate::progress::{Mode, Progress};
use crate::{Failure, client, parse_credentials, parse_reference};

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

/// Which front end an error came from: hints name its flags or keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrontEnd {
    Mirror,
    Copy,
    Sync,
}

/// A library error as the CLI says it: the error with its causes, a hint in
/// this front end's words, the hints its types call for (`failure.rs`), the
/// exit code.
fn failure(error: SyncError, front: FrontEnd, images: &[String]) -> Failure {
    let hint = match (error.hint_topic(), front) {
        (Some(HintTopic::NameLocalImage), FrontEnd::Sync) => Some(
            "add `to: NAME[:TAG]` to the entry, for example `to: backend-flask:latest`".to_owned(),
        ),
        (Some(HintTopic::NameLocalImage), _) => {
            Some("add --to NAME[:TAG], for example --to backend-flask:latest".to_owned())
        }
        (Some(HintTopic::DropTheTag), FrontEnd::Sync) => {
            Some("drop the tag from `to:` (each selected tag keeps its own)".to_owned())
        }
        (Some(HintTopic::DropTheTag), FrontEnd::Mirror) => Some(
            "--all-tags copies each tag to the same tag: give --to a repository name without a tag"
                .to_owned(),
        ),
        (Some(HintTopic::DropTheTag), FrontEnd::Copy) => Some(
            "--all-tags copies each tag to the same tag: name the destination without one"
                .to_owned(),
        ),
        (Some(HintTopic::NameTheRepository), FrontEnd::Sync) => {
            Some("`tags:` selects from a repository: write `from:` without a tag".to_owned())
        }
        (Some(HintTopic::NameTheRepository), _) => {
            Some("--all-tags copies every tag of a repository: give it without a tag".to_owned())
        }
        // One line on purpose: what a newcomer without AWS sees first.
        (Some(HintTopic::Aws), FrontEnd::Mirror) => {
            let message = format!("{error}; {}", without_aws(images));
            let mut failure = Failure::from(error);
            failure.message = message;
            return failure;
        }
        (None, FrontEnd::Mirror) if matches!(error, SyncError::Aws(_)) => Some(without_aws(images)),
        (Some(HintTopic::Aws), _) => Some(
            "pass --region (for example --region us-east-1) or set AWS_REGION / AWS_PROFILE"
                .to_owned(),
        ),
        (None, _) => None,
    };
    let failure = Failure::from(error);
    match hint {
        Some(hint) => failure.hint(hint),
        None => failure,
    }
}

/// A failed tag as the CLI says it (`None` for a tag that did not fail).
fn tag_failure(tag: &TagResult) -> Option<Failure> {
    match &tag.outcome {
        Outcome::Failed(error) => Some(Failure::from(error.clone())),
        Outcome::Conflict { existing, wanted } => Some(
            Failure::transfer(mirror_sync::report::conflict_message(tag, existing, wanted))
                .hint("push under a new tag, or make the repository mutable"),
        ),
        _ => None,
    }
}

/// A tag's JSON, with `causes` and `hints` when it failed.
fn tag_value(
    tag: &TagResult,
    requests: Option<&mirror_registry::StatsSnapshot>,
) -> serde_json::Value {
    let mut value = tag_json(tag, requests);
    if let (Some(failure), Some(object)) = (tag_failure(tag), value.as_object_mut())
        && let Some(extra) = failure.json().as_object()
    {
        for (key, field) in extra {
            object.insert(key.clone(), field.clone());
        }
    }
    value
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

fn location(text: &str, what: &'static str) -> Result<ImageLocation, Failure> {
    ImageLocation::parse(text).map_err(|e| Failure::from(e).context(format!("{what} `{text}`")))
}

/// `--all-tags [--tag-regex RE]` as a tag selection.
fn selection(common: &CommonCopyArgs) -> Result<Tags, Failure> {
    if !common.all_tags {
        return Ok(Tags::Named);
    }
    let filter = match &common.tag_regex {
        Some(re) => TagFilter::all()
            .with_regex(re)
            .map_err(|e| Failure::usage(format!("--tag-regex: {e}")))?,
        None => TagFilter::all(),
    };
    Ok(Tags::Select(filter))
}

fn run_options(
    common: &CommonCopyArgs,
    transport: &TransportArgs,
    dest_creds: Option<&str>,
) -> Result<RunOptions, Failure> {
    Ok(RunOptions {
        source_credentials: parse_credentials(common.src.src_creds.as_deref(), "--src-creds")?,
        destination_credentials: parse_credentials(dest_creds, "--dest-creds")?,
        include_foreign: common.image.include_foreign,
        dry_run: common.dry_run,
        max_concurrent_blobs: common.max_concurrent_blobs,
        blob_attempts: transport.retries,
        max_concurrent_images: common.image.max_concurrent_images,
        max_manifests: common.image.max_manifests,
        max_retry_after: std::time::Duration::from_secs(transport.max_retry_after),
        referrers: common.image.referrers.clone(),
        require_signature: keyring(&common.image.require_signature)?,
        ..RunOptions::default()
    })
}

/// The keys of `--require-signature` (none given: no check).
fn keyring(keys: &[String]) -> Result<Option<Arc<mirror_signature::Keyring>>, Failure> {
    if keys.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(
        mirror_signature::Keyring::load(keys).map_err(Failure::from)?,
    )))
}

/// `mirror IMAGE...`: into the caller's ECR registry.
pub(crate) async fn mirror_to_ecr(args: MirrorArgs, quiet: bool) -> Result<(), Failure> {
    if args.to.is_some() && args.images.len() > 1 {
        return Err(Failure::usage(
            "--to names one repository: give one image, or use --prefix for several",
        ));
    }
    let copies = Copies::new(&args.flags)?;
    let mut images = Vec::new();
    for image in &args.images {
        images.push(copies.entry(
            location(image, "image")?,
            Target::Ecr,
            args.to.clone(),
            args.prefix.clone(),
        ));
    }
    copies
        .run(images, None, FrontEnd::Mirror, &args.images, quiet)
        .await
}

/// `mirror copy SRC DST`.
pub(crate) async fn copy(args: CopyArgs, quiet: bool) -> Result<(), Failure> {
    let source = location(&args.source, "source")?;
    let destination = location(&args.destination, "destination")?;
    let copies = Copies::new(&args.flags)?;
    let entry = copies.entry(source, Target::Exact(destination), None, None);
    let named = std::slice::from_ref(&args.source);
    let dest_creds = args.dest.dest_creds.as_deref();
    copies
        .run(vec![entry], dest_creds, FrontEnd::Copy, named, quiet)
        .await
}

/// What `mirror IMAGE...` and `mirror copy` make of the flags they share.
struct Copies<'a> {
    flags: &'a CopyCommandArgs,
    tags: Tags,
    repository: RepositorySettings,
}

impl<'a> Copies<'a> {
    /// The flags, checked: ECR settings, then the tag selection.
    fn new(flags: &'a CopyCommandArgs) -> Result<Self, Failure> {
        Ok(Self {
            flags,
            repository: settings(&flags.ecr)?,
            tags: selection(&flags.copy)?,
        })
    }

    /// An entry of `from` to `target`, with the tags, platforms and
    /// repository settings the flags give.
    fn entry(
        &self,
        from: ImageLocation,
        target: Target,
        to: Option<String>,
        prefix: Option<String>,
    ) -> Entry {
        Entry {
            from,
            to,
            target,
            prefix,
            tags: self.tags.clone(),
            platforms: self.flags.copy.platforms.clone(),
            repository: self.repository.clone(),
            referrers: None,
            require_signature: None,
            origin: None,
        }
    }

    /// Plans and runs `images`, prints what each tag became and picks the
    /// exit code; `named` are the images as the command line gave them.
    async fn run(
        &self,
        images: Vec<Entry>,
        dest_creds: Option<&str>,
        front: FrontEnd,
        named: &[String],
        quiet: bool,
    ) -> Result<(), Failure> {
        let CopyCommandArgs {
            copy,
            ecr,
            transport,
        } = self.flags;
        let options = run_options(copy, transport, dest_creds)?;
        let registries = Registries::new(
            client(transport)?,
            EcrOptions {
                region: ecr.region.clone(),
                manifest_puts_per_second: ecr.manifest_puts_per_second,
            },
        );
        let request = Request {
            images,
            log_groups: Vec::new(),
        };
        let report = run(registries, options, &request, quiet, front, named).await?;
        print_copies(&report, &copy.platforms, copy.json, quiet);
        copies_exit(&report)
    }
}

/// Plans and runs a request with progress on stderr.
async fn run(
    registries: Registries,
    options: RunOptions,
    request: &Request,
    quiet: bool,
    front: FrontEnd,
    images: &[String],
) -> Result<RunReport, Failure> {
    let progress = Progress::new(Mode::detect(quiet));
    let session = Session::new(Arc::new(registries), options, progress.clone());
    let plan = session
        .plan(request)
        .await
        .map_err(|e| failure(e, front, images))?;
    progress.spawn_ticker();
    let report = session.run(plan).await;
    progress.stop();
    Ok(report)
}

/// What `mirror IMAGE` and `mirror copy` print for each tag.
fn print_copies(report: &RunReport, platforms: &[PlatformFilter], json: bool, quiet: bool) {
    let single = report.tags.len() == 1;
    let requests = single.then_some(&report.requests);
    let mut values = Vec::new();
    let mut said = std::collections::HashSet::new();
    for tag in &report.tags {
        if !quiet {
            match &tag.outcome {
                Outcome::Copied(copy) | Outcome::UpToDate(copy) => {
                    if let Some(outcome) = &tag.repository {
                        let lines = repository_lines(&tag.destination, outcome);
                        if said.insert(lines.clone()) {
                            eprint!("{lines}");
                        }
                    }
                    eprint!(
                        "{}",
                        copy_summary(copy, platforms, requests, tag.calls.total())
                    );
                    if let Some(limit) = tag.rate_limit {
                        let host = tag.source.split('/').next().unwrap_or(tag.source.as_str());
                        eprintln!("  pull limit at {host}: {limit}");
                    }
                    if let Some(note) = docker_archive_note(tag, copy) {
                        eprintln!("{note}");
                    }
                }
                _ if single => {}
                _ => {
                    if let Some(failure) = tag_failure(tag) {
                        failure.print(Some(&format!("{} -> {}", tag.source, tag.destination)));
                    }
                }
            }
        }
        values.push(tag_value(tag, requests));
    }
    if !quiet {
        for note in &report.notes {
            eprintln!("note: {note}");
        }
    }
    if json {
        if values.len() == 1 {
            println!("{}", values[0]);
        } else {
            println!("{}", serde_json::Value::Array(values));
        }
    }
}

/// Exit code of `mirror IMAGE` / `mirror copy`: usage failures only -> 2,
/// any failure -> 1, deferrals -> 3.
fn copies_exit(report: &RunReport) -> Result<(), Failure> {
    let failed: Vec<&TagResult> = report.tags.iter().filter(|t| t.is_failure()).collect();
    let code = if report.only_usage_failures() {
        Failure::usage
    } else {
        Failure::transfer
    };
    match failed.as_slice() {
        [] if report.deferred() > 0 => Err(Failure::deferred(format!(
            "{} image(s) deferred: the source pull budget is spent; run again later",
            report.deferred()
        ))),
        [] => Ok(()),
        [only] if report.tags.len() == 1 => {
            Err(tag_failure(only).unwrap_or_else(|| code(String::new())))
        }
        _ => Err(code(format!(
            "{} of {} images failed: {}",
            failed.len(),
            report.tags.len(),
            failed
                .iter()
                .map(|t| t.source.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `mirror sync [FILE]`: one run, or rounds with `--every`.
pub(crate) async fn sync(args: SyncArgs, quiet: bool) -> Result<(), Failure> {
    if let Some(every) = args.every {
        return crate::daemon::run(args, every, quiet).await;
    }
    let Some(report) = sync_round(&args, quiet).await? else {
        return Ok(());
    };
    write_metrics_file(&args, &report)?;
    sync_exit(&report)
}

/// The sync file `args` name (`-` for standard input).
pub(crate) fn sync_path(args: &SyncArgs) -> PathBuf {
    args.file_flag
        .clone()
        .or_else(|| args.file.clone())
        .unwrap_or_else(|| PathBuf::from("mirror.yaml"))
}

/// One `mirror sync` run: reads the file, plans, runs on a fresh engine and
/// prints what happened. `None` for `--plan` (the plan was printed).
pub(crate) async fn sync_round(args: &SyncArgs, quiet: bool) -> Result<Option<RunReport>, Failure> {
    let path = sync_path(args);
    let file =
        SyncFile::read(&path).map_err(|e| failure(SyncError::File(e), FrontEnd::Sync, &[]))?;
    let common = CommonCopyArgs {
        platforms: Vec::new(),
        src: args.src.clone(),
        json: args.json,
        dry_run: false,
        max_concurrent_blobs: args.max_concurrent_blobs,
        all_tags: false,
        tag_regex: None,
        image: args.image.clone(),
    };
    let mut options = run_options(&common, &args.transport, args.dest.dest_creds.as_deref())?;
    options.fail_fast = args.fail_fast;
    options.max_source_pulls = args.max_source_pulls;
    options.shard = match (args.shard, args.shards) {
        (Some(shard), _) => Some(shard),
        (None, Some(count)) => {
            let index = std::env::var(mirror_sync::COMPLETION_INDEX_VAR).ok();
            Some(
                mirror_sync::Shard::from_completion_index(count, index.as_deref())
                    .map_err(|e| Failure::usage(e.to_string()))?,
            )
        }
        (None, None) => None,
    };
    let registries = Registries::new(
        client(&args.transport)?,
        EcrOptions {
            region: args.region.clone(),
            manifest_puts_per_second: args.manifest_puts_per_second,
        },
    );
    let request = Request {
        images: file.images,
        log_groups: file.log_groups,
    };
    let (request, airgap) =
        crate::airgap::prepare(&args.bundle, request, &mut options, quiet).await?;
    let progress = Progress::new(Mode::detect(quiet || args.plan));
    let session = Session::new(Arc::new(registries), options, progress.clone());
    let mut plan = session
        .plan(&request)
        .await
        .map_err(|e| failure(e, FrontEnd::Sync, &[]))?;
    if args.plan {
        if args.sizes {
            session.measure(&mut plan).await;
        }
        session.predict_deferrals(&mut plan);
        if args.json {
            println!("{}", plan_json(&plan));
        } else {
            print!("{}", plan_text(&plan));
        }
        // A tag whose HEAD failed was not planned: say so in the exit code.
        let failed = plan
            .tags
            .iter()
            .filter(|t| matches!(t.state, TagState::Failed { .. }))
            .count();
        if failed > 0 {
            return Err(Failure::transfer(format!(
                "{failed} of {} tags could not be planned (see above)",
                plan.tags.len()
            )));
        }
        return Ok(None);
    }
    airgap.check(&session, &plan).await?;
    progress.spawn_ticker();
    let report = session.run(plan).await;
    progress.stop();
    if args.json {
        let mut value = run_json(&report);
        if let Some(tags) = value.get_mut("tags").and_then(|t| t.as_array_mut()) {
            *tags = report.tags.iter().map(|t| tag_value(t, None)).collect();
        }
        println!("{value}");
    }
    if !quiet {
        let mut said = std::collections::HashSet::new();
        for tag in &report.tags {
            if let Some(failure) = tag_failure(tag) {
                let at = tag
                    .origin
                    .as_ref()
                    .map(|o| format!("{o}: "))
                    .unwrap_or_default();
                failure.print(Some(&format!("{at}{} -> {}", tag.source, tag.destination)));
            }
            if let Some(outcome) = &tag.repository {
                let lines = repository_lines(&tag.destination, outcome);
                if said.insert(lines.clone()) {
                    eprint!("{lines}");
                }
            }
            match &tag.outcome {
                Outcome::Copied(copy) if !copy.up_to_date => {
                    eprint!("{}", copy_summary(copy, &[], None, tag.calls.total()));
                }
                Outcome::Copied(_) | Outcome::UpToDate(_) => {
                    eprintln!("up to date: {}", tag.destination);
                }
                _ => {}
            }
        }
        eprint!("{}", run_summary(&report));
    }
    airgap.finish(&report, quiet).await?;
    Ok(Some(report))
}

/// `--metrics-file`: the run's numbers, written atomically.
pub(crate) fn write_metrics_file(args: &SyncArgs, report: &RunReport) -> Result<(), Failure> {
    if let Some(path) = &args.metrics_file {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let previous = std::fs::read_to_string(path).ok();
        let text = mirror_sync::metrics::prometheus_text(report, now, previous.as_deref());
        mirror_sync::metrics::write_atomically(path, &text).map_err(|e| {
            Failure::transfer(format!(
                "--metrics-file {}: {e} (the run itself finished; see the summary)",
                path.display()
            ))
        })?;
    }
    Ok(())
}

/// The exit of a finished run: 1 if anything failed (2 if only usage
/// failures), 3 if tags were deferred.
pub(crate) fn sync_exit(report: &RunReport) -> Result<(), Failure> {
    if report.failed() > 0 {
        let code = if report.only_usage_failures() {
            Failure::usage
        } else {
            Failure::transfer
        };
        return Err(code(format!(
            "{} of {} failed (see above)",
            report.failed(),
            report.tags.len() + report.log_groups.len()
        )));
    }
    if report.deferred() > 0 {
        return Err(Failure::deferred(format!(
            "{} tag(s) deferred: the source pull budget is spent; the next run picks them up",
            report.deferred()
        )));
    }
    Ok(())
}

/// The caller's ECR registry, a registry client and its credentials (for
/// commands that read from ECR: rewrite-from).
pub(crate) async fn ecr_registry(
    region: Option<&str>,
    transport: &crate::cli::TransportArgs,
) -> Result<
    (
        mirror_ecr::EcrHost,
        mirror_registry::RegistryClient,
        Arc<mirror_ecr::EcrAuth>,
    ),
    Failure,
> {
    let region_state = mirror_sync::ecr_region(region, 10.0)
        .await
        .map_err(|e| failure(e, FrontEnd::Copy, &[]))?;
    let registry = region_state.auth.registry().await?;
    Ok((registry, client(transport)?, region_state.auth))
}

/// Where `mirror IMAGE` puts an image in ECR (`python:3.10` -> `<registry>/python:3.10`).
pub(crate) fn ecr_target(
    registry: &mirror_ecr::EcrHost,
    source: &Reference,
    prefix: Option<&str>,
) -> Result<Reference, Failure> {
    mirror_sync::registry_destination(
        &registry.host,
        mirror_sync::NameRules::Ecr,
        &ImageLocation::Registry(source.clone()),
        None,
        prefix,
        &None,
    )
    .map_err(|e| failure(e, FrontEnd::Mirror, &[]))
}

/// `mirror verify IMAGE [DST]`.
pub(crate) async fn verify(args: VerifyArgs) -> Result<(), Failure> {
    let source = parse_reference(&args.image, "image")?;
    let src_creds = parse_credentials(args.src.src_creds.as_deref(), "--src-creds")?;
    let dest_creds = parse_credentials(args.dest.dest_creds.as_deref(), "--dest-creds")?;
    let registries = Registries::new(
        client(&args.transport)?,
        EcrOptions {
            region: args.region.clone(),
            ..EcrOptions::default()
        },
    );
    let fail_setup = |e: SyncError| failure(e, FrontEnd::Copy, std::slice::from_ref(&args.image));
    let destination = match &args.destination {
        Some(d) => {
            let d = parse_reference(d, "destination")?;
            mirror_sync::named_by(&d, &mirror_sync::destination_reference(&source, &d))
                .map_err(fail_setup)?
        }
        None => {
            let (host, _) = registries.own_registry().await.map_err(fail_setup)?;
            mirror_sync::registry_destination(
                &host.host,
                mirror_sync::NameRules::Ecr,
                &ImageLocation::Registry(source.clone()),
                args.to.as_deref(),
                args.prefix.as_deref(),
                &None,
            )
            .map_err(fail_setup)?
        }
    };
    let (src, _) = registries
        .repository(&source, src_creds)
        .await
        .map_err(fail_setup)?;
    let (dst, dst_region) = registries
        .repository(&destination, dest_creds)
        .await
        .map_err(fail_setup)?;
    let src_ref = source.reference_str();
    let dst_ref = destination.reference_str();
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
