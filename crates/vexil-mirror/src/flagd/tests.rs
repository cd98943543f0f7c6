//! What the flagd export says about small flags: definitions and findings per evaluator (the
//! real providers check the meaning end to end in tests/e2e/flagd).

use serde_json::json;
use vexil_core::{CompileOptions, Snapshot, SourceFile};

use super::export;
use crate::Fidelity;

fn snapshot(yaml: &str) -> Snapshot {
    let files = [SourceFile {
        path: "f.yaml".into(),
        text: yaml.into(),
    }];
    let compiled = vexil_core::compile(&files, &CompileOptions::default());
    compiled
        .snapshot
        .unwrap_or_else(|| panic!("{:?}", compiled.diagnostics))
}

fn findings(yaml: &str) -> Vec<(String, &'static str, &'static str, String)> {
    let s = snapshot(yaml);
    export(&s.namespaces()[0])
        .findings
        .into_iter()
        .map(|f| {
            (
                f.flag.to_string(),
                f.mirror.as_str(),
                f.fidelity.as_str(),
                f.reason,
            )
        })
        .collect()
}

#[test]
fn rules_nest_in_order_and_fall_through_to_the_default() {
    let s = snapshot(
        r#"
segments:
  staff: { ids: [u2, u1], any: [{ attr: email, ends_with: "@corp.example" }] }
flags:
  f:
    type: string
    variants: { a: A, b: B, c: C }
    default: a
    rules:
      - { when: [{ attr: country, in: [DE, 7] }], serve: b }
      - { segment: staff, serve: c }
      - { when: [{ attr: plan, not_equals: "true" }, { attr: nick, present: true }], serve: b }
"#,
    );
    let e = export(&s.namespaces()[0]);
    // Read otherwise for unusual inputs only, per evaluator: `ends_with` on a list (flagd's own
    // operators cannot run per element), and a number (rule 1) or boolean (rule 3) in another
    // spelling than the ones `in` lists.
    let reasons: Vec<&str> = e.findings.iter().map(|f| f.reason.as_str()).collect();
    assert_eq!(reasons.len(), 9, "{reasons:?}");
    for (rule, start) in [
        ("1", "compares `country` with a number or a boolean"),
        ("2", "tests `email` with `ends_with`"),
        ("3", "compares `plan` with a number or a boolean"),
    ] {
        let prefix = format!("rule `{rule}` {start}");
        let of_rule = reasons.iter().filter(|r| r.starts_with(&prefix)).count();
        assert_eq!(of_rule, 3, "{prefix}: {reasons:?}");
    }
    assert!(
        e.findings.iter().all(|f| f.unusual_inputs_only),
        "{reasons:?}"
    );
    // A list attribute matches when an element does, as in Vexil: `merge` makes a value a list.
    let some =
        |attr: &str, test: serde_json::Value| json!({"some": [{"merge": [{"var": attr}]}, test]});
    assert_eq!(
        e.definitions,
        json!({"flags": {"f": {
            "state": "ENABLED",
            "variants": {"a": "A", "b": "B", "c": "C"},
            "defaultVariant": "a",
            "targeting": {"if": [
                some("country", json!({"in": [{"var": ""}, ["7", "DE", 7.0]]})), "b",
                {"if": [
                    {"or": [
                        {"in": [{"var": "targetingKey"}, ["u1", "u2"]]},
                        {"ends_with": [{"var": "email"}, "@corp.example"]}
                    ]}, "c",
                    {"if": [
                        {"and": [
                            {"!": some("plan", json!({"in": [{"var": ""}, ["true", true]]}))},
                            {"!==": [{"var": "nick"}, null]}
                        ]}, "b", null
                    ]}
                ]}
            ]}
        }}})
    );
}

