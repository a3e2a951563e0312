//! What a run says: a few lines per tag for people, JSON for machines, and
//! for a run of many tags a closing summary that names every failure with
//! its cause, what was deferred, and the pulls spent per source host.

use std::fmt::Write as _;

use mirror_ecr::RepositoryOutcome;
use mirror_engine::CopyReport;
use mirror_oci::PlatformFilter;
use mirror_registry::StatsSnapshot;
use serde_json::{Value, json};

use crate::plan::{Plan, TagState};
use crate::run::{Outcome, RunReport, TagResult};

/// `1 day`, `7 days`.
fn days(count: i32) -> String {
    if count == 1 {
        "1 day".to_owned()
    } else {
        format!("{count} days")
    }
}

/// `1.50 MiB` (indicatif's binary units, as the progress bars show them).
pub fn human_bytes(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// The lines of one copied (or current) tag. `requests` is what the tag
/// cost in HTTP requests when it is the run's only tag; otherwise the
/// tag's own registry calls are counted.
pub fn copy_summary(
    report: &CopyReport,
    platforms: &[PlatformFilter],
    requests: Option<&StatsSnapshot>,
    calls: u64,
) -> String {
    let mut out = String::new();
    let cost = match requests {
        Some(stats) => format!("{} requests", stats.requests),
        None => format!("{calls} registry calls"),
    };
    let what = match (report.kind.as_str(), report.platforms.len()) {
        ("index", n) => format!("index, {n} platform{}", if n == 1 { "" } else { "s" }),
        _ => "image".to_owned(),
    };
    if report.up_to_date {
        let referrers = &report.referrers;
        let written = if referrers.copied > 0 {
            format!("only its {} new referrer(s) were copied", referrers.copied)
        } else {
            "nothing was written".to_owned()
        };
        let _ = writeln!(
            out,
            "up to date: {} already points at {} ({}); {written} ({cost})",
            report.destination, report.digest, report.kind
        );
        out.push_str(&referrers_summary(report));
        return out;
    }
    let verb = if report.dry_run {
        "would copy"
    } else {
        "copied"
    };
    let _ = writeln!(out, "{verb} {} -> {}", report.source, report.destination);
    let _ = writeln!(out, "  digest {} ({what})", report.digest);
    if let Some(filtered) = &report.filtered {
        let wanted: Vec<String> = platforms.iter().map(ToString::to_string).collect();
        if filtered.kind == "image" {
            let _ = writeln!(
                out,
                "  platform {} selected one image: the destination points at that platform's own manifest, not at the source index {}",
                wanted.join(", "),
                filtered.source_digest
            );
        } else {
            let _ = writeln!(
                out,
                "  platforms {} kept {} platforms in a NEW index with a new digest (the source index is {})",
                wanted.join(", "),
                report.platforms.len(),
                filtered.source_digest
            );
        }
    }
    out.push_str(&referrers_summary(report));
    let rate = report.bytes as f64 / report.seconds.max(0.001);
    let _ = writeln!(
        out,
        "  manifests: {} {}, {} already there; blobs: {} {}, {} already there, {} {}{}{}",
        report.manifests.copied,
        if report.dry_run { "to push" } else { "pushed" },
        report.manifests.skipped,
        report.blobs.copied,
        if report.dry_run { "to copy" } else { "copied" },
        report.blobs.skipped,
        report.blobs.mounted,
        if report.dry_run {
            "to mount"
        } else {
            "mounted"
        },
        if report.bytes_mounted > 0 {
            format!(" ({} not moved)", human_bytes(report.bytes_mounted))
        } else {
            String::new()
        },
        if report.blobs.foreign_skipped > 0 {
            format!(
                ", {} foreign layers left out (copying them must be asked for)",
                report.blobs.foreign_skipped
            )
        } else {
            String::new()
        }
    );
    let retries = report.retries + requests.map_or(0, |s| s.retries);
    let _ = writeln!(
        out,
        "  {} in {:.1} s ({}/s), {retries} retries, {cost}",
        human_bytes(report.bytes),
        report.seconds,
        human_bytes(rate as u64),
    );
    out
}

/// What travelled with the image (signatures, SBOMs, attestations) and the
/// signature that let it through; empty when there is nothing to say.
fn referrers_summary(report: &CopyReport) -> String {
    let mut out = String::new();
    if let Some(signature) = &report.signature {
        let _ = writeln!(
            out,
            "  signature: verified with {} ({} {})",
            signature.key, signature.found_at, signature.signature
        );
    }
    let counts = &report.referrers;
    let mut parts = Vec::new();
    if counts.copied > 0 {
        let verb = if report.dry_run { "to copy" } else { "copied" };
        parts.push(format!("{} {verb}", counts.copied));
    }
    if counts.skipped > 0 {
        parts.push(format!("{} already there", counts.skipped));
    }
    if counts.left_out > 0 {
        parts.push(format!("{} left out", counts.left_out));
    }
    if counts.failed > 0 {
        parts.push(format!("{} failed", counts.failed));
    }
    if !parts.is_empty() {
        let _ = writeln!(out, "  referrers: {}", parts.join(", "));
    }
    for error in &counts.errors {
        let _ = writeln!(out, "  warning: {error}");
    }
    out
}

/// `created repository ...` and drift notes for an ECR destination.
pub fn repository_lines(destination: &str, outcome: &RepositoryOutcome) -> String {
    let mut out = String::new();
    let repository = destination
        .split_once('@')
        .map_or(destination, |(name, _)| name);
    let repository = match repository.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => repository,
    };
    if outcome.created {
        let _ = writeln!(
            out,
            "created repository {repository} (tag mutability {})",
            outcome.tag_mutability
        );
    }
    for drift in &outcome.drift {
        let _ = writeln!(
            out,
            "note: repository {repository} exists and its {drift}; left unchanged"
        );
    }
    out
}

