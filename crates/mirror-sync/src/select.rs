//! Tag selection: which tags of a source repository an entry copies.
//!
//! A [`TagFilter`] applies, in this order: `regex` (the tags it matches in
//! full), `exclude` (drops every tag one of them matches in full), `semver`
//! (tags that read as versions, inside the range), then `latest: N` (the N
//! highest versions left). `mirror copy --all-tags --tag-regex RE` is a filter
//! with only `regex`.
//!
//! Versions as Docker tags write them ([`TagVersion`]): an optional `v`, one
//! to three numbers, and an optional `-suffix`: `v1.2.3`, `20`, `3.10`,
//! `3.10.4-slim-bookworm`, `1.27.0-rc1`. Missing numbers count as 0 (`3.10`
//! is 3.10.0). The suffix does not take part in range matching (Docker uses
//! it for variants: `-slim`, `-alpine`), so keep or drop variants and release
//! candidates with `regex` and `exclude`. Ranges are Cargo's syntax
//! (`>=3.10, <3.13`, `~3.11`, `3.*`; a bare `3.10` means `^3.10`), with
//! comparators separated by commas or spaces and alternatives by `||`.
//! Ordered for `latest`, a tag without a suffix ranks above the same version
//! with one, and fewer numbers above more (`3.10` above `3.10.0`: Docker's
//! short tags follow the newest release).

use std::cmp::Ordering;

use regex::Regex;
use semver::{Version, VersionReq};

/// Why a filter could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("`{pattern}` is not a regular expression: {reason}")]
    Regex { pattern: String, reason: String },
    #[error(
        "`{range}` is not a version range: {reason} (expected comparators such as `>=3.10 <3.13`, `~3.11` or `3.*`)"
    )]
    Range { range: String, reason: String },
    #[error("`latest` must be at least 1")]
    ZeroLatest,
}

/// The tags of a repository an entry copies.
#[derive(Debug, Clone, Default)]
pub struct TagFilter {
    regex: Option<(String, Regex)>,
    exclude: Vec<(String, Regex)>,
    semver: Option<(String, Vec<VersionReq>)>,
    latest: Option<usize>,
}

fn full_match(pattern: &str) -> Result<(String, Regex), FilterError> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map(|re| (pattern.to_owned(), re))
        .map_err(|e| FilterError::Regex {
            pattern: pattern.to_owned(),
            reason: e.to_string(),
        })
}

impl TagFilter {
    /// Every tag.
    pub fn all() -> Self {
        Self::default()
    }

    pub fn with_regex(mut self, pattern: &str) -> Result<Self, FilterError> {
        self.regex = Some(full_match(pattern)?);
        Ok(self)
    }

    pub fn with_exclude(mut self, pattern: &str) -> Result<Self, FilterError> {
        self.exclude.push(full_match(pattern)?);
        Ok(self)
    }

    pub fn with_semver(mut self, range: &str) -> Result<Self, FilterError> {
        self.semver = Some((range.to_owned(), parse_range(range)?));
        Ok(self)
    }

    pub fn with_latest(mut self, count: usize) -> Result<Self, FilterError> {
        if count == 0 {
            return Err(FilterError::ZeroLatest);
        }
        self.latest = Some(count);
        Ok(self)
    }

    /// Whether every tag passes (no filter at all).
    pub fn is_everything(&self) -> bool {
        self.regex.is_none()
            && self.exclude.is_empty()
            && self.semver.is_none()
            && self.latest.is_none()
    }

    /// The selected tags, in the order given (`latest`: highest first).
    pub fn select(&self, tags: &[String]) -> Vec<String> {
        let passes = |tag: &String| {
            self.regex.as_ref().is_none_or(|(_, re)| re.is_match(tag))
                && !self.exclude.iter().any(|(_, re)| re.is_match(tag))
        };
        let mut kept: Vec<String> = tags.iter().filter(|t| passes(t)).cloned().collect();
        if let Some((_, ranges)) = &self.semver {
            kept.retain(|tag| {
                TagVersion::parse(tag).is_some_and(|v| {
                    let version = v.version();
                    ranges.iter().any(|range| range.matches(&version))
                })
            });
        }
        if let Some(count) = self.latest {
            let mut versions: Vec<(TagVersion, String)> = kept
                .into_iter()
                .filter_map(|tag| TagVersion::parse(&tag).map(|v| (v, tag)))
                .collect();
            versions.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            kept = versions.into_iter().take(count).map(|(_, t)| t).collect();
        }
        kept
    }

