//! Fuzzing archive reading: a valid oci-archive and docker-archive, damaged
//! (bytes changed, cut short, header fields rewritten with a correct checksum
//! so the damage gets past the tar reader: huge sizes, other types, other
//! names) or given hostile extra entries, are opened, listed and read to the
//! last byte of every blob. Whatever the bytes: no panic, no hang, and no
//! blob yields more bytes than the archive file holds (memory stays bounded
//! by what is on disk, never by what a header claims). A fixed case budget
//! keeps the run short (`PROPTEST_CASES` raises it by hand).

use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::StreamExt as _;
use mirror_engine::Source;
use mirror_layout::{DockerArchive, OciArchive};
use mirror_oci::{Descriptor, digest_of};
use mirror_testkit::{ImageSpec, RawEntry, generate, layout_entries, write_raw_tar, write_tar};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The bytes of a tar of `entries` (v7 headers: each header is the 512 bytes
/// before its data).
fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let path = tmp.path().join("t.tar");
    write_raw_tar(&path, entries).expect("writing a tar");
    std::fs::read(&path).expect("reading a tar")
}

static OCI: LazyLock<Vec<RawEntry>> = LazyLock::new(oci_entries);
static DOCKER: LazyLock<Vec<RawEntry>> = LazyLock::new(docker_entries);

/// The entries of a small valid oci-archive.
fn oci_entries() -> Vec<RawEntry> {
    let image = generate(&ImageSpec::single_layer("fuzz-archive", 3000)).expect("an image");
    layout_entries(&image.layout).expect("the layout's files")
}

/// The entries of a small valid docker-archive (`docker save` shape).
fn docker_entries() -> Vec<RawEntry> {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let layer_path = tmp.path().join("layer.tar");
    write_tar(&layer_path, &[("hello.txt", b"hello")]).expect("a layer");
    let layer = std::fs::read(&layer_path).expect("a layer");
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [digest_of(&layer).to_string()] },
    });
    let manifest = serde_json::json!([{
        "Config": "cfg.json",
        "RepoTags": ["app:latest"],
        "Layers": ["aaa/layer.tar"],
    }]);
    vec![
        RawEntry::file(
            "manifest.json",
            serde_json::to_vec(&manifest).expect("JSON"),
        ),
        RawEntry::file("cfg.json", serde_json::to_vec(&config).expect("JSON")),
        RawEntry::file("aaa/layer.tar", layer),
    ]
}

/// Where each entry's header starts in [`raw_tar`]'s output.
fn header_offsets(entries: &[RawEntry]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 0;
    for entry in entries {
        offsets.push(at);
        at += 512 + entry.data.len().div_ceil(512) * 512;
    }
    offsets
}

/// One way to damage an archive.
#[derive(Debug, Clone)]
enum Damage {
    /// Overwrite bytes anywhere.
    Bytes(Vec<(u32, u8)>),
    /// Cut the file at this fraction (per 65536) of its length.
    Cut(u16),
    /// Rewrite a header field of the `entry % n`th entry, then fix the checksum.
    Field { entry: usize, field: Field },
    /// Add entries after the valid ones, or in place of one of them.
    Entries {
        extra: Vec<RawEntry>,
        replace: Option<usize>,
    },
}

#[derive(Debug, Clone)]
enum Field {
    /// An octal size (may be far larger than the file).
    Size(u64),
    /// A base-256 size, as GNU tar writes sizes over 8 GiB.
    Size256(u64),
    Type(u8),
    Name(String),
    Link(String),
    /// Any bytes at an offset in the header (not the checksum).
    Raw(u8, Vec<u8>),
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("index.json".to_owned()),
        Just("oci-layout".to_owned()),
        Just("manifest.json".to_owned()),
        Just("cfg.json".to_owned()),
        Just("aaa/layer.tar".to_owned()),
        Just("blobs/sha256".to_owned()),
        Just("../escape".to_owned()),
        Just("/etc/passwd".to_owned()),
        Just("./blobs/sha256/../../index.json".to_owned()),
        "blobs/sha256/[0-9a-f]{64}",
        "[a-z./]{0,30}",
    ]
}

