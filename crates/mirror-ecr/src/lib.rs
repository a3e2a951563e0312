//! Amazon ECR for mirror: what makes a registry ECR ([`EcrHost`]), its auth
//! ([`EcrAuth`]: GetAuthorizationToken through the AWS default credential chain,
//! refreshed at half-life and on 401), its repositories ([`ensure_repository`]),
//! ECR as a destination with its manners ([`EcrDestination`]), and the rest of
//! the AWS walkthrough: CloudWatch log groups ([`logs`]) and IAM policies
//! ([`iam`]). (Dockerfile FROM rewriting, which needs nothing from AWS, is the
//! `mirror-dockerfile` crate.)

mod auth;
mod destination;
mod error;
mod host;
mod repository;

pub mod iam;
pub mod logs;

pub use auth::EcrAuth;
pub use destination::{EcrDestination, Pacer};
pub use error::{EcrError, SettingsError};
pub use host::{EcrHost, check_repository_name};
pub use repository::{
    RepositoryOutcome, RepositorySettings, TAG_MUTABILITY_VALUES, ensure_repository,
};

/// Loads the AWS configuration the way the AWS CLI does (environment, profiles
/// with SSO and credential_process, web identity, ECS, IMDS; endpoint variables
/// such as `AWS_ENDPOINT_URL_ECR`), with an optional region override.
pub async fn aws_config(region: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    loader.load().await
}
