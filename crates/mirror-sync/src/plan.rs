//! The plan: every selected tag with what one HEAD per side says about it.
//! A plan is data: `--plan` prints it, a run carries it out, and the HEAD
//! answers travel with it so that the engine does not ask again.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt as _;
use mirror_engine::{CopyError, CopyOptions, CopyRequest, EndpointError, Resolved, Side};
use mirror_layout::FileLocation;
use mirror_oci::Digest;
use serde::Serialize;

use crate::counted::{CallCounter, Calls, CountedDestination, CountedSource};
use crate::error::{RunError, SyncError};
use crate::file::Entry;
use crate::location::ImageLocation;
use crate::session::{Job, Request, Session, keyring_of, platforms_of, referrers_of};
use crate::shard::Shard;

fn shard_text<S: serde::Serializer>(shard: &Option<Shard>, out: S) -> Result<S::Ok, S::Error> {
    match shard {
        Some(shard) => out.serialize_str(&shard.to_string()),
        None => out.serialize_none(),
    }
}

/// HEADs in flight while planning (each registry host also bounds its own).
pub(crate) const PLAN_CONCURRENCY: usize = 16;

/// What one tag needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum TagState {
    /// The destination tag holds the source digest.
    UpToDate,
    /// The destination has no such tag.
    New,
    /// The destination tag holds another digest.
    Changed { old: Digest },
    /// The destination holds a platform subset (its own digest): the copy
    /// reads the source index (one pull) to tell whether it is current.
    Filtered { old: Digest },
    /// An immutable destination tag holds another digest: never overwritten.
    Conflict { existing: Digest },
    /// Left for a later run: the source pull budget would be exceeded.
    Deferred,
    /// The source has no such tag or digest.
    Missing,
    /// A HEAD (or opening a local source) failed for this tag.
    Failed { error: RunError },
}

impl TagState {
    pub fn label(&self) -> &'static str {
        match self {
            Self::UpToDate => "up to date",
            Self::New => "new",
            Self::Changed { .. } => "changed",
            Self::Filtered { .. } => "filtered",
            Self::Conflict { .. } => "conflict",
            Self::Deferred => "deferred",
            Self::Missing => "missing",
            Self::Failed { .. } => "failed",
        }
    }

    /// Whether a run copies it.
    pub fn needs_copy(&self) -> bool {
        matches!(
            self,
            Self::New | Self::Changed { .. } | Self::Filtered { .. }
        )
    }
}

/// One selected tag.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedTag {
    pub source: String,
    pub destination: String,
    #[serde(flatten)]
    pub state: TagState,
    /// The source's digest (HEAD), when it has the tag.
    pub digest: Option<Digest>,
    /// Blob bytes a copy would move (`--sizes`).
    pub bytes: Option<u64>,
    /// `FILE:LINE:COL` of the entry.
    pub origin: Option<String>,
    #[serde(skip)]
    pub job: Job,
    #[serde(skip)]
    pub(crate) resolved: Option<Resolved>,
    #[serde(skip)]
    pub(crate) destination_digest: Option<Digest>,
    /// What planning this tag cost (its HEADs).
    #[serde(skip)]
    pub(crate) calls: Arc<CallCounter>,
}

/// Every selected tag of a run, in entry order.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub tags: Vec<PlannedTag>,
    pub log_groups: Vec<PlannedLogGroup>,
    /// This process's shard (`K/N`), when the run is split.
    #[serde(serialize_with = "shard_text")]
    pub shard: Option<Shard>,
    #[serde(skip)]
    pub(crate) entries: Vec<Entry>,
    /// The oci-archives more than one tag writes: each is committed once,
    /// at the end of the run, not by every copy (a commit rewrites the file).
    #[serde(skip)]
    pub(crate) shared_archives: std::collections::BTreeSet<std::path::PathBuf>,
}

/// A log group the run ensures.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedLogGroup {
    pub name: String,
    pub retention_days: Option<i32>,
}

