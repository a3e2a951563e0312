//! Carrying a plan out: every tag that needs it is copied on one engine
//! (blobs deduplicated and bounded across the whole run), at most
//! `max_concurrent_images` at a time. A tag that fails fails alone: the
//! others go on, and the run reports every failure with its cause at the end.
//! Tags whose source pull budget ran out are deferred with nothing written.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::StreamExt as _;
use mirror_ecr::RepositoryOutcome;
use mirror_engine::{
    CopyError, CopyOptions, CopyReport, CopyRequest, Destination, EndpointError, Engine, Side,
};
use mirror_layout::{FileLocation, SavedImage};
use mirror_oci::Digest;
use mirror_registry::{RateLimit, StatsSnapshot};

use crate::budget::PullsSpent;
use crate::counted::{Calls, CountedDestination, CountedSource};
use crate::error::{RunError, SyncError};
use crate::location::ImageLocation;
use crate::plan::{Plan, PlannedTag, TagState};
use crate::session::{Session, keyring_of, platforms_of, referrers_of};

/// What happened to one tag.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The engine ran: copied, found current, or (dry run) planned.
    Copied(CopyReport),
    /// The plan found the destination current; nothing more was sent.
    UpToDate(CopyReport),
    /// The error and its chain of causes ([`RunError::is_usage`]: the
    /// request cannot be carried out as asked).
    Failed(RunError),
    /// Left for the next run: the source pull budget is spent.
    Deferred,
    /// An immutable destination tag holds another digest.
    Conflict { existing: Digest, wanted: Digest },
    /// Not started: an earlier tag failed and the run stops at the first failure.
    NotStarted,
}

/// One tag of a run.
#[derive(Debug, Clone)]
pub struct TagResult {
    pub source: String,
    pub destination: String,
    /// `FILE:LINE:COL` of the entry, for sync files.
    pub origin: Option<String>,
    pub outcome: Outcome,
    /// What this tag alone asked of its two ends (its plan HEADs included).
    pub calls: Calls,
    /// ECR: what the repository check found or did.
    pub repository: Option<RepositoryOutcome>,
    /// The source host's pull count after this tag, when it sends one.
    pub rate_limit: Option<RateLimit>,
    /// A docker-archive destination, read back: what `docker load` sees.
    pub docker_archive: Option<SavedImage>,
    /// Written into a docker-archive at this location.
    pub docker_archive_location: Option<FileLocation>,
}

impl TagResult {
    pub fn is_failure(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_) | Outcome::Conflict { .. })
    }
}

/// A log group the run ensured.
#[derive(Debug, Clone)]
pub struct LogGroupResult {
    pub name: String,
    pub retention_days: Option<i32>,
    pub outcome: Result<mirror_ecr::logs::LogGroupOutcome, RunError>,
}

/// Everything a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub tags: Vec<TagResult>,
    pub log_groups: Vec<LogGroupResult>,
    /// Manifest GETs per source host.
    pub pulls: Vec<PullsSpent>,
    /// HTTP requests of the whole run (every host, auth included).
    pub requests: StatsSnapshot,
    /// Answers by host and status class.
    pub answers: Vec<mirror_registry::HostAnswers>,
    pub seconds: f64,
    pub dry_run: bool,
    /// Things said once for the whole run (cross-repository mounts that were
    /// off at a registry, and what they would have saved).
    pub notes: Vec<String>,
    /// This process's shard, when the run is split (`--shard K/N`).
    pub shard: Option<crate::Shard>,
}

impl RunReport {
    pub fn failed(&self) -> usize {
        self.tags.iter().filter(|t| t.is_failure()).count()
            + self
                .log_groups
                .iter()
                .filter(|g| g.outcome.is_err())
                .count()
    }

    /// Failures that are all of the usage kind (the request cannot work as written).
    pub fn only_usage_failures(&self) -> bool {
        let failures: Vec<&TagResult> = self.tags.iter().filter(|t| t.is_failure()).collect();
        !failures.is_empty()
            && self.log_groups.iter().all(|g| g.outcome.is_ok())
            && failures
                .iter()
                .all(|t| matches!(&t.outcome, Outcome::Failed(e) if e.is_usage()))
    }

