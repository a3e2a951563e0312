//! ECR errors, with the IAM action to grant when one is missing.

/// Why an ECR control-plane call failed.
#[derive(Debug, thiserror::Error)]
pub enum EcrError {
    #[error(
        "AWS denied {action}: {message}\n  hint: grant `{action}` to the caller (`mirror iam-policy --push REPO` prints a least-privilege policy)"
    )]
    AccessDenied {
        action: &'static str,
        message: String,
    },
    /// One line on purpose: it is what a newcomer without AWS sees first.
    #[error(
        "no AWS credentials found (tried environment, profiles, SSO, web identity, ECS, IMDS): set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; without AWS, `mirror copy SRC DST` copies to any registry"
    )]
    NoCredentials { message: String },
    #[error("repository {name} does not exist and --no-create forbids creating it")]
    NotCreating { name: String },
    #[error("{action} failed: {message}")]
    Api {
        action: &'static str,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Classifies an SDK error for `action` (an IAM action name).
pub(crate) fn classify<E, R>(
    action: &'static str,
    error: aws_sdk_ecr::error::SdkError<E, R>,
) -> EcrError
where
    E: aws_sdk_ecr::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_ecr::error::ProvideErrorMetadata as _;
    let code = error.code().unwrap_or_default().to_owned();
    let message = error
        .message()
        .map(str::to_owned)
        .unwrap_or_else(|| describe(&error));
    if code.contains("AccessDenied") || code == "UnauthorizedOperation" {
        return EcrError::AccessDenied { action, message };
    }
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
