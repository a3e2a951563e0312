//! ECR as a copy destination: the registry backend plus ECR's manners
//! (repository first, paced manifest PUTs, immutable tags, mounts only of
//! blobs that a committed manifest references, and only when the account's
//! BLOB_MOUNTING setting is on).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mirror_engine::{
    Capabilities, Destination, EndpointError, Mount, MountOrigin, MountSetting, MountWhen,
    RegistryEndpoint, UploadSlot,
};
use mirror_oci::{BlobStream, Descriptor, Digest, RawManifest};
use mirror_registry::ErrorCode;

use crate::error::EcrError;
use crate::repository::{RepositoryOutcome, RepositorySettings, ensure_repository};

/// Paces manifest PUTs to PutImage's quota (10/s per account and region by
/// default); shared by every destination of one registry.
///
/// A sliding window, not a fixed interval: at most `burst` PUTs (the rate,
/// rounded down, at least 1) in any window of `burst / rate` seconds. The 8
/// PUTs of a 7-platform index, which arrive together at the end of a copy, go
/// out at once instead of 100 ms apart (0.7 s saved per image at 10/s), and
/// the window is never fuller than a token bucket of that rate and size
/// allows, so a quota enforced either way is not exceeded. The window is
/// padded by [`Pacer::SLACK`] for jitter between our clock and the server's.
#[derive(Debug)]
pub struct Pacer {
    burst: usize,
    window: Duration,
    /// The slots of the last `burst` reservations, oldest first.
    recent: Mutex<VecDeque<Instant>>,
}

impl Pacer {
    const SLACK: Duration = Duration::from_millis(50);

    /// `rate` PUTs per second; 0 (or less) does not pace.
    pub fn per_second(rate: f64) -> Arc<Self> {
        let (burst, window) = if rate > 0.0 && rate.is_finite() {
            let burst = rate.floor().max(1.0);
            (
                burst as usize,
                Duration::from_secs_f64(burst / rate) + Self::SLACK,
            )
        } else {
            (usize::MAX, Duration::ZERO)
        };
        Arc::new(Self {
            burst,
            window,
            recent: Mutex::new(VecDeque::new()),
        })
    }

    /// Waits for this PUT's slot.
    pub async fn wait(&self) {
        let slot = self.reserve(Instant::now());
        tokio::time::sleep_until(slot.into()).await;
    }

    /// The earliest slot at or after `now` that keeps every window at most
    /// `burst` PUTs, recorded as taken.
    fn reserve(&self, now: Instant) -> Instant {
        if self.burst == usize::MAX {
            return now;
        }
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = if recent.len() < self.burst {
            now
        } else {
            // The oldest of the last `burst` must have left the window.
            let oldest = recent.pop_front().unwrap_or(now);
            now.max(oldest + self.window)
        };
        recent.push_back(slot);
        slot
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

    async fn ensure_repository(&self) -> Result<(), EndpointError> {
        self.ensured
            .get_or_try_init(|| ensure_repository(&self.client, &self.repository, &self.settings))
            .await
            .map_err(EndpointError::backend)?;
        Ok(())
    }

    async fn manifest_digest(&self, reference: &str) -> Result<Option<Digest>, EndpointError> {
        self.registry.manifest_digest(reference).await
    }

    async fn blob_exists(&self, descriptor: &Descriptor) -> Result<bool, EndpointError> {
        self.registry.blob_exists(descriptor).await
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            mount: MountWhen::ManifestCommitted,
            ..Capabilities::default()
        }
    }

    fn can_mount_from(&self, origin: &MountOrigin) -> bool {
        self.registry.can_mount_from(origin)
    }

    fn location(&self) -> Option<MountOrigin> {
        self.registry.location()
    }

