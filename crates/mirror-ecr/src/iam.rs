//! Least-privilege IAM policies for the two roles of the walkthrough: the one
//! that mirrors images into ECR ([`Access::Push`]) and the ECS task execution
//! role that pulls them ([`Access::Pull`]).
//!
//! The walkthrough leaves both as "ensure the role has ECR permissions"; the
//! usual answer is a managed policy on `*`. These policies name the
//! repositories instead, and keep `ecr:GetAuthorizationToken` on `*` in its own
//! statement because IAM cannot scope it to a resource.
//!
//! ```
//! use mirror_ecr::iam::{Access, policy};
//!
//! let document = policy(Access::Pull, &["cruddur-python"], &[], Some("123456789012"), Some("us-east-1"));
//! assert_eq!(
//!     document["Statement"][1]["Resource"][0],
//!     "arn:aws:ecr:us-east-1:123456789012:repository/cruddur-python"
//! );
//! ```

use serde_json::{Value, json};

/// Which side of the mirror a role is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The mirroring role: reads and writes images, creates repositories.
    Push,
    /// A consumer such as an ECS task execution role: reads images only.
    Pull,
}

/// What `mirror` itself calls on ECR repositories when mirroring into them.
pub const PUSH_ACTIONS: &[&str] = &[
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
    "ecr:DescribeRepositories",
    "ecr:CreateRepository",
    "ecr:DescribeImages",
    "ecr:ListImages",
    // CreateRepository with tags is authorised as TagResource too.
    "ecr:TagResource",
];

/// What `mirror` reads once per run at the account level: whether
/// cross-repository blob mounts are on (`BLOB_MOUNTING`). IAM cannot scope it
/// to a repository, so it sits next to `ecr:GetAuthorizationToken` on `*`.
pub const PUSH_ACCOUNT_ACTIONS: &[&str] = &["ecr:GetAuthorizationToken", "ecr:GetAccountSetting"];

/// What `docker pull` (and ECS) needs on a repository.
pub const PULL_ACTIONS: &[&str] = &[
    "ecr:BatchCheckLayerAvailability",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchGetImage",
];

/// What `mirror` calls to ensure a log group ([`crate::logs::ensure_log_group`]),
/// scoped to the groups...
pub const LOG_GROUP_SETUP_ACTIONS: &[&str] = &["logs:CreateLogGroup", "logs:PutRetentionPolicy"];

/// ...and the listing it reads the retention with, which IAM cannot scope to
/// a group.
pub const LOG_GROUP_LIST_ACTIONS: &[&str] = &["logs:DescribeLogGroups"];

/// What the `awslogs` log driver of an ECS task writes with.
pub const LOG_WRITE_ACTIONS: &[&str] = &["logs:CreateLogStream", "logs:PutLogEvents"];

