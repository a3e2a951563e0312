//! The registry auth handshake: `WWW-Authenticate` challenges and bearer tokens.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How a registry wants to be authenticated, learnt from its first 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// Not yet known: the next request is sent without credentials.
    Unknown,
    /// The registry answered without asking.
    Anonymous,
    /// `WWW-Authenticate: Basic`.
    Basic,
    /// `WWW-Authenticate: Bearer realm=..., service=...`.
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// One parsed challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub scheme: Scheme,
    pub scope: Option<String>,
    pub error: Option<String>,
}

/// Parses a `WWW-Authenticate` value such as
/// `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/python:pull"`.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge {
            scheme: Scheme::Basic,
            scope: None,
            error: None,
        }),
        "bearer" => {
            let realm = params.get("realm")?.clone();
            Some(Challenge {
                scheme: Scheme::Bearer {
                    realm,
                    service: params.get("service").cloned(),
                },
                scope: params.get("scope").cloned(),
                error: params.get("error").cloned(),
            })
        }
        _ => None,
    }
}

/// `key="quoted, value",key2=token` -> map; commas inside quotes are kept.
fn parse_params(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut escaped = false;
            for c in chars.by_ref() {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    (_, c) => {
                        value.push(c);
                        escaped = false;
                    }
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
            value = value.trim().to_owned();
        }
        out.insert(key, value);
    }
    out
}

/// A bearer token and when to stop using it.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub value: String,
    pub refresh_at: Instant,
}

impl Token {
    pub fn is_fresh(&self) -> bool {
        Instant::now() < self.refresh_at
    }
}

#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token, refreshed a little before it expires (the spec's default life is 60 s).
    pub fn into_token(self) -> Option<Token> {
        let value = self.token.filter(|t| !t.is_empty()).or(self.access_token)?;
        let life = Duration::from_secs(self.expires_in.unwrap_or(60).max(1));
        let margin = (life / 10).min(Duration::from_secs(30));
        Some(Token {
            value,
            refresh_at: Instant::now() + life - margin,
        })
    }
}

/// `repository:NAME:ACTIONS` scopes for one request, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Scopes(pub Vec<String>);

impl Scopes {
    pub fn repository(name: &str, push: bool) -> Self {
        Self(vec![format!(
            "repository:{name}:{}",
            if push { "pull,push" } else { "pull" }
        )])
    }

    pub fn with(mut self, extra: String) -> Self {
        if !self.0.contains(&extra) {
            self.0.push(extra);
            self.0.sort();
        }
        self
    }

    pub fn key(&self) -> String {
        self.0.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_challenge_with_commas_in_scope() {
        let c = parse_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/python:pull,push""#).unwrap();
        assert_eq!(
            c.scheme,
            Scheme::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            }
        );
        assert_eq!(
            c.scope.as_deref(),
            Some("repository:library/python:pull,push")
        );
    }

    #[test]
    fn parses_basic_and_refuses_unknown() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#)
                .unwrap()
                .scheme,
            Scheme::Basic
        );
        assert!(parse_challenge("Negotiate abc").is_none());
        assert!(
            parse_challenge("Bearer service=x").is_none(),
            "a bearer challenge needs a realm"
        );
    }

    #[test]
    fn token_without_expiry_lives_the_spec_default() {
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"abc"}"#).unwrap();
        let t = t.into_token().unwrap();
        assert_eq!(t.value, "abc");
        assert!(t.refresh_at > Instant::now() + Duration::from_secs(50));
    }
}