    /// The filter in words, for "no tag matches ..." messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((pattern, _)) = &self.regex {
            parts.push(format!("regex `{pattern}`"));
        }
        for (pattern, _) in &self.exclude {
            parts.push(format!("exclude `{pattern}`"));
        }
        if let Some((range, _)) = &self.semver {
            parts.push(format!("semver `{range}`"));
        }
        if let Some(count) = self.latest {
            parts.push(format!("latest {count}"));
        }
        parts.join(", ")
    }
}

/// A range in Cargo's syntax, with spaces accepted between comparators and
/// `||` between alternatives.
fn parse_range(range: &str) -> Result<Vec<VersionReq>, FilterError> {
    let invalid = |reason: String| FilterError::Range {
        range: range.to_owned(),
        reason,
    };
    let mut alternatives = Vec::new();
    for alternative in range.split("||") {
        let mut comparators: Vec<String> = Vec::new();
        let mut pending_operator = String::new();
        for token in alternative
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
        {
            if token.chars().all(|c| "<>=~^".contains(c)) {
                pending_operator.push_str(token);
                continue;
            }
            let token = token.strip_prefix('v').unwrap_or(token);
            let token = match token.find(|c: char| c.is_ascii_digit() || c == '*') {
                // `>=v3.10` as well as `v3.10`.
                Some(at) if token[..at].ends_with('v') => {
                    format!("{}{}", &token[..at - 1], &token[at..])
                }
                _ => token.to_owned(),
            };
            comparators.push(format!("{}{token}", std::mem::take(&mut pending_operator)));
        }
        if !pending_operator.is_empty() {
            return Err(invalid(format!(
                "`{pending_operator}` has no version after it"
            )));
        }
        if comparators.is_empty() {
            return Err(invalid("it is empty".to_owned()));
        }
        let joined = comparators.join(", ");
        alternatives.push(VersionReq::parse(&joined).map_err(|e| invalid(e.to_string()))?);
    }
    Ok(alternatives)
}

/// A tag read as a version: `[v]MAJOR[.MINOR[.PATCH]][-SUFFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagVersion {
    /// One to three numbers, as written.
    pub numbers: Vec<u64>,
    /// What follows the first `-` (`slim-bookworm`, `rc1`), if anything.
    pub suffix: Option<String>,
}

impl TagVersion {
    pub fn parse(tag: &str) -> Option<Self> {
        let text = tag.strip_prefix('v').unwrap_or(tag);
        let (numbers, suffix) = match text.split_once('-') {
            Some((numbers, suffix)) if !suffix.is_empty() => (numbers, Some(suffix.to_owned())),
            Some(_) => return None,
            None => (text, None),
        };
        let numbers: Vec<u64> = numbers
            .split('.')
            .map(|part| {
                (!part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
                    .then(|| part.parse().ok())
                    .flatten()
            })
            .collect::<Option<_>>()?;
        (1..=3)
            .contains(&numbers.len())
            .then_some(Self { numbers, suffix })
    }

    /// The version ranges are matched against: missing numbers are 0.
    pub fn version(&self) -> Version {
        let at = |i: usize| self.numbers.get(i).copied().unwrap_or(0);
        Version::new(at(0), at(1), at(2))
    }
}

impl Ord for TagVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.version()
            .cmp(&other.version())
            // Without a suffix above with one (a release above its -rc).
            .then_with(|| other.suffix.is_some().cmp(&self.suffix.is_some()))
            // Fewer numbers above more (`3.10` follows the newest 3.10.x).
            .then_with(|| other.numbers.len().cmp(&self.numbers.len()))
            .then_with(|| other.suffix.cmp(&self.suffix))
    }
}

