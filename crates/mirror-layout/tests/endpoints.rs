//! OCI layouts and archives through the real engine: digests preserved, blobs
//! shared, skopeo agreeing in both directions, hostile archives refused,
//! corrupt sources never committed, interrupted exports resumed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use mirror_engine::{
    CopyError, CopyOptions, CopyReport, CopyRequest, Destination, EndpointError, Engine, Resolved,
    Source,
};
use mirror_layout::{
    DockerArchive, FileLocation, LayoutError, OciArchive, OciArchiveWriter, OciLayout, list,
};
use mirror_oci::{BlobStream, Descriptor, Digest, RawManifest, StreamError};
use mirror_testkit::{
    GeneratedImage, ImageSpec, RawEntry, TarEntry, blob_entry_name, generate, write_raw_tar,
};

mod support;

use support::{chain, copy_dir, engine, request};

// ---------------------------------------------------------------- helpers

async fn copy_with(
    engine: &Engine,
    source: Arc<dyn Source>,
    source_reference: &str,
    destination: Arc<dyn Destination>,
    destination_reference: &str,
) -> Result<CopyReport, CopyError> {
    let request = request(source, source_reference, destination, destination_reference);
    engine.copy(request).await
}

async fn copy(
    source: Arc<dyn Source>,
    source_reference: &str,
    destination: Arc<dyn Destination>,
    destination_reference: &str,
) -> Result<CopyReport, CopyError> {
    copy_with(
        &engine(),
        source,
        source_reference,
        destination,
        destination_reference,
    )
    .await
}

/// [`copy`], expected to succeed.
async fn copy_ok(
    source: Arc<dyn Source>,
    source_reference: &str,
    destination: Arc<dyn Destination>,
    destination_reference: &str,
) -> CopyReport {
    copy(source, source_reference, destination, destination_reference)
        .await
        .expect("the copy succeeds")
}

fn image(spec: ImageSpec) -> GeneratedImage {
    generate(&spec).expect("generating a test image")
}

async fn layout(path: &Path) -> Arc<OciLayout> {
    Arc::new(OciLayout::open(path).await.expect("opening a layout"))
}

/// A layout destination at `path`, made if absent.
async fn new_layout(path: &Path) -> Arc<OciLayout> {
    Arc::new(OciLayout::create(path).await.expect("creating a layout"))
}

/// An oci-archive destination at `path`, added to if it exists.
async fn new_archive(path: &Path) -> Arc<OciArchiveWriter> {
    Arc::new(
        OciArchiveWriter::create(path)
            .await
            .expect("creating an oci-archive"),
    )
}

/// [`copy_ok`] of the only image of `src`'s layout into the layout at `dir`.
async fn into_layout(src: &GeneratedImage, dir: &Path, tag: &str) -> CopyReport {
    copy_ok(layout(&src.layout).await, "", new_layout(dir).await, tag).await
}

/// [`copy_ok`] of the only image of `src`'s layout into the oci-archive `file`.
async fn into_archive(src: &GeneratedImage, file: &Path, tag: &str) -> CopyReport {
    copy_ok(layout(&src.layout).await, "", new_archive(file).await, tag).await
}

/// Every blob file of a layout (name -> size), checking that each hashes to
/// its name and that no temporary file is left.
fn blobs_of(root: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let dir = root.join("blobs/sha256");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return out;
    };
    for entry in entries {
        let entry = entry.expect("reading a layout's blobs");
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".tmp-"),
            "temporary file left: {}",
            entry.path().display()
        );
        let bytes = std::fs::read(entry.path()).expect("reading a layout's blobs");
        assert_eq!(
            mirror_oci::digest_of(&bytes).digest(),
            name,
            "blob {name} does not hash to its name"
        );
        out.insert(name, bytes.len() as u64);
    }
    out
}

/// Waits (up to 5 s) for the blob tasks a failed copy aborted to drop their
/// temporary files, and returns what is left.
async fn settle(root: &Path) -> Vec<PathBuf> {
    for _ in 0..50 {
        if temp_files(root).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    temp_files(root)
}

fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in [root.to_owned(), root.join("blobs/sha256")] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    found.push(entry.path());
                }
            }
        }
    }
    found
}

/// index.json entries as (ref name, digest).
fn index_of(root: &Path) -> Vec<(Option<String>, String)> {
    let Ok(bytes) = std::fs::read(root.join("index.json")) else {
        return Vec::new();
    };
    let index: serde_json::Value = serde_json::from_slice(&bytes).expect("reading index.json");
    index["manifests"]
        .as_array()
        .expect("reading index.json")
        .iter()
        .map(|m| {
            (
                m.pointer("/annotations/org.opencontainers.image.ref.name")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                m["digest"].as_str().expect("reading index.json").to_owned(),
            )
        })
        .collect()
}

/// The blob names of an archive (hex), checking none appears twice.
fn archive_blobs(path: &Path) -> BTreeSet<String> {
    mirror_testkit::archive_blobs(path)
        .expect("reading an archive's blobs")
        .iter()
        .map(|digest| digest.trim_start_matches("sha256:").to_owned())
        .collect()
}

fn tar_entries(path: &Path) -> Vec<TarEntry> {
    mirror_testkit::tar_entries(path).expect("reading a tar")
}

fn largest_layer(image: &GeneratedImage) -> Descriptor {
    image.largest_blob().cloned().expect("an image has layers")
}

fn smallest_layer(image: &GeneratedImage) -> Descriptor {
    image.smallest_blob().cloned().expect("an image has layers")
}

/// Runs skopeo; its stdout.
async fn skopeo(args: &[&str]) -> Vec<u8> {
    mirror_testkit::skopeo(args).await.expect("skopeo")
}

