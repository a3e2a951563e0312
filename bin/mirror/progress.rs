//! Progress: bars on a terminal, plain periodic lines otherwise. The engine only
//! bumps atomics; this module reads them on its own timer, off the data path.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mirror_engine::{BlobOutcome, Observer};
use mirror_oci::{Descriptor, Digest};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Lines,
    Off,
}

impl Mode {
    pub fn detect(quiet: bool) -> Self {
        if quiet {
            Self::Off
        } else if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
            Self::Bars
        } else {
            Self::Lines
        }
    }
}

struct Active {
    bytes: Arc<AtomicU64>,
    size: u64,
    bar: Option<ProgressBar>,
}

/// The progress observer handed to the engine.
pub struct Progress {
    mode: Mode,
    started: Instant,
    total_bytes: AtomicU64,
    total_blobs: AtomicU64,
    done_blobs: AtomicU64,
    finished_bytes: AtomicU64,
    active: Mutex<HashMap<Digest, Active>>,
    multi: MultiProgress,
    total_bar: Option<ProgressBar>,
    stopped: AtomicBool,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Progress {
    pub fn new(mode: Mode) -> Arc<Self> {
        let multi = MultiProgress::with_draw_target(match mode {
            Mode::Bars => ProgressDrawTarget::stderr_with_hz(10),
            _ => ProgressDrawTarget::hidden(),
        });
        let total_bar = (mode == Mode::Bars).then(|| {
            let bar = multi.add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix("total");
            bar
        });
        Arc::new(Self {
            mode,
            started: Instant::now(),
            total_bytes: AtomicU64::new(0),
            total_blobs: AtomicU64::new(0),
            done_blobs: AtomicU64::new(0),
            finished_bytes: AtomicU64::new(0),
            active: Mutex::new(HashMap::new()),
            multi,
            total_bar,
            stopped: AtomicBool::new(false),
        })
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Active>> {
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bytes_done(&self) -> u64 {
        let in_flight: u64 = self
            .active()
            .values()
            .map(|a| a.bytes.load(Ordering::Relaxed).min(a.size))
            .sum();
        self.finished_bytes.load(Ordering::Relaxed) + in_flight
    }

    /// Draws on a timer until [`Progress::stop`].
    pub fn spawn_ticker(self: &Arc<Self>) {
        if self.mode == Mode::Off {
            return;
        }
        let this = self.clone();
        let period = match self.mode {
            Mode::Bars => Duration::from_millis(100),
            _ => Duration::from_secs(5),
        };
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if this.stopped.load(Ordering::Relaxed) {
                    break;
                }
                this.draw();
            }
        });
    }

    fn draw(&self) {
        let done = self.bytes_done();
        let total = self.total_bytes.load(Ordering::Relaxed);
        let blobs = self.done_blobs.load(Ordering::Relaxed);
        let blobs_total = self.total_blobs.load(Ordering::Relaxed);
        match self.mode {
            Mode::Bars => {
                for active in self.active().values() {
                    if let Some(bar) = &active.bar {
                        bar.set_position(active.bytes.load(Ordering::Relaxed));
                    }
                }
                if let Some(bar) = &self.total_bar {
                    bar.set_length(total);
                    bar.set_position(done);
                    bar.set_message(format!("{blobs}/{blobs_total} blobs"));
                }
            }
            Mode::Lines => {
                let secs = self.started.elapsed().as_secs_f64().max(0.001);
                eprintln!(
                    "progress: {blobs}/{blobs_total} blobs, {:.1} of {:.1} MiB, {:.1} MiB/s",
                    mib(done),
                    mib(total),
                    mib(done) / secs
                );
            }
            Mode::Off => {}
        }
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        if let Some(bar) = &self.total_bar {
            bar.finish_and_clear();
        }
        for active in self.active().values() {
            if let Some(bar) = &active.bar {
                bar.finish_and_clear();
            }
        }
        let _ = self.multi.clear();
    }

    /// Prints a line without tearing the bars.
    pub fn println(&self, line: &str) {
        match self.mode {
            Mode::Bars => {
                let _ = self.multi.println(line);
            }
            Mode::Lines => eprintln!("{line}"),
            Mode::Off => {}
        }
    }
}

fn short(digest: &Digest) -> String {
    let hex = digest.digest();
    hex.chars().take(12).collect()
}

impl Observer for Progress {
    fn planned(&self, blobs: usize, bytes: u64) {
        self.total_blobs.fetch_add(blobs as u64, Ordering::Relaxed);
        self.total_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn blob_started(&self, descriptor: &Descriptor, bytes: Arc<AtomicU64>) {
        let size = descriptor.size();
        let bar = (self.mode == Mode::Bars && size >= 1024 * 1024).then(|| {
            let bar = self.multi.add(ProgressBar::new(size));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(short(descriptor.digest()));
            bar
        });
        self.active()
            .insert(descriptor.digest().clone(), Active { bytes, size, bar });
    }

    fn blob_finished(&self, descriptor: &Descriptor, outcome: BlobOutcome) {
        self.done_blobs.fetch_add(1, Ordering::Relaxed);
        let removed = self.active().remove(descriptor.digest());
        if let Some(Active { bar: Some(bar), .. }) = &removed {
            bar.finish_and_clear();
            self.multi.remove(bar);
        }
        // Skipped and mounted blobs count as done for the total, too.
        let _ = outcome;
        self.finished_bytes
            .fetch_add(descriptor.size(), Ordering::Relaxed);
    }

    fn blob_retrying(&self, descriptor: &Descriptor, attempt: u32, error: &str) {
        self.println(&format!(
            "retrying blob {} (attempt {} failed): {error}",
            descriptor.digest(),
            attempt
        ));
    }
}