fn entry() -> impl Strategy<Value = RawEntry> {
    let kind = prop_oneof![
        Just(tar::EntryType::Regular),
        Just(tar::EntryType::Symlink),
        Just(tar::EntryType::Link),
        Just(tar::EntryType::Directory),
        Just(tar::EntryType::Fifo),
        Just(tar::EntryType::Char),
        any::<u8>().prop_map(tar::EntryType::new),
    ];
    let data = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        Just(b"{\"schemaVersion\":2,\"manifests\":[]}".to_vec()),
        Just(b"{\"imageLayoutVersion\":\"1.0.0\"}".to_vec()),
        Just(b"[{\"Config\":\"cfg.json\",\"Layers\":[\"../escape\"]}]".to_vec()),
    ];
    (name(), kind, name(), data).prop_map(|(name, kind, link, data)| {
        let (name, link) = (cut(name, 100), cut(link, 100));
        let data = if kind == tar::EntryType::Regular {
            data
        } else {
            Vec::new()
        };
        RawEntry {
            name,
            kind,
            link,
            data,
        }
    })
}

fn cut(mut s: String, len: usize) -> String {
    s.truncate(len);
    s
}

fn damage() -> impl Strategy<Value = Damage> {
    let field = prop_oneof![
        prop_oneof![
            0u64..100_000,
            Just(0o77_777_777_777),
            Just(1 << 40),
            any::<u64>()
        ]
        .prop_map(|n| Field::Size(n & 0o77_777_777_777)),
        any::<u64>().prop_map(Field::Size256),
        any::<u8>().prop_map(Field::Type),
        name().prop_map(Field::Name),
        name().prop_map(Field::Link),
        (0u8..148, proptest::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(at, b)| Field::Raw(at, b)),
    ];
    prop_oneof![
        2 => proptest::collection::vec((any::<u32>(), any::<u8>()), 1..8).prop_map(Damage::Bytes),
        1 => any::<u16>().prop_map(Damage::Cut),
        4 => (any::<usize>(), field).prop_map(|(entry, field)| Damage::Field { entry, field }),
        2 => (proptest::collection::vec(entry(), 1..4), proptest::option::of(any::<usize>()))
            .prop_map(|(extra, replace)| Damage::Entries { extra, replace }),
    ]
}

fn set(header: &mut [u8], at: usize, len: usize, value: &[u8]) {
    header[at..at + len].fill(0);
    let n = value.len().min(len);
    header[at..at + n].copy_from_slice(&value[..n]);
}

/// The damaged archive's bytes.
fn damaged(entries: &[RawEntry], damage: &Damage) -> Vec<u8> {
    if let Damage::Entries { extra, replace } = damage {
        let mut all = entries.to_vec();
        if let Some(i) = replace {
            all.remove(i % all.len());
        }
        all.extend(extra.iter().cloned());
        return raw_tar(&all);
    }
    let mut bytes = raw_tar(entries);
    match damage {
        Damage::Bytes(changes) => {
            for &(at, byte) in changes {
                let i = at as usize % bytes.len();
                bytes[i] = byte;
            }
        }
        Damage::Cut(fraction) => {
            bytes.truncate(bytes.len() * usize::from(*fraction) / 65536);
        }
        Damage::Field { entry, field } => {
            let offsets = header_offsets(entries);
            let start = offsets[entry % offsets.len()];
            let header = &mut bytes[start..start + 512];
            match field {
                Field::Size(n) => set(header, 124, 12, format!("{n:011o}").as_bytes()),
                Field::Size256(n) => {
                    let mut b = [0u8; 12];
                    b[0] = 0x80;
                    b[4..].copy_from_slice(&n.to_be_bytes());
                    set(header, 124, 12, &b);
                }
                Field::Type(t) => header[156] = *t,
                Field::Name(name) => set(header, 0, 100, name.as_bytes()),
                Field::Link(link) => set(header, 157, 100, link.as_bytes()),
                Field::Raw(at, b) => {
                    let at = usize::from(*at);
                    let n = b.len().min(148 - at);
                    header[at..at + n].copy_from_slice(&b[..n]);
                }
            }
            header[148..156].fill(b' ');
            let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
            set(header, 148, 8, format!("{sum:06o}\0 ").as_bytes());
        }
        Damage::Entries { .. } => unreachable!("handled above"),
    }
    bytes
}

