//! Reading a Dockerfile the way BuildKit does, down to byte offsets: parser
//! directives, line continuations (with comment lines inside them), heredoc
//! bodies and words. [`crate::rewrite`] needs the offsets to change only the
//! bytes of an image reference and leave everything else as it was.

/// Byte offsets where each line starts.
pub(crate) fn line_starts(text: &str) -> Vec<usize> {
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
pub(crate) struct Instruction {
    chars: Vec<(char, usize)>,
}

/// A whitespace-separated word of an instruction.
pub(crate) struct Token {
    pub(crate) text: String,
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Written in one piece: not interrupted by a line continuation.
    pub(crate) contiguous: bool,
}

impl Instruction {
    pub(crate) fn tokens(&self) -> Vec<Token> {
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
pub(crate) fn instructions(text: &str) -> Vec<Instruction> {
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
