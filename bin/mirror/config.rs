//! The optional config file: registry settings that belong to a machine or a
//! team rather than to one command line (VPC endpoints, proxies, private CAs).
//!
//! ```toml
//! insecure-registries = ["localhost:5000"]
//! ca-certs = ["corp-ca.pem"]          # relative to this file's directory
//!
//! [registry-endpoints]
//! "123456789012.dkr.ecr.us-east-1.amazonaws.com" = "https://vpce-0abc.dkr.ecr.us-east-1.vpce.amazonaws.com"
//! ```
//!
//! Read from `--config FILE` (or `MIRROR_CONFIG`), else from
//! `$XDG_CONFIG_HOME/mirror/config.toml` (`~/.config/mirror/config.toml`) when
//! that file exists. Command-line and environment values win over the file:
//! an endpoint given for a host replaces the file's entry for that host;
//! insecure registries and CA files add up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Failure;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct FileConfig {
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    #[serde(default)]
    pub ca_certs: Vec<PathBuf>,
    #[serde(default)]
    pub registry_endpoints: BTreeMap<String, String>,
}

impl FileConfig {
    /// The file named explicitly (it must exist), else the default one if present.
    pub fn load(explicit: Option<&Path>) -> Result<(Self, Option<PathBuf>), Failure> {
        let (path, required) = match explicit {
            Some(path) => (path.to_path_buf(), true),
            None => match default_path() {
                Some(path) => (path, false),
                None => return Ok((Self::default(), None)),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok((Self::default(), None));
            }
            Err(e) => {
                return Err(Failure::usage(format!(
                    "config file {}: {e} (given by --config or MIRROR_CONFIG)",
                    path.display()
                )));
            }
        };
        let mut config = Self::parse(&text).map_err(|e| {
            Failure::usage(format!(
                "config file {}: {e}\nexpected keys: insecure-registries, ca-certs, [registry-endpoints]",
                path.display()
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for ca in &mut config.ca_certs {
            if ca.is_relative() {
                *ca = base.join(&*ca);
            }
        }
        Ok((config, Some(path)))
    }

    fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

/// `$XDG_CONFIG_HOME/mirror/config.toml`, else `$HOME/.config/mirror/config.toml`.
fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(base.join("mirror").join("config.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_key() {
        let config = FileConfig::parse(
            r#"
insecure-registries = ["localhost:5000"]
ca-certs = ["ca.pem"]
[registry-endpoints]
"1.dkr.ecr.us-east-1.amazonaws.com" = "https://vpce.example"
"#,
        )
        .expect("valid config");
        assert_eq!(config.insecure_registries, ["localhost:5000"]);
        assert_eq!(config.ca_certs, [PathBuf::from("ca.pem")]);
        assert_eq!(
            config.registry_endpoints["1.dkr.ecr.us-east-1.amazonaws.com"],
            "https://vpce.example"
        );
    }

    #[test]
    fn refuses_unknown_keys() {
        let err = FileConfig::parse("registry-endpoint = 1\n").expect_err("a typo is an error");
        assert!(err.to_string().contains("registry-endpoint"), "{err}");
    }
}
