//! Referrers travel with an image: for the root and every child manifest of a
//! copy, what refers to it at the source (OCI 1.1 referrers through the API
//! or the fallback tag index, cosign's `.sig`/`.att`/`.sbom` tags) is copied
//! too, recursively (a signature of an SBOM), byte for byte.
//!
//! The order is the engine's: a referrer goes up after its subject and its
//! own blobs and before its own referrers; a subject's fallback tag index
//! after the referrers it lists; all of it before the root's tag, so a
//! consumer never sees the mirrored tag without its signatures. Where the
//! destination answers a push with `OCI-Subject` it lists the referrer
//! itself; elsewhere the fallback index is merged, never dropping an entry
//! another tool wrote. A referrer that cannot be copied (refused by the
//! destination, broken at the source) is counted and reported, and never
//! fails or undoes the image.
//!
//! Costs: one referrers request per manifest at the source (none once the
//! source said it has no referrers API), one tag listing per source
//! repository (cosign's tags and fallback tags are found in it), and at the
//! destination one listing per manifest that has referrers.

mod registry;
mod signature;

use std::collections::HashSet;
use std::str::FromStr;

use futures::StreamExt as _;
use mirror_oci::{Descriptor, Digest, ManifestKind, RawManifest, ReferrerKind, legacy_tag};
use serde::Serialize;
use tokio::sync::OnceCell;
use tracing::{debug, warn};

use crate::copy::{CopyRequest, Engine};
use crate::report::{BlobCounts, CopyReport};

pub use registry::ReferrersApi;
pub(crate) use registry::RegistryReferrers;
pub use signature::SignatureReport;

/// Referrers of referrers followed at most (image -> SBOM -> its signature
/// -> ...): a hostile source cannot make a copy recurse without bound.
const MAX_DEPTH: usize = 4;
/// Referrers one copy handles at most, all levels together.
const MAX_REFERRERS: usize = 1024;

/// A manifest that refers to another, as a source lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    /// As listed: media type, digest, size, artifact type, annotations.
    pub descriptor: Descriptor,
    /// Found at cosign's tag of this kind (`sha256-<hex>.sig`) rather than
    /// through a `subject`: copied to the same tag.
    pub legacy: Option<ReferrerKind>,
}

impl Referrer {
    /// A referrer listed through `subject` (the API, a fallback index).
    pub fn listed(descriptor: Descriptor) -> Self {
        Self {
            descriptor,
            legacy: None,
        }
    }

    /// The artifact type the listing gave, if any.
    pub fn artifact_type(&self) -> Option<String> {
        self.descriptor
            .artifact_type()
            .as_ref()
            .map(ToString::to_string)
    }

    /// The kind a referrer is, by its artifact type or cosign tag.
    pub fn kind(&self) -> Option<ReferrerKind> {
        self.legacy.or_else(|| {
            let artifact_type = self.artifact_type()?;
            ReferrerKind::ALL
                .into_iter()
                .find(|kind| kind.artifact_types().contains(&artifact_type.as_str()))
        })
    }
}

/// Which referrers travel with an image (`--referrers`): none, all (the
/// default), or only some kinds (`signature`, `sbom`, `attestation`) and
/// artifact types. The choice applies to what refers to the image's own
/// manifests; whatever refers to a chosen referrer (a signature of an SBOM)
/// travels with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ReferrerSelection {
    None,
    #[default]
    All,
    Only {
        kinds: Vec<ReferrerKind>,
        artifact_types: Vec<String>,
    },
}

/// Why a `--referrers` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a referrer choice: give none, all, or a comma-separated list of signature, sbom, attestation and artifact types (TYPE/SUBTYPE, e.g. application/spdx+json)"
)]
pub struct SelectionError(String);

impl FromStr for ReferrerSelection {
    type Err = SelectionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "none" => return Ok(Self::None),
            "all" => return Ok(Self::All),
            _ => {}
        }
        let mut kinds = Vec::new();
        let mut artifact_types = Vec::new();
        for item in text.split(',').map(str::trim) {
            if let Some(kind) = ReferrerKind::from_name(item) {
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            } else if item.split_once('/').is_some_and(|(kind, subtype)| {
                !kind.is_empty() && !subtype.is_empty() && !item.contains(char::is_whitespace)
            }) {
                artifact_types.push(item.to_owned());
            } else {
                return Err(SelectionError(item.to_owned()));
            }
        }
        Ok(Self::Only {
            kinds,
            artifact_types,
        })
    }
}

