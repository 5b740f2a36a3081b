//! The request-path rule. Routes and `allow.paths` match the path segment by segment as the caller sent it; the
//! upstream, or a server in front of it, may read the same bytes differently. So a path is refused when any
//! segment, read the way a lenient server might read it, is a dot segment or hides a separator:
//!
//! 1. **Percent-decoding, repeated.** `%252e` is `%2e` after one decoding and `.` after two. A segment is decoded
//!    until nothing changes (at most [`MAX_ROUNDS`] rounds; more is refused). Each decoding must give UTF-8, so
//!    overlong forms (`%c0%ae`, `%e0%80%ae`, `%f0%80%80%ae` for `.`; `%c0%af` for `/`; `%c1%9c` for `\`), which
//!    lenient decoders read as ASCII, are refused. IIS's `%uXXXX` escapes are refused at any depth.
//! 2. **Unicode compatibility forms** that NFKC normalisation or Windows' best-fit code-page conversion turn into
//!    `.`, `/`, `\`, `;`, `?`, `#` or `%` are read as those characters ([`compat`] lists them), and so is the
//!    whole fullwidth ASCII block (U+FF01–U+FF5E, so `％２ｅ` reads as `%2e`).
//! 3. **Matrix parameters and other cuts.** Tomcat, Jetty and Spring drop `;…` from a segment, so `..;x` is `..`;
//!    a decoded `?` or `#` would end the path for a server that re-parses it. The segment is judged up to the
//!    first of these.
//! 4. **Trimming.** Windows drops trailing dots and spaces, Java's `trim()` drops control characters, and some
//!    normalisers drop invisible format characters. A segment made only of dots and such characters (`.. `,
//!    `...`, `.%09`) counts as a dot segment; names like `a..b`, `v1.0` or `...x` do not.
//!
//! A decoded `/`, `\` or NUL anywhere in a segment is refused too: it would split the segment for a server that
//! decodes before splitting.

use std::borrow::Cow;

use crate::proxy::error::ProxyError;

/// Decoding rounds a segment may need before it stops changing. Clients encode once, sometimes twice; the last
/// round is the one that finds nothing more to change.
const MAX_ROUNDS: usize = 4;

/// How a lenient server might read one segment: fully decoded and mapped, or why it cannot be used.
///
/// Allocates only for segments that contain `%` or non-ASCII characters.
pub(super) fn check_segment(segment: &str) -> Result<(), ProxyError> {
    if segment.is_ascii() && !segment.contains('%') {
        return judge(segment);
    }
    judge(&lenient_view(segment)?)
}

/// The fixed point of "map compatibility forms, then percent-decode".
fn lenient_view(segment: &str) -> Result<String, ProxyError> {
    let mut current = segment.to_owned();
    for _ in 0..MAX_ROUNDS {
        let mapped = map_compat(&current);
        if has_iis_escape(&mapped) {
            return Err(ProxyError::BadRequest(
                "the request path must not contain %u escapes",
            ));
        }
        let next = match percent_decode(&mapped) {
            None => mapped.into_owned(),
            Some(bytes) => String::from_utf8(bytes).map_err(|_| {
                ProxyError::BadRequest(
                    "the request path must be UTF-8 once percent-decoded (no overlong forms)",
                )
            })?,
        };
        if next == current {
            return Ok(current);
        }
        current = next;
    }
    Err(ProxyError::BadRequest(
        "the request path is percent-encoded too many times",
    ))
}

/// Refuses a (decoded) segment that holds a separator, or is a dot segment up to its first `;`, `?` or `#`.
fn judge(view: &str) -> Result<(), ProxyError> {
    if view.contains(['/', '\\', '\0']) {
        return Err(ProxyError::BadRequest(
            "the request path must not contain an encoded '/', '\\' or NUL, in any spelling",
        ));
    }
    let head = view.find([';', '?', '#']).map_or(view, |end| &view[..end]);
    if head.contains('.') && head.chars().all(|c| c == '.' || is_ignorable(c)) {
        return Err(ProxyError::BadRequest(
            "the request path must not contain '.' or '..' segments, in any spelling (matrix parameters, percent-encoding, Unicode look-alikes, trailing dots or spaces)",
        ));
    }
    Ok(())
}