/// The line that says plainly what a docker-archive keeps and what it does not.
pub fn docker_archive_note(result: &TagResult, report: &CopyReport) -> Option<String> {
    let saved = result.docker_archive.as_ref()?;
    let location = result.docker_archive_location.as_ref()?;
    let file = location.path().display().to_string();
    let oci = match location.reference().as_str() {
        "" => format!("oci-archive:{file}"),
        tag => format!("oci-archive:{file}:{tag}"),
    };
    Some(format!(
        "note: docker-archive:{file} keeps the image config (image ID {}) and layers; docker load \
         (classic image store) and skopeo will not know the manifest digest {} (mirror keeps it \
         when it reads the file, as docker-archive:{file} or {oci})",
        saved.image_id, report.digest
    ))
}

fn requests_json(stats: &StatsSnapshot) -> Value {
    json!({
        "total": stats.requests,
        "head": stats.head,
        "get": stats.get,
        "put": stats.put,
        "post": stats.post,
        "patch": stats.patch,
        "token": stats.token,
    })
}

/// One tag as JSON. `requests`: the run's HTTP counts, given when the run
/// had this one tag only (then they are the tag's own).
pub fn tag_json(result: &TagResult, requests: Option<&StatsSnapshot>) -> Value {
    let mut value = match &result.outcome {
        Outcome::Copied(report) | Outcome::UpToDate(report) => {
            let mut value = serde_json::to_value(report).unwrap_or_else(|_| json!({}));
            if let Some(object) = value.as_object_mut() {
                object.insert(
                    "retries".into(),
                    json!(report.retries + requests.map_or(0, |s| s.retries)),
                );
                // A warm run decides on one HEAD per side and never reads
                // the index: its platforms are unknown (null), not none.
                if report.up_to_date && report.kind == "index" && report.platforms.is_empty() {
                    object.insert("platforms".into(), Value::Null);
                }
            }
            value
        }
        Outcome::Failed(error) => json!({
            "source": result.source,
            "destination": result.destination,
            "error": error.to_string(),
            "causes": crate::error::causes(error).split_off(1),
        }),
        Outcome::Conflict { existing, wanted } => json!({
            "source": result.source,
            "destination": result.destination,
            "error": conflict_message(result, existing, wanted),
            "conflict": {"existing": existing.to_string(), "wanted": wanted.to_string()},
        }),
        Outcome::Deferred => json!({
            "source": result.source,
            "destination": result.destination,
            "deferred": true,
        }),
        Outcome::NotStarted => json!({
            "source": result.source,
            "destination": result.destination,
            "not_started": true,
        }),
    };
    if let Some(object) = value.as_object_mut() {
        object.insert("state".into(), json!(state_of(&result.outcome)));
        object.insert(
            "calls".into(),
            serde_json::to_value(result.calls).unwrap_or(Value::Null),
        );
        if let Some(stats) = requests {
            object.insert("requests".into(), requests_json(stats));
        }
        if let Some(origin) = &result.origin {
            object.insert("origin".into(), json!(origin));
        }
        object.insert(
            "rate_limit".into(),
            result.rate_limit.map_or(Value::Null, |r| {
                json!({"limit": r.limit, "remaining": r.remaining, "window_seconds": r.window_seconds})
            }),
        );
        if let Some(outcome) = &result.repository {
            object.insert(
                "repository".into(),
                json!({"created": outcome.created, "drift": outcome.drift, "uri": outcome.uri}),
            );
        }
        if let Some(saved) = &result.docker_archive {
            object.insert(
                "docker_archive".into(),
                json!({"image_id": saved.image_id.to_string(), "repo_tags": saved.repo_tags}),
            );
        }
    }
    value
}

