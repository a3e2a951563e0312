//! Digest parsing with errors that say what is wrong, and hashing for verification.

use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::Digest as _;

/// Why a digest string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("`{0}` is not a digest: expected `sha256:` followed by 64 lowercase hex characters")]
    Malformed(String),
    #[error("`{0}` uses an unsupported digest algorithm: only sha256 and sha512 are verified")]
    Unsupported(String),
}

/// Parses `sha256:<64 hex>` or `sha512:<128 hex>`, refusing anything the engine
/// cannot verify (a digest we cannot check is never trusted).
pub fn parse_digest(text: &str) -> Result<Digest, DigestError> {
    let digest: Digest = text
        .parse()
        .map_err(|_| DigestError::Malformed(text.to_owned()))?;
    match digest.algorithm() {
        DigestAlgorithm::Sha256 | DigestAlgorithm::Sha512 => Ok(digest),
        _ => Err(DigestError::Unsupported(text.to_owned())),
    }
}

/// The sha256 digest of some bytes.
pub fn digest_of(bytes: &[u8]) -> Digest {
    let mut hasher = Hasher::Sha256(sha2::Sha256::new());
    hasher.update(bytes);
    hasher.finish()
}

/// An incremental hash in the algorithm of a given digest.
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A hasher for the algorithm `expected` uses; `None` if it is not one we verify.
    pub fn for_digest(expected: &Digest) -> Option<Self> {
        match expected.algorithm() {
            DigestAlgorithm::Sha256 => Some(Self::Sha256(sha2::Sha256::new())),
            DigestAlgorithm::Sha512 => Some(Self::Sha512(sha2::Sha512::new())),
            _ => None,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Self::Sha256(h) => ("sha256", hex::encode(h.finalize())),
            Self::Sha512(h) => ("sha512", hex::encode(h.finalize())),
        };
        Digest::try_from(format!("{algorithm}:{hex}")).expect("a formatted digest parses")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_is_the_well_known_value() {
        assert_eq!(
            digest_of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn refuses_uppercase_and_short_digests() {
        assert!(parse_digest("sha256:ABC").is_err());
        assert!(parse_digest("md5:d41d8cd98f00b204e9800998ecf8427e").is_err());
        assert!(parse_digest(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }
}
