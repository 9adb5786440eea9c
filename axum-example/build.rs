//! Generates the gRPC server and client of `proto/catalog.proto` with the
//! `protoc` that the protoc-bin-vendored crate ships, so that building the
//! app needs no protoc on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/catalog.proto"],
        &["proto"],
    )?;
    Ok(())
}