/// Characters a lenient server may drop from a segment: whitespace and control characters (Windows trims
/// trailing spaces, Java's `trim()` everything up to U+0020), combining marks and invisible format characters.
fn is_ignorable(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '\u{AD}'
                | '\u{300}'..='\u{36F}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
        )
}

/// The ASCII that NFKC normalisation (N) or a Windows best-fit conversion (B, with the code pages) gives for the
/// characters that matter to a path: `.`, `/`, `\`, the cut characters `;` `?` `#`, and `%`. The fullwidth ASCII
/// block U+FF01–U+FF5E is handled in [`map_compat`] (N, and B in every single-byte code page).
///
/// Not mapped: other compatibility digits and letters (superscripts, circled or mathematical forms). They could
/// spell an escape only for a server that normalises and then percent-decodes again.
fn compat(c: char) -> Option<&'static str> {
    Some(match c {
        // U+2024 one dot leader (N), U+FE52 small full stop (N), U+3002 ideographic full stop and U+FF61 its
        // halfwidth form (IDNA reads both as a full stop).
        '\u{2024}' | '\u{FE52}' | '\u{3002}' | '\u{FF61}' => ".",
        // U+2025 two dot leader, U+FE30 its vertical form (N).
        '\u{2025}' | '\u{FE30}' => "..",
        // U+2026 horizontal ellipsis, U+FE19 its vertical form (N).
        '\u{2026}' | '\u{FE19}' => "...",
        // U+2044 fraction slash, U+2215 division slash (B 1250, 1252, 1254); U+00B4 acute accent (B 1253).
        '\u{2044}' | '\u{2215}' | '\u{B4}' => "/",
        // Account of, addressed to the subject, care of, cada una (N).
        '\u{2100}' => "a/c",
        '\u{2101}' => "a/s",
        '\u{2105}' => "c/o",
        '\u{2106}' => "c/u",
        // U+FE68 small reverse solidus (N); U+2216 set minus (B 1250, 1252, 1254); U+00A5 yen sign (B 932) and
        // U+20A9 won sign (B 949), which those code pages store as the byte 0x5C.
        '\u{FE68}' | '\u{2216}' | '\u{A5}' | '\u{20A9}' => "\\",
        // U+037E Greek question mark (canonically `;`, and B), U+FE14, U+FE54 (N).
        '\u{37E}' | '\u{FE14}' | '\u{FE54}' => ";",
        // U+FE16, U+FE56 (N); U+00BF inverted question mark (B 932, 950, 1250).
        '\u{FE16}' | '\u{FE56}' | '\u{BF}' => "?",
        '\u{2047}' => "??",
        '\u{2048}' => "?!",
        '\u{2049}' => "!?",
        '\u{FE5F}' => "#",
        // U+FE6A small percent sign (N); U+066A Arabic percent sign (B 1250, 1252, 1254).
        '\u{FE6A}' | '\u{66A}' => "%",
        _ => return None,
    })
}

/// `text` with every compatibility form of [`compat`] and the fullwidth ASCII block replaced by ASCII.
fn map_compat(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match (c, compat(c)) {
            (_, Some(ascii)) => out.push_str(ascii),
            ('\u{FF01}'..='\u{FF5E}', None) => {
                out.push(char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c));
            }
            (c, None) => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// True when `text` holds an IIS `%uXXXX` escape (either case of `u`, four hex digits).
fn has_iis_escape(text: &str) -> bool {
    text.as_bytes()
        .windows(6)
        .any(|w| w[0] == b'%' && (w[1] | 0x20) == b'u' && w[2..].iter().all(u8::is_ascii_hexdigit))
}

/// `text` with each `%XX` escape decoded; `None` when it has none. Malformed escapes stay as they are.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut decoded = false;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            )
        {
            out.push(hi << 4 | lo);
            decoded = true;
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    decoded.then_some(out)
}

fn hex(b: u8) -> Option<u8> {
    // The digit's value is below 16, so the conversion cannot fail.
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests;
