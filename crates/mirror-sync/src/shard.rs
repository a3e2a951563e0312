//! Sharding: N processes, each given `--shard K/N` (or `--shards N` and the
//! `JOB_COMPLETION_INDEX` of a Kubernetes Indexed Job), split one file's
//! tags between them with no coordination.
//!
//! A tag belongs to the shard its destination repository hashes to (sha256
//! of `registry/repository`, or of the file path for a local target), so:
//! - every process computes the same partition from the name alone, even if
//!   the source gained a tag between two processes' listings;
//! - a repository's tags stay in one shard: they share layers, and one
//!   process copies them once and mounts or skips the rest;
//! - together the shards hold exactly the unsharded plan, each tag once.
//!
//! Log groups are ensured by shard 1 only. A hash spreads many repositories
//! evenly; with few repositories some shards may get none (they exit 0 with
//! nothing to do).

use std::fmt;
use std::str::FromStr;

use crate::location::ImageLocation;

/// `K/N`: this process is shard K (1-based, as jest and playwright count) of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// The variable a Kubernetes Indexed Job sets in each pod (0-based).
pub const COMPLETION_INDEX_VAR: &str = "JOB_COMPLETION_INDEX";

/// More shards than this is a typo, not a fleet.
const MAX_SHARDS: u32 = 10_000;

/// Why a shard could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("--shard {input}: {reason} (write K/N with 1 <= K <= N, e.g. --shard 2/4)")]
    Invalid { input: String, reason: String },
    #[error(
        "--shards {count} needs {COMPLETION_INDEX_VAR} (set by a Kubernetes Indexed Job, 0-based); {reason}; outside Kubernetes write --shard K/N"
    )]
    CompletionIndex { count: u32, reason: String },
}

impl Shard {
    /// Shard `index` (1-based) of `count`.
    pub fn new(index: u32, count: u32) -> Result<Self, ShardError> {
        let invalid = |reason: &str| ShardError::Invalid {
            input: format!("{index}/{count}"),
            reason: reason.to_owned(),
        };
        if count == 0 || count > MAX_SHARDS {
            return Err(invalid(&format!("N must be 1 to {MAX_SHARDS}")));
        }
        if index == 0 || index > count {
            return Err(invalid("K must be 1 to N"));
        }
        Ok(Self { index, count })
    }

    /// Shard `JOB_COMPLETION_INDEX + 1` of `count`, `value` being that
    /// variable's value (`None` when unset).
    pub fn from_completion_index(count: u32, value: Option<&str>) -> Result<Self, ShardError> {
        let fail = |reason: String| ShardError::CompletionIndex { count, reason };
        let value = value.ok_or_else(|| fail("it is not set".to_owned()))?;
        let zero_based: u32 = value
            .trim()
            .parse()
            .map_err(|_| fail(format!("{value:?} is not a number")))?;
        if zero_based >= count {
            return Err(fail(format!(
                "{zero_based} is not below {count} (the Job's completions must equal --shards)"
            )));
        }
        Self::new(zero_based + 1, count).map_err(|e| fail(e.to_string()))
    }

    /// 1-based.
    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether this shard copies into `destination`.
    pub fn owns(&self, destination: &ImageLocation) -> bool {
        self.owns_key(&partition_key(destination))
    }

    /// Whether this shard owns `key` (a destination repository, or the
    /// source of an entry whose destinations are unknown).
    pub(crate) fn owns_key(&self, key: &str) -> bool {
        bucket(key, self.count) + 1 == self.index
    }

    /// Whether this shard does the run-wide work (log groups).
    pub fn is_first(&self) -> bool {
        self.index == 1
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| ShardError::Invalid {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let (k, n) = input
            .split_once('/')
            .ok_or_else(|| invalid("no '/' between K and N"))?;
        let k: u32 = k.trim().parse().map_err(|_| invalid("K is not a number"))?;
        let n: u32 = n.trim().parse().map_err(|_| invalid("N is not a number"))?;
        Self::new(k, n).map_err(|e| match e {
            ShardError::Invalid { reason, .. } => invalid(&reason),
            other => other,
        })
    }
}

/// What a tag is partitioned by: its destination repository (tag and
/// digest left out), or a local target's path.
fn partition_key(destination: &ImageLocation) -> String {
    match destination {
        ImageLocation::Registry(reference) => reference.name(),
        ImageLocation::File(file) => file.path().display().to_string(),
    }
}

/// 0-based bucket of `key` among `count`: the first 8 bytes of its sha256.
fn bucket(key: &str, count: u32) -> u32 {
    let digest = mirror_oci::digest_of(key.as_bytes());
    let hex = digest.digest();
    let prefix = u64::from_str_radix(hex.get(..16).unwrap_or("0"), 16).unwrap_or(0);
    (prefix % u64::from(count)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(input: &str) -> ImageLocation {
        ImageLocation::parse(input).unwrap()
    }

    #[test]
    fn parses_k_of_n_and_refuses_what_cannot_work() {
        assert_eq!("2/4".parse::<Shard>().unwrap(), Shard::new(2, 4).unwrap());
        for bad in ["0/4", "5/4", "1/0", "2", "a/4", "2/b", "1/10001"] {
            let error = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(
                error.contains(bad) && error.contains("K/N"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn the_completion_index_is_zero_based() {
        assert_eq!(
            Shard::from_completion_index(3, Some("0")).unwrap(),
            Shard::new(1, 3).unwrap()
        );
        assert_eq!(
            Shard::from_completion_index(3, Some("2")).unwrap(),
            Shard::new(3, 3).unwrap()
        );
        for (value, says) in [
            (None, "not set"),
            (Some("3"), "not below 3"),
            (Some("x"), "not a number"),
        ] {
            let error = Shard::from_completion_index(3, value)
                .unwrap_err()
                .to_string();
            assert!(error.contains(says), "{value:?}: {error}");
            assert!(error.contains(COMPLETION_INDEX_VAR), "{error}");
        }
    }

    #[test]
    fn every_tag_lands_in_exactly_one_shard_and_a_repository_stays_whole() {
        let count = 4;
        let shards: Vec<Shard> = (1..=count).map(|k| Shard::new(k, count).unwrap()).collect();
        let mut per_shard = vec![0; count as usize];
        for repository in 0..200 {
            let tags: Vec<ImageLocation> = ["1", "2", "latest"]
                .iter()
                .map(|t| at(&format!("registry.example/app{repository}:{t}")))
                .collect();
            let owners: Vec<usize> = tags
                .iter()
                .map(|tag| {
                    let owning: Vec<usize> =
                        (0..shards.len()).filter(|&i| shards[i].owns(tag)).collect();
                    assert_eq!(owning.len(), 1, "{tag}");
                    owning[0]
                })
                .collect();
            assert!(
                owners.iter().all(|&o| o == owners[0]),
                "app{repository} split"
            );
            per_shard[owners[0]] += 1;
        }
        // 200 repositories over 4 shards: none empty, none with half.
        assert!(
            per_shard.iter().all(|&n| (20..100).contains(&n)),
            "{per_shard:?}"
        );
    }

    #[test]
    fn one_shard_owns_everything() {
        let only = Shard::new(1, 1).unwrap();
        assert!(only.owns(&at("registry.example/app:1")));
        assert!(only.owns(&at("oci-archive:bundle.tar:app")));
    }
}
