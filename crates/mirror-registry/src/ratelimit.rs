//! Docker Hub's pull-limit headers, read live instead of assumed.

use std::fmt;

use http::HeaderMap;

/// `ratelimit-limit: 100;w=21600` and `ratelimit-remaining: 76;w=21600`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RateLimit {
    pub limit: u64,
    pub remaining: u64,
    pub window_seconds: Option<u64>,
}

impl RateLimit {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let parse = |name: &str| -> Option<(u64, Option<u64>)> {
            let value = headers.get(name)?.to_str().ok()?;
            let mut parts = value.split(';');
            let count = parts.next()?.trim().parse().ok()?;
            let window = parts.find_map(|p| p.trim().strip_prefix("w=")?.parse().ok());
            Some((count, window))
        };
        let (limit, window) = parse("ratelimit-limit")?;
        let (remaining, window2) = parse("ratelimit-remaining")?;
        Some(Self {
            limit,
            remaining,
            window_seconds: window.or(window2),
        })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} pulls left", self.remaining, self.limit)?;
        if let Some(w) = self.window_seconds {
            write!(f, " per {}h", w / 3600)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_headers() {
        let mut h = HeaderMap::new();
        h.insert("ratelimit-limit", "100;w=21600".parse().unwrap());
        h.insert("ratelimit-remaining", "76;w=21600".parse().unwrap());
        let r = RateLimit::from_headers(&h).unwrap();
        assert_eq!(
            r,
            RateLimit {
                limit: 100,
                remaining: 76,
                window_seconds: Some(21600)
            }
        );
        assert_eq!(r.to_string(), "76 of 100 pulls left per 6h");
    }
}
