//! Air gap at fleet scale: every image a sync file selects, in one OCI
//! archive (a bundle, each blob stored once), carried across the gap and
//! pushed on the far side to the targets the same file gives them.
//!
//! - Export ([`export_request`]): every entry's target becomes the bundle,
//!   each image named there by [`crate::bundle_ref_name`] (the repository
//!   path its target gives it, without the registry host, and its tag), so
//!   that the far side can name it again.
//! - Delta: a have-list ([`read_have`]) names what the far side holds;
//!   those blobs are left out of the bundle ([`LeftOut`]). Manifests always
//!   travel: they are small, and the import walks them.
//! - Import ([`Bundle::import_request`]): every entry's images come from the
//!   bundle instead of the source, under the names and settings the file
//!   gives them. [`Session::bundle_gaps`] asks each destination for the
//!   blobs the bundle lacks (a HEAD, else a mount from another repository
//!   of the file on that registry) before anything is pushed; one gap
//!   refuses the whole import. [`write_have`] then records what the far
//!   side holds ([`Bundle::held_after`]), for the next export.
//!
//! Whether a bundle is a delta is read from its content (a blob that one
//! of its manifests names and its tar does not hold), not from a label: the
//! check is the same for a delta and for a damaged bundle, and cannot
//! disagree with what the file holds.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mirror_engine::{EndpointError, Mount, Source};
use mirror_layout::{FileLocation, LayoutError, OciArchive};
use mirror_oci::Descriptor;

use crate::error::SyncError;
use crate::file::{Entry, Tags, Target};
use crate::location::ImageLocation;
use crate::naming::{bundle_prefix, bundle_ref_name, unprefixed_name};
use crate::plan::Plan;
use crate::session::{DestinationHandle, Request, Session};

/// Manifests below a bundle's named image walked at most (index, images,
/// referrers of referrers): the engine's own bounds are tighter.
const MAX_WALK_DEPTH: usize = 8;

/// Why an air-gap export or import cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the have-file {path}")]
    ReadHave {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    BadHave {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("cannot write the have-file {path}")]
    WriteHave {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the bundle {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<LayoutError>,
    },
    #[error("cannot read {name} in the bundle {path}")]
    Image {
        path: PathBuf,
        name: String,
        #[source]
        source: Box<EndpointError>,
    },
    #[error(
        "the bundle {path} is a delta, and {count} blob(s) it left out are not at the destination:{list}",
        count = .gaps.iter().map(|g| g.digests.len()).sum::<usize>(),
        list = gap_list(.gaps)
    )]
    Gaps { path: PathBuf, gaps: Vec<Gap> },
    #[error(
        "the export {path} lacks {count} blob(s) that its images need and no have-file names:{list}",
        count = .digests.len(),
        list = .digests.iter().map(|d| format!("\n  {d}")).collect::<String>()
    )]
    Incomplete { path: PathBuf, digests: Vec<String> },
    #[error("cannot move the finished bundle {from} to {to}")]
    Commit {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BundleError {
    /// Whether the request is wrong as written (exit 2) rather than
    /// something failing on the way.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::ReadHave { .. } | Self::BadHave { .. } | Self::Open { .. }
        )
    }
}

/// Blobs one destination repository needs and neither the bundle nor the
/// registry holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The destination repository (`host/path`) or file.
    pub repository: String,
    pub digests: Vec<String>,
}

/// One line a missing blob: `\n  REPOSITORY needs DIGEST`.
fn gap_list(gaps: &[Gap]) -> String {
    gaps.iter()
        .flat_map(|g| {
            g.digests
                .iter()
                .map(move |digest| format!("\n  {} needs {digest}", g.repository))
        })
        .collect()
}

// ---- have-files -------------------------------------------------------------

/// Where the import writes what the far side holds: beside the bundle,
/// `FILE.have`.
pub fn have_path(bundle: &Path) -> PathBuf {
    let mut name = bundle.as_os_str().to_owned();
    name.push(".have");
    PathBuf::from(name)
}