/// `skopeo copy --all --preserve-digests FROM TO`.
async fn skopeo_copy(from: impl AsRef<str>, to: impl AsRef<str>) {
    mirror_testkit::skopeo_copy(from.as_ref(), to.as_ref())
        .await
        .expect("skopeo copy");
}

// ------------------------------------------------------------ oci: layouts

#[tokio::test]
async fn layout_to_layout_preserves_every_digest() {
    for spec in [
        ImageSpec::small("layout-copy", 101).with_attestations(),
        ImageSpec::small("layout-copy-docker", 102).docker(),
        ImageSpec::single_layer("layout-copy-single", 70_000),
    ] {
        let src = image(spec);
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let destination = new_layout(&out).await;
        let report = copy_ok(layout(&src.layout).await, "", destination.clone(), "v1").await;
        assert_eq!(report.digest, src.root_digest());
        assert_eq!(blobs_of(&out), blobs_of(&src.layout));
        assert_eq!(
            index_of(&out),
            vec![(Some("v1".to_owned()), src.root_digest().to_string())]
        );
        assert!(out.join("oci-layout").is_file());

        // A warm re-run is one lookup per side.
        let again = copy_ok(layout(&src.layout).await, "latest", destination, "v1").await;
        assert!(again.up_to_date);

        // What we wrote reads back as a source, by tag, by digest and as the only image.
        let back = layout(&out).await;
        for reference in ["v1", "", "@0", src.root_digest().as_ref()] {
            let resolved = back.find(reference).await.unwrap();
            assert_eq!(resolved.digest, src.root_digest(), "{reference}");
        }
    }
}

