//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use mirror_engine::ReferrerSelection;
use mirror_oci::PlatformFilter;

const EXAMPLES: &str = "\
Examples:
  # Docker Hub's python image, every platform, into your own ECR registry
  # (repository created if missing; AWS credentials from the usual chain)
  mirror python:3.10-slim-buster

  # ...renamed, into an immutable repository
  mirror python:3.10-slim-buster --to cruddur-python --tag-mutability IMMUTABLE

  # Every platform of a Docker Hub image into a private registry
  mirror copy python:3.10-slim-buster registry.example.com/base/python

  # Only two platforms (the destination gets a new index with a new digest)
  mirror copy --platform linux/amd64 --platform linux/arm64 \\
      alpine:3.20 registry.example.com/base/alpine:3.20

  # A plain-HTTP registry on this machine
  mirror copy --insecure-registry localhost:5000 nginx:1.27 localhost:5000/nginx

  # What would move, as JSON, without writing anything
  mirror copy --dry-run --json python:3.12 registry.example.com/python

  # Every 3.12 tag of a repository (tags listed 1000 per page)
  mirror copy --all-tags --tag-regex '3\\.12.*' python registry.example.com/base/python

  # Only images signed with this cosign key; only their signatures travel along
  mirror copy --require-signature cosign:cosign.pub --referrers signature \\
      ghcr.io/org/app:1.4 registry.example.com/app:1.4

  # What a reference is: digest, media type, platforms, sizes
  mirror inspect python:3.10-slim-buster

  # Every image of a team, kept in step from one YAML file (see `mirror sync --help`)
  mirror sync mirror.yaml

Credentials come from --src-creds/--dest-creds (or MIRROR_SRC_CREDS/MIRROR_DEST_CREDS),
else from docker's config.json ($DOCKER_CONFIG, auths, credHelpers, credsStore) and
containers' auth.json. --registry-endpoint, --insecure-registry and --ca-cert can also
live in ~/.config/mirror/config.toml (see --config). Exit codes: 0 success, 1 the copy failed, 2 usage error,
3 images deferred (the source pull budget ran out; run again).";

#[derive(Debug, Parser)]
#[command(
    name = "mirror",
    version,
    about = "Copy container images into Amazon ECR or between any registries: every platform, byte for byte, no daemon",
    override_usage = "mirror [OPTIONS] IMAGE...\n       mirror <COMMAND> [ARGS]",
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    // Declared before the flattened groups: an argument takes the help
    // heading in force where it is declared, and these belong under
    // "Options" in every command's --help, not under the last group's.
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr: no progress, no summary.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(flatten)]
    pub mirror: MirrorArgs,
}

/// `mirror IMAGE...`: into the caller's ECR registry.
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// Images to mirror into your ECR registry (`python:3.10-slim-buster`, `ghcr.io/org/app:1.2`).
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Destination repository (and tag): `cruddur-python`, `team/python:3.10`. One image only.
    #[arg(long, value_name = "NAME[:TAG]")]
    pub to: Option<String>,
    /// Prefix for destination repository names (`mirror/` gives mirror/python).
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    #[command(flatten)]
    pub flags: CopyCommandArgs,
}

/// The flags of `mirror IMAGE...` and `mirror copy` but their images and
/// destination.
#[derive(Debug, Args)]
pub struct CopyCommandArgs {
    #[command(flatten)]
    pub copy: CommonCopyArgs,
    #[command(flatten)]
    pub ecr: EcrArgs,
    #[command(flatten)]
    pub transport: TransportArgs,
}

/// Options shared by `mirror IMAGE...` and `mirror copy`.
#[derive(Debug, Args)]
pub struct CommonCopyArgs {
    /// Copy only this platform (os/arch[/variant]); repeatable.
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]")]
    pub platforms: Vec<PlatformFilter>,
    #[command(flatten)]
    pub src: SourceCredsArgs,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Plan and report what would be copied; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Blob transfers in flight across the whole run.
    #[arg(long, default_value_t = mirror_engine::DEFAULT_CONCURRENT_BLOBS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub max_concurrent_blobs: usize,
    /// Copy every tag of the source repository (give it without a tag), each
    /// to the same tag at the destination.
    #[arg(long)]
    pub all_tags: bool,
    /// With --all-tags: only the tags this regular expression matches in full
    /// (`3\.1[0-2].*`).
    #[arg(long, value_name = "REGEX", requires = "all_tags")]
    pub tag_regex: Option<String>,
    #[command(flatten)]
    pub image: ImageCopyArgs,
}

