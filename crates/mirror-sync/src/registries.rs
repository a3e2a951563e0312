//! The registries of one run: one HTTP client for every host, and the AWS
//! state of every ECR region a reference names (API client, registry token,
//! PutImage pacing), made once and shared by every image.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mirror_ecr::{EcrAuth, EcrHost, Pacer};
use mirror_oci::Reference;
use mirror_registry::{Credentials, RegistryClient, Repository};
use tokio::sync::Mutex;

use crate::error::SyncError;

/// Test hook and escape hatch: ECR token lifetime in seconds, replacing the
/// `expiresAt` GetAuthorizationToken returns (refresh happens at half of it).
pub const TOKEN_LIFETIME_ENV: &str = "MIRROR_ECR_TOKEN_LIFETIME_SECS";

/// AWS state for one region: the ECR API client, registry credentials, pacing.
#[derive(Clone)]
pub struct EcrRegion {
    pub api: aws_sdk_ecr::Client,
    pub auth: Arc<EcrAuth>,
    pub pacer: Arc<Pacer>,
}

/// How ECR registries are reached.
#[derive(Debug, Clone)]
pub struct EcrOptions {
    /// The region of the caller's own registry (`None`: the AWS config chain's).
    pub region: Option<String>,
    /// Manifest PUTs per second per ECR registry (PutImage's quota).
    pub manifest_puts_per_second: f64,
}

impl Default for EcrOptions {
    fn default() -> Self {
        Self {
            region: None,
            manifest_puts_per_second: 10.0,
        }
    }
}

/// Sets up one region: fails without a region, before any AWS call.
pub async fn ecr_region(
    region: Option<&str>,
    puts_per_second: f64,
) -> Result<EcrRegion, SyncError> {
    ecr_region_at(region, mirror_ecr::Endpoints::default(), puts_per_second).await
}

/// [`ecr_region`] with its API calls on the FIPS and/or dual-stack
/// endpoints (a registry host of that kind asks for them).
pub async fn ecr_region_at(
    region: Option<&str>,
    endpoints: mirror_ecr::Endpoints,
    puts_per_second: f64,
) -> Result<EcrRegion, SyncError> {
    let config = mirror_ecr::aws_config_for(region, endpoints).await;
    if config.region().is_none() {
        return Err(SyncError::NoRegion);
    }
    let api = aws_sdk_ecr::Client::new(&config);
    let lifetime = std::env::var(TOKEN_LIFETIME_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    Ok(EcrRegion {
        auth: EcrAuth::new(api.clone(), lifetime),
        api,
        pacer: Pacer::per_second(puts_per_second),
    })
}

/// The registry client and the ECR regions of one run.
pub struct Registries {
    client: RegistryClient,
    ecr: EcrOptions,
    /// By region and endpoint kind (FIPS, dual-stack).
    regions: Mutex<HashMap<(String, mirror_ecr::Endpoints), EcrRegion>>,
    /// The caller's own registry, once asked for.
    own: Mutex<Option<(EcrHost, EcrRegion)>>,
}

impl Registries {
    pub fn new(client: RegistryClient, ecr: EcrOptions) -> Self {
        Self {
            client,
            ecr,
            regions: Mutex::new(HashMap::new()),
            own: Mutex::new(None),
        }
    }

    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// The region asked for the caller's own registry, if one was.
    pub fn ecr_region(&self) -> Option<&str> {
        self.ecr.region.as_deref()
    }

    /// The caller's own ECR registry (GetAuthorizationToken says which).
    pub async fn own_registry(&self) -> Result<(EcrHost, EcrRegion), SyncError> {
        let mut own = self.own.lock().await;
        if let Some(found) = own.as_ref() {
            return Ok(found.clone());
        }
        let region = ecr_region(
            self.ecr.region.as_deref(),
            self.ecr.manifest_puts_per_second,
        )
        .await?;
        let host = region.auth.registry().await.map_err(SyncError::Aws)?;
        self.regions.lock().await.insert(
            (host.region.clone(), mirror_ecr::Endpoints::default()),
            region.clone(),
        );
        *own = Some((host.clone(), region.clone()));
        Ok((host, region))
    }

    /// The AWS state of an ECR host's region, set up on first use.
    pub async fn region(&self, host: &EcrHost) -> Result<EcrRegion, SyncError> {
        let key = (host.region.clone(), mirror_ecr::Endpoints::from(host));
        let mut regions = self.regions.lock().await;
        if let Some(region) = regions.get(&key) {
            return Ok(region.clone());
        }
        let region =
            ecr_region_at(Some(&host.region), key.1, self.ecr.manifest_puts_per_second).await?;
        regions.insert(key, region.clone());
        Ok(region)
    }

    /// A repository to read or write; an ECR host without explicit
    /// credentials gets ECR's auth (and its region is returned).
    pub async fn repository(
        &self,
        reference: &Reference,
        credentials: Option<Credentials>,
    ) -> Result<(Repository, Option<EcrRegion>), SyncError> {
        let failed = |source| SyncError::Registry {
            reference: reference.to_string(),
            source: Box::new(source),
        };
        match EcrHost::parse(reference.registry()) {
            Some(host) if credentials.is_none() => {
                let region = self.region(&host).await?;
                let repository = self
                    .client
                    .repository_with_provider(reference, region.auth.clone())
                    .map_err(failed)?;
                Ok((repository, Some(region)))
            }
            _ => Ok((
                self.client
                    .repository(reference, credentials)
                    .map_err(failed)?,
                None,
            )),
        }
    }
}
