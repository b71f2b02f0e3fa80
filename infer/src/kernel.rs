//! The layer kernel: `out[j] += Σ_i input[i] · w[i][j]` over f16 weights stored `[d_in, d_out]`.
//!
//! Every path accumulates each output in input order with one fused multiply-add per weight, so
//! logits are bit-identical on every target: x86-64 with AVX2, F16C and FMA (detected at run
//! time: F16C converts eight weights per instruction, eight outputs per register), a Cortex-M4F
//! (VCVTB/VCVTT and VFMA, eight outputs held in registers), and the portable loop elsewhere
//! (`libm::fmaf`, one instruction on aarch64).
//!
//! Each kernel can also compute a range of a layer's outputs (`*_columns`), so several threads
//! can share one layer (the `team` module); an output's value does not depend on the range.

use crate::format::f16_at;

/// Adds `input · W` to `out`, with `weights` holding `input.len() × out.len()` little-endian f16.
pub fn accumulate(input: &[f32], weights: &[u8], out: &mut [f32]) {
    accumulate_columns(input, weights, out.len(), 0, out);
}

/// Adds `input · W[.., first .. first + out.len()]` to `out`, with `weights` holding the whole
/// `input.len() × d_out` matrix of little-endian f16.
pub fn accumulate_columns(
    input: &[f32],
    weights: &[u8],
    d_out: usize,
    first: usize,
    out: &mut [f32],
) {
    assert_eq!(
        weights.len(),
        2 * input.len() * d_out,
        "validated by ModelFile"
    );
    assert!(first + out.len() <= d_out, "columns inside the layer");
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    {
        cortex_m4f::accumulate(input, weights, d_out, first, out);
    }
    #[cfg(target_arch = "x86_64")]
    {
        if x86::available() {
            // SAFETY: the CPU has AVX2, F16C and FMA (just checked); sizes checked above.
            unsafe { x86::accumulate(input, weights, d_out, first, out) };
            return;
        }
    }
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    {
        portable_columns(input, weights, d_out, first, out);
    }
}

/// Which path [`accumulate`] takes on this machine, for reports.
pub fn path() -> &'static str {
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    {
        "Cortex-M4F VCVT + VFMA"
    }
    #[cfg(target_arch = "x86_64")]
    {
        if x86::available() {
            return "x86-64 AVX2 + F16C + FMA";
        }
    }
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    {
        "portable (libm fmaf)"
    }
}

/// Adds `input · W` to `out` for an int8 layer: `weights` holds `input.len() × out.len()` signed
/// bytes and `scales` one little-endian f16 per output. Each output sums `x · q` in input order
/// (one rounding per term), then adds `scale · sum` to `out` in one more fused step; every path
/// does exactly this, so results are bit-identical across targets.
pub fn accumulate_int8(input: &[f32], weights: &[u8], scales: &[u8], out: &mut [f32]) {
    accumulate_int8_columns(input, weights, scales, out.len(), 0, out);
}

/// [`accumulate_int8`] for outputs `first .. first + out.len()` of a layer of `d_out` outputs
/// (`weights` and `scales` hold the whole layer).
pub fn accumulate_int8_columns(
    input: &[f32],
    weights: &[u8],
    scales: &[u8],
    d_out: usize,
    first: usize,
    out: &mut [f32],
) {
    assert_eq!(weights.len(), input.len() * d_out, "validated by ModelFile");
    assert_eq!(scales.len(), 2 * d_out, "validated by ModelFile");
    assert!(first + out.len() <= d_out, "columns inside the layer");
    #[cfg(target_arch = "x86_64")]
    {
        if x86::available() {
            // SAFETY: the CPU has AVX2, F16C and FMA (just checked); sizes checked above.
            unsafe { x86::accumulate_int8(input, weights, scales, d_out, first, out) };
            return;
        }
    }
    portable_int8_columns(input, weights, scales, d_out, first, out);
}

/// The portable int8 loop. Public so tests and benchmarks can hold the fast paths against it.
pub fn portable_int8(input: &[f32], weights: &[u8], scales: &[u8], out: &mut [f32]) {
    portable_int8_columns(input, weights, scales, out.len(), 0, out);
}

