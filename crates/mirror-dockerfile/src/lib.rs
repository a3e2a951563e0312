//! Dockerfile `FROM` rewriting: point a Dockerfile's base images at their
//! mirrors (`mirror rewrite-from`).
//!
//! The walkthrough's last manual step is editing `Dockerfile.prod` so that
//! `FROM python:3.10-slim-buster` becomes the ECR copy. [`rewrite`] does that
//! edit for every external base image and nothing else: only the bytes of the
//! image references change, so comments, indentation, line continuations and
//! line endings survive, and the result reads well in [`unified_diff`]. Where
//! an image goes is the caller's closure: nothing here knows about ECR (the
//! CLI asks its ECR registry which images are mirrored, see [`base_images`]).
//!
//! It reads Dockerfiles the way BuildKit does: parser directives (`# escape=`),
//! case-insensitive instructions, line continuations with comment lines inside
//! them, heredoc bodies (which are file content, not instructions), stage names
//! (`FROM build` after `... AS build` is not an image), `scratch`, and build
//! arguments, which it cannot resolve and reports in
//! [`RewriteResult::warnings`].
//!
//! ```
//! use mirror_dockerfile::{Rewrite, rewrite};
//!
//! let result = rewrite("FROM python:3.10-slim-buster\nRUN pip3 install flask\n", &|reference| {
//!     Some(Rewrite {
//!         reference: format!(
//!             "123456789012.dkr.ecr.us-east-1.amazonaws.com/cruddur-python:{}",
//!             reference.tag()?
//!         ),
//!         digest: None,
//!     })
//! });
//! assert_eq!(
//!     result.text,
//!     "FROM 123456789012.dkr.ecr.us-east-1.amazonaws.com/cruddur-python:3.10-slim-buster\nRUN pip3 install flask\n"
//! );
//! ```

mod parse;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use mirror_oci::Reference;

use crate::parse::{instructions, line_starts};

/// Where a base image should come from instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The new image reference, for example
    /// `123456789012.dkr.ecr.us-east-1.amazonaws.com/python:3.10-slim-buster`.
    pub reference: String,
    /// `sha256:...` to pin to (`--pin`): appended as `@sha256:...`, replacing
    /// any digest in `reference`.
    pub digest: Option<String>,
}

/// One rewritten `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// 1-based line of the image reference.
    pub line: usize,
    /// The reference as it was written.
    pub from: String,
    /// The reference written in its place.
    pub to: String,
}

/// The rewritten Dockerfile and what happened to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewriteResult {
    /// The Dockerfile with the changes applied; byte-identical elsewhere.
    pub text: String,
    pub changes: Vec<Change>,
    /// References left alone that still pull from the original registry
    /// (build arguments, `COPY --from=IMAGE`, unparsable references), one
    /// sentence each, starting with `line N:`.
    pub warnings: Vec<String>,
}