    pub fn deferred(&self) -> usize {
        self.tags
            .iter()
            .filter(|t| matches!(t.outcome, Outcome::Deferred))
            .count()
    }
}

impl Session {
    /// Carries the plan out; never fails as a whole: each tag has its outcome.
    pub async fn run(&self, plan: Plan) -> RunReport {
        let started = Instant::now();
        let log_groups = self.ensure_log_groups(&plan).await;
        let stop = AtomicBool::new(false);
        let mut results = self.run_tags(&plan, &plan.tags, &self.engine, &stop).await;
        let mut notes: Vec<String> = self
            .engine
            .mount_notes()
            .iter()
            .map(ToString::to_string)
            .collect();

        // A tag that failed only because of another tag gets one more chance,
        // on a fresh engine, once the others are done: its blob transfer was
        // cancelled when that tag gave up, or that tag's transfer of a blob
        // they share failed (the first tag to report a blob keeps the failure).
        let mut owners = std::collections::HashSet::new();
        let retried: Vec<bool> = results
            .iter()
            .map(|(_, failure)| match failure {
                Some(CopyFailure::Cancelled) => true,
                Some(CopyFailure::SharedBlob(key)) => !owners.insert(key.clone()),
                None => false,
            })
            .collect();
        let retry: Vec<PlannedTag> = plan
            .tags
            .iter()
            .zip(&retried)
            .filter(|(_, again)| **again)
            .map(|(t, _)| t.clone())
            .collect();
        if !retry.is_empty() && !stop.load(Ordering::Relaxed) {
            let engine = Session::make_engine(&self.options, &self.observer);
            let mut again = self
                .run_tags(&plan, &retry, &engine, &stop)
                .await
                .into_iter();
            for note in engine.mount_notes() {
                let note = note.to_string();
                if !notes.contains(&note) {
                    notes.push(note);
                }
            }
            for (result, redo) in results.iter_mut().zip(&retried) {
                if *redo && let Some(second) = again.next() {
                    *result = second;
                }
            }
        }

        self.commit_archives(&plan, &mut results).await;

        // An up-to-date tag needs no repository call; when settings were
        // asked for, still read the repository back so that drift is seen.
        if !self.options.dry_run {
            for (name, destination) in self.ecr_destinations().await {
                let asked = plan
                    .entries
                    .iter()
                    .any(|e| e.repository != mirror_ecr::RepositorySettings::default());
                if asked
                    && destination.repository_outcome().is_none()
                    && let Err(error) = destination.ensure_repository().await
                {
                    tracing::debug!(repository = %name, %error, "repository read-back failed");
                }
            }
        }
        let mut tags: Vec<TagResult> = results.into_iter().map(|(r, _)| r).collect();
        for (tag, planned) in tags.iter_mut().zip(&plan.tags) {
            if tag.repository.is_none()
                && let ImageLocation::Registry(reference) = &planned.job.destination
                && let Some(ecr) = self
                    .ecr_destinations()
                    .await
                    .into_iter()
                    .find(|(name, _)| *name == reference.name())
            {
                tag.repository = ecr.1.repository_outcome().cloned();
            }
        }
        let mut pulls = Vec::new();
        for budget in self.budgets().await {
            pulls.push(budget.report());
        }
        RunReport {
            tags,
            log_groups,
            pulls,
            requests: self.registries.client().stats().snapshot(),
            answers: self.registries.client().stats().answers(),
            seconds: started.elapsed().as_secs_f64(),
            dry_run: self.options.dry_run,
            notes,
            shard: self.options.shard,
        }
    }

