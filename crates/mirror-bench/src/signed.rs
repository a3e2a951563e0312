//! The signed python scenario (loopback TLS): the python index again, under
//! its own repository, with a cosign signature (at cosign's `.sig` tag) and
//! an SPDX SBOM (a referrer listed in the fallback tag index, as on a
//! registry without the referrers API) at the source. mirror copies both
//! (referrers travel by default), `skopeo copy --all` the image only: the
//! rows next to the plain python ones show what referrers cost, cold and
//! warm.

use std::path::Path;

use anyhow::Context as _;
use mirror_testkit::{
    PushAuth, PushTarget, SigningKey, Subject, cosign_payload, cosign_signature, fallback_index,
    push_artifact, push_manifest_bytes, spdx_sbom,
};

use crate::scenarios::Corpus;

pub(crate) const SIGNED_REPO: &str = "python-signed";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// How the signed scenario is set up, for the report.
pub(crate) const SIGNED_CONDITION: &str = "signed (loopback tls): the python index under its own repository with a cosign signature (`sha256-<hex>.sig`) and an SPDX SBOM (a referrer in the `sha256-<hex>` fallback index) at the source; mirror copies both (referrers on, the default) and is checked for them, skopeo copy --all copies the image only";

/// The python corpus as the signed one, and the referrer tags that must
/// reach the destination with it.
pub(crate) struct Signed {
    pub(crate) corpus: Corpus,
    pub(crate) tags: Vec<String>,
}

/// Pushes `python` as [`SIGNED_REPO`] with its signature and SBOM.
pub(crate) async fn push_signed(host: &str, python: &Corpus, dir: &Path) -> anyhow::Result<Signed> {
    let auth = PushAuth::Anonymous;
    let image = python.image.clone();
    mirror_testkit::push_layout(&image, &PushTarget::new(host, SIGNED_REPO, python.tag))
        .await
        .context("pushing the signed python")?;
    let root = image.read_blob(&image.root_digest())?;
    let subject = Subject::of(image.root.media_type().as_ref(), &root);
    let key = SigningKey::generate(dir, "bench").context("a signing key (python cryptography)")?;
    let payload = cosign_payload("example.invalid/python", &subject.digest);
    let signature = key.sign(&payload)?;
    let fallback = subject.digest.replace(':', "-");
    let sig_tag = format!("{fallback}.sig");
    push_artifact(
        host,
        SIGNED_REPO,
        &auth,
        &cosign_signature(None, &[(payload, signature)]),
        &sig_tag,
    )
    .await?;
    let sbom = spdx_sbom(&subject, "python");
    push_artifact(host, SIGNED_REPO, &auth, &sbom, sbom.digest.as_ref()).await?;
    push_manifest_bytes(
        host,
        SIGNED_REPO,
        &auth,
        &fallback_index(&[&sbom]),
        INDEX,
        &fallback,
    )
    .await?;
    Ok(Signed {
        corpus: Corpus {
            image,
            repo: SIGNED_REPO,
            tag: python.tag,
        },
        tags: vec![sig_tag, fallback],
    })
}

/// Whether the destination holds the referrer tags (mirror's runs).
pub(crate) async fn check_referrers(host: &str, signed: &Signed) -> anyhow::Result<()> {
    for tag in &signed.tags {
        mirror_testkit::fetch_manifest(host, SIGNED_REPO, tag, &PushAuth::Anonymous)
            .await
            .with_context(|| format!("the destination lacks {SIGNED_REPO}:{tag}"))?;
    }
    Ok(())
}
