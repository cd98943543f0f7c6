//! The JSON Schema of a flag file, for editors (`vexil schema` prints it).

/// JSON Schema (draft 2020-12) of one flag file.
pub const FLAG_FILE_SCHEMA: &str = include_str!("schema.json");
