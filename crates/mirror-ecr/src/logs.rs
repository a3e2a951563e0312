//! CloudWatch Logs log groups for the ECS tasks that run mirrored images.
//!
//! The walkthrough this project replaces ends with `aws logs create-log-group`
//! and `aws logs put-retention-policy`: an ECS task with the `awslogs` driver
//! does not start until its log group exists. [`ensure_log_group`] does both
//! steps idempotently, so it can run on every deploy: an existing group is
//! fine, and the retention policy is only written when it differs.

use aws_sdk_cloudwatchlogs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use tracing::{debug, info};

/// The retention periods CloudWatch Logs accepts, in days (PutRetentionPolicy's
/// `retentionInDays`). Keeping events forever is the absence of a policy.
pub const ALLOWED_RETENTION_DAYS: &[i32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// Longest log group name CloudWatch Logs accepts.
pub const MAX_LOG_GROUP_NAME_LEN: usize = 512;

/// What [`ensure_log_group`] found or did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogGroupOutcome {
    /// The group did not exist and was created by this call.
    pub created: bool,
    /// `Some((before, after))` when the retention policy was written; `before`
    /// is `None` when events were kept forever.
    pub retention_changed: Option<(Option<i32>, i32)>,
    /// The log group's ARN without the trailing `:*` (as ECS and the tagging
    /// APIs want it), when DescribeLogGroups could be read.
    pub arn: Option<String>,
}

/// Why a log group could not be ensured.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error(
        "log group name `{name}` is invalid: {reason} (log group names are 1-512 characters of a-z, A-Z, 0-9, '_', '-', '/', '.' and '#', and cannot start with `aws/`)"
    )]
    InvalidName { name: String, reason: String },
    #[error(
        "retention of {days} days is not a value CloudWatch Logs accepts (nearest: {nearest}; allowed: {allowed}; leave the retention out to keep events forever)",
        nearest = join_days(nearest, " or "),
        allowed = join_days(ALLOWED_RETENTION_DAYS, ", ")
    )]
    InvalidRetention { days: i32, nearest: Vec<i32> },
    #[error(
        "AWS denied {action} on log group {log_group}: {message}\n  hint: grant `{action}` on `{resource}` to the caller"
    )]
    AccessDenied {
        action: &'static str,
        log_group: String,
        /// The IAM resource to grant `action` on (REGION and ACCOUNT left to fill in).
        resource: String,
        message: String,
    },
    /// One line on purpose: it is what a newcomer without AWS sees first.
    #[error(
        "no AWS credentials found (tried environment, profiles, SSO, web identity, ECS, IMDS): set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    )]
    NoCredentials {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{action} on log group {log_group} failed: {message}")]
    Api {
        action: &'static str,
        log_group: String,
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn join_days(days: &[i32], separator: &str) -> String {
    days.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(separator)
}

/// Checks that CloudWatch Logs accepts `days` as a retention period; the error
/// names the value and the allowed values on either side of it.
pub fn check_retention(days: i32) -> Result<(), LogsError> {
    if ALLOWED_RETENTION_DAYS.contains(&days) {
        return Ok(());
    }
    let below = ALLOWED_RETENTION_DAYS.iter().rev().find(|&&d| d < days);
    let above = ALLOWED_RETENTION_DAYS.iter().find(|&&d| d > days);
    Err(LogsError::InvalidRetention {
        days,
        nearest: below.into_iter().chain(above).copied().collect(),
    })
}

/// Checks a log group name against CloudWatch Logs' rules before any AWS call.
pub fn check_log_group_name(name: &str) -> Result<(), LogsError> {
    let invalid = |reason: String| LogsError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty".to_owned()));
    }
    if name.len() > MAX_LOG_GROUP_NAME_LEN {
        return Err(invalid(format!(
            "it is {} characters long",
            name.chars().count()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '#')))
    {
        return Err(invalid(format!("it contains {c:?}")));
    }
    if name.starts_with("aws/") {
        return Err(invalid("the `aws/` prefix is reserved for AWS".to_owned()));
    }
    Ok(())
}

/// Creates the log group `name` unless it exists, then sets its retention to
/// `retention_days` unless it already is that (`None` leaves the retention as
/// it is). Safe to run again: the second run changes nothing.
///
/// Needs `logs:CreateLogGroup`, `logs:DescribeLogGroups` and, when the
/// retention changes, `logs:PutRetentionPolicy`. Without a retention to set,
/// a denied DescribeLogGroups only costs the ARN.
pub async fn ensure_log_group(
    client: &aws_sdk_cloudwatchlogs::Client,
    name: &str,
    retention_days: Option<i32>,
) -> Result<LogGroupOutcome, LogsError> {
    check_log_group_name(name)?;
    if let Some(days) = retention_days {
        check_retention(days)?;
    }

    let created = match client.create_log_group().log_group_name(name).send().await {
        Ok(_) => {
            info!(log_group = name, "created CloudWatch log group");
            true
        }
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_already_exists_exception()) =>
        {
            debug!(log_group = name, "CloudWatch log group exists");
            false
        }
        Err(error) => return Err(classify("logs:CreateLogGroup", name, error)),
    };

    let existing = match find_log_group(client, name).await {
        Ok(existing) => existing,
        Err(LogsError::AccessDenied { message, .. }) if retention_days.is_none() => {
            debug!(log_group = name, %message, "DescribeLogGroups denied; no ARN");
            None
        }
        Err(error) => return Err(error),
    };
    let arn = existing.as_ref().and_then(|group| {
        group
            .log_group_arn()
            .or_else(|| group.arn().map(|arn| arn.strip_suffix(":*").unwrap_or(arn)))
            .map(str::to_owned)
    });
    let current = existing
        .as_ref()
        .and_then(|group| group.retention_in_days());

    let mut retention_changed = None;
    if let Some(days) = retention_days
        && current != Some(days)
    {
        client
            .put_retention_policy()
            .log_group_name(name)
            .retention_in_days(days)
            .send()
            .await
            .map_err(|e| classify("logs:PutRetentionPolicy", name, e))?;
        info!(
            log_group = name,
            from = ?current,
            to = days,
            "set CloudWatch log group retention"
        );
        retention_changed = Some((current, days));
    }

    Ok(LogGroupOutcome {
        created,
        retention_changed,
        arn,
    })
}

/// The log group named exactly `name`: DescribeLogGroups only filters by
/// prefix, so `cruddur` also lists `cruddur-staging`.
async fn find_log_group(
    client: &aws_sdk_cloudwatchlogs::Client,
    name: &str,
) -> Result<Option<aws_sdk_cloudwatchlogs::types::LogGroup>, LogsError> {
    let mut next_token = None;
    loop {
        let output = client
            .describe_log_groups()
            .log_group_name_prefix(name)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| classify("logs:DescribeLogGroups", name, e))?;
        if let Some(group) = output
            .log_groups()
            .iter()
            .find(|group| group.log_group_name() == Some(name))
        {
            return Ok(Some(group.clone()));
        }
        match output.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
            _ => return Ok(None),
        }
    }
}

