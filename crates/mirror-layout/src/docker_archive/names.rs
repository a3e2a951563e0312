//! Docker's image names in a docker-archive: the `RepoTags` entry a
//! reference or an `index.json` entry stands for, and containerd's full name
//! for a tagged entry. Pure string work on references, shared by the writer
//! (which names the images it adds) and by the public [`repo_tag`] checks.

use mirror_oci::Reference;
use serde_json::Value;

use crate::error::LayoutError;
use crate::index::CONTAINERD_NAME;

/// The `RepoTags` entry a docker-archive destination reference names:
/// Docker's familiar `NAME:TAG` (`docker.io/library/python:3.10` ->
/// `python:3.10`; no tag: `latest`). `@N` and digests are refused: they
/// select an image to read.
pub fn repo_tag(reference: &str) -> Result<String, LayoutError> {
    let invalid = |reason: String| LayoutError::InvalidRepoTag {
        reference: reference.to_owned(),
        reason,
    };
    if reference.starts_with('@') {
        return Err(invalid(
            "it selects an image to read; a docker-archive destination names its image \
             NAME:TAG (for example app:1)"
                .to_owned(),
        ));
    }
    let parsed: Reference = reference
        .parse()
        .map_err(|e: mirror_oci::ReferenceError| invalid(e.to_string()))?;
    if parsed.digest().is_some() {
        return Err(invalid(
            "a docker-archive image is named by NAME:TAG, not by digest".to_owned(),
        ));
    }
    Ok(familiar(&parsed))
}

/// `name` parsed if it is a reference with an explicit tag and no digest
/// (`v1`, a plain layout tag, is not).
fn tagged_name(name: &str) -> Option<Reference> {
    let parsed: Reference = name.parse().ok()?;
    (parsed.has_explicit_tag() && parsed.digest().is_none()).then_some(parsed)
}

/// The `RepoTags` entry an image name stands for (a layout's ref name, a
/// source reference): Docker's familiar `NAME:TAG` if `name` has an explicit
/// tag and no digest; `None` for a plain tag such as `v1` or `latest`.
pub fn repo_tag_of(name: &str) -> Option<String> {
    tagged_name(name).map(|r| familiar(&r))
}

fn familiar(reference: &Reference) -> String {
    format!(
        "{}:{}",
        reference.familiar_name(),
        reference.tag().unwrap_or("latest")
    )
}

/// The `RepoTags` entry of an `index.json` entry (see the module docs).
pub(crate) fn entry_repo_tag(entry: &Value) -> Option<String> {
    let annotation = |key: &str| {
        entry
            .get("annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
    };
    annotation(CONTAINERD_NAME)
        .and_then(repo_tag_of)
        .or_else(|| annotation(crate::index::REF_NAME).and_then(repo_tag_of))
}

/// Gives an entry named `NAME:TAG` containerd's full image name, which
/// `docker load` with the containerd image store names the image by (as
/// `docker save` writes it).
pub(crate) fn add_containerd_name(entry: &mut Value) {
    let Some(annotations) = entry.get_mut("annotations").and_then(Value::as_object_mut) else {
        return;
    };
    if annotations.contains_key(CONTAINERD_NAME) {
        return;
    }
    let full = annotations
        .get(crate::index::REF_NAME)
        .and_then(Value::as_str)
        .and_then(tagged_name)
        .map(|r| r.to_string());
    if let Some(full) = full {
        annotations.insert(CONTAINERD_NAME.to_owned(), Value::String(full));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn repo_tags_are_familiar_and_only_for_tagged_names() {
        for (reference, tag) in [
            ("python:3.10", "python:3.10"),
            ("docker.io/library/python:3.10", "python:3.10"),
            ("org/app", "org/app:latest"),
            ("registry.example.com/app:1", "registry.example.com/app:1"),
            ("localhost:5000/app:1", "localhost:5000/app:1"),
        ] {
            assert_eq!(repo_tag(reference).unwrap(), tag, "{reference}");
        }
        let digest = mirror_oci::digest_of(b"x");
        for bad in ["@0", "Bad:1", &format!("app@{digest}")] {
            assert!(repo_tag(bad).is_err(), "{bad}");
        }
        let err = repo_tag("@1").unwrap_err().to_string();
        assert!(err.contains("NAME:TAG"), "{err}");

        let entry = |annotations: Value| json!({"annotations": annotations});
        let cases = [
            (
                json!({"org.opencontainers.image.ref.name": "app:1"}),
                Some("app:1"),
            ),
            (
                json!({"org.opencontainers.image.ref.name": "docker.io/library/app:1"}),
                Some("app:1"),
            ),
            (json!({"org.opencontainers.image.ref.name": "v1"}), None),
            (json!({"org.opencontainers.image.ref.name": "latest"}), None),
            (json!({}), None),
            // docker save: the tag as ref name, the full name for containerd.
            (
                json!({
                    "org.opencontainers.image.ref.name": "latest",
                    "io.containerd.image.name": "docker.io/library/busybox:latest",
                }),
                Some("busybox:latest"),
            ),
        ];
        for (annotations, expected) in cases {
            assert_eq!(
                entry_repo_tag(&entry(annotations.clone())).as_deref(),
                expected,
                "{annotations}"
            );
        }
        assert_eq!(entry_repo_tag(&json!({"digest": "x"})), None);
    }

    #[test]
    fn tagged_entries_get_containerds_full_name() {
        let mut named = json!({"annotations": {"org.opencontainers.image.ref.name": "app:1"}});
        add_containerd_name(&mut named);
        assert_eq!(
            named["annotations"][CONTAINERD_NAME],
            "docker.io/library/app:1"
        );
        let mut plain = json!({"annotations": {"org.opencontainers.image.ref.name": "v1"}});
        add_containerd_name(&mut plain);
        assert!(plain["annotations"].get(CONTAINERD_NAME).is_none());
        let mut kept = json!({"annotations": {
            "org.opencontainers.image.ref.name": "app:1",
            "io.containerd.image.name": "example.com/app:1",
        }});
        add_containerd_name(&mut kept);
        assert_eq!(kept["annotations"][CONTAINERD_NAME], "example.com/app:1");
        let mut unnamed = json!({"digest": "x"});
        add_containerd_name(&mut unnamed);
        assert_eq!(unnamed, json!({"digest": "x"}));
    }
}
