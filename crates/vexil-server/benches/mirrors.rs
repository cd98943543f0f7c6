//! What the mirrors cost at swap time: building every body, ETag and gzipped copy
//! (`mirrors::Tables::build`; gzip happens later, at first use) for generated repositories,
//! next to the core exports alone.
//! Run: `cargo bench -p vexil-server --bench mirrors`.
#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_debug_implementations
)]

#[path = "../../vexil-core/benches/common/corpus.rs"]
mod corpus;

use vexil_core::{CompileOptions, Snapshot, SourceFile};
use vexil_server::mirrors::Tables;

fn main() {
    divan::main();
}

fn snapshot(flags: usize, files: usize) -> Snapshot {
    let files: Vec<SourceFile> = corpus::generated_repository(flags, files)
        .into_iter()
        .map(|(path, text)| SourceFile { path, text })
        .collect();
    let compiled = vexil_core::compile(&files, &CompileOptions::default());
    let snapshot = compiled
        .snapshot
        .expect("the generated repository compiles");
    // Setup check (also under `-- --test`): every mirror exports something.
    let tables = Tables::build(&snapshot);
    assert!(!tables.unleash["default"].all[2].bytes.is_empty());
    assert!(!tables.flipper["default"][0].all[0].bytes.is_empty());
    snapshot
}

#[divan::bench(args = [350, 10_000], sample_count = 20)]
fn build_tables(bencher: divan::Bencher, flags: usize) {
    let snapshot = snapshot(flags, 20);
    bencher.bench(|| Tables::build(divan::black_box(&snapshot)));
}

/// The core exports alone (no serialisation), for comparison with `build_tables`.
#[divan::bench(args = [10_000], sample_count = 10)]
fn exports_only(bencher: divan::Bencher, flags: usize) {
    let snapshot = snapshot(flags, 20);
    bencher.bench(|| {
        for ns in snapshot.namespaces() {
            divan::black_box(vexil_mirror::flipper::export(
                ns,
                vexil_mirror::flipper::Profile::Expressions,
            ));
            divan::black_box(vexil_mirror::unleash::export(
                ns,
                vexil_mirror::unleash::Profile::Legacy,
            ));
            divan::black_box(vexil_mirror::unleash::export(
                ns,
                vexil_mirror::unleash::Profile::Modern,
            ));
        }
    });
}
