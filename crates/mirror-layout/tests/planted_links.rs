//! Symbolic links planted where mirror reads or writes local files: in a
//! shared directory (`/tmp`) anyone can create `FILE.tmp`, `FILE.partial` or
//! `FILE.lock` before a copy runs, and a layout handed to mirror may link its
//! blobs anywhere. Nothing is ever written through such a link, and nothing
//! outside a layout is read through one.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;

use mirror_engine::{CopyError, CopyReport, Destination, Source};
use mirror_layout::{OciArchive, OciArchiveWriter, OciLayout};
use mirror_testkit::{GeneratedImage, ImageSpec, generate};

mod support;

use support::{chain, copy_dir, engine, request};

async fn copy(
    source: Arc<dyn Source>,
    destination: Arc<dyn Destination>,
    destination_reference: &str,
) -> Result<CopyReport, CopyError> {
    engine()
        .copy(request(source, "", destination, destination_reference))
        .await
}

fn image() -> GeneratedImage {
    generate(&ImageSpec::small("planted-links", 901)).expect("generating a test image")
}

async fn source(image: &GeneratedImage) -> Arc<dyn Source> {
    Arc::new(
        OciLayout::open(&image.layout)
            .await
            .expect("opening the source layout"),
    )
}

/// What refused a copy of `image` as `latest` into the destination
/// `opened`: opening it (the error with its causes) or the copy (`what`,
/// which must fail: its error).
async fn refusal<D, E>(image: &GeneratedImage, opened: Result<D, E>, what: &str) -> String
where
    D: Destination + 'static,
    E: std::error::Error,
{
    match opened {
        Err(e) => chain(&e),
        Ok(destination) => copy(source(image).await, Arc::new(destination), "latest")
            .await
            .expect_err(what)
            .to_string(),
    }
}

/// The `oci-layout` file that makes `dir` a layout.
fn write_oci_layout(dir: &Path) {
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("writing oci-layout");
}

const PRECIOUS: &[u8] = b"a file the attacker wants overwritten\n";