/// Classifies an SDK error of `action` (an IAM action name) on `log_group`.
fn classify<E>(
    action: &'static str,
    log_group: &str,
    error: SdkError<E, crate::error::HttpResponse>,
) -> LogsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = error.code().unwrap_or_default().to_owned();
    let forbidden = crate::error::forbidden(&error);
    let service_message = error.message().map(str::to_owned).or(forbidden.clone());
    let is_service_error = matches!(error, SdkError::ServiceError(_));
    let context = DisplayErrorContext(&error).to_string();
    if code.contains("AccessDenied") || code == "UnauthorizedOperation" || forbidden.is_some() {
        // IAM evaluates DescribeLogGroups against every group in the account
        // (`log-group::log-stream:`), the others against the group itself.
        let resource = if action == "logs:DescribeLogGroups" {
            "arn:aws:logs:REGION:ACCOUNT:log-group:*".to_owned()
        } else {
            format!("arn:aws:logs:REGION:ACCOUNT:log-group:{log_group}:*")
        };
        return LogsError::AccessDenied {
            action,
            log_group: log_group.to_owned(),
            resource,
            message: service_message.unwrap_or(context),
        };
    }
    if !is_service_error
        && context.contains("credentials")
        && (context.contains("no providers") || context.contains("failed to load"))
    {
        debug!(%context, "credential chain failed");
        return LogsError::NoCredentials {
            source: Box::new(error),
        };
    }
    let message = match (code.is_empty(), service_message) {
        (false, Some(message)) => format!("{code}: {message}"),
        (false, None) => code,
        (true, Some(message)) => message,
        (true, None) => error.to_string(),
    };
    LogsError::Api {
        action,
        log_group: log_group.to_owned(),
        message,
        source: Box::new(error),
    }
}

#[cfg(test)]
mod tests {
    use aws_config::BehaviorVersion;
    use aws_sdk_cloudwatchlogs::config::Credentials;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn every_allowed_retention_passes() {
        for &days in ALLOWED_RETENTION_DAYS {
            check_retention(days).unwrap();
        }
    }

    #[test]
    fn retention_error_names_the_value_and_its_neighbours() {
        let error = check_retention(10).unwrap_err();
        assert!(matches!(
            &error,
            LogsError::InvalidRetention { days: 10, nearest } if nearest == &[7, 14]
        ));
        let text = error.to_string();
        assert!(text.contains("retention of 10 days"), "{text}");
        assert!(
            text.contains("(nearest: 7 or 14; allowed: 1, 3, 5,"),
            "{text}"
        );

        let below_all = check_retention(0).unwrap_err();
        assert!(matches!(below_all, LogsError::InvalidRetention { nearest, .. } if nearest == [1]));
        let above_all = check_retention(4000).unwrap_err();
        assert!(
            matches!(above_all, LogsError::InvalidRetention { nearest, .. } if nearest == [3653])
        );
        let negative = check_retention(-5).unwrap_err();
        assert!(matches!(negative, LogsError::InvalidRetention { nearest, .. } if nearest == [1]));
    }