/// A least-privilege IAM policy document for `access` to `repositories`.
///
/// `repositories` are repository names (`cruddur-python`, `mirror/*`: `*`
/// and `?` are IAM wildcards) or full repository ARNs, used as given. An empty
/// list means every repository of the account and region (`repository/*`).
///
/// `account` and `region` are the 12-digit account ID and the region of the
/// repositories; `None` writes `*` in their place, which matches any account
/// or region: correct, but broader than it needs to be. The partition follows
/// the region (`aws-cn` for `cn-*`, `aws-us-gov` for `us-gov-*`, else `aws`).
///
/// `log_groups`, when not empty, adds statements on those CloudWatch Logs
/// groups: for [`Access::Push`] what `mirror` needs to create them and set their
/// retention ([`LOG_GROUP_SETUP_ACTIONS`] on the groups, plus
/// [`LOG_GROUP_LIST_ACTIONS`] on all groups of the account, the only resource
/// IAM evaluates DescribeLogGroups against); for [`Access::Pull`] what the
/// `awslogs` driver of an ECS task needs to write to them
/// ([`LOG_WRITE_ACTIONS`]).
pub fn policy(
    access: Access,
    repositories: &[&str],
    log_groups: &[&str],
    account: Option<&str>,
    region: Option<&str>,
) -> Value {
    let partition = partition(region);
    let account = account.unwrap_or("*");
    let region = region.unwrap_or("*");

    let names: &[&str] = if repositories.is_empty() {
        &["*"]
    } else {
        repositories
    };
    let repository_arns = unique(names.iter().map(|name| {
        if name.starts_with("arn:") {
            (*name).to_owned()
        } else {
            format!("arn:{partition}:ecr:{region}:{account}:repository/{name}")
        }
    }));

    let (sid, actions, account_actions) = match access {
        Access::Push => ("MirrorPushRepositories", PUSH_ACTIONS, PUSH_ACCOUNT_ACTIONS),
        Access::Pull => (
            "PullRepositories",
            PULL_ACTIONS,
            &["ecr:GetAuthorizationToken"][..],
        ),
    };
    let mut statements = vec![
        json!({
            "Sid": "GetAuthorizationToken",
            "Effect": "Allow",
            "Action": account_actions,
            "Resource": "*",
        }),
        json!({
            "Sid": sid,
            "Effect": "Allow",
            "Action": actions,
            "Resource": repository_arns,
        }),
    ];

    let group_arn =
        |name: &str| format!("arn:{partition}:logs:{region}:{account}:log-group:{name}");
    match access {
        _ if log_groups.is_empty() => {}
        Access::Push => {
            // CreateLogGroup and PutRetentionPolicy are authorised against
            // `log-group:NAME:log-stream:`, hence the trailing `:*`.
            statements.push(json!({
                "Sid": "MirrorLogGroups",
                "Effect": "Allow",
                "Action": LOG_GROUP_SETUP_ACTIONS,
                "Resource": unique(log_groups.iter().map(|name| format!("{}:*", group_arn(name)))),
            }));
            // DescribeLogGroups is authorised against every group of the
            // account (`log-group::log-stream:`), whatever the prefix.
            statements.push(json!({
                "Sid": "DescribeLogGroups",
                "Effect": "Allow",
                "Action": LOG_GROUP_LIST_ACTIONS,
                "Resource": group_arn("*"),
            }));
        }
        Access::Pull => {
            statements.push(json!({
                "Sid": "WriteLogs",
                "Effect": "Allow",
                "Action": LOG_WRITE_ACTIONS,
                "Resource": unique(
                    log_groups
                        .iter()
                        .map(|name| format!("{}:log-stream:*", group_arn(name)))
                ),
            }));
        }
    }

    json!({
        "Version": "2012-10-17",
        "Statement": statements,
    })
}

