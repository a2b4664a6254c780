//! Compiles the wire contract (`apache/`, `ferrocket/`) with protox, a pure-Rust protobuf compiler, so no system
//! `protoc` is needed; tonic-prost-build then generates the messages, clients and servers.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "apache/rocketmq/v2/service.proto",
        "ferrocket/v1/admin.proto",
        "ferrocket/v1/namesrv.proto",
        "ferrocket/v1/ha.proto",
        "ferrocket/v1/controller.proto",
    ];
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    println!("cargo:rerun-if-changed=apache");
    println!("cargo:rerun-if-changed=ferrocket");
    Ok(())
}