/// A have-file: one digest a line (`sha256:<hex>`); blank lines and `#`
/// comments (whole lines or after a digest) are ignored. `path` is for
/// messages: a bad line is named `PATH:LINE`.
pub fn parse_have(text: &str, path: &Path) -> Result<BTreeSet<String>, BundleError> {
    let mut digests = BTreeSet::new();
    for (index, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let digest = mirror_oci::parse_digest(content).map_err(|e| BundleError::BadHave {
            path: path.to_owned(),
            line: index + 1,
            reason: e.to_string(),
        })?;
        digests.insert(digest.to_string());
    }
    Ok(digests)
}

/// Reads and parses a have-file.
pub fn read_have(path: &Path) -> Result<BTreeSet<String>, BundleError> {
    let text = std::fs::read_to_string(path).map_err(|source| BundleError::ReadHave {
        path: path.to_owned(),
        source,
    })?;
    parse_have(&text, path)
}

/// Writes a have-file atomically (a temporary file beside it, then a
/// rename): `header` as `#` comment lines, then the digests in order.
pub fn write_have(
    path: &Path,
    header: &str,
    digests: &BTreeSet<String>,
) -> Result<(), BundleError> {
    let mut text = String::new();
    for line in header.lines() {
        text.push_str("# ");
        text.push_str(line);
        text.push('\n');
    }
    for digest in digests {
        text.push_str(digest);
        text.push('\n');
    }
    crate::metrics::write_atomically(path, &text).map_err(|source| BundleError::WriteHave {
        path: path.to_owned(),
        source,
    })
}

// ---- export -----------------------------------------------------------------

/// The request an export runs: every entry's images into the archive at
/// `bundle`, named as their targets name them ([`crate::bundle_ref_name`]);
/// log groups belong to the far side and are left out.
pub fn export_request(request: &Request, bundle: &Path) -> Request {
    let file = FileLocation::OciArchive {
        path: bundle.to_owned(),
        tag: None,
    };
    Request {
        images: request
            .images
            .iter()
            .map(|entry| Entry {
                target: Target::Files(file.clone()),
                prefix: Some(bundle_prefix(&entry.target, entry.prefix.as_deref())),
                ..entry.clone()
            })
            .collect(),
        log_groups: Vec::new(),
    }
}

/// The blobs an export leaves out because the far side holds them, and
/// which of them it did leave out (with their sizes), for the summary.
#[derive(Debug, Default)]
pub struct LeftOut {
    held: BTreeSet<String>,
    left: Mutex<BTreeMap<String, u64>>,
}

impl LeftOut {
    pub fn new(held: BTreeSet<String>) -> Self {
        Self {
            held,
            left: Mutex::new(BTreeMap::new()),
        }
    }

    /// Blobs left out so far, and their bytes.
    pub fn count(&self) -> (usize, u64) {
        let left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        (left.len(), left.values().sum())
    }

    /// Whether the far side holds this digest, as the have-file says.
    pub fn is_held(&self, digest: &str) -> bool {
        self.held.contains(digest)
    }

    pub(crate) fn holds(&self, descriptor: &Descriptor) -> bool {
        let digest = descriptor.digest().to_string();
        if !self.held.contains(&digest) {
            return false;
        }
        self.left
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest, descriptor.size());
        true
    }
}

// ---- import -----------------------------------------------------------------

/// A bundle opened for import: its named images, read in place.
#[derive(Debug)]
pub struct Bundle {
    path: PathBuf,
    archive: OciArchive,
    /// Ref names of images (cosign's tags left out: they travel with theirs).
    names: Vec<String>,
}

/// What an import runs, and what of the file and the bundle did not meet.
#[derive(Debug)]
pub struct Import {
    pub request: Request,
    /// Images of the bundle no entry asks for: left alone.
    pub unclaimed: Vec<String>,
    /// Entries whose tag selection found no image in the bundle
    /// (`FILE:LINE:COL: source`): the file changed since the export?
    pub unmatched: Vec<String>,
}

/// What one named image of a bundle reaches: its manifests and the blobs
/// they name.
#[derive(Debug, Default)]
struct Walked {
    manifests: BTreeSet<String>,
    blobs: BTreeMap<String, Descriptor>,
}

