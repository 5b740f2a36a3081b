//! The document walker: key paths, `${VAR}` expansion, typed scalars, and the problem list.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::Value;

use crate::config::{ConfigError, Problem};
use crate::env::Env;
use crate::secret::Secret;

/// Walks a parsed document, collecting every problem with its key path.
pub(super) struct Walker<'a> {
    env: &'a dyn Env,
    base_dir: &'a Path,
    problems: Vec<Problem>,
    /// Every scalar that took text from the environment, so that no problem ever shows that text.
    expansions: Vec<Expansion>,
}

/// A scalar that took text from the environment: where it is, how the file writes it, what it became.
#[derive(Debug)]
struct Expansion {
    /// Its key path.
    path: String,
    /// The scalar as written in the file (`https://${HOST}`), which may be shown.
    raw: String,
    /// The scalar after expansion, which may not.
    text: String,
    /// Each variable whose value went into it: (name, value). Values that are empty are not listed.
    values: Vec<(String, String)>,
}

/// The result of expanding one scalar.
#[derive(Debug, PartialEq, Eq)]
struct Expanded {
    /// The text.
    text: String,
    /// (name, value) of every variable that contributed a non-empty value (defaults come from the file).
    values: Vec<(String, String)>,
}

/// A key's value as seen by the walker: not given, given but invalid (problem reported), or valid.
#[derive(Debug, Default)]
pub(super) enum Field<T> {
    /// The key was not in the document.
    #[default]
    Absent,
    /// The key was there but its value was rejected; a problem has been recorded.
    Invalid,
    /// The key was there and its value is valid.
    Valid(T),
}

/// Values shorter than this are replaced only where a message quotes them whole (`"ab"`): replacing every
/// occurrence of a short text would garble the words around it.
const SHORT_VALUE: usize = 4;

/// No run of this many characters of an environment value may be left in a message once it has been redacted;
/// otherwise the message is replaced by a generic one.
const FRAGMENT: usize = 8;

/// Why `${…}` expansion failed.
#[derive(Debug, PartialEq, Eq)]
enum ExpandError {
    /// These variables are referenced without a default and are not set.
    Unset(Vec<String>),
    /// A `${` without a valid name or closing `}`.
    Malformed,
}

const MALFORMED: &str =
    "invalid variable reference: use ${VAR}, ${VAR:-default}, or $$ for a literal $";

// === impl Walker ===

impl<'a> Walker<'a> {
    /// A walker that expands variables from `env` and resolves relative paths against `base_dir`.
    pub(super) fn new(env: &'a dyn Env, base_dir: &'a Path) -> Self {
        Self {
            env,
            base_dir,
            problems: Vec::new(),
            expansions: Vec::new(),
        }
    }

