//! `mirror sync --every D [--listen ADDR]`: rounds of `mirror sync` on a
//! schedule, for a Deployment or a systemd service rather than a CronJob.
//! Each round reads the file again (an edited ConfigMap takes effect at the
//! next round) and runs on a fresh engine and client (fresh tokens, nothing
//! cached between rounds but the metrics). A round starts `D` after the one
//! before it started, or at once when that one overran; rounds never
//! overlap. SIGTERM or SIGINT lets the round in flight finish and then
//! exits 0 (a second signal exits at once); while waiting for the next
//! round it exits at once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mirror_sync::serve::{self, Status};
use tokio::sync::watch;

use crate::Failure;
use crate::cli::SyncArgs;
use crate::failure::Exit;
use crate::jobs::{sync_path, sync_round, write_metrics_file};

pub(crate) async fn run(args: SyncArgs, every: Duration, quiet: bool) -> Result<(), Failure> {
    if sync_path(&args).as_os_str() == "-" {
        return Err(Failure::usage(
            "--every reads the sync file again every round: give its path (a mounted ConfigMap, for example), not `-`",
        ));
    }
    let status = Status::new();
    let server = match args.listen {
        Some(address) => {
            let (bound, task) = serve::listen(address, status.clone())
                .await
                .map_err(|e| Failure::usage(format!("--listen {address}: {e}")))?;
            eprintln!("serving /metrics and /healthz on http://{bound}");
            Some(task)
        }
        None => None,
    };
    let stop = stop_signal()?;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0_u64;
    let result = loop {
        let mut stopping = stop.clone();
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopping.wait_for(|stop| *stop) => break Ok(()),
        }
        round += 1;
        if !quiet {
            eprintln!("round {round}: started");
        }
        let outcome = sync_round(&args, quiet).await;
        let ended = now();
        match outcome {
            Ok(Some(report)) => {
                status.round_ended(Some(&report), ended, None);
                if let Err(failure) = write_metrics_file(&args, &report) {
                    failure.print(None);
                }
                if !quiet {
                    let rounds = status.rounds();
                    eprintln!(
                        "round {round}: ended in {:.1} s, {} of {} failed; {} rounds succeeded, {} failed so far; next in at most {}",
                        report.seconds,
                        report.failed(),
                        report.tags.len() + report.log_groups.len(),
                        rounds.succeeded,
                        rounds.failed,
                        humantime::format_duration(every)
                    );
                }
            }
            // `--plan` conflicts with `--every`: no round ends without a report.
            Ok(None) => status.round_ended(None, ended, Some("no report")),
            // The first round's file and flags must be right: a daemon
            // that starts on a broken file fails where its operator looks.
            // Later (an edited file) and otherwise (a registry down), the
            // round fails and the next one tries again.
            Err(failure) if round == 1 && failure.exit == Exit::Usage => break Err(failure),
            Err(failure) => {
                failure.print(Some(&format!("round {round}")));
                status.round_ended(None, ended, Some(&failure.message));
            }
        }
        if *stop.borrow() {
            break Ok(());
        }
    };
    if let Some(task) = server {
        task.abort();
    }
    if result.is_ok() && !quiet {
        eprintln!("stopped after {round} round(s)");
    }
    result
}

/// Becomes true at the first SIGTERM or SIGINT; the second exits at once.
fn stop_signal() -> Result<watch::Receiver<bool>, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| Failure::transfer(format!("cannot watch for SIGTERM: {e}")))?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| Failure::transfer(format!("cannot watch for SIGINT: {e}")))?;
    let (sender, receiver) = watch::channel(false);
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            seen += 1;
            if seen > 1 {
                eprintln!("{name} again: exiting now");
                std::process::exit(130);
            }
            eprintln!("{name}: finishing the round in flight, then exiting");
            let _ = sender.send(true);
        }
    });
    Ok(receiver)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
