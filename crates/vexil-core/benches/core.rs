//! Core benchmarks (divan): `cargo bench -p vexil-core --bench core`.
//!
//! (a) a flag without rules, (b) a segment of three conditions plus a rollout, (c) 100 flags for
//! one context, (d) compiling a generated 10,000-flag repository; and, in the same run, flags
//! (a) and (b) expressed for unleash-yggdrasil (Unleash's Rust engine), for a ratio.
//!
//! Sample sizes are fixed, not tuned: divan's tuning doubles a sample's iterations until its
//! slowest sample is 100 timer ticks long, so one preempted early sample (a shared machine, a
//! cold first call) ended tuning at 100 iterations, and such runs read (a) at 28 to 70 ns
//! instead of 15. Each nanosecond benchmark now takes 1,000 samples of about a millisecond
//! (`sample_size` iterations): the median of those is what the tables in BENCHMARKS.md quote.
#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;
use std::sync::LazyLock;

use vexil_core::{CompileOptions, Context, Reason, Snapshot, source};

#[path = "common/corpus.rs"]
mod corpus;
use corpus::generated_repository;

fn main() {
    divan::main();
}

const FLAGS: &str = r#"
segments:
  target:
    all:
      - { attr: country, in: [DE, FR, IT] }
      - { attr: plan, equals: pro }
      - { attr: app_version, semver_gt: 1.9.9 }
flags:
  static-flag: {}
  targeted:
    rules:
      - segment: target
        rollout: 50
"#;

static SNAPSHOT: LazyLock<Snapshot> =
    LazyLock::new(|| compile_text(&[("flags.yaml", FLAGS.to_owned())]));

fn compile_text(files: &[(&str, String)]) -> Snapshot {
    let loaded = source::from_memory(files.iter().map(|(p, t)| (*p, t.clone())));
    let compiled = vexil_core::compile(&loaded.files, &CompileOptions::default());
    compiled
        .snapshot
        .unwrap_or_else(|| panic!("{:#?}", compiled.diagnostics))
}

/// A context that satisfies every condition and lands inside the 50 % rollout, so the whole
/// rule runs (the key was picked with the bucketing formula: bucket("targeted", "user-1") < 50000).
fn vexil_context() -> Context {
    Context::with_key("user-1")
        .with("country", "FR")
        .with("plan", "pro")
        .with("app_version", "2.4.1")
}

#[divan::bench(sample_count = 1000, sample_size = 40_000)]
fn a_static_flag_vexil(bencher: divan::Bencher) {
    let ctx = vexil_context();
    let snap = &*SNAPSHOT;
    // Check the answer first: this also warms the path, so divan's first sample is not a cold
    // call (a cold first sample made it pick 100-iteration samples and report ~50 ns).
    assert_eq!(
        snap.evaluate("default", "static-flag", &ctx)
            .unwrap()
            .reason,
        Reason::Static
    );
    bencher.bench(|| {
        snap.evaluate(
            black_box("default"),
            black_box("static-flag"),
            black_box(&ctx),
        )
        .map(|e| e.reason)
    });
}

#[divan::bench(sample_count = 1000, sample_size = 10_000)]
fn b_segment_and_rollout_vexil(bencher: divan::Bencher) {
    let ctx = vexil_context();
    let snap = &*SNAPSHOT;
    assert_eq!(
        snap.evaluate("default", "targeted", &ctx).unwrap().reason,
        Reason::Split
    );
    bencher.bench(|| {
        snap.evaluate(black_box("default"), black_box("targeted"), black_box(&ctx))
            .map(|e| e.reason)
    });
}