/// How each image is copied: shared by `mirror IMAGE...`, `mirror copy` and
/// `mirror sync`.
#[derive(Debug, Clone, Args)]
pub struct ImageCopyArgs {
    /// Images (tags) copied at once; blobs stay bounded by --max-concurrent-blobs.
    #[arg(long, default_value_t = mirror_sync::DEFAULT_CONCURRENT_IMAGES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub max_concurrent_images: usize,
    /// Also copy non-distributable (foreign) layers.
    #[arg(long)]
    pub include_foreign: bool,
    /// Distinct manifests one image may reference (index, platforms,
    /// attestations) before its copy stops: a bound against hostile sources.
    #[arg(long, value_name = "N", default_value_t = mirror_engine::DEFAULT_MAX_MANIFESTS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_manifests: usize,
    /// Which referrers (signatures, SBOMs, attestations) travel with each
    /// image: all, none, or a comma-separated list of signature, sbom,
    /// attestation and artifact types (application/spdx+json). In a sync,
    /// with any, a tag already current still gets the referrers added since
    /// the last run.
    #[arg(long, value_name = "all|none|KIND,TYPE,...", default_value = "all")]
    pub referrers: ReferrerSelection,
    /// Copy an image only if a cosign signature by this public key names it
    /// (checked before anything is written; other images carry on).
    /// Repeatable: any of the keys may match.
    #[arg(long = "require-signature", value_name = "cosign:KEY.pub")]
    pub require_signature: Vec<String>,
}

/// `--src-creds`: shared by every command that reads a registry it is given.
#[derive(Debug, Clone, Args)]
pub struct SourceCredsArgs {
    /// USER:PASSWORD for the source registry (in a sync, every source registry).
    #[arg(
        long,
        env = "MIRROR_SRC_CREDS",
        hide_env_values = true,
        value_name = "USER:PASS"
    )]
    pub src_creds: Option<String>,
}

/// `--dest-creds`: shared by every command that writes (or verifies) a
/// registry it is given.
#[derive(Debug, Clone, Args)]
pub struct DestinationCredsArgs {
    /// USER:PASSWORD for the destination registry (in a sync, every
    /// destination registry but ECR).
    #[arg(
        long,
        env = "MIRROR_DEST_CREDS",
        hide_env_values = true,
        value_name = "USER:PASS"
    )]
    pub dest_creds: Option<String>,
}

/// ECR settings: used when the destination is an ECR registry.
#[derive(Debug, Args)]
#[command(next_help_heading = "ECR")]
pub struct EcrArgs {
    /// AWS region (default: from the AWS config chain).
    #[arg(long, env = "AWS_REGION", hide_env = true)]
    pub region: Option<String>,
    /// Tag mutability of repositories mirror creates.
    #[arg(long, value_name = "MODE", value_parser = ["MUTABLE", "IMMUTABLE", "MUTABLE_WITH_EXCLUSION", "IMMUTABLE_WITH_EXCLUSION"])]
    pub tag_mutability: Option<String>,
    /// Tag filter excluded from the mutability mode (wildcards allowed); repeatable.
    #[arg(long = "tag-mutability-exclusion", value_name = "FILTER")]
    pub tag_mutability_exclusions: Vec<String>,
    /// Turn on scan on push for repositories mirror creates.
    #[arg(long)]
    pub scan_on_push: bool,
    /// Encryption of repositories mirror creates.
    #[arg(long, value_parser = ["AES256", "KMS", "KMS_DSSE"])]
    pub encryption: Option<String>,
    /// KMS key for --encryption KMS.
    #[arg(long, value_name = "ARN|ID")]
    pub kms_key: Option<String>,
    /// Resource tag for repositories mirror creates; repeatable.
    #[arg(long = "repo-tag", value_name = "KEY=VALUE")]
    pub repo_tags: Vec<String>,
    /// Fail instead of creating a missing repository.
    #[arg(long)]
    pub no_create: bool,
    /// Manifest PUTs per second per ECR registry (PutImage quota).
    #[arg(long, default_value_t = 10.0)]
    pub manifest_puts_per_second: f64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    // Each usage line is fixed: clap's own lists the flags that were given,
    // and a flag given by an environment variable (MIRROR_DEST_CREDS) then
    // reads as if it were required.
    /// Copy an image (every platform of an index, or one image) to another registry.
    #[command(after_help = EXAMPLES, override_usage = "mirror copy [OPTIONS] <SOURCE> <DESTINATION>")]
    Copy(Box<CopyArgs>),
    /// Keep every image of a YAML file in step with its source (default ./mirror.yaml).
    #[command(after_help = SYNC_EXAMPLES)]
    Sync(SyncArgs),
    /// Show what a reference resolves to: digest, media type, platforms, sizes.
    #[command(override_usage = "mirror inspect [OPTIONS] <REFERENCE>")]
    Inspect(InspectArgs),
    /// Compare source and destination by digest, for the tag and every platform.
    #[command(override_usage = "mirror verify [OPTIONS] <IMAGE> [DESTINATION]")]
    Verify(VerifyArgs),
    /// Create a CloudWatch Logs log group with a retention (idempotent).
    #[command(override_usage = "mirror log-group [OPTIONS] <NAME>")]
    LogGroup(LogGroupArgs),
    /// Point a Dockerfile's FROM lines at their ECR mirrors.
    #[command(override_usage = "mirror rewrite-from [OPTIONS] <DOCKERFILE>")]
    RewriteFrom(RewriteFromArgs),
    /// Print a least-privilege IAM policy for mirroring (push) or pulling.
    #[command(override_usage = "mirror iam-policy <--push|--pull> [OPTIONS] <REPO>...")]
    IamPolicy(IamPolicyArgs),
}

