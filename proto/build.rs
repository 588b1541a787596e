//! Generates the gRPC code for `loyalty.v1` with a vendored protoc, so a fresh machine needs no
//! system protobuf compiler, and writes the file descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Neither tonic-prost-build nor prost-build reports the folder itself; without this line, edits
    // to the .proto files would not rebuild the crate.
    println!("cargo:rerun-if-changed=loyalty");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Generated clients and servers use `codec::WireCodec`: undecodable bodies are INVALID_ARGUMENT.
    tonic_prost_build::configure()
        .codec_path("crate::codec::WireCodec")
        .file_descriptor_set_path(out_dir.join("loyalty_descriptor.bin"))
        .compile_with_config(
        config,
        &[
            PathBuf::from("loyalty/v1/loyalty.proto"),
            PathBuf::from("loyalty/v1/errors.proto"),
            PathBuf::from("loyalty/admin/v1/admin.proto"),
            PathBuf::from("loyalty/bench/v1/echo.proto"),
        ],
        &[PathBuf::from("."), include],
    )?;
    Ok(())
}
