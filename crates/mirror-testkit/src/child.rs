//! A server run as a child process (the registry, moto) that cannot outlive
//! the test: it is started through a small `sh` wrapper holding a pipe from
//! this process, and when the pipe closes (on drop, or when the test process
//! dies, even by SIGKILL) the wrapper kills it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// The wrapper: starts `$2...` with output to the log `$1`, and a watcher
/// that kills it once our pipe (fd 3) reaches EOF. The shell itself exits
/// when the server does, which is how an early failure shows. Under
/// `ip netns exec` the pid is still the server's: `ip` execs it.
const WRAPPER: &str = r#"exec 3<&0
log=$1
shift
"$@" >>"$log" 2>&1 &
pid=$!
( read -r _unused <&3; kill -9 "$pid" 2>/dev/null ) &
exec 3<&-
wait "$pid"
"#;

/// Why a server did not become ready; both carry its log so far.
pub(crate) enum Ready {
    Exited(String),
    Timeout(String),
}

/// What "ready" means for one kind of server.
pub(crate) struct Readiness<'a> {
    /// A line the server logs once bound: proves that the server answering
    /// is ours, not another process that got the port first.
    pub banner: &'a str,
    /// A URL answered once it serves.
    pub url: &'a str,
    /// Which status of `url` means ready.
    pub ready: fn(u16) -> bool,
    pub timeout: Duration,
}

pub(crate) struct ChildServer {
    log: PathBuf,
    child: Child,
    /// Closing this pipe makes the wrapper kill the server.
    lifeline: Option<ChildStdin>,
}

impl ChildServer {
    /// `sh -c WRAPPER sh LOG`: add the program, its arguments and its
    /// environment, then hand it to [`ChildServer::spawn`].
    pub fn command(log: &Path) -> Command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(WRAPPER).arg("sh").arg(log);
        command
    }

    pub fn spawn(mut command: Command, log: PathBuf, what: &str) -> anyhow::Result<Self> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let lifeline = child.stdin.take();
        Ok(Self {
            log,
            child,
            lifeline,
        })
    }

    /// Everything the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub async fn wait_ready(&mut self, readiness: Readiness<'_>) -> Result<(), Ready> {
        // The banner proves the server is ours; its certificate (if it
        // serves HTTPS) is the test's to check, not the probe's.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| Ready::Timeout(format!("building an HTTP client: {e}")))?;
        let deadline = Instant::now() + readiness.timeout;
        loop {
            if let Ok(Some(_status)) = self.child.try_wait() {
                return Err(Ready::Exited(self.log_text()));
            }
            if self.log_text().contains(readiness.banner)
                && let Ok(response) = client.get(readiness.url).send().await
                && (readiness.ready)(response.status().as_u16())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Ready::Timeout(self.log_text()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stop(&mut self) {
        drop(self.lifeline.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free port of 127.0.0.1 (bound, then released: it can be taken again
/// before the server binds it, which the callers retry).
pub(crate) fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?)
}