    /// The environment variables come from here.
    pub(super) fn env(&self) -> &'a dyn Env {
        self.env
    }

    /// Relative paths are resolved against this directory.
    pub(super) fn base_dir(&self) -> &'a Path {
        self.base_dir
    }

    /// Records a problem. `message` must never contain a secret value. Text that came from the environment is
    /// taken out of it (see [`Walker::redact`]), so a secret put in the wrong key is never shown either.
    pub(super) fn problem(&mut self, path: &str, message: impl Into<String>) {
        let message = self.redact(path, message.into());
        self.problems.push(Problem {
            path: path.to_owned(),
            message,
        });
    }

    /// Notes that the value for `path` is the environment variable `name` (read directly, not through `${…}`),
    /// so that problems never show it.
    pub(super) fn value_from_env(&mut self, path: &str, name: &str, value: &str) {
        if !value.is_empty() {
            self.expansions.push(Expansion {
                path: path.to_owned(),
                raw: format!("${{{name}}}"),
                text: value.to_owned(),
                values: vec![(name.to_owned(), value.to_owned())],
            });
        }
    }

    /// `message` about `path` without any text that came from the environment into `path` or a key below it:
    /// an expanded scalar is shown as the file writes it (`"https://${HOST}"`), a variable's value as `${NAME}`.
    /// If any run of [`FRAGMENT`] characters of a value is still there (a validator quoted part of it), the
    /// message is replaced by one that only names the variables.
    fn redact(&self, path: &str, mut message: String) -> String {
        let mut relevant: Vec<&Expansion> = self
            .expansions
            .iter()
            .filter(|e| is_within(&e.path, path))
            .collect();
        if relevant.is_empty() {
            return message;
        }
        relevant.sort_by_key(|e| std::cmp::Reverse(e.text.len()));
        for e in &relevant {
            message = message.replace(&format!("{:?}", e.text), &format!("{:?}", e.raw));
            if e.text.chars().count() >= SHORT_VALUE {
                message = message.replace(&e.text, &e.raw);
            }
        }
        let mut values: Vec<&(String, String)> = relevant.iter().flat_map(|e| &e.values).collect();
        values.sort_by_key(|(_, value)| std::cmp::Reverse(value.len()));
        for (name, value) in &values {
            let shown = format!("${{{name}}}");
            message = message.replace(&format!("{value:?}"), &shown);
            if value.chars().count() >= SHORT_VALUE {
                message = message
                    .replace(&value.escape_debug().to_string(), &shown)
                    .replace(value.as_str(), &shown);
            }
        }
        let mut names: Vec<String> = values.iter().map(|(n, _)| format!("${{{n}}}")).collect();
        names.sort();
        names.dedup();
        if values.iter().any(|(_, value)| leaks(&message, value)) {
            return format!(
                "the value from {} is not valid here (not shown: it comes from the environment)",
                names.join(", ")
            );
        }
        // A message about this very key that shows nothing of the value still says where the value came from.
        let own: Vec<&Expansion> = relevant.into_iter().filter(|e| e.path == path).collect();
        if !own.is_empty() && !names.iter().any(|n| message.contains(n.as_str())) {
            let mut names: Vec<String> = own
                .iter()
                .flat_map(|e| &e.values)
                .map(|(n, _)| format!("${{{n}}}"))
                .collect();
            names.sort();
            names.dedup();
            message.push_str(&format!(" (the value comes from {})", names.join(", ")));
        }
        message
    }

    /// `Ok(value)` when the walk found no problem, else every problem found.
    pub(super) fn finish<T>(
        self,
        file: Option<PathBuf>,
        value: Option<T>,
    ) -> Result<T, ConfigError> {
        match value {
            Some(v) if self.problems.is_empty() => Ok(v),
            Some(_) | None => {
                let mut problems = self.problems;
                if problems.is_empty() {
                    problems.push(Problem {
                        path: String::new(),
                        message: "the configuration could not be checked".to_owned(),
                    });
                }
                Err(ConfigError { file, problems })
            }
        }
    }

    /// Walks a mapping (`null` counts as empty) in document order. `on(walker, key, key_path, value)`
    /// handles one entry and returns false for an unknown key, which is then reported.
    /// Returns false (after reporting) when `value` is not a mapping.
    pub(super) fn fields(
        &mut self,
        path: &str,
        value: &Value,
        mut on: impl FnMut(&mut Self, &str, &str, &Value) -> bool,
    ) -> bool {
        let map = match value {
            Value::Mapping(map) => map,
            Value::Null => return true,
            other => {
                self.problem(path, format!("expected a mapping, got {}", kind(other)));
                return false;
            }
        };
        for (key, value) in map {
            let Value::String(key) = key else {
                self.problem(path, format!("keys must be strings, got {}", kind(key)));
                continue;
            };
            let key_path = child(path, key);
            if !on(self, key, &key_path, value) {
                let message = match super::suggest::nearest(path, key) {
                    Some(known) => format!("unknown key `{key}` (did you mean `{known}`?)"),
                    None => format!("unknown key `{key}`"),
                };
                self.problem(&key_path, message);
            }
        }
        true
    }

    /// Walks a list in order; `on(walker, index, item_path, item)` handles one item.
    /// Returns the number of items, or `None` (after reporting) when `value` is not a list.
    pub(super) fn items(
        &mut self,
        path: &str,
        value: &Value,
        mut on: impl FnMut(&mut Self, usize, &str, &Value),
    ) -> Option<usize> {
        let Value::Sequence(items) = value else {
            self.problem(path, format!("expected a list, got {}", kind(value)));
            return None;
        };
        for (i, item) in items.iter().enumerate() {
            on(self, i, &index(path, i), item);
        }
        Some(items.len())
    }

    /// A list whose items `item(walker, item_path, item)` all accept; `None` if any is rejected.
    /// With `non_empty`, an empty list is a problem too.
    pub(super) fn list<T>(
        &mut self,
        path: &str,
        value: &Value,
        non_empty: bool,
        mut item: impl FnMut(&mut Self, &str, &Value) -> Option<T>,
    ) -> Option<Vec<T>> {
        let mut out = Vec::new();
        let mut all_valid = true;
        let count = self.items(path, value, |w, _, item_path, v| {
            match item(w, item_path, v) {
                Some(x) => out.push(x),
                None => all_valid = false,
            }
        })?;
        if non_empty && count == 0 {
            self.problem(path, "must not be empty");
            return None;
        }
        all_valid.then_some(out)
    }

    /// A non-secret string, after `${VAR}` expansion.
    pub(super) fn string(&mut self, path: &str, value: &Value) -> Option<String> {
        let Value::String(raw) = value else {
            self.not_a_string(path, value);
            return None;
        };
        self.expand(path, raw)
    }

    /// A non-secret string that `check` accepts; `check`'s message is reported otherwise.
    pub(super) fn checked(
        &mut self,
        path: &str,
        value: &Value,
        check: impl FnOnce(&str) -> Result<(), String>,
    ) -> Option<String> {
        let text = self.string(path, value)?;
        match check(&text) {
            Ok(()) => Some(text),
            Err(message) => {
                self.problem(path, message);
                None
            }
        }
    }

    /// A secret string, after expansion. No message about it ever shows its value.
    pub(super) fn secret(&mut self, path: &str, value: &Value) -> Option<Secret> {
        let Value::String(raw) = value else {
            self.not_a_string(path, value);
            return None;
        };
        let secret = Secret::new(self.expand(path, raw)?);
        if secret.is_empty() {
            self.problem(path, "must not be empty");
            return None;
        }
        Some(secret)
    }

    /// A boolean: YAML `true`/`false`, or the string `true`/`false` (any case) after expansion.
    pub(super) fn boolean(&mut self, path: &str, value: &Value) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            Value::String(raw) => {
                let text = self.expand(path, raw)?;
                match text.to_ascii_lowercase().as_str() {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => {
                        self.problem(path, format!("expected true or false (got {text:?})"));
                        None
                    }
                }
            }
            other => {
                self.problem(path, format!("expected true or false, got {}", kind(other)));
                None
            }
        }
    }

    /// A non-negative integer: a YAML number or a decimal string after expansion.
    pub(super) fn count(&mut self, path: &str, value: &Value) -> Option<u64> {
        let parsed = match value {
            Value::Number(n) => n.as_u64().ok_or_else(|| n.to_string()),
            Value::String(raw) => {
                let text = self.expand(path, raw)?;
                text.parse::<u64>().map_err(|_| format!("{text:?}"))
            }
            other => {
                self.problem(
                    path,
                    format!("expected a non-negative integer, got {}", kind(other)),
                );
                return None;
            }
        };
        parsed
            .map_err(|got| {
                self.problem(path, format!("expected a non-negative integer (got {got})"))
            })
            .ok()
    }

    /// A duration written the humantime way (`30s`, `5m`, `250ms`), after expansion.
    pub(super) fn duration(&mut self, path: &str, value: &Value) -> Option<Duration> {
        let text = match value {
            Value::String(raw) => self.expand(path, raw)?,
            Value::Number(n) => {
                self.problem(
                    path,
                    format!("a duration needs a unit, like \"{n}s\" (got {n})"),
                );
                return None;
            }
            other => {
                self.problem(
                    path,
                    format!("expected a duration like \"30s\", got {}", kind(other)),
                );
                return None;
            }
        };
        humantime::parse_duration(&text)
            .map_err(|e| self.problem(path, format!("invalid duration {text:?}: {e}")))
            .ok()
    }

    /// A duration that must be more than zero.
    pub(super) fn positive_duration(&mut self, path: &str, value: &Value) -> Option<Duration> {
        let duration = self.duration(path, value)?;
        if duration.is_zero() {
            self.problem(path, "must be greater than zero");
            return None;
        }
        Some(duration)
    }

    /// Reports a non-string where a string is expected (naming only the kind, never the value).
    fn not_a_string(&mut self, path: &str, value: &Value) {
        let hint = match value {
            Value::Number(_) | Value::Bool(_) => " (quote it)",
            _ => "",
        };
        self.problem(
            path,
            format!("expected a string, got {}{hint}", kind(value)),
        );
    }

    /// Expands `raw`, reporting unset variables or a malformed reference (never `raw` itself). What came from the
    /// environment is remembered, so that no later problem shows it.
    fn expand(&mut self, path: &str, raw: &str) -> Option<String> {
        match expand(raw, self.env) {
            Ok(Expanded { text, values }) => {
                if !values.is_empty() {
                    self.expansions.push(Expansion {
                        path: path.to_owned(),
                        raw: raw.to_owned(),
                        text: text.clone(),
                        values,
                    });
                }
                Some(text)
            }
            Err(ExpandError::Unset(names)) => {
                for name in names {
                    self.problem(path, format!("environment variable {name} is not set (use ${{{name}:-default}} for a default)"));
                }
                None
            }
            Err(ExpandError::Malformed) => {
                self.problem(path, MALFORMED);
                None
            }
        }
    }
}