    /// Commits each oci-archive that several tags of the run copied into,
    /// once, with every image staged in it (the copies left their commits to
    /// this); a commit that fails fails every tag that copied into it. An
    /// archive only one tag writes was committed by its copy.
    async fn commit_archives(&self, plan: &Plan, results: &mut [(TagResult, Option<CopyFailure>)]) {
        let archive_of = |tag: &PlannedTag| shared_archive(plan, tag);
        let mut archives = std::collections::BTreeSet::new();
        for ((result, _), tag) in results.iter().zip(&plan.tags) {
            if let (Some(path), Outcome::Copied(copy)) = (archive_of(tag), &result.outcome)
                && !copy.up_to_date
                && !self.options.dry_run
            {
                archives.insert(path);
            }
        }
        for path in archives {
            let location = FileLocation::OciArchive {
                path: path.to_path_buf(),
                tag: None,
            };
            let committed = match mirror_layout::open_destination(&location).await {
                Ok(archive) => archive.finish().await,
                Err(error) => Err(EndpointError::backend(error)),
            };
            let Err(error) = committed else { continue };
            let error = Arc::new(error);
            for ((result, _), tag) in results.iter_mut().zip(&plan.tags) {
                if archive_of(tag) == Some(path) && matches!(result.outcome, Outcome::Copied(_)) {
                    result.outcome = Outcome::Failed(
                        CopyError::Endpoint {
                            side: Side::Destination,
                            name: path.display().to_string(),
                            source: EndpointError::backend(SharedError(error.clone())),
                        }
                        .into(),
                    );
                }
            }
        }
    }