const SYNC_EXAMPLES: &str = "\
The file (key names are stable; relative oci: paths start at the file's directory):
  defaults:
    target: ecr                  # or HOST[/PATH], oci-archive:FILE, oci:DIR
    prefix: base/
    platforms: [linux/amd64, linux/arm64]
    repository: { tag-mutability: MUTABLE, scan-on-push: true }
  images:
    - from: python:3.10-slim-buster
      to: cruddur-python
    - from: node
      tags: { semver: \">=20 <23\", latest: 3, exclude: ['.*-rc.*'] }
    - from: oci:./backend-flask/out:latest
      to: backend-flask:latest
  log-groups:
    - { name: cruddur, retention-days: 1 }

Examples:
  mirror sync                           # ./mirror.yaml
  mirror sync --plan fixtures/walkthrough.yaml
  kubectl get cm mirror -o jsonpath='{.data.mirror\\.yaml}' | mirror sync -f -
  mirror sync --max-source-pulls 80     # stay under Docker Hub's pull limit
  mirror sync --shard 2/4 fleet.yaml    # this runner's quarter of the fleet
  mirror sync --shards 4 fleet.yaml     # in a Kubernetes Indexed Job (JOB_COMPLETION_INDEX)
  mirror sync --every 1h --listen 0.0.0.0:9464 fleet.yaml
                                        # a daemon: a round an hour, /metrics and /healthz

Across an air gap, with the same file on both sides:
  # connected side: every selected image into one archive, each blob once
  mirror sync fleet.yaml --to-archive bundle.tar
  # far side: each image to its target, then bundle.tar.have (what it holds)
  mirror sync fleet.yaml --from-archive bundle.tar
  # next time only the blobs the far side lacks travel; an import into a
  # registry that lacks what was left out is refused, naming the blobs
  mirror sync fleet.yaml --to-archive delta.tar --have bundle.tar.have
  mirror sync fleet.yaml --from-archive delta.tar

Exit codes: 0 everything in step, 1 something failed (after everything else
finished; the summary names each failure), 2 the file or a flag is wrong
(nothing was written), 3 tags were deferred (pull budget spent; run again).
With --every: 0 after SIGTERM, 2 when the file is wrong at the first round.";

/// `--every`: a duration as people write it, at least a second.
fn parse_every(text: &str) -> Result<std::time::Duration, String> {
    let every = humantime::parse_duration(text)
        .map_err(|e| format!("{e} (expected a duration such as 30s, 15m, 1h or 1h 30m)"))?;
    if every < std::time::Duration::from_secs(1) {
        return Err("rounds at least a second apart, please".to_owned());
    }
    Ok(every)
}

/// `mirror sync [FILE]`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The sync file [default: ./mirror.yaml]; `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The sync file, as a flag (`-f -` reads standard input).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "file"
    )]
    pub file_flag: Option<PathBuf>,
    /// List every selected tag as up to date, new, changed, deferred or
    /// conflict; write nothing and GET no manifest (HEADs only).
    #[arg(long)]
    pub plan: bool,
    /// With --plan: GET manifests and HEAD blobs to show the bytes each copy would move.
    #[arg(long, requires = "plan")]
    pub sizes: bool,
    /// Print the plan or the run's report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Start no image after one failed (images in flight finish).
    #[arg(long)]
    pub fail_fast: bool,
    /// Write the run's numbers in the Prometheus text format to PATH when it
    /// ends (atomically, for the node exporter's textfile collector: name
    /// it *.prom).
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Run as a daemon: a round every DURATION (30s, 15m, 1h), each reading
    /// the file again on a fresh engine; a failed round is reported and the
    /// next one runs anyway. SIGTERM or Ctrl-C finishes the round in flight,
    /// then exits (a second one exits at once).
    #[arg(long, value_name = "DURATION", value_parser = parse_every, conflicts_with_all = ["plan", "to_archive", "from_archive"])]
    pub every: Option<std::time::Duration>,
    /// With --every: serve /metrics (Prometheus) and /healthz on ADDR, e.g.
    /// 0.0.0.0:9464.
    #[arg(long, value_name = "ADDR", requires = "every")]
    pub listen: Option<std::net::SocketAddr>,
    /// Copy only this process's share of the tags: shard K (1-based) of N,
    /// split by destination repository, so N processes given 1/N .. N/N
    /// together copy everything once. Shard 1 also ensures the log groups.
    #[arg(long, value_name = "K/N", conflicts_with = "shards")]
    pub shard: Option<mirror_sync::Shard>,
    /// As --shard, K taken from JOB_COMPLETION_INDEX (0-based), which a
    /// Kubernetes Indexed Job with N completions sets in each pod.
    #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<u32>::new().range(1..=10_000))]
    pub shards: Option<u32>,
    /// Manifest GETs allowed per source host (Docker Hub counts them as
    /// pulls); tags past it are deferred, exit 3.
    #[arg(long, value_name = "N")]
    pub max_source_pulls: Option<u64>,
    /// Blob transfers in flight across the whole run (a fleet's many small
    /// blobs are bound by round trips: twice `mirror copy`'s default).
    #[arg(long, default_value_t = mirror_sync::DEFAULT_SYNC_CONCURRENT_BLOBS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub max_concurrent_blobs: usize,
    #[command(flatten)]
    pub image: ImageCopyArgs,
    #[command(flatten)]
    pub src: SourceCredsArgs,
    #[command(flatten)]
    pub dest: DestinationCredsArgs,
    /// AWS region of `target: ecr` and log groups (default: from the AWS config chain).
    #[arg(long, env = "AWS_REGION", hide_env = true)]
    pub region: Option<String>,
    /// Manifest PUTs per second per ECR registry (PutImage quota).
    #[arg(long, default_value_t = 10.0)]
    pub manifest_puts_per_second: f64,
    #[command(flatten)]
    pub transport: TransportArgs,
    #[command(flatten)]
    pub bundle: Box<BundleArgs>,
}

