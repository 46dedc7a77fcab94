//! `parse_table` is strict and names the JSON path of every error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use silex_routing::{parse_table, CompiledTable, TableError};

fn parse_error(json: &str) -> TableError {
    parse_table(json.as_bytes()).expect_err(json)
}

const ROUTE: &str = r#"{"path": "/", "match": "prefix", "backend": "b"}"#;

#[test]
fn minimal_table_parses_with_defaults() {
    let table = parse_table(br#"{"version": 1}"#).unwrap();
    assert_eq!(table.defaults, Default::default());
    assert!(table.hosts.is_empty() && table.backends.is_empty() && table.listeners.is_empty());
    assert_eq!(table.default_backend, None);
    CompiledTable::compile(&table).unwrap();
}

#[test]
fn unknown_top_level_field() {
    let e = parse_error(r#"{"version": 1, "hostz": []}"#);
    assert_eq!(e.path(), "$.hostz");
    assert!(e.message().contains("unknown field `hostz`"), "{e}");
}

#[test]
fn unknown_nested_field() {
    let e = parse_error(
        r#"{"version": 1, "hosts": [{"name": "a", "routes": [{"pathx": "/", "match": "prefix", "backend": "b"}]}]}"#,
    );
    assert_eq!(e.path(), "$.hosts[0].routes[0].pathx");
    assert!(e.message().contains("unknown field `pathx`"), "{e}");
    let e = parse_error(&format!(
        r#"{{"version": 1, "hosts": [{{"name": "a", "routes": [{ROUTE}, {{"path": "/x", "match": "exact", "backend": "b", "options": {{"timeout": 1}}}}]}}]}}"#
    ));
    assert_eq!(e.path(), "$.hosts[0].routes[1].options.timeout");
}

#[test]
fn wrong_type() {
    let e = parse_error(r#"{"version": "1"}"#);
    assert_eq!(e.path(), "$.version");
    assert!(e.message().contains("invalid type"), "{e}");
    let e = parse_error(r#"{"version": 1, "hosts": [{"name": "a", "routes": {}}]}"#);
    assert_eq!(e.path(), "$.hosts[0].routes");
    let e = parse_error(&format!(
        r#"{{"version": 1, "hosts": [{{"name": "a", "routes": [{}]}}]}}"#,
        ROUTE.replace("prefix", "regex")
    ));
    assert_eq!(e.path(), "$.hosts[0].routes[0].match");
    assert!(e.message().contains("unknown variant `regex`"), "{e}");
}

#[test]
fn bad_ip_names_the_backend_key() {
    let e = parse_error(
        r#"{"version": 1, "backends": {"ns/svc:80": {"endpoints": [{"address": "10.0.0.1", "port": 80}, {"address": "10.0.0.256", "port": 80}]}}}"#,
    );
    assert_eq!(e.path(), r#"$.backends["ns/svc:80"].endpoints[1].address"#);
    assert!(e.message().contains("invalid IP address"), "{e}");
    assert!(e
        .to_string()
        .starts_with(r#"$.backends["ns/svc:80"].endpoints[1].address: "#));
}

#[test]
fn port_out_of_range() {
    let e = parse_error(
        r#"{"version": 1, "backends": {"b": {"endpoints": [{"address": "::1", "port": 65536}]}}}"#,
    );
    assert_eq!(e.path(), r#"$.backends["b"].endpoints[0].port"#);
}

#[test]
fn missing_fields_name_the_field() {
    let e = parse_error("{}");
    assert_eq!(e.path(), "$.version");
    assert!(e.message().contains("missing field `version`"), "{e}");
    let e = parse_error(
        r#"{"version": 1, "hosts": [{"name": "a", "routes": [{"path": "/", "backend": "b"}]}]}"#,
    );
    assert_eq!(e.path(), "$.hosts[0].routes[0].match");
}

#[test]
fn malformed_and_trailing_json() {
    assert_eq!(parse_error(r#"{"version": 1} {}"#).path(), "$");
    assert!(parse_error(r#"{"version": 1"#).message().contains("EOF"));
    assert_eq!(parse_error("[]").path(), "$");
}

#[test]
fn version_2_parses_but_does_not_compile() {
    let table = parse_table(br#"{"version": 2}"#).unwrap();
    let e = CompiledTable::compile(&table).unwrap_err();
    assert_eq!(e.path(), "$.version");
    assert_eq!(
        e.to_string(),
        "$.version: unsupported table version 2 (this core understands 1)"
    );
}

#[test]
fn round_trip_is_lossless() {
    let json = format!(
        r#"{{"version": 1, "listeners": {{"https": {{"scheme": "https"}}}}, "hosts": [{{"name": "a", "routes": [{ROUTE}], "default_backend": "b"}}], "backends": {{"b": {{"endpoints": [{{"address": "::1", "port": 80, "weight": 3}}]}}}}, "default_backend": "b"}}"#
    );
    let table = parse_table(json.as_bytes()).unwrap();
    let again = parse_table(serde_json::to_string(&table).unwrap().as_bytes()).unwrap();
    assert_eq!(table, again);
}

#[test]
fn listener_keys_are_bracketed_like_backend_keys() {
    let e = parse_error(r#"{"version": 1, "listeners": {"http": {"scheme": "ftp"}}}"#);
    assert_eq!(e.path(), r#"$.listeners["http"].scheme"#);
    let e = parse_error(
        r#"{"version": 1, "defaults": {"max_request_body_bytes": -1, "upstream_read_timeout_ms": 1}}"#,
    );
    assert_eq!(e.path(), "$.defaults.max_request_body_bytes");
}
