//! `mirror-stand-ins`: the local stand-ins `scripts/demo.sh` runs `mirror
//! sync` against, for a reader with neither AWS nor Docker Hub at hand.
//!
//! Starts moto (the AWS API), the ECR stand-in (a registry behind a gate
//! with ECR's manners) and the Docker Hub stand-in (bearer tokens, pull
//! limits, a CDN) holding a generated python-shaped image as
//! `python:3.10-slim-buster`; prints `export NAME='VALUE'` lines that point
//! `mirror` at them, then `ready`, and keeps them up until standard input
//! closes or it is interrupted. Arguments are not taken.

use std::io::Write as _;

use mirror_testkit::{DockerHubStandIn, EcrOptions, EcrStandIn, Moto};

/// `'VALUE'` for a POSIX shell.
fn quoted(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let ecr = EcrStandIn::start(&moto, EcrOptions::default()).await?;
    let hub = DockerHubStandIn::start().await?;
    let python = hub.seed_python().await?;
    let mut out = std::io::stdout().lock();
    for (key, value) in moto.env() {
        writeln!(out, "export {key}={}", quoted(&value))?;
    }
    let endpoints = format!("{},{}", ecr.endpoint_arg(), hub.endpoint_arg());
    writeln!(
        out,
        "export MIRROR_REGISTRY_ENDPOINT={}",
        quoted(&endpoints)
    )?;
    writeln!(out, "export DEMO_ECR_HOST={}", quoted(&ecr.registry_host()))?;
    writeln!(
        out,
        "export DEMO_PYTHON_DIGEST={}",
        quoted(python.root_digest().as_ref())
    )?;
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);
    // Up until the demo closes our standard input (or ^C).
    let closed = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    });
    tokio::select! {
        _ = closed => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
