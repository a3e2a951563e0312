//! The referrers calls of a repository: the OCI 1.1 referrers API (paginated,
//! `artifactType` filter, `OCI-Filters-Applied`), the fallback tag index of
//! registries without it, and a manifest PUT that says whether the registry
//! took the manifest's `subject` itself (`OCI-Subject`).

use mirror_oci::{
    Descriptor, Digest, IndexMerge, RawManifest, fallback_tag, media_types, merge_referrers_index,
    parse_digest, referrers_of_index,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};

use super::{Repository, next_link};
use crate::error::{Operation, RegistryError};
use crate::execute::{CallBody, header_value, origin_of};

/// Pages of one referrers listing followed at most: a hostile registry
/// cannot keep a copy paging forever.
const MAX_PAGES: usize = 64;
/// A referrers page is an index, capped like any manifest.
const MAX_PAGE_BYTES: usize = mirror_oci::MAX_MANIFEST_BYTES;

/// What the referrers API lists for one subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferrerListing {
    /// The referrers' descriptors (artifact type and annotations included).
    pub descriptors: Vec<Descriptor>,
    /// Every page said `OCI-Filters-Applied: artifactType`: the registry
    /// filtered by the asked type itself.
    pub filtered: bool,
}

impl Repository {
    /// `GET /v2/NAME/referrers/DIGEST[?artifactType=TYPE]`, every page
    /// (`Link: <...>; rel="next"`, same origin only). `None` when the
    /// registry has no referrers API (404, 405, 501: distribution 2.8 and
    /// many others); the caller then reads the fallback tag.
    pub async fn list_referrers(
        &self,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<ReferrerListing>, RegistryError> {
        let target = self.target(subject.as_ref());
        let mut url = self.url(&format!("referrers/{subject}"));
        if let Some(artifact_type) = artifact_type {
            url.query_pairs_mut()
                .append_pair("artifactType", artifact_type);
        }
        let first = url.clone();
        let mut listing = ReferrerListing {
            descriptors: Vec::new(),
            filtered: artifact_type.is_some(),
        };
        for page in 0..MAX_PAGES {
            let mut call = self.call(
                Operation::ListReferrers,
                target.clone(),
                Method::GET,
                url.clone(),
                false,
            );
            call.headers
                .insert(ACCEPT, HeaderValue::from_static(media_types::OCI_INDEX));
            let answer = self.send(call).await?;
            let status = answer.response.status();
            if page == 0
                && matches!(
                    status,
                    StatusCode::NOT_FOUND
                        | StatusCode::METHOD_NOT_ALLOWED
                        | StatusCode::NOT_IMPLEMENTED
                )
            {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(answer.into_error(&self.host).await);
            }
            let headers = answer.response.headers().clone();
            listing.filtered &= headers
                .get_all("oci-filters-applied")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|f| f.trim() == "artifactType");
            let next = next_link(&headers);
            let page_url = answer.response.url().clone();
            let protocol = |detail: String| RegistryError::Protocol {
                host: self.host.name.clone(),
                operation: Operation::ListReferrers,
                target: target.clone(),
                detail,
            };
            let body = self
                .read_page(
                    answer.response,
                    MAX_PAGE_BYTES,
                    Operation::ListReferrers,
                    &target,
                )
                .await?
                .ok_or_else(|| {
                    protocol(format!(
                        "a page of referrers is over {MAX_PAGE_BYTES} bytes: refused"
                    ))
                })?;
            listing
                .descriptors
                .extend(referrers_of_index(&body).map_err(|e| {
                    protocol(match std::error::Error::source(&e) {
                        Some(cause) => format!("{e}: {cause}"),
                        None => e.to_string(),
                    })
                })?);
            let Some(link) = next else {
                return Ok(Some(listing));
            };
            let resolved = page_url.join(&link).map_err(|e| {
                protocol(format!(
                    "the next page of referrers `{link}` is not a URL: {e}"
                ))
            })?;
            if origin_of(&resolved) != origin_of(&first) {
                return Err(protocol(format!(
                    "the next page of referrers is on another host, {}: refused, pages are read only from the registry itself",
                    origin_of(&resolved)
                )));
            }
            url = resolved;
        }
        Err(RegistryError::Protocol {
            host: self.host.name.clone(),
            operation: Operation::ListReferrers,
            target,
            detail: format!("more than {MAX_PAGES} pages of referrers; not followed further"),
        })
    }

    /// The fallback tag index of a subject (`sha256-<hex>`), `None` when the
    /// tag does not exist.
    pub async fn fallback_index(
        &self,
        subject: &Digest,
    ) -> Result<Option<RawManifest>, RegistryError> {
        match self.get_manifest(&fallback_tag(subject), None).await {
            Ok(index) => Ok(Some(index)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds referrers to a subject's fallback tag index: the index as it is
    /// now (re-read just before), every entry kept, the new ones appended,
    /// pushed only if it changed. Returns whether it was pushed.
    pub async fn add_to_fallback_index(
        &self,
        subject: &Digest,
        referrers: &[Descriptor],
    ) -> Result<bool, RegistryError> {
        let tag = fallback_tag(subject);
        let existing = self.fallback_index(subject).await?;
        let merged =
            merge_referrers_index(existing.as_ref().map(|m| m.bytes().as_ref()), referrers)
                .map_err(|detail| RegistryError::Protocol {
                    host: self.host.name.clone(),
                    operation: Operation::PutManifest,
                    target: self.target(&tag),
                    detail: format!("{detail}; the referrers index at that tag was left as it is"),
                })?;
        let IndexMerge::Changed(bytes) = merged else {
            return Ok(false);
        };
        let index = RawManifest::parse(bytes, Some(media_types::OCI_INDEX)).map_err(|source| {
            RegistryError::Manifest {
                host: self.host.name.clone(),
                operation: Operation::PutManifest,
                target: self.target(&tag),
                source: Box::new(source),
            }
        })?;
        self.put_manifest(&tag, &index).await?;
        Ok(true)
    }

    /// PUTs a manifest like [`Repository::put_manifest`] and returns the
    /// `OCI-Subject` the registry answered with: `Some` when it took the
    /// manifest's `subject` into its own referrers listing.
    pub async fn put_manifest_with_subject(
        &self,
        reference: &str,
        manifest: &RawManifest,
    ) -> Result<Option<Digest>, RegistryError> {
        let target = self.target(reference);
        let mut call = self.call(
            Operation::PutManifest,
            target.clone(),
            Method::PUT,
            self.url(&format!("manifests/{reference}")),
            true,
        );
        call.headers
            .insert(CONTENT_TYPE, header_value(manifest.media_type()));
        call.body = CallBody::Bytes(manifest.bytes().clone());
        let answer = self.send(call).await?;
        if !answer.response.status().is_success() {
            return Err(answer.into_error(&self.host).await);
        }
        let header = |name: &str| {
            answer
                .response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if let Some(stored) = header("docker-content-digest")
            && stored != manifest.digest().as_ref()
        {
            return Err(RegistryError::Protocol {
                host: self.host.name.clone(),
                operation: Operation::PutManifest,
                target,
                detail: format!(
                    "the registry stored the manifest as {stored}, not {}: it rewrote the bytes",
                    manifest.digest()
                ),
            });
        }
        Ok(header("oci-subject").and_then(|s| parse_digest(&s).ok()))
    }
}
