//! Real OCI registries: Debian's `docker-registry` (distribution 2.8) as child
//! processes.
//!
//! The reference implementation is the best judge of what a registry accepts
//! (content negotiation, upload sessions, auth challenges), so tests push to and
//! pull from the real thing. Each [`Registry`] gets its own port and temp dir
//! (config, storage, log, htpasswd) and can run open, with Basic auth (htpasswd,
//! like ECR) or with bearer tokens from a [`TokenServer`] (like Docker Hub),
//! over plain HTTP or HTTPS with a certificate from a [`TestCa`].
//!
//! The child is a [`ChildServer`]: no registry outlives its test.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::bail;

use crate::child::{ChildServer, Readiness, Ready, free_port};
use crate::tls::ServerCert;
#[cfg(doc)]
use crate::tls::TestCa;
use crate::token::TokenServer;

/// How long a registry may take to answer `GET /v2/` after start.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The realm distribution names in its Basic challenge.
const HTPASSWD_REALM: &str = "mirror-testkit";

/// Where a registry runs: by default on a free port of 127.0.0.1 with fresh
/// storage in its temp dir.
#[derive(Default)]
struct Placement {
    /// A network namespace (made by the caller) to run in, via `ip netns exec`.
    netns: Option<String>,
    /// A fixed listen address instead of a free port of 127.0.0.1.
    addr: Option<SocketAddr>,
    /// An existing storage directory instead of a fresh one.
    storage: Option<PathBuf>,
    /// Serve HTTPS (HTTP/2 negotiated by ALPN) with this certificate.
    tls: Option<ServerCert>,
    /// distribution's `http.host`: the base its `Location` headers name
    /// (`http://HOST:PORT`), whatever the request came in on.
    announce: Option<String>,
}

enum Auth {
    Open,
    Htpasswd,
    Token {
        realm: String,
        service: String,
        issuer: String,
        rootcertbundle: PathBuf,
    },
}

/// A running `docker-registry` on 127.0.0.1 (or, from
/// [`Registry::open_in_netns`], on an address of a network namespace), stopped
/// and wiped on drop.
pub struct Registry {
    addr: SocketAddr,
    tls: bool,
    storage: PathBuf,
    htpasswd: Option<PathBuf>,
    users: Mutex<BTreeMap<String, String>>,
    server: ChildServer,
    // Last so it is removed after the process is gone.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("addr", &self.addr)
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry without auth.
    pub async fn open() -> anyhow::Result<Self> {
        Self::start(Auth::Open, BTreeMap::new()).await
    }

    /// A registry without auth serving HTTPS with `cert` (its names must
    /// include 127.0.0.1). With `storage`, it serves that directory, as
    /// [`Registry::open_in_netns`] does.
    pub async fn open_tls(cert: &ServerCert, storage: Option<&Path>) -> anyhow::Result<Self> {
        let placement = Placement {
            storage: storage.map(Path::to_path_buf),
            tls: Some(cert.clone()),
            ..Placement::default()
        };
        Self::start_at(Auth::Open, BTreeMap::new(), placement).await
    }

    /// As [`Registry::open_tls`], but every `Location` it answers with names
    /// `announce` (`http://HOST:PORT`) as its base: a registry behind a
    /// misconfigured TLS front end, sending uploads to plain HTTP.
    pub async fn open_tls_announcing(
        cert: &ServerCert,
        storage: Option<&Path>,
        announce: &str,
    ) -> anyhow::Result<Self> {
        let placement = Placement {
            storage: storage.map(Path::to_path_buf),
            tls: Some(cert.clone()),
            announce: Some(announce.to_owned()),
            ..Placement::default()
        };
        Self::start_at(Auth::Open, BTreeMap::new(), placement).await
    }

