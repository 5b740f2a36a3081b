//! A naive model of how lenient servers read one path segment, written independently of the proxy's rule, so the
//! fuzz targets can check that rule against it: every reading a server might make of an accepted segment must be
//! harmless.
//!
//! Readings start from the raw segment and, up to four times over, apply any of: one round of `%XX` decoding
//! with a sloppy UTF-8 decoder (overlong and 5/6-byte forms accepted, continuation bytes masked without checking
//! their top bits), the same with IIS `%uXXXX` escapes, and a compatibility mapping of a few well-known look-alikes
//! (NFKC and Windows best-fit). A reading is harmful when it holds a separator, or when, cut at the first `;`,
//! `?` or `#` (matrix parameters, a re-parse), and trimmed as Java's `trim()` or Windows would, it is `.`, `..`
//! or made only of dots.

/// At most this many distinct readings are followed per segment (keeps every input fast).
const MAX_READINGS: usize = 256;

/// Why a reading of `segment` is harmful, if one is.
pub fn harmful_reading(segment: &str) -> Option<String> {
    let mut readings: Vec<String> = vec![segment.to_owned()];
    let mut frontier = readings.clone();
    for _ in 0..4 {
        let mut next = Vec::new();
        for reading in &frontier {
            for step in [decode(reading, false), decode(reading, true), map(reading)] {
                if readings.len() < MAX_READINGS && !readings.contains(&step) {
                    readings.push(step.clone());
                    next.push(step);
                }
            }
        }
        frontier = next;
    }
    readings
        .into_iter()
        .find_map(|r| judge(&r).map(|why| format!("{why} in reading {r:?}")))
}

fn judge(reading: &str) -> Option<&'static str> {
    if reading.contains(['/', '\\']) {
        return Some("separator");
    }
    let cut = reading.split([';', '?', '#']).next().unwrap_or("");
    if matches!(cut.trim_matches(|c: char| c <= ' '), "." | "..") {
        return Some("dot segment after trim()");
    }
    if cut.contains('.') && cut.chars().all(|c| c == '.' || c == ' ') {
        return Some("dots and spaces only (Windows drops trailing dots and spaces)");
    }
    None
}

/// One round of percent-decoding (with IIS `%u` escapes when `iis`), read back through a sloppy UTF-8 decoder.
fn decode(text: &str, iis: bool) -> String {
    let b = text.as_bytes();
    let mut bytes = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if iis && b.get(i + 1).map(|c| c | 0x20) == Some(b'u') {
                if let Some(cp) = b.get(i + 2..i + 6).and_then(hex_value) {
                    let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
                    bytes.extend_from_slice(c.to_string().as_bytes());
                    i += 6;
                    continue;
                }
            }
            if let Some(v) = b.get(i + 1..i + 3).and_then(hex_value) {
                bytes.push(v as u8);
                i += 3;
                continue;
            }
        }
        bytes.push(b[i]);
        i += 1;
    }
    sloppy_utf8(&bytes)
}

fn hex_value(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// Decodes UTF-8 the way careless decoders did: the lead byte says how many bytes follow, each contributes its
/// low six bits whatever its top bits are, and no code point is too small for its length.
fn sloppy_utf8(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let lead = bytes[i];
        let (len, init) = match lead {
            0x00..=0x7F => (1, u32::from(lead)),
            0xC0..=0xDF => (2, u32::from(lead & 0x1F)),
            0xE0..=0xEF => (3, u32::from(lead & 0x0F)),
            0xF0..=0xF7 => (4, u32::from(lead & 0x07)),
            0xF8..=0xFB => (5, u32::from(lead & 0x03)),
            0xFC..=0xFD => (6, u32::from(lead & 0x01)),
            _ => (0, 0),
        };
        if len == 0 || i + len > bytes.len() {
            out.push('\u{FFFD}');
            i += 1;
            continue;
        }
        let cp = bytes[i + 1..i + len]
            .iter()
            .fold(init, |cp, &b| (cp << 6) | u32::from(b & 0x3F));
        out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
        i += len;
    }
    out
}

/// Well-known look-alikes of `.`, `/`, `\`, `;`, `%`, hex digits and `u` (a subset, spelled out here on purpose).
fn map(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '\u{FF0E}' | '\u{2024}' | '\u{FE52}' => out.push('.'),
            '\u{2025}' => out.push_str(".."),
            '\u{2026}' => out.push_str("..."),
            '\u{FF0F}' | '\u{2215}' | '\u{2044}' => out.push('/'),
            '\u{FF3C}' | '\u{FE68}' | '\u{2216}' => out.push('\\'),
            '\u{FF1B}' | '\u{FE54}' | '\u{37E}' => out.push(';'),
            '\u{FF1F}' => out.push('?'),
            '\u{FF05}' | '\u{FE6A}' => out.push('%'),
            '\u{FF10}'..='\u{FF19}' => out.push(char::from(b'0' + (c as u32 - 0xFF10) as u8)),
            '\u{FF21}'..='\u{FF26}' => out.push(char::from(b'A' + (c as u32 - 0xFF21) as u8)),
            '\u{FF41}'..='\u{FF46}' => out.push(char::from(b'a' + (c as u32 - 0xFF41) as u8)),
            '\u{FF55}' => out.push('u'),
            '\u{FF35}' => out.push('U'),
            c => out.push(c),
        }
    }
    out
}