/// `mirror sync --to-archive` / `--from-archive`: a fleet across an air gap.
#[derive(Debug, Args)]
#[command(next_help_heading = "Air gap")]
pub struct BundleArgs {
    /// Write every image the file selects into this one OCI archive (each
    /// blob once), named as its target names it, instead of copying it
    /// there; `--from-archive` on the far side pushes them on.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["from_archive", "plan", "shard", "shards"])]
    pub to_archive: Option<PathBuf>,
    /// With --to-archive: leave out the blobs this digest list names (the
    /// `.have` file the far side's last import wrote): a delta bundle.
    #[arg(long, value_name = "FILE", requires = "to_archive")]
    pub have: Option<PathBuf>,
    /// Push the images of this archive (written by --to-archive) to the
    /// targets the file gives them; a delta whose left-out blobs a
    /// destination lacks is refused before anything is pushed.
    #[arg(long, value_name = "FILE")]
    pub from_archive: Option<PathBuf>,
    /// With --from-archive: where to write the digests the far side holds
    /// after the import [default: ARCHIVE.have].
    #[arg(long, value_name = "PATH", requires = "from_archive")]
    pub write_have: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Source image.
    pub image: String,
    /// Destination (default: the image's mirror in your ECR registry).
    pub destination: Option<String>,
    /// Destination repository (and tag) in ECR.
    #[arg(long, value_name = "NAME[:TAG]")]
    pub to: Option<String>,
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    #[command(flatten)]
    pub src: SourceCredsArgs,
    #[command(flatten)]
    pub dest: DestinationCredsArgs,
    #[arg(long)]
    pub json: bool,
    #[arg(long, env = "AWS_REGION", hide_env = true)]
    pub region: Option<String>,
    #[command(flatten)]
    pub transport: TransportArgs,
}