impl Bundle {
    pub async fn open(path: &Path) -> Result<Self, BundleError> {
        let opened = |source: LayoutError| BundleError::Open {
            path: path.to_owned(),
            source: Box::new(source),
        };
        let archive = OciArchive::open(path).await.map_err(opened)?;
        let names = archive
            .list()
            .await
            .map_err(opened)?
            .into_iter()
            .filter_map(|(name, _)| name)
            .filter(|name| {
                let tag = name.rsplit_once(':').map_or(name.as_str(), |(_, t)| t);
                !mirror_oci::is_referrer_tag(tag)
            })
            .collect();
        Ok(Self {
            path: path.to_owned(),
            archive,
            names,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ref names of the bundle's images.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    fn location(&self, name: &str) -> ImageLocation {
        ImageLocation::File(FileLocation::OciArchive {
            path: self.path.clone(),
            tag: Some(name.to_owned()),
        })
    }

    /// The ref name behind a planned or reported tag's source label.
    pub fn name_of(&self, source_label: &str) -> Option<String> {
        let prefix = self.location("").to_string();
        source_label
            .strip_prefix(&prefix)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
    }

    /// The request an import runs: for every tag an entry selects, its
    /// image from the bundle, written where a sync from the source would
    /// write it (same target, prefix, repository settings). The bundle
    /// already holds the platforms the entry chose, so none are filtered
    /// again (the digests stay the bundle's). Also returns the bundle's
    /// images that no entry asks for (left alone), and the entries whose
    /// selection found none in it.
    pub fn import_request(&self, request: &Request) -> Result<Import, SyncError> {
        let mut claimed = HashSet::new();
        let mut images = Vec::new();
        let mut unmatched = Vec::new();
        for entry in &request.images {
            let name_of = |source: &ImageLocation| {
                bundle_ref_name(
                    &entry.target,
                    source,
                    entry.to.as_deref(),
                    entry.prefix.as_deref(),
                    &entry.origin,
                )
            };
            let sources: Vec<ImageLocation> = match &entry.tags {
                Tags::Named => vec![entry.from.clone()],
                Tags::List(tags) => tags.iter().map(|t| entry.from.with_tag(t)).collect(),
                Tags::Select(filter) => {
                    let mut tags = Vec::new();
                    for name in &self.names {
                        let Some((_, tag)) = name.rsplit_once(':') else {
                            continue;
                        };
                        let source = entry.from.with_tag(tag);
                        if name_of(&source).ok().as_ref() == Some(name) {
                            tags.push(tag.to_owned());
                        }
                    }
                    filter
                        .select(&tags)
                        .iter()
                        .map(|t| entry.from.with_tag(t))
                        .collect()
                }
            };
            if sources.is_empty() {
                unmatched.push(match &entry.origin {
                    Some(origin) => format!("{origin}: {}", entry.from),
                    None => entry.from.to_string(),
                });
            }
            for source in sources {
                let name = name_of(&source)?;
                let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
                let to = format!(
                    "{}:{tag}",
                    unprefixed_name(&source, entry.to.as_deref(), &entry.origin)?
                );
                images.push(Entry {
                    from: self.location(&name),
                    to: Some(to),
                    tags: Tags::Named,
                    platforms: Vec::new(),
                    ..entry.clone()
                });
                claimed.insert(name);
            }
        }
        let unclaimed = self
            .names
            .iter()
            .filter(|name| !claimed.contains(*name))
            .cloned()
            .collect();
        Ok(Import {
            request: Request {
                images,
                log_groups: request.log_groups.clone(),
            },
            unclaimed,
            unmatched,
        })
    }

    /// Every manifest and blob a named image reaches, referrers included.
    /// Foreign (non-distributable) layers are left out: they stay where
    /// their URLs point.
    async fn walk(&self, name: &str) -> Result<Walked, BundleError> {
        let failed = |source: EndpointError| BundleError::Image {
            path: self.path.clone(),
            name: name.to_owned(),
            source: Box::new(source),
        };
        let root = self
            .archive
            .find(name)
            .await
            .map_err(|e| failed(EndpointError::backend(e)))?;
        let mut walked = Walked::default();
        let mut queue = vec![(root.digest, 0usize)];
        while let Some((digest, depth)) = queue.pop() {
            if depth > MAX_WALK_DEPTH || !walked.manifests.insert(digest.to_string()) {
                continue;
            }
            let manifest = Source::manifest(&self.archive, &digest)
                .await
                .map_err(failed)?;
            for child in manifest.children() {
                queue.push((child.digest().clone(), depth + 1));
            }
            for blob in manifest.blobs() {
                if !mirror_oci::is_foreign_layer(blob.media_type().to_string().as_str()) {
                    walked.blobs.insert(blob.digest().to_string(), blob.clone());
                }
            }
            for referrer in Source::referrers(&self.archive, &digest, None)
                .await
                .map_err(failed)?
            {
                queue.push((referrer.descriptor.digest().clone(), depth + 1));
            }
        }
        Ok(walked)
    }

    /// The blobs a named image needs that the bundle does not hold.
    async fn absent_blobs(&self, name: &str) -> Result<Vec<Descriptor>, BundleError> {
        let mut absent = Vec::new();
        for blob in self.walk(name).await?.blobs.into_values() {
            let held = self
                .archive
                .has_blob(&blob)
                .await
                .map_err(|e| BundleError::Image {
                    path: self.path.clone(),
                    name: name.to_owned(),
                    source: Box::new(EndpointError::backend(e)),
                })?;
            if !held {
                absent.push(blob);
            }
        }
        Ok(absent)
    }

    /// Every blob the bundle's images need and it does not hold: what a
    /// delta left out (or what a damaged bundle lost).
    pub async fn absent(&self) -> Result<BTreeSet<String>, BundleError> {
        let mut absent = BTreeSet::new();
        for name in &self.names {
            for blob in self.absent_blobs(name).await? {
                absent.insert(blob.digest().to_string());
            }
        }
        Ok(absent)
    }

    /// What the far side holds once these images landed: every manifest
    /// and blob they reach (the ones a delta left out included: the import
    /// checked that the destination holds them).
    pub async fn held_after(&self, names: &[String]) -> Result<BTreeSet<String>, BundleError> {
        let mut held = BTreeSet::new();
        for name in names {
            let walked = self.walk(name).await?;
            held.extend(walked.manifests);
            held.extend(walked.blobs.into_keys());
        }
        Ok(held)
    }
}

impl Session {
    /// Before an import pushes anything: the blobs each tag to be copied
    /// needs that its bundle left out (a delta), asked of the destination
    /// repository (HEAD), else mounted there from another repository of the
    /// plan on the same registry that holds them. What is still missing is
    /// a gap; the caller refuses the import when there is any.
    pub async fn bundle_gaps(&self, plan: &Plan, bundle: &Bundle) -> Result<Vec<Gap>, BundleError> {
        // Every registry repository of the plan, a possible mount origin.
        let mut repositories: Vec<(String, DestinationHandle)> = Vec::new();
        for tag in &plan.tags {
            let (ImageLocation::Registry(reference), Some(entry)) =
                (&tag.job.destination, plan.entries().get(tag.job.entry))
            else {
                continue;
            };
            if repositories
                .iter()
                .any(|(name, _)| *name == reference.name())
            {
                continue;
            }
            if let Ok(handle) = self
                .registry_destination(reference, &entry.repository)
                .await
            {
                repositories.push((reference.name(), handle));
            }
        }
        let mut present: HashMap<(String, String), bool> = HashMap::new();
        let mut gaps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for tag in plan.tags.iter().filter(|t| t.state.needs_copy()) {
            let Some(name) = bundle.name_of(&tag.source) else {
                continue;
            };
            let absent = bundle.absent_blobs(&name).await?;
            if absent.is_empty() {
                continue;
            }
            let repository = match &tag.job.destination {
                ImageLocation::Registry(reference) => reference.name(),
                ImageLocation::File(file) => file.path().display().to_string(),
            };
            let handle = repositories
                .iter()
                .find(|(name, _)| *name == repository)
                .map(|(_, handle)| handle.clone());
            for blob in absent {
                let digest = blob.digest().to_string();
                let key = (repository.clone(), digest.clone());
                let found = match present.get(&key) {
                    Some(known) => *known,
                    None => {
                        let found = match &handle {
                            Some(handle) => {
                                held_or_mounted(handle, &blob, &repository, &repositories).await
                            }
                            None => false,
                        };
                        present.insert(key, found);
                        found
                    }
                };
                if !found {
                    gaps.entry(repository.clone()).or_default().insert(digest);
                }
            }
        }
        Ok(gaps
            .into_iter()
            .map(|(repository, digests)| Gap {
                repository,
                digests: digests.into_iter().collect(),
            })
            .collect())
    }
}

/// Whether a repository holds a blob, or can be given it by a mount from
/// another repository of the run on the same registry that holds it.
async fn held_or_mounted(
    handle: &DestinationHandle,
    blob: &Descriptor,
    repository: &str,
    repositories: &[(String, DestinationHandle)],
) -> bool {
    if handle.endpoint.blob_exists(blob).await.unwrap_or(false) {
        return true;
    }
    for (other, origin_handle) in repositories {
        if other == repository {
            continue;
        }
        let Some(origin) = origin_handle.endpoint.location() else {
            continue;
        };
        if !handle.endpoint.can_mount_from(&origin)
            || !origin_handle
                .endpoint
                .blob_exists(blob)
                .await
                .unwrap_or(false)
        {
            continue;
        }
        if let Ok(Mount::Mounted) = handle.endpoint.mount_blob(blob, &origin).await {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn have_files_skip_comments_and_blank_lines() {
        let text = format!("# what the far side holds\n\n{A}\n  {B}  # a layer\n{A}\n");
        let parsed = parse_have(&text, Path::new("b.tar.have")).unwrap();
        assert_eq!(
            parsed.into_iter().collect::<Vec<_>>(),
            vec![A.to_owned(), B.to_owned()]
        );
        assert!(parse_have("", Path::new("x")).unwrap().is_empty());
    }

    #[test]
    fn a_bad_digest_is_named_with_its_line() {
        let text = format!("{A}\n# fine\nsha256:nothex\n");
        let error = parse_have(&text, Path::new("b.tar.have")).unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with("b.tar.have:3: "), "{message}");
        assert!(message.contains("sha256:nothex"), "{message}");
        assert!(error.is_usage());
        let error = parse_have("md5:abc\n", Path::new("h")).unwrap_err();
        assert!(error.to_string().starts_with("h:1: "), "{error}");
    }

    #[test]
    fn have_files_are_written_and_read_back() {
        let dir = std::env::temp_dir().join(format!("mirror-have-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = have_path(&dir.join("bundle.tar"));
        assert!(path.ends_with("bundle.tar.have"));
        let digests: BTreeSet<String> = [B.to_owned(), A.to_owned()].into();
        write_have(&path, "line one\nline two", &digests).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# line one\n# line two\n"), "{text}");
        assert_eq!(read_have(&path).unwrap(), digests);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_export_names_images_as_their_targets_do() {
        let entry = |target: Target, prefix: Option<&str>| Entry {
            from: ImageLocation::parse("python:3.10").unwrap(),
            to: None,
            target,
            prefix: prefix.map(str::to_owned),
            tags: Tags::Named,
            platforms: Vec::new(),
            repository: Default::default(),
            referrers: None,
            require_signature: None,
            origin: None,
        };
        let request = Request {
            images: vec![
                entry(Target::Registry("far:5000/base".to_owned()), Some("t/")),
                entry(Target::Ecr, None),
            ],
            log_groups: vec![crate::file::LogGroup {
                name: "g".to_owned(),
                retention_days: None,
                origin: None,
            }],
        };
        let exported = export_request(&request, Path::new("/b.tar"));
        assert!(exported.log_groups.is_empty());
        let prefixes: Vec<_> = exported
            .images
            .iter()
            .map(|e| e.prefix.clone().unwrap_or_default())
            .collect();
        assert_eq!(prefixes, vec!["base/t/".to_owned(), String::new()]);
        assert!(
            exported
                .images
                .iter()
                .all(|e| matches!(&e.target, Target::Files(f) if f.path() == Path::new("/b.tar")))
        );
    }
}