    /// Runs tags at most `max_concurrent_images` at a time. Tags that put
    /// one source digest into one destination repository (`22` and
    /// `22.1.0`) run one after another: the first copies, the others find
    /// its manifests there and only add their tag, instead of pushing the
    /// same manifests side by side.
    async fn run_tags(
        &self,
        plan: &Plan,
        tags: &[PlannedTag],
        engine: &Engine,
        stop: &AtomicBool,
    ) -> Vec<(TagResult, Option<CopyFailure>)> {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut by_key: std::collections::HashMap<(String, String), usize> = Default::default();
        for (i, tag) in tags.iter().enumerate() {
            let key = match (&tag.job.destination, &tag.digest) {
                (ImageLocation::Registry(reference), Some(digest)) => {
                    Some((reference.name(), digest.to_string()))
                }
                _ => None,
            };
            match key {
                Some(key) => match by_key.get(&key) {
                    Some(&group) => groups[group].push(i),
                    None => {
                        by_key.insert(key, groups.len());
                        groups.push(vec![i]);
                    }
                },
                None => groups.push(vec![i]),
            }
        }
        let mut done = futures::stream::iter(groups.into_iter().map(|group| async move {
            let mut results = Vec::new();
            for i in group {
                results.push((i, self.run_one(plan, &tags[i], engine, stop).await));
            }
            results
        }))
        .buffer_unordered(self.options.max_concurrent_images.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, r)| r).collect()
    }

    async fn run_one(
        &self,
        plan: &Plan,
        tag: &PlannedTag,
        engine: &Engine,
        stop: &AtomicBool,
    ) -> (TagResult, Option<CopyFailure>) {
        let mut result = TagResult {
            source: tag.source.clone(),
            destination: tag.destination.clone(),
            origin: tag.origin.clone(),
            outcome: Outcome::NotStarted,
            calls: tag.calls.snapshot(),
            repository: None,
            rate_limit: None,
            docker_archive: None,
            docker_archive_location: None,
        };
        match &tag.state {
            // Referrers added since the image landed travel too: the engine
            // finds the image current and copies only them.
            TagState::UpToDate
                if !referrers_of(&plan.entries, &tag.job, &self.options.referrers).is_none() => {}
            TagState::UpToDate => {
                result.outcome = Outcome::UpToDate(up_to_date_report(tag));
                result.rate_limit = self.rate_limit_of(tag).await;
                return (result, None);
            }
            TagState::Missing => {
                result.outcome = Outcome::Failed(
                    CopyError::NotFound {
                        reference: tag.source.clone(),
                    }
                    .into(),
                );
                return self.stopping(result, stop);
            }
            TagState::Failed { error } => {
                result.outcome = Outcome::Failed(error.clone());
                return self.stopping(result, stop);
            }
            TagState::Conflict { existing } => {
                result.outcome = Outcome::Conflict {
                    existing: existing.clone(),
                    wanted: tag.digest.clone().unwrap_or_else(|| existing.clone()),
                };
                return self.stopping(result, stop);
            }
            TagState::Deferred => {
                result.outcome = Outcome::Deferred;
                return (result, None);
            }
            TagState::New | TagState::Changed { .. } | TagState::Filtered { .. } => {}
        }
        if stop.load(Ordering::Relaxed) {
            return (result, None);
        }
        let (outcome, failure) = self.copy_one(plan, tag, engine, &mut result).await;
        result.outcome = outcome;
        result.calls = tag.calls.snapshot();
        result.rate_limit = self.rate_limit_of(tag).await;
        if result.is_failure() && self.options.fail_fast {
            stop.store(true, Ordering::Relaxed);
        }
        (result, failure)
    }

    fn stopping(&self, result: TagResult, stop: &AtomicBool) -> (TagResult, Option<CopyFailure>) {
        if self.options.fail_fast {
            stop.store(true, Ordering::Relaxed);
        }
        (result, None)
    }

    async fn rate_limit_of(&self, tag: &PlannedTag) -> Option<RateLimit> {
        let handle = self.source(&tag.job.source).await.ok()?;
        handle.repository.as_ref()?.rate_limit()
    }

    async fn copy_one(
        &self,
        plan: &Plan,
        tag: &PlannedTag,
        engine: &Engine,
        result: &mut TagResult,
    ) -> (Outcome, Option<CopyFailure>) {
        let failed = |error: RunError| (Outcome::Failed(error), None);
        // A destination's own failure outside the engine (opening a layout,
        // reading a docker-archive back), typed like the engine's.
        let destination_failed = |name: String, error: mirror_layout::LayoutError| {
            failed(
                CopyError::Endpoint {
                    side: Side::Destination,
                    name,
                    source: EndpointError::backend(error),
                }
                .into(),
            )
        };
        let entry = &plan.entries[tag.job.entry];
        let source = match self.source(&tag.job.source).await {
            Ok(source) => source,
            Err(error) => return failed(error.into()),
        };
        let budget = self.budget(&source).await;
        if budget.as_ref().is_some_and(|b| b.is_closed()) {
            return (Outcome::Deferred, None);
        }
        let destination: Arc<dyn Destination> = match &tag.job.destination {
            ImageLocation::Registry(reference) => {
                match self
                    .registry_destination(reference, &entry.repository)
                    .await
                {
                    Ok(handle) => handle.endpoint,
                    Err(error) => return failed(error.into()),
                }
            }
            ImageLocation::File(file) => match mirror_layout::open_destination(file).await {
                Ok(endpoint) => endpoint,
                Err(error) => return destination_failed(file.to_string(), error),
            },
        };
        let source_reference = tag.job.source.engine_reference();
        let destination_reference = tag.job.destination.engine_reference();
        let counted_source = Arc::new(CountedSource::new(
            source.endpoint,
            tag.calls.clone(),
            tag.resolved.clone().map(|r| (source_reference.clone(), r)),
            budget,
        ));
        let request = CopyRequest {
            source: counted_source.clone(),
            source_reference,
            destination: Arc::new(
                CountedDestination::new(
                    destination,
                    tag.calls.clone(),
                    Some((
                        destination_reference.clone(),
                        tag.destination_digest.clone(),
                    )),
                )
                .for_file(
                    match &tag.job.destination {
                        ImageLocation::File(_) => self.options.left_out.clone(),
                        ImageLocation::Registry(_) => None,
                    },
                    // An oci-archive that several tags write is committed
                    // once, at the end of the run.
                    shared_archive(plan, tag).is_some(),
                ),
            ),
            destination_reference,
            source_label: tag.source.clone(),
            destination_label: tag.destination.clone(),
            options: CopyOptions {
                platforms: platforms_of(&plan.entries, &tag.job).to_vec(),
                include_foreign: self.options.include_foreign,
                dry_run: self.options.dry_run,
                referrers: referrers_of(&plan.entries, &tag.job, &self.options.referrers),
                require_signature: keyring_of(
                    &plan.entries,
                    &tag.job,
                    &self.options.require_signature,
                ),
            },
        };
        let copied = engine.copy(request).await;
        counted_source.release();
        match copied {
            Ok(report) => {
                if let ImageLocation::File(location @ FileLocation::DockerArchive { path, .. }) =
                    &tag.job.destination
                {
                    match mirror_layout::saved_image(path, &report.digest).await {
                        Ok(saved) => {
                            result.docker_archive = Some(saved);
                            result.docker_archive_location = Some(location.clone());
                        }
                        Err(error) => return destination_failed(location.to_string(), error),
                    }
                }
                if report.up_to_date {
                    (Outcome::UpToDate(report), None)
                } else {
                    (Outcome::Copied(report), None)
                }
            }
            Err(_) if counted_source.was_deferred() => (Outcome::Deferred, None),
            Err(error) => {
                let failure = match &error {
                    CopyError::Cancelled => Some(CopyFailure::Cancelled),
                    CopyError::Shared(inner) => match inner.as_ref() {
                        CopyError::Cancelled => Some(CopyFailure::Cancelled),
                        CopyError::Blob { digest, .. } => Some(CopyFailure::SharedBlob((
                            match &tag.job.destination {
                                ImageLocation::Registry(reference) => reference.name(),
                                ImageLocation::File(file) => file.path().display().to_string(),
                            },
                            digest.to_string(),
                        ))),
                        _ => None,
                    },
                    _ => None,
                };
                (Outcome::Failed(error.into()), failure)
            }
        }
    }

    /// Ensures the request's log groups (CloudWatch Logs in the caller's
    /// region); each group's failure is its own.
    async fn ensure_log_groups(&self, plan: &Plan) -> Vec<LogGroupResult> {
        if plan.log_groups.is_empty() {
            return Vec::new();
        }
        let config = mirror_ecr::aws_config(self.registries.ecr_region()).await;
        let client = aws_sdk_cloudwatchlogs::Client::new(&config);
        let mut results = Vec::new();
        for group in &plan.log_groups {
            let outcome = if self.options.dry_run {
                Err(RunError::DryRun)
            } else if config.region().is_none() {
                Err(SyncError::NoRegion.into())
            } else {
                mirror_ecr::logs::ensure_log_group(&client, &group.name, group.retention_days)
                    .await
                    .map_err(RunError::from)
            };
            results.push(LogGroupResult {
                name: group.name.clone(),
                retention_days: group.retention_days,
                outcome,
            });
        }
        results
    }
}

