//! A string that must never be shown: client secrets, passwords, access tokens. A leaf module: configuration,
//! credentials and the proxy (the caller key) all hold secrets in it.

use std::fmt;
use zeroize::Zeroizing;

/// A secret string. Its memory is zeroed on drop; `Debug` prints only `Secret(***)`;
/// it has no `Display`, `Clone` or `Serialize`, so it cannot reach a log line or body by accident.
pub struct Secret(Zeroizing<String>);

// === impl Secret ===

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The secret value. Call this only where the value is sent to the party that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `candidate` (e.g. a header value a caller sent) is exactly this secret, compared in constant time:
    /// the time taken depends on the lengths, never on where the bytes differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl PartialEq for Secret {
    /// Constant-time comparison (length leaks, content does not).
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for Secret {}

/// Byte equality without an early exit on the first difference (length leaks, content does not).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new("canary-SECRET-1234");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(&s)), "Some(Secret(***))");
        assert_eq!(s.expose(), "canary-SECRET-1234");
    }

    #[test]
    fn equality_compares_content() {
        assert_eq!(Secret::new("a"), Secret::new("a"));
        assert_ne!(Secret::new("a"), Secret::new("b"));
        assert_ne!(Secret::new("a"), Secret::new("ab"));
        let s = Secret::new("key-1234");
        assert!(s.matches(b"key-1234"));
        assert!(!s.matches(b"key-1235") && !s.matches(b"key-123") && !s.matches(b""));
    }
}
