//! Docker's `manifest.json` as the writer keeps it: read from an existing
//! layout or archive, images added and tags moved ([`upsert_image`]), and
//! read back for callers ([`saved_image`]). Its own file because it is the
//! one place that edits `manifest.json` entries as JSON values.

use std::path::Path;

use mirror_oci::Digest;
use serde_json::{Value, json};

use crate::archive::OciArchive;
use crate::error::LayoutError;
use crate::fsutil::blob_rel;

/// `manifest.json` is read whole; larger is refused.
pub(crate) const MAX_MANIFEST_JSON_BYTES: u64 = 16 * 1024 * 1024;

/// A `manifest.json` entry's `RepoTags` (none when absent or null).
fn tags_of(entry: &Value) -> Vec<String> {
    entry
        .get("RepoTags")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Adds an image (`config` and `layers` as archive paths) to the entries of
/// a `manifest.json`, as `tag` or untagged: the same config and layers are
/// one entry (tags gathered); a tag moves from any other entry, and an entry
/// left without tags by that goes.
pub(crate) fn upsert_image(
    entries: &mut Vec<Value>,
    config: &str,
    layers: &[String],
    tag: Option<&str>,
) {
    let same = |entry: &Value| {
        entry.get("Config").and_then(Value::as_str) == Some(config)
            && entry
                .get("Layers")
                .and_then(Value::as_array)
                .is_some_and(|l| {
                    l.len() == layers.len()
                        && l.iter().zip(layers).all(|(a, b)| a.as_str() == Some(b))
                })
    };
    if let Some(tag) = tag {
        entries.retain_mut(|entry| {
            if same(entry) {
                return true;
            }
            let tags = tags_of(entry);
            if !tags.iter().any(|t| t == tag) {
                return true;
            }
            let kept: Vec<String> = tags.into_iter().filter(|t| t != tag).collect();
            if kept.is_empty() {
                return false;
            }
            entry["RepoTags"] = json!(kept);
            true
        });
    }
    match entries.iter_mut().find(|entry| same(entry)) {
        Some(entry) => {
            if let Some(tag) = tag {
                let mut tags = tags_of(entry);
                if !tags.iter().any(|t| t == tag) {
                    tags.push(tag.to_owned());
                    entry["RepoTags"] = json!(tags);
                }
            }
        }
        None => entries.push(json!({
            "Config": config,
            "RepoTags": tag.map(|t| vec![t]),
            "Layers": layers,
        })),
    }
}

/// An image of a docker-archive as Docker's `manifest.json` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedImage {
    /// The config digest: the image ID `docker load` reports.
    pub image_id: Digest,
    /// Its `RepoTags` (empty: loaded untagged).
    pub repo_tags: Vec<String>,
}

/// How `manifest.json` of a docker-archive written by this crate lists the
/// image whose manifest is `manifest` (as `index.json` holds it).
pub async fn saved_image(path: &Path, manifest: &Digest) -> Result<SavedImage, LayoutError> {
    let archive = OciArchive::open(path).await?;
    let reader = archive.reader();
    let manifest = reader.manifest(manifest).await?;
    let config = manifest
        .blobs()
        .first()
        .map(|d| d.digest().clone())
        .ok_or_else(|| LayoutError::Malformed {
            path: path.to_owned(),
            reason: format!("{} is an index, not an image", manifest.digest()),
        })?;
    let config_name = blob_rel(&config, "config")?;
    let entries = read_manifest_json(&reader.store).await?.unwrap_or_default();
    let entry = entries
        .iter()
        .find(|e| e.get("Config").and_then(Value::as_str) == Some(config_name.as_str()))
        .ok_or_else(|| LayoutError::Malformed {
            path: path.to_owned(),
            reason: format!("manifest.json does not list the image with config {config}"),
        })?;
    Ok(SavedImage {
        image_id: config,
        repo_tags: tags_of(entry),
    })
}

/// The entries of `manifest.json`, if the layout or archive has one.
pub(crate) async fn read_manifest_json(
    store: &crate::store::Store,
) -> Result<Option<Vec<Value>>, LayoutError> {
    let Some(bytes) = store
        .read_file("manifest.json", MAX_MANIFEST_JSON_BYTES)
        .await?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| LayoutError::Malformed {
            path: store.path().join("manifest.json"),
            reason: format!("not a docker manifest.json (a list of images): {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    /// (Config, RepoTags) of every entry.
    fn summary(entries: &[Value]) -> Vec<(String, Value)> {
        entries
            .iter()
            .map(|e| {
                (
                    e["Config"].as_str().unwrap().to_owned(),
                    e["RepoTags"].clone(),
                )
            })
            .collect()
    }

    #[test]
    fn images_are_listed_once_and_tags_move() {
        let mut entries = Vec::new();
        upsert_image(&mut entries, "c1", &layers(&["l1", "l2"]), Some("app:1"));
        upsert_image(
            &mut entries,
            "c1",
            &layers(&["l1", "l2"]),
            Some("app:latest"),
        );
        upsert_image(&mut entries, "c2", &layers(&["l1", "l3"]), Some("other:1"));
        // The same again changes nothing.
        upsert_image(&mut entries, "c1", &layers(&["l1", "l2"]), Some("app:1"));
        upsert_image(&mut entries, "c1", &layers(&["l1", "l2"]), None);
        assert_eq!(
            summary(&entries),
            vec![
                ("c1".to_owned(), json!(["app:1", "app:latest"])),
                ("c2".to_owned(), json!(["other:1"])),
            ]
        );
        assert_eq!(entries[0]["Layers"], json!(["l1", "l2"]));

        // A tag written again moves; an entry left without tags goes.
        upsert_image(&mut entries, "c3", &layers(&["l4"]), Some("app:1"));
        upsert_image(&mut entries, "c4", &layers(&["l4"]), Some("other:1"));
        assert_eq!(
            summary(&entries),
            vec![
                ("c1".to_owned(), json!(["app:latest"])),
                ("c3".to_owned(), json!(["app:1"])),
                ("c4".to_owned(), json!(["other:1"])),
            ]
        );

        // Untagged images are listed once, with RepoTags null; other fields
        // of an existing entry are kept.
        entries[0]["LayerSources"] = json!({});
        upsert_image(&mut entries, "c5", &layers(&["l5"]), None);
        upsert_image(&mut entries, "c5", &layers(&["l5"]), None);
        upsert_image(&mut entries, "c1", &layers(&["l1", "l2"]), Some("app:2"));
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[3]["RepoTags"], Value::Null);
        assert_eq!(entries[0]["RepoTags"], json!(["app:latest", "app:2"]));
        assert_eq!(entries[0]["LayerSources"], json!({}));
        // Same config, other layers: another image.
        upsert_image(&mut entries, "c5", &layers(&["l6"]), None);
        assert_eq!(entries.len(), 5);
    }
}
