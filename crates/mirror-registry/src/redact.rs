//! Keeps presigned URLs and other secrets out of logs and error messages.

use url::Url;

/// Query parameters that carry signatures, credentials or tokens.
const SECRET_PARAMS: &[&str] = &[
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "signature",
    "sig",
    "token",
    "access_token",
    "x-goog-signature",
    "x-goog-credential",
    "se",
    "sp",
    "sv",
    "key-pair-id",
    "policy",
    "_state",
];

/// A URL safe to print: secret query values replaced by `REDACTED`, user info removed.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    if shown.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str());
                (
                    k.into_owned(),
                    if secret {
                        "REDACTED".to_owned()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// Free text (an error body) safe to print: every URL in it redacted as by
/// [`redact_url`], and every `name=value` whose name is a secret query
/// parameter (an echoed canonical request, say) has its value replaced.
pub(crate) fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = ["https://", "http://"]
        .iter()
        .filter_map(|scheme| find_ascii_case_insensitive(rest, scheme))
        .min()
    {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\''))
            .unwrap_or(tail.len());
        let candidate = xml_unescape(&tail[..end]);
        match Url::parse(&candidate) {
            Ok(url) => out.push_str(&redact_url(&url)),
            Err(_) => out.push_str("<URL>"),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    redact_assignments(&out)
}

/// `&amp;` in XML bodies separates query parameters.
fn xml_unescape(text: &str) -> String {
    text.replace("&amp;", "&")
}

fn find_ascii_case_insensitive(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Replaces the value of every `SECRET=value` (a secret parameter name at a
/// word boundary) outside URLs.
fn redact_assignments(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let at_boundary = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric() || matches!(bytes[i - 1], b'-' | b'_'));
        let matched = at_boundary
            .then(|| {
                SECRET_PARAMS.iter().find(|name| {
                    lower.as_bytes()[i..].starts_with(name.as_bytes())
                        && lower.as_bytes().get(i + name.len()) == Some(&b'=')
                })
            })
            .flatten();
        let Some(name) = matched else {
            i += 1;
            continue;
        };
        let value_start = i + name.len() + 1;
        let value_end = text[value_start..]
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '&' | '<' | '>' | '"' | '\'' | ';' | ',')
            })
            .map_or(text.len(), |n| value_start + n);
        if text[value_start..value_end] != *"REDACTED" && value_end > value_start {
            out.push_str(&text[copied..value_start]);
            out.push_str("REDACTED");
            copied = value_end;
        }
        i = value_end.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presigned_s3_urls_are_redacted() {
        let url = Url::parse("https://bucket.s3.amazonaws.com/blob?X-Amz-Credential=AKIA123&X-Amz-Signature=abc&X-Amz-Expires=300").unwrap();
        let shown = redact_url(&url);
        assert!(
            !shown.contains("AKIA123") && !shown.contains("=abc"),
            "{shown}"
        );
        assert!(shown.contains("X-Amz-Expires=300"), "{shown}");
    }

    /// S3 echoes the presigned URL (and the signed request) in its error body.
    #[test]
    fn error_bodies_lose_urls_and_signed_parameters() {
        let body = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message>\
            <Resource>https://bucket.s3.amazonaws.com/blob?X-Amz-Credential=AKIASECRET&amp;X-Amz-Signature=deadbeef&amp;X-Amz-Expires=1200</Resource>\
            <CanonicalRequest>GET /blob X-Amz-Credential=AKIASECRET&X-Amz-Signature=deadbeef host</CanonicalRequest>\
            <Url>http://127.0.0.1:9/x?sig=s3cr3t</Url></Error>";
        let shown = redact_text(body);
        for secret in ["AKIASECRET", "deadbeef", "s3cr3t"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("X-Amz-Expires=1200"), "{shown}");
        assert!(
            shown.contains("https://bucket.s3.amazonaws.com/blob"),
            "{shown}"
        );
        assert_eq!(
            redact_text("response=ok sig=abc"),
            "response=ok sig=REDACTED"
        );
        assert_eq!(redact_text("no secrets here"), "no secrets here");
    }

    #[test]
    fn user_info_is_removed() {
        let url = Url::parse("https://user:secret@host/v2/").unwrap();
        assert_eq!(redact_url(&url), "https://host/v2/");
    }
}
