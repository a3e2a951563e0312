//! What makes a registry host ECR, and which account and region it belongs to.

use std::sync::OnceLock;

use regex::Regex;

/// An ECR private registry host, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrHost {
    pub host: String,
    pub account: String,
    pub region: String,
}

fn pattern() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| {
        Regex::new(r"^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
            .unwrap_or_else(|_| unreachable!("the pattern is a valid regex"))
    })
}

impl EcrHost {
    /// `123456789012.dkr.ecr.us-east-1.amazonaws.com` (also FIPS and China hosts).
    pub fn parse(host: &str) -> Option<Self> {
        let host = host
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_ascii_lowercase();
        let captures = pattern().captures(&host)?;
        Some(Self {
            account: captures[1].to_owned(),
            region: captures[2].to_owned(),
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
    fn recognises_ecr_hosts() {
        let h = EcrHost::parse("123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap();
        assert_eq!(
            (h.account.as_str(), h.region.as_str()),
            ("123456789012", "us-east-1")
        );
        assert!(
            EcrHost::parse("https://123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com")
                .is_some()
        );
        assert!(EcrHost::parse("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn").is_some());
        assert!(EcrHost::parse("registry-1.docker.io").is_none());
        assert!(EcrHost::parse("12345.dkr.ecr.us-east-1.amazonaws.com").is_none());
    }

    #[test]
    fn repository_names() {
        assert!(check_repository_name("cruddur-python").is_ok());
        assert!(check_repository_name("team/python").is_ok());
        assert!(check_repository_name("Python").is_err());
        assert!(check_repository_name("a").is_err());
    }
}