#[tokio::test]
async fn unknown_and_ambiguous_tags_list_the_names() {
    let a = image(ImageSpec::small("names-a", 111));
    let b = image(ImageSpec::small("names-b", 112));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("many");
    let destination = new_layout(&out).await;
    copy_ok(layout(&a.layout).await, "", destination.clone(), "a").await;
    copy_ok(layout(&b.layout).await, "", destination.clone(), "b").await;
    let source = layout(&out).await;
    let err = source.find("c").await.unwrap_err();
    assert!(matches!(err, LayoutError::UnknownTag { .. }));
    assert!(err.to_string().contains("it has: a, b"), "{err}");
    let err = source.find("").await.unwrap_err();
    assert!(err.to_string().contains("holds 2 images"), "{err}");
    assert!(err.to_string().contains(":TAG (tags: a, b)"), "{err}");

    // Through the engine the message survives (as a cause).
    let err = copy(source, "nope", destination, "x").await.unwrap_err();
    assert!(chain(&err).contains("it has: a, b"), "{}", chain(&err));

    let listed = list(
        &FileLocation::parse(&format!("oci:{}", out.display()))
            .unwrap()
            .expect("a file location"),
    )
    .await
    .unwrap();
    let names: Vec<_> = listed.iter().map(|(n, _)| n.clone().unwrap()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(listed[0].1.digest(), &a.root_digest());
}

#[tokio::test]
async fn destinations_refuse_what_they_must_not_touch() {
    let tmp = tempfile::tempdir().unwrap();
    let busy = tmp.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    let err = OciLayout::create(&busy).await.unwrap_err();
    assert!(err.to_string().contains("not an OCI layout"), "{err}");
    let err = OciLayout::open(tmp.path().join("absent"))
        .await
        .unwrap_err();
    assert!(matches!(err, LayoutError::NotALayout { .. }), "{err}");

    let src = image(ImageSpec::small("refuse", 121));
    let destination = Arc::new(OciLayout::create(tmp.path().join("t")).await.unwrap());
    let err = copy(layout(&src.layout).await, "", destination, "bad tag")
        .await
        .unwrap_err();
    assert!(chain(&err).contains("not a valid tag"), "{}", chain(&err));

    let std_error = std::io::Error::from_raw_os_error(28);
    assert!(mirror_layout::is_storage_full(&std_error));
}

#[tokio::test]
async fn a_dry_run_writes_nothing() {
    let src = image(ImageSpec::small("dry-run", 141));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dir");
    let file = tmp.path().join("file.tar");
    let destinations: [Arc<dyn Destination>; 2] =
        [new_layout(&dir).await, new_archive(&file).await];
    for destination in destinations {
        let request = CopyRequest {
            source_label: "src".to_owned(),
            destination_label: destination.name(),
            source: layout(&src.layout).await,
            source_reference: String::new(),
            destination,
            destination_reference: "latest".to_owned(),
            options: CopyOptions {
                dry_run: true,
                ..CopyOptions::default()
            },
        };
        let report = engine().copy(request).await.unwrap();
        assert_eq!(report.blobs.copied, src.blobs.len() as u64);
    }
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn stale_temporary_files_are_removed_on_open() {
    let src = image(ImageSpec::small("stale", 131));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    into_layout(&src, &out, "latest").await;
    let dead = out.join("blobs/sha256/.tmp-abc-999999999-0");
    let live = out.join(format!("blobs/sha256/.tmp-abc-{}-0", std::process::id()));
    std::fs::write(&dead, "half").unwrap();
    std::fs::write(&live, "in use").unwrap();
    OciLayout::create(&out).await.unwrap();
    assert!(!dead.exists(), "a dead writer's temp file is removed");
    assert!(live.exists(), "this process's temp files are left alone");
    std::fs::remove_file(live).unwrap();
}

// ---------------------------------------------------------- oci-archive

#[tokio::test]
async fn layout_archive_layout_round_trip() {
    let src = image(ImageSpec::small("archive-trip", 201).with_attestations());
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("image.tar");
    let writer = new_archive(&file).await;
    copy_ok(layout(&src.layout).await, "", writer.clone(), "v1").await;
    assert!(file.is_file());
    assert!(!writer.partial_path().exists(), "partial dir removed");

    let entries = tar_entries(&file);
    assert_eq!(entries[0].name, "oci-layout");
    assert_eq!(entries[1].name, "index.json");
    let files: Vec<_> = entries.iter().filter(|e| e.kind.is_file()).collect();
    assert!(
        files.iter().all(|e| e.mode == 0o644 && e.mtime == 0),
        "{files:?}"
    );
    let blob_names: Vec<_> = files.iter().skip(2).map(|e| e.name.clone()).collect();
    let mut sorted = blob_names.clone();
    sorted.sort();
    assert_eq!(blob_names, sorted, "blobs in name order");
    assert_eq!(
        archive_blobs(&file),
        blobs_of(&src.layout).into_keys().collect()
    );

    // Deterministic: the same content gives the same bytes.
    let file2 = tmp.path().join("again.tar");
    into_archive(&src, &file2, "v1").await;
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(&file2).unwrap()
    );

    // And back out.
    let archive = Arc::new(OciArchive::open(&file).await.unwrap());
    assert_eq!(archive.find("v1").await.unwrap().digest, src.root_digest());
    let out = tmp.path().join("out");
    copy_ok(archive, "v1", new_layout(&out).await, "v1").await;
    assert_eq!(blobs_of(&out), blobs_of(&src.layout));

    // A warm re-run into the archive writes nothing.
    let again = into_archive(&src, &file, "v1").await;
    assert!(again.up_to_date);
}

#[tokio::test]
async fn two_images_share_blobs_once_in_a_layout_and_an_archive() {
    // The same layers and configs under OCI and Docker manifests.
    let a = image(ImageSpec::small("shared", 211));
    let b = image(ImageSpec::small("shared", 211).docker());
    assert_ne!(a.root_digest(), b.root_digest());
    let a_blobs: BTreeSet<_> = a.blobs.iter().map(|d| d.digest().to_string()).collect();
    let b_blobs: BTreeSet<_> = b.blobs.iter().map(|d| d.digest().to_string()).collect();
    assert_eq!(
        a_blobs, b_blobs,
        "the generator shares every layer and config"
    );
    let union: BTreeSet<String> = blobs_of(&a.layout)
        .into_keys()
        .chain(blobs_of(&b.layout).into_keys())
        .collect();

    let tmp = tempfile::tempdir().unwrap();
    // Layout: one after the other; the second copies no layer.
    let out = tmp.path().join("layout");
    let destination = new_layout(&out).await;
    copy_ok(layout(&a.layout).await, "", destination.clone(), "oci").await;
    let second = copy_ok(layout(&b.layout).await, "", destination, "docker").await;
    assert_eq!(second.blobs.copied, 0, "{second:?}");
    assert_eq!(second.blobs.skipped, a_blobs.len() as u64);
    assert_eq!(blobs_of(&out).into_keys().collect::<BTreeSet<_>>(), union);
    assert_eq!(
        index_of(&out),
        vec![
            (Some("oci".to_owned()), a.root_digest().to_string()),
            (Some("docker".to_owned()), b.root_digest().to_string()),
        ]
    );

    // Archive: both at once into one writer.
    let file = tmp.path().join("both.tar");
    let writer = new_archive(&file).await;
    let engine = engine();
    let (ra, rb) = tokio::join!(
        copy_with(&engine, layout(&a.layout).await, "", writer.clone(), "oci"),
        copy_with(
            &engine,
            layout(&b.layout).await,
            "",
            writer.clone(),
            "docker"
        ),
    );
    ra.unwrap();
    rb.unwrap();
    assert_eq!(archive_blobs(&file), union);
    let names: BTreeSet<_> = OciArchive::open(&file)
        .await
        .unwrap()
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n.unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["oci".to_owned(), "docker".to_owned()])
    );

    // Archive: a second run adds to an existing file and keeps what it holds.
    let file = tmp.path().join("merged.tar");
    into_archive(&a, &file, "oci").await;
    let second = into_archive(&b, &file, "docker").await;
    assert_eq!(
        second.blobs.copied, 0,
        "blobs in the existing archive are skipped"
    );
    assert_eq!(archive_blobs(&file), union);
    let archive = OciArchive::open(&file).await.unwrap();
    assert_eq!(archive.find("oci").await.unwrap().digest, a.root_digest());
    assert_eq!(
        archive.find("docker").await.unwrap().digest,
        b.root_digest()
    );
    // Re-tagging replaces only that name.
    into_archive(&b, &file, "oci").await;
    let archive = OciArchive::open(&file).await.unwrap();
    assert_eq!(archive.find("oci").await.unwrap().digest, b.root_digest());
    assert_eq!(
        archive.find("docker").await.unwrap().digest,
        b.root_digest()
    );
    assert_eq!(archive.list().await.unwrap().len(), 2);
}

/// python:3.10-slim-buster-shaped variants (7 platforms, ~230 MB each, the
/// same base layers): one archive stores the base layers once, multi-chunk
/// blobs stream out of the tar by offset, and everything reads back intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_like_variants_share_base_layers_in_one_archive() {
    let (a, b) = tokio::task::spawn_blocking(|| {
        (
            image(ImageSpec::python_like_variant(1)),
            image(ImageSpec::python_like_variant(2)),
        )
    })
    .await
    .unwrap();
    let a_blobs: BTreeSet<_> = a.blobs.iter().map(|d| d.digest().to_string()).collect();
    let b_blobs: BTreeSet<_> = b.blobs.iter().map(|d| d.digest().to_string()).collect();
    let shared = a_blobs.intersection(&b_blobs).count();
    assert!(shared >= 7, "the variants share their base layers");

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("python.tar");
    let writer = new_archive(&file).await;
    copy_ok(layout(&a.layout).await, "", writer.clone(), "3.10-a").await;
    let second = copy_ok(layout(&b.layout).await, "", writer, "3.10-b").await;
    assert_eq!(second.blobs.skipped, shared as u64, "{second:?}");
    let union: BTreeSet<String> = blobs_of(&a.layout)
        .into_keys()
        .chain(blobs_of(&b.layout).into_keys())
        .collect();
    assert_eq!(archive_blobs(&file), union);

    let archive = Arc::new(OciArchive::open(&file).await.unwrap());
    let out = tmp.path().join("out");
    let destination = new_layout(&out).await;
    copy_ok(archive.clone(), "3.10-a", destination.clone(), "a").await;
    copy(archive, "3.10-b", destination, "b").await.unwrap();
    assert_eq!(blobs_of(&out).into_keys().collect::<BTreeSet<_>>(), union);
}