/// Blocks of up to 64 outputs summed on the stack (no heap).
fn portable_int8_columns(
    input: &[f32],
    weights: &[u8],
    scales: &[u8],
    d_out: usize,
    first: usize,
    out: &mut [f32],
) {
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

/// The portable loop, on any target: one row of weights at a time. Public so tests and
/// benchmarks can hold the fast paths against it.
pub fn portable(input: &[f32], weights: &[u8], out: &mut [f32]) {
    portable_columns(input, weights, out.len(), 0, out);
}

fn portable_columns(input: &[f32], weights: &[u8], d_out: usize, first: usize, out: &mut [f32]) {
    for (i, &x) in input.iter().enumerate() {
        let at = 2 * (i * d_out + first);
        let row = &weights[at..at + 2 * out.len()];
        for (j, value) in out.iter_mut().enumerate() {
            *value = fma(x, f16_at(row, j), *value);
        }
    }
}

/// `x · w + acc` rounded once.
#[inline]
fn fma(x: f32, w: f32, acc: f32) -> f32 {
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
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
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    {
        libm::fmaf(x, w, acc)
    }
}

/// Output `j` alone, in the same order as [`portable`].
#[cfg_attr(not(all(target_arch = "arm", target_abi = "eabihf")), allow(dead_code))]
fn column(input: &[f32], weights: &[u8], d_out: usize, j: usize, value: &mut f32) {
    for (i, &x) in input.iter().enumerate() {
        *value = fma(x, f16_at(weights, i * d_out + j), *value);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;
    use core::sync::atomic::{AtomicU8, Ordering};

    const UNKNOWN: u8 = 0;
    const YES: u8 = 1;
    const NO: u8 = 2;
    static DETECTED: AtomicU8 = AtomicU8::new(UNKNOWN);

    /// AVX2, F16C and FMA, with the OS saving the AVX registers (CPUID and XGETBV: no `std`).
    pub fn available() -> bool {
        match DETECTED.load(Ordering::Relaxed) {
            YES => true,
            NO => false,
            _ => {
                let found = detect();
                DETECTED.store(if found { YES } else { NO }, Ordering::Relaxed);
                found
            }
        }
    }

    fn detect() -> bool {
        let leaf1 = __cpuid(1);
        let (fma, osxsave, avx, f16c) = (
            leaf1.ecx & (1 << 12) != 0,
            leaf1.ecx & (1 << 27) != 0,
            leaf1.ecx & (1 << 28) != 0,
            leaf1.ecx & (1 << 29) != 0,
        );
        if !(fma && osxsave && avx && f16c) {
            return false;
        }
        // SAFETY: OSXSAVE is set, so XGETBV is enabled.
        let xcr0 = unsafe { xgetbv0() };
        if xcr0 & 0b110 != 0b110 {
            return false; // the OS does not save SSE and AVX state
        }
        // Leaf 7 (AVX2 in EBX bit 5) exists when leaf 0 says so.
        __cpuid(0).eax >= 7 && __cpuid_count(7, 0).ebx & (1 << 5) != 0
    }

    #[target_feature(enable = "xsave")]
    unsafe fn xgetbv0() -> u64 {
        // SAFETY: the caller checked OSXSAVE.
        unsafe { _xgetbv(0) }
    }

    /// Blocks of 64 and 8 outputs in registers, as [`walk`] orders them.
    ///
    /// # Safety
    /// The CPU must have AVX2, F16C and FMA, `weights.len() == 2 * input.len() * d_out` and
    /// `first + out.len() <= d_out`.
    #[target_feature(enable = "avx2,f16c,fma")]
    pub unsafe fn accumulate(
        input: &[f32],
        weights: &[u8],
        d_out: usize,
        first: usize,
        out: &mut [f32],
    ) {
        walk(
            d_out,
            first,
            out,
            // SAFETY (both): `walk` passes columns inside the layer, so inside every row.
            |column, out| unsafe {
                match out.len() {
                    64 => block::<8>(input, weights, d_out, column, out),
                    _ => block::<1>(input, weights, d_out, column, out),
                }
            },
            |column, value| unsafe { single(input, weights, d_out, column, value) },
        );
    }

    /// [`super::accumulate_int8_columns`]: blocks of 64 and 8 outputs in registers, as [`walk`]
    /// orders them.
    ///
    /// # Safety
    /// AVX2, F16C and FMA; `weights.len() == input.len() * d_out`, `scales.len() == 2 * d_out`,
    /// `first + out.len() <= d_out`.
    #[target_feature(enable = "avx2,f16c,fma")]
    pub unsafe fn accumulate_int8(
        input: &[f32],
        weights: &[u8],
        scales: &[u8],
        d_out: usize,
        first: usize,
        out: &mut [f32],
    ) {
        walk(
            d_out,
            first,
            out,
            // SAFETY: `walk` passes columns inside the layer, so inside every row and `scales`.
            |column, out| unsafe {
                match out.len() {
                    64 => block_int8::<8>(input, weights, scales, d_out, column, out),
                    _ => block_int8::<1>(input, weights, scales, d_out, column, out),
                }
            },
            |column, value| {
                let mut sum = _mm_setzero_ps();
                for (i, &x) in input.iter().enumerate() {
                    let q = _mm_set_ss(f32::from(weights[i * d_out + column] as i8));
                    sum = _mm_fmadd_ss(_mm_set_ss(x), q, sum);
                }
                let scale = super::f16_at(scales, column);
                *value = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(scale), sum, _mm_set_ss(*value)));
            },
        );
    }

    /// The order both kernels take a layer's outputs `out` (columns `first ..` of `d_out`):
    /// `block(column, out)` on runs of 64, then of 8, then the last 1-7 as one more run of 8
    /// over the layer's last 8 columns, keeping only their lanes (each lane does the same fused
    /// multiply-adds in the same order as a column alone, so the bits are the same). In layers
    /// narrower than 8, `single(column, value)` takes one output at a time.
    #[inline(always)]
    fn walk(
        d_out: usize,
        first: usize,
        out: &mut [f32],
        mut block: impl FnMut(usize, &mut [f32]),
        mut single: impl FnMut(usize, &mut f32),
    ) {
        let mut j = 0;
        for run in [64, 8] {
            while j + run <= out.len() {
                block(first + j, &mut out[j..j + run]);
                j += run;
            }
        }
        if j == out.len() {
            return;
        }
        if d_out < 8 {
            for (k, value) in out.iter_mut().enumerate().skip(j) {
                single(first + k, value);
            }
            return;
        }
        let start = (first + out.len()).max(8) - 8;
        let lane = first + j - start;
        let (tail, mut lanes) = (&mut out[j..], [0.0; 8]);
        lanes[lane..lane + tail.len()].copy_from_slice(tail);
        block(start, &mut lanes);
        tail.copy_from_slice(&lanes[lane..lane + tail.len()]);
    }

    /// Columns `j0 .. j0 + 8·R` of an int8 layer, added to `out[0 .. 8·R]`.
    ///
    /// # Safety
    /// AVX2, F16C and FMA; `j0 + 8·R <= d_out`, `out.len() >= 8·R`; sizes as in
    /// [`accumulate_int8`].
    #[target_feature(enable = "avx2,f16c,fma")]
    #[inline]
    unsafe fn block_int8<const R: usize>(
        input: &[f32],
        weights: &[u8],
        scales: &[u8],
        d_out: usize,
        j0: usize,
        out: &mut [f32],
    ) {
        let mut sums = [_mm256_setzero_ps(); R];
        // SAFETY (all pointer reads below): in bounds by the function's contract; unaligned.
        unsafe {
            let mut row = weights.as_ptr().add(j0);
            for &x in input {
                let x = _mm256_set1_ps(x);
                for (r, sum) in sums.iter_mut().enumerate() {
                    let bytes = _mm_loadl_epi64(row.add(8 * r).cast());
                    let q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
                    *sum = _mm256_fmadd_ps(x, q, *sum);
                }
                row = row.add(d_out);
            }
            for (r, sum) in sums.iter().enumerate() {
                let at = j0 + 8 * r;
                let scale = _mm256_cvtph_ps(_mm_loadu_si128(scales.as_ptr().add(2 * at).cast()));
                let value = _mm256_loadu_ps(out.as_ptr().add(8 * r));
                _mm256_storeu_ps(
                    out.as_mut_ptr().add(8 * r),
                    _mm256_fmadd_ps(scale, *sum, value),
                );
            }
        }
    }

    /// Output `j` alone with scalar F16C and FMA: [`super::column`] without libm's call.
    ///
    /// # Safety
    /// AVX2, F16C and FMA; `j < d_out`; `weights` holds `input.len()` rows of `d_out` f16.
    #[target_feature(enable = "avx2,f16c,fma")]
    unsafe fn single(input: &[f32], weights: &[u8], d_out: usize, j: usize, value: &mut f32) {
        let mut acc = _mm_set_ss(*value);
        for (i, &x) in input.iter().enumerate() {
            let at = 2 * (i * d_out + j);
            let bits = u16::from_le_bytes([weights[at], weights[at + 1]]);
            let w = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits)));
            acc = _mm_fmadd_ss(_mm_set_ss(x), w, acc);
        }
        *value = _mm_cvtss_f32(acc);
    }

    /// `out[0 .. 8·R] += Σ_i input[i] · w[i][j0 .. j0 + 8·R]`, `R` registers of eight.
    ///
    /// # Safety
    /// AVX2, F16C and FMA; `j0 + 8·R <= d_out`, `out.len() >= 8·R`; `weights` holds
    /// `input.len()` rows of `d_out` f16.
    #[target_feature(enable = "avx2,f16c,fma")]
    #[inline]
    unsafe fn block<const R: usize>(
        input: &[f32],
        weights: &[u8],
        d_out: usize,
        j0: usize,
        out: &mut [f32],
    ) {
        let mut acc = [_mm256_setzero_ps(); R];
        // SAFETY (all pointer reads below): in bounds by the function's contract; unaligned
        // loads, since postcard places the weights at any offset.
        unsafe {
            for (r, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_loadu_ps(out.as_ptr().add(8 * r));
            }
            let mut row = weights.as_ptr().add(2 * j0);
            for &x in input {
                let x = _mm256_set1_ps(x);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let half = _mm_loadu_si128(row.add(16 * r).cast());
                    *acc = _mm256_fmadd_ps(x, _mm256_cvtph_ps(half), *acc);
                }
                row = row.add(2 * d_out);
            }
            for (r, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(8 * r), *acc);
            }
        }
    }
}

