//! The registry backend: any OCI distribution registry through `mirror-registry`.

use std::sync::Arc;

use async_trait::async_trait;
use mirror_oci::{BlobStream, Descriptor, Digest, RawManifest};
use mirror_registry::{MountOutcome, Repository, UploadSession};

use crate::endpoint::{
    Capabilities, Destination, EndpointError, Mount, MountOrigin, MountWhen, Resolved, Source,
    UploadSlot,
};
use crate::referrers::{Referrer, ReferrersApi, RegistryReferrers};

/// Docker Hub's API host: it mounts only between repositories of one owner.
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// A repository on a registry, as a source or a destination.
#[derive(Debug, Clone)]
pub struct RegistryEndpoint {
    repository: Repository,
    /// What this run learned about the registry's referrers.
    referrers: Arc<RegistryReferrers>,
}

impl RegistryEndpoint {
    pub fn new(repository: Repository) -> Self {
        Self {
            repository,
            referrers: Arc::default(),
        }
    }

    /// The same endpoint, told the repository's tags (already listed by the
    /// caller): finding cosign's and fallback tags then lists nothing.
    pub fn knowing_tags(self, tags: impl IntoIterator<Item = String>) -> Self {
        self.know_tags(tags);
        self
    }

    /// What this endpoint learns about the registry's referrers API, to
    /// share with the endpoints of the registry's other repositories.
    pub fn referrers_api(&self) -> Arc<ReferrersApi> {
        self.referrers.api.clone()
    }

    /// The same endpoint, sharing what is known about the registry's
    /// referrers API with other repositories of that registry: a registry
    /// without it is probed once per run, not once per repository.
    pub fn sharing_referrers_api(mut self, api: Arc<ReferrersApi>) -> Self {
        self.referrers = Arc::new(RegistryReferrers::sharing(api));
        self
    }

    /// Tells a shared endpoint the repository's tags (the first listing
    /// wins; later ones are ignored).
    pub fn know_tags(&self, tags: impl IntoIterator<Item = String>) {
        self.referrers.know_tags(tags);
    }

    pub fn repository(&self) -> &Repository {
        &self.repository
    }
}

#[async_trait]
impl Source for RegistryEndpoint {
    fn name(&self) -> String {
        format!("{}/{}", self.repository.registry(), self.repository.name())
    }

    async fn resolve(&self, reference: &str) -> Result<Option<Resolved>, EndpointError> {
        Ok(self
            .repository
            .head_manifest(reference)
            .await?
            .map(|head| Resolved {
                digest: head.digest,
                media_type: head.media_type,
                size: head.size,
            }))
    }

    async fn manifest(&self, digest: &Digest) -> Result<RawManifest, EndpointError> {
        Ok(self
            .repository
            .get_manifest(digest.as_ref(), Some(digest))
            .await?)
    }

    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobStream, EndpointError> {
        Ok(self.repository.get_blob(descriptor).await?)
    }

    fn mount_origin(&self) -> Option<MountOrigin> {
        Some(MountOrigin {
            host: self.repository.api_host().to_owned(),
            repository: self.repository.name().to_owned(),
        })
    }

    async fn referrers(
        &self,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>, EndpointError> {
        self.referrers
            .source_referrers(&self.repository, subject, artifact_type)
            .await
    }

    fn holds_no_referrers(&self) -> bool {
        self.referrers.holds_none()
    }
}

#[async_trait]
impl Destination for RegistryEndpoint {
    fn name(&self) -> String {
        Source::name(self)
    }

    async fn manifest_digest(&self, reference: &str) -> Result<Option<Digest>, EndpointError> {
        Ok(self
            .repository
            .head_manifest(reference)
            .await?
            .map(|head| head.digest))
    }

    async fn blob_exists(&self, descriptor: &Descriptor) -> Result<bool, EndpointError> {
        Ok(self.repository.blob_exists(descriptor).await?)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            mount: MountWhen::BlobLinked,
            mount_answers_presence: true,
            ..Capabilities::default()
        }
    }

    fn can_mount_from(&self, origin: &MountOrigin) -> bool {
        let here = self.repository.name();
        origin.host == self.repository.api_host()
            && origin.repository != here
            && (origin.host != DOCKER_HUB_API_HOST || owner(&origin.repository) == owner(here))
    }

    fn location(&self) -> Option<MountOrigin> {
        Source::mount_origin(self)
    }

    async fn mount_blob(
        &self,
        descriptor: &Descriptor,
        from: &MountOrigin,
    ) -> Result<Mount, EndpointError> {
        Ok(
            match self
                .repository
                .mount_blob(descriptor, &from.repository)
                .await?
            {
                MountOutcome::Mounted => Mount::Mounted,
                MountOutcome::NotMounted(session) => {
                    Mount::NotMounted(Some(UploadSlot(Box::new(session))))
                }
            },
        )
    }

    async fn put_blob(
        &self,
        descriptor: &Descriptor,
        body: BlobStream,
        slot: Option<UploadSlot>,
    ) -> Result<(), EndpointError> {
        let session = match slot.and_then(|s| s.0.downcast::<UploadSession>().ok()) {
            Some(session) => *session,
            None => self.repository.start_upload(descriptor).await?,
        };
        Ok(self.repository.put_blob(session, descriptor, body).await?)
    }

    async fn put_manifest(
        &self,
        reference: &str,
        manifest: &RawManifest,
    ) -> Result<(), EndpointError> {
        Ok(self.repository.put_manifest(reference, manifest).await?)
    }

    async fn listed_referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>, EndpointError> {
        self.referrers.listed(&self.repository, subject).await
    }

    async fn put_referrer(
        &self,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<bool, EndpointError> {
        RegistryReferrers::put(&self.repository, manifest, tag).await
    }

    async fn add_referrers(
        &self,
        subject: &Digest,
        referrers: &[Descriptor],
    ) -> Result<(), EndpointError> {
        self.repository
            .add_to_fallback_index(subject, referrers)
            .await?;
        Ok(())
    }

    async fn stored_manifest(&self, digest: &Digest) -> Result<Option<RawManifest>, EndpointError> {
        RegistryReferrers::stored(&self.repository, digest).await
    }
}

/// The first path segment of a repository (`library` of `library/python`).
fn owner(repository: &str) -> &str {
    repository.split('/').next().unwrap_or(repository)
}