    /// The account setting BLOB_MOUNTING (GetAccountSetting); the engine asks
    /// once per run and registry. Unreadable (not supported by an emulator,
    /// denied by a policy) counts as off, and says so.
    async fn mount_setting(&self) -> MountSetting {
        blob_mounting(&self.client).await
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
                Err(EndpointError::backend(EcrError::ImmutableTag {
                    repository: self.repository.clone(),
                    tag: reference.to_owned(),
                    existing: existing.map(|d| d.to_string()),
                    new: manifest.digest().to_string(),
                }))
            }
            other => other,
        }
    }

    async fn listed_referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>, EndpointError> {
        self.registry.listed_referrers(subject).await
    }

    /// A referrer push is a PutImage like any other: paced. ECR answers it
    /// with `OCI-Subject` (it keeps referrers itself).
    async fn put_referrer(
        &self,
        manifest: &RawManifest,
        tag: Option<&str>,
    ) -> Result<bool, EndpointError> {
        self.pacer.wait().await;
        self.registry.put_referrer(manifest, tag).await
    }

    async fn add_referrers(
        &self,
        subject: &Digest,
        referrers: &[Descriptor],
    ) -> Result<(), EndpointError> {
        self.pacer.wait().await;
        self.registry.add_referrers(subject, referrers).await
    }

    async fn stored_manifest(&self, digest: &Digest) -> Result<Option<RawManifest>, EndpointError> {
        self.registry.stored_manifest(digest).await
    }
}

/// The account setting that lets ECR mount blobs across repositories.
const BLOB_MOUNTING: &str = "BLOB_MOUNTING";

/// Reads BLOB_MOUNTING; anything but ENABLED, or no answer, is off.
pub(crate) async fn blob_mounting(client: &aws_sdk_ecr::Client) -> MountSetting {
    let fix = Some(format!(
        "`aws ecr put-account-setting --name {BLOB_MOUNTING} --value ENABLED` turns them on"
    ));
    match client
        .get_account_setting()
        .name(BLOB_MOUNTING)
        .send()
        .await
    {
        Ok(answer) if answer.value() == Some("ENABLED") => MountSetting::Enabled,
        Ok(answer) => MountSetting::Disabled {
            reason: format!(
                "the account setting {BLOB_MOUNTING} is {}",
                answer.value().unwrap_or("not set")
            ),
            fix,
        },
        Err(error) => {
            let detail = match error
                .as_service_error()
                .and_then(|e| aws_sdk_ecr::error::ProvideErrorMetadata::code(e).map(str::to_owned))
            {
                Some(code) => code,
                None => aws_sdk_ecr::error::DisplayErrorContext(&error).to_string(),
            };
            MountSetting::Disabled {
                reason: format!(
                    "GetAccountSetting {BLOB_MOUNTING} gave no answer ({detail}), so mounts are treated as off"
                ),
                fix: Some(format!(
                    "allow ecr:GetAccountSetting, and `aws ecr put-account-setting --name {BLOB_MOUNTING} --value ENABLED` turns them on"
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(pacer: &Pacer, start: Instant, at: &[u64]) -> Vec<u64> {
        at.iter()
            .map(|ms| {
                let slot = pacer.reserve(start + Duration::from_millis(*ms));
                (slot - start).as_millis() as u64
            })
            .collect()
    }

    #[test]
    fn a_burst_up_to_the_rate_goes_at_once_then_the_window_holds() {
        let pacer = Pacer::per_second(10.0);
        let start = Instant::now();
        let slots = offsets(&pacer, start, &[0; 12]);
        assert_eq!(slots[..10], [0; 10]);
        // The 11th waits until the 1st has left the (padded) one-second window.
        assert_eq!(slots[10..], [1050, 1050]);
    }

    #[test]
    fn no_window_ever_holds_more_than_the_rate() {
        let pacer = Pacer::per_second(3.0);
        let start = Instant::now();
        let slots = offsets(&pacer, start, &[0, 10, 20, 30, 40, 1500, 1500, 1500, 1500]);
        for (i, slot) in slots.iter().enumerate() {
            let in_window = slots[i..].iter().filter(|s| **s < slot + 1000).count();
            assert!(in_window <= 3, "{slots:?}");
        }
        assert_eq!(slots, [0, 10, 20, 1050, 1060, 1500, 2100, 2110, 2550]);
    }

    #[test]
    fn fractional_rates_space_single_puts() {
        let pacer = Pacer::per_second(0.5);
        let start = Instant::now();
        assert_eq!(offsets(&pacer, start, &[0, 0, 0]), [0, 2050, 4100]);
    }

    #[test]
    fn zero_does_not_pace() {
        let pacer = Pacer::per_second(0.0);
        let start = Instant::now();
        assert_eq!(offsets(&pacer, start, &[0; 50]), [0; 50]);
    }
}