#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
mod cortex_m4f {
    /// Blocks of eight outputs through [`block8`], the rest through [`super::column`].
    pub fn accumulate(input: &[f32], weights: &[u8], d_out: usize, first: usize, out: &mut [f32]) {
        let blocks = if input.is_empty() { 0 } else { out.len() / 8 };
        for block in 0..blocks {
            let acc = &mut out[8 * block..8 * block + 8];
            // SAFETY: `weights` holds input.len() rows of 2 * d_out bytes and first + out.len()
            // <= d_out (checked by the caller); this block reads 16 bytes at offset
            // 2 * first + 16 * block of each row, inside the row.
            unsafe {
                block8(
                    input.as_ptr(),
                    input.len(),
                    weights.as_ptr().add(2 * first + 16 * block),
                    2 * d_out,
                    acc.as_mut_ptr(),
                )
            };
        }
        for j in 8 * blocks..out.len() {
            super::column(input, weights, d_out, first + j, &mut out[j]);
        }
    }

    /// For i in 0..n: acc[0..8] += x[i] · f16 w[i·stride .. +16 bytes]. Unaligned word loads
    /// (allowed on the M4) because postcard places the weights at any offset; VFMA rounds once,
    /// like the other paths.
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
                "vfma.f32 s16, s0, s8",
                "vfma.f32 s17, s0, s9",
                "vfma.f32 s18, s0, s10",
                "vfma.f32 s19, s0, s11",
                "vfma.f32 s20, s0, s12",
                "vfma.f32 s21, s0, s13",
                "vfma.f32 s22, s0, s14",
                "vfma.f32 s23, s0, s15",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic f16 weights spanning several magnitudes (and some subnormals).
    fn weights(count: usize, seed: u32) -> std::vec::Vec<u8> {
        let mut state = seed;
        (0..count)
            .flat_map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let scale = [1e-6f32, 1e-2, 0.3, 4.0][(state >> 30) as usize];
                let value = ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * scale;
                half::f16::from_f32(value).to_le_bytes()
            })
            .collect()
    }

    /// Runs `fast` and `reference` on the same input and bias for each `(d_in, d_out)`, weights
    /// from `stored(d_in, d_out)` placed at an odd byte offset like postcard's, and requires the
    /// same bits.
    fn assert_bit_identical(
        stored: impl Fn(usize, usize) -> std::vec::Vec<u8>,
        fast: impl Fn(&[f32], &[u8], &mut [f32]),
        reference: impl Fn(&[f32], &[u8], &mut [f32]),
    ) {
        for (d_in, d_out) in [
            (784, 512),
            (784, 300),
            (33, 10),
            (7, 71),
            (1, 64),
            (0, 9),
            (5, 3),
            (130, 137),
        ] {
            let mut at_odd_offset = std::vec![0u8];
            at_odd_offset.extend(stored(d_in, d_out));
            let w = &at_odd_offset[1..];
            let input: std::vec::Vec<f32> = (0..d_in)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let bias: std::vec::Vec<f32> = (0..d_out).map(|j| j as f32 * 0.01 - 0.3).collect();
            let (mut got, mut expected) = (bias.clone(), bias);
            fast(&input, w, &mut got);
            reference(&input, w, &mut expected);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<std::vec::Vec<_>>();
            assert_eq!(bits(&got), bits(&expected), "{d_in}x{d_out} via {}", path());
        }
    }

    #[test]
    fn dispatched_kernel_is_bit_identical_to_the_portable_loop() {
        // Widths that hit every block size and remainder.
        assert_bit_identical(
            |d_in, d_out| weights(d_in * d_out, (d_in * 31 + d_out) as u32),
            accumulate,
            portable,
        );
    }

    #[test]
    fn dispatched_int8_kernel_is_bit_identical_to_the_portable_loop() {
        let int8 =
            |d_in: usize, d_out: usize| (0..d_in * d_out).map(|k| (k * 37 % 251) as u8).collect();
        // The scales depend only on d_out; the weights are the stored bytes.
        assert_bit_identical(
            int8,
            |x, w, out| accumulate_int8(x, w, &weights(out.len(), out.len() as u32 + 5), out),
            |x, w, out| portable_int8(x, w, &weights(out.len(), out.len() as u32 + 5), out),
        );
    }

    #[test]
    fn a_range_of_columns_is_those_columns_of_the_whole_layer() {
        let (d_in, d_out) = (130, 137);
        let f16 = weights(d_in * d_out, 9);
        let int8: std::vec::Vec<u8> = (0..d_in * d_out).map(|k| (k * 37 % 251) as u8).collect();
        let scales = weights(d_out, 4);
        let input: std::vec::Vec<f32> = (0..d_in).map(|i| (i % 13) as f32 - 6.0).collect();
        let mut whole = [std::vec![0.5f32; d_out], std::vec![0.5f32; d_out]];
        accumulate(&input, &f16, &mut whole[0]);
        accumulate_int8(&input, &int8, &scales, &mut whole[1]);
        for (first, width) in [(0, 137), (16, 64), (17, 71), (100, 37), (136, 1), (5, 0)] {
            let columns = first..first + width;
            let mut part = [std::vec![0.5f32; width], std::vec![0.5f32; width]];
            accumulate_columns(&input, &f16, d_out, first, &mut part[0]);
            accumulate_int8_columns(&input, &int8, &scales, d_out, first, &mut part[1]);
            assert_eq!(part[0], whole[0][columns.clone()], "f16 {columns:?}");
            assert_eq!(part[1], whole[1][columns.clone()], "int8 {columns:?}");
            let mut portable = [std::vec![0.5f32; width], std::vec![0.5f32; width]];
            portable_columns(&input, &f16, d_out, first, &mut portable[0]);
            portable_int8_columns(&input, &int8, &scales, d_out, first, &mut portable[1]);
            assert_eq!(portable, part, "portable {columns:?}");
        }
    }

    #[test]
    fn int8_weights_are_signed_bytes_times_the_output_scale() {
        // Two outputs, scales 0.5 and 2; weights -1, 3 (row 0) and 127, -128 (row 1).
        let weights = [0xFFu8, 3, 127, 0x80];
        let scales: std::vec::Vec<u8> = [0.5f32, 2.0]
            .iter()
            .flat_map(|&s| half::f16::from_f32(s).to_le_bytes())
            .collect();
        let mut out = [1.0f32, 0.0];
        accumulate_int8(&[2.0, 1.0], &weights, &scales, &mut out);
        assert_eq!(out, [1.0 + 0.5 * (-2.0 + 127.0), 2.0 * (6.0 - 128.0)]);
    }

    #[test]
    fn portable_loop_rounds_once_per_weight() {
        // (1 + 2^-15)(1 + 2^-10) = 1 + 2^-10 + 2^-15 + 2^-25: the last bit only survives when
        // the product is not rounded before the add.
        let x = 1.0 + 2f32.powi(-15);
        let w = half::f16::from_f32(1.0 + 2f32.powi(-10));
        let mut out = [-(1.0 + 2f32.powi(-10) + 2f32.powi(-15))];
        portable(&[x], &w.to_le_bytes(), &mut out);
        assert_eq!(out[0], 2f32.powi(-25));
    }
}