// ---------------------------------------------------------------- skopeo

#[tokio::test]
async fn skopeo_reads_what_we_write() {
    let src = image(ImageSpec::small("skopeo-reads", 301).with_attestations());
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("ours.tar");
    into_archive(&src, &file, "v1").await;
    let archive_ref = format!("oci-archive:{}:v1", file.display());
    let raw = skopeo(&["inspect", "--raw", &archive_ref]).await;
    assert_eq!(
        mirror_oci::digest_of(&raw),
        src.root_digest(),
        "skopeo sees our root"
    );
    let out = tmp.path().join("skopeo-out");
    let out_ref = format!("oci:{}:v1", out.display());
    skopeo_copy(archive_ref, out_ref).await;
    assert_eq!(blobs_of(&out), blobs_of(&src.layout));

    // A layout we wrote, too.
    let dir = tmp.path().join("ours");
    into_layout(&src, &dir, "v2").await;
    let raw = skopeo(&["inspect", "--raw", &format!("oci:{}:v2", dir.display())]).await;
    assert_eq!(mirror_oci::digest_of(&raw), src.root_digest());
}

#[tokio::test]
async fn we_read_what_skopeo_writes() {
    let src = image(ImageSpec::small("skopeo-writes", 311));
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("skopeo.tar");
    skopeo_copy(
        format!("oci:{}:latest", src.layout.display()),
        format!("oci-archive:{}:example.com/app:1.0", file.display()),
    )
    .await;
    let archive = Arc::new(OciArchive::open(&file).await.unwrap());
    let listed = archive.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0.as_deref(), Some("example.com/app:1.0"));
    let out = tmp.path().join("out");
    let location = FileLocation::parse(&format!("oci:{}:example.com/app:1.0", out.display()))
        .unwrap()
        .expect("a file location");
    let report = copy_ok(
        archive,
        "example.com/app:1.0",
        mirror_layout::open_destination(&location).await.unwrap(),
        &location.reference(),
    )
    .await;
    assert_eq!(report.digest, src.root_digest());
    assert_eq!(blobs_of(&out), blobs_of(&src.layout));

    // skopeo's own layout directory, too.
    let dir = tmp.path().join("skopeo-dir");
    skopeo_copy(
        format!("oci:{}:latest", src.layout.display()),
        format!("oci:{}:t", dir.display()),
    )
    .await;
    assert_eq!(
        layout(&dir).await.find("t").await.unwrap().digest,
        src.root_digest()
    );
}

// ------------------------------------------------------- hostile archives

