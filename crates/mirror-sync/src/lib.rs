//! Many images in one run: the sync file, tag selection, naming rules,
//! planning, running and reporting. `mirror IMAGE`, `mirror copy` and `mirror
//! sync` are all front ends of this crate, so there is one way jobs are
//! planned and run.
//!
//! - [`SyncFile`]: the YAML file (`images`, `defaults`, `log-groups`), read and
//!   checked with `FILE:LINE:COL` errors; [`Entry`], [`Target`], [`Tags`].
//! - [`ImageLocation`]: a registry reference or local files, in skopeo's
//!   transport syntax.
//! - [`TagFilter`]: `regex`, `exclude`, `semver` (Docker's tag shapes), `latest`.
//! - Naming: [`registry_destination`], [`file_destination`], [`copy_destination`].
//! - [`Registries`]: the HTTP client and the ECR regions of one run.
//! - [`Session`]: [`Session::plan`] selects and names every tag and HEADs
//!   both sides ([`Plan`], [`TagState`]); [`Session::run`] copies on one
//!   engine with a bound on images in flight, isolates failures and defers
//!   tags past the source pull budget ([`RunReport`], [`Outcome`]).
//! - Air gap: [`export_request`] puts every image of a file into one
//!   archive, [`Bundle`] pushes them from it to their targets on the far
//!   side, refusing a delta whose left-out blobs the destination lacks
//!   ([`Session::bundle_gaps`]); have-files ([`read_have`], [`write_have`])
//!   say what the far side holds.
//! - [`Shard`]: `--shard K/N` splits a file's tags between processes by
//!   destination repository, with no coordination.
//! - [`report`]: text and JSON for people and machines; [`metrics`]: the
//!   Prometheus text format of a run (`--metrics-file`); [`serve`]: `/metrics`
//!   and `/healthz` of the daemon (`mirror sync --every --listen`).
//!
//! ```no_run
//! # async fn demo(registries: std::sync::Arc<mirror_sync::Registries>) -> Result<(), mirror_sync::SyncError> {
//! use std::path::Path;
//! use mirror_sync::{Request, RunOptions, Session, SyncFile};
//!
//! let file = SyncFile::read(Path::new("mirror.yaml"))?;
//! let request = Request { images: file.images, log_groups: file.log_groups };
//! let session = Session::new(registries, RunOptions::default(), std::sync::Arc::new(mirror_engine::Silent));
//! let plan = session.plan(&request).await?;
//! let report = session.run(plan).await;
//! eprint!("{}", mirror_sync::report::run_summary(&report));
//! # Ok(()) }
//! ```

mod budget;
mod bundle;
mod counted;
mod error;
mod file;
mod location;
pub mod metrics;
mod naming;
mod plan;
mod registries;
pub mod report;
mod run;
mod select;
pub mod serve;
mod session;
mod shard;

pub use budget::PullsSpent;
pub use bundle::{
    Bundle, BundleError, Gap, Import, LeftOut, export_request, have_path, parse_have, read_have,
    write_have,
};
pub use counted::BudgetSpent;
pub use counted::Calls;
pub use error::{
    ErrorKind, FileError, HintTopic, ListingError, LocationError, Origin, RunError, SyncError,
    causes,
};
pub use file::{Entry, FileName, LogGroup, SyncFile, Tags, Target};
pub use location::ImageLocation;
pub use naming::{
    NameRules, bundle_ref_name, copy_destination, destination_reference, file_destination,
    named_by, registry_destination, repository_name, split_name_tag,
};
pub use plan::{Plan, PlannedLogGroup, PlannedTag, TagState};
pub use registries::{EcrOptions, EcrRegion, Registries, TOKEN_LIFETIME_ENV, ecr_region};
pub use run::{LogGroupResult, Outcome, RunReport, TagResult};
pub use select::{FilterError, TagFilter, TagVersion};
pub use session::{
    DEFAULT_CONCURRENT_IMAGES, DEFAULT_SYNC_CONCURRENT_BLOBS, Job, Request, RunOptions, Session,
};
pub use shard::{COMPLETION_INDEX_VAR, Shard, ShardError};
