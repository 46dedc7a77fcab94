//! The one error type of this crate: what is wrong, and where in the table JSON.

/// A table that failed to parse or validate.
///
/// `path` is JSON-path-like and names the offending value, for example
/// `$.hosts[2].routes[0].path` or `$.backends["ns/svc:80"].endpoints[1].port`; `$` is the whole
/// document. [`Display`](std::fmt::Display) renders `"{path}: {message}"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TableError {
    path: String,
    message: String,
}

impl TableError {
    /// An error at `path` (JSON-path-like, starting with `$`) saying `message`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Where the error is, for example `$.hosts[0].routes[1].backend`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong, without the path.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// `s` as a JSON string literal, the key syntax of error paths: `$.backends["ns/svc:80"]`.
pub(crate) fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Renders a serde path in the crate's JSON-path syntax: `$`, `.field` for struct fields,
/// `["key"]` for the keys of the table's maps (`backends`, `listeners`, `certificates`) and for any key that is
/// not identifier-like, `[n]` for sequence indices. For a "missing field" error serde stops at the
/// containing object, so the missing field is appended.
pub(crate) fn json_path(path: &serde_path_to_error::Path, message: &str) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::from("$");
    let push_key = |out: &mut String, key: &str, map_key: bool| {
        let identifier = !map_key
            && key
                .bytes()
                .enumerate()
                .all(|(i, b)| b == b'_' || b.is_ascii_lowercase() || (i > 0 && b.is_ascii_digit()));
        if identifier && !key.is_empty() {
            out.push('.');
            out.push_str(key);
        } else {
            out.push('[');
            out.push_str(&quote(key));
            out.push(']');
        }
    };
    for (depth, segment) in path.iter().enumerate() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                // The second segment under `$.backends` / `$.listeners` is a map key.
                let map_key = depth == 1
                    && (out == "$.backends" || out == "$.listeners" || out == "$.certificates");
                push_key(&mut out, key, map_key)
            }
            Segment::Enum { variant } => push_key(&mut out, variant, false),
            Segment::Unknown => {}
        }
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field)
    {
        push_key(&mut out, field, false);
    }
    out
}
