//! Puts `memory.x` on the linker's path and makes the build depend on the model file named by
//! `FMLP_MODEL` (set by `cargo xtask board`), which `main.rs` embeds with `include_bytes!`.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::copy("memory.x", out.join("memory.x")).expect("memory.x is beside build.rs");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-env-changed=FMLP_MODEL");
    match std::env::var("FMLP_MODEL") {
        Ok(path) => println!("cargo:rerun-if-changed={path}"),
        Err(_) => panic!(
            "FMLP_MODEL must name the model file to embed in flash; `cargo xtask board --model \
             PATH` sets it"
        ),
    }
}
