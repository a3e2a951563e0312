//! What hangs off an image from outside, made the way the tools in the field
//! make it, for tests: cosign signatures (a "simple signing" payload signed
//! ECDSA P-256 / SHA-256), SPDX SBOMs and in-toto provenance, as OCI 1.1
//! referrers (`subject`, `artifactType`, the empty config) or as the
//! manifests cosign stores at its `sha256-<hex>.sig` / `.att` tags.
//!
//! Keys and signatures come from an independent implementation, Python's
//! `cryptography` (installed in the test venv by `scripts/test.sh`), never
//! from mirror's own code: a test then checks mirror against someone else's
//! idea of a valid signature.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use mirror_oci::{Digest, digest_of};
use serde_json::{Value, json};

const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const COSIGN_SIGNATURE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const SPDX: &str = "application/spdx+json";
const IN_TOTO: &str = "application/vnd.in-toto+json";
const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
const CREATED: &str = "2024-01-01T00:00:00Z";

/// The Python that has `cryptography`: `MIRROR_TEST_PYTHON`, else the
/// workspace's `.venv/bin/python3`, else `python3` on `PATH`.
pub fn find_python() -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("MIRROR_TEST_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python3"),
            PathBuf::from("python3"),
        ])
        .collect();
    for python in candidates {
        let works = Command::new(&python)
            .args(["-c", "import cryptography"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if works {
            return Ok(python);
        }
    }
    bail!(
        "no Python with `cryptography` (the test venv's, .venv/bin/python3): run ./scripts/test.sh, \
         or .venv/bin/pip install cryptography"
    )
}

fn python(script: &str, args: &[&Path], input: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut child = Command::new(find_python()?)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting python")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "python failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output.stdout)
}

/// An ECDSA P-256 key pair in PEM files, as `cosign generate-key-pair`
/// makes one (the private key unencrypted, for the test).
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub private_pem: PathBuf,
    /// The public key (`cosign.pub`): a PEM `PUBLIC KEY`.
    pub public_pem: PathBuf,
}

impl SigningKey {
    /// A new key pair as `DIR/NAME.key` and `DIR/NAME.pub`.
    pub fn generate(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let key = Self {
            private_pem: dir.join(format!("{name}.key")),
            public_pem: dir.join(format!("{name}.pub")),
        };
        python(
            "import sys\n\
             from cryptography.hazmat.primitives import serialization\n\
             from cryptography.hazmat.primitives.asymmetric import ec\n\
             k = ec.generate_private_key(ec.SECP256R1())\n\
             open(sys.argv[1], 'wb').write(k.private_bytes(serialization.Encoding.PEM, \
             serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))\n\
             open(sys.argv[2], 'wb').write(k.public_key().public_bytes(serialization.Encoding.PEM, \
             serialization.PublicFormat.SubjectPublicKeyInfo))\n",
            &[&key.private_pem, &key.public_pem],
            b"",
        )
        .context("generating a P-256 key with Python's cryptography")?;
        Ok(key)
    }

    /// The base64 ASN.1 ECDSA P-256 / SHA-256 signature of `payload`, as
    /// cosign puts it in the `dev.cosignproject.cosign/signature` annotation.
    pub fn sign(&self, payload: &[u8]) -> anyhow::Result<String> {
        let out = python(
            "import sys, base64\n\
             from cryptography.hazmat.primitives import hashes, serialization\n\
             from cryptography.hazmat.primitives.asymmetric import ec\n\
             k = serialization.load_pem_private_key(open(sys.argv[1], 'rb').read(), password=None)\n\
             sys.stdout.write(base64.b64encode(k.sign(sys.stdin.buffer.read(), \
             ec.ECDSA(hashes.SHA256()))).decode())\n",
            &[&self.private_pem],
            payload,
        )
        .context("signing with Python's cryptography")?;
        Ok(String::from_utf8(out)?)
    }
}

/// cosign's simple-signing payload for the image `digest`, as cosign writes it.
pub fn cosign_payload(reference: &str, digest: &str) -> Vec<u8> {
    json!({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    })
    .to_string()
    .into_bytes()
}

/// What an artifact refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Subject {
    /// The subject a manifest's exact bytes make.
    pub fn of(media_type: &str, manifest: &[u8]) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest: digest_of(manifest).to_string(),
            size: manifest.len() as u64,
        }
    }

    fn json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// A manifest and the blobs it references, ready to push.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub manifest: Bytes,
    pub media_type: String,
    pub digest: Digest,
    pub blobs: Vec<Bytes>,
}

impl Artifact {
    fn build(manifest: Value, blobs: Vec<Bytes>) -> Self {
        let manifest = Bytes::from(manifest.to_string());
        Self {
            digest: digest_of(&manifest),
            media_type: OCI_MANIFEST.to_owned(),
            manifest,
            blobs,
        }
    }

    /// This manifest as the subject of another.
    pub fn as_subject(&self) -> Subject {
        Subject::of(&self.media_type, &self.manifest)
    }

    /// The descriptor a referrers index lists for this artifact.
    pub fn listing(&self) -> Value {
        let value: Value = serde_json::from_slice(&self.manifest).unwrap_or(Value::Null);
        let mut descriptor = json!({
            "mediaType": self.media_type,
            "digest": self.digest.to_string(),
            "size": self.manifest.len(),
        });
        if let Some(t) = value
            .get("artifactType")
            .or_else(|| value.pointer("/config/mediaType"))
        {
            descriptor["artifactType"] = t.clone();
        }
        if let Some(a) = value.get("annotations") {
            descriptor["annotations"] = a.clone();
        }
        descriptor
    }
}

