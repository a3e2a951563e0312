//! What makes a registry host ECR, and which account and region it belongs to.
//!
//! A host that is ECR gets ECR's auth (GetAuthorizationToken) and manners; one
//! that is not recognised silently falls back to generic registry auth, which
//! fails against ECR. So every private-registry endpoint AWS publishes must
//! match: the commercial, China, GovCloud, European Sovereign Cloud and ISO
//! partitions, FIPS endpoints (`dkr.ecr-fips`), and the dual-stack endpoints
//! (`dkr-ecr[-fips].REGION.on.aws`, `.on.amazonwebservices.com.cn` in China),
//! as amazon-ecr-credential-helper recognises them.

use std::sync::OnceLock;

use regex::Regex;

/// An ECR private registry host, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrHost {
    /// The host name, lowercase, without scheme, port or path.
    pub host: String,
    pub account: String,
    pub region: String,
    /// A FIPS endpoint (`dkr.ecr-fips.` or `dkr-ecr-fips.`): the AWS API
    /// calls for it belong on FIPS endpoints too.
    pub fips: bool,
    /// A dual-stack (IPv4 and IPv6) endpoint: under `on.aws` (or
    /// `on.amazonwebservices.com.cn`), where AWS names them `dkr-ecr.`.
    pub dual_stack: bool,
}

/// `ACCOUNT.dkr.ecr[-fips].REGION.DOMAIN` (AWS spells dual-stack hosts
/// `dkr-ecr`; either spelling is accepted under every domain, as the
/// credential helper does), DOMAIN being one of the partitions' domains.
fn pattern() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| {
        Regex::new(concat!(
            r"^(?<account>\d{12})\.dkr[.-]ecr(?<fips>-fips)?\.",
            r"(?<region>[a-z0-9][a-z0-9_-]*)\.",
            r"(?<domain>amazonaws\.com|amazonaws\.com\.cn|amazonaws\.eu",
            r"|on\.aws|on\.amazonwebservices\.com\.cn",
            r"|c2s\.ic\.gov|sc2s\.sgov\.gov|cloud\.adc-e\.uk|csp\.hci\.ic\.gov)$",
        ))
        .unwrap_or_else(|_| unreachable!("the pattern is a valid regex"))
    })
}

impl EcrHost {
    /// `123456789012.dkr.ecr.us-east-1.amazonaws.com`, and every other
    /// partition and endpoint kind (see the module doc). A scheme, a port and
    /// a path are ignored, as `docker login` URLs carry them.
    pub fn parse(host: &str) -> Option<Self> {
        let host = host.trim();
        let host = host
            .split_once("://")
            .map_or(host, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        let host = host
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host, |(name, _)| name)
            .to_ascii_lowercase();
        let captures = pattern().captures(&host)?;
        let dual_stack = matches!(
            &captures["domain"],
            "on.aws" | "on.amazonwebservices.com.cn"
        );
        Some(Self {
            account: captures["account"].to_owned(),
            region: captures["region"].to_owned(),
            fips: captures.name("fips").is_some(),
            dual_stack,
            host: host.clone(),
        })
    }
}

