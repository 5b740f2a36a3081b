//! Lenient JSON readers for the wire types of token services and tools: a body must be an object, and a field may
//! arrive as another JSON type than documented (numbers as strings, `"3599"`; a string where an object was meant).
//! The token success body built on them is `token_response`.
//!
//! Wire types are `#[derive(Deserialize)]` structs whose fields use the `deserialize_with` functions below. Each
//! reads its one field whatever its JSON type and keeps what it can use, so one odd field never rejects a body that
//! is otherwise usable: the caller decides whether the field was required. Errors never quote the input (bodies
//! may hold tokens).

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, IgnoredAny};
use serde_json::Value;

use super::expiry;

/// Why a body is not the JSON object a wire type reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireError {
    /// Not JSON at all; `line` is where parsing stopped.
    NotJson { line: usize },
    /// JSON, but not an object.
    NotObject,
    /// An object the type cannot read (a field given twice).
    Unusable { line: usize },
}

// === impl WireError ===

impl WireError {
    /// A short reason for error messages.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            WireError::NotJson { .. } => "not JSON",
            WireError::NotObject => "not a JSON object",
            WireError::Unusable { .. } => "a field is given twice",
        }
    }
}

/// Reads a JSON object into `T`. A derived struct would also take an array (its fields by position), which no
/// service sends, so anything but an object is refused. JSON is UTF-8: a body with bytes that are not is refused
/// too, even where they sit in a field `T` ignores (serde_json skips an ignored string without checking it).
pub(crate) fn from_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    let body = std::str::from_utf8(body).map_err(|e| WireError::NotJson {
        line: 1 + body[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
    })?;
    if !body
        .trim_start_matches([' ', '\t', '\r', '\n'])
        .starts_with('{')
    {
        return Err(match serde_json::from_str::<IgnoredAny>(body) {
            Ok(_) => WireError::NotObject,
            Err(e) => WireError::NotJson { line: e.line() },
        });
    }
    serde_json::from_str(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => WireError::Unusable { line: e.line() },
        _ => WireError::NotJson { line: e.line() },
    })
}

/// A string field; any other type counts as absent.
pub(crate) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

/// A field passed on as text whatever its type: strings as they are, numbers, booleans, arrays and objects as
/// compact JSON; `null` counts as absent.
pub(crate) fn json_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    })
}

/// A non-negative number of seconds as a JSON number or a numeric string (`3599`, `"3599"`, `" 86399 "`);
/// fractions are cut. Anything else counts as absent.
pub(crate) fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(as_seconds(&Value::deserialize(d)?))
}

/// An `expires_on`: a Unix epoch (number or numeric string), or one of the legacy managed-identity date strings
/// that [`expiry::msi_date`] reads.
pub(crate) fn epoch<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(as_seconds(&value).or_else(|| value.as_str().and_then(expiry::msi_date)))
}

/// Integer codes, as an array or a single value, each a number or a numeric string (`[53003]`, `["90002", 7]`);
/// entries that are no integer are dropped.
pub(crate) fn codes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
    let code = |v: &Value| match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items.iter().filter_map(code).collect(),
        one => code(&one).into_iter().collect(),
    })
}

fn as_seconds(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn numbers_and_strings() {
        for (v, want) in [
            (json!(3599), Some(3599)),
            (json!("3599"), Some(3599)),
            (json!(" 86399 "), Some(86399)),
            (json!(3599.9), Some(3599)),
            (json!(-1), None),
            (json!(-1.5), None),
            (json!("soon"), None),
            (json!(null), None),
            (json!([1]), None),
        ] {
            assert_eq!(seconds(v.clone()).unwrap(), want, "{v}");
        }
        for (v, want) in [
            (json!("1546469802"), Some(1_546_469_802)),
            (json!(1_546_469_802), Some(1_546_469_802)),
            (json!("01/02/2019 22:56:42 +00:00"), Some(1_546_469_802)),
            (json!("later"), None),
        ] {
            assert_eq!(epoch(v.clone()).unwrap(), want, "{v}");
        }
    }

    #[test]
    fn text_fields() {
        assert_eq!(text(json!("a b")).unwrap().as_deref(), Some("a b"));
        for other in [
            json!(1),
            json!(null),
            json!(true),
            json!({"a": 1}),
            json!([]),
        ] {
            assert_eq!(text(other.clone()).unwrap(), None, "{other}");
        }
        assert_eq!(json_text(json!(null)).unwrap(), None);
        assert_eq!(json_text(json!(7)).unwrap().as_deref(), Some("7"));
        assert_eq!(json_text(json!(-7)).unwrap().as_deref(), Some("-7"));
        assert_eq!(json_text(json!(1.5)).unwrap().as_deref(), Some("1.5"));
        assert_eq!(json_text(json!(false)).unwrap().as_deref(), Some("false"));
        assert_eq!(
            json_text(json!({"b": [1, "x"], "a": {}}))
                .unwrap()
                .as_deref(),
            Some(r#"{"a":{},"b":[1,"x"]}"#)
        );
    }

    #[test]
    fn code_lists() {
        assert_eq!(codes(json!([53003])).unwrap(), [53003]);
        assert_eq!(
            codes(json!(["90002", 7, 1.5, null, [1]])).unwrap(),
            [90002, 7]
        );
        assert_eq!(codes(json!(" 50076 ")).unwrap(), [50076]);
        assert_eq!(codes(json!(-3)).unwrap(), [-3]);
        assert_eq!(codes(json!(u64::MAX)).unwrap(), Vec::<i64>::new());
        assert_eq!(codes(json!({"a": 1})).unwrap(), Vec::<i64>::new());
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Two {
        #[serde(default, deserialize_with = "text")]
        a: Option<String>,
        #[serde(default, deserialize_with = "seconds")]
        b: Option<u64>,
    }

    #[test]
    fn bodies_must_be_objects() {
        let two = |body: &str| from_object::<Two>(body.as_bytes());
        let why = |body: &str| two(body).map_err(WireError::reason);
        let x5 = Two {
            a: Some("x".into()),
            b: Some(5),
        };
        assert_eq!(two(r#" {"a":"x","b":"5","c":[1]}"#), Ok(x5));
        assert_eq!(two("{}"), Ok(Two { a: None, b: None }));
        // A derived struct alone would read this array as `a`, `b`.
        assert_eq!(two(r#"["x", 5]"#), Err(WireError::NotObject));
        assert_eq!(why("[]"), Err("not a JSON object"));
        assert_eq!(why(""), Err("not JSON"));
        assert_eq!(why("<html>"), Err("not JSON"));
        assert_eq!(two("{\n\"a\":").err(), Some(WireError::NotJson { line: 2 }));
        assert_eq!(why(r#"{"a":"x"} trailing"#), Err("not JSON"));
        assert_eq!(why(r#"{"a":"x","a":"y"}"#), Err("a field is given twice"));
        // A byte that is not UTF-8, in a field the type ignores: still not JSON (found by the token_response fuzz
        // target; serde_json alone skips an ignored string without checking it).
        let mut body = b"{\n\"a\": \"x\",\n\"c\": \"24".to_vec();
        body.extend([0x90, b'"', b'}']);
        assert_eq!(
            from_object::<Two>(&body).err(),
            Some(WireError::NotJson { line: 3 })
        );
        assert_eq!(
            from_object::<Two>(b"{\"a\": \"\xff\"}").err(),
            Some(WireError::NotJson { line: 1 })
        );
    }
}