/// A victim file with known content, outside everything mirror writes.
fn victim(dir: &Path) -> std::path::PathBuf {
    let victim = dir.join("victim/precious.txt");
    std::fs::create_dir_all(victim.parent().expect("a parent")).expect("creating the victim dir");
    std::fs::write(&victim, PRECIOUS).expect("writing the victim file");
    victim
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// `FILE.tmp` planted as a link to another file: the commit used to write
/// the tar through it (overwriting that file) and rename the link to `FILE`.
#[tokio::test]
async fn archive_commit_does_not_write_through_a_planted_tmp_link() {
    let image = image();
    let tmp = tempfile::tempdir().expect("a temp dir");
    let victim = victim(tmp.path());
    let file = tmp.path().join("out.tar");
    symlink(&victim, tmp.path().join("out.tar.tmp")).expect("planting FILE.tmp");

    let writer = Arc::new(OciArchiveWriter::create(&file).await.expect("a writer"));
    copy(source(&image).await, writer, "latest")
        .await
        .expect("the copy");

    assert!(
        std::fs::read(&victim).expect("the victim") == PRECIOUS,
        "the file FILE.tmp linked to was overwritten"
    );
    assert!(!is_symlink(&file), "FILE became the planted link");
    let archive = OciArchive::open(&file).await.expect("the archive reads");
    assert_eq!(
        archive.find("latest").await.expect("the tag").digest,
        image.root_digest()
    );
}

/// `FILE.partial` planted as a link to another directory: the blobs went to
/// the link's target. A work directory that is a link is refused.
#[tokio::test]
async fn a_symlinked_partial_directory_is_refused() {
    let image = image();
    let tmp = tempfile::tempdir().expect("a temp dir");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("creating the link's target");
    let file = tmp.path().join("out.tar");
    symlink(&elsewhere, tmp.path().join("out.tar.partial")).expect("planting FILE.partial");

    let refused = refusal(
        &image,
        OciArchiveWriter::create(&file).await,
        "a copy through a planted FILE.partial",
    )
    .await;
    assert!(
        refused.contains("out.tar.partial") && refused.contains("symbolic link"),
        "{refused}"
    );
    assert_eq!(
        std::fs::read_dir(&elsewhere).expect("the target").count(),
        0,
        "something was written through the planted FILE.partial"
    );
    assert!(!file.exists());

    // Links inside a work directory are refused too: `blobs/` of a real
    // FILE.partial pointing elsewhere.
    std::fs::remove_file(tmp.path().join("out.tar.partial")).expect("removing the link");
    let partial = tmp.path().join("out.tar.partial");
    std::fs::create_dir(&partial).expect("a real FILE.partial");
    write_oci_layout(&partial);
    symlink(&elsewhere, partial.join("blobs")).expect("planting FILE.partial/blobs");
    let refused = refusal(
        &image,
        OciArchiveWriter::create(&file).await,
        "a copy through a planted FILE.partial/blobs",
    )
    .await;
    assert!(refused.contains("symbolic link"), "{refused}");
    assert_eq!(
        std::fs::read_dir(&elsewhere).expect("the target").count(),
        0
    );
}

/// A blob planted in `FILE.partial/blobs/sha256/` as a link to a file
/// outside: it counted as stored, and the commit copied the linked file into
/// the archive.
#[tokio::test]
async fn a_linked_blob_in_the_partial_directory_is_not_archived() {
    let image = image();
    let tmp = tempfile::tempdir().expect("a temp dir");
    let layer = image.largest_blob().expect("a layer").clone();
    // Outside, a file of the blob's size (what a size check cannot tell).
    let secret = tmp.path().join("secret");
    std::fs::write(
        &secret,
        vec![b's'; usize::try_from(layer.size()).expect("a size")],
    )
    .expect("writing the secret");
    let file = tmp.path().join("out.tar");
    let blobs = tmp.path().join("out.tar.partial/blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("a FILE.partial");
    write_oci_layout(&tmp.path().join("out.tar.partial"));
    symlink(&secret, blobs.join(layer.digest().digest())).expect("planting a blob link");

    let outcome = match OciArchiveWriter::create(&file).await {
        Err(e) => Err(chain(&e)),
        Ok(writer) => copy(source(&image).await, Arc::new(writer), "latest")
            .await
            .map_err(|e| chain(&e)),
    };
    if file.exists() {
        let bytes = std::fs::read(&file).expect("the archive");
        assert!(
            !bytes.windows(64).any(|w| w == [b's'; 64]),
            "the linked file went into the archive"
        );
    }
    let refused = outcome.expect_err("a copy with a planted blob link");
    assert!(refused.contains("symbolic link"), "{refused}");
}

/// `FILE.lock` planted as a dangling link: opening the lock file created the
/// link's target.
#[tokio::test]
async fn a_planted_lock_link_creates_nothing() {
    let image = image();
    let tmp = tempfile::tempdir().expect("a temp dir");
    let target = tmp.path().join("victim/created-by-mirror");
    std::fs::create_dir_all(target.parent().expect("a parent")).expect("the victim dir");
    let file = tmp.path().join("out.tar");
    symlink(&target, tmp.path().join("out.tar.lock")).expect("planting FILE.lock");

    let refused = refusal(
        &image,
        OciArchiveWriter::create(&file).await,
        "a copy with a planted lock link",
    )
    .await;
    assert!(
        refused.contains("out.tar.lock") && refused.contains("symbolic link"),
        "{refused}"
    );
    assert!(!target.exists(), "the lock link's target was created");

    // The same for a layout's `.mirror.lock`.
    let layout = tmp.path().join("layout");
    std::fs::create_dir(&layout).expect("a layout dir");
    symlink(&target, layout.join(".mirror.lock")).expect("planting .mirror.lock");
    let refused = refusal(
        &image,
        OciLayout::create(&layout).await,
        "a copy with a planted lock link",
    )
    .await;
    assert!(refused.contains(".mirror.lock"), "{refused}");
    assert!(!target.exists(), "the lock link's target was created");
}

/// An `oci:DIR` whose blob is a link to a file outside the layout (with the
/// right bytes, so the digest checks out): it was read and uploaded. Files
/// must be inside the layout, as archives require; a link that stays inside
/// it is read.
#[tokio::test]
async fn layout_files_linking_outside_the_layout_are_refused() {
    let image = image();
    let tmp = tempfile::tempdir().expect("a temp dir");
    let layer = image.largest_blob().expect("a layer").clone();

    for (name, case) in [
        ("a blob", "blob"),
        ("blobs/sha256", "dir"),
        ("index.json", "index"),
    ] {
        let dir = tmp.path().join(format!("linked-{case}"));
        copy_dir(&image.layout, &dir);
        let outside = tmp.path().join(format!("outside-{case}"));
        match case {
            "blob" => {
                let blob = dir.join("blobs/sha256").join(layer.digest().digest());
                std::fs::rename(&blob, &outside).expect("moving the blob out");
                symlink(&outside, &blob).expect("linking it back");
            }
            "dir" => {
                std::fs::rename(dir.join("blobs/sha256"), &outside).expect("moving blobs out");
                symlink(&outside, dir.join("blobs/sha256")).expect("linking them back");
            }
            _ => {
                std::fs::rename(dir.join("index.json"), &outside).expect("moving index.json");
                symlink(&outside, dir.join("index.json")).expect("linking it back");
            }
        }
        let out = tmp.path().join(format!("out-{case}"));
        let refused = match OciLayout::open(&dir).await {
            Err(e) => chain(&e),
            Ok(layout) => copy(
                Arc::new(layout),
                Arc::new(OciLayout::create(&out).await.expect("a destination")),
                "latest",
            )
            .await
            .map_err(|e| chain(&e))
            .expect_err(&format!("a copy from a layout with {name} linked outside")),
        };
        assert!(refused.contains("outside the layout"), "{name}: {refused}");
        let landed = out.join("blobs/sha256").join(layer.digest().digest());
        assert!(
            !landed.exists() || case == "index",
            "{name}: the linked blob was copied"
        );
    }

    // A link that stays inside the layout is fine.
    let dir = tmp.path().join("linked-inside");
    copy_dir(&image.layout, &dir);
    let blob = dir.join("blobs/sha256").join(layer.digest().digest());
    let moved = dir.join("stored-here");
    std::fs::rename(&blob, &moved).expect("moving the blob");
    symlink("../../stored-here", &blob).expect("linking it back");
    let out = tmp.path().join("out-inside");
    copy(
        Arc::new(OciLayout::open(&dir).await.expect("the layout")),
        Arc::new(OciLayout::create(&out).await.expect("a destination")),
        "latest",
    )
    .await
    .expect("a copy from a layout linking inside itself");
}