static YGG: LazyLock<unleash_yggdrasil::EngineState> = LazyLock::new(|| {
    let features: unleash_yggdrasil::ClientFeatures = serde_json::from_value(serde_json::json!({
        "version": 2,
        "features": [
            {"name": "static-flag", "enabled": true, "strategies": []},
            {"name": "targeted", "enabled": true, "strategies": [{
                "name": "flexibleRollout",
                "parameters": {"rollout": "50", "stickiness": "default", "groupId": "targeted"},
                "constraints": [],
                "segments": [1]
            }]}
        ],
        "segments": [{"id": 1, "constraints": [
            {"contextName": "country", "operator": "IN", "values": ["DE", "FR", "IT"], "inverted": false, "caseInsensitive": false},
            {"contextName": "plan", "operator": "IN", "values": ["pro"], "inverted": false, "caseInsensitive": false},
            {"contextName": "app_version", "operator": "SEMVER_GT", "value": "1.9.9", "inverted": false, "caseInsensitive": false}
        ]}]
    }))
    .unwrap();
    let engine = unleash_yggdrasil::EngineState::default();
    engine.take_state(unleash_yggdrasil::UpdateMessage::FullResponse(features));
    engine
});

/// A context in yggdrasil's form; its userId lands inside the 50 % rollout under murmur3.
fn ygg_context() -> unleash_yggdrasil::Context {
    let properties: std::collections::HashMap<String, String> =
        [("country", "FR"), ("plan", "pro"), ("app_version", "2.4.1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let user = (0..1000)
        .map(|i| format!("user-{i}"))
        .find(|u| {
            let ctx = unleash_yggdrasil::Context {
                user_id: Some(u.clone()),
                properties: Some(properties.clone()),
                ..Default::default()
            };
            YGG.is_enabled("targeted", &ctx, &None)
        })
        .unwrap();
    unleash_yggdrasil::Context {
        user_id: Some(user),
        properties: Some(properties),
        ..Default::default()
    }
}

#[divan::bench(sample_count = 1000, sample_size = 20_000)]
fn a_static_flag_yggdrasil(bencher: divan::Bencher) {
    let ctx = ygg_context();
    let engine = &*YGG;
    assert!(engine.is_enabled("static-flag", &ctx, &None));
    bencher.bench(|| engine.is_enabled(black_box("static-flag"), black_box(&ctx), &None));
}

#[divan::bench(sample_count = 1000, sample_size = 5_000)]
fn b_segment_and_rollout_yggdrasil(bencher: divan::Bencher) {
    let ctx = ygg_context();
    let engine = &*YGG;
    assert!(engine.is_enabled("targeted", &ctx, &None));
    bencher.bench(|| engine.is_enabled(black_box("targeted"), black_box(&ctx), &None));
}

static HUNDRED: LazyLock<Snapshot> = LazyLock::new(|| {
    let files = generated_repository(100, 1);
    compile_text(
        &files
            .iter()
            .map(|(p, t)| (p.as_str(), t.clone()))
            .collect::<Vec<_>>(),
    )
});

#[divan::bench(sample_count = 1000, sample_size = 500)]
fn c_hundred_flags_one_context(bencher: divan::Bencher) {
    let ctx = vexil_context()
        .with("email", "dev@example.com")
        .with("seats", 12.0)
        .with("groups", vec!["admins"]);
    let ns = HUNDRED.namespace("default").unwrap();
    assert_eq!(ns.flags.len(), 100);
    bencher.bench(|| {
        let mut served = 0usize;
        for flag in &ns.flags {
            served +=
                usize::from(ns.evaluate_flag(flag, black_box(&ctx)).reason != Reason::Default);
        }
        served
    });
}

#[divan::bench(sample_count = 20, sample_size = 1)]
fn d_compile_10k_flags(bencher: divan::Bencher) {
    let files = generated_repository(10_000, 20);
    let loaded = source::from_memory(files);
    assert_eq!(loaded.files.len(), 20);
    bencher.bench(|| {
        let compiled = vexil_core::compile(black_box(&loaded.files), &CompileOptions::default());
        assert_eq!(
            compiled.snapshot.as_ref().map(Snapshot::flag_count),
            Some(10_000)
        );
        compiled
    });
}

/// The YAML parse alone, to see what share of (d) it is.
#[divan::bench(sample_count = 20, sample_size = 1)]
fn d_parse_yaml_only_10k_flags(bencher: divan::Bencher) {
    let files = generated_repository(10_000, 20);
    bencher.bench(|| {
        files
            .iter()
            .filter(|(_, t)| vexil_core::yaml::parse(black_box(t)).is_ok())
            .count()
    });
}
