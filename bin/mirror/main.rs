//! `mirror`: a thin CLI over `mirror-sync` (and `mirror-ecr` for the rest of
//! the walkthrough). Parses arguments, builds the registry client, runs one
//! library call, prints the report and turns failures into
//! `error:`/`cause:`/`hint:` lines and exit codes (0 ok, 1 transfer failure,
//! 2 usage, 3 deferred: the source pull budget ran out; see [`failure`]).

mod airgap;
mod cli;
mod config;
mod daemon;
mod failure;
mod jobs;
mod progress;
mod walkthrough;

use std::collections::HashMap;
use std::process::ExitCode;

use clap::Parser as _;
use indicatif::BinaryBytes;
use mirror_layout::FileLocation;
use mirror_oci::{Reference, platform_string};
use mirror_registry::{ClientOptions, CredentialStore, Credentials, RegistryClient, RetryPolicy};
use mirror_sync::ImageLocation;
use serde_json::json;

use crate::cli::{Cli, Command, InspectArgs, TransportArgs};
use crate::config::FileConfig;

pub(crate) use crate::failure::Failure;

/// How long the end of a run waits for the cancellation of upload sessions
/// that transfers cancelled by a failure left open (one DELETE each).
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Tokio reads TOKIO_WORKER_THREADS itself unless told a number here.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(worker_threads());
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            None if cli.mirror.images.is_empty() => Err(Failure::usage(
                "no image given: try `mirror python:3.10-slim-buster` (into your ECR registry) or `mirror copy SRC DST`; see `mirror --help`",
            )),
            None => jobs::mirror_to_ecr(cli.mirror, cli.quiet).await,
            Some(Command::Copy(args)) => jobs::copy(*args, cli.quiet).await,
            Some(Command::Sync(args)) => jobs::sync(args, cli.quiet).await,
            Some(Command::Inspect(args)) => inspect(args).await,
            Some(Command::Verify(args)) => jobs::verify(args).await,
            Some(Command::LogGroup(args)) => walkthrough::log_group(args).await,
            Some(Command::RewriteFrom(args)) => walkthrough::rewrite_from(args).await,
            Some(Command::IamPolicy(args)) => walkthrough::iam_policy(args),
        }
    });
    // Upload sessions of transfers a failure cancelled are closed before exit.
    runtime.block_on(mirror_engine::settle(SETTLE_LIMIT));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.print(None);
            ExitCode::from(failure.exit.code())
        }
    }
}

/// One runtime worker per two cores (at least one). A blob's GET, hashing
/// and upload run on one task, and a worker keeps up with about 400 MB/s of
/// TLS in and out (README, Benchmark); more workers than that mostly wake
/// each other. Measured on 2 cores, one worker against two: 8% less CPU on
/// the python corpus and 12% less on the fleet, 2 MiB less peak memory, the
/// same or shorter wall time (the registries get the other core).
/// `TOKIO_WORKER_THREADS` overrides it.
fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .div_ceil(2)
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        // The AWS SDK warns about every credential provider it tries; the
        // error it ends with says what matters.
        (false, 0) => "warn,aws_config=error,aws_smithy_runtime=error",
        (false, 1) => "info,aws_config=warn,aws_smithy_runtime=warn",
        (false, _) => "debug,hyper=info,rustls=info,h2=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colours_on_stderr())
        .with_target(false)
        .init();
}

/// Colours only for a person at a terminal: never into a pipe or a file,
/// never under CI, never with `NO_COLOR` set (<https://no-color.org>).
fn colours_on_stderr() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal()
        && std::env::var_os("CI").is_none()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub(crate) fn parse_reference(text: &str, what: &str) -> Result<Reference, Failure> {
    text.parse::<Reference>()
        .map_err(|e| Failure::usage(format!("{what} `{text}`: {e}")))
}

pub(crate) fn parse_credentials(
    text: Option<&str>,
    flag: &str,
) -> Result<Option<Credentials>, Failure> {
    text.map(|t| {
        Credentials::parse_user_password(t).map_err(|e| Failure::usage(format!("{flag}: {e}")))
    })
    .transpose()
}