/// ECR repository names: 2-256 characters, lowercase path components.
pub fn check_repository_name(name: &str) -> Result<(), String> {
    static NAME: OnceLock<Regex> = OnceLock::new();
    let re = NAME.get_or_init(|| {
        Regex::new(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
            .unwrap_or_else(|_| unreachable!("the pattern is a valid regex"))
    });
    if !(2..=256).contains(&name.len()) || !re.is_match(name) {
        return Err(format!(
            "`{name}` is not a valid ECR repository name: 2-256 lowercase letters, digits and . _ - separated path components (for example team/python)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_every_partition_and_endpoint_kind() {
        // (input, host, account, region, fips, dual_stack)
        let table = [
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "123456789012",
                "us-east-1",
                false,
                false,
            ),
            (
                "https://123456789012.dkr.ecr.us-west-2.amazonaws.com/v2/team/app",
                "123456789012.dkr.ecr.us-west-2.amazonaws.com",
                "123456789012",
                "us-west-2",
                false,
                false,
            ),
            (
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com:443",
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                "123456789012",
                "eu-west-1",
                false,
                false,
            ),
            (
                "123456789012.DKR.ECR.US-EAST-1.AMAZONAWS.COM",
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "123456789012",
                "us-east-1",
                false,
                false,
            ),
            // FIPS
            (
                "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com",
                "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com",
                "123456789012",
                "us-east-1",
                true,
                false,
            ),
            // China
            (
                "210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn",
                "210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn",
                "210987654321",
                "cn-north-1",
                false,
                false,
            ),
            (
                "210987654321.dkr-ecr.cn-northwest-1.on.amazonwebservices.com.cn",
                "210987654321.dkr-ecr.cn-northwest-1.on.amazonwebservices.com.cn",
                "210987654321",
                "cn-northwest-1",
                false,
                true,
            ),
            // GovCloud
            (
                "123456789012.dkr.ecr.us-gov-west-1.amazonaws.com",
                "123456789012.dkr.ecr.us-gov-west-1.amazonaws.com",
                "123456789012",
                "us-gov-west-1",
                false,
                false,
            ),
            (
                "https://123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
                "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
                "123456789012",
                "us-gov-west-1",
                true,
                false,
            ),
            (
                "123456789012.dkr-ecr.us-gov-east-1.on.aws",
                "123456789012.dkr-ecr.us-gov-east-1.on.aws",
                "123456789012",
                "us-gov-east-1",
                false,
                true,
            ),
            (
                "123456789012.dkr-ecr-fips.us-gov-east-1.on.aws",
                "123456789012.dkr-ecr-fips.us-gov-east-1.on.aws",
                "123456789012",
                "us-gov-east-1",
                true,
                true,
            ),
            // Dual-stack, commercial
            (
                "123456789012.dkr-ecr.us-west-2.on.aws",
                "123456789012.dkr-ecr.us-west-2.on.aws",
                "123456789012",
                "us-west-2",
                false,
                true,
            ),
            (
                "123456789012.dkr-ecr-fips.us-west-2.on.aws",
                "123456789012.dkr-ecr-fips.us-west-2.on.aws",
                "123456789012",
                "us-west-2",
                true,
                true,
            ),
            // European Sovereign Cloud
            (
                "123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu",
                "123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu",
                "123456789012",
                "eusc-de-east-1",
                false,
                false,
            ),
            // ISO partitions
            (
                "123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov",
                "123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov",
                "123456789012",
                "us-iso-east-1",
                false,
                false,
            ),
            (
                "123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
                "123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
                "123456789012",
                "us-isob-east-1",
                false,
                false,
            ),
            (
                "123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk",
                "123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk",
                "123456789012",
                "eu-isoe-west-1",
                false,
                false,
            ),
            (
                "123456789012.dkr.ecr.us-isof-south-1.csp.hci.ic.gov",
                "123456789012.dkr.ecr.us-isof-south-1.csp.hci.ic.gov",
                "123456789012",
                "us-isof-south-1",
                false,
                false,
            ),
        ];
        for (input, host, account, region, fips, dual_stack) in table {
            assert_eq!(
                EcrHost::parse(input),
                Some(EcrHost {
                    host: host.to_owned(),
                    account: account.to_owned(),
                    region: region.to_owned(),
                    fips,
                    dual_stack,
                }),
                "{input}"
            );
        }
    }

    #[test]
    fn other_hosts_are_not_ecr() {
        for input in [
            "registry-1.docker.io",
            "public.ecr.aws",
            "12345.dkr.ecr.us-east-1.amazonaws.com",
            ".dkr.ecr.us-east-1.amazonaws.com",
            "1234567890123.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr..amazonaws.com",
            // Look-alikes under someone else's domain.
            "123456789012.dkr.ecr.us-west-2.amazonaws.com.example.com",
            "https://123456789012.dkr.ecr.us-west-2.amazonaws.com.example.com/app:1",
            "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com.example.com",
            "210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn.example.com.cn",
            "210987654321.dkr.ecr.cn-north-1.on.aws.com.cn",
            "123456789012.dkr_ecr.us-east-1.on.aws",
            "123456789012.dkr.ecr.us-east-1.amazonaws.org",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com:https",
        ] {
            assert_eq!(EcrHost::parse(input), None, "{input}");
        }
    }

    #[test]
    fn repository_names() {
        assert!(check_repository_name("cruddur-python").is_ok());
        assert!(check_repository_name("team/python").is_ok());
        assert!(check_repository_name("Python").is_err());
        assert!(check_repository_name("a").is_err());
    }
}
