//! skopeo as a second, unrelated witness of what a registry holds.
//!
//! Checking the engine's output with the engine's own client would prove
//! little; skopeo (containers/image, Go) is a different implementation of the
//! same protocol. These helpers run it asynchronously, so that a registry,
//! proxy or token server running in the same tokio runtime keeps serving while
//! skopeo talks to it.

use anyhow::{Context as _, bail};

/// Runs `skopeo ARGS...`: its stdout, or an error with its stderr.
pub async fn skopeo<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> anyhow::Result<Vec<u8>> {
    let program = crate::require_tool("skopeo", "skopeo")?;
    run_tool(&program, "skopeo", args).await
}

/// Runs `program ARGS...` (shown as `name ARGS...`) with nothing on its
/// stdin, killed if dropped: its stdout, or an error with its output.
pub async fn run_tool<S: AsRef<std::ffi::OsStr>>(
    program: impl AsRef<std::ffi::OsStr>,
    name: &str,
    args: &[S],
) -> anyhow::Result<Vec<u8>> {
    let shown = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {name} {shown}"))?;
    if !output.status.success() {
        bail!(
            "{name} {shown} failed ({}):\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
    Ok(output.stdout)
}

/// `skopeo copy --insecure-policy --all --preserve-digests FROM TO`, between
/// local locations (`oci:DIR:TAG`, `oci-archive:FILE:TAG`, ...).
pub async fn skopeo_copy(from: &str, to: &str) -> anyhow::Result<()> {
    skopeo(&[
        "copy",
        "--insecure-policy",
        "--all",
        "--preserve-digests",
        from,
        to,
    ])
    .await
    .map(drop)
}

/// `skopeo inspect --raw --tls-verify=false REFERENCE`: the manifest's exact
/// bytes as the registry serves them. `reference` is `docker://host/repo:tag`
/// (or `@sha256:...`).
pub async fn skopeo_inspect_raw(
    reference: &str,
    creds: Option<(&str, &str)>,
) -> anyhow::Result<Vec<u8>> {
    let creds = creds.map(|(user, password)| format!("--creds={user}:{password}"));
    let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
    args.push(creds.as_deref().unwrap_or("--no-creds"));
    args.push(reference);
    skopeo(&args).await
}

/// The digest of the manifest skopeo reads (sha256 of the raw bytes, the same
/// value as `Docker-Content-Digest`).
pub async fn skopeo_digest(reference: &str, creds: Option<(&str, &str)>) -> anyhow::Result<String> {
    let raw = skopeo_inspect_raw(reference, creds).await?;
    Ok(mirror_oci::digest_of(&raw).to_string())
}
