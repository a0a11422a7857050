//! Compiles `proto/orders.proto` with protox (pure Rust: no system `protoc` needed) and generates
//! the tonic service and client.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/orders.proto");
    let descriptors = protox::compile(["proto/orders.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