    #[test]
    fn log_group_names_follow_cloudwatch_rules() {
        for good in ["cruddur", "/ecs/cruddur", "a.b-c_d#e/F9", &"x".repeat(512)] {
            check_log_group_name(good).unwrap();
        }
        for (bad, reason) in [
            ("", "empty"),
            (&"x".repeat(513) as &str, "513 characters"),
            ("my group", "' '"),
            ("caf\u{e9}", "'\u{e9}'"),
            ("cruddur:*", "':'"),
            ("aws/ecs", "reserved"),
        ] {
            let text = check_log_group_name(bad).unwrap_err().to_string();
            assert!(text.contains(reason), "{bad:?}: {text}");
        }
    }

    async fn client(endpoint: &str) -> aws_sdk_cloudwatchlogs::Client {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region("us-east-1")
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .load()
            .await;
        aws_sdk_cloudwatchlogs::Client::new(&config)
    }

    async fn retention_of(client: &aws_sdk_cloudwatchlogs::Client, name: &str) -> Option<i32> {
        find_log_group(client, name)
            .await
            .unwrap()
            .expect("log group exists")
            .retention_in_days()
    }

    #[tokio::test]
    async fn ensure_log_group_creates_then_changes_nothing_then_updates_retention() {
        let moto = mirror_testkit::Moto::start()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let client = client(&moto.endpoint()).await;

        // A neighbour sharing the prefix: only the exact name may be read.
        let neighbour = ensure_log_group(&client, "cruddur-staging", Some(30))
            .await
            .unwrap();
        assert!(neighbour.created);

        let first = ensure_log_group(&client, "cruddur", Some(1)).await.unwrap();
        assert!(first.created);
        assert_eq!(first.retention_changed, Some((None, 1)));
        let arn = first.arn.clone().expect("ARN from DescribeLogGroups");
        assert!(arn.starts_with("arn:aws:logs:us-east-1:"), "{arn}");
        assert!(arn.ends_with(":log-group:cruddur"), "{arn}");

        let again = ensure_log_group(&client, "cruddur", Some(1)).await.unwrap();
        assert_eq!(
            again,
            LogGroupOutcome {
                created: false,
                retention_changed: None,
                arn: Some(arn.clone()),
            }
        );

        let unspecified = ensure_log_group(&client, "cruddur", None).await.unwrap();
        assert!(!unspecified.created);
        assert_eq!(unspecified.retention_changed, None);

        let changed = ensure_log_group(&client, "cruddur", Some(7)).await.unwrap();
        assert!(!changed.created);
        assert_eq!(changed.retention_changed, Some((Some(1), 7)));
        assert_eq!(retention_of(&client, "cruddur").await, Some(7));
        assert_eq!(retention_of(&client, "cruddur-staging").await, Some(30));

        // Invalid input never reaches AWS.
        let invalid = ensure_log_group(&client, "cruddur", Some(2)).await;
        assert!(matches!(invalid, Err(LogsError::InvalidRetention { .. })));
        assert_eq!(retention_of(&client, "cruddur").await, Some(7));
    }

    /// A CloudWatch Logs endpoint that denies every call, as IAM does.
    async fn denying_endpoint() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0_u8; 4096];
                    loop {
                        let read = stream.read(&mut buffer).await.unwrap_or(0);
                        if read == 0 {
                            return;
                        }
                        request.extend_from_slice(&buffer[..read]);
                        let text = String::from_utf8_lossy(&request).to_string();
                        let Some(head_end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let length = text[..head_end]
                            .lines()
                            .find_map(|line| {
                                let (name, value) = line.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() < head_end + 4 + length {
                            continue;
                        }
                        request.drain(..head_end + 4 + length);
                        let body = r#"{"__type":"AccessDeniedException","message":"User: arn:aws:iam::123456789012:user/ci is not authorized to perform this action"}"#;
                        let response = format!(
                            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: test\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn access_denied_names_the_iam_action() {
        let endpoint = denying_endpoint().await;
        let client = client(&endpoint).await;
        let error = ensure_log_group(&client, "cruddur", Some(1))
            .await
            .unwrap_err();
        assert!(
            matches!(
                &error,
                LogsError::AccessDenied { action: "logs:CreateLogGroup", log_group, .. }
                    if log_group == "cruddur"
            ),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(
            text.contains(
                "grant `logs:CreateLogGroup` on `arn:aws:logs:REGION:ACCOUNT:log-group:cruddur:*`"
            ),
            "{text}"
        );
        assert!(text.contains("not authorized"), "{text}");
    }
}