fn descriptor(media_type: &str, blob: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": digest_of(blob).to_string(), "size": blob.len()})
}

/// An OCI 1.1 artifact: the empty config, `layers` (media type, bytes,
/// annotations), `artifactType`, `subject`.
fn oci_artifact(
    artifact_type: &str,
    subject: &Subject,
    layers: Vec<(&str, Vec<u8>, Value)>,
    annotations: Value,
) -> Artifact {
    let empty = Bytes::from_static(b"{}");
    let mut blobs = vec![empty.clone()];
    let mut layer_descriptors = Vec::new();
    for (media_type, bytes, annotations) in layers {
        let mut d = descriptor(media_type, &bytes);
        if !annotations.is_null() {
            d["annotations"] = annotations;
        }
        layer_descriptors.push(d);
        blobs.push(Bytes::from(bytes));
    }
    Artifact::build(
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": descriptor(EMPTY_CONFIG, &empty),
            "layers": layer_descriptors,
            "subject": subject.json(),
            "annotations": annotations,
        }),
        blobs,
    )
}

/// A manifest as cosign stores at its tags: an image manifest whose config
/// lists the layers' digests, each layer annotated.
fn cosign_tag_manifest(layers: Vec<(&str, Vec<u8>, Value)>) -> Artifact {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|(_, bytes, _)| digest_of(bytes).to_string())
        .collect();
    let config = Bytes::from(
        json!({
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string(),
    );
    let mut blobs = vec![config.clone()];
    let mut layer_descriptors = Vec::new();
    for (media_type, bytes, annotations) in layers {
        let mut d = descriptor(media_type, &bytes);
        d["annotations"] = annotations;
        layer_descriptors.push(d);
        blobs.push(Bytes::from(bytes));
    }
    Artifact::build(
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": layer_descriptors,
        }),
        blobs,
    )
}

/// One signed payload: its bytes and the base64 signature over them.
pub type SignedPayload = (Vec<u8>, String);

/// A cosign signature manifest holding `signatures`: an OCI 1.1 referrer of
/// `subject`, or (`None`) the manifest cosign stores at `sha256-<hex>.sig`.
pub fn cosign_signature(subject: Option<&Subject>, signatures: &[SignedPayload]) -> Artifact {
    let layers = signatures
        .iter()
        .map(|(payload, signature)| {
            (
                SIMPLE_SIGNING,
                payload.clone(),
                json!({ SIGNATURE_ANNOTATION: signature }),
            )
        })
        .collect();
    match subject {
        Some(subject) => oci_artifact(
            COSIGN_SIGNATURE,
            subject,
            layers,
            json!({"org.opencontainers.image.created": CREATED}),
        ),
        None => cosign_tag_manifest(layers),
    }
}

/// An SPDX 2.3 SBOM of `name` as a referrer of `subject`.
pub fn spdx_sbom(subject: &Subject, name: &str) -> Artifact {
    let document = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": format!("https://example.invalid/spdx/{name}"),
        "creationInfo": {"created": CREATED, "creators": ["Tool: mirror-testkit"]},
        "packages": [{"SPDXID": "SPDXRef-Package-base", "name": "base-files", "versionInfo": "12.4", "downloadLocation": "NOASSERTION"}],
    });
    oci_artifact(
        SPDX,
        subject,
        vec![(SPDX, document.to_string().into_bytes(), Value::Null)],
        json!({"org.opencontainers.image.created": CREATED}),
    )
}

/// An in-toto statement of SLSA provenance for `subject`'s digest.
fn provenance_statement(subject: &Subject) -> Value {
    let hex = subject.digest.trim_start_matches("sha256:");
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "image", "digest": {"sha256": hex}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"buildDefinition": {"buildType": "https://example.invalid/build"}, "runDetails": {"builder": {"id": "https://example.invalid/builder"}}},
    })
}

/// In-toto SLSA provenance as a referrer of `subject`.
pub fn in_toto_provenance(subject: &Subject) -> Artifact {
    oci_artifact(
        IN_TOTO,
        subject,
        vec![(
            IN_TOTO,
            provenance_statement(subject).to_string().into_bytes(),
            json!({"in-toto.io/predicate-type": "https://slsa.dev/provenance/v1"}),
        )],
        json!({"org.opencontainers.image.created": CREATED}),
    )
}

/// The manifest cosign stores at `sha256-<hex>.att`: the provenance
/// statement in a DSSE envelope (signed by `key`).
pub fn cosign_attestation(subject: &Subject, key: &SigningKey) -> anyhow::Result<Artifact> {
    use base64::Engine as _;
    let statement = provenance_statement(subject).to_string();
    let payload_type = "application/vnd.in-toto+json";
    // DSSE's pre-authentication encoding is what gets signed.
    let pae = format!(
        "DSSEv1 {} {} {} {}",
        payload_type.len(),
        payload_type,
        statement.len(),
        statement
    );
    let envelope = json!({
        "payloadType": payload_type,
        "payload": base64::engine::general_purpose::STANDARD.encode(&statement),
        "signatures": [{"keyid": "", "sig": key.sign(pae.as_bytes())?}],
    });
    Ok(cosign_tag_manifest(vec![(
        DSSE,
        envelope.to_string().into_bytes(),
        json!({"predicateType": "https://slsa.dev/provenance/v1"}),
    )]))
}

/// A fallback tag index (`sha256-<hex>`) listing `referrers`, as a tool
/// without the referrers API writes it.
pub fn fallback_index(referrers: &[&Artifact]) -> Bytes {
    Bytes::from(
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": referrers.iter().map(|a| a.listing()).collect::<Vec<_>>(),
        })
        .to_string(),
    )
}
