//! What hangs off an image from outside: OCI 1.1 referrers (manifests with a
//! `subject`), the fallback tag index registries without the referrers API
//! need (`sha256-<hex>`), and cosign's older tags (`sha256-<hex>.sig`, `.att`,
//! `.sbom`) that most signed images in the wild still use.
//!
//! Pure vocabulary, no I/O: the names, the descriptor a referrers index lists
//! for a manifest, and the merge that adds to a fallback index without ever
//! dropping an entry another tool wrote.

use bytes::Bytes;
use oci_spec::image::{Descriptor, Digest, MediaType};
use serde_json::{Value, json};

use crate::manifest::{ManifestKind, RawManifest};
use crate::media::media_types;

/// Artifact and layer media types of the signatures, SBOMs and attestations
/// the engine knows by name (`--referrers signature,sbom,attestation`).
pub mod artifact_types {
    /// The empty config of an artifact manifest (`{}`).
    pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";
    /// cosign's signature as an OCI 1.1 referrer.
    pub const COSIGN_SIGNATURE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
    /// cosign's SBOM as an OCI 1.1 referrer.
    pub const COSIGN_SBOM: &str = "application/vnd.dev.cosign.artifact.sbom.v1+json";
    /// The layer of a cosign signature: the signed "simple signing" payload.
    pub const COSIGN_SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
    /// Sigstore bundles (cosign 3 stores signatures and attestations so).
    pub const SIGSTORE_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
    pub const NOTARY_SIGNATURE: &str = "application/vnd.cncf.notary.signature";
    pub const IN_TOTO: &str = "application/vnd.in-toto+json";
    pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
    pub const SPDX_JSON: &str = "application/spdx+json";
    pub const SPDX_TEXT: &str = "text/spdx";
    pub const CYCLONEDX_JSON: &str = "application/vnd.cyclonedx+json";
    pub const SYFT_JSON: &str = "application/vnd.syft+json";
}

/// The annotation of a cosign signature layer holding the base64 signature.
pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// What a referrer is, by name: the categories `--referrers` accepts besides
/// explicit artifact types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReferrerKind {
    Signature,
    Sbom,
    Attestation,
}

impl ReferrerKind {
    /// The category's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Signature => "signature",
            Self::Sbom => "sbom",
            Self::Attestation => "attestation",
        }
    }

    /// Reads `signature(s)`, `sbom(s)`, `attestation(s)`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim_end_matches('s') {
            "signature" => Some(Self::Signature),
            "sbom" => Some(Self::Sbom),
            "attestation" => Some(Self::Attestation),
            _ => None,
        }
    }

    /// The artifact types of the category.
    pub fn artifact_types(self) -> &'static [&'static str] {
        use artifact_types::*;
        match self {
            Self::Signature => &[
                COSIGN_SIGNATURE,
                COSIGN_SIMPLE_SIGNING,
                NOTARY_SIGNATURE,
                SIGSTORE_BUNDLE,
            ],
            Self::Sbom => &[COSIGN_SBOM, SPDX_JSON, SPDX_TEXT, CYCLONEDX_JSON, SYFT_JSON],
            Self::Attestation => &[IN_TOTO, DSSE_ENVELOPE, SIGSTORE_BUNDLE],
        }
    }

    /// The suffix of cosign's tag for the category (`sha256-<hex>.sig`).
    pub fn legacy_suffix(self) -> &'static str {
        match self {
            Self::Signature => ".sig",
            Self::Sbom => ".sbom",
            Self::Attestation => ".att",
        }
    }

    /// Every category, in the order cosign's tags are looked up.
    pub const ALL: [Self; 3] = [Self::Signature, Self::Attestation, Self::Sbom];
}

/// The fallback tag of a subject: `sha256-<hex>` (the distribution spec's
/// referrers tag schema).
pub fn fallback_tag(subject: &Digest) -> String {
    format!("{}-{}", subject.algorithm(), subject.digest())
}

/// cosign's tag for a subject's signatures, attestations or SBOMs.
pub fn legacy_tag(subject: &Digest, kind: ReferrerKind) -> String {
    format!("{}{}", fallback_tag(subject), kind.legacy_suffix())
}