/// Why a copy failed, when a second attempt may help.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CopyFailure {
    /// A blob transfer was cancelled when another tag gave up.
    Cancelled,
    /// A blob transfer failed: (destination, digest), shared by every tag
    /// that needed that blob there.
    SharedBlob((String, String)),
}

/// The report of a tag the plan found current.
fn up_to_date_report(tag: &PlannedTag) -> CopyReport {
    let media_type = tag
        .resolved
        .as_ref()
        .and_then(|r| r.media_type.clone())
        .unwrap_or_default();
    let kind = match media_type.as_str() {
        mirror_oci::media_types::OCI_INDEX | mirror_oci::media_types::DOCKER_LIST => "index",
        _ => "image",
    };
    CopyReport {
        source: tag.source.clone(),
        destination: tag.destination.clone(),
        digest: tag
            .digest
            .clone()
            .or_else(|| tag.destination_digest.clone())
            .unwrap_or_else(|| mirror_oci::digest_of(b"")),
        media_type,
        kind: kind.to_owned(),
        up_to_date: true,
        dry_run: false,
        platforms: Vec::new(),
        filtered: None,
        manifests: Default::default(),
        blobs: Default::default(),
        bytes: 0,
        bytes_mounted: 0,
        seconds: 0.0,
        retries: 0,
        referrers: Default::default(),
        signature: None,
    }
}

/// One archive commit's failure, shared by every tag that copied into it.
#[derive(Debug, thiserror::Error)]
#[error("committing the archive")]
struct SharedError(#[source] Arc<EndpointError>);

/// The oci-archive `tag` writes, when other tags of the plan write it too.
fn shared_archive<'p>(plan: &'p Plan, tag: &PlannedTag) -> Option<&'p std::path::Path> {
    match &tag.job.destination {
        ImageLocation::File(FileLocation::OciArchive { path, .. }) => {
            plan.shared_archives.get(path).map(|p| p.as_path())
        }
        _ => None,
    }
}