#[derive(Debug, Args)]
pub struct LogGroupArgs {
    /// Log group name, e.g. /cruddur/fargate-cluster.
    pub name: String,
    /// Days to keep events (one of CloudWatch's allowed values).
    #[arg(long)]
    pub retention_days: Option<i32>,
    #[arg(long, env = "AWS_REGION", hide_env = true)]
    pub region: Option<String>,
}

#[derive(Debug, Args)]
pub struct RewriteFromArgs {
    /// The Dockerfile to rewrite.
    pub dockerfile: PathBuf,
    /// Pin each rewritten image by the digest the mirror holds.
    #[arg(long)]
    pub pin: bool,
    /// Write the file in place (default: print a diff).
    #[arg(long)]
    pub write: bool,
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    #[arg(long, env = "AWS_REGION", hide_env = true)]
    pub region: Option<String>,
    #[command(flatten)]
    pub transport: TransportArgs,
}

#[derive(Debug, Args)]
pub struct IamPolicyArgs {
    /// Policy for the role that mirrors (creates repositories, pushes).
    #[arg(long, conflicts_with = "pull", required_unless_present = "pull")]
    pub push: bool,
    /// Policy for a role that only pulls (ECS task execution role).
    #[arg(long)]
    pub pull: bool,
    /// Also allow the CloudWatch Logs group NAME (push: create it and set its
    /// retention; pull: write to it from ECS tasks); repeatable.
    #[arg(long = "log-group", value_name = "NAME")]
    pub log_groups: Vec<String>,
    /// Repository names (wildcards allowed).
    #[arg(required = true, value_name = "REPO")]
    pub repositories: Vec<String>,
    /// Account id (default: `*`).
    #[arg(long)]
    pub account: Option<String>,
    #[arg(long, env = "AWS_REGION", hide_env = true)]
    pub region: Option<String>,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Source image: `python:3.10-slim-buster`, `host:port/repo:tag`, `repo@sha256:...`,
    /// or a local `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:NAME:TAG]`.
    pub source: String,
    /// Destination: `host[:port]/repo[:tag]`, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, or
    /// `docker-archive:FILE[:NAME:TAG]` for `docker load` (one platform per image: pick one
    /// with --platform; `docker load` keeps its image ID, not its manifest digest; mirror
    /// reads both back). Without a tag the
    /// source's tag (or name) is kept.
    pub destination: String,
    #[command(flatten)]
    pub dest: DestinationCredsArgs,
    #[command(flatten)]
    pub flags: CopyCommandArgs,
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
        value_name = "HOST[:PORT]",
        value_parser = insecure_host
    )]
    pub insecure_registries: Vec<String>,
    /// Also trust the CA certificates in this PEM file; repeatable.
    #[arg(long = "ca-cert", value_name = "FILE")]
    pub ca_certs: Vec<PathBuf>,
    /// Reach HOST through URL (VPC endpoints, proxies); repeatable.
    #[arg(
        long = "registry-endpoint",
        env = "MIRROR_REGISTRY_ENDPOINT",
        value_delimiter = ',',
        value_name = "HOST=URL"
    )]
    pub endpoints: Vec<String>,
    /// Config file with registry-endpoints, insecure-registries, ca-certs
    /// [default: ~/.config/mirror/config.toml if present].
    #[arg(long, env = "MIRROR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Attempts per request and per blob transfer before giving up.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub retries: u32,
    /// The longest `Retry-After` waited for; a registry asking for longer
    /// fails that request at once.
    #[arg(long, value_name = "SECONDS", default_value_t = mirror_engine::DEFAULT_MAX_RETRY_AFTER.as_secs(), value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub max_retry_after: u64,
}