// === impl Field ===

impl<T> Field<T> {
    /// Records the outcome of reading a present key.
    pub(super) fn set(&mut self, value: Option<T>) {
        *self = value.map_or(Field::Invalid, Field::Valid);
    }

    /// True when the key was in the document.
    pub(super) fn is_present(&self) -> bool {
        !matches!(self, Field::Absent)
    }

    /// The value; reports `path` (the key's path) as missing when absent.
    pub(super) fn required(self, walker: &mut Walker<'_>, path: &str) -> Option<T> {
        self.or_problem(walker, path, "required key is missing")
    }

    /// The value; reports `message` at `path` when absent.
    pub(super) fn or_problem(
        self,
        walker: &mut Walker<'_>,
        path: &str,
        message: &str,
    ) -> Option<T> {
        match self {
            Field::Absent => {
                walker.problem(path, message);
                None
            }
            Field::Invalid => None,
            Field::Valid(v) => Some(v),
        }
    }

    /// The value, or `default` when absent; `None` when invalid.
    pub(super) fn or(self, default: T) -> Option<T> {
        match self {
            Field::Absent => Some(default),
            Field::Invalid => None,
            Field::Valid(v) => Some(v),
        }
    }

    /// `Some(None)` when absent, `Some(Some(v))` when valid, `None` when invalid.
    pub(super) fn optional(self) -> Option<Option<T>> {
        match self {
            Field::Absent => Some(None),
            Field::Invalid => None,
            Field::Valid(v) => Some(Some(v)),
        }
    }

