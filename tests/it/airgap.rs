//! `mirror sync FILE --to-archive BUNDLE` and `--from-archive BUNDLE`: a
//! fleet across an air gap with one file on both sides. Two source images
//! share their base layers; the bundle holds each blob once, the far side
//! gets the source digests, the import writes `BUNDLE.have`; a delta
//! exported against it leaves those blobs out, lands where they are, and is
//! refused (naming them, pushing nothing) where they are not.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use mirror_testkit::{GeneratedImage, ImageSpec, PushAuth, Registry};

use crate::support::{
    Mirror, Scratch, assert_landed, assert_no_manifest, image, open_registry, seed,
};

const ANON: PushAuth = PushAuth::Anonymous;
/// The base layers both images (and the changed one) are built on.
const BASE_SEED: u64 = 7_700;

fn spec(name: &str, seed: u64) -> ImageSpec {
    ImageSpec {
        base_seed: Some(BASE_SEED),
        ..ImageSpec::small(name, seed)
    }
}

/// Every entry of a tar, by name, with how many times it occurs and the
/// bytes of `index.json`.
fn tar_entries(path: &Path) -> (BTreeMap<String, usize>, serde_json::Value) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut archive = tar::Archive::new(file);
    let mut names = BTreeMap::new();
    let mut index = serde_json::Value::Null;
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("a tar entry");
        let name = entry.path().expect("a path").display().to_string();
        if name == "index.json" {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).expect("index.json");
            index = serde_json::from_slice(&bytes).expect("index.json is JSON");
        }
        *names.entry(name).or_insert(0) += 1;
    }
    (names, index)
}

fn blob_entry(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// The ref names in an archive's `index.json`.
fn ref_names(index: &serde_json::Value) -> BTreeSet<String> {
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_owned)
        .collect()
}

/// The digests of a have-file (comments and blank lines left out).
fn have_digests(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Every manifest and blob digest of an image.
fn digests_of(image: &GeneratedImage) -> BTreeSet<String> {
    std::iter::once(image.root_digest().to_string())
        .chain(image.manifests.iter().map(|(d, _)| d.digest().to_string()))
        .chain(image.blobs.iter().map(|d| d.digest().to_string()))
        .collect()
}

fn blob_digests(image: &GeneratedImage) -> BTreeSet<String> {
    image.blobs.iter().map(|d| d.digest().to_string()).collect()
}

/// The file, naming `far` as the target of both images (under `mirror/`).
fn write_file(scratch: &Scratch, name: &str, source: &Registry, far: &Registry) -> String {
    let path = scratch.path().join(name);
    std::fs::write(
        &path,
        format!(
            "defaults:\n  target: {far}/mirror\nimages:\n  - from: {src}/team/a:1\n  - from: {src}/team/b\n    tags: [\"1\"]\n",
            src = source.host(),
            far = far.host()
        ),
    )
    .expect("write the sync file");
    path.display().to_string()
}

/// One source, one far registry, two images sharing their base layers,
/// exported into one bundle and imported on the far side.
struct Fleet {
    scratch: Scratch,
    source: Registry,
    far: Registry,
    file: String,
    a: GeneratedImage,
    b: GeneratedImage,
    bundle: PathBuf,
}

impl Fleet {
    async fn new(label: &str) -> Self {
        let a = image(spec("airgap-a", 71)).await;
        let b = image(spec("airgap-b", 72)).await;
        let source = open_registry().await;
        let far = open_registry().await;
        seed(&a, &source.host(), "team/a", "1").await;
        seed(&b, &source.host(), "team/b", "1").await;
        let scratch = Scratch::new(label);
        let file = write_file(&scratch, "fleet.yaml", &source, &far);
        let bundle = scratch.path().join("bundle.tar");
        Self {
            scratch,
            source,
            far,
            file,
            a,
            b,
            bundle,
        }
    }

    /// `mirror sync FILE --to-archive BUNDLE ARGS...` on the connected side.
    async fn export(&self, bundle: &Path, extra: &[&str]) -> crate::support::Output {
        Mirror::new(["sync", self.file.as_str(), "--to-archive"])
            .arg(bundle.display().to_string())
            .args(extra.iter().copied())
            .args(["--insecure-registry", &self.source.host()])
            .run()
            .await
    }

    /// `mirror sync FILE --from-archive BUNDLE` on the far side (`file` and
    /// `registry` name it).
    async fn import(
        &self,
        file: &str,
        bundle: &Path,
        registry: &Registry,
    ) -> crate::support::Output {
        Mirror::new(["sync", file, "--from-archive"])
            .arg(bundle.display().to_string())
            .args(["--insecure-registry", &registry.host()])
            .run()
            .await
    }

    /// The full round: export, import into `far`.
    async fn full_round(&self) {
        self.export(&self.bundle, &[]).await.expect_success();
        self.import(&self.file, &self.bundle, &self.far)
            .await
            .expect_success();
    }

    fn have(&self) -> PathBuf {
        self.scratch.path().join("bundle.tar.have")
    }
}

/// Two images sharing base layers: the bundle stores each blob once and
/// names the images as their target repositories (no host); imported, the
/// far side holds the source digests; `.have` lists every digest it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_stores_shared_blobs_once_and_lands_with_the_source_digests() {
    let fleet = Fleet::new("airgap-full").await;
    let out = fleet.export(&fleet.bundle, &[]).await;
    out.expect_success();
    assert!(out.stderr.contains("bundle: "), "{}", out.describe());
    let (entries, index) = tar_entries(&fleet.bundle);
    let shared: BTreeSet<String> = blob_digests(&fleet.a)
        .intersection(&blob_digests(&fleet.b))
        .cloned()
        .collect();
    assert_eq!(shared.len(), 2, "one base layer per platform is shared");
    for digest in digests_of(&fleet.a).union(&digests_of(&fleet.b)) {
        assert_eq!(
            entries.get(&blob_entry(digest)),
            Some(&1),
            "{digest} is stored exactly once: {entries:#?}"
        );
    }
    assert_eq!(
        ref_names(&index),
        BTreeSet::from(["mirror/team/a:1".to_owned(), "mirror/team/b:1".to_owned()]),
        "{index:#}"
    );
    assert!(
        !fleet.scratch.path().join("bundle.tar.exporting").exists(),
        "the staging archive was moved into place"
    );

    let out = fleet.import(&fleet.file, &fleet.bundle, &fleet.far).await;
    out.expect_success();
    assert_landed(&fleet.far.host(), "mirror/team/a", "1", &fleet.a, &ANON).await;
    assert_landed(&fleet.far.host(), "mirror/team/b", "1", &fleet.b, &ANON).await;
    let have = have_digests(&fleet.have());
    let expected: BTreeSet<String> = digests_of(&fleet.a)
        .union(&digests_of(&fleet.b))
        .cloned()
        .collect();
    assert_eq!(have, expected, "{}", out.describe());
}