impl PartialOrd for TagVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn docker_tag_shapes_read_as_versions() {
        let v = |t: &str| TagVersion::parse(t).map(|v| (v.version().to_string(), v.suffix));
        assert_eq!(v("3.10"), Some(("3.10.0".into(), None)));
        assert_eq!(v("v1.2.3"), Some(("1.2.3".into(), None)));
        assert_eq!(v("20"), Some(("20.0.0".into(), None)));
        assert_eq!(
            v("3.10.4-slim-bookworm"),
            Some(("3.10.4".into(), Some("slim-bookworm".into())))
        );
        for not_a_version in [
            "latest", "bookworm", "3.10.4.1", "3..1", "3.x", "-1", "3.10-", "v",
        ] {
            assert_eq!(v(not_a_version), None, "{not_a_version}");
        }
    }

    #[test]
    fn regex_and_exclude_match_in_full() {
        let all = tags(&["3.12", "3.12.1", "13.12", "3.12-rc1"]);
        let filter = TagFilter::all().with_regex(r"3\.12.*").unwrap();
        assert_eq!(filter.select(&all), tags(&["3.12", "3.12.1", "3.12-rc1"]));
        let filter = filter.with_exclude(".*-rc.*").unwrap();
        assert_eq!(filter.select(&all), tags(&["3.12", "3.12.1"]));
        // A partial match is no match.
        let filter = TagFilter::all().with_exclude("rc").unwrap();
        assert_eq!(filter.select(&all), all);
    }

    #[test]
    fn semver_ranges_with_spaces_v_prefixes_and_suffixes() {
        let all = tags(&[
            "18",
            "20",
            "20.11.1",
            "v21.0.0",
            "22.1.0-alpine",
            "22.2.0-rc.1",
            "23",
            "latest",
        ]);
        let filter = TagFilter::all().with_semver(">=20 <23").unwrap();
        assert_eq!(
            filter.select(&all),
            tags(&["20", "20.11.1", "v21.0.0", "22.1.0-alpine", "22.2.0-rc.1"])
        );
        let filter = TagFilter::all().with_semver(">= v21, < 23").unwrap();
        assert_eq!(
            filter.select(&all),
            tags(&["v21.0.0", "22.1.0-alpine", "22.2.0-rc.1"])
        );
        let filter = TagFilter::all().with_semver("~20 || =18").unwrap();
        assert_eq!(filter.select(&all), tags(&["18", "20", "20.11.1"]));
        for bad in ["", ">=", "banana", ">=1 <", "||"] {
            assert!(TagFilter::all().with_semver(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn latest_takes_the_highest_after_the_other_filters() {
        // The issue's example: semver, latest 3, release candidates out.
        let all = tags(&[
            "20.0.0",
            "21.1.0",
            "22.0.0",
            "22.1.0",
            "22.2.0-rc1",
            "23.0.0",
            "latest",
            "22",
        ]);
        let filter = TagFilter::all()
            .with_semver(">=20 <23")
            .unwrap()
            .with_latest(3)
            .unwrap()
            .with_exclude(".*-rc.*")
            .unwrap();
        assert_eq!(filter.select(&all), tags(&["22.1.0", "22", "22.0.0"]));
        // Docker's python shapes: a short tag ranks above its long form, a
        // release above the same version with a suffix.
        let all = tags(&["3.10", "3.10.4", "3.10.4-slim", "3.9.18", "3.11-rc1"]);
        let filter = TagFilter::all().with_latest(3).unwrap();
        assert_eq!(
            filter.select(&all),
            tags(&["3.11-rc1", "3.10.4", "3.10.4-slim"])
        );
        assert!(TagFilter::all().with_latest(0).is_err());
    }

    #[test]
    fn bad_regexes_are_named() {
        let err = TagFilter::all().with_regex("3.(").unwrap_err();
        assert!(err.to_string().contains("`3.(`"), "{err}");
    }
}