/// A minimal layout (no images) plus one entry of type `kind`.
fn hostile_archive(path: &Path, name: &str, kind: u8, link: &str) {
    let hostile = match kind {
        b'0' => RawEntry::file(name, &b"x"[..]),
        kind => RawEntry {
            link: link.to_owned(),
            ..RawEntry::of_kind(name, tar::EntryType::new(kind))
        },
    };
    write_raw_tar(
        path,
        &[
            RawEntry::file("oci-layout", &br#"{"imageLayoutVersion":"1.0.0"}"#[..]),
            RawEntry::file("index.json", &br#"{"schemaVersion":2,"manifests":[]}"#[..]),
            hostile,
        ],
    )
    .expect("writing a test archive");
}

#[tokio::test]
async fn hostile_archives_are_refused_naming_the_entry() {
    let hex = mirror_oci::digest_of(b"x").digest().to_owned();
    let blob = format!("blobs/sha256/{hex}");
    let cases: Vec<(String, u8, &str, &str)> = vec![
        ("../x".to_owned(), b'0', "", "`..` component"),
        ("blobs/../../x".to_owned(), b'0', "", "`..` component"),
        ("/etc/x".to_owned(), b'0', "", "absolute path"),
        (blob.clone(), b'2', "/etc/passwd", "symbolic link"),
        (blob.clone(), b'1', "index.json", "hard link"),
        ("index.json2".to_owned(), b'3', "", "not a regular file"),
        (blob.clone(), b'6', "", "not a regular file"),
        (
            "blobs/sha256/not-a-digest".to_owned(),
            b'0',
            "",
            "not a blob name",
        ),
        (
            format!("blobs/sha256/{}", hex.to_uppercase()),
            b'0',
            "",
            "not a blob name",
        ),
        (
            format!("blobs/md5/{}", &hex[..32]),
            b'0',
            "",
            "not a blob name",
        ),
        (
            "blobs/sha256/x/".to_owned(),
            b'5',
            "",
            "unexpected directory",
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (i, (name, kind, link, why)) in cases.iter().enumerate() {
        let path = tmp.path().join(format!("hostile-{i}.tar"));
        hostile_archive(&path, name, *kind, link);
        let err = OciArchive::open(&path).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, LayoutError::HostileEntry { .. }),
            "{name}: {text}"
        );
        assert!(text.contains(&format!("`{name}`")), "{name}: {text}");
        assert!(text.contains(why), "{name}: {text}");
        // Nor is it merged into.
        let err = OciArchiveWriter::create(&path).await.unwrap_err();
        assert!(err.to_string().contains("refusing archive entry"), "{err}");
    }

    // A link outside blobs/ (docker save's legacy layer paths) is never
    // followed and does no harm.
    let path = tmp.path().join("legacy-link.tar");
    hostile_archive(&path, "abc/layer.tar", b'2', "../blobs/sha256/x");
    assert!(OciArchive::open(&path).await.is_ok());

    // Not a tar, not a layout.
    let path = tmp.path().join("garbage.tar");
    std::fs::write(&path, vec![7u8; 2048]).unwrap();
    assert!(OciArchive::open(&path).await.is_err());
}

// ----------------------------------------------- failures and resumption

#[tokio::test]
async fn a_corrupt_source_blob_fails_and_commits_nothing() {
    let src = image(ImageSpec::small("corrupt", 401));
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad-source");
    copy_dir(&src.layout, &bad);
    let victim = largest_layer(&src);
    let path = src.blob_path(victim.digest());
    let path = bad.join(path.strip_prefix(&src.layout).unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let out = tmp.path().join("out");
    let err = copy(layout(&bad).await, "", new_layout(&out).await, "latest")
        .await
        .unwrap_err();
    assert!(
        chain(&err).contains("does not match its digest"),
        "{}",
        chain(&err)
    );
    let left = settle(&out).await;
    assert!(left.is_empty(), "{left:?}");
    assert!(index_of(&out).is_empty(), "no index.json entry");
    assert!(!blobs_of(&out).contains_key(victim.digest().digest()));

    let file = tmp.path().join("out.tar");
    let writer = new_archive(&file).await;
    copy(layout(&bad).await, "", writer.clone(), "latest")
        .await
        .unwrap_err();
    assert!(!file.exists(), "no archive is written");
    assert!(settle(writer.partial_path()).await.is_empty());
    assert!(!blobs_of(writer.partial_path()).contains_key(victim.digest().digest()));
}

/// A source that misbehaves on one blob.
struct Faulty {
    inner: OciLayout,
    victim: Digest,
    hang: bool,
}

#[async_trait]
impl Source for Faulty {
    fn name(&self) -> String {
        Source::name(&self.inner)
    }

    async fn resolve(&self, reference: &str) -> Result<Option<Resolved>, EndpointError> {
        self.inner.resolve(reference).await
    }

    async fn manifest(&self, digest: &Digest) -> Result<RawManifest, EndpointError> {
        self.inner.manifest(digest).await
    }

    async fn blob(&self, descriptor: &Descriptor) -> Result<BlobStream, EndpointError> {
        let stream = self.inner.blob(descriptor).await?;
        if descriptor.digest() != &self.victim {
            return Ok(stream);
        }
        let first = stream.take(1);
        if self.hang {
            return Ok(first.chain(futures::stream::pending()).boxed());
        }
        let digest = descriptor.digest().clone();
        let expected = descriptor.size();
        let fail = futures::stream::once(async move {
            // Late, so that the other blobs complete first.
            tokio::time::sleep(Duration::from_millis(300)).await;
            Err(StreamError::TooLong { digest, expected })
        });
        Ok(first.chain(fail).boxed())
    }
}

async fn faulty(image: &GeneratedImage, victim: &Descriptor, hang: bool) -> Arc<dyn Source> {
    Arc::new(Faulty {
        inner: OciLayout::open(&image.layout)
            .await
            .expect("opening the source layout"),
        victim: victim.digest().clone(),
        hang,
    })
}

#[tokio::test]
async fn an_interrupted_export_keeps_verified_blobs_and_resumes() {
    let src = image(ImageSpec::small("resume", 501));
    let victim = smallest_layer(&src);
    let tmp = tempfile::tempdir().unwrap();

    // Layout: the source fails on one blob.
    let out = tmp.path().join("out");
    let err = copy(
        faulty(&src, &victim, false).await,
        "",
        new_layout(&out).await,
        "latest",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains(victim.digest().as_ref()), "{err}");
    assert!(settle(&out).await.is_empty());
    let kept = blobs_of(&out);
    assert!(!kept.is_empty(), "verified blobs are kept");
    assert!(!kept.contains_key(victim.digest().digest()));
    assert!(index_of(&out).is_empty());
    let report = into_layout(&src, &out, "latest").await;
    assert!(report.blobs.skipped > 0, "{report:?}");
    assert_eq!(blobs_of(&out), blobs_of(&src.layout));
    assert_eq!(index_of(&out).len(), 1);

    // Archive: the same, resumed from FILE.partial by a new writer.
    let file = tmp.path().join("out.tar");
    let writer = new_archive(&file).await;
    let partial = writer.partial_path().to_owned();
    copy(faulty(&src, &victim, false).await, "", writer, "latest")
        .await
        .unwrap_err();
    assert!(!file.exists());
    assert!(settle(&partial).await.is_empty());
    assert!(
        !blobs_of(&partial).is_empty(),
        "verified blobs kept in FILE.partial"
    );
    let report = into_archive(&src, &file, "latest").await;
    assert!(report.blobs.skipped > 0, "{report:?}");
    assert!(!partial.exists());
    assert_eq!(
        archive_blobs(&file),
        blobs_of(&src.layout).into_keys().collect()
    );
}

#[tokio::test]
async fn a_dropped_copy_leaves_no_partial_files() {
    let src = image(ImageSpec::small("dropped", 511));
    let victim = largest_layer(&src);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let engine = engine();
    let copying = copy_with(
        &engine,
        faulty(&src, &victim, true).await,
        "",
        new_layout(&out).await,
        "latest",
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(2), copying)
            .await
            .is_err(),
        "the hanging copy is cut off"
    );
    // The aborted blob tasks drop their temp files.
    let left = settle(&out).await;
    assert!(left.is_empty(), "{left:?}");
    assert!(!blobs_of(&out).contains_key(victim.digest().digest()));
    assert!(index_of(&out).is_empty());
    into_layout(&src, &out, "latest").await;
    assert_eq!(blobs_of(&out), blobs_of(&src.layout));
}

// ------------------------------------------------------- docker-archive

/// A `docker save`-style archive of a generated single-platform image: one
/// layer gzipped as generated, one uncompressed, one reached by a symlink.
fn docker_save(image: &GeneratedImage, path: &Path) -> (Vec<u8>, Vec<Vec<u8>>) {
    let root = image
        .read_blob(image.root.digest())
        .expect("writing a docker-archive");
    let manifest: serde_json::Value =
        serde_json::from_slice(&root).expect("writing a docker-archive");
    let config_digest: Digest = manifest["config"]["digest"]
        .as_str()
        .expect("writing a docker-archive")
        .parse()
        .expect("writing a docker-archive");
    let mut config: serde_json::Value = serde_json::from_slice(
        &image
            .read_blob(&config_digest)
            .expect("writing a docker-archive"),
    )
    .expect("writing a docker-archive");
    let gz_digest: Digest = manifest["layers"][0]["digest"]
        .as_str()
        .expect("writing a docker-archive")
        .parse()
        .expect("writing a docker-archive");
    let gz_layer = image
        .read_blob(&gz_digest)
        .expect("writing a docker-archive");
    // An uncompressed layer: a tar of one file.
    let mut plain = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(5);
    header.set_mode(0o644);
    header.set_cksum();
    plain
        .append_data(&mut header, "hello.txt", &b"hello"[..])
        .expect("writing a docker-archive");
    let plain_layer = plain.into_inner().expect("writing a docker-archive");
    // The config names three layers: the generated one and the plain one twice.
    let plain_diff_id = mirror_oci::digest_of(&plain_layer).to_string();
    let first = config["rootfs"]["diff_ids"][0].clone();
    config["rootfs"]["diff_ids"] = serde_json::json!([first, plain_diff_id, plain_diff_id]);
    let config = serde_json::to_vec(&config).expect("writing a docker-archive");

    let mut builder =
        tar::Builder::new(std::fs::File::create(path).expect("writing a docker-archive"));
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, bytes)
            .expect("writing a docker-archive");
    };
    let manifest_json = serde_json::json!([{
        "Config": "cfg.json",
        "RepoTags": ["example.com/app:1.0", "app:latest"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"],
    }]);
    add(
        "manifest.json",
        &serde_json::to_vec(&manifest_json).expect("writing a docker-archive"),
    );
    add("cfg.json", &config);
    add("aaa/layer.tar", &gz_layer);
    add("bbb/layer.tar", &plain_layer);
    add("ddd/real.tar", &plain_layer);
    let mut link = tar::Header::new_ustar();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    link.set_cksum();
    builder
        .append_link(&mut link, "ccc/layer.tar", "../ddd/real.tar")
        .expect("writing a docker-archive");
    builder.finish().expect("writing a docker-archive");
    (config, vec![gz_layer, plain_layer.clone(), plain_layer])
}

#[tokio::test]
async fn docker_archives_are_read_with_a_computed_manifest() {
    let src = image(ImageSpec::single_layer("docker-save", 40_000));
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("saved.tar");
    let (config, layers) = docker_save(&src, &file);

    let location = FileLocation::parse(&format!("docker-archive:{}:app:latest", file.display()))
        .unwrap()
        .expect("a file location");
    let source = mirror_layout::open_source(&location).await.unwrap();
    let out = tmp.path().join("out");
    let report = copy_ok(source, &location.reference(), new_layout(&out).await, "1.0").await;
    let written = layout(&out).await;
    let root = written.find("1.0").await.unwrap();
    assert_eq!(root.digest, report.digest);
    let manifest = Source::manifest(&*written, &root.digest).await.unwrap();
    assert_eq!(
        manifest.media_type(),
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let parsed: serde_json::Value = serde_json::from_slice(manifest.bytes()).unwrap();
    assert_eq!(
        parsed["config"]["digest"],
        mirror_oci::digest_of(&config).to_string()
    );
    let types: Vec<_> = parsed["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            mirror_layout::DOCKER_LAYER_TAR,
            mirror_layout::DOCKER_LAYER_TAR,
        ]
    );
    for (i, layer) in layers.iter().enumerate() {
        assert_eq!(
            parsed["layers"][i]["digest"],
            mirror_oci::digest_of(layer).to_string()
        );
    }
    // The same image by its other name and by index; unknown names listed.
    let archive = DockerArchive::open(&file).await.unwrap();
    for reference in [
        "example.com/app:1.0",
        "docker.io/library/app:latest",
        "@0",
        "",
    ] {
        let resolved = archive.resolve(reference).await.unwrap().unwrap();
        assert_eq!(resolved.digest, report.digest, "{reference}");
    }
    let err = archive.resolve("other:1").await.unwrap_err();
    assert!(
        err.to_string().contains("example.com/app:1.0, app:latest"),
        "{err}"
    );
    let listed = archive.list().await.unwrap();
    assert_eq!(listed.len(), 2);

    // skopeo computes its own manifest for the archive (other JSON, so
    // another digest) but the same config and layer digests.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("docker-archive:{}:app:latest", file.display()),
    ])
    .await;
    let theirs: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(theirs["config"]["digest"], parsed["config"]["digest"]);
    let digests = |v: &serde_json::Value| -> Vec<String> {
        v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect()
    };
    // containers/image serves a gzipped docker-archive layer decompressed (by
    // its diff_id); this crate serves the file as it is (by its own digest).
    let (ours, theirs) = (digests(&parsed), digests(&theirs));
    assert_eq!(ours[1..], theirs[1..]);
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], theirs[0]);
}

