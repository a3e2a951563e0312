//! One run: entries become jobs (tags selected, destinations named, nothing
//! written twice), jobs become a plan (one HEAD per side), the plan runs on
//! one engine. Endpoints are made once per repository and shared by its tags.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt as _;

use mirror_ecr::{EcrDestination, EcrHost, RepositoryOutcome, RepositorySettings};
use mirror_engine::{
    Destination, Engine, EngineOptions, Observer, ReferrerSelection, RegistryEndpoint, Source,
};
use mirror_layout::FileLocation;
use mirror_oci::PlatformFilter;
use mirror_registry::{Credentials, Repository};
use tokio::sync::Mutex;

use crate::budget::SourceBudget;
use crate::error::{ListingError, Origin, SyncError};
use crate::file::{Entry, LogGroup, Tags, Target};
use crate::location::ImageLocation;
use crate::naming::{NameRules, copy_destination, file_destination, registry_destination};
use crate::registries::Registries;
use crate::shard::Shard;

/// Images in flight by default: enough to keep the blob bound busy while
/// others are between HEADs and manifest pushes, and a bound however many
/// tags a file selects.
pub const DEFAULT_CONCURRENT_IMAGES: usize = 8;

/// Blob transfers in flight in a `mirror sync` run by default: a fleet is
/// many small blobs across many repositories, bound by round trips, not
/// bytes. Measured on the bench's fleet (2026-12-01, loopback HTTPS, 3 runs
/// each): with the other core busy (a build running) 16 took 2.9 to 3.7 s
/// where 8 (the single-copy default, [`mirror_engine::DEFAULT_CONCURRENT_BLOBS`])
/// took 5.5 to 5.8 s; on an idle machine they tie (4.3 to 4.7 s against 4.5
/// to 4.7 s), peak RSS 1 to 2 MiB higher. Shared CI runners are rarely idle.
pub const DEFAULT_SYNC_CONCURRENT_BLOBS: usize = 16;

/// How a run behaves (everything but what to copy).
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub source_credentials: Option<Credentials>,
    pub destination_credentials: Option<Credentials>,
    pub include_foreign: bool,
    /// Plan and report through the engine; write nothing.
    pub dry_run: bool,
    pub max_concurrent_blobs: usize,
    /// Attempts per blob transfer.
    pub blob_attempts: u32,
    pub max_concurrent_images: usize,
    /// Start no image after one failed (images in flight finish).
    pub fail_fast: bool,
    /// Manifest GETs allowed per source host.
    pub max_source_pulls: Option<u64>,
    /// Distinct manifests one image's copy may walk (a bound against hostile sources).
    pub max_manifests: usize,
    /// The longest `Retry-After` a blob transfer waits for.
    pub max_retry_after: std::time::Duration,
    /// Which referrers (signatures, SBOMs, attestations) travel with each
    /// image; with any, a tag found up to date still goes through the engine
    /// so that referrers added since the last run travel too.
    pub referrers: ReferrerSelection,
    /// Copy only images a cosign signature by one of these keys names.
    pub require_signature: Option<Arc<mirror_signature::Keyring>>,
    /// This process's share of the tags (`--shard K/N`); `None`: all of them.
    pub shard: Option<Shard>,
    /// Blobs a file destination leaves out because the far side of an air
    /// gap holds them (a delta bundle); `None`: every blob is written.
    pub left_out: Option<Arc<crate::bundle::LeftOut>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            source_credentials: None,
            destination_credentials: None,
            include_foreign: false,
            dry_run: false,
            max_concurrent_blobs: mirror_engine::DEFAULT_CONCURRENT_BLOBS,
            blob_attempts: 5,
            max_concurrent_images: DEFAULT_CONCURRENT_IMAGES,
            fail_fast: false,
            max_source_pulls: None,
            max_manifests: mirror_engine::DEFAULT_MAX_MANIFESTS,
            max_retry_after: mirror_engine::DEFAULT_MAX_RETRY_AFTER,
            referrers: ReferrerSelection::default(),
            require_signature: None,
            shard: None,
            left_out: None,
        }
    }
}

/// One tag to copy.
#[derive(Debug, Clone)]
pub struct Job {
    /// The entry it came from (index into the request's entries).
    pub entry: usize,
    pub source: ImageLocation,
    pub destination: ImageLocation,
}

