//! `WWW-Authenticate` parsing (RFC 9110 §11.6.1) and claims-challenge detection.
//!
//! A header may hold several challenges, and a response several headers; schemes other than Bearer (Digest,
//! PoP, Negotiate with a token68) are parsed and skipped; parameter values are tokens or quoted strings with `\`
//! escapes. A claims challenge is a Bearer challenge with a `claims` parameter and `error="insufficient_claims"`
//! — or ARM's older `error="invalid_token"` with `claims` — whose claims decode (base64, either alphabet, padding
//! optional) to a JSON object. More than one such challenge is ambiguous and is not handled.

use http::HeaderMap;
use http::header::WWW_AUTHENTICATE;

use crate::auth::claims::decode_claims_challenge;

/// One challenge: a scheme and its parameters (names lower-cased) or token68.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The auth scheme as sent (compare case-insensitively).
    pub scheme: String,
    /// `name=value` parameters, names lower-cased, values unquoted.
    pub params: Vec<(String, String)>,
    /// A token68 credential-style value (`Negotiate abc==`), if the challenge has one instead of parameters.
    pub token68: Option<String>,
}

/// A claims challenge the proxy can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimsChallenge {
    /// The `error` parameter (`insufficient_claims` or `invalid_token`).
    pub error: String,
    /// The decoded claims JSON, as sent.
    pub claims: String,
}

// === impl Challenge ===

impl Challenge {
    /// The value of parameter `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Every challenge of every `WWW-Authenticate` header, in order. Unparseable remainders are skipped, never an error.
pub fn challenges(headers: &HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse)
        .collect()
}

/// The claims challenge in `headers`, if there is exactly one usable one.
pub fn claims_challenge(headers: &HeaderMap) -> Option<ClaimsChallenge> {
    let mut found = challenges(headers).into_iter().filter_map(|c| {
        if !c.scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let error = c.param("error")?;
        if error != "insufficient_claims" && error != "invalid_token" {
            return None;
        }
        let encoded = c.param("claims")?;
        Some((error.to_owned(), encoded.to_owned()))
    });
    let (error, encoded) = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let claims = decode_claims_challenge(&encoded).ok()?;
    Some(ClaimsChallenge { error, claims })
}

/// Parses one header value into its challenges.
pub fn parse(value: &str) -> Vec<Challenge> {
    let mut p = Parser {
        s: value.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        p.skip_list_separators();
        let Some(scheme) = p.token() else {
            // Not a token where a scheme should start: skip one byte and try again.
            if p.i >= p.s.len() {
                break;
            }
            p.i += 1;
            continue;
        };
        let mut challenge = Challenge {
            scheme,
            params: Vec::new(),
            token68: None,
        };
        p.skip_spaces();
        if let Some(t68) = p.token68() {
            challenge.token68 = Some(t68);
        } else {
            p.params(&mut challenge.params);
        }
        out.push(challenge);
        if p.i >= p.s.len() {
            break;
        }
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_list_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// A token68 (`[A-Za-z0-9-._~+/]+=*`) that is the whole rest of this challenge (followed by end or `,`).
    fn token68(&mut self) -> Option<String> {
        let start = self.i;
        let mut j = self.i;
        while self
            .s
            .get(j)
            .is_some_and(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(b))
        {
            j += 1;
        }
        if j == start {
            return None;
        }
        while self.s.get(j) == Some(&b'=') {
            j += 1;
        }
        let mut k = j;
        while matches!(self.s.get(k), Some(b' ' | b'\t')) {
            k += 1;
        }
        // A token68 is the whole rest of the challenge; `name=value` continues, so it is a parameter.
        if !matches!(self.s.get(k), None | Some(b',')) {
            return None;
        }
        self.i = j;
        Some(String::from_utf8_lossy(&self.s[start..j]).into_owned())
    }

    /// `name=value` pairs separated by commas, until the next challenge (a token not followed by `=`) or the end.
    fn params(&mut self, params: &mut Vec<(String, String)>) {
        loop {
            self.skip_list_separators();
            let save = self.i;
            let Some(name) = self.token() else { return };
            self.skip_spaces();
            if self.peek() != Some(b'=') {
                // A new challenge's scheme.
                self.i = save;
                return;
            }
            self.i += 1;
            self.skip_spaces();
            let value = if self.peek() == Some(b'"') {
                self.quoted()
            } else {
                self.token().unwrap_or_default()
            };
            params.push((name.to_ascii_lowercase(), value));
            self.skip_spaces();
            match self.peek() {
                Some(b',') => self.i += 1,
                None => return,
                // Junk after a value: skip to the next comma.
                Some(_) => {
                    while self.peek().is_some_and(|b| b != b',') {
                        self.i += 1;
                    }
                }
            }
        }
    }

    /// A quoted string: `\x` escapes x; an unterminated string runs to the end.
    fn quoted(&mut self) -> String {
        self.i += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(next) = self.peek() {
                        out.push(next);
                        self.i += 1;
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests;