/// Reads everything a source offers: each listed manifest, its children
/// (two levels), and every blob to its end. Returns the most bytes any one
/// blob yielded.
async fn read_all(source: Arc<dyn Source>, roots: Vec<Descriptor>) -> u64 {
    let mut most = 0;
    let mut pending: Vec<(Descriptor, u8)> = roots.into_iter().map(|d| (d, 0)).collect();
    let mut seen = std::collections::HashSet::new();
    while let Some((descriptor, depth)) = pending.pop() {
        if !seen.insert(descriptor.digest().clone()) {
            continue;
        }
        let Ok(manifest) = source.manifest(descriptor.digest()).await else {
            continue;
        };
        if depth < 2 {
            pending.extend(manifest.children().iter().map(|c| (c.clone(), depth + 1)));
        }
        for blob in manifest.blobs() {
            let Ok(mut stream) = source.blob(blob).await else {
                continue;
            };
            let mut read = 0u64;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => read += bytes.len() as u64,
                    Err(_) => break,
                }
            }
            most = most.max(read);
        }
    }
    most
}

async fn open_and_read(path: &Path) {
    if let Ok(archive) = OciArchive::open(path).await
        && let Ok(listed) = archive.list().await
    {
        let _ = archive.find("latest").await;
        let _ = archive.find("").await;
        let roots = listed.into_iter().map(|(_, d)| d).collect();
        let most = read_all(Arc::new(archive), roots).await;
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        assert!(
            most <= size,
            "a blob of {most} bytes from a {size}-byte file"
        );
    }
    if let Ok(archive) = DockerArchive::open(path).await
        && let Ok(listed) = archive.list().await
    {
        let roots = listed.into_iter().map(|(_, d)| d).collect();
        let most = read_all(Arc::new(archive), roots).await;
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        // A computed manifest's layer is the stored one; nothing more.
        assert!(
            most <= size,
            "a blob of {most} bytes from a {size}-byte file"
        );
    }
}

fn check(entries: &[RawEntry], damage: &Damage) {
    let bytes = damaged(entries, damage);
    let tmp = tempfile::tempdir().expect("a temp dir");
    let path = tmp.path().join("archive.tar");
    std::fs::write(&path, &bytes).expect("writing the archive");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // Generous: a case takes milliseconds; this only turns a hang into a failure.
    runtime
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(60), open_and_read(&path)).await
        })
        .expect("reading a damaged archive hung");
}

/// The undamaged archives read whole, so that damage is measured from a
/// state that works.
#[test]
fn the_undamaged_archives_read_whole() {
    for entries in [&*OCI, &*DOCKER] {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let path = tmp.path().join("archive.tar");
        std::fs::write(&path, raw_tar(entries)).expect("writing the archive");
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let most = runtime.block_on(async {
            let (source, roots): (Arc<dyn Source>, Vec<Descriptor>) =
                match OciArchive::open(&path).await {
                    Ok(archive) => {
                        let roots = archive.list().await.expect("listing");
                        (
                            Arc::new(archive),
                            roots.into_iter().map(|(_, d)| d).collect(),
                        )
                    }
                    Err(_) => {
                        let archive = DockerArchive::open(&path).await.expect("opening");
                        let roots = archive.list().await.expect("listing");
                        (
                            Arc::new(archive),
                            roots.into_iter().map(|(_, d)| d).collect(),
                        )
                    }
                };
            assert!(!roots.is_empty());
            read_all(source, roots).await
        });
        assert!(most > 0, "no blob was read");
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn damaged_oci_archives_are_read_or_refused(damage in damage()) {
        check(&OCI, &damage);
    }

    #[test]
    fn damaged_docker_archives_are_read_or_refused(damage in damage()) {
        check(&DOCKER, &damage);
    }
}
