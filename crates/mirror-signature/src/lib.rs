//! Signature checks for `mirror --require-signature`: an image is copied only
//! if a signature made by one of the given keys names it.
//!
//! What is checked is cosign's key-based signature: a "simple signing"
//! payload (`{"critical":{"identity":{"docker-reference":..},"image":
//! {"docker-manifest-digest":"sha256:.."},"type":"cosign container image
//! signature"},"optional":..}`) stored as a layer of a signature manifest
//! (cosign's `sha256-<hex>.sig` tag or an OCI 1.1 referrer), with the base64
//! ASN.1 ECDSA signature over the payload's exact bytes in the layer's
//! `dev.cosignproject.cosign/signature` annotation. The keys are cosign's
//! public key files (`cosign.pub`: a PEM `PUBLIC KEY`, ECDSA P-256 with
//! SHA-256, or P-384 with SHA-384). Finding the signature manifests and
//! fetching their payloads is the engine's part; this crate holds the keys
//! and decides.
//!
//! The payload's `docker-reference` is not compared: a mirror moves images
//! to other names by design, and the digest is what the signature binds.
//!
//! ```no_run
//! use mirror_signature::Keyring;
//! let keyring = Keyring::load(&["cosign:cosign.pub".to_owned()]).expect("readable key");
//! # let (digest, payload, signature): (mirror_oci::Digest, Vec<u8>, String) = todo!();
//! match keyring.verify(&digest, &payload, &signature) {
//!     Ok(key) => println!("signed with {key}"),
//!     Err(rejection) => println!("refused: {rejection}"),
//! }
//! ```

use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, ParsedPublicKey, VerificationAlgorithm,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mirror_oci::Digest;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::{PemObject, SectionKind};
use serde_json::Value;

/// The `critical.type` of a cosign signature payload.
pub const COSIGN_PAYLOAD_TYPE: &str = "cosign container image signature";

/// Why a signature requirement could not be set up. Messages say what is
/// wrong; what to do about it is the caller's to add (it knows its flags).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("`{0}` is not a signature requirement: expected cosign:KEY.pub")]
    Spec(String),
    #[error("cannot read the key {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is a private key, not a public one")]
    Private { path: PathBuf },
    #[error("{path} holds no PEM public key (-----BEGIN PUBLIC KEY-----)")]
    NoPublicKey { path: PathBuf },
    #[error("{path} is not an ECDSA P-256 or P-384 public key")]
    Unsupported { path: PathBuf },
}

/// Why one signature does not let an image through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the signature annotation is not base64")]
    NotBase64,
    #[error("the signature does not verify with {keys}")]
    NoKeyVerifies { keys: String },
    #[error("the signed payload is not a cosign signature payload: {0}")]
    NotCosignPayload(String),
    #[error("it signs {signed}, not this image")]
    OtherImage { signed: String },
}

/// One public key.
struct Key {
    /// The file it came from, for messages.
    label: String,
    key: ParsedPublicKey,
}

/// The keys of `--require-signature cosign:KEY.pub` (repeatable): a
/// signature by any of them lets an image through.
pub struct Keyring {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.labels())
            .finish()
    }
}

impl Keyring {
    /// Reads every `cosign:PATH` requirement. At least one is needed.
    pub fn load(requirements: &[String]) -> Result<Self, KeyError> {
        if requirements.is_empty() {
            return Err(KeyError::Spec(String::new()));
        }
        let keys = requirements
            .iter()
            .map(|requirement| {
                let path = requirement
                    .strip_prefix("cosign:")
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| KeyError::Spec(requirement.clone()))?;
                let pem = std::fs::read(path).map_err(|source| KeyError::Read {
                    path: path.into(),
                    source,
                })?;
                Self::parse_key(Path::new(path), &pem)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }

    /// A keyring of PEM keys given as bytes (`label` names each in messages).
    pub fn from_pem(keys: &[(&str, &[u8])]) -> Result<Self, KeyError> {
        Ok(Self {
            keys: keys
                .iter()
                .map(|(label, pem)| Self::parse_key(Path::new(label), pem))
                .collect::<Result<_, _>>()?,
        })
    }

    fn parse_key(path: &Path, pem: &[u8]) -> Result<Key, KeyError> {
        let mut public = None;
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
            match section {
                Ok((SectionKind::PublicKey, der)) => {
                    public = Some(SubjectPublicKeyInfoDer::from(der));
                    break;
                }
                Ok((
                    SectionKind::PrivateKey
                    | SectionKind::EcPrivateKey
                    | SectionKind::RsaPrivateKey,
                    _,
                )) => return Err(KeyError::Private { path: path.into() }),
                _ => {}
            }
        }
        if public.is_none() && String::from_utf8_lossy(pem).contains("PRIVATE KEY-----") {
            // cosign's own encrypted key file (ENCRYPTED SIGSTORE PRIVATE KEY).
            return Err(KeyError::Private { path: path.into() });
        }
        let der = public.ok_or_else(|| KeyError::NoPublicKey { path: path.into() })?;
        let algorithms: [&'static dyn VerificationAlgorithm; 2] =
            [&ECDSA_P256_SHA256_ASN1, &ECDSA_P384_SHA384_ASN1];
        let key = algorithms
            .into_iter()
            .find_map(|algorithm| ParsedPublicKey::new(algorithm, der.as_ref()).ok())
            .ok_or_else(|| KeyError::Unsupported { path: path.into() })?;
        Ok(Key {
            label: path.display().to_string(),
            key,
        })
    }

    /// The key files, for messages.
    pub fn labels(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.label.clone()).collect()
    }

