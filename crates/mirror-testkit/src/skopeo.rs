//! skopeo as a second, unrelated witness of what a registry holds.
//!
//! Checking the engine's output with the engine's own client would prove
//! little; skopeo (containers/image, Go) is a different implementation of the
//! same protocol. These helpers run it asynchronously, so that a registry,
//! proxy or token server running in the same tokio runtime keeps serving while
//! skopeo talks to it.

use anyhow::{Context as _, bail};

/// `skopeo inspect --raw --tls-verify=false REFERENCE`: the manifest's exact
/// bytes as the registry serves them. `reference` is `docker://host/repo:tag`
/// (or `@sha256:...`).
pub async fn skopeo_inspect_raw(
    reference: &str,
    creds: Option<(&str, &str)>,
) -> anyhow::Result<Vec<u8>> {
    let program = crate::require_tool("skopeo", "skopeo")?;
    let mut command = tokio::process::Command::new(program);
    command.args(["inspect", "--raw", "--tls-verify=false"]);
    match creds {
        Some((user, password)) => {
            command.arg("--creds").arg(format!("{user}:{password}"));
        }
        None => {
            command.arg("--no-creds");
        }
    }
    command.arg(reference);
    command.kill_on_drop(true);
    let output = command
        .output()
        .await
        .with_context(|| format!("running skopeo inspect --raw {reference}"))?;
    if !output.status.success() {
        bail!(
            "skopeo inspect --raw {reference} failed ({}):\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
    Ok(output.stdout)
}

/// The digest of the manifest skopeo reads (sha256 of the raw bytes, the same
/// value as `Docker-Content-Digest`).
pub async fn skopeo_digest(reference: &str, creds: Option<(&str, &str)>) -> anyhow::Result<String> {
    let raw = skopeo_inspect_raw(reference, creds).await?;
    Ok(mirror_oci::digest_of(&raw).to_string())
}
