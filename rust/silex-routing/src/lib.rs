//! Silex routing: the versioned routing table, its validation, and the compiled matcher.
//!
//! Pure: no I/O, no clock. The data plane parses a table with [`parse_table`], compiles it with
//! [`CompiledTable::compile`] off the hot path, and then calls [`CompiledTable::route`] per request.
#![forbid(unsafe_code)]

mod compile;
mod error;
mod host;
mod table;

pub use compile::{
    BackendIdx, CompiledBackend, CompiledTable, EffectiveOptions, MatchTarget, RouteMatch,
    TargetIdx, DEFAULT_NEXT_UPSTREAM_TRIES,
};
pub use error::TableError;
pub use host::normalize_host;
pub use table::*;

/// Parses table JSON strictly (unknown fields rejected); errors name the JSON path, in the
/// syntax of [`TableError::path`] (`$.hosts[0].routes[1].pathx`, `$.backends["ns/svc:80"]`).
///
/// Parsing checks types only; [`CompiledTable::compile`] validates the values.
pub fn parse_table(json: &[u8]) -> Result<RoutingTable, TableError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let table: RoutingTable = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let message = e.inner().to_string();
        TableError::new(error::json_path(e.path(), &message), message)
    })?;
    de.end()
        .map_err(|e| TableError::new("$", format!("trailing data: {e}")))?;
    Ok(table)
}

/// The JSON Schema of [`RoutingTable`], as checked in at `schema/table.schema.json`.
pub fn table_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(RoutingTable)).unwrap_or_default()
}
