//! `rewrite-from`: point a Dockerfile's `FROM` lines at the mirrored images.
//!
//! The walkthrough's last manual step is editing `Dockerfile.prod` so that
//! `FROM python:3.10-slim-buster` becomes the ECR copy. [`rewrite`] does that
//! edit for every external base image and nothing else: only the bytes of the
//! image references change, so comments, indentation, line continuations and
//! line endings survive, and the result reads well in [`unified_diff`].
//!
//! It reads Dockerfiles the way BuildKit does: parser directives (`# escape=`),
//! case-insensitive instructions, line continuations with comment lines inside
//! them, heredoc bodies (which are file content, not instructions), stage names
//! (`FROM build` after `... AS build` is not an image), `scratch`, and build
//! arguments, which it cannot resolve and reports in
//! [`RewriteResult::warnings`].
//!
//! ```
//! use mirror_ecr::dockerfile::{Rewrite, rewrite};
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

use std::collections::{HashMap, HashSet};

use mirror_oci::Reference;

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

/// Byte offsets where each line starts.
fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .filter(|&start| start < text.len() || start == 0)
        .collect()
}

/// One physical line: its offset and its content without `\n` or `\r\n`.
struct PhysicalLine<'a> {
    start: usize,
    content: &'a str,
}

fn physical_lines(text: &str) -> impl Iterator<Item = PhysicalLine<'_>> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= text.len() {
            return None;
        }
        let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let content = text[start..end]
            .strip_suffix('\r')
            .unwrap_or(&text[start..end]);
        let line = PhysicalLine { start, content };
        start = end + 1;
        Some(line)
    })
}

/// An instruction with line continuations joined: each character with the
/// byte offset it came from, so that words can be mapped back to the file.
struct Instruction {
    chars: Vec<(char, usize)>,
}

/// A whitespace-separated word of an instruction.
struct Token {
    text: String,
    start: usize,
    end: usize,
    /// Written in one piece: not interrupted by a line continuation.
    contiguous: bool,
}

impl Instruction {
    fn tokens(&self) -> Vec<Token> {
        let mut tokens = Vec::new();
        let mut current: Option<Token> = None;
        for &(c, offset) in &self.chars {
            if c == ' ' || c == '\t' {
                tokens.extend(current.take());
                continue;
            }
            let token = current.get_or_insert_with(|| Token {
                text: String::new(),
                start: offset,
                end: offset,
                contiguous: true,
            });
            if offset != token.end {
                token.contiguous = false;
            }
            token.text.push(c);
            token.end = offset + c.len_utf8();
        }
        tokens.extend(current);
        tokens
    }
}

/// The instructions of a Dockerfile, without comments, blank lines and
/// heredoc bodies.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut escape = '\\';
    let mut directives_open = true;
    let mut heredocs: Vec<(String, bool)> = Vec::new();
    let mut instructions = Vec::new();
    let mut current: Option<Instruction> = None;

    for line in physical_lines(text) {
        let (start, content) = match line.content.strip_prefix('\u{feff}') {
            Some(rest) if line.start == 0 => (3, rest),
            _ => (line.start, line.content),
        };
        if let Some((terminator, strip_tabs)) = heredocs.first() {
            let candidate = if *strip_tabs {
                content.trim_start_matches('\t')
            } else {
                content
            };
            if candidate == terminator {
                heredocs.remove(0);
            }
            continue;
        }
        let trimmed = content.trim_start();
        if directives_open {
            match parse_directive(trimmed) {
                Some((key, value)) => {
                    if key.eq_ignore_ascii_case("escape") && matches!(value, "\\" | "`") {
                        escape = value.chars().next().unwrap_or('\\');
                    }
                    continue;
                }
                None => directives_open = false,
            }
        }
        // Comment lines and empty lines are skipped, inside a continuation too.
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let body = content.trim_end_matches([' ', '\t']);
        let (body, continues) = match body.strip_suffix(escape) {
            Some(body) => (body, true),
            None => (content, false),
        };
        let instruction = current.get_or_insert_with(|| Instruction { chars: Vec::new() });
        instruction
            .chars
            .extend(body.char_indices().map(|(offset, c)| (c, start + offset)));
        if !continues && let Some(instruction) = current.take() {
            heredocs = heredoc_terminators(&instruction);
            instructions.push(instruction);
        }
    }
    instructions.extend(current);
    instructions
}

/// `# key=value` at the top of the file, before anything else.
fn parse_directive(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.strip_prefix('#')?.split_once('=')?;
    let key = key.trim();
    let valid_key = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric());
    valid_key.then_some((key, value.trim()))
}

/// The terminators of the heredocs a RUN, COPY or ADD opens (`<<EOF`,
/// `<<-"EOT"`), in order; `true` when leading tabs are stripped (`<<-`).
/// `$((1<<2))` and here-strings (`<<<`) are not heredocs.
fn heredoc_terminators(instruction: &Instruction) -> Vec<(String, bool)> {
    let tokens = instruction.tokens();
    let takes_heredocs = tokens.first().is_some_and(|keyword| {
        ["run", "copy", "add"]
            .iter()
            .any(|k| keyword.text.eq_ignore_ascii_case(k))
    });
    if !takes_heredocs {
        return Vec::new();
    }
    let mut terminators = Vec::new();
    for token in &tokens[1..] {
        // BuildKit: a whole word matching `^(\d*)<<(-?)([^<]*)$`, quotes removed.
        let word = token.text.trim_start_matches(|c: char| c.is_ascii_digit());
        let Some(rest) = word.strip_prefix("<<") else {
            continue;
        };
        if rest.contains('<') {
            continue;
        }
        let (strip_tabs, name) = match rest.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, rest),
        };
        let name: String = name.chars().filter(|c| !matches!(c, '"' | '\'')).collect();
        if !name.is_empty() {
            terminators.push((name, strip_tabs));
        }
    }
    terminators
}

