//! A certificate authority made for one test bed, and server certificates it
//! signs, so registries can serve HTTPS (and HTTP/2, which only TLS
//! negotiates) with a trust chain clients check for real.
//!
//! Every real registry is reached over TLS: plain HTTP hides the cost of the
//! handshake and the record layer, and never multiplexes requests as HTTP/2
//! streams on one connection. Clients trust the CA the way users trust a
//! corporate one: `mirror --ca-cert` [`TestCa::ca_path`], skopeo's
//! `--src-cert-dir` / `--dest-cert-dir` [`TestCa::cert_dir`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// A CA on disk (`ca.pem`, and `certs/ca.crt` for skopeo and podman) that
/// signs server certificates; removed on drop.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    dir: tempfile::TempDir,
    issued: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// A server certificate and its key, as PEM files (what distribution's
/// `http.tls` takes).
#[derive(Debug, Clone)]
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A fresh CA (ECDSA P-256, as most registries' certificates are today).
    pub fn new() -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating the CA key")?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mirror-testkit CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key)?;
        let dir = tempfile::Builder::new()
            .prefix("mirror-testkit-ca-")
            .tempdir()?;
        std::fs::write(dir.path().join("ca.pem"), cert.pem())?;
        std::fs::create_dir(dir.path().join("certs"))?;
        std::fs::write(dir.path().join("certs/ca.crt"), cert.pem())?;
        Ok(Self {
            issuer: rcgen::Issuer::new(params, key),
            dir,
            issued: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The CA certificate (PEM): `mirror --ca-cert`.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A directory holding only `ca.crt`: skopeo's `--src-cert-dir` /
    /// `--dest-cert-dir`.
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// Signs a server certificate valid for `ips` and `names` (its subject
    /// alternative names), written beside the CA.
    pub fn server(&self, ips: &[IpAddr], names: &[&str]) -> anyhow::Result<ServerCert> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating a server key")?;
        let sans: Vec<String> = ips
            .iter()
            .map(IpAddr::to_string)
            .chain(names.iter().map(|n| (*n).to_owned()))
            .collect();
        let mut params = rcgen::CertificateParams::new(sans)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mirror-testkit registry");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        let n = self
            .issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let files = ServerCert {
            cert: self.dir.path().join(format!("server-{n}.pem")),
            key: self.dir.path().join(format!("server-{n}.key")),
        };
        std::fs::write(&files.cert, cert.pem())?;
        write_private(&files.key, &key.serialize_pem())?;
        Ok(files)
    }
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}
