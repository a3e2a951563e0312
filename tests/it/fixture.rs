//! A real image without the network: the committed `fixtures/busybox` layout
//! (Debian's busybox-static for linux/amd64 and linux/arm64, made with umoci;
//! fixtures/README.md says how). Its digests are pinned here, so a change to
//! how mirror reads or writes real content shows up as a changed digest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mirror_testkit::{PushAuth, open_layout, skopeo_digest};

use crate::support::{Mirror, Scratch, assert_landed, copy_json, fetch, open_registry, text};

/// The index `fixtures/busybox` tags `1.35`.
const INDEX: &str = "sha256:41ee6c9ce9f837c3dacfbf8390b2675cc04d402a6395a73c456dada44e9111ef";
/// Its linux/arm64 image manifest.
const ARM64: &str = "sha256:d99abd3342400b5d97e97719936343e57671b528a988e03941750dcb00b39e53";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/busybox")
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).expect("read the fixture") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read a fixture file");
                files.insert(path, bytes);
            }
        }
    }
    files
}

/// The committed layout goes to a registry and on into an archive with every
/// digest kept (skopeo agrees at each step), one platform of it becomes that
/// platform's own manifest, and reading it leaves the fixture as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_busybox_layout_travels_with_its_digests() {
    let before = snapshot(&fixture());
    let built = open_layout(&fixture()).expect("the fixture layout");
    assert_eq!(built.root_digest().to_string(), INDEX);
    assert_eq!(built.manifests.len(), 2);
    let source = format!("oci:{}:1.35", fixture().display());
    assert_eq!(
        skopeo_digest(&source, None)
            .await
            .expect("skopeo reads the fixture"),
        INDEX
    );

    let registry = open_registry().await;
    let out = copy_json(&source, &format!("{}/busybox", registry.host())).await;
    assert_eq!(text(&out.json(), "/digest"), INDEX);
    assert_landed(
        &registry.host(),
        "busybox",
        "1.35",
        &built,
        &PushAuth::Anonymous,
    )
    .await;
    assert_eq!(
        skopeo_digest(&format!("docker://{}/busybox:1.35", registry.host()), None)
            .await
            .expect("skopeo reads the registry"),
        INDEX
    );

    let scratch = Scratch::new("busybox-archive");
    let archive = scratch.path().join("busybox.tar");
    Mirror::copy(
        &format!("{}/busybox:1.35", registry.host()),
        &format!("oci-archive:{}", archive.display()),
    )
    .run()
    .await
    .expect_success();
    assert_eq!(
        skopeo_digest(&format!("oci-archive:{}:1.35", archive.display()), None)
            .await
            .expect("skopeo reads the archive"),
        INDEX
    );

    let out = Mirror::copy(&source, &format!("{}/busybox-arm64:1.35", registry.host()))
        .args(["--platform", "linux/arm64", "--json"])
        .run()
        .await;
    out.expect_success();
    assert_eq!(text(&out.json(), "/digest"), ARM64);
    let landed = fetch(
        &registry.host(),
        "busybox-arm64",
        "1.35",
        &PushAuth::Anonymous,
    )
    .await;
    assert_eq!(landed.digest, ARM64);

    assert!(
        snapshot(&fixture()) == before,
        "reading fixtures/busybox changed it"
    );
}
