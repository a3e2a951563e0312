//! The rest of the AWS walkthrough: log groups, Dockerfile FROM lines, IAM policies.

use crate::Failure;
use crate::cli::{IamPolicyArgs, LogGroupArgs, RewriteFromArgs};

pub(crate) async fn log_group(args: LogGroupArgs) -> Result<(), Failure> {
    let _ = args;
    Err(Failure::usage("log-group is not wired yet"))
}

pub(crate) async fn rewrite_from(args: RewriteFromArgs) -> Result<(), Failure> {
    let _ = args;
    Err(Failure::usage("rewrite-from is not wired yet"))
}

pub(crate) fn iam_policy(args: IamPolicyArgs) -> Result<(), Failure> {
    let _ = args;
    Err(Failure::usage("iam-policy is not wired yet"))
}