impl ReferrerSelection {
    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }

    /// Whether a referrer of the image's own manifests is chosen.
    pub fn matches(&self, referrer: &Referrer) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Only {
                kinds,
                artifact_types,
            } => {
                referrer.kind().is_some_and(|kind| kinds.contains(&kind))
                    || (referrer.legacy.is_none()
                        && referrer
                            .artifact_type()
                            .is_some_and(|t| artifact_types.contains(&t)))
            }
        }
    }

    /// The `artifactType` to ask a filtering registry for: only when one
    /// explicit type is chosen (the API takes one).
    fn server_filter(&self) -> Option<&str> {
        match self {
            Self::Only {
                kinds,
                artifact_types,
            } if kinds.is_empty() => match artifact_types.as_slice() {
                [only] => Some(only),
                _ => None,
            },
            _ => None,
        }
    }
}

/// What happened to the referrers of one copy.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct ReferrerCounts {
    /// Pushed to the destination (to push, in a dry run).
    pub copied: u64,
    /// At the destination already.
    pub skipped: u64,
    /// Not chosen by `--referrers`, or the destination cannot hold them.
    pub left_out: u64,
    /// Could not be copied; each says why in `errors`. The image itself is
    /// copied all the same.
    pub failed: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl ReferrerCounts {
    fn fail(&mut self, message: String) {
        debug!("{message}");
        self.failed += 1;
        self.errors.push(message);
    }

    fn merge(&mut self, other: Self) {
        self.copied += other.copied;
        self.skipped += other.skipped;
        self.left_out += other.left_out;
        self.failed += other.failed;
        self.errors.extend(other.errors);
    }
}

/// The referrers of one copy, and the blobs they brought.
#[derive(Debug, Default)]
pub(crate) struct ReferrerOutcome {
    pub counts: ReferrerCounts,
    pub blobs: BlobCounts,
    pub bytes: u64,
}

impl ReferrerOutcome {
    fn merge(&mut self, other: Self) {
        self.counts.merge(other.counts);
        self.blobs.copied += other.blobs.copied;
        self.blobs.skipped += other.blobs.skipped;
        self.blobs.mounted += other.blobs.mounted;
        self.blobs.foreign_skipped += other.blobs.foreign_skipped;
        self.bytes += other.bytes;
    }

    /// Adds the referrers and their blobs to the copy's report.
    pub(crate) fn add_to(self, report: &mut CopyReport) {
        report.referrers.merge(self.counts);
        report.blobs.copied += self.blobs.copied;
        report.blobs.skipped += self.blobs.skipped;
        report.blobs.mounted += self.blobs.mounted;
        report.bytes += self.bytes;
    }
}

/// An error with its causes, for a warning that has one line to say it in
/// (each error's own message says only its own part).
pub(crate) struct Said<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Said<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut last = String::new();
        let mut error = Some(self.0);
        let mut first = true;
        while let Some(e) = error {
            let text = e.to_string();
            if !text.is_empty() && text != last && !last.ends_with(&text) {
                if !first {
                    f.write_str(": ")?;
                }
                f.write_str(&text)?;
                first = false;
                last = text;
            }
            error = e.source();
        }
        Ok(())
    }
}

/// The manifests of an image whose referrers travel with it: the root and
/// every child of the indexes walked, unless `--platform` made the root a
/// new index (nothing refers to a digest that only now exists: the kept
/// children carry their own).
pub(crate) fn subjects_of(
    root: &RawManifest,
    root_is_new: bool,
    indexes: &[RawManifest],
) -> Vec<Digest> {
    let mut subjects = Vec::new();
    if !root_is_new {
        subjects.push(root.digest().clone());
    }
    for index in std::iter::once(root).chain(indexes) {
        subjects.extend(index.children().iter().map(|d| d.digest().clone()));
    }
    subjects
}

