//! ECR as a copy destination: the registry backend plus ECR's manners
//! (repository first, paced manifest PUTs, immutable tags).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mirror_engine::{
    Capabilities, Destination, EndpointError, Mount, MountOrigin, RegistryEndpoint, UploadSlot,
};
use mirror_oci::{BlobStream, Descriptor, Digest, RawManifest};
use mirror_registry::ErrorCode;

use crate::repository::{RepositoryOutcome, RepositorySettings, ensure_repository};

/// Spaces manifest PUTs (PutImage is limited to 10/s per account and region by
/// default); shared by every destination of one registry.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    pub fn per_second(rate: f64) -> Arc<Self> {
        let interval = if rate > 0.0 {
            Duration::from_secs_f64(1.0 / rate)
        } else {
            Duration::ZERO
        };
        Arc::new(Self {
            interval,
            next: Mutex::new(Instant::now()),
        })
    }

    pub async fn wait(&self) {
        let slot = {
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

/// One ECR repository as a destination.
pub struct EcrDestination {
    registry: RegistryEndpoint,
    client: aws_sdk_ecr::Client,
    repository: String,
    settings: RepositorySettings,
    ensured: tokio::sync::OnceCell<RepositoryOutcome>,
    pacer: Arc<Pacer>,
}

impl EcrDestination {
    pub fn new(
        registry: RegistryEndpoint,
        client: aws_sdk_ecr::Client,
        settings: RepositorySettings,
        pacer: Arc<Pacer>,
    ) -> Self {
        let repository = registry.repository().name().to_owned();
        Self {
            registry,
            client,
            repository,
            settings,
            ensured: tokio::sync::OnceCell::new(),
            pacer,
        }
    }

    /// What the repository check found (after the copy ran).
    pub fn repository_outcome(&self) -> Option<&RepositoryOutcome> {
        self.ensured.get()
    }
}

#[async_trait]
impl Destination for EcrDestination {
    fn name(&self) -> String {
        Destination::name(&self.registry)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            mount: true,
            parallel_manifest_puts: true,
            ..Capabilities::default()
        }
    }

    async fn ensure_repository(&self) -> Result<(), EndpointError> {
        self.ensured
            .get_or_try_init(|| ensure_repository(&self.client, &self.repository, &self.settings))
            .await
            .map_err(|e| EndpointError::Other(e.to_string()))?;
        Ok(())
    }

    async fn manifest_digest(&self, reference: &str) -> Result<Option<Digest>, EndpointError> {
        self.registry.manifest_digest(reference).await
    }

    async fn blob_exists(&self, descriptor: &Descriptor) -> Result<bool, EndpointError> {
        self.registry.blob_exists(descriptor).await
    }

    fn can_mount_from(&self, origin: &MountOrigin) -> bool {
        self.registry.can_mount_from(origin)
    }

    async fn mount_blob(
        &self,
        descriptor: &Descriptor,
        from: &MountOrigin,
    ) -> Result<Mount, EndpointError> {
        self.registry.mount_blob(descriptor, from).await
    }

    async fn put_blob(
        &self,
        descriptor: &Descriptor,
        body: BlobStream,
        slot: Option<UploadSlot>,
    ) -> Result<(), EndpointError> {
        self.registry.put_blob(descriptor, body, slot).await
    }

    async fn put_manifest(
        &self,
        reference: &str,
        manifest: &RawManifest,
    ) -> Result<(), EndpointError> {
        self.pacer.wait().await;
        match self.registry.put_manifest(reference, manifest).await {
            Err(EndpointError::Registry(e)) if e.code() == Some(&ErrorCode::TagInvalid) => {
                // Immutable repository: the tag exists. Same digest is a skip.
                let existing = self.registry.manifest_digest(reference).await?;
                if existing.as_ref() == Some(manifest.digest()) {
                    return Ok(());
                }
                Err(EndpointError::Other(format!(
                    "tag `{reference}` of immutable repository {} already holds {}; not overwriting it with {}\n  hint: push under a new tag (--to NAME:TAG), or make the repository mutable",
                    self.repository,
                    existing.map_or_else(|| "another image".to_owned(), |d| d.to_string()),
                    manifest.digest()
                )))
            }
            other => other,
        }
    }
}
