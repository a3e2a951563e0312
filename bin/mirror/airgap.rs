//! `mirror sync FILE --to-archive BUNDLE [--have FILE]` and `mirror sync
//! FILE --from-archive BUNDLE [--write-have PATH]`: a fleet across an air
//! gap, with the same file on both sides. The work is `mirror-sync`'s
//! (`export_request`, `Bundle`, `Session::bundle_gaps`, have-files); this
//! module turns the flags into it and says what happened. `jobs.rs::sync`
//! stays one code path and calls in at three points: [`prepare`] before the
//! plan, [`Airgap::check`] between the plan and the run, [`Airgap::finish`]
//! after the run.
//!
//! An export is written to `BUNDLE.exporting` and renamed to `BUNDLE` only
//! when every tag made it, so an old bundle is never merged into (a delta
//! would then carry what it leaves out) nor replaced by a partial one; a
//! re-run after a failure continues from `BUNDLE.exporting`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mirror_sync::report::human_bytes;
use mirror_sync::{
    Bundle, BundleError, LeftOut, Outcome, Plan, Request, RunOptions, RunReport, Session,
};

use crate::Failure;
use crate::cli::BundleArgs;

/// What a sync does across the gap, if anything.
pub(crate) enum Airgap {
    /// An ordinary sync.
    Off,
    Export {
        bundle: PathBuf,
        staging: PathBuf,
        have: Option<PathBuf>,
        left_out: Option<Arc<LeftOut>>,
    },
    Import {
        bundle: Box<Bundle>,
        have: PathBuf,
    },
}

/// `BUNDLE.exporting`: where an export is assembled.
fn staging_path(bundle: &Path) -> PathBuf {
    let mut name = bundle.as_os_str().to_owned();
    name.push(".exporting");
    PathBuf::from(name)
}

fn bundle_failure(error: BundleError) -> Failure {
    let hint = match &error {
        BundleError::ReadHave { .. } | BundleError::BadHave { .. } => Some(
            "give --have the .have file the far side's last import wrote (one sha256:... a line), or leave --have out for a full bundle",
        ),
        BundleError::Open { .. } => Some(
            "write the bundle on the connected side with `mirror sync FILE --to-archive BUNDLE` and give that file",
        ),
        BundleError::Gaps { .. } => Some(
            "nothing was pushed: export again without --have (a full bundle), or with the .have file the last import into this destination wrote",
        ),
        BundleError::WriteHave { .. } => Some(
            "the images landed; name a writable place with --write-have PATH, or keep the destination's digests some other way before the next --have export",
        ),
        _ => None,
    };
    let failure = Failure::from_error(error);
    match hint {
        Some(hint) => failure.hint(hint),
        None => failure,
    }
}

/// The blobs a staged export lacks that the far side does not hold (as
/// far as the have-file of this export says): none, for a sound bundle.
async fn staged_gaps(
    staging: &Path,
    left_out: Option<&LeftOut>,
) -> Result<Vec<String>, BundleError> {
    let staged = Bundle::open(staging).await?;
    Ok(staged
        .absent()
        .await?
        .into_iter()
        .filter(|digest| !left_out.is_some_and(|l| l.is_held(digest)))
        .collect())
}

/// A `BUNDLE.exporting` left by an earlier export resumes, unless that
/// export left out blobs this one must carry (another `--have`): its
/// images would count as done without them. Then it is removed, with a note.
async fn drop_stale_staging(
    staging: &Path,
    left_out: Option<&LeftOut>,
    quiet: bool,
) -> Result<(), Failure> {
    if !staging.exists() {
        return Ok(());
    }
    let reason = match staged_gaps(staging, left_out).await {
        Ok(gaps) if gaps.is_empty() => return Ok(()),
        Ok(gaps) => format!(
            "it lacks {} blob(s) this export carries (an earlier export with another --have)",
            gaps.len()
        ),
        Err(error) => format!("it cannot be read ({error})"),
    };
    std::fs::remove_file(staging).map_err(|e| {
        Failure::transfer(format!(
            "cannot remove {}, left by an earlier export: {e}",
            staging.display()
        ))
        .hint(format!("remove {} and export again", staging.display()))
    })?;
    if !quiet {
        eprintln!("note: starting {} afresh: {reason}", staging.display());
    }
    Ok(())
}