/// Rewrites the image of every `FROM` for which `map` returns a [`Rewrite`].
///
/// `map` sees the parsed, normalised reference (`python:3.10` arrives as
/// `docker.io/library/python:3.10`) and returns `None` to leave a line alone.
/// `FROM scratch`, `FROM <earlier stage>` and references made of build
/// arguments never reach `map`. A reference that was pinned by digest keeps
/// that digest unless the rewrite brings its own (mirroring keeps digests).
pub fn rewrite(dockerfile: &str, map: &dyn Fn(&Reference) -> Option<Rewrite>) -> RewriteResult {
    let line_starts = line_starts(dockerfile);
    let line_of = |offset: usize| line_starts.partition_point(|&start| start <= offset);
    let mut stages: HashSet<String> = HashSet::new();
    let mut global_args: HashMap<String, (String, usize)> = HashMap::new();
    let mut seen_from = false;
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut changes = Vec::new();
    let mut warnings = Vec::new();

    for instruction in instructions(dockerfile) {
        let tokens = instruction.tokens();
        let Some(keyword) = tokens.first() else {
            continue;
        };
        let line = line_of(keyword.start);
        if keyword.text.eq_ignore_ascii_case("arg") && !seen_from {
            for token in &tokens[1..] {
                if let Some((name, value)) = token.text.split_once('=') {
                    let value = value.trim_matches(|c| c == '"' || c == '\'');
                    global_args.insert(name.to_owned(), (value.to_owned(), line));
                }
            }
            continue;
        }
        if keyword.text.eq_ignore_ascii_case("copy") {
            for token in &tokens[1..] {
                let Some(source) = token.text.strip_prefix("--from=") else {
                    continue;
                };
                let stage = source.to_ascii_lowercase();
                if !source.contains('$')
                    && !stages.contains(&stage)
                    && !source.chars().all(|c| c.is_ascii_digit())
                {
                    warnings.push(format!(
                        "line {line}: `COPY --from={source}` copies from an image, which rewrite-from leaves alone (only FROM lines are rewritten): mirror it and edit this line by hand"
                    ));
                }
            }
            continue;
        }
        if !keyword.text.eq_ignore_ascii_case("from") {
            continue;
        }
        seen_from = true;

        let mut rest = tokens[1..].iter();
        let image = rest.by_ref().find(|token| !token.text.starts_with("--"));
        let stage_name = match (rest.next(), rest.next()) {
            (Some(as_keyword), Some(name)) if as_keyword.text.eq_ignore_ascii_case("as") => {
                Some(name.text.to_ascii_lowercase())
            }
            _ => None,
        };
        let Some(image) = image else {
            warnings.push(format!("line {line}: FROM without an image, left alone"));
            continue;
        };
        let image_line = line_of(image.start);
        let lowercase = image.text.to_ascii_lowercase();

        if image.text.contains('$') {
            warnings.push(argument_warning(image_line, &image.text, &global_args));
        } else if lowercase == "scratch" || stages.contains(&lowercase) {
            // Not an image: the empty image, or an earlier stage.
        } else if !image.contiguous {
            warnings.push(format!(
                "line {image_line}: the image `{}` is split across lines, left alone",
                image.text
            ));
        } else {
            match image.text.parse::<Reference>() {
                Err(error) => warnings.push(format!("line {image_line}: {error}; left alone")),
                Ok(reference) => {
                    if let Some(replacement) = map(&reference) {
                        let to = replacement_text(&reference, replacement);
                        if to != image.text {
                            edits.push((image.start, image.end, to.clone()));
                            changes.push(Change {
                                line: image_line,
                                from: image.text.clone(),
                                to,
                            });
                        }
                    }
                }
            }
        }
        if let Some(name) = stage_name {
            stages.insert(name);
        }
    }

    let mut text = String::with_capacity(dockerfile.len());
    let mut copied = 0;
    for (start, end, replacement) in edits {
        text.push_str(&dockerfile[copied..start]);
        text.push_str(&replacement);
        copied = end;
    }
    text.push_str(&dockerfile[copied..]);
    RewriteResult {
        text,
        changes,
        warnings,
    }
}

fn replacement_text(original: &Reference, replacement: Rewrite) -> String {
    let Rewrite { reference, digest } = replacement;
    match digest {
        Some(digest) => {
            let name = reference
                .split_once('@')
                .map_or(&*reference, |(name, _)| name);
            format!("{name}@{}", digest.trim_start_matches('@'))
        }
        None => match original.digest() {
            Some(digest) if !reference.contains('@') => format!("{reference}@{digest}"),
            _ => reference,
        },
    }
}

