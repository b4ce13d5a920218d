//! Compiles `proto/` with protox (a protobuf compiler in Rust: no `protoc` on the build
//! machine) and generates the tonic server and client with tonic-prost-build. The descriptor
//! set is kept too, for server reflection. `grpcurl_tests` turns on the `grpcurl` test when
//! `CASHFLOW_TEST_GRPCURL` names the binary (ignored, never silently passed, otherwise).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rustc-check-cfg=cfg(grpcurl_tests)");
    println!("cargo::rerun-if-env-changed=CASHFLOW_TEST_GRPCURL");
    if std::env::var_os("CASHFLOW_TEST_GRPCURL").is_some() {
        println!("cargo::rustc-cfg=grpcurl_tests");
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("cashflow/ledger/v1/ledger.proto");
    println!("cargo::rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("ledger_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure().build_transport(false).compile_fds(descriptors)?;
    Ok(())
}
