//! Runs every specification table in tests/spec/: flag files, contexts, expected answers.

use serde_json::Value as Json;
use vexil_core::{AttrValue, CompileOptions, Context, FlagType, source};

use crate::helpers::{repo_root, sorted_entries, yaml_to_json};

#[test]
fn specification_tables() {
    let dir = repo_root().join("tests/spec");
    let paths = sorted_entries(&dir, |p| p.extension().is_some_and(|e| e == "yaml"));
    assert!(!paths.is_empty(), "no tables in {}", dir.display());
    let mut failures = Vec::new();
    let mut cases = 0;
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let table = yaml_to_json(&std::fs::read_to_string(path).unwrap());
        let files = table["files"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: no files"));
        let loaded = source::from_memory(
            files
                .iter()
                .map(|(p, text)| (p.clone(), text.as_str().unwrap().to_owned())),
        );
        let compiled = vexil_core::compile(&loaded.files, &CompileOptions::default());
        let snapshot = match compiled.snapshot {
            Some(s) if compiled.diagnostics.is_empty() => s,
            _ => {
                failures.push(format!(
                    "{name}: flag files do not compile cleanly: {:#?}",
                    compiled.diagnostics
                ));
                continue;
            }
        };
        for case in table["cases"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no cases"))
        {
            cases += 1;
            if let Err(e) = run_case(&snapshot, case) {
                failures.push(format!(
                    "{name}: {}: {e}",
                    case["name"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(cases >= 100, "only {cases} specification cases ran");
    eprintln!(
        "{cases} specification cases passed in {} tables",
        paths.len()
    );
}

/// The fields a case and its `expect` may have: any other (a typo) would be ignored, and an
/// `expect` that checks nothing would pass whatever the answer.
const CASE_FIELDS: [&str; 7] = [
    "name",
    "flag",
    "namespace",
    "key",
    "attrs",
    "type",
    "expect",
];
const EXPECT_FIELDS: [&str; 5] = ["value", "variant", "reason", "rule", "error"];

fn check_fields(case: &Json) -> Result<(), String> {
    let fields = case.as_object().ok_or("a case is not a mapping")?;
    if let Some(unknown) = fields.keys().find(|k| !CASE_FIELDS.contains(&k.as_str())) {
        return Err(format!("unknown case field `{unknown}`"));
    }
    let expect = case["expect"].as_object().ok_or("case without expect")?;
    if let Some(unknown) = expect.keys().find(|k| !EXPECT_FIELDS.contains(&k.as_str())) {
        return Err(format!("unknown expect field `{unknown}`"));
    }
    if !["value", "variant", "reason", "error"]
        .iter()
        .any(|f| expect.get(*f).is_some_and(|v| !v.is_null()))
    {
        return Err("expect checks nothing (no value, variant, reason or error)".into());
    }
    if let Some(field) = ["value", "variant", "reason", "error"]
        .iter()
        .find(|f| expect.get(**f).is_some_and(Json::is_null))
    {
        return Err(format!("expect.{field} is null: no answer is null"));
    }
    Ok(())
}

fn run_case(snapshot: &vexil_core::Snapshot, case: &Json) -> Result<(), String> {
    check_fields(case)?;
    let flag = case["flag"].as_str().ok_or("case without flag")?;
    let namespace = case["namespace"]
        .as_str()
        .unwrap_or(vexil_core::DEFAULT_NAMESPACE);
    let mut ctx = Context {
        targeting_key: case["key"].as_str().map(str::to_owned),
        ..Context::default()
    };
    if let Some(attrs) = case["attrs"].as_object() {
        for (k, v) in attrs {
            ctx.attributes.insert(k.clone(), AttrValue::from_json(v));
        }
    }
    let expected = match case["type"].as_str() {
        Some(t) => Some(FlagType::parse(t).ok_or("bad type")?),
        None => None,
    };
    // The server's own path: lookup, its one type rule, evaluation.
    let result = vexil_server::evaluation::evaluate(snapshot, namespace, flag, expected, &ctx)
        .map(|(_, eval)| eval);
    let expect = &case["expect"];
    match (result, expect["error"].as_str()) {
        (Err(e), Some(code)) if e.openfeature_code() == code => Ok(()),
        (Err(e), _) => Err(format!(
            "got error {}, expected {expect}",
            e.openfeature_code()
        )),
        (Ok(e), Some(code)) => Err(format!(
            "expected error {code}, got {} ({})",
            e.value().to_json(),
            e.reason
        )),
        (Ok(e), None) => {
            let got = serde_json::json!({
                "value": e.value().to_json(),
                "variant": &*e.variant.name,
                "reason": e.reason.as_str(),
                "rule": e.rule.map(|r| r.name.to_string()),
            });
            for field in ["value", "variant", "reason"] {
                if !expect[field].is_null() && !same(&expect[field], &got[field]) {
                    return Err(format!(
                        "{field}: expected {}, got {} (full answer {got})",
                        expect[field], got[field]
                    ));
                }
            }
            // With a reason or a rule expected, the rule must match exactly (absent = no rule).
            let checks_rule = expect.get("rule").is_some() || expect.get("reason").is_some();
            if checks_rule && expect["rule"] != got["rule"] {
                return Err(format!(
                    "rule: expected {}, got {} (full answer {got})",
                    expect["rule"], got["rule"]
                ));
            }
            Ok(())
        }
    }
}

/// JSON equality where 1 and 1.0 are the same number.
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}
