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
            Mirror::Unleash | Mirror::UnleashNode | Mirror::UnleashLegacy => {
                let profile = if mirror == Mirror::UnleashLegacy {
                    Profile::Legacy
                } else {
                    Profile::Modern
                };
                unleash::export(ns, profile)
                    .features
                    .iter()
                    .map(|f| f.name.to_string())
                    .collect()
            }
            Mirror::Flagd | Mirror::FlagdNode | Mirror::FlagdPython => {
                let export = crate::flagd::export(ns);
                export.definitions["flags"]
                    .as_object()
                    .map(|flags| flags.keys().cloned().collect())
                    .unwrap_or_default()
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

/// Constraints both engines (yggdrasil and Node's own) read alike, and what Node's findings say
/// where they cannot; the legacy profile keeps its plain IN lists.
#[test]
fn unleash_constraints_read_alike_in_both_engines() {
    let yaml = r#"
flags:
  has-email:
    rules:
      - { when: [{ attr: email, present: true }], serve: true }
  no-email:
    rules:
      - { when: [{ attr: email, absent: true }], serve: true }
  any-plan:
    rules:
      - { when: [{ attr: plan, starts_with: "" }], serve: true }
  spaced:
    rules:
      - { when: [{ attr: code, in: [" a1 ", b2] }], serve: true }
      - { when: [{ attr: code, ends_with: " x" }], serve: true }
  ids:
    rules:
      - { ids: [u1, " u2"], serve: true }
  big:
    rules:
      - { when: [{ attr: n, gt: 1.0e21 }], serve: true }
      - { when: [{ attr: n, lt: 0.0000001 }], serve: true }
  clock:
    rules:
      - { name: window, when: [{ attr: currentTime, after: "2026-01-01T00:00:00+02:00" }], serve: true }
  signup:
    rules:
      - { name: late, when: [{ attr: signup, before: "2026-01-01" }], serve: true }
  digits:
    rules:
      - { name: pin, when: [{ attr: pin, matches: '^\d{4}$' }], serve: true }
"#;
    let s = snapshot(yaml);
    let ns = &s.namespaces()[0];
    let constraints = |profile: Profile, flag: &str| -> Vec<serde_json::Value> {
        let export = unleash::export(ns, profile);
        let body = export.body(&export.features, Segments::Inline);
        let feature = body["features"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["name"] == flag))
            .cloned()
            .unwrap_or_else(|| panic!("{flag} not exported"));
        feature["strategies"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|st| st["constraints"].as_array().unwrap().clone())
            .collect()
    };
    let regex = |field: &str, pattern: &str, inverted: bool| {
        json!({"contextName": field, "operator": "REGEX", "value": pattern, "values": [],
               "caseInsensitive": false, "inverted": inverted})
    };
    assert_eq!(
        constraints(Profile::Modern, "has-email"),
        [regex("email", "^", false)]
    );
    assert_eq!(
        constraints(Profile::Modern, "no-email"),
        [regex("email", "^", true)]
    );
    assert_eq!(
        constraints(Profile::Modern, "any-plan"),
        [regex("plan", "^", false)]
    );
    assert_eq!(
        constraints(Profile::Modern, "spaced"),
        [
            regex("code", "^(?: a1 |b2)$", false),
            regex("code", " x$", false)
        ]
    );
    assert_eq!(
        constraints(Profile::Modern, "ids"),
        [regex("userId", "^(?: u2|u1)$", false)]
    );
    let values: Vec<_> = constraints(Profile::Modern, "big")
        .iter()
        .map(|c| c["value"].clone())
        .collect();
    assert_eq!(
        values,
        [json!("1000000000000000000000"), json!("0.0000001")]
    );
    let times: Vec<_> = ["clock", "signup"]
        .iter()
        .map(|f| constraints(Profile::Modern, f)[0]["value"].clone())
        .collect();
    assert_eq!(
        times,
        [json!("2025-12-31T22:00:00Z"), json!("2026-01-01T00:00:00Z")]
    );
    // The legacy profile: ids verbatim, presence still out of reach.
    assert_eq!(
        constraints(Profile::Legacy, "ids"),
        [
            json!({"contextName": "userId", "operator": "IN", "values": [" u2", "u1"],
                "caseInsensitive": false, "inverted": false})
        ]
    );

    let got = findings(yaml);
    let of = |flag: &str, mirror: &str| -> Vec<String> {
        got.iter()
            .filter(|(f, m, _, _)| f == flag && *m == mirror)
            .map(|(_, _, fidelity, reason)| format!("{fidelity}: {reason}"))
            .collect()
    };
    for flag in ["has-email", "no-email", "any-plan", "spaced", "ids"] {
        assert_eq!(of(flag, "unleash"), Vec::<String>::new(), "{flag}");
        assert_eq!(of(flag, "unleash-node"), Vec::<String>::new(), "{flag}");
    }
    assert!(of("has-email", "unleash-legacy")[0].starts_with("omitted"));
    let node_signup = of("signup", "unleash-node");
    assert_eq!(node_signup.len(), 1, "{node_signup:?}");
    assert!(node_signup[0].starts_with(
        "inexact: rule `late` compares `signup` with a time, but Node's engine ignores the field"
    ));
    assert!(
        of("clock", "unleash-node")[0].contains("the clock when the context has no currentTime")
    );
    assert!(of("signup", "unleash")[0].contains("reads a date alone"));
    assert!(
        of("big", "unleash-node")[0].contains("for unusual inputs only (JavaScript's Number()")
    );
    assert!(of("digits", "unleash-node")[0].contains("for unusual inputs only (non-ASCII"));
    assert_eq!(of("digits", "unleash"), Vec::<String>::new());
    // The structured field says it without reading the reason: numbers and patterns differ
    // only for unusual inputs, the clock and a date alone for ordinary ones.
    let unusual = |flag: &str, mirror: Mirror| -> Vec<bool> {
        super::findings(&snapshot(yaml), &[mirror])
            .into_iter()
            .filter(|f| *f.flag == *flag)
            .map(|f| f.unusual_inputs_only)
            .collect()
    };
    assert_eq!(unusual("big", Mirror::UnleashNode), [true, true]);
    assert_eq!(unusual("digits", Mirror::UnleashNode), [true]);
    assert_eq!(unusual("signup", Mirror::UnleashNode), [false]);
    assert_eq!(unusual("clock", Mirror::UnleashNode), [false]);
    assert_eq!(unusual("signup", Mirror::Unleash), [false]);
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
        && f.unusual_inputs_only));
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

