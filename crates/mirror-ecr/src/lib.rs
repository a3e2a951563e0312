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
    aws_config_for(region, Endpoints::default()).await
}

/// Which AWS API endpoints the calls for a registry host take: a FIPS or
/// dual-stack registry host has its API calls made on the FIPS or
/// dual-stack endpoints too ([`EcrHost::fips`], [`EcrHost::dual_stack`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Endpoints {
    pub fips: bool,
    pub dual_stack: bool,
}

impl From<&EcrHost> for Endpoints {
    fn from(host: &EcrHost) -> Self {
        Self {
            fips: host.fips,
            dual_stack: host.dual_stack,
        }
    }
}

/// [`aws_config`], on the FIPS and/or dual-stack endpoints when asked (the
/// AWS config's own `use_fips_endpoint` / `use_dualstack_endpoint` apply
/// otherwise).
pub async fn aws_config_for(region: Option<&str>, endpoints: Endpoints) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    if endpoints.fips {
        loader = loader.use_fips(true);
    }
    if endpoints.dual_stack {
        loader = loader.use_dual_stack(true);
    }
    loader.load().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fips_and_dual_stack_registry_hosts_take_those_api_endpoints() {
        let host = EcrHost::parse("123456789012.dkr-ecr-fips.us-east-1.on.aws").unwrap();
        let endpoints = Endpoints::from(&host);
        assert_eq!(
            endpoints,
            Endpoints {
                fips: true,
                dual_stack: true
            }
        );
        let config = aws_config_for(Some("us-east-1"), endpoints).await;
        assert_eq!(config.use_fips(), Some(true));
        assert_eq!(config.use_dual_stack(), Some(true));
        let plain = EcrHost::parse("123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap();
        assert_eq!(Endpoints::from(&plain), Endpoints::default());
    }
}