/// A unified diff of `old` and `new` (three lines of context, `a/` and `b/`
/// prefixes as `git apply` and `patch -p1` expect), or an empty string when
/// they are equal. Lines keep their endings, so a CRLF file diffs as CRLF.
pub fn unified_diff(path: &str, old: &str, new: &str) -> String {
    const CONTEXT: usize = 3;
    if old == new {
        return String::new();
    }
    let old_lines: Vec<&str> = old.split_inclusive('\n').collect();
    let new_lines: Vec<&str> = new.split_inclusive('\n').collect();
    let ops = diff_lines(&old_lines, &new_lines);

    // Lines of old and new before each operation.
    let mut positions = Vec::with_capacity(ops.len() + 1);
    let (mut old_position, mut new_position) = (0, 0);
    for op in &ops {
        positions.push((old_position, new_position));
        match op {
            Op::Equal(_) => {
                old_position += 1;
                new_position += 1;
            }
            Op::Delete(_) => old_position += 1,
            Op::Insert(_) => new_position += 1,
        }
    }
    positions.push((old_position, new_position));

    let is_change = |k: usize| !matches!(ops[k], Op::Equal(_));
    let mut out = format!("--- a/{path}\n+++ b/{path}\n");
    let mut next = 0;
    while let Some(first) = (next..ops.len()).find(|&k| is_change(k)) {
        let mut last = first;
        while let Some(change) = (last + 1..ops.len()).find(|&k| is_change(k)) {
            if change - last - 1 > 2 * CONTEXT {
                break;
            }
            last = change;
        }
        let start = first.saturating_sub(CONTEXT);
        let end = (last + 1 + CONTEXT).min(ops.len());
        let hunk = &ops[start..end];
        let old_count = hunk
            .iter()
            .filter(|op| !matches!(op, Op::Insert(_)))
            .count();
        let new_count = hunk
            .iter()
            .filter(|op| !matches!(op, Op::Delete(_)))
            .count();
        let (old_before, new_before) = positions[start];
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            hunk_range(old_before, old_count),
            hunk_range(new_before, new_count)
        ));
        for op in hunk {
            let (prefix, line) = match op {
                Op::Equal(line) => (' ', line),
                Op::Delete(line) => ('-', line),
                Op::Insert(line) => ('+', line),
            };
            out.push(prefix);
            out.push_str(line);
            if !line.ends_with('\n') {
                out.push_str("\n\\ No newline at end of file\n");
            }
        }
        next = end;
    }
    out
}

fn hunk_range(before: usize, count: usize) -> String {
    match count {
        0 => format!("{before},0"),
        1 => format!("{}", before + 1),
        _ => format!("{},{count}", before + 1),
    }
}

enum Op<'a> {
    Equal(&'a str),
    Delete(&'a str),
    Insert(&'a str),
}

/// A shortest edit script by longest common subsequence over the lines that
/// differ (common head and tail trimmed first). Past a million cells, the
/// middle is replaced wholesale: still a correct diff, only a longer one.
fn diff_lines<'a>(old: &[&'a str], new: &[&'a str]) -> Vec<Op<'a>> {
    const MAX_CELLS: usize = 1 << 20;
    let head = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let tail = old[head..]
        .iter()
        .rev()
        .zip(new[head..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (old_middle, new_middle) = (&old[head..old.len() - tail], &new[head..new.len() - tail]);
    let (n, m) = (old_middle.len(), new_middle.len());

    let mut ops: Vec<Op<'a>> = old[..head].iter().map(|line| Op::Equal(line)).collect();
    if n.saturating_mul(m) > MAX_CELLS {
        ops.extend(old_middle.iter().map(|line| Op::Delete(line)));
        ops.extend(new_middle.iter().map(|line| Op::Insert(line)));
    } else {
        // lcs[i * (m + 1) + j]: longest common subsequence of old[i..] and new[j..].
        let width = m + 1;
        let mut lcs = vec![0_u32; (n + 1) * width];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * width + j] = if old_middle[i] == new_middle[j] {
                    lcs[(i + 1) * width + j + 1] + 1
                } else {
                    lcs[(i + 1) * width + j].max(lcs[i * width + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && old_middle[i] == new_middle[j] {
                ops.push(Op::Equal(old_middle[i]));
                i += 1;
                j += 1;
            } else if j == m || (i < n && lcs[(i + 1) * width + j] >= lcs[i * width + j + 1]) {
                ops.push(Op::Delete(old_middle[i]));
                i += 1;
            } else {
                ops.push(Op::Insert(new_middle[j]));
                j += 1;
            }
        }
    }
    ops.extend(old[old.len() - tail..].iter().map(|line| Op::Equal(line)));
    ops
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
        // An independent check that the hunks are well formed, when `patch` exists.
        let Ok(status) = std::process::Command::new("patch")
            .arg("--version")
            .output()
        else {
            return;
        };
        assert!(status.status.success());
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
