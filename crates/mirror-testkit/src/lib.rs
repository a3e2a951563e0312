//! The test bed for `mirror`: real servers and real images, on this machine only.
//!
//! Mocks of a registry agree with whatever the code under test believes; the
//! reference implementation does not. So the tests talk to real distribution
//! registries (Debian's `docker-registry`, 2.8), through a proxy that can record
//! and break traffic, with images whose digests never change between runs.
//! Nothing here uses the project's own registry or engine crates: the test bed
//! must stay an independent witness of the code it tests.
//!
//! - [`Registry`]: a `docker-registry serve` child process (open, htpasswd Basic
//!   auth like ECR, or bearer tokens like Docker Hub), killed on drop; also in
//!   a network namespace ([`Registry::open_in_netns`], for WAN conditions).
//! - [`TokenServer`] and [`TokenOptions`]: a Docker Hub style token server
//!   (`GET /token` and the OAuth2 `POST /token`) that records every request
//!   as a [`TokenRequest`].
//! - [`Proxy`], [`Rule`] and [`Fault`]: a recording, fault-injecting HTTP/1.1
//!   reverse proxy that streams bodies; its log is a list of [`RequestRecord`]s.
//! - [`ImageSpec`], [`PlatformSpec`], [`generate`] and [`GeneratedImage`]:
//!   deterministic OCI image layouts (multi-platform indexes, attestations,
//!   Docker media types, 1 GiB layers) cached on disk.
//! - [`push_layout`], [`PushTarget`], [`PushAuth`], [`fetch_manifest`],
//!   [`fetch_blob_digest`], [`blob_exists`]: a minimal pusher and fetcher to
//!   seed registries and to check what landed.
//! - [`SigningKey`], [`cosign_signature`], [`spdx_sbom`], [`in_toto_provenance`]:
//!   signatures (made by Python's `cryptography`), SBOMs and provenance that
//!   hang off an image, as OCI 1.1 referrers or at cosign's tags;
//!   [`push_artifact`] puts them on a registry; the ECR stand-in answers the
//!   referrers API ([`ReferrersApi`]).
//! - [`skopeo_inspect_raw`] and [`skopeo_digest`]: a second, unrelated witness;
//!   [`skopeo`] and [`skopeo_copy`] run it for anything else.
//! - [`tar_entries`], [`write_raw_tar`], [`RawEntry`], [`copy_dir`] and the
//!   rest of `files`: archives read and hand-made (hostile ones too), layouts
//!   copied.
//! - [`require_tool`]: fails with the apt command that installs a missing tool.
//!
//! Every server binds 127.0.0.1 on a free port (unless placed in a network
//! namespace) and stops when dropped. The `mirror-bench` crate compares
//! `mirror` with skopeo on these servers.
//!
//! ```no_run
//! use mirror_testkit::{Fault, ImageSpec, Proxy, PushTarget, Registry, Rule};
//! # async fn demo() -> anyhow::Result<()> {
//! let source = Registry::open().await?;
//! let image = mirror_testkit::generate(&ImageSpec::small("demo", 1))?;
//! mirror_testkit::push_layout(&image, &PushTarget::new(&source.host(), "app", "v1")).await?;
//!
//! // Clients go through the proxy; the first blob GET gets a corrupt byte.
//! let proxy = Proxy::start(source.addr()).await?;
//! proxy.add_rule(
//!     Rule::new(Fault::FlipByte { offset: 10 })
//!         .method("GET")
//!         .path_contains("/blobs/sha256:")
//!         .times(1),
//! );
//! // ... run the code under test against proxy.host(), then:
//! let manifest_gets = proxy
//!     .requests()
//!     .iter()
//!     .filter(|r| r.method == "GET" && r.path.contains("/manifests/"))
//!     .count();
//! # let _ = manifest_gets;
//! # Ok(()) }
//! ```

mod child;
mod files;
mod image;
mod moto;
mod prometheus;
mod proxy;
mod push;
mod registry;
mod server;
mod signing;
mod skopeo;
mod stand_in;
mod tls;
mod token;

pub use files::{
    RawEntry, TarEntry, archive_blobs, blob_entry_name, copy_dir, layout_entries, tar_entries,
    tar_file, write_raw_tar, write_tar,
};
pub use image::{
    GeneratedImage, ImageSpec, PlatformSpec, cache_root, generate, generate_into, open_layout,
};
pub use moto::{MOTO_ACCOUNT, MOTO_REGION, Moto, MotoCall, MotoClient, find_moto_server};
pub use prometheus::Prometheus;
pub use proxy::{Fault, Proxy, RequestRecord, Rule};
pub use push::{
    PushAuth, PushTarget, blob_exists, fetch_blob_digest, fetch_manifest, fetch_referrers,
    list_tags, push_artifact, push_layout, push_manifest_bytes,
};
pub use registry::Registry;
pub use signing::{
    Artifact, SignedPayload, SigningKey, Subject, cosign_attestation, cosign_payload,
    cosign_signature, fallback_index, find_python, in_toto_provenance, spdx_sbom,
};
pub use skopeo::{run_tool, skopeo, skopeo_copy, skopeo_digest, skopeo_inspect_raw};
pub use stand_in::{
    DOCKER_HUB_HOST, DockerHubOptions, DockerHubStandIn, EcrOptions, EcrStandIn, ReferrersApi,
};
pub use tls::{ServerCert, TestCa};
pub use token::{TokenOptions, TokenRequest, TokenServer};

use std::path::PathBuf;

/// Finds `name` on `PATH`, or fails with the command that installs it.
///
/// The test bed runs real programs (`docker-registry`, `skopeo`); a fresh
/// machine without them should fail with the fix, not with "No such file".
pub fn require_tool(name: &str, apt_package: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    anyhow::bail!("{name} not found: apt-get install -y {apt_package}")
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A string that is different in every call of every process: for secrets and
/// ids that only need to be unique, not unguessable.
pub(crate) fn unique_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let seed = format!(
        "{}-{}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    mirror_oci::digest_of(seed.as_bytes()).digest()[..32].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_tool_finds_sh_and_names_the_package_when_missing() {
        assert!(require_tool("sh", "dash").is_ok());
        let err = require_tool("surely-not-a-tool-xyz", "some-package")
            .expect_err("missing tool")
            .to_string();
        assert_eq!(
            err,
            "surely-not-a-tool-xyz not found: apt-get install -y some-package"
        );
    }

    #[test]
    fn servers_can_be_shared_between_tasks_and_statics() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Registry>();
        shareable::<TokenServer>();
        shareable::<Proxy>();
        shareable::<GeneratedImage>();
    }

    #[test]
    fn unique_tokens_differ() {
        assert_ne!(unique_token(), unique_token());
    }
}
