//! Chooses the Cortex-M kernels from the target, since stable Rust exposes no Arm target
//! feature to `cfg`:
//! - `fmlp_arm_fpu`: an M-profile core with a hard-float ABI (`thumbv7em`, `thumbv8m.main`,
//!   `thumbv8.1m.main` with `eabihf`). Every FPU these cores have (FPv4-SP, FPv5, the M55's and
//!   M85's) does VFMA and the half-precision VCVTB/VCVTT the f16 kernel uses. A-profile hard-float
//!   targets such as `armv7-unknown-linux-gnueabihf` (whose baseline VFPv3 has no fused
//!   multiply-add) and the R-profile take the portable loops.
//! - `fmlp_arm_dsp` (with `fmlp_arm_fpu` only): the DSP extension's SXTB16 and SMLAD for the
//!   full-integer kernel. Every Cortex-M4 and M7 (`thumbv7em`) and Armv8.1-M core has it; on
//!   `thumbv8m.main` it is optional, so only a build for a core known to have it
//!   (`-C target-cpu=cortex-m33`, `cortex-m35p`, as `board/` does) or with `+dsp` gets it.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(fmlp_arm_fpu, fmlp_arm_dsp)");
    println!("cargo:rerun-if-env-changed=TARGET");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let target = std::env::var("TARGET").unwrap_or_default();
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let hard_float = target.ends_with("eabihf");
    let fpu = hard_float
        && ["thumbv7em-", "thumbv8m.main-", "thumbv8.1m.main-"]
            .iter()
            .any(|prefix| target.starts_with(prefix));
    if !fpu {
        return;
    }
    println!("cargo:rustc-cfg=fmlp_arm_fpu");
    let v8m_with_dsp = flags.split('\x1f').any(|flag| {
        flag.contains("+dsp")
            || ["cortex-m33", "cortex-m35p"]
                .iter()
                .any(|cpu| flag.ends_with(&format!("target-cpu={cpu}")))
    });
    let dsp = target.starts_with("thumbv7em-")
        || target.starts_with("thumbv8.1m.main-")
        || (target.starts_with("thumbv8m.main-") && v8m_with_dsp);
    if dsp {
        println!("cargo:rustc-cfg=fmlp_arm_dsp");
    }
}