/// One copy's walk over referrers.
struct Walk<'a> {
    engine: &'a Engine,
    request: &'a CopyRequest,
    /// The root when it is not at the destination yet: pushed by digest
    /// before the first referrer of it (its tag still goes up last).
    pending_root: Option<&'a RawManifest>,
    root_pushed: OnceCell<()>,
}

impl Engine {
    /// Copies what refers to `subjects` (the image's manifests), and what
    /// refers to that, to the request's destination. Never fails: what
    /// could not be copied is in the outcome's counts.
    pub(crate) async fn copy_referrers(
        &self,
        request: &CopyRequest,
        subjects: Vec<Digest>,
        pending_root: Option<&RawManifest>,
    ) -> ReferrerOutcome {
        let mut outcome = ReferrerOutcome::default();
        let selection = &request.options.referrers;
        if selection.is_none() || subjects.is_empty() {
            return outcome;
        }
        let walk = Walk {
            engine: self,
            request,
            pending_root,
            root_pushed: OnceCell::new(),
        };
        let concurrency = self.options().manifest_concurrency.max(1);
        let mut seen: HashSet<Digest> = HashSet::new();
        let mut level: Vec<Digest> = subjects
            .into_iter()
            .filter(|d| seen.insert(d.clone()))
            .collect();
        let mut budget = MAX_REFERRERS;
        for depth in 0..MAX_DEPTH {
            if level.is_empty() {
                break;
            }
            let hint = if depth == 0 {
                selection.server_filter()
            } else {
                None
            };
            let source = &request.source;
            let found: Vec<(Digest, Result<Vec<Referrer>, String>)> =
                // Owned digests: a future over a borrowed one would not be
                // `Send` for every lifetime, and a copy must be spawnable.
                futures::stream::iter(level.iter().cloned().map(|subject| async move {
                    let listed = source
                        .referrers(&subject, hint)
                        .await
                        .map_err(|e| format!("source {}: {}", source.name(), Said(&e)));
                    (subject, listed)
                }))
                .buffered(concurrency)
                .collect()
                .await;
            let mut subjects = Vec::new();
            for (subject, listed) in found {
                let referrers = match listed {
                    Ok(referrers) => referrers,
                    Err(message) => {
                        outcome.counts.fail(format!(
                            "the referrers of {subject} could not be listed: {message}"
                        ));
                        continue;
                    }
                };
                let mut chosen = Vec::new();
                for referrer in referrers {
                    if depth == 0 && !selection.matches(&referrer) {
                        outcome.counts.left_out += 1;
                    } else if seen.insert(referrer.descriptor.digest().clone()) {
                        chosen.push(referrer);
                    }
                }
                if chosen.len() > budget {
                    let over = chosen.len() - budget;
                    chosen.truncate(budget);
                    outcome.counts.left_out += over as u64;
                    outcome.counts.fail(format!(
                        "more than {MAX_REFERRERS} referrers; {over} referrer(s) of {subject} left out"
                    ));
                }
                budget -= chosen.len();
                if !chosen.is_empty() {
                    subjects.push((subject, chosen));
                }
            }
            if request.destination.capabilities().without_referrers {
                let left: u64 = subjects.iter().map(|(_, r)| r.len() as u64).sum();
                if left > 0 {
                    outcome.counts.left_out += left;
                    let destination = request.destination.name();
                    if self.note_once(&destination) {
                        warn!(
                            "{destination} cannot hold referrers (signatures, SBOMs, attestations): \
                             they are left out (an oci-archive: or oci: destination keeps them)"
                        );
                    }
                }
                break;
            }
            let results: Vec<(ReferrerOutcome, Vec<Digest>)> =
                futures::stream::iter(subjects.into_iter().map(|(subject, referrers)| {
                    let walk = &walk;
                    async move { walk.subject(&subject, referrers).await }
                }))
                .buffer_unordered(concurrency)
                .collect()
                .await;
            level = Vec::new();
            for (subject_outcome, next) in results {
                outcome.merge(subject_outcome);
                level.extend(next);
            }
        }
        if !level.is_empty() {
            debug!(
                count = level.len(),
                "referrers nested more than {MAX_DEPTH} deep are not followed"
            );
        }
        outcome
    }
}