impl Plan {
    /// How many tags are in each state, in the order of [`TagState::label`].
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        let mut counts: Vec<(&'static str, usize)> = Vec::new();
        for tag in &self.tags {
            let label = tag.state.label();
            match counts.iter_mut().find(|(l, _)| *l == label) {
                Some((_, n)) => *n += 1,
                None => counts.push((label, 1)),
            }
        }
        counts
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// What planning cost, over every tag.
    pub fn calls(&self) -> Calls {
        let mut total = Calls::default();
        for tag in &self.tags {
            total.add(&tag.calls.snapshot());
        }
        total
    }
}

impl Session {
    /// Selects, names and HEADs every tag: no writes, no manifest GETs.
    pub async fn plan(&self, request: &Request) -> Result<Plan, SyncError> {
        let (jobs, failed_entries) = self.jobs(&request.images).await?;
        if self.options.dry_run
            && let Some(job) = jobs
                .iter()
                .find(|j| matches!(j.destination, ImageLocation::File(_)))
        {
            return Err(SyncError::DryRunIntoFiles {
                origin: request.images.get(job.entry).and_then(|e| e.origin.clone()),
                location: job.destination.to_string(),
            });
        }
        let listings = self.list_ahead(self.needing_listings(&request.images, &jobs));
        let planned = futures::stream::iter(
            jobs.into_iter()
                .map(|job| self.plan_one(&request.images, job)),
        )
        .buffered(PLAN_CONCURRENCY)
        .collect::<Vec<Result<PlannedTag, SyncError>>>();
        let (planned, ()) = futures::join!(planned, listings);
        let mut tags = planned.into_iter().collect::<Result<Vec<_>, _>>()?;
        for failed in failed_entries {
            let entry = &request.images[failed.entry];
            tags.push(PlannedTag {
                source: entry.from.to_string(),
                destination: entry.to.clone().unwrap_or_else(|| entry.target.to_string()),
                state: TagState::Failed {
                    error: failed.error.into(),
                },
                digest: None,
                bytes: None,
                // The message leads with it already.
                origin: None,
                job: Job {
                    entry: failed.entry,
                    source: entry.from.clone(),
                    destination: entry.from.clone(),
                },
                resolved: None,
                destination_digest: None,
                calls: Arc::new(CallCounter::default()),
            });
        }
        tags.sort_by_key(|t| t.job.entry);
        // Log groups are run-wide work: one shard does it.
        let ensure_log_groups = self.options.shard.is_none_or(|s| s.is_first());
        let mut writers: HashMap<&std::path::Path, usize> = HashMap::new();
        for tag in &tags {
            if let ImageLocation::File(FileLocation::OciArchive { path, .. }) = &tag.job.destination
            {
                *writers.entry(path).or_default() += 1;
            }
        }
        let shared_archives = writers
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(path, _)| path.to_path_buf())
            .collect();
        Ok(Plan {
            shared_archives,
            tags,
            log_groups: request
                .log_groups
                .iter()
                .filter(|_| ensure_log_groups)
                .map(|g| PlannedLogGroup {
                    name: g.name.clone(),
                    retention_days: g.retention_days,
                })
                .collect(),
            entries: request.images.clone(),
            shard: self.options.shard,
        })
    }

