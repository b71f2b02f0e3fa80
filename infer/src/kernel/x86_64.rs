//! x86-64 with AVX2, F16C and FMA (detected at run time with CPUID and XGETBV, no `std`): eight
//! outputs per register, blocks of 64 and 8 outputs held in registers while the rows stream by.
//! Each lane does the same fused multiply-adds in the same order as the portable loop, so the
//! bits are the same.

use core::arch::x86_64::*;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::format::LayerBytes;

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
/// The CPU must have AVX2, F16C and FMA; the layer's sizes must hold (`weights` holds
/// `input.len() × d_out` f16) and `first + out.len() <= d_out`.
#[target_feature(enable = "avx2,f16c,fma")]
pub unsafe fn f16_columns(input: &[f32], layer: &LayerBytes<'_>, first: usize, out: &mut [f32]) {
    let (weights, d_out) = (layer.weights, layer.d_out as usize);
    walk(
        d_out,
        first,
        out,
        // SAFETY: `walk` passes columns inside the layer, so inside every row.
        |column, out| unsafe {
            match out.len() {
                64 => block::<8>(input, layer, column, out),
                _ => block::<1>(input, layer, column, out),
            }
        },
        // SAFETY: as above, `column < d_out`.
        |column, value| unsafe { single(input, weights, d_out, column, value) },
    );
}

/// [`super::int8_columns`]: blocks of 64 and 8 outputs in registers, as [`walk`]
/// orders them.
///
/// # Safety
/// AVX2, F16C and FMA; the layer's sizes must hold (`weights` holds `input.len() × d_out`
/// bytes, `scales` `d_out` f16) and `first + out.len() <= d_out`.
#[target_feature(enable = "avx2,f16c,fma")]
pub unsafe fn int8_columns(input: &[f32], layer: &LayerBytes<'_>, first: usize, out: &mut [f32]) {
    let (weights, scales, d_out) = (layer.weights, layer.scales, layer.d_out as usize);
    walk(
        d_out,
        first,
        out,
        // SAFETY: `walk` passes columns inside the layer, so inside every row and `scales`.
        |column, out| unsafe {
            match out.len() {
                64 => block_int8::<8>(input, layer, column, out),
                _ => block_int8::<1>(input, layer, column, out),
            }
        },
        |column, value| {
            let mut sum = _mm_setzero_ps();
            for (i, &x) in input.iter().enumerate() {
                let q = _mm_set_ss(f32::from(weights[i * d_out + column] as i8));
                sum = _mm_fmadd_ss(_mm_set_ss(x), q, sum);
            }
            let scale = crate::format::f16_at(scales, column);
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
/// [`int8_columns`].
#[target_feature(enable = "avx2,f16c,fma")]
#[inline]
unsafe fn block_int8<const R: usize>(
    input: &[f32],
    layer: &LayerBytes<'_>,
    j0: usize,
    out: &mut [f32],
) {
    let (weights, scales, d_out) = (layer.weights, layer.scales, layer.d_out as usize);
    let mut sums = [_mm256_setzero_ps(); R];
    // SAFETY: every pointer read below is in bounds by the function's contract; unaligned.
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

/// Output `j` alone with scalar F16C and FMA: [`super::portable::f16_column`] without libm's call.
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
/// AVX2, F16C and FMA; `j0 + 8·R <= d_out`, `out.len() >= 8·R`; the layer's `weights` hold
/// `input.len()` rows of `d_out` f16.
#[target_feature(enable = "avx2,f16c,fma")]
#[inline]
unsafe fn block<const R: usize>(input: &[f32], layer: &LayerBytes<'_>, j0: usize, out: &mut [f32]) {
    let (weights, d_out) = (layer.weights, layer.d_out as usize);
    let mut acc = [_mm256_setzero_ps(); R];
    // SAFETY: every pointer read below is in bounds by the function's contract; unaligned
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