/// After a full round, one image changes at the source (new layers on the
/// same base). The export with `--have` leaves out every blob the far side
/// holds (the unchanged image's, the shared base); the import into the
/// same registry lands the source digests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_leaves_out_what_the_far_side_holds_and_lands_there() {
    let fleet = Fleet::new("airgap-delta").await;
    fleet.full_round().await;
    let changed = image(spec("airgap-b-changed", 73)).await;
    seed(&changed, &fleet.source.host(), "team/b", "1").await;

    let delta = fleet.scratch.path().join("delta.tar");
    let have = fleet.have().display().to_string();
    let out = fleet.export(&delta, &["--have", &have]).await;
    out.expect_success();
    assert!(out.stderr.contains("a delta: "), "{}", out.describe());
    let (entries, index) = tar_entries(&delta);
    let held = have_digests(&fleet.have());
    let blobs_held: BTreeSet<String> = blob_digests(&fleet.a)
        .union(&blob_digests(&fleet.b))
        .cloned()
        .collect();
    for digest in &blobs_held {
        assert!(
            !entries.contains_key(&blob_entry(digest)),
            "{digest} is held at the far side and left out: {entries:#?}"
        );
    }
    let new_blobs: Vec<String> = blob_digests(&changed)
        .into_iter()
        .filter(|d| !held.contains(d))
        .collect();
    assert!(!new_blobs.is_empty());
    for digest in &new_blobs {
        assert_eq!(entries.get(&blob_entry(digest)), Some(&1), "{digest}");
    }
    // Manifests always travel: the import walks them.
    for digest in [fleet.a.root_digest(), changed.root_digest()] {
        assert!(entries.contains_key(&blob_entry(digest.as_ref())));
    }
    assert_eq!(ref_names(&index).len(), 2, "{index:#}");

    // The import's plan: the changed tag named, nothing written.
    let plan = Mirror::new(["sync", fleet.file.as_str(), "--plan", "--from-archive"])
        .arg(delta.display().to_string())
        .args(["--insecure-registry", &fleet.far.host()])
        .run()
        .await;
    plan.expect_success();
    assert!(
        plan.stdout.contains("changed") && plan.stdout.contains("up to date"),
        "{}",
        plan.describe()
    );
    assert_landed(&fleet.far.host(), "mirror/team/b", "1", &fleet.b, &ANON).await;

    let out = fleet.import(&fleet.file, &delta, &fleet.far).await;
    out.expect_success();
    assert_landed(&fleet.far.host(), "mirror/team/a", "1", &fleet.a, &ANON).await;
    assert_landed(&fleet.far.host(), "mirror/team/b", "1", &changed, &ANON).await;
    let after = have_digests(&fleet.scratch.path().join("delta.tar.have"));
    assert!(digests_of(&changed).is_subset(&after), "{}", out.describe());
}

