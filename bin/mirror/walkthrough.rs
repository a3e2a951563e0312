//! The rest of the AWS walkthrough: log groups, Dockerfile FROM lines, IAM policies.

use mirror_ecr::iam::{Access, policy};
use mirror_ecr::logs::ensure_log_group;

use crate::Failure;
use crate::cli::{IamPolicyArgs, LogGroupArgs, RewriteFromArgs};

/// `mirror log-group NAME --retention-days N`.
pub(crate) async fn log_group(args: LogGroupArgs) -> Result<(), Failure> {
    // Invalid names and retention values are usage errors, before any AWS call.
    mirror_ecr::logs::check_log_group_name(&args.name)
        .map_err(|e| Failure::usage(e.to_string()))?;
    if let Some(days) = args.retention_days {
        mirror_ecr::logs::check_retention(days).map_err(|e| Failure::usage(e.to_string()))?;
    }
    let config = mirror_ecr::aws_config(args.region.as_deref()).await;
    if config.region().is_none() {
        return Err(Failure::usage(
            "no AWS region configured: pass --region (for example --region us-east-1) or set AWS_REGION",
        ));
    }
    let client = aws_sdk_cloudwatchlogs::Client::new(&config);
    let outcome = ensure_log_group(&client, &args.name, args.retention_days)
        .await
        .map_err(|e| Failure::transfer(e.to_string()))?;
    let what = if outcome.created { "created" } else { "exists" };
    let retention = match (outcome.retention_changed, args.retention_days) {
        (Some((old, new)), _) => format!(
            "; retention set to {new} days (was {})",
            old.map_or_else(|| "never expire".to_owned(), |d| format!("{d} days"))
        ),
        (None, Some(days)) => format!("; retention already {days} days"),
        (None, None) => String::new(),
    };
    eprintln!("log group {} {what}{retention}", args.name);
    if let Some(arn) = outcome.arn {
        println!("{arn}");
    }
    Ok(())
}

/// `mirror rewrite-from Dockerfile [--pin] [--write]`.
pub(crate) async fn rewrite_from(args: RewriteFromArgs) -> Result<(), Failure> {
    let _ = args;
    Err(Failure::usage("rewrite-from is not wired yet"))
}

/// `mirror iam-policy --push|--pull REPO...`.
pub(crate) fn iam_policy(args: IamPolicyArgs) -> Result<(), Failure> {
    if let Some(account) = &args.account
        && (account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(Failure::usage(format!(
            "--account `{account}`: expected a 12-digit AWS account id"
        )));
    }
    let access = if args.pull {
        Access::Pull
    } else {
        Access::Push
    };
    let repositories: Vec<&str> = args.repositories.iter().map(String::as_str).collect();
    let log_groups: Vec<&str> = args.log_groups.iter().map(String::as_str).collect();
    let document = policy(
        access,
        &repositories,
        &log_groups,
        args.account.as_deref(),
        args.region.as_deref(),
    );
    let text = serde_json::to_string_pretty(&document)
        .map_err(|e| Failure::transfer(format!("cannot encode the policy: {e}")))?;
    println!("{text}");
    Ok(())
}
