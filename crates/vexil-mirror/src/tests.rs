//! What each mirror says about small flags. The real clients check the meaning end to end
//! (tests/e2e/mirrors/); these pin the shapes and the findings.

use serde_json::json;
use vexil_core::{CompileOptions, Snapshot, SourceFile};

use super::unleash::{self, Profile, Segments};
use super::{Fidelity, Mirror, flipper};

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

/// (flag, mirror, fidelity, reason fragment) of every finding.
fn findings(yaml: &str) -> Vec<(String, &'static str, &'static str, String)> {
    super::findings(&snapshot(yaml), &Mirror::ALL)
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
fn flipper_gates() {
    let s = snapshot(
        r#"
segments:
  vips: { ids: [u3] }
flags:
  f:
    rules:
      - { ids: [u1, u2], serve: true }
      - { segment: vips, serve: true }
      - { groups: [admins], serve: true }
      - { rollout: 12.5 }
      - { percentage_of_time: 5 }
"#,
    );
    let export = flipper::export(&s.namespaces()[0], flipper::Profile::Legacy);
    assert!(export.findings.is_empty(), "{:?}", export.findings);
    assert_eq!(
        export.features[0].to_json(flipper::Form::Full),
        json!({"key": "f", "state": "conditional", "gates": [
            {"key": "boolean", "name": "boolean", "value": null},
            {"key": "expression", "name": "expression", "value": null},
            {"key": "actors", "name": "actor", "value": ["u1", "u2", "u3"]},
            {"key": "percentage_of_actors", "name": "percentage_of_actors", "value": "12.5"},
            {"key": "percentage_of_time", "name": "percentage_of_time", "value": "5"},
            {"key": "groups", "name": "group", "value": ["admins"]},
        ]})
    );
    assert_eq!(
        export.features[0].to_json(flipper::Form::NoGates),
        json!({"key": "f", "state": "conditional"})
    );
}

#[test]
fn unsayable_flags_are_left_out_with_a_reason() {
    let yaml = r#"
flags:
  color:
    type: string
    variants: { a: a, b: b }
    default: a
  off-first:
    rules:
      - { ids: [u1], serve: false }
      - { rollout: 50, bucketing: unleash }
  attrs:
    rules:
      - { when: [{ attr: plan, ends_with: pro }], serve: true }
  crc:
    rules:
      - rollout: 20
"#;
    let got = findings(yaml);
    let has = |flag: &str, mirror: &str, fidelity: &str, fragment: &str| {
        assert!(
            got.iter().any(|(f, m, fi, r)| f == flag
                && *m == mirror
                && *fi == fidelity
                && r.contains(fragment)),
            "no {fidelity} finding for {flag} in {mirror} about {fragment:?}: {got:#?}"
        );
    };
    has("color", "flipper", "omitted", "serves string values");
    has(
        "off-first",
        "flipper-legacy",
        "omitted",
        "serves false before",
    );
    has("off-first", "flipper", "omitted", "hashes as Unleash does");
    has("off-first", "unleash", "omitted", "serves false before");
    has("attrs", "flipper-legacy", "omitted", "attribute conditions");
    has("attrs", "flipper", "omitted", "no suffix test");
    has("attrs", "unleash-legacy", "omitted", "reads `plan`");
    has("crc", "unleash", "inexact", "bucketing: unleash");
    // Exact where it can be.
    assert!(
        !got.iter()
            .any(|(f, m, _, _)| f == "attrs" && *m == "unleash")
    );
    assert!(!got.iter().any(|(f, m, _, _)| f == "crc" && *m == "flipper"));
    assert!(
        !got.iter()
            .any(|(f, m, _, _)| f == "color" && m.starts_with("unleash"))
    );
    // What each fidelity means for the export itself: an omitted flag is absent from the
    // mirror's features, an inexact one is present.
    let s = snapshot(yaml);
    let ns = &s.namespaces()[0];
    let exported = |mirror: Mirror| -> Vec<String> {
        match mirror {
            Mirror::Flipper | Mirror::FlipperLegacy => {
                let profile = if mirror == Mirror::Flipper {
                    flipper::Profile::Expressions
                } else {
                    flipper::Profile::Legacy
                };
                flipper::export(ns, profile)
                    .features
                    .iter()
                    .map(|f| f.key.to_string())
                    .collect()
            }
            Mirror::Unleash | Mirror::UnleashLegacy => {
                let profile = if mirror == Mirror::Unleash {
                    Profile::Modern
                } else {
                    Profile::Legacy
                };
                unleash::export(ns, profile)
                    .features
                    .iter()
                    .map(|f| f.name.to_string())
                    .collect()
            }
        }
    };
    for mirror in Mirror::ALL {
        let keys = exported(mirror);
        for flag in ["color", "off-first", "attrs", "crc"] {
            let fidelity = super::findings(&s, &[mirror])
                .into_iter()
                .find(|f| &*f.flag == flag)
                .map(|f| f.fidelity);
            assert_eq!(
                keys.iter().any(|k| k == flag),
                fidelity != Some(Fidelity::Omitted),
                "{flag} in {}: {fidelity:?}, exported {keys:?}",
                mirror.as_str()
            );
        }
    }
    assert_eq!(exported(Mirror::Flipper), ["crc"]);
    assert_eq!(exported(Mirror::FlipperLegacy), ["crc"]);
}

#[test]
fn unleash_segments_separate_or_inline() {
    let s = snapshot(
        r#"
segments:
  staff: { all: [{ attr: email, ends_with: "@example.com" }] }
  either: { any: [{ attr: a, equals: x }, { attr: b, equals: y }] }
flags:
  f:
    rules:
      - { segment: staff, serve: true }
      - { segment: either, serve: true }
"#,
    );
    let export = unleash::export(&s.namespaces()[0], Profile::Modern);
    let separate = export.body(&export.features, Segments::Separate);
    assert_eq!(separate["segments"][0]["id"], json!(1));
    let strategies = &separate["features"][0]["strategies"];
    assert_eq!(strategies.as_array().map(Vec::len), Some(3));
    assert_eq!(strategies[0]["segments"], json!([1]));
    assert_eq!(strategies[0]["constraints"], json!([]));
    assert_eq!(strategies[1]["constraints"][0]["values"], json!(["x"]));
    let inline = export.body(&export.features, Segments::Inline);
    assert!(inline.get("segments").is_none());
    assert_eq!(
        inline["features"][0]["strategies"][0]["constraints"][0]["operator"],
        json!("STR_ENDS_WITH")
    );
}

#[test]
fn percent_text() {
    assert_eq!(super::percent_text(25_000), "25");
    assert_eq!(super::percent_text(12_500), "12.5");
    assert_eq!(super::percent_text(125), "0.125");
    assert_eq!(super::percent_text(0), "0");
}

#[test]
fn flipper_percentages_select_the_same_buckets() {
    // Every three-decimal percentage: Flipper's `bucket < value.to_f * 1000` must hold for
    // exactly the buckets below the threshold.
    let mut adjusted = 0;
    for t in 1..=100_000u32 {
        let text = flipper::flipper_percent(t);
        let limit = text.parse::<f64>().unwrap() * 1000.0;
        assert!(
            limit <= f64::from(t) && limit > f64::from(t - 1),
            "{t}: {text}"
        );
        adjusted += usize::from(text != super::percent_text(t));
    }
    assert_eq!(adjusted, 731);
    assert_eq!(flipper::flipper_percent(2_007), "2.0065");
}

#[test]
fn flipper_expressions_carry_the_whole_flag() {
    let s = snapshot(
        r#"
flags:
  off-first:
    rules:
      - { ids: [u-1], serve: false }
      - { when: [{ attr: plan, equals: free }], serve: false }
      - { rollout: 50 }
  pro:
    rules:
      - { groups: [admins], serve: true }
      - { when: [{ attr: seats, gte: 10 }, { attr: coupon, present: true }], serve: true }
"#,
    );
    let ns = &s.namespaces()[0];
    let modern = flipper::export(ns, flipper::Profile::Expressions);
    let key = json!({"Property": ["flipper_id"]});
    let plan = json!({"Property": ["plan"]});
    assert_eq!(
        modern.features[0].expression,
        Some(json!({"All": [
            {"Equal": [{"Equal": [key, "u-1"]}, false]},
            {"Equal": [{"Equal": [plan, "free"]}, false]},
            {"Any": [{"NotEqual": [{"String": [key]}, ""]}, {"Equal": [key, ""]}]},
            {"PercentageOfActors": [key, 50]},
        ]}))
    );
    // Only switches on: the groups rule stays a gate beside the expression.
    let pro = &modern.features[1];
    assert_eq!(
        pro.groups.iter().map(|g| &**g).collect::<Vec<_>>(),
        ["admins"]
    );
    let seats = json!({"Property": ["seats"]});
    let number = json!({"Number": [{"String": [seats]}]});
    assert_eq!(
        pro.expression.as_ref().unwrap()["All"][0],
        json!({"Any": [{"Equal": [number, seats]}, {"Equal": [{"String": [number]}, seats]}]})
    );
    assert_eq!(pro.to_json(flipper::Form::NoGates)["state"], "conditional");
    // Number comparisons are inexact for unusual inputs only; the legacy profile leaves both
    // flags out.
    assert!(modern.findings.iter().all(|f| f.flag.as_ref() == "pro"
        && f.fidelity == Fidelity::Inexact
        && f.reason.contains("for unusual inputs only")));
    let legacy = flipper::export(ns, flipper::Profile::Legacy);
    assert!(legacy.features.is_empty());
    assert_eq!(legacy.findings.len(), 2);
    assert!(
        legacy
            .findings
            .iter()
            .all(|f| f.mirror == Mirror::FlipperLegacy)
    );
}
