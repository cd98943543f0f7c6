//! Arbitrary bytes as a flag file: loading and compiling must never panic, and whatever compiles
//! must evaluate without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vexil_core::{CompileOptions, Context, source};

fuzz_target!(|data: &[u8]| {
    let loaded = source::from_memory([("fuzz.yaml", data.to_vec())]);
    let compiled = vexil_core::compile(&loaded.files, &CompileOptions::default());
    if let Some(snapshot) = compiled.snapshot {
        let ctx = Context::with_key("fuzz").with("country", "DE").with("seats", 3.0);
        for ns in snapshot.namespaces() {
            for flag in &ns.flags {
                let _ = ns.evaluate_flag(flag, &ctx);
            }
        }
    }
});
