//! The boxed error type carried through the tower stack, and a one-line rendering of cause chains.

/// Errors carried through the service stack; [`crate::proxy::respond::rescue`] maps them to responses.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error and its sources on one line ("client error (Connect): tcp connect error: Connection refused").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cur = s.source();
    }
    text
}