    /// A registry without auth inside the network namespace `netns` (made by
    /// the caller, e.g. with `ip netns add`), run with `ip netns exec` and
    /// listening on `addr`, an address of that namespace; over HTTPS with
    /// `tls`. Needs root.
    ///
    /// With `storage`, it serves that directory (for example another
    /// registry's [`Registry::storage_dir`], to serve what was pushed there
    /// without pushing it again) instead of a fresh one. Such a directory is
    /// not removed on drop, but [`Registry::wipe_storage`] does empty it.
    pub async fn open_in_netns(
        netns: &str,
        addr: SocketAddr,
        storage: Option<&Path>,
        tls: Option<&ServerCert>,
    ) -> anyhow::Result<Self> {
        let placement = Placement {
            netns: Some(netns.to_owned()),
            addr: Some(addr),
            storage: storage.map(Path::to_path_buf),
            tls: tls.cloned(),
            announce: None,
        };
        Self::start_at(Auth::Open, BTreeMap::new(), placement).await
    }

    /// A registry with Basic auth for one user (like ECR). More users and
    /// password changes go through [`Registry::set_password`].
    pub async fn htpasswd(user: &str, password: &str) -> anyhow::Result<Self> {
        let users = BTreeMap::from([(user.to_owned(), bcrypt_hash(password)?)]);
        Self::start(Auth::Htpasswd, users).await
    }

    /// A registry that takes bearer tokens from `tokens` (like Docker Hub).
    pub async fn token(tokens: &TokenServer) -> anyhow::Result<Self> {
        Self::start(
            Auth::Token {
                realm: tokens.realm(),
                service: tokens.service(),
                issuer: tokens.issuer(),
                rootcertbundle: tokens.cert_path().to_owned(),
            },
            BTreeMap::new(),
        )
        .await
    }

    async fn start(auth: Auth, users: BTreeMap<String, String>) -> anyhow::Result<Self> {
        Self::start_at(auth, users, Placement::default()).await
    }

    async fn start_at(
        auth: Auth,
        users: BTreeMap<String, String>,
        placement: Placement,
    ) -> anyhow::Result<Self> {
        let program = crate::require_tool("docker-registry", "docker-registry")?;
        // A port picked by binding :0 can be taken by someone else before the
        // registry binds it; that shows as an early exit, so try again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut registry = Self::spawn(&program, &auth, &users, &placement)?;
            match registry.wait_ready().await {
                Ok(()) => return Ok(registry),
                Err(Ready::Exited(text))
                    if text.contains("address already in use")
                        && placement.addr.is_none()
                        && attempts < 5 =>
                {
                    continue;
                }
                Err(Ready::Exited(text)) => {
                    bail!("docker-registry exited before it was ready; its log:\n{text}")
                }
                Err(Ready::Timeout(text)) => bail!(
                    "docker-registry did not answer GET /v2/ within {READY_TIMEOUT:?}; its log:\n{text}"
                ),
            }
        }
    }

    /// Writes config (and htpasswd) into a fresh temp dir and starts the wrapper.
    fn spawn(
        program: &Path,
        auth: &Auth,
        users: &BTreeMap<String, String>,
        placement: &Placement,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("mirror-testkit-registry-")
            .tempdir()?;
        let storage = match &placement.storage {
            Some(storage) => storage.clone(),
            None => {
                let storage = dir.path().join("storage");
                std::fs::create_dir(&storage)?;
                storage
            }
        };
        let log = dir.path().join("registry.log");
        let config = dir.path().join("config.yml");
        let htpasswd = match auth {
            Auth::Htpasswd => {
                let path = dir.path().join("htpasswd");
                write_htpasswd(&path, users)?;
                Some(path)
            }
            _ => None,
        };
        let addr = match placement.addr {
            Some(addr) => addr,
            None => free_port()?,
        };
        std::fs::write(
            &config,
            config_yaml(
                addr,
                &storage,
                auth,
                htpasswd.as_deref(),
                placement.tls.as_ref(),
                placement.announce.as_deref(),
            ),
        )?;
        let mut command = ChildServer::command(&log);
        if let Some(netns) = &placement.netns {
            let ip = crate::require_tool("ip", "iproute2")?;
            command.arg(ip).args(["netns", "exec"]).arg(netns);
        }
        command.arg(program).arg("serve").arg(&config);
        let server = ChildServer::spawn(command, log, "docker-registry")?;
        Ok(Registry {
            addr,
            tls: placement.tls.is_some(),
            storage,
            htpasswd,
            users: Mutex::new(users.clone()),
            server,
            _dir: dir,
        })
    }

    /// The host:port to put in references (`127.0.0.1:PORT`, or the address
    /// given to [`Registry::open_in_netns`]).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `https` for a registry made by [`Registry::open_tls`] (or in a
    /// namespace with a certificate), else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// The socket address the registry listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The filesystem storage root (`docker/registry/v2/...` lives under it).
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// Sets (adds or changes) a user's password in the htpasswd file.
    /// Distribution re-reads the file when its modification time changes, so
    /// this rotates a password on a live registry.
    pub fn set_password(&self, user: &str, password: &str) -> anyhow::Result<()> {
        let Some(path) = &self.htpasswd else {
            bail!("set_password on a registry without htpasswd auth");
        };
        let hash = bcrypt_hash(password)?;
        let mut users = self
            .users
            .lock()
            .map_err(|_| anyhow::anyhow!("htpasswd users lock poisoned"))?;
        users.insert(user.to_owned(), hash);
        write_htpasswd(path, &users)
    }

    /// Removes everything the registry stored (a cold destination for
    /// benchmarks). No cache is configured, so the registry sees it at once.
    pub fn wipe_storage(&self) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(&self.storage)? {
            let path = entry?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// Everything the registry logged so far (logrus text lines and the
    /// combined-format access log).
    pub fn log_text(&self) -> String {
        self.server.log_text()
    }

    async fn wait_ready(&mut self) -> Result<(), Ready> {
        let url = format!("{}://{}/v2/", self.scheme(), self.addr);
        let banner = format!("listening on {}", self.addr);
        self.server
            .wait_ready(Readiness {
                banner: &banner,
                url: &url,
                ready: |status| status == 200 || status == 401,
                timeout: READY_TIMEOUT,
            })
            .await
    }
}

