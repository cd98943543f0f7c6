//! Property tests: bucketing guarantees and total evaluation.

use proptest::prelude::*;
use vexil_core::{AttrValue, CompileOptions, Context, Reason, source};

use crate::helpers::example_snapshot;

fn snapshot_of(yaml: &str) -> vexil_core::Snapshot {
    let loaded = source::from_memory([("f.yaml", yaml.to_owned())]);
    let compiled = vexil_core::compile(&loaded.files, &CompileOptions::default());
    compiled
        .snapshot
        .unwrap_or_else(|| panic!("{:#?}", compiled.diagnostics))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Raising a rollout never removes an entity that was already in.
    #[test]
    fn raising_a_rollout_never_removes_anyone(
        low in 0u32..=100_000, delta in 0u32..=100_000, keys in prop::collection::vec(".{0,24}", 1..40)
    ) {
        let high = (low + delta).min(100_000);
        let pct = |t: u32| format!("{}.{:03}", t / 1000, t % 1000);
        let snap = snapshot_of(&format!(
            "flags:\n  low:\n    rules:\n      - rollout: {}\n        salt: same\n  high:\n    rules:\n      - rollout: {}\n        salt: same\n",
            pct(low), pct(high)
        ));
        for key in keys {
            let ctx = Context::with_key(key.clone());
            let on = |flag: &str| snap.evaluate("default", flag, &ctx).unwrap().reason == Reason::Split;
            prop_assert!(!on("low") || on("high"), "key {key:?} in at {low} but out at {high}");
        }
    }
}

/// Splits are uniform: over 100,000 keys each variant's share is within 0.5 percentage points.
#[test]
fn splits_are_uniform_over_100k_keys() {
    let snap = snapshot_of(
        "flags:\n  s:\n    type: string\n    variants: {a: a, b: b, c: c}\n    default: a\n    rules:\n      - split: {a: 50, b: 30, c: 20}\n",
    );
    let mut counts = [0u32; 3];
    let n = 100_000;
    for i in 0..n {
        let ctx = Context::with_key(format!("user-{i}"));
        let e = snap.evaluate("default", "s", &ctx).unwrap();
        assert_eq!(e.reason, Reason::Split);
        counts[(e.variant.name.as_bytes()[0] - b'a') as usize] += 1;
    }
    for (count, want) in counts.iter().zip([50.0, 30.0, 20.0]) {
        let share = f64::from(*count) * 100.0 / f64::from(n);
        assert!(
            (share - want).abs() <= 0.5,
            "share {share:.3} % for a target of {want} %: {counts:?}"
        );
    }
}

fn attr_value() -> impl Strategy<Value = AttrValue> {
    let leaf = prop_oneof![
        Just(AttrValue::Null),
        any::<bool>().prop_map(AttrValue::Bool),
        any::<f64>().prop_map(AttrValue::Number),
        prop_oneof![
            ".*",
            "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
            "20[0-9]{2}-[01][0-9]-[0-3][0-9]",
            "[A-Z]{2}"
        ]
        .prop_map(AttrValue::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(AttrValue::List),
            prop::collection::vec(("[a-z.]{1,8}", inner), 0..4)
                .prop_map(|kv| AttrValue::Object(kv.into_iter().collect())),
        ]
    })
}

/// Attribute names the example flags use, plus arbitrary ones.
fn attr_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "email",
            "groups",
            "country",
            "plan",
            "seats",
            "app_version",
            "device.os",
            "device",
            "request.time",
            "targeting_key",
            "account.id",
            "cart_total",
            "platform",
            "signup",
        ])
        .prop_map(str::to_owned),
        "[a-z._]{1,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Evaluation never panics and never fails on a valid snapshot, whatever the context.
    #[test]
    fn evaluation_is_total_on_arbitrary_contexts(
        key in proptest::option::of(".{0,16}"),
        attrs in prop::collection::vec((attr_name(), attr_value()), 0..8)
    ) {
        let snap = example_snapshot();
        let ctx = Context { targeting_key: key, attributes: attrs.into_iter().collect() };
        for ns in snap.namespaces() {
            for flag in &ns.flags {
                let e = ns.evaluate_flag(flag, &ctx);
                prop_assert_eq!(e.value().flag_type(), flag.flag_type);
            }
        }
    }

    /// The loader never panics on arbitrary text, and never builds a snapshot from garbage.
    #[test]
    fn compiling_arbitrary_text_never_panics(text in ".{0,400}") {
        let loaded = source::from_memory([("x.yaml", text)]);
        let compiled = vexil_core::compile(&loaded.files, &CompileOptions::default());
        // A snapshot exists exactly when no diagnostic is an error.
        prop_assert_eq!(compiled.snapshot.is_some(), !vexil_core::diag::has_errors(&compiled.diagnostics));
    }
}