/// Whether a tag is one of the referrer tags (fallback or cosign's): such
/// tags name no image of their own.
pub fn is_referrer_tag(tag: &str) -> bool {
    let stem = ReferrerKind::ALL
        .iter()
        .find_map(|kind| tag.strip_suffix(kind.legacy_suffix()))
        .unwrap_or(tag);
    let hex_of = |prefix: &str, length: usize| {
        stem.strip_prefix(prefix).is_some_and(|hex| {
            hex.len() == length
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    };
    hex_of("sha256-", 64) || hex_of("sha512-", 128)
}

impl RawManifest {
    /// The manifest this one refers to (OCI 1.1 `subject`), if any.
    pub fn subject(&self) -> Option<&Descriptor> {
        match self.kind() {
            ManifestKind::Image(image) => image.subject().as_ref(),
            ManifestKind::Index(index) => index.subject().as_ref(),
        }
    }

    /// The artifact type a referrers index lists for this manifest: its
    /// `artifactType`, else (an image manifest) its config's media type.
    pub fn artifact_type(&self) -> Option<String> {
        match self.kind() {
            ManifestKind::Image(image) => Some(
                image
                    .artifact_type()
                    .as_ref()
                    .unwrap_or(image.config().media_type())
                    .to_string(),
            ),
            ManifestKind::Index(index) => index.artifact_type().as_ref().map(ToString::to_string),
        }
    }

    /// The descriptor a referrers index (API answer or fallback tag) lists
    /// for this manifest: media type, digest, size, artifact type and the
    /// manifest's annotations.
    pub fn referrer_descriptor(&self) -> Descriptor {
        let mut descriptor = self.descriptor();
        descriptor.set_artifact_type(self.artifact_type().map(|t| MediaType::from(t.as_str())));
        let annotations = match self.kind() {
            ManifestKind::Image(image) => image.annotations().clone(),
            ManifestKind::Index(index) => index.annotations().clone(),
        };
        descriptor.set_annotations(annotations.filter(|a| !a.is_empty()));
        descriptor
    }
}

/// Why a referrers index (the API's answer, a fallback tag's index) could
/// not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReferrersIndexError {
    #[error("the referrers index is not JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("the referrers index has no manifests list")]
    NoManifests,
}

/// The entries of a referrers index (the API's answer, a fallback tag's
/// index). Entries that are not descriptors are left out.
pub fn referrers_of_index(bytes: &[u8]) -> Result<Vec<Descriptor>, ReferrersIndexError> {
    let value: Value = serde_json::from_slice(bytes).map_err(ReferrersIndexError::NotJson)?;
    let manifests = value
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or(ReferrersIndexError::NoManifests)?;
    Ok(manifests
        .iter()
        .filter_map(|entry| serde_json::from_value::<Descriptor>(entry.clone()).ok())
        .collect())
}

/// What adding to a fallback index came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexMerge {
    /// Every descriptor was listed already: nothing to push.
    Unchanged,
    /// The new index (every entry that was there, in its order and exactly
    /// as it was, then the new ones).
    Changed(Bytes),
}