#[test]
fn flagd_bucketing_is_exact_for_go_and_flagged_for_node_and_python() {
    let s = snapshot(
        r#"
flags:
  ramp:
    rules: [{ rollout: 12.5, bucketing: flagd }]
  colors:
    type: string
    bucketing: flagd
    variants: { red: red, green: green, blue: blue }
    default: red
    rules: [{ split: { red: 0, green: 33.333, blue: 66.667 }, bucket_by: account }]
"#,
    );
    let e = export(&s.namespaces()[0]);
    assert_eq!(
        e.definitions["flags"]["ramp"]["targeting"],
        json!({"if": [
            {"and": [
                {"!==": [{"var": "targetingKey"}, null]},
                {"==": [{"fractional": [{"cat": ["ramp", {"var": "targetingKey"}]}, ["in", 12500], ["out", 87500]]}, "in"]}
            ]}, "on", null
        ]})
    );
    assert_eq!(
        e.definitions["flags"]["colors"]["targeting"],
        json!({"if": [
            {"!==": [{"var": "account"}, null]},
            {"fractional": [{"cat": ["colors", {"var": "account"}]}, ["green", 33333], ["blue", 66667]]},
            null
        ]})
    );
    let got: Vec<_> = e
        .findings
        .iter()
        .map(|f| (&*f.flag, f.mirror.as_str(), f.fidelity))
        .collect();
    // `account` may hold a number, which each language writes as text its own way.
    assert_eq!(
        got,
        [
            ("colors", "flagd", Fidelity::Inexact),
            ("colors", "flagd-node", Fidelity::Inexact),
            ("colors", "flagd-node", Fidelity::Inexact),
            ("colors", "flagd-python", Fidelity::Inexact),
            ("colors", "flagd-python", Fidelity::Inexact),
            ("ramp", "flagd-node", Fidelity::Inexact),
            ("ramp", "flagd-python", Fidelity::Inexact),
        ]
    );
    assert!(e.findings[0].reason.contains("buckets by `account`"));
    assert!(
        e.findings
            .iter()
            .filter(|f| f.flag.as_ref() == "ramp")
            .all(|f| {
                f.reason.contains("for unusual inputs only")
                    == (f.mirror == crate::Mirror::FlagdNode)
            })
    );
}

#[test]
fn what_has_no_json_logic_form_is_omitted_for_every_evaluator() {
    let got = findings(
        r#"
flags:
  regex:
    rules: [{ when: [{ attr: email, matches: "^a" }], serve: true }]
  folded:
    rules: [{ when: [{ attr: email, equals: A, ignore_case: true }], serve: true }]
  random:
    rules: [{ percentage_of_time: 10 }]
  always-random:
    rules: [{ percentage_of_time: 100 }]
  crc:
    rules: [{ rollout: 10 }]
  dated:
    rules: [{ when: [{ attr: signup, before: 2026-01-01 }], serve: true }]
"#,
    );
    let of = |flag: &str| -> Vec<(&str, &str)> {
        got.iter()
            .filter(|f| f.0 == flag)
            .map(|f| (f.1, f.2))
            .collect()
    };
    for flag in ["regex", "random"] {
        assert_eq!(
            of(flag),
            [
                ("flagd", "omitted"),
                ("flagd-node", "omitted"),
                ("flagd-python", "omitted")
            ],
            "{flag}"
        );
    }
    assert!(of("always-random").is_empty());
    for flag in ["crc", "dated", "folded"] {
        assert_eq!(
            of(flag),
            [
                ("flagd", "inexact"),
                ("flagd-node", "inexact"),
                ("flagd-python", "inexact")
            ],
            "{flag}"
        );
    }
    let s = snapshot(
        "flags:\n  regex:\n    rules: [{ when: [{ attr: e, matches: a }], serve: true }]\n",
    );
    let e = export(&s.namespaces()[0]);
    assert_eq!(e.definitions, json!({"flags": {}}));
}

#[test]
fn a_disabled_flag_and_a_static_one() {
    let s = snapshot(
        "flags:\n  off: { enabled: false, default: true, metadata: { team: web, n: 2 } }\n",
    );
    let e = export(&s.namespaces()[0]);
    assert_eq!(
        e.definitions["flags"]["off"],
        json!({"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on",
               "targeting": {}, "metadata": {"team": "web", "n": 2}})
    );
    assert!(e.file_text().starts_with("{\n  \"$schema\""));
}
