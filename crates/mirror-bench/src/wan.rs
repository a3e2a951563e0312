//! The emulated WAN link: the source registry in a network namespace behind a
//! `tbf` rate limit and an NFQUEUE program that adds the round-trip time. Two
//! registries serve the same storage there, one over plain HTTP and one over
//! HTTPS, so the plain and TLS profiles share one link.

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context as _, bail};
use mirror_testkit::{PushAuth, Registry, ServerCert};

use crate::args::Args;
use crate::machine::workspace_root;
use crate::scenarios::Corpus;

pub(crate) const NETNS: &str = "mirror-bench";
pub(crate) const VETH_HOST: &str = "mbench-h";
pub(crate) const VETH_NS: &str = "mbench-n";
pub(crate) const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
pub(crate) const NS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
pub(crate) const NS_PORT: u16 = 5000;
pub(crate) const NS_TLS_PORT: u16 = 5443;
pub(crate) const NFQUEUE_NUM: u16 = 4213;
pub(crate) const NFQ_DELAY_PY: &str = include_str!("../nfq_delay.py");

/// The emulated WAN link and the source registries behind it. Dropping it
/// stops the registries and the delay program and deletes the namespace
/// (with its veth pair, qdiscs and iptables rules).
pub(crate) struct Wan {
    pub(crate) registry: Option<Registry>,
    pub(crate) registry_tls: Option<Registry>,
    pub(crate) delay: Option<std::process::Child>,
    /// Why there is no added delay, if there is none.
    pub(crate) no_delay: Option<String>,
    pub(crate) connect_ms: Option<f64>,
    pub(crate) mbit: Option<f64>,
    /// Holds the delay program's script.
    pub(crate) dir: tempfile::TempDir,
}

impl Wan {
    pub(crate) async fn start(
        args: &Args,
        storage: &Path,
        python: &Corpus,
        certificate: &ServerCert,
    ) -> anyhow::Result<Self> {
        // A namespace left by a run that was killed would hold our addresses.
        if netns_exists(NETNS) {
            eprintln!("removing the network namespace {NETNS} left by an earlier run");
            cmd("ip", &["netns", "del", NETNS])?;
        }
        if Path::new("/sys/class/net").join(VETH_HOST).exists() {
            cmd("ip", &["link", "del", VETH_HOST])?;
        }
        let mut wan = Wan {
            registry: None,
            registry_tls: None,
            delay: None,
            no_delay: None,
            connect_ms: None,
            mbit: None,
            dir: tempfile::Builder::new()
                .prefix("mirror-bench-wan-")
                .tempdir()?,
        };
        let host_cidr = format!("{HOST_ADDR}/30");
        let ns_cidr = format!("{NS_ADDR}/30");
        let tbf = [
            "root", "tbf", "rate", &args.rate, "burst", "256kb", "latency", "50ms",
        ];
        cmd("ip", &["netns", "add", NETNS])?;
        cmd(
            "ip",
            &[
                "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS,
            ],
        )?;
        cmd("ip", &["link", "set", VETH_NS, "netns", NETNS])?;
        cmd("ip", &["addr", "add", &host_cidr, "dev", VETH_HOST])?;
        cmd("ip", &["link", "set", VETH_HOST, "up"])?;
        in_netns(&["ip", "addr", "add", &ns_cidr, "dev", VETH_NS])?;
        in_netns(&["ip", "link", "set", VETH_NS, "up"])?;
        in_netns(&["ip", "link", "set", "lo", "up"])?;
        cmd(
            "tc",
            &[&["qdisc", "add", "dev", VETH_HOST][..], &tbf[..]].concat(),
        )?;
        in_netns(&[&["tc", "qdisc", "add", "dev", VETH_NS][..], &tbf[..]].concat())?;

        if args.rtt_ms > 0 {
            match wan.start_delay(args) {
                Ok(()) => {}
                Err(e) => {
                    let reason = format!("{e:#}");
                    eprintln!(
                        "WARNING: no added delay on the WAN link, rate limit only: {reason}\n\
                         (scripts/bench.sh installs NetfilterQueue into .venv)"
                    );
                    wan.no_delay = Some(reason);
                }
            }
        } else {
            wan.no_delay = Some("--rtt-ms 0".to_owned());
        }

        let addr = SocketAddr::from((NS_ADDR, NS_PORT));
        let registry = Registry::open_in_netns(NETNS, addr, Some(storage), None).await?;
        wan.measure_link(&registry, python).await?;
        wan.registry = Some(registry);
        let addr = SocketAddr::from((NS_ADDR, NS_TLS_PORT));
        wan.registry_tls =
            Some(Registry::open_in_netns(NETNS, addr, Some(storage), Some(certificate)).await?);
        Ok(wan)
    }