// ------------------------------------------------ docker-archive: writing

fn tar_file(path: &Path, name: &str) -> Vec<u8> {
    mirror_testkit::tar_file(path, name).expect("reading a tar entry")
}

/// `manifest.json` of a docker-archive as (Config, RepoTags, Layers).
fn manifest_json(path: &Path) -> Vec<(String, serde_json::Value, Vec<String>)> {
    let entries: Vec<serde_json::Value> =
        serde_json::from_slice(&tar_file(path, "manifest.json")).expect("manifest.json is JSON");
    entries
        .iter()
        .map(|e| {
            let layers = e["Layers"]
                .as_array()
                .expect("Layers")
                .iter()
                .map(|l| l.as_str().expect("a layer path").to_owned())
                .collect();
            (
                e["Config"].as_str().expect("Config").to_owned(),
                e["RepoTags"].clone(),
                layers,
            )
        })
        .collect()
}

/// What manifest.json should say of an image manifest of a generated image.
fn docker_entry(image: &GeneratedImage, manifest: &Digest) -> (String, Vec<String>) {
    let parsed: serde_json::Value =
        serde_json::from_slice(&image.read_blob(manifest).expect("the manifest blob"))
            .expect("the manifest is JSON");
    let path = |d: &serde_json::Value| {
        format!(
            "blobs/sha256/{}",
            d.as_str()
                .and_then(|d| d.strip_prefix("sha256:"))
                .expect("a sha256 digest")
        )
    };
    let layers = parsed["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| path(&l["digest"]))
        .collect();
    (path(&parsed["config"]["digest"]), layers)
}

/// A docker-archive destination at `path`, added to if it exists.
async fn new_docker_archive(path: &Path) -> Arc<OciArchiveWriter> {
    Arc::new(
        OciArchiveWriter::create_docker(path)
            .await
            .expect("creating a docker-archive"),
    )
}

/// [`copy_platform`] into the docker-archive `file`.
async fn docker_write(
    image: &GeneratedImage,
    file: &Path,
    reference: &str,
    platform: Option<&str>,
) -> Result<CopyReport, CopyError> {
    copy_platform(image, new_docker_archive(file).await, reference, platform).await
}

/// A copy of the only image of `image`'s layout, of `platform` if given.
async fn copy_platform(
    image: &GeneratedImage,
    destination: Arc<dyn Destination>,
    destination_reference: &str,
    platform: Option<&str>,
) -> Result<CopyReport, CopyError> {
    let request = CopyRequest {
        options: CopyOptions {
            platforms: platform
                .map(|p| p.parse().expect("a platform"))
                .into_iter()
                .collect(),
            ..CopyOptions::default()
        },
        ..request(
            layout(&image.layout).await,
            "",
            destination,
            destination_reference,
        )
    };
    engine().copy(request).await
}

/// A docker-archive takes one platform per image: an index is refused
/// before anything is written (even one of a single platform plus
/// attestations); `--platform` picks the image, whose manifest.json entry
/// names its config and layers as stored; names are Docker's familiar
/// `NAME:TAG`; a second image joins the first; a tag written again moves;
/// the OCI part keeps the manifest digest and Docker's reader sees the config.
#[tokio::test]
async fn docker_archives_are_written_one_platform_per_image() {
    let multi = image(ImageSpec::small("docker-write", 311));
    let attested = image(ImageSpec::single_layer("docker-write-att", 20_011).with_attestations());
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("out.tar");

    for (image, platforms) in [
        (&multi, "linux/amd64, linux/arm64/v8"),
        (&attested, "linux/amd64"),
    ] {
        let err = docker_write(image, &file, "app:1", None).await.unwrap_err();
        assert!(err.is_usage(), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("docker-archive:{}", file.display()))
                && text.contains(&format!("is an index of {platforms}")),
            "{text}"
        );
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "a refused copy wrote {left:?}");
    }

    // One platform of each; the attested image's index holds only one.
    let amd64 = multi.image_manifests()[0].0.clone();
    let arm64 = multi.image_manifests()[1].0.clone();
    let report = docker_write(
        &multi,
        &file,
        "docker.io/library/app:1",
        Some("linux/amd64"),
    )
    .await
    .unwrap();
    assert_eq!(&report.digest, amd64.digest());
    let only = attested.image_manifests()[0].0.clone();
    docker_write(&attested, &file, "", Some("linux/amd64"))
        .await
        .unwrap();
    let (amd64_config, amd64_layers) = docker_entry(&multi, amd64.digest());
    let (only_config, only_layers) = docker_entry(&attested, only.digest());
    assert_eq!(
        manifest_json(&file),
        vec![
            (
                amd64_config.clone(),
                serde_json::json!(["app:1"]),
                amd64_layers.clone()
            ),
            (only_config, serde_json::Value::Null, only_layers),
        ]
    );
    // Every name in manifest.json is a file of the archive.
    let names: BTreeSet<String> = tar_entries(&file).into_iter().map(|e| e.name).collect();
    for (config, _, layers) in manifest_json(&file) {
        for name in std::iter::once(&config).chain(&layers) {
            assert!(names.contains(name), "{name} is not in the archive");
        }
    }
    // The OCI part keeps the manifest, by the familiar name and containerd's.
    let archive = OciArchive::open(&file).await.unwrap();
    assert_eq!(&archive.find("app:1").await.unwrap().digest, amd64.digest());
    assert_eq!(
        &archive
            .find("docker.io/library/app:1")
            .await
            .unwrap()
            .digest,
        amd64.digest()
    );
    let saved = mirror_layout::saved_image(&file, amd64.digest())
        .await
        .unwrap();
    assert_eq!(
        format!("blobs/sha256/{}", saved.image_id.digest()),
        amd64_config
    );
    assert_eq!(saved.repo_tags, ["app:1"]);
    // mirror's docker-archive reader finds the stored manifest of that entry.
    let docker = DockerArchive::open(&file).await.unwrap();
    let resolved = docker.resolve("app:1").await.unwrap().unwrap();
    assert_eq!(&resolved.digest, amd64.digest());
    let stored = docker.manifest(&resolved.digest).await.unwrap();
    assert_eq!(
        stored.blobs()[0].digest(),
        &saved.image_id,
        "docker-archive readers see the same image ID"
    );

    // The same again is up to date; the other platform as app:1 moves the tag
    // (the amd64 image, left without a tag, goes from manifest.json).
    let again = docker_write(&multi, &file, "app:1", Some("linux/amd64"))
        .await
        .unwrap();
    assert!(again.up_to_date, "{again:?}");
    docker_write(&multi, &file, "app:1", Some("linux/arm64"))
        .await
        .unwrap();
    let (arm64_config, arm64_layers) = docker_entry(&multi, arm64.digest());
    let entries = manifest_json(&file);
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(
        entries[1],
        (arm64_config, serde_json::json!(["app:1"]), arm64_layers)
    );
    assert!(!entries.iter().any(|e| e.0 == amd64_config), "{entries:?}");

    // An oci-archive write into it keeps manifest.json in step.
    copy_platform(
        &multi,
        new_archive(&file).await,
        "other:2",
        Some("linux/amd64"),
    )
    .await
    .unwrap();
    let entries = manifest_json(&file);
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert_eq!(entries[2].0, amd64_config);
    assert_eq!(entries[2].1, serde_json::json!(["other:2"]));

    // `@N` cannot name an image to write.
    let at = FileLocation::parse(&format!("docker-archive:{}:@0", file.display()))
        .unwrap()
        .expect("a file location");
    let err = mirror_layout::open_destination(&at).await.err().unwrap();
    assert!(err.to_string().contains("NAME:TAG"), "{err}");
}