    /// Whether `signature` (base64, as in the layer annotation) is a valid
    /// signature of `payload` by one of the keys, and `payload` a cosign
    /// signature payload naming `image`. Returns the key that verified.
    pub fn verify(
        &self,
        image: &Digest,
        payload: &[u8],
        signature: &str,
    ) -> Result<&str, Rejection> {
        let signature = STANDARD
            .decode(signature.trim())
            .map_err(|_| Rejection::NotBase64)?;
        let key = self
            .keys
            .iter()
            .find(|key| key.key.verify_sig(payload, &signature).is_ok())
            .ok_or_else(|| Rejection::NoKeyVerifies {
                keys: match self.labels().as_slice() {
                    [one] => format!("the key {one}"),
                    many => format!("any of the keys {}", many.join(", ")),
                },
            })?;
        let signed = signed_digest(payload)?;
        if signed != image.as_ref() {
            return Err(Rejection::OtherImage { signed });
        }
        Ok(&key.label)
    }
}

/// The digest a cosign payload names (`critical.image.docker-manifest-digest`).
fn signed_digest(payload: &[u8]) -> Result<String, Rejection> {
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| Rejection::NotCosignPayload(format!("not JSON ({e})")))?;
    let critical = value
        .get("critical")
        .ok_or_else(|| Rejection::NotCosignPayload("no `critical` section".to_owned()))?;
    let kind = critical.get("type").and_then(Value::as_str);
    if kind != Some(COSIGN_PAYLOAD_TYPE) {
        return Err(Rejection::NotCosignPayload(format!(
            "its type is {}, not `{COSIGN_PAYLOAD_TYPE}`",
            kind.map_or_else(|| "missing".to_owned(), |k| format!("`{k}`"))
        )));
    }
    critical
        .pointer("/image/docker-manifest-digest")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            Rejection::NotCosignPayload("no `critical.image.docker-manifest-digest`".to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};

    /// A key pair made here, its public key as cosign writes it (PEM SPKI).
    fn key_pair() -> (EcdsaKeyPair, Vec<u8>) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
        let spki = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(
            pair.public_key(),
        )
        .unwrap();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(spki.as_ref())
        );
        (pair, pem.into_bytes())
    }

    fn payload(digest: &str) -> Vec<u8> {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"example/app"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
        )
        .into_bytes()
    }

    fn sign(pair: &EcdsaKeyPair, payload: &[u8]) -> String {
        STANDARD.encode(pair.sign(&SystemRandom::new(), payload).unwrap().as_ref())
    }

    #[test]
    fn a_signature_by_any_key_naming_the_image_passes() {
        let (first, first_pem) = key_pair();
        let (second, second_pem) = key_pair();
        let keyring =
            Keyring::from_pem(&[("first.pub", &first_pem), ("second.pub", &second_pem)]).unwrap();
        let image = mirror_oci::digest_of(b"image");
        let body = payload(image.as_ref());
        assert_eq!(
            keyring.verify(&image, &body, &sign(&second, &body)),
            Ok("second.pub")
        );
        assert_eq!(
            keyring.verify(&image, &body, &sign(&first, &body)),
            Ok("first.pub")
        );
    }

    #[test]
    fn tampering_another_key_and_another_image_are_refused() {
        let (pair, pem) = key_pair();
        let (stranger, _) = key_pair();
        let keyring = Keyring::from_pem(&[("cosign.pub", &pem)]).unwrap();
        let image = mirror_oci::digest_of(b"image");
        let body = payload(image.as_ref());
        let signature = sign(&pair, &body);

        let mut tampered = body.clone();
        tampered[20] ^= 1;
        assert!(matches!(
            keyring.verify(&image, &tampered, &signature),
            Err(Rejection::NoKeyVerifies { .. })
        ));
        assert!(matches!(
            keyring.verify(&image, &body, &sign(&stranger, &body)),
            Err(Rejection::NoKeyVerifies { .. })
        ));
        let other = mirror_oci::digest_of(b"other");
        assert_eq!(
            keyring.verify(&other, &body, &signature),
            Err(Rejection::OtherImage {
                signed: image.to_string()
            })
        );
        assert_eq!(
            keyring.verify(&image, &body, "%%%"),
            Err(Rejection::NotBase64)
        );
    }

    #[test]
    fn a_signed_payload_of_another_kind_is_refused() {
        let (pair, pem) = key_pair();
        let keyring = Keyring::from_pem(&[("cosign.pub", &pem)]).unwrap();
        let image = mirror_oci::digest_of(b"image");
        let body = br#"{"critical":{"type":"something else"}}"#;
        assert!(matches!(
            keyring.verify(&image, body, &sign(&pair, body)),
            Err(Rejection::NotCosignPayload(_))
        ));
    }

    #[test]
    fn key_files_say_what_is_wrong() {
        assert!(matches!(
            Keyring::load(&["cosign.pub".to_owned()]),
            Err(KeyError::Spec(_))
        ));
        let private = b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
        assert!(matches!(
            Keyring::from_pem(&[("cosign.key", private)]),
            Err(KeyError::Private { .. })
        ));
        assert!(matches!(
            Keyring::from_pem(&[("empty.pub", b"nothing")]),
            Err(KeyError::NoPublicKey { .. })
        ));
        let not_ec = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            Keyring::from_pem(&[("bad.pub", not_ec)]),
            Err(KeyError::Unsupported { .. })
        ));
    }
}
