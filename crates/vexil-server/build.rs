//! Generates the vexil.v1, flagd.evaluation.v1/v2 and flagd.sync.v1 gRPC code from proto/ with protox (no system protoc needed), and
//! writes the descriptor set that server reflection serves.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "vexil/v1/vexil.proto",
        "flagd/evaluation/v1/evaluation.proto",
        "flagd/evaluation/v2/evaluation.proto",
        "flagd/sync/v1/sync.proto",
    ]
    .map(|f| proto_root.join(f));
    println!("cargo:rerun-if-changed={}", proto_root.display());
    let descriptors = protox::compile(&files, [&proto_root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("vexil_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // Undecodable requests are INVALID_ARGUMENT (src/codec.rs), not prost's INTERNAL.
        .codec_path("crate::codec::ProstCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
