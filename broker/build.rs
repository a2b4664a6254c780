//! Compiles the wire contract (`proto/`) with protox, a pure-Rust protobuf compiler, so no system
//! `protoc` is needed; tonic-prost-build then generates the messages, clients and servers.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/apache/rocketmq/v2/service.proto",
        "proto/ferrocket/v1/admin.proto",
        "proto/ferrocket/v1/namesrv.proto",
        "proto/ferrocket/v1/ha.proto",
        "proto/ferrocket/v1/controller.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
