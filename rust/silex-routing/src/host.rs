//! Request host normalization: the form every host lookup in [`crate::CompiledTable`] uses.

use std::borrow::Cow;

/// Normalizes a `Host` header or `:authority` value into the name routing matches on.
///
/// Host matching in [`crate::CompiledTable::route`] is always on this normalized form, never on
/// the raw header:
///
/// - the port is removed (`foo.com:8080` -> `foo.com`; an empty port, `foo.com:`, is allowed);
/// - an IPv6 literal loses its brackets and port (`[::1]:8080` -> `::1`); its spelling is only
///   lower-cased, not canonicalized (`[0:0::1]` stays `0:0::1`);
/// - one trailing dot is removed (`foo.com.` -> `foo.com`);
/// - ASCII letters are lower-cased (host names are case-insensitive).
///
/// Returns `None` for a value that is not a host: empty (also after removing the port or the
/// dot), an empty label (`a..b`, `.a`), a byte other than ASCII letters, digits, `-`, `_` and
/// `.`, a port that is not a number up to 65535, or a malformed IPv6 literal.
///
/// Allocates only when the name has upper-case letters; otherwise the result borrows `raw`.
///
/// ```
/// use silex_routing::normalize_host;
/// assert_eq!(normalize_host("Foo.Example.COM.:8080").as_deref(), Some("foo.example.com"));
/// assert_eq!(normalize_host("[::1]:443").as_deref(), Some("::1"));
/// assert_eq!(normalize_host(""), None);
/// ```
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    let name = if let Some(rest) = raw.strip_prefix('[') {
        let end = rest.find(']')?;
        let (literal, after) = (&rest[..end], &rest[end + 1..]);
        let valid_literal = literal.contains(':')
            && literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !valid_literal || !is_port_suffix(after) {
            return None;
        }
        literal
    } else {
        let host = match raw.find(':') {
            Some(colon) => {
                if !is_port_suffix(&raw[colon..]) {
                    return None;
                }
                &raw[..colon]
            }
            None => raw,
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if !is_dns_name(host) {
            return None;
        }
        host
    };
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(name.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(name))
    }
}

/// Non-empty labels of ASCII letters, digits, `-` and `_` separated by single dots; one pass
/// (this runs for every request).
fn is_dns_name(host: &str) -> bool {
    let mut previous = b'.';
    for &byte in host.as_bytes() {
        let allowed = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_')
            || (byte == b'.' && previous != b'.');
        if !allowed {
            return false;
        }
        previous = byte;
    }
    previous != b'.'
}

/// `""`, `":"` or `":<port>"` with a decimal port up to 65535.
fn is_port_suffix(s: &str) -> bool {
    match s.strip_prefix(':') {
        None => s.is_empty(),
        Some(port) => {
            port.is_empty()
                || (port.len() <= 5
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && port.parse::<u16>().is_ok())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Option<String> {
        normalize_host(raw).map(Cow::into_owned)
    }

    #[test]
    fn plain_lower_case_host_borrows() {
        assert!(matches!(
            normalize_host("foo.bar.com"),
            Some(Cow::Borrowed("foo.bar.com"))
        ));
    }

    #[test]
    fn port_and_trailing_dot_are_stripped_without_allocating() {
        assert!(matches!(
            normalize_host("foo.bar.com:8080"),
            Some(Cow::Borrowed("foo.bar.com"))
        ));
        assert!(matches!(
            normalize_host("foo.bar.com."),
            Some(Cow::Borrowed("foo.bar.com"))
        ));
        assert!(matches!(
            normalize_host("foo.bar.com.:80"),
            Some(Cow::Borrowed("foo.bar.com"))
        ));
        assert_eq!(norm("foo.bar.com:").as_deref(), Some("foo.bar.com"));
    }

    #[test]
    fn upper_case_is_lowered() {
        assert!(matches!(
            normalize_host("Foo.BAR.com:443"),
            Some(Cow::Owned(ref s)) if s == "foo.bar.com"
        ));
    }

    #[test]
    fn ipv6_literals_lose_brackets_and_port() {
        assert_eq!(norm("[::1]").as_deref(), Some("::1"));
        assert_eq!(norm("[::1]:8080").as_deref(), Some("::1"));
        assert_eq!(norm("[2001:DB8::A]:80").as_deref(), Some("2001:db8::a"));
        assert_eq!(
            norm("[::ffff:10.0.0.1]").as_deref(),
            Some("::ffff:10.0.0.1")
        );
        assert_eq!(norm("[::1"), None);
        assert_eq!(norm("[]"), None);
        assert_eq!(norm("[::1]x"), None);
        assert_eq!(norm("[::1]:http"), None);
        assert_eq!(norm("[zz::1]"), None);
        assert_eq!(
            norm("::1"),
            None,
            "an unbracketed IPv6 literal is not a Host"
        );
    }

    #[test]
    fn ipv4_hosts_are_kept() {
        assert_eq!(norm("10.0.0.1:8080").as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn invalid_hosts_are_none() {
        for raw in [
            "",
            ".",
            ":80",
            "foo.com..",
            ".foo.com",
            "a..b",
            "foo.com:99999",
            "foo.com:+80",
            "foo.com:8o",
            "foo com",
            " foo.com",
            "foo/bar",
            "user@foo.com",
            "*.foo.com",
            "fóo.com",
        ] {
            assert_eq!(norm(raw), None, "{raw:?}");
        }
    }
}
