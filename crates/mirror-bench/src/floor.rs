//! The floors a copier is measured against, measured on the machine in the
//! same run.
//!
//! CPU: a registry-to-registry copy cannot do less than hash every byte once
//! (sha256, the fastest implementation the machine has: the `sha2` crate
//! with SHA-NI where the CPU has it, or aws-lc) and let the kernel copy it
//! out of one socket and into another. TLS adds record decryption and
//! encryption on top, which the floor leaves out. Wall time over the WAN:
//! the distinct blob bytes at the link's rate.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};

use anyhow::{Context as _, bail};

/// Bytes hashed and relayed to measure the floor.
const SAMPLE: usize = 256 << 20;
/// Read and write size of the relay: large, so syscalls cost little.
const RELAY_BUFFER: usize = 256 << 10;

/// Measured costs per byte, in CPU seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuFloor {
    /// sha256 with the `sha2` crate (what mirror uses), bytes per CPU second.
    pub(crate) sha2_rate: f64,
    /// sha256 with aws-lc, bytes per CPU second.
    pub(crate) aws_lc_rate: f64,
    /// One socket to another through user space, bytes per CPU second.
    pub(crate) relay_rate: f64,
}

impl CpuFloor {
    /// Measures on this machine (about a second of CPU).
    pub(crate) fn measure() -> anyhow::Result<Self> {
        let data: Vec<u8> = (0..SAMPLE).map(|i| (i * 7 + i / 4096) as u8).collect();
        let chunk = 64 << 10;
        let sha2_rate = rate(SAMPLE, || {
            let digest = mirror_oci::parse_digest(&format!("sha256:{}", "0".repeat(64)))?;
            let mut hasher = mirror_oci::Hasher::for_digest(&digest).context("a sha256 hasher")?;
            for piece in data.chunks(chunk) {
                hasher.update(piece);
            }
            std::hint::black_box(hasher.finish());
            Ok(())
        })?;
        let aws_lc_rate = rate(SAMPLE, || {
            let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            for piece in data.chunks(chunk) {
                context.update(piece);
            }
            std::hint::black_box(context.finish());
            Ok(())
        })?;
        drop(data);
        let relay_rate = relay_rate()?;
        Ok(Self {
            sha2_rate,
            aws_lc_rate,
            relay_rate,
        })
    }

    /// CPU seconds the floor takes for `bytes`.
    pub(crate) fn seconds(&self, bytes: f64) -> f64 {
        bytes / self.sha2_rate.max(self.aws_lc_rate) + bytes / self.relay_rate
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "CPU floor (measured in this run): sha256 of every byte once ({:.2} GB/s with sha2, which mirror uses; {:.2} GB/s with aws-lc; the faster counts) plus one user-space relay between two loopback TCP sockets ({:.2} GB/s); `x floor` = CPU s / (blob bytes x that cost); TLS record encryption is not in the floor",
            self.sha2_rate / 1e9,
            self.aws_lc_rate / 1e9,
            self.relay_rate / 1e9,
        )
    }
}

/// Bytes per CPU second of the calling thread for `work` over `bytes`.
fn rate(bytes: usize, work: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let before = thread_cpu_ns()?;
    work()?;
    let spent = thread_cpu_ns()? - before;
    if spent == 0 {
        bail!("no CPU time measured");
    }
    Ok(bytes as f64 / (spent as f64 / 1e9))
}

/// Relays `SAMPLE` bytes from one loopback TCP connection to another on
/// this thread; bytes per CPU second of this thread.
fn relay_rate() -> anyhow::Result<f64> {
    let inbound = TcpListener::bind("127.0.0.1:0")?;
    let outbound = TcpListener::bind("127.0.0.1:0")?;
    let inbound_addr = inbound.local_addr()?;
    let outbound_addr = outbound.local_addr()?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let mut stream = TcpStream::connect(inbound_addr)?;
        let block = vec![0x5a_u8; 1 << 20];
        for _ in 0..SAMPLE / block.len() {
            stream.write_all(&block)?;
        }
        Ok(())
    });
    let sink = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut stream, _) = outbound.accept()?;
        std::io::copy(&mut stream, &mut std::io::sink())
    });
    let (mut from, _) = inbound.accept()?;
    let mut to = TcpStream::connect(outbound_addr)?;
    let mut buffer = vec![0_u8; RELAY_BUFFER];
    let measured = rate(SAMPLE, || {
        loop {
            let n = from.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            to.write_all(&buffer[..n])?;
        }
        Ok(())
    })?;
    drop(to);
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("the relay's sender panicked"))??;
    let received = sink
        .join()
        .map_err(|_| anyhow::anyhow!("the relay's sink panicked"))??;
    if received != SAMPLE as u64 {
        bail!("the relay moved {received} of {SAMPLE} bytes");
    }
    Ok(measured)
}

/// CPU time of the calling thread, in nanoseconds (`/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("reading /proc/thread-self/schedstat")?;
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("parsing /proc/thread-self/schedstat")
}

/// A tc rate (`200mbit`, `1gbit`, `500kbit`, `10mbps` = bytes) in bits per
/// second.
pub(crate) fn link_bits_per_second(rate: &str) -> Option<f64> {
    let rate = rate.trim().to_ascii_lowercase();
    let split = rate.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = rate.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => return None,
    };
    Some(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tc_rates_read_as_tc_reads_them() {
        assert_eq!(link_bits_per_second("200mbit"), Some(200e6));
        assert_eq!(link_bits_per_second("1gbit"), Some(1e9));
        assert_eq!(link_bits_per_second("10mbps"), Some(80e6));
        assert_eq!(link_bits_per_second("fast"), None);
    }
}
