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

    #[test]
    fn user_info_is_removed() {
        let url = Url::parse("https://user:secret@host/v2/").unwrap();
        assert_eq!(redact_url(&url), "https://host/v2/");
    }
}