/// One word per outcome, for JSON and the summary.
pub fn state_of(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Copied(report) if report.up_to_date => "up-to-date",
        Outcome::Copied(report) if report.dry_run => "planned",
        Outcome::Copied(_) => "copied",
        Outcome::UpToDate(_) => "up-to-date",
        Outcome::Failed(_) => "failed",
        Outcome::Deferred => "deferred",
        Outcome::Conflict { .. } => "conflict",
        Outcome::NotStarted => "not-started",
    }
}

/// Why a conflict is one, naming both digests.
pub fn conflict_message(
    result: &TagResult,
    existing: &mirror_oci::Digest,
    wanted: &mirror_oci::Digest,
) -> String {
    format!(
        "{} is an immutable tag that already holds {existing}; not overwriting it with {wanted}",
        result.destination
    )
}

/// Why a tag failed, on one line (the error and its causes), or `None`.
pub fn failure_of(result: &TagResult) -> Option<String> {
    match &result.outcome {
        Outcome::Failed(error) => Some(error.one_line()),
        Outcome::Conflict { existing, wanted } => Some(conflict_message(result, existing, wanted)),
        _ => None,
    }
}

/// A run's closing lines: counts, every failure with its cause, deferrals,
/// pulls spent per source host.
pub fn run_summary(report: &RunReport) -> String {
    let mut out = String::new();
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for tag in &report.tags {
        let state = state_of(&tag.outcome);
        match counts.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state, 1)),
        }
    }
    let listed: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let bytes: u64 = report
        .tags
        .iter()
        .filter_map(|t| match &t.outcome {
            Outcome::Copied(r) => Some(r.bytes),
            _ => None,
        })
        .sum();
    let _ = writeln!(
        out,
        "{}{} tag{}: {}; {} {} in {:.1} s, {} requests",
        report
            .shard
            .map(|s| format!("shard {s}: "))
            .unwrap_or_default(),
        report.tags.len(),
        if report.tags.len() == 1 { "" } else { "s" },
        if listed.is_empty() {
            "nothing selected".to_owned()
        } else {
            listed.join(", ")
        },
        human_bytes(bytes),
        if report.dry_run { "to copy" } else { "copied" },
        report.seconds,
        report.requests.requests
    );
    for group in &report.log_groups {
        match &group.outcome {
            Ok(outcome) => {
                let what = if outcome.created { "created" } else { "exists" };
                let retention = match (outcome.retention_changed, group.retention_days) {
                    (Some((old, new)), _) => format!(
                        "; retention set to {} (was {})",
                        days(new),
                        old.map_or_else(|| "never expire".to_owned(), days)
                    ),
                    (None, Some(d)) => format!("; retention already {}", days(d)),
                    (None, None) => String::new(),
                };
                let _ = writeln!(out, "log group {} {what}{retention}", group.name);
            }
            Err(error) => {
                let _ = writeln!(out, "log group {}: {}", group.name, error.one_line());
            }
        }
    }
    let failures: Vec<&TagResult> = report.tags.iter().filter(|t| t.is_failure()).collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "failed:");
        for tag in failures {
            let at = tag
                .origin
                .as_ref()
                .map(|o| format!("{o}: "))
                .unwrap_or_default();
            let cause = failure_of(tag).unwrap_or_default().replace('\n', "\n    ");
            let _ = writeln!(out, "  {at}{} -> {}: {cause}", tag.source, tag.destination);
        }
    }
    let deferred = report.deferred();
    if deferred > 0 {
        let _ = writeln!(
            out,
            "deferred: {deferred} tag{} left for the next run (the source pull budget is spent; nothing of them was written)",
            if deferred == 1 { "" } else { "s" }
        );
    }
    for pulls in &report.pulls {
        if pulls.spent == 0 && !pulls.exhausted {
            continue;
        }
        let limit = pulls
            .limit
            .map(|l| format!(" of at most {l}"))
            .unwrap_or_default();
        let quota = pulls
            .rate_limit
            .map(|r| format!("; the registry reports {r}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "pulls: {} manifest GET{}{limit} at {}{quota}",
            pulls.spent,
            if pulls.spent == 1 { "" } else { "s" },
            pulls.host
        );
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

/// The whole run as one JSON object.
pub fn run_json(report: &RunReport) -> Value {
    json!({
        "tags": report.tags.iter().map(|t| tag_json(t, None)).collect::<Vec<_>>(),
        "log_groups": report.log_groups.iter().map(|g| match &g.outcome {
            Ok(outcome) => json!({
                "name": g.name,
                "retention_days": g.retention_days,
                "created": outcome.created,
                "retention_changed": outcome.retention_changed.is_some(),
                "arn": outcome.arn,
            }),
            Err(error) => json!({
                "name": g.name,
                "error": error.to_string(),
                "causes": crate::error::causes(error).split_off(1),
            }),
        }).collect::<Vec<_>>(),
        "pulls": report.pulls,
        "failed": report.failed(),
        "deferred": report.deferred(),
        "shard": report.shard.map(|s| s.to_string()),
        "notes": report.notes,
        "requests": requests_json(&report.requests),
        "seconds": report.seconds,
    })
}

/// `--plan`: one line per tag, then counts.
pub fn plan_text(plan: &Plan) -> String {
    let mut out = String::new();
    for tag in &plan.tags {
        let detail = match &tag.state {
            TagState::UpToDate | TagState::New => tag
                .digest
                .as_ref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default(),
            TagState::Changed { old } | TagState::Filtered { old } => format!(
                " ({old} -> {})",
                tag.digest
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
            TagState::Conflict { existing } => format!(
                " (immutable, holds {existing}; the source has {})",
                tag.digest
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
            TagState::Deferred => " (over the source pull budget)".to_owned(),
            TagState::Missing => " (not at the source)".to_owned(),
            TagState::Failed { error } => format!(": {}", error.one_line()),
        };
        let bytes = tag
            .bytes
            .map(|b| format!(", {} to copy", human_bytes(b)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<10} {} -> {}{detail}{bytes}",
            tag.state.label(),
            tag.source,
            tag.destination
        );
    }
    for group in &plan.log_groups {
        let retention = group
            .retention_days
            .map(|d| format!(", retention {}", days(d)))
            .unwrap_or_default();
        let _ = writeln!(out, "log group  {} (ensured{retention})", group.name);
    }
    let counts: Vec<String> = plan
        .counts()
        .iter()
        .map(|(label, n)| format!("{n} {label}"))
        .collect();
    let _ = writeln!(
        out,
        "plan{}: {} tag{}: {}; nothing was written",
        plan.shard
            .map(|s| format!(" (shard {s}, by destination repository)"))
            .unwrap_or_default(),
        plan.tags.len(),
        if plan.tags.len() == 1 { "" } else { "s" },
        if counts.is_empty() {
            "nothing selected".to_owned()
        } else {
            counts.join(", ")
        }
    );
    out
}

/// `--plan --json`.
pub fn plan_json(plan: &Plan) -> Value {
    let counts: serde_json::Map<String, Value> = plan
        .counts()
        .into_iter()
        .map(|(label, n)| (label.replace(' ', "-"), json!(n)))
        .collect();
    json!({
        "tags": plan.tags,
        "log_groups": plan.log_groups,
        "shard": plan.shard.map(|s| s.to_string()),
        "counts": counts,
        "calls": plan.calls(),
    })
}
