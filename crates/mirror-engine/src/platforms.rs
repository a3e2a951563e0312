//! `--platform`: which children of an index a copy keeps, and what the
//! destination tag then points at (that platform's own image, or a new index
//! of just the kept platforms and the attestations that describe them).

use std::collections::HashSet;

use bytes::Bytes;
use mirror_oci::{Descriptor, ManifestError, RawManifest, platform_string};
use tracing::warn;

use crate::copy::{CopyRequest, Engine};
use crate::endpoint::EndpointError;
use crate::error::CopyError;
use crate::report::Filtered;

/// The root a copy pushes after `--platform`.
pub(crate) struct Selected {
    pub root: RawManifest,
    /// What the filter changed, when it did.
    pub filtered: Option<Filtered>,
    /// The one platform kept, when the root became that platform's image.
    pub platform: Option<String>,
}

impl Engine {
    /// `--platform`: one match becomes that image; several become a new index
    /// of just them (and the attestations that describe them).
    pub(crate) async fn select_platforms(
        &self,
        request: &CopyRequest,
        root: RawManifest,
    ) -> Result<Selected, CopyError> {
        let unchanged = |root| Selected {
            root,
            filtered: None,
            platform: None,
        };
        let filters = &request.options.platforms;
        if filters.is_empty() || !root.is_index() {
            if !filters.is_empty() {
                warn!(
                    "{} is a single image; --platform does not apply",
                    request.source_label
                );
            }
            return Ok(unchanged(root));
        }
        let images: Vec<&Descriptor> = distinct(root.children())
            .into_iter()
            .filter(|d| {
                d.platform()
                    .as_ref()
                    .is_some_and(|p| filters.iter().any(|f| f.matches(p)))
            })
            .collect();
        if images.is_empty() {
            return Err(CopyError::NoPlatform {
                reference: request.source_label.clone(),
                wanted: filters
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                available: platforms_of(&root).join(", "),
            });
        }
        // Every platform asked for: the source index itself, digest unchanged
        // (unless the destination takes only an image and one was asked for).
        let all_images = distinct(root.children())
            .into_iter()
            .filter(|d| !is_attestation(d))
            .count();
        let single = request.destination.capabilities().single_platform && images.len() == 1;
        if images.len() == all_images && !single {
            return Ok(unchanged(root));
        }
        if let [only] = images.as_slice() {
            let child = self.fetch_manifest(request, only.digest()).await?;
            return Ok(Selected {
                filtered: Some(Filtered {
                    kind: "image".to_owned(),
                    digest: child.digest().clone(),
                    source_digest: root.digest().clone(),
                }),
                platform: only.platform().as_ref().map(platform_string),
                root: child,
            });
        }
        let kept: HashSet<String> = images.iter().map(|d| d.digest().to_string()).collect();
        let index = filter_index(&root, &kept).map_err(|e| {
            CopyError::source_side(request.source.name(), EndpointError::Manifest(e))
        })?;
        Ok(Selected {
            filtered: Some(Filtered {
                kind: "index".to_owned(),
                digest: index.digest().clone(),
                source_digest: root.digest().clone(),
            }),
            platform: None,
            root: index,
        })
    }
}

/// An index's children, each digest once, in the order first listed.
pub(crate) fn distinct(children: &[Descriptor]) -> Vec<&Descriptor> {
    let mut seen = HashSet::new();
    children
        .iter()
        .filter(|d| seen.insert(d.digest().clone()))
        .collect()
}

/// The platforms of an index's children (each child once), attestations
/// (`unknown/unknown`) left out.
pub(crate) fn platforms_of(root: &RawManifest) -> Vec<String> {
    distinct(root.children())
        .into_iter()
        .filter_map(|d| d.platform().as_ref())
        .map(platform_string)
        .filter(|p| p != "unknown/unknown")
        .collect()
}

/// Attestation manifests (BuildKit provenance/SBOM) describe another child.
fn is_attestation(descriptor: &Descriptor) -> bool {
    descriptor.annotations().as_ref().is_some_and(|a| {
        a.get("vnd.docker.reference.type")
            .is_some_and(|t| t == "attestation-manifest")
    })
}

/// A new index holding only the kept children and the attestation manifests
/// that refer to them; every other field of the source index is kept as is.
fn filter_index(root: &RawManifest, kept: &HashSet<String>) -> Result<RawManifest, ManifestError> {
    let malformed = |source| ManifestError::Malformed {
        media_type: root.media_type().to_owned(),
        source,
    };
    let mut value: serde_json::Value = serde_json::from_slice(root.bytes()).map_err(malformed)?;
    let manifests = value
        .get_mut("manifests")
        .and_then(|m| m.as_array_mut())
        .ok_or_else(|| {
            malformed(<serde_json::Error as serde::de::Error>::missing_field(
                "manifests",
            ))
        })?;
    manifests.retain(|entry| {
        let digest = entry.get("digest").and_then(|d| d.as_str()).unwrap_or("");
        let refers_to = entry
            .pointer("/annotations/vnd.docker.reference.digest")
            .and_then(|d| d.as_str())
            .unwrap_or("");
        kept.contains(digest) || kept.contains(refers_to)
    });
    let bytes = serde_json::to_vec(&value).map_err(malformed)?;
    RawManifest::parse(Bytes::from(bytes), Some(root.media_type()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filtered_index_keeps_children_and_their_attestations() {
        let a = mirror_oci::digest_of(b"a");
        let b = mirror_oci::digest_of(b"b");
        let att = mirror_oci::digest_of(b"att");
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{a}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},
{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{b}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},
{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{att}","size":1,"platform":{{"architecture":"unknown","os":"unknown"}},"annotations":{{"vnd.docker.reference.digest":"{a}","vnd.docker.reference.type":"attestation-manifest"}}}}]}}"#
        );
        let root = RawManifest::parse(Bytes::from(body), None).unwrap();
        let kept: HashSet<String> = [a.to_string()].into();
        let filtered = filter_index(&root, &kept).unwrap();
        let digests: Vec<String> = filtered
            .children()
            .iter()
            .map(|d| d.digest().to_string())
            .collect();
        assert_eq!(digests, vec![a.to_string(), att.to_string()]);
        assert_ne!(filtered.digest(), root.digest());
        assert_eq!(filtered.media_type(), root.media_type());
    }
}
