//! Manifests as the exact bytes a registry served plus a parsed view of them.
//!
//! Digests are computed over the bytes and the bytes are what gets pushed, so a
//! copy is byte-for-byte; the parsed view only tells the engine what to walk.

use bytes::Bytes;
use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::digest::{Hasher, digest_of};
use crate::media::media_types;

/// Registries cap manifests at 4 MiB (ECR and distribution alike); anything larger
/// is refused before it is read whole.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Why a manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")]
    TooLarge { size: usize },
    #[error("manifest digest mismatch: expected {expected}, the bytes hash to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error(
        "this is a Docker schema 1 manifest ({media_type}), a format deprecated since 2017 that \
         cannot be copied without changing its digest; push the image again with a current \
         Docker or buildah to get a schema 2 / OCI manifest"
    )]
    Schema1 { media_type: String },
    #[error("unsupported manifest media type `{media_type}`")]
    Unsupported { media_type: String },
    #[error("manifest of type {media_type} is not valid JSON of that type")]
    Malformed {
        media_type: String,
        #[source]
        source: serde_json::Error,
    },
    /// A descriptor names its content by a digest the engine cannot check
    /// (`md5:`, `sha384:`, ...): copying it would mean trusting unverified bytes.
    #[error(
        "the manifest references its {what} by `{digest}`, a digest mirror cannot verify \
         (only sha256 and sha512 are): refused rather than copied unchecked"
    )]
    UnverifiableDigest { what: String, digest: String },
}

/// What a manifest is, parsed.
#[expect(
    clippy::large_enum_variant,
    reason = "a handful live per copy; boxing buys nothing"
)]
#[derive(Debug, Clone)]
pub enum ManifestKind {
    /// An OCI image index or a Docker manifest list.
    Index(ImageIndex),
    /// An OCI image manifest or a Docker v2 schema 2 manifest.
    Image(ImageManifest),
}

/// A manifest as pulled: bytes, media type, digest of the bytes, parsed view.
#[derive(Debug, Clone)]
pub struct RawManifest {
    bytes: Bytes,
    media_type: String,
    digest: Digest,
    kind: ManifestKind,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sniff {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

impl RawManifest {
    /// Parses manifest bytes; `content_type` is the registry's Content-Type header
    /// (the body's `mediaType` is used when the header is missing or generic).
    pub fn parse(bytes: Bytes, content_type: Option<&str>) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge { size: bytes.len() });
        }
        let sniff: Sniff =
            serde_json::from_slice(&bytes).map_err(|source| ManifestError::Malformed {
                media_type: content_type.unwrap_or("unknown").to_owned(),
                source,
            })?;
        let header = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim())
            .filter(|c| {
                !c.is_empty()
                    && !matches!(
                        *c,
                        "application/json" | "text/plain" | "application/octet-stream"
                    )
            });
        let media_type = match (header, sniff.media_type.as_deref()) {
            (Some(h), _) => h.to_owned(),
            (None, Some(m)) => m.to_owned(),
            (None, None) if sniff.schema_version == Some(1) => {
                media_types::SCHEMA1_SIGNED.to_owned()
            }
            (None, None) if sniff.manifests.is_some() => media_types::OCI_INDEX.to_owned(),
            (None, None) if sniff.config.is_some() => media_types::OCI_MANIFEST.to_owned(),
            (None, None) => {
                return Err(ManifestError::Unsupported {
                    media_type: "unknown".to_owned(),
                });
            }
        };
        if sniff.schema_version == Some(1)
            || media_type == media_types::SCHEMA1
            || media_type == media_types::SCHEMA1_SIGNED
        {
            return Err(ManifestError::Schema1 { media_type });
        }
        let malformed = |source| ManifestError::Malformed {
            media_type: media_type.clone(),
            source,
        };
        let kind = match media_type.as_str() {
            media_types::OCI_INDEX | media_types::DOCKER_LIST => {
                ManifestKind::Index(serde_json::from_slice(&bytes).map_err(malformed)?)
            }
            media_types::OCI_MANIFEST | media_types::DOCKER_MANIFEST => {
                ManifestKind::Image(serde_json::from_slice(&bytes).map_err(malformed)?)
            }
            _ => return Err(ManifestError::Unsupported { media_type }),
        };
        check_digests(&kind)?;
        let digest = digest_of(&bytes);
        Ok(Self {
            bytes,
            media_type,
            digest,
            kind,
        })
    }

    /// Parses and checks the bytes against the digest they were requested by.
    pub fn parse_verified(
        bytes: Bytes,
        content_type: Option<&str>,
        expected: &Digest,
    ) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge { size: bytes.len() });
        }
        let actual = match Hasher::for_digest(expected) {
            Some(mut h) => {
                h.update(&bytes);
                h.finish()
            }
            None => digest_of(&bytes),
        };
        if &actual != expected {
            return Err(ManifestError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let mut manifest = Self::parse(bytes, content_type)?;
        manifest.digest = expected.clone();
        Ok(manifest)
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn media_type(&self) -> &str {
        &self.media_type
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn kind(&self) -> &ManifestKind {
        &self.kind
    }

    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn is_index(&self) -> bool {
        matches!(self.kind, ManifestKind::Index(_))
    }

    /// The child manifests of an index (empty for an image).
    pub fn children(&self) -> &[Descriptor] {
        match &self.kind {
            ManifestKind::Index(index) => index.manifests(),
            ManifestKind::Image(_) => &[],
        }
    }

    /// The blobs an image manifest references: config first, then layers.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        match &self.kind {
            ManifestKind::Index(_) => Vec::new(),
            ManifestKind::Image(image) => std::iter::once(image.config())
                .chain(image.layers())
                .collect(),
        }
    }

    /// A descriptor for this manifest (media type, digest, size).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.media_type.as_str().into(),
            self.size(),
            self.digest.clone(),
        )
    }
}

