//! The destination repository: confirmed or created, the way the user asked,
//! before the first blob upload (ECR does not create repositories on push).

use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, ImageTagMutability,
    ImageTagMutabilityExclusionFilter, ImageTagMutabilityExclusionFilterType, Repository, Tag,
};
use tracing::info;

use crate::error::{EcrError, SettingsError, classify};

/// How a repository should be, when mirror creates it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositorySettings {
    /// MUTABLE, IMMUTABLE, MUTABLE_WITH_EXCLUSION, IMMUTABLE_WITH_EXCLUSION.
    pub tag_mutability: Option<String>,
    /// Wildcard tag filters for the *_WITH_EXCLUSION modes.
    pub exclusion_filters: Vec<String>,
    pub scan_on_push: Option<bool>,
    /// AES256, KMS or KMS_DSSE.
    pub encryption: Option<String>,
    pub kms_key: Option<String>,
    pub tags: Vec<(String, String)>,
    /// Only use an existing repository, never create one.
    pub no_create: bool,
}

pub const TAG_MUTABILITY_VALUES: &[&str] = &[
    "MUTABLE",
    "IMMUTABLE",
    "MUTABLE_WITH_EXCLUSION",
    "IMMUTABLE_WITH_EXCLUSION",
];

impl RepositorySettings {
    /// Checks values before any AWS call.
    pub fn validate(&self) -> Result<(), EcrError> {
        if let Some(m) = &self.tag_mutability
            && !TAG_MUTABILITY_VALUES.contains(&m.as_str())
        {
            return Err(SettingsError::UnknownTagMutability(m.clone()).into());
        }
        let with_exclusion = self
            .tag_mutability
            .as_deref()
            .is_some_and(|m| m.ends_with("_WITH_EXCLUSION"));
        if with_exclusion && self.exclusion_filters.is_empty() {
            let mode = self.tag_mutability.clone().unwrap_or_default();
            return Err(SettingsError::NoExclusions(mode).into());
        }
        if !with_exclusion && !self.exclusion_filters.is_empty() {
            return Err(SettingsError::UnusedExclusions.into());
        }
        if let Some(e) = &self.encryption
            && !matches!(e.as_str(), "AES256" | "KMS" | "KMS_DSSE")
        {
            return Err(SettingsError::UnknownEncryption(e.clone()).into());
        }
        if self.kms_key.is_some() && !matches!(self.encryption.as_deref(), Some("KMS" | "KMS_DSSE"))
        {
            return Err(SettingsError::KmsKeyWithoutKms.into());
        }
        Ok(())
    }
}

/// What `ensure_repository` found or did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryOutcome {
    pub created: bool,
    pub uri: Option<String>,
    /// Settings of an existing repository that differ from what was asked.
    pub drift: Vec<String>,
    pub immutable: bool,
}

/// Confirms the repository exists (DescribeRepositories) or creates it with
/// `settings`. An existing repository is used as is; differences are reported.
pub async fn ensure_repository(
    client: &aws_sdk_ecr::Client,
    name: &str,
    settings: &RepositorySettings,
) -> Result<RepositoryOutcome, EcrError> {
    match client
        .describe_repositories()
        .repository_names(name)
        .send()
        .await
    {
        Ok(output) => {
            if let Some(existing) = output.repositories().first() {
                return Ok(existing_outcome(existing, settings));
            }
        }
        Err(error) => {
            let not_found = error
                .as_service_error()
                .is_some_and(|e| e.is_repository_not_found_exception());
            if !not_found {
                return Err(classify("ecr:DescribeRepositories", error));
            }
        }
    }
    if settings.no_create {
        return Err(EcrError::NotCreating {
            name: name.to_owned(),
        });
    }
    let mut request = client.create_repository().repository_name(name);
    if let Some(m) = &settings.tag_mutability {
        request = request.image_tag_mutability(ImageTagMutability::from(m.as_str()));
        for filter in &settings.exclusion_filters {
            let filter = ImageTagMutabilityExclusionFilter::builder()
                .filter_type(ImageTagMutabilityExclusionFilterType::Wildcard)
                .filter(filter)
                .build()
                .map_err(|e| SettingsError::Refused {
                    setting: format!("tag filter `{filter}`"),
                    reason: e.to_string(),
                })?;
            request = request.image_tag_mutability_exclusion_filters(filter);
        }
    }
    if let Some(scan) = settings.scan_on_push {
        request = request.image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(scan)
                .build(),
        );
    }
    if let Some(e) = &settings.encryption {
        let mut config =
            EncryptionConfiguration::builder().encryption_type(EncryptionType::from(e.as_str()));
        if let Some(key) = &settings.kms_key {
            config = config.kms_key(key);
        }
        request = request.encryption_configuration(config.build().map_err(|e| {
            SettingsError::Refused {
                setting: "the encryption configuration".to_owned(),
                reason: e.to_string(),
            }
        })?);
    }
    for (key, value) in &settings.tags {
        request = request.tags(Tag::builder().key(key).value(value).build().map_err(|e| {
            SettingsError::Refused {
                setting: format!("resource tag `{key}`"),
                reason: e.to_string(),
            }
        })?);
    }
    match request.send().await {
        Ok(output) => {
            info!(repository = name, "created ECR repository");
            Ok(RepositoryOutcome {
                created: true,
                uri: output
                    .repository()
                    .and_then(|r| r.repository_uri())
                    .map(str::to_owned),
                drift: Vec::new(),
                immutable: settings
                    .tag_mutability
                    .as_deref()
                    .is_some_and(|m| m.starts_with("IMMUTABLE")),
            })
        }
        Err(error) => {
            // Created by someone else in between: use it.
            if error
                .as_service_error()
                .is_some_and(|e| e.is_repository_already_exists_exception())
            {
                let output = client
                    .describe_repositories()
                    .repository_names(name)
                    .send()
                    .await
                    .map_err(|e| classify("ecr:DescribeRepositories", e))?;
                if let Some(existing) = output.repositories().first() {
                    return Ok(existing_outcome(existing, settings));
                }
            }
            Err(classify("ecr:CreateRepository", error))
        }
    }
}

fn existing_outcome(existing: &Repository, settings: &RepositorySettings) -> RepositoryOutcome {
    let mut drift = Vec::new();
    let actual_mutability = existing
        .image_tag_mutability()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "MUTABLE".to_owned());
    if let Some(wanted) = &settings.tag_mutability
        && wanted != &actual_mutability
    {
        drift.push(format!(
            "tag mutability is {actual_mutability}, not {wanted} as asked"
        ));
    }
    if let Some(wanted) = settings.scan_on_push {
        let actual = existing
            .image_scanning_configuration()
            .is_some_and(|c| c.scan_on_push());
        if actual != wanted {
            drift.push(format!("scan on push is {actual}, not {wanted} as asked"));
        }
    }
    if let Some(wanted) = &settings.encryption {
        let actual = existing
            .encryption_configuration()
            .map(|c| c.encryption_type().as_str().to_owned())
            .unwrap_or_else(|| "AES256".to_owned());
        if &actual != wanted {
            drift.push(format!("encryption is {actual}, not {wanted} as asked"));
        }
    }
    RepositoryOutcome {
        created: false,
        uri: existing.repository_uri().map(str::to_owned),
        drift,
        immutable: actual_mutability.starts_with("IMMUTABLE"),
    }
}