/// Adds `referrers` to the fallback index `existing` (`None`: there is none
/// yet, start from an empty one). Entries already there are kept exactly as
/// they are (another tool's included); a digest is never listed twice.
pub fn merge_referrers_index(
    existing: Option<&[u8]>,
    referrers: &[Descriptor],
) -> Result<IndexMerge, String> {
    let mut index: Value = match existing {
        Some(bytes) => serde_json::from_slice(bytes)
            .map_err(|e| format!("the fallback tag holds something that is not JSON: {e}"))?,
        None => json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_INDEX,
            "manifests": [],
        }),
    };
    let manifests = index
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .ok_or("the fallback tag holds a manifest that is not an index")?;
    let mut changed = false;
    for referrer in referrers {
        let digest = referrer.digest().to_string();
        if manifests
            .iter()
            .any(|m| m.get("digest").and_then(Value::as_str) == Some(digest.as_str()))
        {
            continue;
        }
        let mut entry = serde_json::to_value(referrer).map_err(|e| e.to_string())?;
        if let Some(object) = entry.as_object_mut() {
            // A listing never carries a platform or embedded data.
            object.remove("platform");
            object.remove("data");
        }
        manifests.push(entry);
        changed = true;
    }
    if !changed {
        return Ok(IndexMerge::Unchanged);
    }
    serde_json::to_vec(&index)
        .map(|bytes| IndexMerge::Changed(Bytes::from(bytes)))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::digest_of;

    fn referrer(subject: &Digest, artifact_type: &str, body: &str) -> RawManifest {
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"{artifact_type}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},"layers":[{{"mediaType":"{artifact_type}","digest":"{}","size":{}}}],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{subject}","size":7}},"annotations":{{"org.opencontainers.image.created":"2024-01-01T00:00:00Z"}}}}"#,
            digest_of(body.as_bytes()),
            body.len()
        );
        RawManifest::parse(Bytes::from(bytes), None).unwrap()
    }

    #[test]
    fn tags_name_the_subject() {
        let subject = digest_of(b"image");
        let hex = subject.digest().to_owned();
        assert_eq!(fallback_tag(&subject), format!("sha256-{hex}"));
        assert_eq!(
            legacy_tag(&subject, ReferrerKind::Signature),
            format!("sha256-{hex}.sig")
        );
        assert!(is_referrer_tag(&format!("sha256-{hex}")));
        assert!(is_referrer_tag(&format!("sha256-{hex}.att")));
        assert!(!is_referrer_tag("sha256-abc.sig"));
        assert!(!is_referrer_tag("3.10-slim-buster"));
    }

    #[test]
    fn a_referrer_lists_with_its_artifact_type_and_annotations() {
        let subject = digest_of(b"image");
        let sbom = referrer(&subject, artifact_types::SPDX_JSON, "{}");
        assert_eq!(sbom.subject().map(|s| s.digest()), Some(&subject));
        let listed = sbom.referrer_descriptor();
        assert_eq!(
            listed.artifact_type().as_ref().map(ToString::to_string),
            Some(artifact_types::SPDX_JSON.to_owned())
        );
        assert_eq!(listed.digest(), sbom.digest());
        assert_eq!(
            listed
                .annotations()
                .as_ref()
                .and_then(|a| a.get("org.opencontainers.image.created"))
                .map(String::as_str),
            Some("2024-01-01T00:00:00Z")
        );
    }

    #[test]
    fn merging_keeps_other_tools_entries_and_never_lists_twice() {
        let subject = digest_of(b"image");
        let ours = referrer(&subject, artifact_types::SPDX_JSON, "sbom").referrer_descriptor();
        let other = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":9,"artifactType":"application/example","x-other-tool":true}]}"#;
        let IndexMerge::Changed(merged) =
            merge_referrers_index(Some(other.as_bytes()), &[ours.clone(), ours.clone()]).unwrap()
        else {
            panic!("a new referrer changes the index");
        };
        let value: Value = serde_json::from_slice(&merged).unwrap();
        let manifests = value["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 2);
        assert_eq!(manifests[0]["x-other-tool"], true, "kept as it was");
        assert_eq!(manifests[1]["digest"], ours.digest().to_string());
        assert_eq!(
            merge_referrers_index(Some(&merged), &[ours]).unwrap(),
            IndexMerge::Unchanged
        );
        let listed = referrers_of_index(&merged).unwrap();
        assert_eq!(listed.len(), 2);
    }

    #[test]
    fn a_fallback_tag_that_is_not_an_index_is_refused() {
        let image = br#"{"schemaVersion":2,"config":{}}"#;
        assert!(merge_referrers_index(Some(image), &[]).is_err());
    }

    #[test]
    fn kinds_read_their_names() {
        assert_eq!(
            ReferrerKind::from_name("signatures"),
            Some(ReferrerKind::Signature)
        );
        assert_eq!(ReferrerKind::from_name("sbom"), Some(ReferrerKind::Sbom));
        assert_eq!(ReferrerKind::from_name("application/spdx+json"), None);
    }
}
