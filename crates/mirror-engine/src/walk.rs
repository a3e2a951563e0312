//! The walk from a root manifest down to every manifest and blob a copy
//! needs: each digest visited once, manifests the destination already holds
//! skipped with everything under them, and two caps (nesting depth, distinct
//! manifests) so that a hostile index cannot make a copy fan out without bound.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use mirror_oci::{Descriptor, Digest, RawManifest, is_foreign_layer};
use tracing::debug;

use crate::copy::{CopyRequest, Engine};
use crate::error::{CopyError, Limit};

/// Indexes nest at most this deep (the root is level 1).
pub const MAX_NESTING: usize = 4;

/// What a copy walks by default at most: distinct manifests, root included.
/// Real images hold a few dozen (platforms, attestations, signatures).
pub const DEFAULT_MAX_MANIFESTS: usize = 1_000;

/// An image manifest to push once its blobs are in.
pub(crate) struct ImageNode {
    pub manifest: RawManifest,
    pub blobs: Vec<Descriptor>,
    /// The root goes up once, by the destination reference, after everything else.
    pub is_root: bool,
}

/// What the walk found to copy: every manifest once.
#[derive(Default)]
pub(crate) struct Plan {
    pub images: Vec<ImageNode>,
    /// Index manifests below the root, each after every index it lists.
    pub indexes: Vec<RawManifest>,
    /// Child manifests the destination already holds (with all they reference).
    pub skipped_manifests: u64,
    pub foreign_skipped: u64,
}

impl Engine {
    /// Fetches every manifest below the root that the destination lacks,
    /// each digest once.
    pub(crate) async fn walk(
        &self,
        request: &CopyRequest,
        root: &RawManifest,
    ) -> Result<Plan, CopyError> {
        let limit = self.options().max_manifests.max(1);
        let mut plan = Plan::default();
        let mut visited: HashSet<Digest> = HashSet::from([root.digest().clone()]);
        let mut level: Vec<RawManifest> = vec![root.clone()];
        let mut depth = 0;
        while !level.is_empty() {
            depth += 1;
            if depth > MAX_NESTING {
                return Err(CopyError::Limit {
                    reference: request.source_label.clone(),
                    limit: Limit::Nesting(MAX_NESTING),
                });
            }
            let mut wanted = Vec::new();
            for manifest in level {
                if manifest.is_index() {
                    for child in manifest.children() {
                        if !visited.insert(child.digest().clone()) {
                            continue;
                        }
                        if visited.len() > limit {
                            return Err(CopyError::Limit {
                                reference: request.source_label.clone(),
                                limit: Limit::Manifests(limit),
                            });
                        }
                        wanted.push(child.clone());
                    }
                    if depth > 1 {
                        plan.indexes.push(manifest);
                    }
                } else {
                    let mut blobs = Vec::new();
                    for blob in manifest.blobs() {
                        if is_foreign_layer(blob.media_type().to_string().as_str())
                            && !request.options.include_foreign
                        {
                            plan.foreign_skipped += 1;
                            continue;
                        }
                        blobs.push(blob.clone());
                    }
                    plan.images.push(ImageNode {
                        manifest,
                        blobs,
                        is_root: depth == 1,
                    });
                }
            }
            let fetched = futures::stream::iter(
                wanted
                    .into_iter()
                    .map(|child| self.fetch_child(request, child)),
            )
            .buffered(self.options().manifest_concurrency.max(1))
            .try_collect::<Vec<Option<RawManifest>>>()
            .await?;
            level = Vec::new();
            for child in fetched {
                match child {
                    Some(child) => level.push(child),
                    None => plan.skipped_manifests += 1,
                }
            }
        }
        plan.indexes = children_first(plan.indexes);
        Ok(plan)
    }

    /// A child manifest to copy, or `None` when the destination has it already
    /// (a registry never holds a manifest without everything it references).
    async fn fetch_child(
        &self,
        request: &CopyRequest,
        child: Descriptor,
    ) -> Result<Option<RawManifest>, CopyError> {
        let destination = &request.destination;
        if self.is_present(destination.as_ref(), child.digest()) {
            return Ok(None);
        }
        let digest = child.digest().to_string();
        if destination
            .manifest_digest(&digest)
            .await
            .map_err(|e| CopyError::destination_side(destination.name(), e))?
            .is_some()
        {
            debug!(%digest, "child manifest already at destination");
            self.mark_present(destination.as_ref(), child.digest());
            return Ok(None);
        }
        self.fetch_manifest(request, child.digest()).await.map(Some)
    }

    /// Fetches a manifest from the source; concurrent fetches of one digest
    /// from one source (two tags of one image) share one GET.
    pub(crate) async fn fetch_manifest(
        &self,
        request: &CopyRequest,
        digest: &Digest,
    ) -> Result<RawManifest, CopyError> {
        let source = request.source.clone();
        let wanted = digest.clone();
        let claim = self
            .tables()
            .manifests
            .claim((source.name(), digest.clone()), move || {
                async move {
                    source
                        .manifest(&wanted)
                        .await
                        .map_err(|e| Arc::new(CopyError::source_side(source.name(), e)))
                }
                .boxed()
            });
        claim.outcome().await.map_err(CopyError::Shared)
    }
}

/// Orders indexes so that each comes after every index it lists (a child
/// listed at two depths is pushed once, before both parents).
fn children_first(indexes: Vec<RawManifest>) -> Vec<RawManifest> {
    let by_digest: HashMap<Digest, &RawManifest> =
        indexes.iter().map(|m| (m.digest().clone(), m)).collect();
    fn height(
        manifest: &RawManifest,
        by_digest: &HashMap<Digest, &RawManifest>,
        memo: &mut HashMap<Digest, usize>,
    ) -> usize {
        if let Some(h) = memo.get(manifest.digest()) {
            return *h;
        }
        let h = manifest
            .children()
            .iter()
            .filter_map(|c| by_digest.get(c.digest()))
            .map(|child| 1 + height(child, by_digest, memo))
            .max()
            .unwrap_or(0);
        memo.insert(manifest.digest().clone(), h);
        h
    }
    let mut memo = HashMap::new();
    let mut ordered: Vec<(usize, &RawManifest)> = indexes
        .iter()
        .map(|m| (height(m, &by_digest, &mut memo), m))
        .collect();
    ordered.sort_by_key(|(h, _)| *h);
    ordered.into_iter().map(|(_, m)| m.clone()).collect()
}
