//! Referrers on a registry, as a source and as a destination.
//!
//! Found at a source: the referrers API (remembered per endpoint when the
//! registry has none, so a distribution 2.8 source costs one probe per run,
//! not one per manifest), else the fallback tag index; and cosign's tags.
//! Which fallback and cosign tags exist comes from one tag listing per
//! repository and run (1000 tags a page) instead of four HEADs per manifest;
//! where listing is refused, the tags are asked for one by one.
//!
//! Kept at a destination: a referrer push answered with `OCI-Subject` is
//! listed by the registry; otherwise the engine has it added to the
//! fallback index, merged with what is there.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use mirror_oci::{
    Descriptor, Digest, RawManifest, ReferrerKind, fallback_tag, legacy_tag, media_types,
    referrers_of_index,
};
use mirror_registry::{RegistryError, Repository};

use super::Referrer;
use crate::endpoint::EndpointError;

const API_UNKNOWN: u8 = 0;
const API_PRESENT: u8 = 1;
const API_MISSING: u8 = 2;

type Answers = HashMap<(Digest, Option<String>), Arc<Vec<Referrer>>>;

/// Whether a registry has the referrers API: learned once per registry
/// and run, and shared by the endpoints of its repositories
/// ([`crate::RegistryEndpoint::sharing_referrers_api`]).
#[derive(Debug, Default)]
pub struct ReferrersApi {
    /// Unknown until asked.
    api: AtomicU8,
    /// Held while the first referrers request finds that out, so concurrent
    /// lookups do not all probe a registry without the API.
    probe: tokio::sync::Mutex<()>,
}

/// What one registry endpoint learns about referrers during a run.
#[derive(Debug, Default)]
pub(crate) struct RegistryReferrers {
    /// Whether the registry has the referrers API; shared per registry.
    pub(crate) api: Arc<ReferrersApi>,
    /// The repository's tags; `None` when the registry refused to list them.
    tags: tokio::sync::OnceCell<Option<Arc<HashSet<String>>>>,
    /// Answers already given (a signature check and the copy ask alike).
    answers: Mutex<Answers>,
}

impl RegistryReferrers {
    fn has_api(&self) -> Option<bool> {
        match self.api.api.load(Ordering::Relaxed) {
            API_PRESENT => Some(true),
            API_MISSING => Some(false),
            _ => None,
        }
    }

