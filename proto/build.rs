//! Compiles `berth/v1/*.proto` with protox (pure Rust, no `protoc` needed) and
//! generates the prost messages and tonic clients and servers from the result.

use prost::Message;
use std::{env, fs, io, path::PathBuf};

fn main() -> io::Result<()> {
    let dir = PathBuf::from("berth/v1");
    let mut protos: Vec<PathBuf> = fs::read_dir(&dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    protos.sort();
    println!("cargo:rerun-if-changed=berth/v1");
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }

    let fds = protox::compile(&protos, ["."]).map_err(|e| io::Error::other(e.to_string()))?;
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("berth_v1_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .generate_default_stubs(true)
        .compile_fds(fds)
}
