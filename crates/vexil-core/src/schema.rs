//! The JSON Schemas for editors: a flag file's (`src/schema.json`, printed by `vexil schema`)
//! and the repository config file's (`src/config.schema.json`, `vexil schema --config`), each
//! printed with this build's client names filled in.

/// JSON Schema (draft 2020-12) of one flag file.
pub const FLAG_FILE_SCHEMA: &str = include_str!("schema.json");

/// JSON Schema (draft 2020-12) of the repository config file (`vexil.yaml`), without the list
/// of client names (the core does not know the mirrors): see `config_schema`.
pub const CONFIG_FILE_SCHEMA: &str = include_str!("config.schema.json");

/// The repository config file's schema with `clients` as the only client names, so that an
/// editor completes them and flags a typo.
pub fn config_schema(clients: &[&str]) -> Result<String, serde_json::Error> {
    with_clients(CONFIG_FILE_SCHEMA, clients)
}

/// A flag file's schema with `clients` as the only names a flag's `clients:` may list.
pub fn flag_schema(clients: &[&str]) -> Result<String, serde_json::Error> {
    with_clients(FLAG_FILE_SCHEMA, clients)
}

fn with_clients(text: &str, clients: &[&str]) -> Result<String, serde_json::Error> {
    let mut schema: serde_json::Value = serde_json::from_str(text)?;
    if let Some(client) = schema
        .pointer_mut("/$defs/client")
        .and_then(serde_json::Value::as_object_mut)
    {
        client.insert("enum".into(), clients.into());
    }
    serde_json::to_string_pretty(&schema)
}