/// Refuses a manifest whose descriptors use a digest algorithm that
/// [`Hasher`] cannot verify, naming the first such descriptor.
fn check_digests(kind: &ManifestKind) -> Result<(), ManifestError> {
    let mut named: Vec<(String, &Descriptor)> = Vec::new();
    match kind {
        ManifestKind::Index(index) => {
            for (i, child) in index.manifests().iter().enumerate() {
                named.push((format!("child manifest {}", i + 1), child));
            }
            named.extend(index.subject().iter().map(|s| ("subject".to_owned(), s)));
        }
        ManifestKind::Image(image) => {
            named.push(("config".to_owned(), image.config()));
            for (i, layer) in image.layers().iter().enumerate() {
                named.push((format!("layer {}", i + 1), layer));
            }
            named.extend(image.subject().iter().map(|s| ("subject".to_owned(), s)));
        }
    }
    match named
        .into_iter()
        .find(|(_, d)| Hasher::for_digest(d.digest()).is_none())
    {
        Some((what, descriptor)) => Err(ManifestError::UnverifiableDigest {
            what,
            digest: descriptor.digest().to_string(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

    #[test]
    fn digest_is_over_the_exact_bytes() {
        let m = RawManifest::parse(
            Bytes::from_static(IMAGE.as_bytes()),
            Some("application/vnd.oci.image.manifest.v1+json"),
        )
        .unwrap();
        assert_eq!(m.digest(), &digest_of(IMAGE.as_bytes()));
        assert_eq!(m.bytes().as_ref(), IMAGE.as_bytes());
        assert_eq!(m.blobs().len(), 1);
    }

    #[test]
    fn wrong_digest_is_refused() {
        let wrong = digest_of(b"other");
        let err = RawManifest::parse_verified(Bytes::from_static(IMAGE.as_bytes()), None, &wrong)
            .unwrap_err();
        assert!(matches!(err, ManifestError::DigestMismatch { .. }));
    }

    #[test]
    fn schema1_gets_a_clear_error() {
        let body = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let err = RawManifest::parse(
            Bytes::from_static(body),
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("schema 1"), "{err}");
    }

    /// md5 and sha384 digests in a manifest used to reach the destination,
    /// which got the blame for refusing them: refuse them at parse time.
    #[test]
    fn unverifiable_digests_are_refused_at_parse_time() {
        let sha384 = format!("sha384:{}", "a".repeat(96));
        for (bytes, what, digest) in [
            (
                IMAGE.replace(
                    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                    "md5:d41d8cd98f00b204e9800998ecf8427e",
                ),
                "config",
                "md5:d41d8cd98f00b204e9800998ecf8427e".to_owned(),
            ),
            (
                IMAGE.replace(
                    r#""layers":[]"#,
                    &format!(
                        r#""layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{sha384}","size":3}}]"#
                    ),
                ),
                "layer 1",
                sha384.clone(),
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"md5:0cc175b9c0f1b6a831c399e269772661","size":7}]}"#
                    .to_owned(),
                "child manifest 1",
                "md5:0cc175b9c0f1b6a831c399e269772661".to_owned(),
            ),
        ] {
            let err = RawManifest::parse(Bytes::from(bytes), None).unwrap_err();
            match &err {
                ManifestError::UnverifiableDigest { what: w, digest: d } => {
                    assert_eq!((w.as_str(), d), (what, &digest));
                }
                other => panic!("expected UnverifiableDigest, got {other:?}"),
            }
            let text = err.to_string();
            assert!(text.contains(&digest) && text.contains(what), "{text}");
        }
        let sha512 = IMAGE.replace(
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            &format!("sha512:{}", "b".repeat(128)),
        );
        assert!(RawManifest::parse(Bytes::from(sha512), None).is_ok());
    }

    #[test]
    fn generic_content_type_falls_back_to_body_media_type() {
        let m = RawManifest::parse(
            Bytes::from_static(IMAGE.as_bytes()),
            Some("application/json"),
        )
        .unwrap();
        assert_eq!(m.media_type(), "application/vnd.oci.image.manifest.v1+json");
    }
}
