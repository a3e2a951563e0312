//! `--platform os/arch[/variant]` filters and how platforms are printed.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::Platform;

/// A platform the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformFilter {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{0}` is not a platform: expected os/arch[/variant], for example linux/amd64 or linux/arm64/v8"
)]
pub struct PlatformParseError(pub String);

impl FromStr for PlatformFilter {
    type Err = PlatformParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid = |s: &&str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        match parts.as_slice() {
            [os, arch] if valid(os) && valid(arch) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if valid(os) && valid(arch) && valid(variant) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(PlatformParseError(text.to_owned())),
        }
    }
}

impl fmt::Display for PlatformFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl PlatformFilter {
    /// Whether a manifest's platform is the one asked for. No variant in the
    /// filter matches every variant; `arm64` and `arm64/v8` are the same platform.
    pub fn matches(&self, platform: &Platform) -> bool {
        if platform.os().to_string() != self.os
            || platform.architecture().to_string() != self.architecture
        {
            return false;
        }
        let Some(want) = &self.variant else {
            return true;
        };
        let have = platform.variant().as_deref();
        let normalise = |v: Option<&str>| match (self.architecture.as_str(), v) {
            ("arm64", None) => Some("v8".to_owned()),
            (_, v) => v.map(str::to_owned),
        };
        normalise(have) == normalise(Some(want))
    }
}

/// `os/arch[/variant]` for display.
pub fn platform_string(platform: &Platform) -> String {
    let mut s = format!("{}/{}", platform.os(), platform.architecture());
    if let Some(v) = platform.variant() {
        s.push('/');
        s.push_str(v);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(json: &str) -> Platform {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn variant_rules() {
        let arm64 = platform(r#"{"os":"linux","architecture":"arm64","variant":"v8"}"#);
        let armv7 = platform(r#"{"os":"linux","architecture":"arm","variant":"v7"}"#);
        assert!(
            "linux/arm64"
                .parse::<PlatformFilter>()
                .unwrap()
                .matches(&arm64)
        );
        assert!(
            "linux/arm64/v8"
                .parse::<PlatformFilter>()
                .unwrap()
                .matches(&arm64)
        );
        assert!(
            !"linux/arm/v6"
                .parse::<PlatformFilter>()
                .unwrap()
                .matches(&armv7)
        );
        assert!(
            "linux/arm"
                .parse::<PlatformFilter>()
                .unwrap()
                .matches(&armv7)
        );
        assert_eq!(platform_string(&armv7), "linux/arm/v7");
    }

    #[test]
    fn malformed_platforms_are_refused() {
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            assert!(bad.parse::<PlatformFilter>().is_err(), "{bad}");
        }
    }
}
