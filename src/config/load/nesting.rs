//! A linear pre-scan that bounds how deeply a document nests, before the YAML parser sees it.
//!
//! The parser's time grows with the square of the depth of nested flow collections (`[[[[…` of 100 000 levels
//! takes half a minute), so the depth must be known without parsing. Both bounds are conservative: they may
//! count a level the parser would not see (a bracket inside a quoted string), never the other way round for flow
//! collections, which is where the cost is.
//!
//! - **Flow collections** (`[`, `{`). Inside a flow collection, YAML is read the same way whatever surrounds it:
//!   quoted scalars, plain scalars, comments, anchors and tags end where the parser ends them, independently of
//!   indentation. So every `[` or `{` in the text starts a reader that follows the parser's flow rules from there
//!   and counts levels until its collection closes. The one that starts at a real opening bracket sees exactly
//!   what the parser sees; the others (a bracket in a comment, in a quoted string) may only count too much.
//!   Readers in the same state are merged (keeping the deepest), so the scan is linear: a dozen states per
//!   character.
//! - **Block collections** (indentation, `- - - x`). The parser stops these itself at 128 levels, cheaply; the
//!   pre-scan only gives a clear message first. It counts the distinct indentation levels open at each line plus
//!   the `- `, `? ` and `: ` indicators that start it.

/// The deepest nesting accepted, flow and block collections each. A configuration needs about six.
pub const MAX_NESTING: usize = 64;

/// What the flow reader is in the middle of; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Between tokens.
    Token,
    /// Inside a word of a plain scalar.
    Plain,
    /// After blanks or line breaks inside a plain scalar (a `#` here starts a comment).
    PlainBlank,
    /// Inside a single-quoted scalar.
    Single,
    /// Just after a `'` inside a single-quoted scalar: `''` is an escaped quote, anything else ends it.
    SingleQuote,
    /// Inside a double-quoted scalar.
    Double,
    /// Just after a `\` inside a double-quoted scalar.
    DoubleEscape,
    /// A comment, up to the line break.
    Comment,
    /// An anchor or alias name.
    Anchor,
    /// Just after the `!` of a tag.
    TagStart,
    /// A tag.
    Tag,
    /// A verbatim tag, `!<…>`.
    TagVerbatim,
}

const STATES: [Lex; 12] = [
    Lex::Token,
    Lex::Plain,
    Lex::PlainBlank,
    Lex::Single,
    Lex::SingleQuote,
    Lex::Double,
    Lex::DoubleEscape,
    Lex::Comment,
    Lex::Anchor,
    Lex::TagStart,
    Lex::Tag,
    Lex::TagVerbatim,
];

/// The deepest nesting found, and the line where it was first reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deepest {
    /// Levels.
    pub(crate) depth: usize,
    /// 1-based line.
    pub(crate) line: usize,
}

/// Refuses text nested deeper than [`MAX_NESTING`], with a message naming the line.
pub(super) fn check(text: &str) -> Result<(), String> {
    let flow = flow_nesting(text, MAX_NESTING);
    if flow.depth > MAX_NESTING {
        return Err(format!(
            "`[`/`{{` collections nest more than {MAX_NESTING} levels deep at line {}; a configuration may nest at most {MAX_NESTING} levels",
            flow.line
        ));
    }
    let block = block_nesting(text, MAX_NESTING);
    if block.depth > MAX_NESTING {
        return Err(format!(
            "indented collections (or `- ` chains) nest more than {MAX_NESTING} levels deep at line {}; a configuration may nest at most {MAX_NESTING} levels",
            block.line
        ));
    }
    Ok(())
}

/// An upper bound of the flow-collection depth the YAML parser reaches in `text`; the scan stops as soon as it
/// passes `stop_above`.
pub(crate) fn flow_nesting(text: &str, stop_above: usize) -> Deepest {
    // The depth of the deepest reader in each state (0: no reader).
    let mut readers = [0usize; STATES.len()];
    let mut deepest = Deepest { depth: 0, line: 1 };
    let (mut line, mut column) = (1, 0);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let next = chars.peek().copied();
        let mut after = [0usize; STATES.len()];
        for (state, &depth) in STATES.iter().zip(&readers) {
            if depth == 0 {
                continue;
            }
            let (to, change) = step(*state, c, next, column);
            let depth = depth.saturating_add_signed(change);
            // At 0 the collection this reader follows has closed: the parser is back in block context.
            if depth > 0 {
                after[to as usize] = after[to as usize].max(depth);
            }
        }
        if c == '[' || c == '{' {
            after[Lex::Token as usize] = after[Lex::Token as usize].max(1);
        }
        readers = after;
        let depth = readers.iter().copied().max().unwrap_or(0);
        if depth > deepest.depth {
            deepest = Deepest { depth, line };
            if depth > stop_above {
                break;
            }
        }
        if is_break(c) {
            if !(c == '\r' && next == Some('\n')) {
                line += 1;
            }
            column = 0;
        } else {
            column += 1;
        }
    }
    deepest
}