/// The same delta into an empty registry: refused before anything is
/// pushed (exit 1), naming every blob it lacks and the repository that
/// needs it; neither tag exists there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_into_a_registry_without_its_blobs_is_refused_naming_them() {
    let fleet = Fleet::new("airgap-refused").await;
    fleet.full_round().await;
    let changed = image(spec("airgap-b-changed", 73)).await;
    seed(&changed, &fleet.source.host(), "team/b", "1").await;
    let delta = fleet.scratch.path().join("delta.tar");
    let have = fleet.have().display().to_string();
    fleet
        .export(&delta, &["--have", &have])
        .await
        .expect_success();

    let fresh = open_registry().await;
    let file = write_file(&fleet.scratch, "fresh.yaml", &fleet.source, &fresh);
    let out = fleet.import(&file, &delta, &fresh).await;
    out.expect_code(1);
    out.expect_error_line();
    let lacking: BTreeSet<String> = blob_digests(&fleet.a)
        .union(
            &blob_digests(&fleet.b)
                .intersection(&blob_digests(&changed))
                .cloned()
                .collect(),
        )
        .cloned()
        .collect();
    for digest in &lacking {
        assert!(
            out.stderr.contains(digest.as_str()),
            "{digest} is named\n{}",
            out.describe()
        );
    }
    for repository in ["mirror/team/a", "mirror/team/b"] {
        assert!(
            out.stderr
                .contains(&format!("{}/{repository}", fresh.host())),
            "{repository} is named\n{}",
            out.describe()
        );
        assert_no_manifest(&fresh.host(), repository, "1", &ANON).await;
    }
    assert!(out.stderr.contains("without --have"), "{}", out.describe());
    assert!(
        !fleet.scratch.path().join("delta.tar.have").exists(),
        "a refused import writes no have-file"
    );
}

/// Regression: an export resumes from `BUNDLE.exporting`, and one left by
/// a delta export that failed (its images there without the blobs it left
/// out) made a later full export count them as done and ship a bundle
/// without them. It is started afresh instead, and the bundle is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_export_does_not_resume_from_a_failed_delta() {
    let fleet = Fleet::new("airgap-stale").await;
    fleet.full_round().await;
    let broken = fleet.scratch.path().join("broken.yaml");
    let text = std::fs::read_to_string(&fleet.file).expect("the file");
    std::fs::write(
        &broken,
        format!("{text}  - from: {}/team/missing:1\n", fleet.source.host()),
    )
    .expect("write");
    let delta = fleet.scratch.path().join("delta.tar");
    let out = Mirror::new(["sync", &broken.display().to_string(), "--to-archive"])
        .arg(delta.display().to_string())
        .args(["--have", &fleet.have().display().to_string()])
        .args(["--insecure-registry", &fleet.source.host()])
        .run()
        .await;
    out.expect_code(1);
    assert!(!delta.exists(), "a failed export writes no bundle");
    assert!(fleet.scratch.path().join("delta.tar.exporting").exists());

    let out = fleet.export(&delta, &[]).await;
    out.expect_success();
    assert!(out.stderr.contains("afresh"), "{}", out.describe());
    let (entries, _) = tar_entries(&delta);
    for digest in digests_of(&fleet.a).union(&digests_of(&fleet.b)) {
        assert!(entries.contains_key(&blob_entry(digest)), "{digest}");
    }
    let fresh = open_registry().await;
    let file = write_file(&fleet.scratch, "fresh.yaml", &fleet.source, &fresh);
    fleet.import(&file, &delta, &fresh).await.expect_success();
    assert_landed(&fresh.host(), "mirror/team/a", "1", &fleet.a, &ANON).await;
}

/// Flags that only mean something together are usage errors (exit 2)
/// before anything is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn air_gap_flags_out_of_place_are_usage_errors() {
    let scratch = Scratch::new("airgap-flags");
    let file = scratch.path().join("fleet.yaml");
    std::fs::write(&file, "images:\n  - from: localhost:1/a:1\n").expect("write");
    let file = file.display().to_string();
    for (args, says) in [
        (vec!["--have", "x.have"], "--to-archive"),
        (vec!["--write-have", "x.have"], "--from-archive"),
        (vec!["--to-archive", "b.tar", "--plan"], "--plan"),
        (
            vec!["--to-archive", "b.tar", "--from-archive", "b.tar"],
            "--from-archive",
        ),
    ] {
        let out = Mirror::new(["sync", file.as_str()]).args(args).run().await;
        out.expect_code(2);
        assert!(out.stderr.contains(says), "{}", out.describe());
    }
    let bad = scratch.path().join("bad.have");
    std::fs::write(&bad, "# fine\nsha256:short\n").expect("write");
    let out = Mirror::new(["sync", file.as_str(), "--to-archive", "b.tar", "--have"])
        .arg(bad.display().to_string())
        .run()
        .await;
    out.expect_code(2);
    assert!(
        out.stderr.contains(&format!("{}:2:", bad.display())),
        "the bad line is named\n{}",
        out.describe()
    );
}
