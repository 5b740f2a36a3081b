//! Access to environment variables through a trait, so tests never mutate the process environment.

use std::collections::HashMap;
use std::fmt;

/// A source of environment variables.
pub trait Env: Send + Sync + fmt::Debug {
    /// The value of `name`, if set (an empty value counts as set).
    fn var(&self, name: &str) -> Option<String>;

    /// The value of `name` if it is set and not empty.
    fn non_empty(&self, name: &str) -> Option<String> {
        self.var(name).filter(|v| !v.is_empty())
    }
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// A fixed set of variables, for tests and for embedding.
///
/// `Debug` prints only the variable names, never their values (they may be secrets).
#[derive(Clone, Default)]
pub struct MapEnv(HashMap<String, String>);

// === impl MapEnv ===

impl MapEnv {
    /// An empty environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a variable (builder style).
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(name.into(), value.into());
        self
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for MapEnv {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl fmt::Debug for MapEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        f.debug_tuple("MapEnv").field(&names).finish()
    }
}

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_names_only() {
        let env = MapEnv::new().with("AZURE_CLIENT_SECRET", "canary-value");
        let shown = format!("{env:?}");
        assert!(shown.contains("AZURE_CLIENT_SECRET"));
        assert!(!shown.contains("canary-value"));
    }

    #[test]
    fn non_empty_skips_empty_values() {
        let env = MapEnv::new().with("A", "").with("B", "x");
        assert_eq!(env.var("A").as_deref(), Some(""));
        assert_eq!(env.non_empty("A"), None);
        assert_eq!(env.non_empty("B").as_deref(), Some("x"));
    }
}
