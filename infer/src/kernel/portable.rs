//! The portable loops, on any target: the definition every other path is tested against, bit for
//! bit. One fused multiply-add per weight, in input order, for each output.

use crate::format::{LayerBytes, f16_at};

/// Adds `input · W[.., first .. first + out.len()]` to `out`, one row of f16 weights at a time.
pub fn f16_columns(input: &[f32], layer: &LayerBytes<'_>, first: usize, out: &mut [f32]) {
    let (weights, d_out) = (layer.weights, layer.d_out as usize);
    for (i, &x) in input.iter().enumerate() {
        let at = 2 * (i * d_out + first);
        let row = &weights[at..at + 2 * out.len()];
        for (j, value) in out.iter_mut().enumerate() {
            *value = fma(x, f16_at(row, j), *value);
        }
    }
}

/// Output `j` alone, in the same order as [`f16_columns`].
#[cfg_attr(not(fmlp_arm_fpu), allow(dead_code))]
pub fn f16_column(input: &[f32], weights: &[u8], d_out: usize, j: usize, value: &mut f32) {
    for (i, &x) in input.iter().enumerate() {
        *value = fma(x, f16_at(weights, i * d_out + j), *value);
    }
}

/// Adds `scale[j] · Σ_i input[i] · q[i][j]` to `out` for the int8 columns `first ..`: each
/// output sums `x · q` in input order (one rounding per term), then adds `scale · sum` in one
/// more fused step. Blocks of up to 64 outputs are summed on the stack (no heap).
pub fn int8_columns(input: &[f32], layer: &LayerBytes<'_>, first: usize, out: &mut [f32]) {
    let (weights, scales, d_out) = (layer.weights, layer.scales, layer.d_out as usize);
    for start in (0..out.len()).step_by(64) {
        let width = (out.len() - start).min(64);
        let mut sums = [0.0f32; 64];
        for (i, &x) in input.iter().enumerate() {
            let at = i * d_out + first + start;
            for (sum, &q) in sums.iter_mut().zip(&weights[at..at + width]) {
                *sum = fma(x, f32::from(q as i8), *sum);
            }
        }
        for (k, sum) in sums[..width].iter().enumerate() {
            let j = start + k;
            out[j] = fma(f16_at(scales, first + j), *sum, out[j]);
        }
    }
}

/// Adds row `k` of `weights` (`sums.len()` rows of `input.len()` signed bytes) dotted with
/// `input` to `sums[k]`.
pub fn int8_dots(input: &[u8], weights: &[u8], sums: &mut [i32]) {
    for (sum, row) in sums
        .iter_mut()
        .zip(weights.chunks_exact(input.len().max(1)))
    {
        let dot: i32 = input
            .iter()
            .zip(row)
            .map(|(&x, &q)| i32::from(x) * i32::from(q as i8))
            .sum();
        *sum += dot;
    }
}

/// `x · w + acc` rounded once: VFMA on a Cortex-M4F (libm's `fmaf` would be a slow software
/// emulation there), `libm::fmaf` elsewhere (one instruction on aarch64 and x86-64 with FMA).
#[inline]
pub fn fma(x: f32, w: f32, acc: f32) -> f32 {
    #[cfg(fmlp_arm_fpu)]
    {
        let mut acc = acc.to_bits();
        // SAFETY: VFMA is part of the M4F's FPv4-SP; it only touches these registers. Values
        // travel through core registers because the `sreg` class is not available to asm here.
        unsafe {
            core::arch::asm!(
                "vmov s0, {acc}",
                "vmov s1, {x}",
                "vmov s2, {w}",
                "vfma.f32 s0, s1, s2",
                "vmov {acc}, s0",
                acc = inout(reg) acc,
                x = in(reg) x.to_bits(),
                w = in(reg) w.to_bits(),
                out("s0") _, out("s1") _, out("s2") _,
                options(pure, nomem, nostack),
            );
        }
        f32::from_bits(acc)
    }
    #[cfg(not(fmlp_arm_fpu))]
    {
        libm::fmaf(x, w, acc)
    }
}