impl Walk<'_> {
    /// Copies the chosen referrers of one subject; returns what happened and
    /// the referrers to look under next.
    async fn subject(
        &self,
        subject: &Digest,
        referrers: Vec<Referrer>,
    ) -> (ReferrerOutcome, Vec<Digest>) {
        let mut outcome = ReferrerOutcome::default();
        let destination = &self.request.destination;
        let next: Vec<Digest> = referrers
            .iter()
            .map(|r| r.descriptor.digest().clone())
            .collect();
        let listed: HashSet<Digest> = if referrers.iter().any(|r| r.legacy.is_none()) {
            match destination.listed_referrers(subject).await {
                Ok(listed) => listed.iter().map(|d| d.digest().clone()).collect(),
                Err(e) => {
                    debug!(%subject, error = %e, "destination referrers unknown; pushing them all");
                    HashSet::new()
                }
            }
        } else {
            HashSet::new()
        };
        let mut unlisted = Vec::new();
        for referrer in referrers {
            let digest = referrer.descriptor.digest().clone();
            let tag = referrer.legacy.map(|kind| legacy_tag(subject, kind));
            let at_tag = match &tag {
                Some(tag) => match destination.manifest_digest(tag).await {
                    Ok(found) => found,
                    Err(e) => {
                        outcome.counts.fail(format!(
                            "referrer {digest} of {subject}: checking {tag} at the destination: {}",
                            Said(&e)
                        ));
                        continue;
                    }
                },
                None => None,
            };
            if at_tag.as_ref() == Some(&digest) || (tag.is_none() && listed.contains(&digest)) {
                outcome.counts.skipped += 1;
                continue;
            }
            match self.copy(subject, &referrer, tag.as_deref(), at_tag).await {
                Ok((indexed, blobs)) => {
                    outcome.counts.copied += 1;
                    outcome.merge(blobs);
                    if !indexed && tag.is_none() {
                        unlisted.push(referrer.descriptor);
                    }
                }
                Err(message) => outcome.counts.fail(message),
            }
        }
        if !unlisted.is_empty()
            && !self.request.options.dry_run
            && let Err(e) = destination.add_referrers(subject, &unlisted).await
        {
            outcome.counts.fail(format!(
                "the referrers of {subject} were pushed but could not be listed at the destination: {}",
                Said(&e)
            ));
        }
        (outcome, next)
    }

    /// Copies one referrer: its blobs (and children, for an index), then the
    /// manifest. Returns whether the destination listed it itself.
    async fn copy(
        &self,
        subject: &Digest,
        referrer: &Referrer,
        tag: Option<&str>,
        replaces: Option<Digest>,
    ) -> Result<(bool, ReferrerOutcome), String> {
        let request = self.request;
        let source = &request.source;
        let destination = &request.destination;
        let digest = referrer.descriptor.digest();
        let what = match tag {
            Some(tag) => format!("{tag} ({digest})"),
            None => format!("referrer {digest} of {subject}"),
        };
        let manifest = source
            .manifest(digest)
            .await
            .map_err(|e| format!("{what}: source {}: {}", source.name(), Said(&e)))?;
        if tag.is_none() && manifest.subject().map(Descriptor::digest) != Some(subject) {
            return Err(format!(
                "{what} is listed as a referrer but names {} as its subject; left out",
                manifest
                    .subject()
                    .map_or_else(|| "nothing".to_owned(), |s| s.digest().to_string())
            ));
        }
        if let (Some(tag), Some(existing)) = (tag, replaces)
            && let Ok(Some(theirs)) = destination.stored_manifest(&existing).await
        {
            // cosign appends signatures to one manifest: replace it only by
            // one that holds every layer it holds, annotations included (the
            // signature is an annotation: two keys signing one payload make
            // layers of one digest).
            let layers = |m: &RawManifest| match m.kind() {
                ManifestKind::Image(image) => image.layers().clone(),
                ManifestKind::Index(_) => Vec::new(),
            };
            let ours = layers(&manifest);
            if !layers(&theirs).iter().all(|layer| ours.contains(layer)) {
                return Err(format!(
                    "{tag} at the destination ({existing}) holds signatures the source's ({digest}) lacks; left as it is"
                ));
            }
        }
        let engine = self.engine;
        let plan = engine
            .walk(request, &manifest)
            .await
            .map_err(|e| format!("{what}: {}", Said(&e)))?;
        // The walk left out foreign layers already (unless asked for).
        let mut blobs: Vec<Descriptor> = Vec::new();
        let mut unique = HashSet::new();
        for image in &plan.images {
            for blob in &image.blobs {
                if unique.insert(blob.digest().clone()) {
                    blobs.push(blob.clone());
                }
            }
        }
        let (counts, bytes) = engine
            .copy_blobs(request, &blobs)
            .await
            .map_err(|e| format!("{what}: {}", Said(&e)))?;
        let outcome = ReferrerOutcome {
            blobs: counts,
            bytes,
            ..ReferrerOutcome::default()
        };
        if request.options.dry_run {
            return Ok((true, outcome));
        }
        let children = plan
            .images
            .iter()
            .filter(|i| !i.is_root)
            .map(|i| &i.manifest)
            .chain(&plan.indexes);
        for child in children {
            destination
                .put_manifest(child.digest().as_ref(), child)
                .await
                .map_err(|e| format!("{what}: destination {}: {}", destination.name(), Said(&e)))?;
            engine.mark_present(destination.as_ref(), child.digest());
        }
        if let Some(root) = self.pending_root
            && root.digest() == subject
        {
            self.root_pushed
                .get_or_try_init(|| async {
                    destination
                        .put_manifest(root.digest().as_ref(), root)
                        .await
                        .map_err(|e| {
                            format!("{what}: pushing its subject {subject} first: {}", Said(&e))
                        })
                })
                .await?;
        }
        let indexed = destination
            .put_referrer(&manifest, tag)
            .await
            .map_err(|e| format!("{what}: destination {}: {}", destination.name(), Said(&e)))?;
        engine.observer().manifest_pushed(
            tag.map_or_else(|| digest.to_string(), str::to_owned)
                .as_str(),
            digest,
        );
        Ok((indexed, outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mirror_oci::{MediaType, artifact_types};

    fn referrer(artifact_type: Option<&str>, legacy: Option<ReferrerKind>) -> Referrer {
        let mut descriptor = Descriptor::new(
            MediaType::ImageManifest,
            10,
            mirror_oci::digest_of(b"referrer"),
        );
        descriptor.set_artifact_type(artifact_type.map(MediaType::from));
        Referrer { descriptor, legacy }
    }

    #[test]
    fn choices_parse_and_say_what_is_wrong() {
        assert_eq!("none".parse(), Ok(ReferrerSelection::None));
        assert_eq!("all".parse(), Ok(ReferrerSelection::All));
        assert_eq!(
            "signatures, application/spdx+json".parse(),
            Ok(ReferrerSelection::Only {
                kinds: vec![ReferrerKind::Signature],
                artifact_types: vec!["application/spdx+json".to_owned()],
            })
        );
        let error = "signature,bogus".parse::<ReferrerSelection>().unwrap_err();
        assert!(error.to_string().contains("`bogus`"), "{error}");
    }

    #[test]
    fn kinds_cover_api_referrers_and_cosign_tags() {
        let signatures: ReferrerSelection = "signature".parse().unwrap();
        assert!(signatures.matches(&referrer(Some(artifact_types::COSIGN_SIGNATURE), None)));
        assert!(signatures.matches(&referrer(None, Some(ReferrerKind::Signature))));
        assert!(!signatures.matches(&referrer(Some(artifact_types::SPDX_JSON), None)));
        assert!(!signatures.matches(&referrer(None, Some(ReferrerKind::Attestation))));
        let spdx: ReferrerSelection = "application/spdx+json".parse().unwrap();
        assert!(spdx.matches(&referrer(Some(artifact_types::SPDX_JSON), None)));
        assert_eq!(spdx.server_filter(), Some(artifact_types::SPDX_JSON));
        assert_eq!(signatures.server_filter(), None);
        assert!(ReferrerSelection::All.matches(&referrer(Some("application/x-anything"), None)));
        assert!(!ReferrerSelection::None.matches(&referrer(None, None)));
    }
}