/// A YAML string: JSON strings are valid YAML, and quoting keeps paths with
/// odd characters intact.
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

fn config_yaml(
    addr: SocketAddr,
    storage: &Path,
    auth: &Auth,
    htpasswd: Option<&Path>,
    tls: Option<&ServerCert>,
    announce: Option<&str>,
) -> String {
    let mut yaml = format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
         health:\n  storagedriver:\n    enabled: false\n\
         http:\n  addr: {addr}\n  secret: {secret}\n",
        storage = quoted(&storage.to_string_lossy()),
        addr = quoted(&addr.to_string()),
        secret = quoted(&crate::unique_token()),
    );
    if let Some(tls) = tls {
        yaml.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            quoted(&tls.cert.to_string_lossy()),
            quoted(&tls.key.to_string_lossy()),
        ));
    }
    if let Some(announce) = announce {
        yaml.push_str(&format!("  host: {}\n", quoted(announce)));
    }
    match auth {
        Auth::Open => {}
        Auth::Htpasswd => {
            let path = htpasswd.map(|p| p.to_string_lossy().into_owned());
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: {}\n    path: {}\n",
                quoted(HTPASSWD_REALM),
                quoted(&path.unwrap_or_default()),
            ));
        }
        Auth::Token {
            realm,
            service,
            issuer,
            rootcertbundle,
        } => {
            yaml.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                quoted(realm),
                quoted(service),
                quoted(issuer),
                quoted(&rootcertbundle.to_string_lossy()),
            ));
        }
    }
    yaml
}

/// Distribution's htpasswd accepts bcrypt entries only. Cost 4 is the minimum:
/// tests check passwords often and security is not the point here.
fn bcrypt_hash(password: &str) -> anyhow::Result<String> {
    Ok(bcrypt::hash(password, 4)?)
}

/// Writes the file through a rename and makes sure its modification time
/// moves: distribution reloads the file only when the mtime differs, and two
/// writes within one clock tick would otherwise look unchanged.
fn write_htpasswd(path: &Path, users: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let previous = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        for (user, hash) in users {
            writeln!(file, "{user}:{hash}")?;
        }
        let now = SystemTime::now();
        let mtime = match previous {
            Some(prev) if prev >= now => prev + Duration::from_secs(1),
            _ => now,
        };
        file.set_modified(mtime)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}
