//! Referrers in an OCI layout (a directory or an oci-archive): the layout's
//! `index.json` lists them, as the image-spec allows (descriptors with
//! their artifact type, unnamed), and cosign's tags are entries named with
//! the tag (`sha256-<hex>.sig`). Read, a fallback tag index another tool
//! wrote (an entry named `sha256-<hex>`) counts too. A layout lists every
//! referrer it holds, so a referrer written here needs no fallback index.
//!
//! Such entries name no image: "the only image" of a layout (an empty
//! reference) is looked for among the others.

use std::future::Future;

use mirror_engine::Referrer;
use mirror_oci::{
    Descriptor, Digest, RawManifest, ReferrerKind, fallback_tag, is_referrer_tag, legacy_tag,
    media_types, referrers_of_index,
};
use serde_json::Value;

use crate::error::LayoutError;
use crate::index::{REF_NAME, ref_name};

/// Whether an `index.json` entry is a referrer (or a referrer tag) rather
/// than an image.
pub(crate) fn is_referrer_entry(entry: &Descriptor) -> bool {
    entry.artifact_type().is_some() || ref_name(entry).is_some_and(is_referrer_tag)
}

/// The referrers a layout lists as such (for the engine's
/// `listed_referrers`): those found at cosign's legacy tags are left out.
pub(crate) fn listed(found: Vec<Referrer>) -> Vec<Descriptor> {
    found
        .into_iter()
        .filter(|r| r.legacy.is_none())
        .map(|r| r.descriptor)
        .collect()
}

/// What refers to `subject` among a layout's entries. `load` reads a
/// manifest of the layout by digest (`None`: not stored).
pub(crate) async fn referrers_among<F, Fut>(
    entries: &[Descriptor],
    subject: &Digest,
    load: F,
) -> Result<Vec<Referrer>, LayoutError>
where
    F: Fn(Digest) -> Fut,
    Fut: Future<Output = Result<Option<RawManifest>, LayoutError>>,
{
    let fallback = fallback_tag(subject);
    let mut found: Vec<Referrer> = Vec::new();
    for entry in entries {
        let name = ref_name(entry);
        if name == Some(fallback.as_str()) {
            if let Some(index) = load(entry.digest().clone()).await? {
                let listed = referrers_of_index(index.bytes()).map_err(|source| {
                    LayoutError::ReferrersIndex {
                        tag: fallback.clone(),
                        source,
                    }
                })?;
                found.extend(listed.into_iter().map(Referrer::listed));
            }
            continue;
        }
        if let Some(kind) = ReferrerKind::ALL
            .into_iter()
            .find(|kind| name == Some(legacy_tag(subject, *kind).as_str()))
        {
            found.push(Referrer {
                descriptor: Descriptor::new(
                    entry.media_type().clone(),
                    entry.size(),
                    entry.digest().clone(),
                ),
                legacy: Some(kind),
            });
            continue;
        }
        // Tagged entries are images; an unnamed manifest may refer to one.
        let candidate = name.is_none_or(str::is_empty)
            && (entry.artifact_type().is_some()
                || entry.media_type().to_string() == media_types::OCI_MANIFEST
                || entry.media_type().to_string() == media_types::OCI_INDEX);
        if !candidate || entry.digest() == subject {
            continue;
        }
        if let Some(manifest) = load(entry.digest().clone()).await?
            && manifest.subject().map(Descriptor::digest) == Some(subject)
        {
            found.push(Referrer::listed(manifest.referrer_descriptor()));
        }
    }
    let mut seen = std::collections::HashSet::new();
    found.retain(|r| seen.insert(r.descriptor.digest().clone()));
    Ok(found)
}

/// The `index.json` entry of a referrer: its listing descriptor, unnamed.
pub(crate) fn referrer_entry(manifest: &RawManifest) -> Result<Value, LayoutError> {
    let mut entry = serde_json::to_value(manifest.referrer_descriptor())
        .map_err(|e| LayoutError::Endpoint(mirror_engine::EndpointError::backend(e)))?;
    if let Some(annotations) = entry.get_mut("annotations").and_then(Value::as_object_mut) {
        // A name would make it an image of the layout.
        annotations.remove(REF_NAME);
    }
    Ok(entry)
}