fn unique(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

fn partition(region: Option<&str>) -> &'static str {
    match region {
        Some(region) if region.starts_with("cn-") => "aws-cn",
        Some(region) if region.starts_with("us-gov-") => "aws-us-gov",
        _ => "aws",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: Option<&str> = Some("123456789012");
    const REGION: Option<&str> = Some("us-east-1");

    fn actions(statement: &Value) -> Vec<&str> {
        statement["Action"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect()
    }

    #[test]
    fn push_policy_scopes_everything_but_the_token_to_the_repositories() {
        let document = policy(
            Access::Push,
            &["cruddur-python", "mirror/*"],
            &[],
            ACCOUNT,
            REGION,
        );
        assert_eq!(
            document,
            json!({
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "GetAuthorizationToken",
                        "Effect": "Allow",
                        "Action": ["ecr:GetAuthorizationToken", "ecr:GetAccountSetting"],
                        "Resource": "*",
                    },
                    {
                        "Sid": "MirrorPushRepositories",
                        "Effect": "Allow",
                        "Action": [
                            "ecr:BatchCheckLayerAvailability",
                            "ecr:BatchGetImage",
                            "ecr:GetDownloadUrlForLayer",
                            "ecr:InitiateLayerUpload",
                            "ecr:UploadLayerPart",
                            "ecr:CompleteLayerUpload",
                            "ecr:PutImage",
                            "ecr:DescribeRepositories",
                            "ecr:CreateRepository",
                            "ecr:DescribeImages",
                            "ecr:ListImages",
                            "ecr:TagResource",
                        ],
                        "Resource": [
                            "arn:aws:ecr:us-east-1:123456789012:repository/cruddur-python",
                            "arn:aws:ecr:us-east-1:123456789012:repository/mirror/*",
                        ],
                    },
                ],
            })
        );
    }

    #[test]
    fn pull_policy_only_reads() {
        let document = policy(Access::Pull, &["backend-flask"], &[], ACCOUNT, REGION);
        let statements = document["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 2);
        assert_eq!(actions(&statements[0]), ["ecr:GetAuthorizationToken"]);
        assert_eq!(statements[0]["Resource"], "*");
        assert_eq!(
            actions(&statements[1]),
            [
                "ecr:BatchCheckLayerAvailability",
                "ecr:GetDownloadUrlForLayer",
                "ecr:BatchGetImage"
            ]
        );
        assert_eq!(
            statements[1]["Resource"],
            json!(["arn:aws:ecr:us-east-1:123456789012:repository/backend-flask"])
        );
    }

    #[test]
    fn unknown_account_and_region_become_wildcards() {
        let document = policy(Access::Pull, &["python"], &[], None, None);
        assert_eq!(
            document["Statement"][1]["Resource"],
            json!(["arn:aws:ecr:*:*:repository/python"])
        );
    }

    #[test]
    fn no_repositories_means_all_of_the_account() {
        let document = policy(Access::Push, &[], &[], ACCOUNT, REGION);
        assert_eq!(
            document["Statement"][1]["Resource"],
            json!(["arn:aws:ecr:us-east-1:123456789012:repository/*"])
        );
    }

    #[test]
    fn arns_pass_through_and_duplicates_collapse() {
        let arn = "arn:aws:ecr:eu-west-1:210987654321:repository/shared";
        let document = policy(
            Access::Pull,
            &[arn, "python", "python"],
            &[],
            ACCOUNT,
            REGION,
        );
        assert_eq!(
            document["Statement"][1]["Resource"],
            json!([arn, "arn:aws:ecr:us-east-1:123456789012:repository/python"])
        );
    }

    #[test]
    fn partition_follows_the_region() {
        let china = policy(Access::Pull, &["python"], &[], ACCOUNT, Some("cn-north-1"));
        assert_eq!(
            china["Statement"][1]["Resource"][0],
            "arn:aws-cn:ecr:cn-north-1:123456789012:repository/python"
        );
        let gov = policy(
            Access::Pull,
            &["python"],
            &[],
            ACCOUNT,
            Some("us-gov-west-1"),
        );
        assert_eq!(
            gov["Statement"][1]["Resource"][0],
            "arn:aws-us-gov:ecr:us-gov-west-1:123456789012:repository/python"
        );
    }

    #[test]
    fn push_with_log_groups_adds_separate_log_statements() {
        let document = policy(
            Access::Push,
            &["python"],
            &["cruddur", "/ecs/backend"],
            ACCOUNT,
            REGION,
        );
        let statements = document["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 4);
        assert_eq!(
            statements[2..],
            [
                json!({
                    "Sid": "MirrorLogGroups",
                    "Effect": "Allow",
                    "Action": ["logs:CreateLogGroup", "logs:PutRetentionPolicy"],
                    "Resource": [
                        "arn:aws:logs:us-east-1:123456789012:log-group:cruddur:*",
                        "arn:aws:logs:us-east-1:123456789012:log-group:/ecs/backend:*",
                    ],
                }),
                json!({
                    "Sid": "DescribeLogGroups",
                    "Effect": "Allow",
                    "Action": ["logs:DescribeLogGroups"],
                    "Resource": "arn:aws:logs:us-east-1:123456789012:log-group:*",
                }),
            ]
        );
    }

    #[test]
    fn pull_with_log_groups_lets_the_awslogs_driver_write() {
        let document = policy(Access::Pull, &["backend-flask"], &["cruddur"], None, None);
        assert_eq!(
            document["Statement"][2],
            json!({
                "Sid": "WriteLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": ["arn:aws:logs:*:*:log-group:cruddur:log-stream:*"],
            })
        );
    }

    #[test]
    fn only_account_level_reads_and_the_log_group_listing_are_unscoped() {
        for access in [Access::Push, Access::Pull] {
            let document = policy(access, &["python"], &["cruddur"], ACCOUNT, REGION);
            for statement in document["Statement"].as_array().unwrap() {
                let resources = match &statement["Resource"] {
                    Value::Array(items) => items.iter().map(|r| r.as_str().unwrap()).collect(),
                    single => vec![single.as_str().unwrap()],
                };
                for resource in resources {
                    if resource == "*" {
                        let expected: &[&str] = match access {
                            Access::Push => PUSH_ACCOUNT_ACTIONS,
                            Access::Pull => &["ecr:GetAuthorizationToken"],
                        };
                        assert_eq!(actions(statement), expected);
                    } else if resource.ends_with(":log-group:*") {
                        assert_eq!(actions(statement), ["logs:DescribeLogGroups"]);
                    } else {
                        assert!(resource.contains("python") || resource.contains("cruddur"));
                    }
                }
            }
        }
    }
}