/// `--insecure-registry` takes a bare `HOST[:PORT]`, the form registry hosts
/// are matched in: a scheme or a path would never match any reference.
pub fn insecure_host(text: &str) -> Result<String, String> {
    let given = text.trim();
    let bare = given
        .strip_prefix("http://")
        .or_else(|| given.strip_prefix("https://"))
        .unwrap_or(given);
    let bare = bare.split('/').next().unwrap_or(bare);
    let (host, port, v6) = match bare.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((host, "")) => (host, None, true),
            Some((host, tail)) => (host, Some(tail.strip_prefix(':').unwrap_or(tail)), true),
            None => (rest, None, true),
        },
        None => match bare.split_once(':') {
            Some((host, port)) => (host, Some(port), false),
            None => (bare, None, false),
        },
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') || (v6 && c == ':'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    if !host_ok || !port_ok {
        return Err(format!(
            "`{given}` is not HOST[:PORT] (for example localhost:5000 or registry.internal)"
        ));
    }
    if bare != given {
        return Err(format!(
            "give the registry as HOST[:PORT], without a scheme or a path: {bare}"
        ));
    }
    Ok(bare.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_registries_are_bare_hosts() {
        for good in [
            "localhost:5000",
            "registry.internal",
            "127.0.0.1:5000",
            "[::1]:5000",
        ] {
            assert_eq!(insecure_host(good).as_deref(), Ok(good));
        }
        for (bad, says) in [
            ("http://host:5000", "without a scheme or a path: host:5000"),
            (
                "https://host:5000/",
                "without a scheme or a path: host:5000",
            ),
            ("host:5000/", "without a scheme or a path: host:5000"),
            ("host:5000/v2/", "without a scheme or a path: host:5000"),
            ("host:port", "is not HOST[:PORT]"),
            ("", "is not HOST[:PORT]"),
            ("a b", "is not HOST[:PORT]"),
        ] {
            let error = insecure_host(bad).expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}

#[cfg(test)]
mod flag_names {
    use std::collections::BTreeSet;

    use clap::CommandFactory as _;

    /// Every long flag of every command.
    fn flags() -> BTreeSet<String> {
        fn walk(command: &clap::Command, into: &mut BTreeSet<String>) {
            for arg in command.get_arguments() {
                into.extend(arg.get_long().map(str::to_owned));
            }
            for sub in command.get_subcommands() {
                walk(sub, into);
            }
        }
        let mut flags = BTreeSet::from(["help".to_owned(), "version".to_owned()]);
        walk(&super::Cli::command(), &mut flags);
        flags
    }

    fn named(text: &str) -> Vec<String> {
        let flag = regex::Regex::new(r"(?:^|[^\w-])--([a-z][a-z0-9-]*)").expect("regex");
        flag.captures_iter(text).map(|c| c[1].to_owned()).collect()
    }

    /// `-v` and `-q` are general options: every command's `--help` lists
    /// them under "Options", not under a group such as "ECR" or "Air gap".
    #[test]
    fn verbosity_flags_have_no_group_heading() {
        fn walk(command: &clap::Command) {
            for arg in command.get_arguments() {
                if matches!(arg.get_id().as_str(), "verbose" | "quiet") {
                    assert_eq!(
                        arg.get_help_heading(),
                        None,
                        "--{} under a heading in `{}`",
                        arg.get_id(),
                        command.get_name()
                    );
                }
            }
            for sub in command.get_subcommands() {
                walk(sub);
            }
        }
        let mut root = super::Cli::command();
        root.build();
        walk(&root);
    }

    /// Regression (issue 10.10): hints named a jobs flag and a retry-after
    /// flag that did not exist. Every flag the binary's text names must.
    #[test]
    fn every_flag_the_binary_names_exists() {
        let known = flags();
        for (file, text) in [
            ("cli.rs", include_str!("cli.rs")),
            ("config.rs", include_str!("config.rs")),
            ("failure.rs", include_str!("failure.rs")),
            ("jobs.rs", include_str!("jobs.rs")),
            ("main.rs", include_str!("main.rs")),
            ("airgap.rs", include_str!("airgap.rs")),
            ("progress.rs", include_str!("progress.rs")),
            ("walkthrough.rs", include_str!("walkthrough.rs")),
        ] {
            for flag in named(text) {
                assert!(
                    known.contains(&flag),
                    "{file} names --{flag}, which no mirror command has"
                );
            }
        }
    }

    /// Library errors name no flags (the binary adds hints that do): a flag
    /// belongs to one front end, and the libraries have others (sync files).
    #[test]
    fn library_errors_name_no_flags() {
        for (file, text) in [
            (
                "mirror-engine",
                include_str!("../../crates/mirror-engine/src/error.rs"),
            ),
            (
                "mirror-engine",
                include_str!("../../crates/mirror-engine/src/endpoint.rs"),
            ),
            (
                "mirror-registry",
                include_str!("../../crates/mirror-registry/src/error.rs"),
            ),
            (
                "mirror-ecr",
                include_str!("../../crates/mirror-ecr/src/error.rs"),
            ),
            (
                "mirror-oci",
                include_str!("../../crates/mirror-oci/src/verify.rs"),
            ),
        ] {
            assert_eq!(named(text), Vec::<String>::new(), "{file} names flags");
        }
    }
}