/// Turns a sync's request into an export's or an import's; an ordinary
/// sync passes through.
pub(crate) async fn prepare(
    args: &BundleArgs,
    request: Request,
    options: &mut RunOptions,
    quiet: bool,
) -> Result<(Request, Airgap), Failure> {
    if let Some(bundle) = &args.to_archive {
        let left_out = match &args.have {
            Some(path) => {
                let held = mirror_sync::read_have(path).map_err(bundle_failure)?;
                Some(Arc::new(LeftOut::new(held)))
            }
            None => None,
        };
        options.left_out = left_out.clone();
        let staging = staging_path(bundle);
        drop_stale_staging(&staging, left_out.as_deref(), quiet).await?;
        let request = mirror_sync::export_request(&request, &staging);
        return Ok((
            request,
            Airgap::Export {
                bundle: bundle.clone(),
                staging,
                have: args.have.clone(),
                left_out,
            },
        ));
    }
    if let Some(path) = &args.from_archive {
        let bundle = Bundle::open(path).await.map_err(bundle_failure)?;
        let import = bundle.import_request(&request).map_err(Failure::from)?;
        if !quiet && !import.unclaimed.is_empty() {
            eprintln!(
                "note: {} image(s) in {} are not in the file and are left alone: {}",
                import.unclaimed.len(),
                path.display(),
                import.unclaimed.join(", ")
            );
        }
        if !quiet {
            for entry in &import.unmatched {
                eprintln!(
                    "note: {entry}: no tag of it is in {} (was the file changed since the export?)",
                    path.display()
                );
            }
        }
        let request = import.request;
        let have = args
            .write_have
            .clone()
            .unwrap_or_else(|| mirror_sync::have_path(path));
        return Ok((
            request,
            Airgap::Import {
                bundle: Box::new(bundle),
                have,
            },
        ));
    }
    Ok((request, Airgap::Off))
}

impl Airgap {
    /// Before the run: an import whose bundle left out blobs that a
    /// destination lacks (and cannot mount) is refused, naming them, with
    /// nothing pushed.
    pub(crate) async fn check(&self, session: &Session, plan: &Plan) -> Result<(), Failure> {
        let Self::Import { bundle, .. } = self else {
            return Ok(());
        };
        let gaps = session
            .bundle_gaps(plan, bundle)
            .await
            .map_err(bundle_failure)?;
        if gaps.is_empty() {
            return Ok(());
        }
        Err(bundle_failure(BundleError::Gaps {
            path: bundle.path().to_owned(),
            gaps,
        }))
    }

    /// After the run: an export's bundle moved into place (only if every
    /// tag made it), an import's have-file written (for what landed).
    pub(crate) async fn finish(&self, report: &RunReport, quiet: bool) -> Result<(), Failure> {
        match self {
            Self::Off => Ok(()),
            Self::Export {
                bundle,
                staging,
                have,
                left_out,
            } => finish_export(report, bundle, staging, have.as_deref(), left_out, quiet).await,
            Self::Import { bundle, have } => finish_import(report, bundle, have, quiet).await,
        }
    }
}

async fn finish_export(
    report: &RunReport,
    bundle: &Path,
    staging: &Path,
    have: Option<&Path>,
    left_out: &Option<Arc<LeftOut>>,
    quiet: bool,
) -> Result<(), Failure> {
    if report.tags.is_empty() {
        return Err(Failure::usage(format!(
            "the file selects no image: {} was not written",
            bundle.display()
        )));
    }
    if report.failed() > 0 || report.deferred() > 0 {
        if !quiet {
            eprintln!(
                "note: {} was not written, since not every image made it; what was exported is kept in {} and a re-run continues from there",
                bundle.display(),
                staging.display()
            );
        }
        return Ok(());
    }
    // What crosses the gap is checked before it is called done: every blob
    // its images need is in it, or named by the have-file.
    let gaps = staged_gaps(staging, left_out.as_deref())
        .await
        .map_err(bundle_failure)?;
    if !gaps.is_empty() {
        return Err(Failure::from_error(BundleError::Incomplete {
            path: staging.to_owned(),
            digests: gaps,
        })
        .hint(format!(
            "remove {} and export again; {} was left as it was",
            staging.display(),
            bundle.display()
        )));
    }
    std::fs::rename(staging, bundle).map_err(|source| {
        bundle_failure(BundleError::Commit {
            from: staging.to_owned(),
            to: bundle.to_owned(),
            source,
        })
    })?;
    if !quiet {
        let size = std::fs::metadata(bundle).map_or(0, |m| m.len());
        eprintln!(
            "bundle: {} ({} image(s), {})",
            bundle.display(),
            report.tags.len(),
            human_bytes(size)
        );
        if let (Some(left_out), Some(have)) = (left_out, have) {
            let (count, bytes) = left_out.count();
            eprintln!(
                "  a delta: {count} blob(s) ({}) left out that {} says the far side holds",
                human_bytes(bytes),
                have.display()
            );
        }
    }
    Ok(())
}

async fn finish_import(
    report: &RunReport,
    bundle: &Bundle,
    have: &Path,
    quiet: bool,
) -> Result<(), Failure> {
    let landed: Vec<String> = report
        .tags
        .iter()
        .filter(|t| matches!(t.outcome, Outcome::Copied(_) | Outcome::UpToDate(_)))
        .filter_map(|t| bundle.name_of(&t.source))
        .collect();
    if landed.is_empty() {
        if !quiet {
            eprintln!(
                "note: no image landed, so {} was not written",
                have.display()
            );
        }
        return Ok(());
    }
    let held = bundle.held_after(&landed).await.map_err(bundle_failure)?;
    let header = format!(
        "What the far side holds after importing {} ({} image(s), {} digests).\nFor the next export: mirror sync FILE --to-archive BUNDLE --have {}",
        bundle.path().display(),
        landed.len(),
        held.len(),
        have.display()
    );
    mirror_sync::write_have(have, &header, &held).map_err(bundle_failure)?;
    if !quiet {
        eprintln!(
            "have: {} ({} digests the far side now holds)",
            have.display(),
            held.len()
        );
    }
    Ok(())
}