    /// The source registry across the link: over HTTPS or plain HTTP.
    pub(crate) fn registry(&self, tls: bool) -> Option<&Registry> {
        if tls {
            self.registry_tls.as_ref()
        } else {
            self.registry.as_ref()
        }
    }

    /// Starts the NFQUEUE program in the namespace, then sends it every
    /// packet that enters the namespace.
    pub(crate) fn start_delay(&mut self, args: &Args) -> anyhow::Result<()> {
        let python = args
            .python
            .clone()
            .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
        if !python.is_file() {
            bail!("{} does not exist", python.display());
        }
        let script = self.dir.path().join("nfq_delay.py");
        std::fs::write(&script, NFQ_DELAY_PY)?;
        // Niced: a starved delay program would add delay of its own.
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", NETNS, "nice", "-n", "-10"])
            .arg(&python)
            .arg(&script)
            .arg(NFQUEUE_NUM.to_string())
            .arg(args.rtt_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the NFQUEUE delay program")?;
        let mut first = String::new();
        if let Some(stdout) = child.stdout.take() {
            BufReader::new(stdout).read_line(&mut first)?;
        }
        if first.trim() != "ready" {
            drop(child.stdin.take());
            let _ = child.kill();
            let output = child.wait_with_output()?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().last().unwrap_or("no output");
            bail!(
                "the NFQUEUE delay program ({}) did not start: {last}",
                python.display()
            );
        }
        self.delay = Some(child);
        in_netns(&[
            "iptables",
            "-A",
            "INPUT",
            "-i",
            VETH_NS,
            "-j",
            "NFQUEUE",
            "--queue-num",
            &NFQUEUE_NUM.to_string(),
        ])?;
        Ok(())
    }

    /// Connect time (one RTT) and the throughput of one download of the
    /// largest blob, for the report.
    pub(crate) async fn measure_link(
        &mut self,
        registry: &Registry,
        python: &Corpus,
    ) -> anyhow::Result<()> {
        let mut best: Option<f64> = None;
        for _ in 0..3 {
            let started = Instant::now();
            let stream = tokio::net::TcpStream::connect(registry.addr()).await?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            drop(stream);
            best = Some(best.map_or(ms, |b: f64| b.min(ms)));
        }
        self.connect_ms = best;
        let Some(blob) = python.image.blobs.iter().max_by_key(|b| b.size()) else {
            return Ok(());
        };
        let started = Instant::now();
        let got = mirror_testkit::fetch_blob_digest(
            &registry.host(),
            python.repo,
            blob.digest(),
            &PushAuth::Anonymous,
        )
        .await?;
        let secs = started.elapsed().as_secs_f64();
        if &got != blob.digest() {
            bail!("the WAN source served other bytes for {}", blob.digest());
        }
        self.mbit = Some(blob.size() as f64 * 8.0 / secs / 1e6);
        eprintln!(
            "WAN link: connect {:.1} ms, one {:.0} MB blob at {:.0} Mbit/s",
            best.unwrap_or_default(),
            blob.size() as f64 / 1e6,
            self.mbit.unwrap_or_default()
        );
        Ok(())
    }

    pub(crate) fn describe(&self, args: &Args) -> String {
        let delay = match &self.no_delay {
            None => format!("+{} ms RTT (NFQUEUE)", args.rtt_ms),
            Some(reason) => format!("NO added delay ({reason}), rate limit only"),
        };
        format!(
            "wan tls / wan: source registry in a network namespace over a veth pair (HTTPS on one port, plain HTTP on another, one storage), tbf {} both ways, {delay}; measured: TCP connect {:.1} ms, one blob download {:.0} Mbit/s; destination on 127.0.0.1 (wan tls: HTTPS; wan: plain behind a recording proxy); requests counted from the access logs (wan: the destination's by the proxy)",
            args.rate,
            self.connect_ms.unwrap_or_default(),
            self.mbit.unwrap_or_default(),
        )
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        drop(self.registry.take());
        drop(self.registry_tls.take());
        if let Some(mut delay) = self.delay.take() {
            drop(delay.stdin.take());
            let _ = delay.kill();
            let _ = delay.wait();
        }
        if netns_exists(NETNS)
            && let Err(e) = cmd("ip", &["netns", "del", NETNS])
        {
            eprintln!("cleaning up the WAN link: {e:#}");
        }
        // The host end goes with the namespace's end; make sure.
        if Path::new("/sys/class/net").join(VETH_HOST).exists() {
            let _ = cmd("ip", &["link", "del", VETH_HOST]);
        }
    }
}

pub(crate) fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Runs a short command, failing with its stderr.
pub(crate) fn cmd(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

pub(crate) fn in_netns(command: &[&str]) -> anyhow::Result<()> {
    cmd("ip", &[&["netns", "exec", NETNS][..], command].concat())
}