    fn set_api(&self, present: bool) {
        let value = if present { API_PRESENT } else { API_MISSING };
        let _ =
            self.api
                .api
                .compare_exchange(API_UNKNOWN, value, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Fresh knowledge of a repository, sharing `api` with the other
    /// repositories of its registry.
    pub(crate) fn sharing(api: Arc<ReferrersApi>) -> Self {
        Self {
            api,
            ..Self::default()
        }
    }

    /// The referrers API's listing, or `None` (remembered) without one.
    async fn api_listing(
        &self,
        repository: &Repository,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<Descriptor>>, RegistryError> {
        let _probing = match self.has_api() {
            Some(false) => return Ok(None),
            Some(true) => None,
            None => {
                let held = self.api.probe.lock().await;
                match self.has_api() {
                    Some(false) => return Ok(None),
                    Some(true) => None,
                    None => Some(held),
                }
            }
        };
        let listing = repository.list_referrers(subject, artifact_type).await?;
        self.set_api(listing.is_some());
        Ok(listing.map(|l| l.descriptors))
    }

    /// Whether this repository can hold no referrer: the registry has no
    /// referrers API (so referrers live only under tags) and its tag listing
    /// has no fallback or cosign tag.
    pub(crate) fn holds_none(&self) -> bool {
        self.has_api() == Some(false)
            && self
                .tags
                .get()
                .and_then(Option::as_ref)
                .is_some_and(|tags| !tags.iter().any(|t| mirror_oci::is_referrer_tag(t)))
    }

    /// Takes the repository's tags as listed elsewhere (first listing wins).
    pub(crate) fn know_tags(&self, tags: impl IntoIterator<Item = String>) {
        let _ = self.tags.set(Some(Arc::new(tags.into_iter().collect())));
    }

    async fn tags(&self, repository: &Repository) -> Option<Arc<HashSet<String>>> {
        self.tags
            .get_or_init(|| async {
                match repository.tags().await {
                    Ok(tags) => Some(Arc::new(tags.into_iter().collect())),
                    Err(e) => {
                        tracing::debug!(error = %e, "tags not listed; asking for referrer tags one by one");
                        None
                    }
                }
            })
            .await
            .clone()
    }

    /// The fallback index's entries, if the tag exists.
    async fn fallback_listing(
        &self,
        repository: &Repository,
        subject: &Digest,
        tags: Option<&HashSet<String>>,
    ) -> Result<Vec<Descriptor>, EndpointError> {
        if tags.is_some_and(|t| !t.contains(&fallback_tag(subject))) {
            return Ok(Vec::new());
        }
        match repository.fallback_index(subject).await? {
            Some(index) => referrers_of_index(index.bytes()).map_err(EndpointError::backend),
            None => Ok(Vec::new()),
        }
    }

    /// What refers to `subject` in `repository`, as a source.
    pub(crate) async fn source_referrers(
        &self,
        repository: &Repository,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>, EndpointError> {
        let key = (subject.clone(), artifact_type.map(str::to_owned));
        if let Some(known) = self.answers().get(&key) {
            return Ok(known.as_ref().clone());
        }
        let mut found: Vec<Referrer> = Vec::new();
        let listed = self.api_listing(repository, subject, artifact_type).await?;
        let tags = self.tags(repository).await;
        let descriptors = match listed {
            Some(listed) => listed,
            None => {
                self.fallback_listing(repository, subject, tags.as_deref())
                    .await?
            }
        };
        found.extend(descriptors.into_iter().map(Referrer::listed));
        for kind in ReferrerKind::ALL {
            let tag = legacy_tag(subject, kind);
            if tags.as_ref().is_some_and(|t| !t.contains(&tag)) {
                continue;
            }
            if let Some(head) = repository.head_manifest(&tag).await? {
                let media_type = head
                    .media_type
                    .as_deref()
                    .map(|m| m.split(';').next().unwrap_or(m).trim().to_owned())
                    .unwrap_or_else(|| media_types::OCI_MANIFEST.to_owned());
                found.push(Referrer {
                    descriptor: Descriptor::new(
                        media_type.as_str().into(),
                        head.size.unwrap_or_default(),
                        head.digest,
                    ),
                    legacy: Some(kind),
                });
            }
        }
        let mut seen = HashSet::new();
        found.retain(|r| seen.insert(r.descriptor.digest().clone()));
        self.answers().insert(key, Arc::new(found.clone()));
        Ok(found)
    }

    /// What a destination lists for `subject`: its API, else its fallback index.
    pub(crate) async fn listed(
        &self,
        repository: &Repository,
        subject: &Digest,
    ) -> Result<Vec<Descriptor>, EndpointError> {
        match self.api_listing(repository, subject, None).await? {
            Some(listed) => Ok(listed),
            None => self.fallback_listing(repository, subject, None).await,
        }
    }

    /// Pushes a referrer; whether the registry took its subject itself.
    pub(crate) async fn put(
        repository: &Repository,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<bool, EndpointError> {
        let reference = tag.map_or_else(|| manifest.digest().to_string(), str::to_owned);
        let taken = repository
            .put_manifest_with_subject(&reference, manifest)
            .await?;
        Ok(taken.is_some() && taken.as_ref() == manifest.subject().map(Descriptor::digest))
    }

    /// A manifest the repository holds, `None` if it does not.
    pub(crate) async fn stored(
        repository: &Repository,
        digest: &Digest,
    ) -> Result<Option<RawManifest>, EndpointError> {
        match repository.get_manifest(digest.as_ref(), Some(digest)).await {
            Ok(manifest) => Ok(Some(manifest)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn answers(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
