//! The checked-in JSON Schema (`schema/table.schema.json`) must equal the one generated from the
//! Rust types. `make schema` (`SILEX_UPDATE_SCHEMA=1`) rewrites it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;

const SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../schema/table.schema.json"
);

#[test]
fn checked_in_schema_matches_the_types() {
    let generated =
        serde_json::to_string_pretty(&silex_routing::table_schema()).expect("schema JSON") + "\n";
    if std::env::var("SILEX_UPDATE_SCHEMA").as_deref() == Ok("1") {
        fs::write(SCHEMA, &generated).unwrap_or_else(|e| panic!("cannot write {SCHEMA}: {e}"));
        return;
    }
    let checked_in = fs::read_to_string(SCHEMA)
        .unwrap_or_else(|e| panic!("cannot read {SCHEMA}: {e}; run `make schema` to generate it"));
    assert!(
        checked_in == generated,
        "{SCHEMA} is out of date with rust/silex-routing/src/table.rs; run `make schema` and commit the result"
    );
}

#[test]
fn schema_describes_a_strict_versioned_table() {
    let schema = silex_routing::table_schema();
    assert_eq!(schema["title"], "RoutingTable");
    assert_eq!(schema["additionalProperties"], false);
    assert!(schema["required"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("version")));
    assert_eq!(schema["$defs"]["Route"]["additionalProperties"], false);
}
