//! ECR errors, naming the IAM action that was denied (the binary says what
//! to grant and how).

/// Why an ECR call failed.
#[derive(Debug, thiserror::Error)]
pub enum EcrError {
    #[error("AWS denied {action}: {message}")]
    AccessDenied {
        action: &'static str,
        message: String,
    },
    /// One line on purpose: it is what a newcomer without AWS sees first (the
    /// CLI adds what to run instead).
    #[error(
        "no AWS credentials found (tried environment, profiles, SSO, web identity, ECS, IMDS): set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    )]
    NoCredentials { message: String },
    #[error("repository {name} does not exist, and creating repositories is turned off")]
    NotCreating { name: String },
    /// An immutable repository's tag already holds another image.
    #[error(
        "tag `{tag}` of immutable repository {repository} already holds {}; not overwriting it with {new}",
        .existing.as_deref().unwrap_or("another image")
    )]
    ImmutableTag {
        repository: String,
        tag: String,
        /// The digest the tag holds, when the registry said.
        existing: Option<String>,
        new: String,
    },
    #[error("{action} failed: {message}")]
    Api {
        action: &'static str,
        message: String,
    },
    /// Repository settings that cannot be carried out as given; nothing was called.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// An AWS answer mirror cannot use.
    #[error("{action} returned {what}")]
    Unusable { action: &'static str, what: String },
}

/// Why repository settings were refused before any AWS call. Named by
/// setting, not by flag: a sync file sets them too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "tag mutability `{0}` is not one of MUTABLE, IMMUTABLE, MUTABLE_WITH_EXCLUSION, IMMUTABLE_WITH_EXCLUSION"
    )]
    UnknownTagMutability(String),
    #[error(
        "tag mutability {0} needs at least one tag filter excluded from it (for example 'latest' or 'dev-*')"
    )]
    NoExclusions(String),
    #[error(
        "tag filters excluded from tag mutability apply only with MUTABLE_WITH_EXCLUSION or IMMUTABLE_WITH_EXCLUSION"
    )]
    UnusedExclusions,
    #[error("encryption `{0}` is not one of AES256, KMS, KMS_DSSE")]
    UnknownEncryption(String),
    #[error("a KMS key needs encryption KMS or KMS_DSSE")]
    KmsKeyWithoutKms,
    /// The AWS SDK refused to build a setting (a value it cannot send).
    #[error("{setting} was refused: {reason}")]
    Refused { setting: String, reason: String },
}

/// The raw HTTP response type of every AWS SDK crate (ECR, CloudWatch Logs).
pub(crate) type HttpResponse = aws_sdk_ecr::config::http::HttpResponse;

/// Classifies an SDK error for `action` (an IAM action name).
pub(crate) fn classify<E>(
    action: &'static str,
    error: aws_sdk_ecr::error::SdkError<E, HttpResponse>,
) -> EcrError
where
    E: aws_sdk_ecr::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_ecr::error::ProvideErrorMetadata as _;
    let code = error.code().unwrap_or_default().to_owned();
    if code.contains("AccessDenied") || code == "UnauthorizedOperation" {
        let message = error
            .message()
            .map(str::to_owned)
            .unwrap_or_else(|| describe(&error));
        return EcrError::AccessDenied { action, message };
    }
    if let Some(message) = forbidden(&error) {
        return EcrError::AccessDenied { action, message };
    }
    let message = error
        .message()
        .map(str::to_owned)
        .unwrap_or_else(|| describe(&error));
    if matches!(error, aws_sdk_ecr::error::SdkError::ConstructionFailure(_))
        || message.contains("credentials")
            && (message.contains("no providers") || message.contains("failed to load"))
    {
        tracing::debug!(%message, "credential chain failed");
        return EcrError::NoCredentials { message };
    }
    EcrError::Api {
        action,
        message: if code.is_empty() {
            message
        } else {
            format!("{code}: {message}")
        },
    }
}

/// A 403 whose body the SDK could not read as its protocol's error (an
/// XML `ErrorResponse` answering a JSON API, from a proxy or an emulator):
/// still a denial. Its message, from the body's `<Message>` or `"message"`.
pub(crate) fn forbidden<E>(
    error: &aws_sdk_ecr::error::SdkError<E, HttpResponse>,
) -> Option<String> {
    let response = error.raw_response()?;
    if response.status().as_u16() != 403 {
        return None;
    }
    let body = String::from_utf8_lossy(response.body().bytes().unwrap_or_default()).into_owned();
    let between = |open: &str, close: &str| {
        let start = body.find(open)? + open.len();
        let end = body[start..].find(close)? + start;
        Some(body[start..end].trim().to_owned())
    };
    Some(
        between("<Message>", "</Message>")
            .or_else(|| {
                serde_json::from_str::<serde_json::Value>(&body)
                    .ok()?
                    .get("message")?
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "403 Forbidden".to_owned()),
    )
}

fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
