//! `--require-signature`: before a single blob moves, the image's cosign
//! signatures are found at the source (cosign's `sha256-<hex>.sig` tag, or
//! signature referrers), their payloads fetched (verified, size-capped) and
//! handed to the keyring; no valid signature by any of the keys refuses the
//! image with every reason, and nothing is written for it.

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use mirror_oci::{
    COSIGN_SIGNATURE_ANNOTATION, Descriptor, Digest, ManifestKind, ReferrerKind, VerifyingStream,
    artifact_types, legacy_tag,
};
use serde::Serialize;

use crate::copy::{CopyRequest, Engine};
use crate::endpoint::Source;
use crate::error::CopyError;

/// Signature manifests looked at per image, at most.
const MAX_SIGNATURES: usize = 16;
/// Signature layers looked at per manifest, at most.
const MAX_LAYERS: usize = 32;
/// A simple-signing payload is a few hundred bytes; anything much larger is
/// not one.
const MAX_PAYLOAD_BYTES: u64 = 256 * 1024;

/// The signature that let an image through.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SignatureReport {
    /// The key file that verified it.
    pub key: String,
    /// The signature manifest.
    pub signature: Digest,
    /// Where it was found: cosign's tag (`sha256-<hex>.sig`) or `referrer`.
    pub found_at: String,
}

impl Engine {
    /// Checks `--require-signature` for the image `digest` names at the
    /// source; `Ok(None)` when no signature is required.
    pub(crate) async fn check_signature(
        &self,
        request: &CopyRequest,
        digest: &Digest,
    ) -> Result<Option<SignatureReport>, CopyError> {
        let Some(keyring) = &request.options.require_signature else {
            return Ok(None);
        };
        let source = request.source.as_ref();
        let referrers = source
            .referrers(digest, None)
            .await
            .map_err(|e| CopyError::source_side(source.name(), e))?;
        let candidates: Vec<_> = referrers
            .into_iter()
            .filter(|r| r.kind() == Some(ReferrerKind::Signature))
            .take(MAX_SIGNATURES)
            .collect();
        let mut reasons = Vec::new();
        for candidate in &candidates {
            let place = match candidate.legacy {
                Some(kind) => legacy_tag(digest, kind),
                None => format!("referrer {}", candidate.descriptor.digest()),
            };
            if candidate.artifact_type().as_deref() == Some(artifact_types::SIGSTORE_BUNDLE) {
                reasons.push(format!(
                    "{place}: a sigstore bundle (only cosign's key-based simple-signing signatures are checked)"
                ));
                continue;
            }
            let manifest = match source.manifest(candidate.descriptor.digest()).await {
                Ok(manifest) => manifest,
                Err(e) => {
                    reasons.push(format!("{place}: {}", super::Said(&e)));
                    continue;
                }
            };
            let layers: &[Descriptor] = match manifest.kind() {
                ManifestKind::Image(image) => image.layers(),
                ManifestKind::Index(_) => &[],
            };
            let signed: Vec<(usize, &Descriptor)> = layers
                .iter()
                .enumerate()
                .filter(|(_, l)| {
                    l.media_type().to_string() == artifact_types::COSIGN_SIMPLE_SIGNING
                })
                .take(MAX_LAYERS)
                .collect();
            if signed.is_empty() {
                reasons.push(format!("{place}: holds no cosign simple-signing layer"));
            }
            for (position, layer) in signed {
                let what = format!("{place}, layer {position}");
                let Some(signature) = layer
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get(COSIGN_SIGNATURE_ANNOTATION))
                else {
                    reasons.push(format!(
                        "{what}: no {COSIGN_SIGNATURE_ANNOTATION} annotation"
                    ));
                    continue;
                };
                let payload = match payload(source, layer).await {
                    Ok(payload) => payload,
                    Err(reason) => {
                        reasons.push(format!("{what}: {reason}"));
                        continue;
                    }
                };
                match keyring.verify(digest, &payload, signature) {
                    Ok(key) => {
                        return Ok(Some(SignatureReport {
                            key: key.to_owned(),
                            signature: manifest.digest().clone(),
                            found_at: match candidate.legacy {
                                Some(_) => place,
                                None => "referrer".to_owned(),
                            },
                        }));
                    }
                    Err(rejection) => reasons.push(format!("{what}: {rejection}")),
                }
            }
        }
        if candidates.is_empty() {
            reasons.push(format!(
                "no cosign signature found (no {} tag, no signature referrer)",
                legacy_tag(digest, ReferrerKind::Signature)
            ));
        }
        Err(CopyError::Unsigned {
            reference: request.source_label.clone(),
            digest: digest.clone(),
            keys: keyring.labels(),
            reasons,
        })
    }
}

/// A signature layer's payload, verified against its descriptor.
async fn payload(source: &dyn Source, layer: &Descriptor) -> Result<Bytes, String> {
    if layer.size() > MAX_PAYLOAD_BYTES {
        return Err(format!(
            "a {}-byte payload is too large for a signature payload",
            layer.size()
        ));
    }
    let stream = source.blob(layer).await.map_err(|e| e.to_string())?;
    let mut verified = VerifyingStream::new(stream, layer.digest().clone(), layer.size());
    let mut payload = BytesMut::new();
    while let Some(chunk) = verified.next().await {
        payload.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
    }
    Ok(payload.freeze())
}
