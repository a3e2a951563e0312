//! `index.json` and `oci-layout`: reading, and upserting named entries the way
//! containers/image does (a named entry replaces the entry of the same name;
//! an unnamed one replaces the unnamed entry of the same digest).

use mirror_oci::{Descriptor, media_types};
use serde_json::{Value, json};

/// The annotation that names an image in a layout.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's full image name annotation, read as a fallback.
pub(crate) const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// What `oci-layout` says.
pub(crate) const OCI_LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// index.json may list many images; larger than this is refused.
pub(crate) const MAX_INDEX_BYTES: u64 = 64 * 1024 * 1024;

/// The ref name of an `index.json` entry.
pub(crate) fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

/// The ref names of entries, for error messages.
pub(crate) fn known_names(entries: &[Descriptor]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|d| ref_name(d).map(str::to_owned))
        .collect()
}

/// An empty index as written by this crate.
pub(crate) fn empty_index() -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": [],
    })
}

/// Adds `descriptor` (named `tag`, if any) to an index value, keeping every
/// other entry and every other field of the index as they were.
pub(crate) fn upsert(index: &mut Value, descriptor: &Descriptor, tag: Option<&str>) {
    let mut entry = json!({
        "mediaType": descriptor.media_type().to_string(),
        "digest": descriptor.digest().to_string(),
        "size": descriptor.size(),
    });
    if let Some(tag) = tag {
        entry["annotations"] = json!({ REF_NAME: tag });
    }
    upsert_value(index, entry);
}

/// [`upsert`] for an entry already in JSON (merging one index into another).
pub(crate) fn upsert_value(index: &mut Value, entry: Value) {
    if !index.is_object() {
        *index = empty_index();
    }
    if !index.get("manifests").is_some_and(Value::is_array) {
        index["manifests"] = json!([]);
    }
    let Some(manifests) = index.get_mut("manifests").and_then(Value::as_array_mut) else {
        return;
    };
    let name_of = |v: &Value| {
        v.pointer("/annotations/org.opencontainers.image.ref.name")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let digest_of = |v: &Value| v.get("digest").and_then(Value::as_str).map(str::to_owned);
    let name = name_of(&entry).filter(|n| !n.is_empty());
    if let Some(name) = &name {
        if let Some(at) = manifests
            .iter()
            .position(|m| name_of(m).as_deref() == Some(name))
        {
            manifests[at] = entry;
            return;
        }
    } else {
        let digest = digest_of(&entry);
        if let Some(at) = manifests
            .iter()
            .position(|m| digest_of(m) == digest && name_of(m).is_none_or(|n| n.is_empty()))
        {
            manifests[at] = entry;
            return;
        }
    }
    manifests.push(entry);
}

/// What is wrong with an `oci-layout` file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum VersionProblem {
    Malformed(String),
    Unsupported(String),
}

/// Checks the `imageLayoutVersion` of an `oci-layout` file: 1.x is read.
pub(crate) fn layout_version(bytes: &[u8]) -> Result<(), VersionProblem> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| VersionProblem::Malformed(format!("oci-layout is not JSON: {e}")))?;
    let version = value
        .get("imageLayoutVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| VersionProblem::Malformed("oci-layout has no imageLayoutVersion".into()))?;
    if version == "1" || version.starts_with("1.") {
        Ok(())
    } else {
        Err(VersionProblem::Unsupported(version.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(byte: u8) -> Descriptor {
        Descriptor::new(
            media_types::OCI_MANIFEST.into(),
            10,
            mirror_oci::digest_of(&[byte]),
        )
    }

    #[test]
    fn named_entries_replace_their_name_and_keep_others() {
        let mut index = empty_index();
        upsert(&mut index, &desc(1), Some("a"));
        upsert(&mut index, &desc(2), Some("b"));
        upsert(&mut index, &desc(3), Some("a"));
        upsert(&mut index, &desc(4), None);
        upsert(&mut index, &desc(4), None);
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 3);
        assert_eq!(
            manifests[0]["digest"],
            mirror_oci::digest_of(&[3]).to_string()
        );
        assert_eq!(manifests[0]["annotations"][REF_NAME], "a");
        assert_eq!(manifests[1]["annotations"][REF_NAME], "b");
        assert!(manifests[2].get("annotations").is_none());
    }

    #[test]
    fn layout_versions() {
        assert!(layout_version(br#"{"imageLayoutVersion":"1.0.0"}"#).is_ok());
        assert_eq!(
            layout_version(br#"{"imageLayoutVersion":"2.0.0"}"#).unwrap_err(),
            VersionProblem::Unsupported("2.0.0".into())
        );
        assert!(layout_version(b"{}").is_err());
    }
}