pub(crate) fn client(transport: &TransportArgs) -> Result<RegistryClient, Failure> {
    let (file, file_path) = FileConfig::load(transport.config.as_deref())?;
    let mut endpoints = HashMap::new();
    let from_file = file.registry_endpoints.iter().map(|(host, url)| {
        let origin = match &file_path {
            Some(path) => format!("registry-endpoints in {}", path.display()),
            None => "registry-endpoints".to_owned(),
        };
        (host.clone(), url.clone(), origin)
    });
    // Command line and environment last: they replace the file's entry for a host.
    let given = transport.endpoints.iter().map(|entry| {
        let (host, url) = entry.split_once('=').unwrap_or((entry, ""));
        (
            host.to_owned(),
            url.to_owned(),
            format!("--registry-endpoint `{entry}`"),
        )
    });
    for (host, url, origin) in from_file.chain(given) {
        if host.trim().is_empty() || url.is_empty() {
            return Err(Failure::usage(format!(
                "{origin}: expected HOST=URL, for example 123456789012.dkr.ecr.us-east-1.amazonaws.com=https://vpce-0abc.dkr.ecr.us-east-1.vpce.amazonaws.com"
            )));
        }
        let url = url::Url::parse(&url)
            .map_err(|e| Failure::usage(format!("{origin}: `{url}` for {host}: {e}")))?;
        endpoints.insert(host.trim().to_owned(), url);
    }
    let mut insecure_registries = transport.insecure_registries.clone();
    for host in &file.insecure_registries {
        let origin = file_path
            .as_ref()
            .map_or_else(String::new, |path| format!(" in {}", path.display()));
        insecure_registries.push(
            cli::insecure_host(host)
                .map_err(|e| Failure::usage(format!("insecure-registries{origin}: {e}")))?,
        );
    }
    let options = ClientOptions {
        insecure_registries,
        ca_certs: file
            .ca_certs
            .iter()
            .chain(&transport.ca_certs)
            .cloned()
            .collect(),
        endpoints,
        retry: RetryPolicy {
            max_attempts: transport.retries,
            max_retry_after: std::time::Duration::from_secs(transport.max_retry_after),
            ..RetryPolicy::default()
        },
        ..ClientOptions::default()
    };
    RegistryClient::new(options, CredentialStore::from_environment()).map_err(Failure::from)
}

pub(crate) fn source_reference(source: &Reference) -> String {
    match source.digest() {
        Some(digest) => digest.to_string(),
        None => source.tag().unwrap_or("latest").to_owned(),
    }
}

/// `mirror inspect oci:DIR` / `oci-archive:FILE`: what a layout holds.
async fn inspect_local(location: &FileLocation, json: bool) -> Result<(), Failure> {
    let entries = mirror_layout::list(location).await?;
    if json {
        let items: Vec<serde_json::Value> = entries
            .iter()
            .map(|(name, d)| {
                json!({"name": name, "digest": d.digest().to_string(), "media_type": d.media_type().to_string(), "size": d.size()})
            })
            .collect();
        println!(
            "{}",
            json!({"location": location.to_string(), "images": items})
        );
        return Ok(());
    }
    println!("{location}: {} image(s)", entries.len());
    for (name, d) in &entries {
        println!(
            "  {:<24} {} {}",
            name.as_deref().unwrap_or("(untagged)"),
            d.digest(),
            d.media_type()
        );
    }
    Ok(())
}

/// A descriptor as `mirror inspect --json` lists it.
fn descriptor_json(d: &mirror_oci::Descriptor) -> serde_json::Value {
    json!({
        "digest": d.digest().to_string(),
        "media_type": d.media_type().to_string(),
        "size": d.size(),
    })
}

async fn inspect(args: InspectArgs) -> Result<(), Failure> {
    let location = ImageLocation::parse(&args.reference)
        .map_err(|e| Failure::from(e).context(format!("reference `{}`", args.reference)))?;
    let reference = match location {
        ImageLocation::File(file) => return inspect_local(&file, args.json).await,
        ImageLocation::Registry(reference) => reference,
    };
    let creds = parse_credentials(args.creds.as_deref(), "--creds")?;
    let client = client(&args.transport)?;
    let repo = client.repository(&reference, creds)?;
    let wanted = source_reference(&reference);
    let head = repo
        .head_manifest(&wanted)
        .await?
        .ok_or_else(|| Failure::transfer(format!("{reference} was not found")))?;
    let manifest = repo
        .get_manifest(head.digest.as_ref(), Some(&head.digest))
        .await?;
    let children: Vec<serde_json::Value> = manifest
        .children()
        .iter()
        .map(|d| {
            let mut child = descriptor_json(d);
            child["platform"] = json!(d.platform().as_ref().map(platform_string));
            child
        })
        .collect();
    let blobs: Vec<serde_json::Value> = manifest.blobs().into_iter().map(descriptor_json).collect();
    if args.json {
        let value = json!({
            "reference": reference.to_string(),
            "digest": manifest.digest().to_string(),
            "media_type": manifest.media_type(),
            "size": manifest.size(),
            "kind": if manifest.is_index() { "index" } else { "image" },
            "manifests": children,
            "blobs": blobs,
        });
        println!("{value}");
        return Ok(());
    }
    println!("{reference}");
    println!("  digest:     {}", manifest.digest());
    println!("  media type: {}", manifest.media_type());
    println!("  size:       {} bytes", manifest.size());
    if manifest.is_index() {
        println!("  manifests:  {}", manifest.children().len());
        for d in manifest.children() {
            println!(
                "    {:<16} {} {:>8}",
                d.platform()
                    .as_ref()
                    .map(platform_string)
                    .unwrap_or_else(|| "-".to_owned()),
                d.digest(),
                BinaryBytes(d.size()).to_string()
            );
        }
    } else {
        let total: u64 = manifest.blobs().iter().map(|d| d.size()).sum();
        println!(
            "  blobs:      {} ({} total)",
            blobs.len(),
            BinaryBytes(total)
        );
        for d in manifest.blobs() {
            println!(
                "    {} {:>10} {}",
                d.digest(),
                BinaryBytes(d.size()).to_string(),
                d.media_type()
            );
        }
    }
    Ok(())
}