fn argument_warning(
    line: usize,
    image: &str,
    global_args: &HashMap<String, (String, usize)>,
) -> String {
    let mut names = Vec::new();
    let mut rest = image;
    while let Some(position) = rest.find('$') {
        rest = rest[position + 1..].trim_start_matches('{');
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    let described = names
        .iter()
        .map(|name| match global_args.get(name) {
            Some((default, arg_line)) => {
                format!("{name} (default `{default}`, ARG on line {arg_line})")
            }
            None => name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "line {line}: `FROM {image}` depends on the build argument {described}, left alone: point the ARG default or --build-arg at the mirrored image"
    )
}

/// The external images the `FROM` lines name, normalised, each once in order
/// of first use: what [`rewrite`]'s closure will be asked about.
pub fn base_images(dockerfile: &str) -> Vec<Reference> {
    let found = RefCell::new(Vec::<Reference>::new());
    rewrite(dockerfile, &|reference| {
        let mut found = found.borrow_mut();
        if !found.contains(reference) {
            found.push(reference.clone());
        }
        None
    });
    found.into_inner()
}

/// A unified diff of `old` and `new` (three lines of context, `a/` and `b/`
/// prefixes as `git apply` and `patch -p1` expect), or an empty string when
/// they are equal. Lines keep their endings, so a CRLF file diffs as CRLF.
pub fn unified_diff(path: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::io::Write as _;
    use std::path::PathBuf;

    use super::*;

    const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    const DIGEST: &str = "sha256:4f53f8b1b9a7c7e6d5c4b3a29180716f5e4d3c2b1a09f8e7d6c5b4a3928170e6";

    fn fixture(name: &str) -> String {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/dockerfiles")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every image to ECR under its last path component, as `mirror` names them.
    fn to_ecr(reference: &Reference) -> Option<Rewrite> {
        let name = reference.repository().rsplit('/').next()?;
        let tag = reference.tag().map(|t| format!(":{t}")).unwrap_or_default();
        Some(Rewrite {
            reference: format!("{ECR}/{name}{tag}"),
            digest: None,
        })
    }

    fn pinned(reference: &Reference) -> Option<Rewrite> {
        Some(Rewrite {
            digest: Some(DIGEST.to_owned()),
            ..to_ecr(reference)?
        })
    }

    /// The text with the changes undone: everything but the references is intact.
    fn undo(result: &RewriteResult) -> String {
        let mut text = result.text.clone();
        for change in &result.changes {
            text = text.replacen(&change.to, &change.from, 1);
        }
        text
    }

    #[test]
    fn walkthrough_backend_flask_uses_the_ecr_python() {
        let original = fixture("backend-flask.Dockerfile.prod");
        let result = rewrite(&original, &to_ecr);
        assert_eq!(
            result.changes,
            [Change {
                line: 1,
                from: "python:3.10-slim-buster".to_owned(),
                to: format!("{ECR}/python:3.10-slim-buster"),
            }]
        );
        assert!(result.warnings.is_empty(), "{:?}", result.warnings);
        assert_eq!(
            result.text,
            original.replacen(
                "FROM python:3.10-slim-buster",
                &format!("FROM {ECR}/python:3.10-slim-buster"),
                1
            )
        );
    }

    #[test]
    fn map_sees_normalised_references_and_none_leaves_lines_alone() {
        let original = fixture("backend-flask.Dockerfile.prod");
        let seen = RefCell::new(Vec::new());
        let result = rewrite(&original, &|reference| {
            seen.borrow_mut().push(reference.to_string());
            None
        });
        assert_eq!(
            *seen.borrow(),
            ["docker.io/library/python:3.10-slim-buster"]
        );
        assert_eq!(result.text, original);
        assert!(result.changes.is_empty());
    }

    #[test]
    fn base_images_are_the_external_images_once_each() {
        let images: Vec<String> = base_images(
            "FROM python:3.10 AS build\nFROM build\nFROM scratch\nFROM python:3.10\nFROM $BASE\nFROM alpine\n",
        )
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            images,
            [
                "docker.io/library/python:3.10",
                "docker.io/library/alpine:latest"
            ]
        );
    }

    #[test]
    fn multi_stage_rewrites_images_only() {
        let original = fixture("multi-stage.Dockerfile");
        let result = rewrite(&original, &to_ecr);
        let changed: Vec<(usize, &str, &str)> = result
            .changes
            .iter()
            .map(|c| (c.line, c.from.as_str(), c.to.as_str()))
            .collect();
        let alpine =
            "alpine:3.20@sha256:beefdbd8a1da6d2915566fde36db9db0b524eb737fc57cd1367effd16dc0d06d";
        let alpine_to = format!(
            "{ECR}/alpine:3.20@sha256:beefdbd8a1da6d2915566fde36db9db0b524eb737fc57cd1367effd16dc0d06d"
        );
        let golang_to = format!("{ECR}/golang:1.22-alpine");
        let distroless_to = format!("{ECR}/static-debian12:nonroot");
        assert_eq!(
            changed,
            [
                (4, "golang:1.22-alpine", golang_to.as_str()),
                (
                    23,
                    "gcr.io/distroless/static-debian12:nonroot",
                    distroless_to.as_str()
                ),
                (30, alpine, alpine_to.as_str()),
            ]
        );
        // Flags, AS names, continuations, comments and the heredoc are intact.
        assert!(result.text.contains(&format!(
            "FROM --platform=$BUILDPLATFORM {ECR}/golang:1.22-alpine AS build\n"
        )));
        assert!(result.text.contains(&format!(
            "FROM \\\n    --platform=$TARGETPLATFORM \\\n    {ECR}/static-debian12:nonroot \\\n    As runtime\n"
        )));
        assert!(
            result
                .text
                .contains("COPY <<EOT /out/Dockerfile.inner\nFROM ubuntu:24.04\nEOT\n")
        );
        assert!(result.text.contains("from build as test\n"));
        assert!(
            result
                .text
                .contains("# FROM debian:bookworm (commented out")
        );
        assert!(result.text.contains("FROM scratch AS export\n"));
        assert_eq!(undo(&result), original);
        assert_eq!(
            result.warnings,
            [
                "line 26: `COPY --from=docker.io/library/busybox:1.36` copies from an image, which rewrite-from leaves alone (only FROM lines are rewritten): mirror it and edit this line by hand"
            ]
        );
    }

    #[test]
    fn pinning_appends_the_digest_and_replaces_an_old_one() {
        let original = fixture("multi-stage.Dockerfile");
        let result = rewrite(&original, &pinned);
        let tos: Vec<&str> = result.changes.iter().map(|c| c.to.as_str()).collect();
        assert_eq!(
            tos,
            [
                format!("{ECR}/golang:1.22-alpine@{DIGEST}"),
                format!("{ECR}/static-debian12:nonroot@{DIGEST}"),
                format!("{ECR}/alpine:3.20@{DIGEST}"),
            ]
        );
        let with_at = rewrite("FROM python:3.10\n", &|r| {
            Some(Rewrite {
                digest: Some(format!("@{DIGEST}")),
                ..to_ecr(r)?
            })
        });
        assert_eq!(with_at.text, format!("FROM {ECR}/python:3.10@{DIGEST}\n"));
    }

    #[test]
    fn build_arguments_are_left_alone_with_a_warning() {
        let original = fixture("arg.Dockerfile");
        let result = rewrite(&original, &to_ecr);
        assert_eq!(
            result.changes,
            [Change {
                line: 9,
                from: "node:20-alpine".to_owned(),
                to: format!("{ECR}/node:20-alpine"),
            }]
        );
        assert_eq!(
            result.warnings,
            [
                "line 3: `FROM ${BASE}` depends on the build argument BASE (default `python:${PYTHON_VERSION}-slim-buster`, ARG on line 2), left alone: point the ARG default or --build-arg at the mirrored image",
                "line 6: `FROM $BASE` depends on the build argument BASE (default `python:${PYTHON_VERSION}-slim-buster`, ARG on line 2), left alone: point the ARG default or --build-arg at the mirrored image",
            ]
        );
        assert_eq!(undo(&result), original);
    }

    #[test]
    fn crlf_line_endings_survive() {
        let original = fixture("multi-stage.Dockerfile").replace('\n', "\r\n");
        let result = rewrite(&original, &to_ecr);
        assert_eq!(result.changes.len(), 3);
        assert_eq!(result.changes[1].line, 23);
        assert_eq!(
            result.text.matches("\r\n").count(),
            original.matches("\r\n").count()
        );
        assert!(!result.text.replace("\r\n", "").contains('\n'));
        assert_eq!(undo(&result), original);
    }

    #[test]
    fn case_insensitive_from_and_as() {
        let result = rewrite(
            "from python:3.10 AS Base\nFrOm base\nFROM BASE as two\n",
            &to_ecr,
        );
        assert_eq!(
            result.text,
            format!("from {ECR}/python:3.10 AS Base\nFrOm base\nFROM BASE as two\n")
        );
    }

    #[test]
    fn a_stage_name_only_counts_after_its_stage() {
        // `FROM build` before any `AS build` is the Docker Hub image `build`.
        let result = rewrite("FROM build\nFROM golang AS build\nFROM build\n", &to_ecr);
        assert_eq!(
            result.text,
            format!("FROM {ECR}/build:latest\nFROM {ECR}/golang:latest AS build\nFROM build\n")
        );
    }

    #[test]
    fn continuation_comments_and_backtick_escape() {
        let original = "# escape=`\r\nFROM `\r\n  # the base\r\n  mcr.microsoft.com/windows/servercore:ltsc2022 `\r\n  AS base\r\nRUN echo \\\r\nFROM nothing\r\n";
        let result = rewrite(original, &to_ecr);
        // With ` as the escape, `\` does not continue the RUN line: line 7 is a FROM.
        assert_eq!(
            result.changes,
            [
                Change {
                    line: 4,
                    from: "mcr.microsoft.com/windows/servercore:ltsc2022".to_owned(),
                    to: format!("{ECR}/servercore:ltsc2022"),
                },
                Change {
                    line: 7,
                    from: "nothing".to_owned(),
                    to: format!("{ECR}/nothing:latest"),
                },
            ]
        );
        assert_eq!(
            result.text,
            original
                .replace(
                    "mcr.microsoft.com/windows/servercore",
                    &format!("{ECR}/servercore")
                )
                .replace("FROM nothing", &format!("FROM {ECR}/nothing:latest"))
        );
    }

    #[test]
    fn a_directive_after_the_top_is_a_comment() {
        let original = "FROM alpine\n# escape=`\nRUN echo `\nFROM busybox\n";
        let result = rewrite(original, &to_ecr);
        assert_eq!(result.changes.len(), 2);
    }

    #[test]
    fn references_split_by_a_continuation_are_reported() {
        let original = "FROM pyth\\\non:3.10\n";
        let result = rewrite(original, &to_ecr);
        assert_eq!(result.text, original);
        assert_eq!(
            result.warnings,
            ["line 1: the image `python:3.10` is split across lines, left alone"]
        );
    }

    #[test]
    fn unparsable_references_are_reported() {
        let result = rewrite("FROM Python:3.10\nFROM\n", &to_ecr);
        assert_eq!(result.text, "FROM Python:3.10\nFROM\n");
        assert_eq!(result.warnings.len(), 2, "{:?}", result.warnings);
        assert!(result.warnings[0].starts_with("line 1: `Python:3.10`"));
        assert!(result.warnings[0].contains("lowercase"));
        assert_eq!(
            result.warnings[1],
            "line 2: FROM without an image, left alone"
        );
    }

    #[test]
    fn heredocs_with_dash_quotes_and_several_bodies() {
        let original = "FROM alpine\nRUN <<-\"ONE\" cat - <<TWO\n\tFROM a\n\tONE\nFROM b\nTWO\nRUN cat <<<FROM; echo $((1<<2))\nFROM c\n";
        let result = rewrite(original, &to_ecr);
        let froms: Vec<&str> = result.changes.iter().map(|c| c.from.as_str()).collect();
        assert_eq!(froms, ["alpine", "c"]);
    }

    #[test]
    fn unchanged_references_are_not_changes() {
        let original = format!("FROM {ECR}/python:3.10\n");
        let result = rewrite(&original, &|r| {
            Some(Rewrite {
                reference: format!("{}/{}:{}", r.registry(), r.repository(), r.tag()?),
                digest: None,
            })
        });
        assert!(result.changes.is_empty());
        assert_eq!(result.text, original);
    }

    #[test]
    fn byte_order_mark_and_missing_final_newline() {
        let original = "\u{feff}FROM python:3.10";
        let result = rewrite(original, &to_ecr);
        assert_eq!(result.text, format!("\u{feff}FROM {ECR}/python:3.10"));
    }

    #[test]
    fn diff_of_the_walkthrough_rewrite() {
        let original = fixture("backend-flask.Dockerfile.prod");
        let result = rewrite(&original, &to_ecr);
        let diff = unified_diff("backend-flask/Dockerfile.prod", &original, &result.text);
        assert_eq!(
            diff,
            format!(
                "--- a/backend-flask/Dockerfile.prod\n+++ b/backend-flask/Dockerfile.prod\n@@ -1,4 +1,4 @@\n-FROM python:3.10-slim-buster\n+FROM {ECR}/python:3.10-slim-buster\n \n # Inside Container\n # make a new folder inside container\n"
            )
        );
    }

    #[test]
    fn diff_hunks_merge_when_close_and_split_when_far() {
        let numbered = |replace: &[(usize, &str)]| -> String {
            (1..=20)
                .map(|i| match replace.iter().find(|(at, _)| *at == i) {
                    Some((_, text)) => format!("{text}\n"),
                    None => format!("{i}\n"),
                })
                .collect()
        };
        let old = numbered(&[]);
        let close = numbered(&[(2, "two"), (8, "eight")]);
        assert_eq!(
            unified_diff("f", &old, &close),
            "--- a/f\n+++ b/f\n@@ -1,11 +1,11 @@\n 1\n-2\n+two\n 3\n 4\n 5\n 6\n 7\n-8\n+eight\n 9\n 10\n 11\n"
        );
        let far = numbered(&[(2, "two"), (18, "eighteen")]);
        assert_eq!(
            unified_diff("f", &old, &far),
            "--- a/f\n+++ b/f\n@@ -1,5 +1,5 @@\n 1\n-2\n+two\n 3\n 4\n 5\n@@ -15,6 +15,6 @@\n 15\n 16\n 17\n-18\n+eighteen\n 19\n 20\n"
        );
    }

    #[test]
    fn diff_edge_cases() {
        assert_eq!(unified_diff("f", "same\n", "same\n"), "");
        assert_eq!(
            unified_diff("f", "", "a\nb\n"),
            "--- a/f\n+++ b/f\n@@ -0,0 +1,2 @@\n+a\n+b\n"
        );
        assert_eq!(
            unified_diff("f", "a\n", "a"),
            "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+a\n\\ No newline at end of file\n"
        );
        assert_eq!(
            unified_diff("f", "a\nb\nc\n", "a\nc\n"),
            "--- a/f\n+++ b/f\n@@ -1,3 +1,2 @@\n a\n-b\n c\n"
        );
        assert_eq!(
            unified_diff("f", "x\r\n", "y\r\n"),
            "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-x\r\n+y\r\n"
        );
    }

    #[test]
    fn diff_applies_with_patch() {
        // An independent check that the hunks are well formed: GNU patch applies them.
        let version = std::process::Command::new("patch")
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("patch: {e} (apt-get install -y patch)"));
        assert!(version.status.success());
        let original = fixture("multi-stage.Dockerfile");
        let result = rewrite(&original, &pinned);
        let dir =
            std::env::temp_dir().join(format!("mirror-dockerfile-diff-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("Dockerfile");
        std::fs::write(&file, &original).unwrap();
        let diff = unified_diff("Dockerfile", &original, &result.text);
        let mut child = std::process::Command::new("patch")
            .args(["-p1", "--quiet", "--directory"])
            .arg(&dir)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(diff.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "{diff}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), result.text);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