/// An entry whose tags could not be selected (its listing failed, or its
/// selection kept nothing): it fails alone, the other entries go on.
#[derive(Debug)]
pub(crate) struct EntryFailure {
    pub entry: usize,
    pub error: SyncError,
}

/// What a run is asked to do.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub images: Vec<Entry>,
    pub log_groups: Vec<LogGroup>,
}

/// A destination endpoint and, for ECR, what it did with the repository.
#[derive(Clone)]
pub(crate) struct DestinationHandle {
    pub endpoint: Arc<dyn Destination>,
    pub ecr: Option<Arc<EcrDestination>>,
    /// The ECR API of its region (to read the repository in a plan).
    pub ecr_api: Option<aws_sdk_ecr::Client>,
}

/// A source endpoint and, for a registry, its repository (rate limits).
#[derive(Clone)]
pub(crate) struct SourceHandle {
    pub endpoint: Arc<dyn Source>,
    pub repository: Option<Repository>,
    /// The same endpoint as a registry's, told the tags once they are listed.
    pub registry: Option<Arc<RegistryEndpoint>>,
}

/// The state of one run: registries, endpoints, budgets, the engine.
pub struct Session {
    pub(crate) registries: Arc<Registries>,
    pub(crate) options: RunOptions,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) engine: Engine,
    sources: Mutex<HashMap<String, SourceHandle>>,
    destinations: Mutex<HashMap<String, DestinationHandle>>,
    budgets: Mutex<HashMap<String, Arc<SourceBudget>>>,
    /// One listing per source repository, however many entries need it,
    /// even when several ask at once (entries are selected concurrently).
    listings: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Vec<String>>>>>,
    /// Whether each source registry has the referrers API, shared by the
    /// endpoints of its repositories (one probe per registry and run).
    referrers_apis: Mutex<HashMap<String, Arc<mirror_engine::ReferrersApi>>>,
    /// What the plan read of ECR repositories (`None`: it does not exist).
    repositories: Mutex<HashMap<String, Option<RepositoryOutcome>>>,
}

