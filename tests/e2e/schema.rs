//! The JSON Schema for editors must accept every valid example file and reject broken ones.

use crate::helpers::{repo_root, yaml_to_json};

fn validator() -> jsonschema::Validator {
    let schema: serde_json::Value =
        serde_json::from_str(vexil_core::schema::FLAG_FILE_SCHEMA).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn yaml_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
            && !vexil_core::source::is_test_file(&path.file_name().unwrap().to_string_lossy())
            && !vexil_core::config::is_reserved(&path.to_string_lossy())
        {
            // Flag files only: `*.test.yaml` files are flag tests and `vexil.yaml` the
            // repository config, each with a format of its own.
            out.push(path);
        }
    }
}

#[test]
fn schema_accepts_the_example_repository_and_spec_tables() {
    let v = validator();
    let mut files = Vec::new();
    yaml_files(&repo_root().join("flags"), &mut files);
    assert!(files.len() >= 3);
    for path in &files {
        let doc = yaml_to_json(&std::fs::read_to_string(path).unwrap());
        let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
    // Every flag file of the specification tables is valid Vexil, so the schema must accept it.
    let mut tables = Vec::new();
    yaml_files(&repo_root().join("tests/spec"), &mut tables);
    assert!(!tables.is_empty(), "no specification tables in tests/spec");
    for table in tables {
        let table = yaml_to_json(&std::fs::read_to_string(&table).unwrap());
        for (name, text) in table["files"].as_object().unwrap() {
            let doc = yaml_to_json(text.as_str().unwrap());
            let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{name}: {errors:#?}");
        }
    }
}

#[test]
fn schema_rejects_what_validation_rejects() {
    let v = validator();
    let broken = [
        "flags:\n  f:\n    rulez: []\n",
        "flags:\n  f:\n    type: bool\n",
        "flags:\n  f:\n    rules:\n      - when: [{attr: a, equals: x, in: [y]}]\n        serve: true\n",
        "flags:\n  f:\n    rules:\n      - when: [{attr: a, gt: ten}]\n        serve: true\n",
        "flags:\n  \"bad key\": {}\n",
        "namespce: x\n",
        "segments:\n  s:\n    description: nobody\n",
        "flags:\n  f:\n    clients: unleash\n",
        "flags:\n  f:\n    clients: [unleash, unleash]\n",
    ];
    for doc in broken {
        assert!(!v.is_valid(&yaml_to_json(doc)), "schema accepted:\n{doc}");
    }
    // With this build's client names (what `vexil schema` prints), a typo is caught too.
    let text = vexil_core::schema::flag_schema(vexil_mirror::Mirror::names()).unwrap();
    let named = jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap();
    for (doc, valid) in [
        ("flags:\n  f:\n    clients: [flipper, unleash-node]\n", true),
        ("flags:\n  f:\n    clients: []\n", true),
        ("flags:\n  f:\n    clients: [flippr]\n", false),
    ] {
        assert_eq!(named.is_valid(&yaml_to_json(doc)), valid, "{doc}");
    }
}

fn config_validator() -> jsonschema::Validator {
    let text = vexil_core::schema::config_schema(vexil_mirror::Mirror::names()).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// The config schema accepts the example's config file and what validation accepts, and
/// rejects what validation rejects.
#[test]
fn config_schema_accepts_valid_and_rejects_invalid_configs() {
    let v = config_validator();
    let example = std::fs::read_to_string(repo_root().join("flags/vexil.yaml")).unwrap();
    let mut valid = vec![example.as_str()];
    valid.extend([
        "",
        "clients: [flipper, unleash]\n",
        "clients: []\nnamespaces:\n  checkout: { clients: [unleash-legacy] }\n  web: {}\n",
    ]);
    for doc in valid {
        let errors: Vec<String> = v
            .iter_errors(&yaml_to_json(doc))
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{doc}: {errors:#?}");
    }
    let broken = [
        "clients: [flippr]\n",
        "clients: unleash\n",
        "clients: [unleash, unleash]\n",
        "clinets: [unleash]\n",
        "namespaces:\n  checkout: { client: [unleash] }\n",
        "namespaces:\n  \"bad key\": {}\n",
    ];
    for doc in broken {
        assert!(!v.is_valid(&yaml_to_json(doc)), "schema accepted:\n{doc}");
    }
}