    /// The value if valid.
    pub(super) fn valid(self) -> Option<T> {
        match self {
            Field::Valid(v) => Some(v),
            Field::Absent | Field::Invalid => None,
        }
    }
}

/// At most one of two alternative keys: the one given, or `Invalid` (reported at `path`) when both are.
pub(super) fn either<T>(
    walker: &mut Walker<'_>,
    path: &str,
    a: (&str, Field<T>),
    b: (&str, Field<T>),
) -> Field<T> {
    match (a.1, b.1) {
        (given, Field::Absent) | (Field::Absent, given) => given,
        _ => {
            walker.problem(
                path,
                format!("give either `{}` or `{}`, not both", a.0, b.0),
            );
            Field::Invalid
        }
    }
}

/// The path of `key` inside `path`.
pub(super) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The path of item `i` of the list at `path`.
pub(super) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// What kind of YAML value `value` is, for messages (never the value itself).
pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// True when `inner` is `outer` or a key path below it (every path is below the document, `""`).
fn is_within(inner: &str, outer: &str) -> bool {
    outer.is_empty()
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// True when `message` still holds a run of [`FRAGMENT`] characters of `value`, as is or escaped as `{:?}`
/// escapes it, in any ASCII case (host names are lower-cased before they are checked).
fn leaks(message: &str, value: &str) -> bool {
    let message = message.to_ascii_lowercase();
    let value = value.to_ascii_lowercase();
    let escaped = value.escape_debug().to_string();
    [value.as_str(), escaped.as_str()].iter().any(|text| {
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        chars.len() >= FRAGMENT
            && (0..=chars.len() - FRAGMENT).any(|i| {
                let start = chars[i].0;
                let end = chars.get(i + FRAGMENT).map_or(text.len(), |&(at, _)| at);
                message.contains(&text[start..end])
            })
    })
}

/// Expands `${VAR}`, `${VAR:-default}` (default when unset or empty) and `$$` in one scalar.
fn expand(raw: &str, env: &dyn Env) -> Result<Expanded, ExpandError> {
    let mut out = String::with_capacity(raw.len());
    let mut values = Vec::new();
    let mut unset = Vec::new();
    let mut rest = raw;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail.find('}').ok_or(ExpandError::Malformed)?;
            let (name, default) = match tail[..end].split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (&tail[..end], None),
            };
            if !is_var_name(name) {
                return Err(ExpandError::Malformed);
            }
            match (env.var(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => {
                    out.push_str(&v);
                    if !v.is_empty() {
                        values.push((name.to_owned(), v));
                    }
                }
                (None, Some(d)) => out.push_str(d),
                (None, None) => unset.push(name.to_owned()),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if unset.is_empty() {
        Ok(Expanded { text: out, values })
    } else {
        Err(ExpandError::Unset(unset))
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests;