/// A bound of the block-collection depth (see the module docs); the scan stops as soon as it passes `stop_above`.
pub(crate) fn block_nesting(text: &str, stop_above: usize) -> Deepest {
    let mut indents: Vec<usize> = Vec::new();
    let mut deepest = Deepest { depth: 0, line: 1 };
    for (n, line) in yaml_lines(text).enumerate() {
        let rest = line.trim_start_matches(' ');
        if rest.trim().is_empty() || rest.starts_with('#') {
            continue;
        }
        let indent = line.len() - rest.len();
        while indents.last().is_some_and(|&top| top > indent) {
            indents.pop();
        }
        if indents.last().is_none_or(|&top| top < indent) {
            indents.push(indent);
        }
        // Each compact indicator opens one more level on the same line: `- - x`, `- ? x`, `- key: …`.
        let mut chain = 0;
        let mut rest = rest;
        while let Some(after) = ["- ", "-\t", "? ", "?\t", ": ", ":\t"]
            .iter()
            .find_map(|indicator| rest.strip_prefix(indicator))
        {
            chain += 1;
            rest = after.trim_start_matches([' ', '\t']);
        }
        let depth = indents.len() + chain;
        if depth > deepest.depth {
            deepest = Deepest { depth, line: n + 1 };
            if depth > stop_above {
                break;
            }
        }
    }
    deepest
}

/// The lines of `text`, split at every YAML line break (`\r\n` counts as one).
fn yaml_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.char_indices().find(|&(_, c)| is_break(c)) {
            Some((at, c)) => {
                let skip = if text[at..].starts_with("\r\n") {
                    2
                } else {
                    c.len_utf8()
                };
                rest = Some(&text[at + skip..]);
                Some(&text[..at])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

/// One character `c` (followed by `next`, at `column`) read in `state`: the next state, and the change of depth.
fn step(state: Lex, c: char, next: Option<char>, column: usize) -> (Lex, isize) {
    match state {
        Lex::Token => token(c, next, column),
        Lex::Plain => plain(c, next, column),
        Lex::PlainBlank if is_blank(c) || is_break(c) => (Lex::PlainBlank, 0),
        Lex::PlainBlank if c == '#' => (Lex::Comment, 0),
        Lex::PlainBlank => plain(c, next, column),
        Lex::Single if c == '\'' => (Lex::SingleQuote, 0),
        Lex::Single => (Lex::Single, 0),
        Lex::SingleQuote if c == '\'' => (Lex::Single, 0),
        Lex::SingleQuote => token(c, next, column),
        Lex::Double if c == '\\' => (Lex::DoubleEscape, 0),
        Lex::Double if c == '"' => (Lex::Token, 0),
        Lex::Double | Lex::DoubleEscape => (Lex::Double, 0),
        Lex::Comment if is_break(c) => (Lex::Token, 0),
        Lex::Comment => (Lex::Comment, 0),
        Lex::Anchor if c.is_ascii_alphanumeric() || c == '_' || c == '-' => (Lex::Anchor, 0),
        Lex::Anchor => token(c, next, column),
        Lex::TagStart if c == '<' => (Lex::TagVerbatim, 0),
        Lex::TagStart | Lex::Tag if is_tag_char(c) => (Lex::Tag, 0),
        Lex::TagStart | Lex::Tag => token(c, next, column),
        Lex::TagVerbatim if c == '>' => (Lex::Token, 0),
        Lex::TagVerbatim if is_tag_char(c) || matches!(c, ',' | '[' | ']') => (Lex::TagVerbatim, 0),
        Lex::TagVerbatim => token(c, next, column),
    }
}

/// Between tokens in a flow collection (libyaml's `fetch_next_token` with a flow level above zero).
fn token(c: char, next: Option<char>, column: usize) -> (Lex, isize) {
    match c {
        c if is_blank(c) || is_break(c) => (Lex::Token, 0),
        '\u{feff}' if column == 0 => (Lex::Token, 0),
        '#' => (Lex::Comment, 0),
        '[' | '{' => (Lex::Token, 1),
        ']' | '}' => (Lex::Token, -1),
        // In flow context `?` and `:` are always indicators.
        ',' | '?' | ':' => (Lex::Token, 0),
        '-' if next.is_none_or(|n| is_blank(n) || is_break(n)) => (Lex::Token, 0),
        '*' | '&' => (Lex::Anchor, 0),
        '!' => (Lex::TagStart, 0),
        '\'' => (Lex::Single, 0),
        '"' => (Lex::Double, 0),
        // Cannot start a token here: the parser stops with an error.
        '|' | '>' | '%' | '@' | '`' => (Lex::Token, 0),
        _ => (Lex::Plain, 0),
    }
}

/// Inside a plain scalar in a flow collection (libyaml's `scan_plain_scalar`): it ends at `: `, at a flow
/// indicator, or at a comment after blanks.
fn plain(c: char, next: Option<char>, column: usize) -> (Lex, isize) {
    match c {
        ':' if next.is_none_or(|n| is_blank(n) || is_break(n) || ",?[]{}".contains(n)) => {
            (Lex::Token, 0)
        }
        ',' | '[' | ']' | '{' | '}' => token(c, next, column),
        c if is_blank(c) || is_break(c) => (Lex::PlainBlank, 0),
        _ => (Lex::Plain, 0),
    }
}

/// Space or tab.
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The line breaks YAML (and libyaml) knows.
fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// Characters of a tag (libyaml's URI characters).
fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_;/?:@&=+$.%!~*'()".contains(c)
}

#[cfg(test)]
mod tests;
