//! The referrers API of the ECR stand-in (ECR supports OCI 1.1; the
//! registry behind the gate, distribution 2.8, has no such API).
//!
//! The gate records every manifest pushed through it that names a
//! `subject` and answers that PUT with `OCI-Subject`, as a registry that
//! keeps referrers itself does; `GET /v2/NAME/referrers/DIGEST` is answered
//! from the record: an OCI index of descriptors (artifact type: the
//! manifest's, else its config's media type; the manifest's annotations),
//! 200 even when nothing refers to the digest, the `artifactType` filter
//! applied and said so with `OCI-Filters-Applied`, and pages of
//! [`ReferrersApi::set_page_size`] descriptors chained by `Link` headers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use hyper::{Response, StatusCode, header};
use serde_json::{Value, json};

/// The stand-in's record of referrers, per repository and subject.
#[derive(Debug)]
pub struct ReferrersApi {
    /// (repository, subject digest) -> descriptors, in push order.
    listed: Mutex<HashMap<(String, String), Vec<Value>>>,
    page_size: AtomicUsize,
}

impl Default for ReferrersApi {
    fn default() -> Self {
        Self {
            listed: Mutex::new(HashMap::new()),
            page_size: AtomicUsize::new(100),
        }
    }
}

impl ReferrersApi {
    /// Descriptors per answer page (100 unless set).
    pub fn set_page_size(&self, size: usize) {
        self.page_size.store(size.max(1), Ordering::Relaxed);
    }

    /// Every recorded referrer of `subject` in `repository`.
    pub fn referrers_of(&self, repository: &str, subject: &str) -> Vec<Value> {
        self.listed
            .lock()
            .map(|l| {
                l.get(&(repository.to_owned(), subject.to_owned()))
                    .cloned()
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    /// Records a manifest the registry stored (`digest`, `media_type` as
    /// pushed); returns its subject's digest when it names one (the value
    /// of `OCI-Subject`).
    pub(crate) fn record(
        &self,
        repository: &str,
        manifest: &[u8],
        media_type: Option<&str>,
        digest: &str,
    ) -> Option<String> {
        let value: Value = serde_json::from_slice(manifest).ok()?;
        let subject = value.pointer("/subject/digest")?.as_str()?.to_owned();
        let artifact_type = value
            .get("artifactType")
            .or_else(|| value.pointer("/config/mediaType"))
            .cloned();
        let media_type = media_type
            .map(|m| Value::String(m.to_owned()))
            .or_else(|| value.get("mediaType").cloned())
            .unwrap_or(Value::Null);
        let mut descriptor = json!({
            "mediaType": media_type,
            "digest": digest,
            "size": manifest.len(),
        });
        if let Some(artifact_type) = artifact_type {
            descriptor["artifactType"] = artifact_type;
        }
        if let Some(annotations) = value.get("annotations").filter(|a| a.is_object()) {
            descriptor["annotations"] = annotations.clone();
        }
        if let Ok(mut listed) = self.listed.lock() {
            let entries = listed
                .entry((repository.to_owned(), subject.clone()))
                .or_default();
            if !entries.iter().any(|e| e["digest"] == digest) {
                entries.push(descriptor);
            }
        }
        Some(subject)
    }

    /// The answer to `GET /v2/REPOSITORY/referrers/DIGEST?QUERY`.
    pub(crate) fn answer(
        &self,
        repository: &str,
        path: &str,
        query: Option<&str>,
    ) -> Response<Bytes> {
        let subject = path.rsplit('/').next().unwrap_or_default();
        let pairs: Vec<(String, String)> = query
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let param = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let artifact_type = param("artifactType");
        let start: usize = param("last").and_then(|l| l.parse().ok()).unwrap_or(0);
        let all: Vec<Value> = self
            .referrers_of(repository, subject)
            .into_iter()
            .filter(|d| {
                artifact_type
                    .as_deref()
                    .is_none_or(|t| d["artifactType"].as_str() == Some(t))
            })
            .collect();
        let size = self.page_size.load(Ordering::Relaxed);
        let page: Vec<Value> = all.iter().skip(start).take(size).cloned().collect();
        let body = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": page,
        });
        let mut response = Response::new(Bytes::from(body.to_string()));
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
        );
        if artifact_type.is_some() {
            headers.insert(
                "oci-filters-applied",
                header::HeaderValue::from_static("artifactType"),
            );
        }
        if start + size < all.len() {
            let mut next = url::form_urlencoded::Serializer::new(String::new());
            if let Some(t) = &artifact_type {
                next.append_pair("artifactType", t);
            }
            next.append_pair("last", &(start + size).to_string());
            let link = format!("<{path}?{}>; rel=\"next\"", next.finish());
            if let Ok(value) = header::HeaderValue::from_str(&link) {
                headers.insert(header::LINK, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBJECT: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn referrer(artifact_type: &str) -> Vec<u8> {
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
            "layers": [],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": SUBJECT, "size": 1},
        })
        .to_string()
        .into_bytes()
    }

    fn listed(response: &Response<Bytes>) -> Vec<String> {
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        body["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["artifactType"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn pages_chain_and_filters_say_so() {
        let api = ReferrersApi::default();
        api.set_page_size(2);
        for (i, t) in ["a/sig", "b/sbom", "a/sig"].iter().enumerate() {
            let bytes = referrer(t);
            let digest = format!("sha256:{i:064}");
            assert_eq!(
                api.record("app", &bytes, None, &digest).as_deref(),
                Some(SUBJECT)
            );
        }
        let path = format!("/v2/app/referrers/{SUBJECT}");
        let first = api.answer("app", &path, None);
        assert_eq!(listed(&first), ["a/sig", "b/sbom"]);
        let link = first.headers()[header::LINK].to_str().unwrap().to_owned();
        assert!(link.ends_with("?last=2>; rel=\"next\""), "{link}");
        let second = api.answer("app", &path, Some("last=2"));
        assert_eq!(listed(&second), ["a/sig"]);
        assert!(second.headers().get(header::LINK).is_none());

        let filtered = api.answer("app", &path, Some("artifactType=b%2Fsbom"));
        assert_eq!(listed(&filtered), ["b/sbom"]);
        assert_eq!(filtered.headers()["oci-filters-applied"], "artifactType");
        assert!(listed(&api.answer("other", &path, None)).is_empty());
    }

    #[test]
    fn a_manifest_without_subject_is_not_a_referrer() {
        let api = ReferrersApi::default();
        let image = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:1","size":1},"layers":[]}"#;
        assert_eq!(api.record("app", image, None, "sha256:2"), None);
    }
}