/// A docker-archive that is also an OCI layout (mirror's writer, `docker
/// save` since Docker 25) reads back with the registry's manifest, byte for
/// byte, so its digest survives the round trip.
#[tokio::test]
async fn docker_archives_with_an_oci_layout_keep_the_manifest() {
    let multi = image(ImageSpec::small("docker-keep", 312));
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("saved.tar");
    let written = docker_write(&multi, &file, "app:1", Some("linux/arm64/v8"))
        .await
        .unwrap();

    let archive = DockerArchive::open(&file).await.unwrap();
    let resolved = archive.resolve("app:1").await.unwrap().unwrap();
    assert_eq!(resolved.digest, written.digest);
    let out = tmp.path().join("out");
    let report = copy_ok(Arc::new(archive), "app:1", new_layout(&out).await, "back").await;
    assert_eq!(report.digest, written.digest);
    let back = layout(&out).await;
    let manifest = Source::manifest(&*back, &report.digest).await.unwrap();
    assert_eq!(
        manifest.bytes().as_ref(),
        multi.read_blob(&written.digest).unwrap().as_slice(),
        "the manifest, byte for byte"
    );
}

/// Without a matching stored manifest the manifest is computed: a layout
/// manifest naming other layers than the `manifest.json` entry is passed
/// over, and a zstd layer (which Docker's schema 2 cannot name) makes the
/// computed manifest an OCI one with a `tar+zstd` layer.
#[tokio::test]
async fn docker_archives_compute_what_they_do_not_store() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("saved.tar");
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let mut zstd = vec![0x28, 0xb5, 0x2f, 0xfd];
    zstd.extend_from_slice(b"not really zstd, but nothing here decompresses it");
    let gzip = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    let other = b"another layer".to_vec();
    let stored = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "size": config.len(), "digest": mirror_oci::digest_of(config).to_string()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "size": other.len(), "digest": mirror_oci::digest_of(&other).to_string()}],
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "size": stored.len(), "digest": mirror_oci::digest_of(&stored).to_string()}],
    }))
    .unwrap();
    let manifest_json = serde_json::to_vec(&serde_json::json!([{
        "Config": blob_entry_name(config),
        "RepoTags": ["app:1"],
        "Layers": [blob_entry_name(&gzip), blob_entry_name(&zstd)],
    }]))
    .unwrap();
    mirror_testkit::write_tar(
        &file,
        &[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            ("index.json", &index),
            (&blob_entry_name(&stored), &stored),
            (&blob_entry_name(config), config),
            (&blob_entry_name(&other), &other),
            (&blob_entry_name(&gzip), &gzip),
            (&blob_entry_name(&zstd), &zstd),
            ("manifest.json", &manifest_json),
        ],
    )
    .expect("writing a tar");

    let archive = DockerArchive::open(&file).await.unwrap();
    let resolved = archive.resolve("app:1").await.unwrap().unwrap();
    assert_ne!(resolved.digest, mirror_oci::digest_of(&stored));
    let manifest = Source::manifest(&archive, &resolved.digest).await.unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(manifest.bytes()).unwrap();
    assert_eq!(
        parsed["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        parsed["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let layers: Vec<(String, String)> = parsed["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["mediaType"].as_str().unwrap().to_owned(),
                l["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        layers,
        [
            (
                "application/vnd.oci.image.layer.v1.tar+gzip".to_owned(),
                mirror_oci::digest_of(&gzip).to_string()
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd".to_owned(),
                mirror_oci::digest_of(&zstd).to_string()
            ),
        ]
    );
}