    /// Lists, while the HEADs run, each source repository whose images take
    /// referrers: finding fallback and cosign tags needs that listing for
    /// every image, even one already up to date, and it costs a round trip
    /// per repository that would otherwise come after planning. A listing
    /// that fails here is asked again by the copy that needs it.
    fn needing_listings<'a>(&self, entries: &'a [Entry], jobs: &[Job]) -> Vec<&'a Entry> {
        if self.options.dry_run {
            return Vec::new();
        }
        let mut seen = std::collections::HashSet::new();
        jobs.iter()
            .filter(|job| !referrers_of(entries, job, &self.options.referrers).is_none())
            .filter_map(|job| match &job.source {
                ImageLocation::Registry(reference) => seen
                    .insert(reference.name())
                    .then(|| entries.get(job.entry))
                    .flatten(),
                ImageLocation::File(_) => None,
            })
            .collect()
    }

    async fn list_ahead(&self, wanted: Vec<&Entry>) {
        futures::stream::iter(wanted.into_iter().map(|entry| self.list_tags(entry)))
            .buffer_unordered(PLAN_CONCURRENCY)
            .for_each(|listed| async move {
                if let Err(error) = listed {
                    tracing::debug!(%error, "tags not listed ahead of the copies");
                }
            })
            .await;
    }

    async fn plan_one(&self, entries: &[Entry], job: Job) -> Result<PlannedTag, SyncError> {
        let calls = Arc::new(CallCounter::default());
        let entry = &entries[job.entry];
        let mut planned = PlannedTag {
            source: job.source.to_string(),
            destination: job.destination.to_string(),
            state: TagState::Missing,
            digest: None,
            bytes: None,
            origin: entry.origin.as_ref().map(ToString::to_string),
            job: job.clone(),
            resolved: None,
            destination_digest: None,
            calls: calls.clone(),
        };
        // One tag's failure is that tag's, not the run's. The two HEADs do
        // not depend on each other: they run side by side.
        let (resolved, destination_digest) = futures::join!(
            self.head_source(&job, &calls),
            self.head_destination(&job, entry, &calls)
        );
        let resolved = match resolved? {
            Ok(found) => found,
            Err(error) => {
                planned.state = TagState::Failed { error };
                return Ok(planned);
            }
        };
        let destination_digest = match destination_digest? {
            Ok(digest) => digest,
            Err(error) => {
                planned.state = TagState::Failed { error };
                return Ok(planned);
            }
        };
        let source_digest = resolved.as_ref().map(|r| r.digest.clone());
        planned.state = match (&source_digest, &destination_digest) {
            (None, _) => TagState::Missing,
            (Some(_), None) => TagState::New,
            (Some(s), Some(d)) if s == d => TagState::UpToDate,
            (Some(_), Some(old)) if !entry.platforms.is_empty() => {
                TagState::Filtered { old: old.clone() }
            }
            (Some(_), Some(old)) => match self.is_immutable(&job, entry).await {
                true => TagState::Conflict {
                    existing: old.clone(),
                },
                false => TagState::Changed { old: old.clone() },
            },
        };
        planned.digest = source_digest;
        planned.resolved = resolved;
        planned.destination_digest = destination_digest;
        Ok(planned)
    }

    /// The source's answer for the job's tag: `Err` is a setup failure that
    /// stops the run, `Ok(Err)` the tag's own.
    async fn head_source(
        &self,
        job: &Job,
        calls: &CallCounter,
    ) -> Result<Result<Option<Resolved>, RunError>, SyncError> {
        let source = match self.source(&job.source).await {
            Ok(source) => source,
            Err(error @ SyncError::Open { .. }) => return Ok(Err(error.into())),
            Err(setup) => return Err(setup),
        };
        if matches!(job.source, ImageLocation::Registry(_)) {
            calls.count_source_head();
        }
        Ok(source
            .endpoint
            .resolve(&job.source.engine_reference())
            .await
            .map_err(|error| failed_head(Side::Source, &job.source, error)))
    }

    /// The digest the job's destination tag holds now, if any.
    async fn head_destination(
        &self,
        job: &Job,
        entry: &Entry,
        calls: &CallCounter,
    ) -> Result<Result<Option<Digest>, RunError>, SyncError> {
        let reference = match &job.destination {
            ImageLocation::Registry(reference) => reference,
            ImageLocation::File(file) => return Ok(Ok(file_digest(file).await)),
        };
        let handle = self
            .registry_destination(reference, &entry.repository)
            .await?;
        calls.count_destination_head();
        Ok(handle
            .endpoint
            .manifest_digest(&job.destination.engine_reference())
            .await
            .map_err(|error| failed_head(Side::Destination, &job.destination, error)))
    }

    /// Whether ECR refuses to move the job's destination tag.
    async fn is_immutable(&self, job: &Job, entry: &Entry) -> bool {
        let ImageLocation::Registry(reference) = &job.destination else {
            return false;
        };
        let Some(tag) = reference.tag() else {
            return false;
        };
        let Ok(handle) = self
            .registry_destination(reference, &entry.repository)
            .await
        else {
            return false;
        };
        let Some(api) = &handle.ecr_api else {
            return false;
        };
        self.ecr_repository(reference, api)
            .await
            .is_some_and(|repository| repository.is_immutable_tag(tag))
    }

    /// `--plan --sizes`: the bytes each copy would move, read through the
    /// engine's dry run (manifest GETs and blob HEADs, no writes). A
    /// platform-filtered tag found current becomes up to date.
    pub async fn measure(&self, plan: &mut Plan) {
        let entries = plan.entries.clone();
        let sized = futures::stream::iter(plan.tags.iter().enumerate().map(|(i, tag)| {
            let entries = &entries;
            async move {
                if !tag.state.needs_copy() {
                    return (i, None);
                }
                (i, self.dry_run(entries, tag).await)
            }
        }))
        .buffer_unordered(self.options.max_concurrent_images.max(1))
        .collect::<Vec<_>>()
        .await;
        for (i, report) in sized {
            let Some(report) = report else { continue };
            let tag = &mut plan.tags[i];
            tag.bytes = Some(report.bytes);
            if report.up_to_date {
                tag.state = TagState::UpToDate;
            }
        }
    }

    async fn dry_run(
        &self,
        entries: &[Entry],
        tag: &PlannedTag,
    ) -> Option<mirror_engine::CopyReport> {
        let ImageLocation::Registry(reference) = &tag.job.destination else {
            return None;
        };
        let entry = &entries[tag.job.entry];
        let source = self.source(&tag.job.source).await.ok()?;
        let destination = self
            .registry_destination(reference, &entry.repository)
            .await
            .ok()?;
        let source_reference = tag.job.source.engine_reference();
        let destination_reference = tag.job.destination.engine_reference();
        let request = CopyRequest {
            source: Arc::new(CountedSource::new(
                source.endpoint,
                tag.calls.clone(),
                tag.resolved.clone().map(|r| (source_reference.clone(), r)),
                None,
            )),
            source_reference,
            destination: Arc::new(CountedDestination::new(
                destination.endpoint,
                tag.calls.clone(),
                Some((
                    destination_reference.clone(),
                    tag.destination_digest.clone(),
                )),
            )),
            destination_reference,
            source_label: tag.source.clone(),
            destination_label: tag.destination.clone(),
            options: CopyOptions {
                platforms: platforms_of(entries, &tag.job).to_vec(),
                include_foreign: self.options.include_foreign,
                dry_run: true,
                referrers: referrers_of(entries, &tag.job, &self.options.referrers),
                require_signature: keyring_of(entries, &tag.job, &self.options.require_signature),
            },
        };
        self.engine.copy(request).await.ok()
    }

    /// Marks as deferred the tags past the pull budget, counting one pull per
    /// copy (an index costs one more per platform: the run knows exactly).
    pub fn predict_deferrals(&self, plan: &mut Plan) {
        let Some(limit) = self.options.max_source_pulls else {
            return;
        };
        let mut spent: std::collections::HashMap<String, u64> = Default::default();
        for tag in &mut plan.tags {
            let ImageLocation::Registry(reference) = &tag.job.source else {
                continue;
            };
            if !tag.state.needs_copy() {
                continue;
            }
            let used = spent.entry(reference.api_host().to_owned()).or_default();
            if *used >= limit {
                tag.state = TagState::Deferred;
            } else {
                *used += 1;
            }
        }
    }
}

/// The digest a layout or archive holds under a location's name, if any.
/// A tag's own failure to answer its plan HEAD on one side.
fn failed_head(side: Side, location: &ImageLocation, error: EndpointError) -> RunError {
    CopyError::Endpoint {
        side,
        name: location.to_string(),
        source: error,
    }
    .into()
}

async fn file_digest(file: &FileLocation) -> Option<Digest> {
    let wanted = file.reference();
    let listed = mirror_layout::list(file).await.ok()?;
    listed
        .into_iter()
        .find(|(name, _)| name.as_deref() == Some(wanted.as_str()))
        .map(|(_, descriptor)| descriptor.digest().clone())
}
