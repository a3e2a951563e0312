//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use mirror_oci::PlatformFilter;

const EXAMPLES: &str = "\
Examples:
  # Every platform of a Docker Hub image into a private registry
  mirror copy python:3.10-slim-buster registry.example.com/base/python

  # Only two platforms (the destination gets a new index with a new digest)
  mirror copy --platform linux/amd64 --platform linux/arm64 \\
      alpine:3.20 registry.example.com/base/alpine:3.20

  # A plain-HTTP registry on this machine
  mirror copy --insecure-registry localhost:5000 nginx:1.27 localhost:5000/nginx

  # What would move, as JSON, without writing anything
  mirror copy --dry-run --json python:3.12 registry.example.com/python

  # What a reference is: digest, media type, platforms, sizes
  mirror inspect python:3.10-slim-buster

Credentials come from --src-creds/--dest-creds (or MIRROR_SRC_CREDS/MIRROR_DEST_CREDS),
else from docker's config.json ($DOCKER_CONFIG, auths, credHelpers, credsStore) and
containers' auth.json. Exit codes: 0 success, 1 the copy failed, 2 usage error.";

#[derive(Debug, Parser)]
#[command(
    name = "mirror",
    version,
    about = "Copy container images between registries: every platform, byte for byte, no daemon",
    after_help = EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr: no progress, no summary.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy an image (every platform of an index, or one image) to another registry.
    #[command(after_help = EXAMPLES)]
    Copy(CopyArgs),
    /// Show what a reference resolves to: digest, media type, platforms, sizes.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Source image: `python:3.10-slim-buster`, `host:port/repo:tag`, `repo@sha256:...`.
    pub source: String,
    /// Destination: `host[:port]/repo[:tag]`. Without a tag the source's tag is kept.
    pub destination: String,
    /// Copy only this platform (os/arch[/variant]); repeatable.
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]")]
    pub platforms: Vec<PlatformFilter>,
    /// USER:PASSWORD for the source registry.
    #[arg(
        long,
        env = "MIRROR_SRC_CREDS",
        hide_env_values = true,
        value_name = "USER:PASS"
    )]
    pub src_creds: Option<String>,
    /// USER:PASSWORD for the destination registry.
    #[arg(
        long,
        env = "MIRROR_DEST_CREDS",
        hide_env_values = true,
        value_name = "USER:PASS"
    )]
    pub dest_creds: Option<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Plan and report what would be copied; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Blob transfers in flight across the whole run.
    #[arg(long, default_value_t = mirror_engine::DEFAULT_CONCURRENT_BLOBS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub max_concurrent_blobs: usize,
    /// Also copy non-distributable (foreign) layers.
    #[arg(long)]
    pub include_foreign: bool,
    #[command(flatten)]
    pub transport: TransportArgs,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Image reference.
    pub reference: String,
    /// USER:PASSWORD for the registry.
    #[arg(
        long,
        env = "MIRROR_CREDS",
        hide_env_values = true,
        value_name = "USER:PASS"
    )]
    pub creds: Option<String>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub transport: TransportArgs,
}

#[derive(Debug, Args)]
pub struct TransportArgs {
    /// Allow plain HTTP or unverified TLS for this host[:port]; repeatable.
    #[arg(
        long = "insecure-registry",
        env = "MIRROR_INSECURE_REGISTRY",
        value_delimiter = ',',
        value_name = "HOST[:PORT]"
    )]
    pub insecure_registries: Vec<String>,
    /// Also trust the CA certificates in this PEM file; repeatable.
    #[arg(long = "ca-cert", value_name = "FILE")]
    pub ca_certs: Vec<PathBuf>,
    /// Reach HOST through URL (VPC endpoints, proxies); repeatable.
    #[arg(long = "registry-endpoint", value_name = "HOST=URL")]
    pub endpoints: Vec<String>,
    /// Attempts per request and per blob transfer before giving up.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub retries: u32,
}