#[test]
fn node_reads_patterns_with_re2_syntax() {
    // (pattern, what Node's unleash-client (re2js) finding says; None: no finding).
    let table: [(&str, Option<&str>); 17] = [
        (r"^[a-z]+@example\.com$", None),
        (r"(?i)^beta(?P<n>[0-9]+)$", None),
        (r"(?ms)^a.b$(?U)x*", None),
        (r"\pL\p{Lu}\p{Greek}[[:alpha:]]\x{41}", None),
        (r"^\d{4}$", Some("for unusual inputs only (non-ASCII")),
        (r"\bword\B", Some("for unusual inputs only (non-ASCII")),
        (r"(?x) a b ", Some("the flag `x`")),
        (r"(?-u:a)", Some("the flag `u`")),
        (r"(?R)^a$", Some("the flag `R`")),
        (r"[a-z&&[^aeiou]]", Some("a class operation")),
        (r"[a[bc]]", Some("a class inside a class")),
        (r"[\w--\d]", Some("a class operation")),
        (r"\b{start}go", Some(r"\b{start}")),
        (r"\<go\>", Some(r"a word boundary `\<`")),
        (r"a{1001}", Some("a repetition count above 1000 (`{1001}`)")),
        (
            r"\p{Alphabetic}\u{41}",
            Some("the Unicode property `Alphabetic`"),
        ),
        (r"(?<n>a)", Some("a named group `(?<name>...)`")),
    ];
    for (pattern, expected) in table {
        let yaml = format!(
            "flags:\n  f:\n    rules:\n      - {{ name: r, when: [{{ attr: code, matches: '{pattern}' }}], serve: true }}\n"
        );
        let got: Vec<_> = findings(&yaml)
            .into_iter()
            .filter(|(_, mirror, _, _)| *mirror == "unleash-node")
            .collect();
        let unusual: Vec<bool> = super::findings(&snapshot(&yaml), &[Mirror::UnleashNode])
            .into_iter()
            .map(|f| f.unusual_inputs_only)
            .collect();
        match expected {
            None => assert!(got.is_empty(), "{pattern}: {got:?}"),
            Some(fragment) => {
                assert_eq!(got.len(), 1, "{pattern}: {got:?}");
                let (_, _, fidelity, reason) = &got[0];
                assert_eq!(*fidelity, "inexact", "{pattern}");
                assert!(reason.contains(fragment), "{pattern}: {reason}");
                let ascii = fragment.starts_with("for unusual inputs");
                assert_eq!(unusual, [ascii], "{pattern}: {reason}");
                if !ascii {
                    assert!(reason.contains("false for every input"), "{reason}");
                }
            }
        }
        // yggdrasil compiles with Rust's regex: the same reading.
        assert!(
            findings(&yaml).iter().all(|(_, m, _, _)| *m != "unleash"),
            "{pattern}"
        );
    }
}

#[test]
fn flipper_expressions_refuse_lists_open_ranges_and_huge_flags() {
    let texts: Vec<String> = (0..1100).map(|i| format!("c{i}")).collect();
    let yaml = format!(
        r#"
flags:
  staff:
    rules:
      - {{ when: [{{ attr: groups, equals: staff }}], serve: true }}
  staff-known:
    rules:
      - {{ when: [{{ attr: groups, present: true }}], serve: true }}
  last-char:
    rules:
      - {{ when: [{{ attr: name, starts_with: "a\U0010FFFF" }}], serve: true }}
  huge:
    rules:
      - {{ when: [{{ attr: code, in: [{}] }}], serve: true }}
"#,
        texts.join(", ")
    );
    let s = snapshot(&yaml);
    let export = flipper::export(&s.namespaces()[0], flipper::Profile::Expressions);
    let finding = |flag: &str| {
        export
            .findings
            .iter()
            .find(|f| f.flag.as_ref() == flag)
            .unwrap_or_else(|| panic!("no finding for {flag}: {:#?}", export.findings))
    };
    // `groups` is a list in Vexil: inexact for every list, not only unusual inputs.
    let staff = finding("staff");
    assert_eq!(staff.fidelity, Fidelity::Inexact);
    assert!(!staff.unusual_inputs_only);
    assert!(staff.reason.contains("`groups`"), "{}", staff.reason);
    assert!(
        !export
            .findings
            .iter()
            .any(|f| f.flag.as_ref() == "staff-known")
    );
    let last = finding("last-char");
    assert_eq!(last.fidelity, Fidelity::Omitted);
    assert!(last.reason.contains("U+10FFFF"), "{}", last.reason);
    let huge = finding("huge");
    assert_eq!(huge.fidelity, Fidelity::Omitted);
    assert!(
        huge.reason.contains("more than the 4096"),
        "{}",
        huge.reason
    );
    let names: Vec<&str> = export.features.iter().map(|f| &*f.key).collect();
    assert!(
        !names.contains(&"last-char") && !names.contains(&"huge"),
        "{names:?}"
    );
}
