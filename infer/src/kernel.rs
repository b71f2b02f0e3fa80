//! The layer kernel: `out[j] += Σ_i input[i] · w[i][j]` over f16 weights stored `[d_in, d_out]`.
//!
//! Every target accumulates each output in input order with a rounded product and a rounded sum
//! (no fused multiply-add), so a board's logits are bit-identical to a host's. On a Cortex-M4F
//! the f16 weights are converted by the FPU (VCVTB/VCVTT) with eight outputs held in registers;
//! elsewhere the portable loop below runs.

use crate::format::f16_at;

/// Adds `input · W` to `out`, with `weights` holding `input.len() × out.len()` little-endian f16.
pub fn accumulate(input: &[f32], weights: &[u8], out: &mut [f32]) {
    assert_eq!(
        weights.len(),
        2 * input.len() * out.len(),
        "validated by ModelFile"
    );
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    {
        cortex_m4f::accumulate(input, weights, out);
    }
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    {
        portable(input, weights, out);
    }
}

/// Any target: one row of weights at a time.
#[cfg_attr(all(target_arch = "arm", target_abi = "eabihf"), allow(dead_code))]
fn portable(input: &[f32], weights: &[u8], out: &mut [f32]) {
    let d_out = out.len();
    for (i, &x) in input.iter().enumerate() {
        let row = &weights[2 * i * d_out..2 * (i + 1) * d_out];
        for (j, value) in out.iter_mut().enumerate() {
            *value += x * f16_at(row, j);
        }
    }
}

/// Output `j` alone, in the same order as [`portable`].
#[cfg_attr(not(all(target_arch = "arm", target_abi = "eabihf")), allow(dead_code))]
fn column(input: &[f32], weights: &[u8], d_out: usize, j: usize, value: &mut f32) {
    for (i, &x) in input.iter().enumerate() {
        *value += x * f16_at(weights, i * d_out + j);
    }
}

#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
mod cortex_m4f {
    /// Blocks of eight outputs through [`block8`], the rest through [`super::column`].
    pub fn accumulate(input: &[f32], weights: &[u8], out: &mut [f32]) {
        let d_out = out.len();
        let blocks = if input.is_empty() { 0 } else { d_out / 8 };
        for block in 0..blocks {
            let acc = &mut out[8 * block..8 * block + 8];
            // SAFETY: `weights` holds input.len() rows of 2 * d_out bytes (checked by the caller);
            // this block reads 16 bytes at offset 16 * block of each row, inside the row.
            unsafe {
                block8(
                    input.as_ptr(),
                    input.len(),
                    weights.as_ptr().add(16 * block),
                    2 * d_out,
                    acc.as_mut_ptr(),
                )
            };
        }
        for j in 8 * blocks..d_out {
            super::column(input, weights, d_out, j, &mut out[j]);
        }
    }

    /// For i in 0..n: acc[0..8] += x[i] · f16 w[i·stride .. +16 bytes]. Unaligned word loads
    /// (allowed on the M4) because postcard places the weights at any offset; VMLA rounds the
    /// product like the portable loop does.
    unsafe fn block8(x: *const f32, n: usize, w: *const u8, stride: usize, acc: *mut f32) {
        unsafe {
            core::arch::asm!(
                "vldmia {acc}, {{s16-s23}}",
                "2:",
                "vldmia {x}!, {{s0}}",
                "ldr {t0}, [{w}]",
                "ldr {t1}, [{w}, #4]",
                "ldr {t2}, [{w}, #8]",
                "ldr {t3}, [{w}, #12]",
                "add {w}, {w}, {stride}",
                "vmov s1, s2, {t0}, {t1}",
                "vmov s3, s4, {t2}, {t3}",
                "vcvtb.f32.f16 s8, s1",
                "vcvtt.f32.f16 s9, s1",
                "vcvtb.f32.f16 s10, s2",
                "vcvtt.f32.f16 s11, s2",
                "vcvtb.f32.f16 s12, s3",
                "vcvtt.f32.f16 s13, s3",
                "vcvtb.f32.f16 s14, s4",
                "vcvtt.f32.f16 s15, s4",
                "vmla.f32 s16, s0, s8",
                "vmla.f32 s17, s0, s9",
                "vmla.f32 s18, s0, s10",
                "vmla.f32 s19, s0, s11",
                "vmla.f32 s20, s0, s12",
                "vmla.f32 s21, s0, s13",
                "vmla.f32 s22, s0, s14",
                "vmla.f32 s23, s0, s15",
                "subs {n}, {n}, #1",
                "bne 2b",
                "vstmia {acc}, {{s16-s23}}",
                acc = in(reg) acc,
                x = inout(reg) x => _,
                w = inout(reg) w => _,
                n = inout(reg) n => _,
                stride = in(reg) stride,
                t0 = out(reg) _,
                t1 = out(reg) _,
                t2 = out(reg) _,
                t3 = out(reg) _,
                out("s0") _, out("s1") _, out("s2") _, out("s3") _, out("s4") _,
                out("s8") _, out("s9") _, out("s10") _, out("s11") _,
                out("s12") _, out("s13") _, out("s14") _, out("s15") _,
                out("s16") _, out("s17") _, out("s18") _, out("s19") _,
                out("s20") _, out("s21") _, out("s22") _, out("s23") _,
                options(nostack),
            );
        }
    }
}