impl Session {
    pub fn new(
        registries: Arc<Registries>,
        options: RunOptions,
        observer: Arc<dyn Observer>,
    ) -> Self {
        let engine = Self::make_engine(&options, &observer);
        Self {
            registries,
            options,
            observer,
            engine,
            sources: Mutex::new(HashMap::new()),
            destinations: Mutex::new(HashMap::new()),
            budgets: Mutex::new(HashMap::new()),
            listings: Mutex::new(HashMap::new()),
            referrers_apis: Mutex::new(HashMap::new()),
            repositories: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn make_engine(options: &RunOptions, observer: &Arc<dyn Observer>) -> Engine {
        Engine::new(
            EngineOptions {
                max_concurrent_blobs: options.max_concurrent_blobs,
                blob_attempts: options.blob_attempts,
                max_manifests: options.max_manifests,
                max_retry_after: options.max_retry_after,
                ..EngineOptions::default()
            },
            observer.clone(),
        )
    }

    pub fn registries(&self) -> &Registries {
        &self.registries
    }

    /// Every entry's tags, each with its destination. Fails, before anything
    /// is written, on a name that cannot work or two entries writing one tag.
    pub(crate) async fn jobs(
        &self,
        entries: &[Entry],
    ) -> Result<(Vec<Job>, Vec<EntryFailure>), SyncError> {
        // Checks that need no network come first, for every entry.
        for entry in entries {
            check_entry(entry)?;
        }
        let mut jobs = Vec::new();
        let mut failures = Vec::new();
        let mut written: HashMap<String, Option<Origin>> = HashMap::new();
        // The listings (one round trip each) run side by side, in file order.
        let selections: Vec<_> = futures::stream::iter(entries.iter().map(|e| self.selected(e)))
            .buffered(crate::plan::PLAN_CONCURRENCY)
            .collect()
            .await;
        for ((index, entry), selected) in entries.iter().enumerate().zip(selections) {
            let sources = match selected {
                Ok(sources) => sources,
                Err(
                    error @ (SyncError::Listing { .. }
                    | SyncError::NothingSelected { .. }
                    | SyncError::CannotList { .. }),
                ) => {
                    failures.push(EntryFailure {
                        entry: index,
                        error,
                    });
                    continue;
                }
                Err(other) => return Err(other),
            };
            let many = !matches!(entry.tags, Tags::Named);
            for source in sources {
                let destination = self.destination_of(entry, &source, many).await?;
                let key = destination.to_string();
                if let Some(first) = written.get(&key) {
                    return Err(SyncError::DuplicateDestination {
                        destination: key,
                        first: first.clone(),
                        second: entry.origin.clone(),
                    });
                }
                written.insert(key, entry.origin.clone());
                jobs.push(Job {
                    entry: index,
                    source,
                    destination,
                });
            }
        }
        // Every shard checked every entry above (the same errors everywhere);
        // each keeps only the tags whose destination repository it owns, and
        // an entry that failed before naming any is reported by one shard.
        if let Some(shard) = self.options.shard {
            jobs.retain(|job| shard.owns(&job.destination));
            failures.retain(|failed| {
                entries
                    .get(failed.entry)
                    .is_some_and(|e| shard.owns_key(&e.from.to_string()))
            });
        }
        Ok((jobs, failures))
    }

    /// The source locations an entry selects, one per tag.
    async fn selected(&self, entry: &Entry) -> Result<Vec<ImageLocation>, SyncError> {
        match &entry.tags {
            Tags::Named => Ok(vec![entry.from.clone()]),
            Tags::List(tags) => Ok(tags.iter().map(|t| entry.from.with_tag(t)).collect()),
            Tags::Select(filter) => {
                // Referrer tags (`sha256-<hex>`, cosign's `.sig`/`.att`/`.sbom`)
                // are no images: they travel with the image they name.
                let mut all = self.list_tags(entry).await?;
                all.retain(|t| !mirror_oci::is_referrer_tag(t));
                let selected = filter.select(&all);
                if selected.is_empty() {
                    return Err(SyncError::NothingSelected {
                        origin: entry.origin.clone(),
                        source_name: entry.from.to_string(),
                        filter: filter.describe(),
                        count: all.len(),
                    });
                }
                Ok(selected.iter().map(|t| entry.from.with_tag(t)).collect())
            }
        }
    }

    /// One listing per source repository, however many entries need it.
    pub(crate) async fn list_tags(&self, entry: &Entry) -> Result<Vec<String>, SyncError> {
        let key = entry.from.to_string();
        let cell = self
            .listings
            .lock()
            .await
            .entry(key.clone())
            .or_default()
            .clone();
        // A failed listing is not kept: the next entry that needs it asks again.
        cell.get_or_try_init(|| self.list_now(entry, key))
            .await
            .cloned()
    }

    async fn list_now(&self, entry: &Entry, key: String) -> Result<Vec<String>, SyncError> {
        let failed = |source: ListingError| SyncError::Listing {
            origin: entry.origin.clone(),
            name: key.clone(),
            source: Box::new(source),
        };
        let tags = match &entry.from {
            ImageLocation::Registry(reference) => {
                let handle = self.source(&entry.from).await?;
                let registry = handle.registry.clone();
                let repository = match handle.repository {
                    Some(repository) => repository,
                    None => {
                        self.registries
                            .repository(reference, self.options.source_credentials.clone())
                            .await?
                            .0
                    }
                };
                let tags = repository
                    .tags()
                    .await
                    .map_err(|e| failed(ListingError::Registry(e)))?;
                // Finding cosign's and fallback tags then lists nothing again.
                if let Some(registry) = registry {
                    registry.know_tags(tags.iter().cloned());
                }
                tags
            }
            ImageLocation::File(
                file @ (FileLocation::OciDir { .. } | FileLocation::OciArchive { .. }),
            ) => mirror_layout::list(file)
                .await
                .map_err(|e| failed(ListingError::File(e)))?
                .into_iter()
                .filter_map(|(name, _)| name)
                .collect(),
            ImageLocation::File(file) => {
                return Err(SyncError::CannotList {
                    origin: entry.origin.clone(),
                    location: file.to_string(),
                });
            }
        };
        Ok(tags)
    }

    /// Where one selected source goes.
    async fn destination_of(
        &self,
        entry: &Entry,
        source: &ImageLocation,
        many: bool,
    ) -> Result<ImageLocation, SyncError> {
        let to = entry.to.as_deref();
        let prefix = entry.prefix.as_deref();
        Ok(match &entry.target {
            Target::Ecr => {
                let (host, _) = self.registries.own_registry().await?;
                ImageLocation::Registry(registry_destination(
                    &host.host,
                    NameRules::Ecr,
                    source,
                    to,
                    prefix,
                    &entry.origin,
                )?)
            }
            Target::Registry(base) => {
                let rules = if EcrHost::parse(base.split('/').next().unwrap_or(base)).is_some() {
                    NameRules::Ecr
                } else {
                    NameRules::Registry
                };
                ImageLocation::Registry(registry_destination(
                    base,
                    rules,
                    source,
                    to,
                    prefix,
                    &entry.origin,
                )?)
            }
            Target::Files(file) => {
                ImageLocation::File(file_destination(file, source, to, prefix, &entry.origin)?)
            }
            Target::Exact(destination) if many => match (destination, source.explicit_tag()) {
                (ImageLocation::Registry(_), Some(tag))
                | (
                    ImageLocation::File(
                        FileLocation::OciDir { .. } | FileLocation::OciArchive { .. },
                    ),
                    Some(tag),
                ) => destination.with_tag(&tag),
                _ => {
                    return Err(SyncError::TargetTakesOneImage {
                        origin: entry.origin.clone(),
                        location: destination.to_string(),
                    });
                }
            },
            Target::Exact(destination) => copy_destination(source, destination.clone()).await?,
        })
    }

    /// The source endpoint of a location, made once per repository or file.
    pub(crate) async fn source(&self, location: &ImageLocation) -> Result<SourceHandle, SyncError> {
        let key = source_key(location);
        if let Some(known) = self.sources.lock().await.get(&key) {
            return Ok(known.clone());
        }
        let handle = match location {
            ImageLocation::Registry(reference) => {
                let (repository, _) = self
                    .registries
                    .repository(reference, self.options.source_credentials.clone())
                    .await?;
                let api = self
                    .referrers_apis
                    .lock()
                    .await
                    .entry(repository.api_host().to_owned())
                    .or_default()
                    .clone();
                let registry =
                    Arc::new(RegistryEndpoint::new(repository.clone()).sharing_referrers_api(api));
                SourceHandle {
                    endpoint: registry.clone(),
                    repository: Some(repository),
                    registry: Some(registry),
                }
            }
            ImageLocation::File(file) => SourceHandle {
                endpoint: mirror_layout::open_source(file).await.map_err(|source| {
                    SyncError::Open {
                        location: file.to_string(),
                        source: Box::new(source),
                    }
                })?,
                repository: None,
                registry: None,
            },
        };
        self.sources.lock().await.insert(key, handle.clone());
        Ok(handle)
    }

    /// The pull budget of a registry source's host.
    pub(crate) async fn budget(&self, handle: &SourceHandle) -> Option<Arc<SourceBudget>> {
        let repository = handle.repository.as_ref()?;
        let host = repository.api_host().to_owned();
        let mut budgets = self.budgets.lock().await;
        Some(
            budgets
                .entry(host.clone())
                .or_insert_with(|| {
                    SourceBudget::new(
                        &host,
                        self.options.max_source_pulls,
                        Some(repository.clone()),
                    )
                })
                .clone(),
        )
    }

    pub(crate) async fn budgets(&self) -> Vec<Arc<SourceBudget>> {
        let mut all: Vec<_> = self.budgets.lock().await.values().cloned().collect();
        all.sort_by_key(|b| b.report().host);
        all
    }

    /// A registry destination endpoint, made once per repository (so ECR's
    /// repository is confirmed or created once for all its tags).
    pub(crate) async fn registry_destination(
        &self,
        reference: &mirror_oci::Reference,
        settings: &RepositorySettings,
    ) -> Result<DestinationHandle, SyncError> {
        let key = reference.name();
        if let Some(known) = self.destinations.lock().await.get(&key) {
            return Ok(known.clone());
        }
        let handle = match self
            .registries
            .repository(reference, self.options.destination_credentials.clone())
            .await?
        {
            (repository, Some(region)) => {
                let ecr = Arc::new(EcrDestination::new(
                    RegistryEndpoint::new(repository),
                    region.api.clone(),
                    settings.clone(),
                    region.pacer.clone(),
                ));
                DestinationHandle {
                    endpoint: ecr.clone(),
                    ecr: Some(ecr),
                    ecr_api: Some(region.api),
                }
            }
            (repository, None) => DestinationHandle {
                endpoint: Arc::new(RegistryEndpoint::new(repository)),
                ecr: None,
                ecr_api: None,
            },
        };
        self.destinations.lock().await.insert(key, handle.clone());
        Ok(handle)
    }

    pub(crate) async fn ecr_destinations(&self) -> Vec<(String, Arc<EcrDestination>)> {
        let mut all: Vec<_> = self
            .destinations
            .lock()
            .await
            .iter()
            .filter_map(|(name, handle)| handle.ecr.clone().map(|ecr| (name.clone(), ecr)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// An ECR repository as it is now (`None`: it does not exist), read once.
    pub(crate) async fn ecr_repository(
        &self,
        reference: &mirror_oci::Reference,
        api: &aws_sdk_ecr::Client,
    ) -> Option<RepositoryOutcome> {
        let key = reference.name();
        if let Some(known) = self.repositories.lock().await.get(&key) {
            return known.clone();
        }
        let read_only = RepositorySettings {
            no_create: true,
            ..RepositorySettings::default()
        };
        let found = mirror_ecr::ensure_repository(api, reference.repository(), &read_only)
            .await
            .ok();
        self.repositories.lock().await.insert(key, found.clone());
        found
    }
}

/// What an entry's endpoints are keyed by: one per repository or file.
fn source_key(location: &ImageLocation) -> String {
    match location {
        ImageLocation::Registry(reference) => reference.name(),
        ImageLocation::File(file) => format!("{}:{}", file.transport(), file.path().display()),
    }
}

/// Checks that need nothing but the entry.
fn check_entry(entry: &Entry) -> Result<(), SyncError> {
    let many = !matches!(entry.tags, Tags::Named);
    if many && (entry.from.explicit_tag().is_some() || entry.from.has_digest()) {
        let name = match &entry.from {
            ImageLocation::Registry(r) => r.name(),
            ImageLocation::File(file) => file.with_tag(None).to_string(),
        };
        return Err(SyncError::SelectionFromOneTag {
            origin: entry.origin.clone(),
            location: entry.from.to_string(),
            name,
        });
    }
    if many
        && let Some(to) = &entry.to
        && crate::naming::split_name_tag(to).1.is_some()
    {
        return Err(SyncError::OneTagForMany {
            origin: entry.origin.clone(),
            destination: to.clone(),
            source_name: entry.from.to_string(),
        });
    }
    if many
        && let Target::Exact(destination) = &entry.target
        && (destination.explicit_tag().is_some() || destination.has_digest())
    {
        return Err(SyncError::OneTagForMany {
            origin: entry.origin.clone(),
            destination: destination.to_string(),
            source_name: entry.from.to_string(),
        });
    }
    Ok(())
}

/// The platform filters of a job's entry.
/// The referrers a job's images take: its entry's `referrers:` (or the
/// file's default), else the run's `--referrers`.
pub(crate) fn referrers_of(
    entries: &[Entry],
    job: &Job,
    run: &ReferrerSelection,
) -> ReferrerSelection {
    entries
        .get(job.entry)
        .and_then(|entry| entry.referrers.clone())
        .unwrap_or_else(|| run.clone())
}

/// The keys a job's images must be signed by: its entry's
/// `require-signature:` (or the file's default), else the run's
/// `--require-signature`.
pub(crate) fn keyring_of(
    entries: &[Entry],
    job: &Job,
    run: &Option<Arc<mirror_signature::Keyring>>,
) -> Option<Arc<mirror_signature::Keyring>> {
    entries
        .get(job.entry)
        .and_then(|entry| entry.require_signature.clone())
        .or_else(|| run.clone())
}

pub(crate) fn platforms_of<'a>(entries: &'a [Entry], job: &Job) -> &'a [PlatformFilter] {
    entries
        .get(job.entry)
        .map_or(&[][..], |entry| entry.platforms.as_slice())
}
