//! x86-64 with AVX2, F16C and FMA (detected at run time with CPUID and XGETBV, no `std`): eight
//! outputs per register, blocks of 64 and 8 outputs held in registers while the rows stream by.
//! Several images at once ([`rows`]) take groups of 6 images (AVX2) or 12 (AVX-512F, when the
//! CPU and OS have it), so each weight is converted once per group. Each lane does the same
//! fused multiply-adds in the same order as the portable loop, so the bits are the same.

use core::arch::x86_64::*;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::format::{Encoding, LayerBytes};

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

/// `detect()`'s answer, worked out once and kept in `answer`.
fn cached(answer: &AtomicU8, detect: impl FnOnce() -> bool) -> bool {
    match answer.load(Ordering::Relaxed) {
        YES => true,
        NO => false,
        _ => {
            let found = detect();
            answer.store(if found { YES } else { NO }, Ordering::Relaxed);
            found
        }
    }
}

/// AVX2, F16C and FMA, with the OS saving the AVX registers (CPUID and XGETBV: no `std`).
pub fn available() -> bool {
    static ANSWER: AtomicU8 = AtomicU8::new(UNKNOWN);
    cached(&ANSWER, detect)
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

/// AVX-512F on top of [`available`], with the OS saving the opmask and ZMM registers: for the
/// batched kernel ([`rows`]) and the integer paths.
pub fn avx512_available() -> bool {
    static ANSWER: AtomicU8 = AtomicU8::new(UNKNOWN);
    cached(&ANSWER, || {
        // SAFETY: `available` checked OSXSAVE before XGETBV is read.
        available()
            && __cpuid_count(7, 0).ebx & (1 << 16) != 0
            && unsafe { xgetbv0() } & 0b1110_0110 == 0b1110_0110
    })
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

/// Images and columns each pass of [`rows`] takes: with AVX2, 6 images × 16 columns (12
/// accumulators, two weight registers and a broadcast fill 15 of the 16 registers); with
/// AVX-512, 12 images × 32 columns (24 of the 32 registers; a row's 32 f16 weights are one
/// cache line).
const IMAGES: usize = 6;
const COLUMNS: usize = 16;
const IMAGES_512: usize = 12;
const COLUMNS_512: usize = 32;

/// [`super::rows`]: groups of images through [`together_512`] (when the CPU has AVX-512) or
/// [`together`], so each weight is loaded and converted once per group; the last columns and
/// images through [`f16_columns`] / [`int8_columns`]. Each output's lane does the fused
/// multiply-adds of those kernels in the same order, so the bits are the same.
///
/// # Safety
/// AVX2, F16C and FMA; `inputs` holds `images` rows of `d_in`, `outs` `images` rows of `d_out`;
/// the layer's sizes hold as [`super::check_layer`] checks.
#[target_feature(enable = "avx2,f16c,fma")]
pub unsafe fn rows(inputs: &[f32], layer: &LayerBytes<'_>, outs: &mut [f32], images: usize) {
    let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
    let mut done = 0;
    if avx512_available() {
        // SAFETY: the CPU has AVX-512F; `groups` passes blocks inside the layer and the rows.
        done = unsafe {
            groups(
                inputs,
                layer,
                outs,
                images,
                IMAGES_512,
                COLUMNS_512,
                |x, j0, out| together_512(x, layer, j0, out),
            )
        };
    }
    // SAFETY: as above, with AVX2.
    done += unsafe {
        groups(
            &inputs[done * d_in..],
            layer,
            &mut outs[done * d_out..],
            images - done,
            IMAGES,
            COLUMNS,
            |x, j0, out| together(x, layer, j0, out),
        )
    };
    for b in done..images {
        // SAFETY: as this function's contract.
        unsafe {
            rest(
                &inputs[b * d_in..(b + 1) * d_in],
                layer,
                &mut outs[b * d_out..(b + 1) * d_out],
                0,
            )
        };
    }
}

/// Outputs `first ..` of one image through the one-image kernels.
///
/// # Safety
/// As [`f16_columns`].
#[target_feature(enable = "avx2,f16c,fma")]
unsafe fn rest(input: &[f32], layer: &LayerBytes<'_>, out: &mut [f32], first: usize) {
    // SAFETY: as this function's contract.
    unsafe {
        match layer.encoding {
            Encoding::F16 => f16_columns(input, layer, first, &mut out[first..]),
            Encoding::Int8 => int8_columns(input, layer, first, &mut out[first..]),
            Encoding::Int8Full => unreachable!("full-integer layers take `dots`"),
        }
    }
}

/// Whole groups of `group` images: `block(inputs, j0, outs)` on each run of `columns` columns,
/// [`rest`] on the last columns; returns the images done.
///
/// # Safety
/// As [`rows`].
#[target_feature(enable = "avx2,f16c,fma")]
unsafe fn groups(
    inputs: &[f32],
    layer: &LayerBytes<'_>,
    outs: &mut [f32],
    images: usize,
    group: usize,
    columns: usize,
    mut block: impl FnMut(&[f32], usize, &mut [f32]),
) -> usize {
    let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
    let whole = d_out / columns * columns;
    let mut image = 0;
    while image + group <= images {
        let input = &inputs[image * d_in..(image + group) * d_in];
        let out = &mut outs[image * d_out..(image + group) * d_out];
        for j0 in (0..whole).step_by(columns) {
            block(input, j0, out);
        }
        if whole < d_out {
            for b in 0..group {
                // SAFETY: as this function's contract.
                unsafe {
                    rest(
                        &input[b * d_in..(b + 1) * d_in],
                        layer,
                        &mut out[b * d_out..(b + 1) * d_out],
                        whole,
                    )
                };
            }
        }
        image += group;
    }
    image
}

/// [`together`] with AVX-512: columns `j0 .. j0 + 32` of 12 images, two registers of 16 lanes
/// each.
///
/// # Safety
/// AVX-512F, F16C and FMA; `j0 + 32 <= d_out`; `input` holds 12 rows of `d_in`, `out` 12 rows
/// of `d_out`; the layer's sizes hold.
#[target_feature(enable = "avx512f,avx2,f16c,fma")]
#[inline]
unsafe fn together_512(input: &[f32], layer: &LayerBytes<'_>, j0: usize, out: &mut [f32]) {
    let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
    let int8 = layer.encoding == Encoding::Int8;
    let mut acc = [[_mm512_setzero_ps(); 2]; IMAGES_512];
    // SAFETY: every pointer read or written below is in bounds by the contract; unaligned.
    unsafe {
        if !int8 {
            for (b, acc) in acc.iter_mut().enumerate() {
                for (r, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm512_loadu_ps(out.as_ptr().add(b * d_out + j0 + 16 * r));
                }
            }
        }
        let x = input.as_ptr();
        if int8 {
            let mut row = layer.weights.as_ptr().add(j0);
            for i in 0..d_in {
                let q = |r: usize| {
                    let bytes = _mm_loadu_si128(row.add(16 * r).cast());
                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes))
                };
                let w = [q(0), q(1)];
                for (b, acc) in acc.iter_mut().enumerate() {
                    let xb = _mm512_set1_ps(*x.add(b * d_in + i));
                    acc[0] = _mm512_fmadd_ps(xb, w[0], acc[0]);
                    acc[1] = _mm512_fmadd_ps(xb, w[1], acc[1]);
                }
                row = row.add(d_out);
            }
            for (b, acc) in acc.iter().enumerate() {
                for (r, sum) in acc.iter().enumerate() {
                    let at = j0 + 16 * r;
                    let scales = layer.scales.as_ptr().add(2 * at);
                    let scale = _mm512_cvtph_ps(_mm256_loadu_si256(scales.cast()));
                    let value = out.as_mut_ptr().add(b * d_out + at);
                    _mm512_storeu_ps(value, _mm512_fmadd_ps(scale, *sum, _mm512_loadu_ps(value)));
                }
            }
        } else {
            let mut row = layer.weights.as_ptr().add(2 * j0);
            for i in 0..d_in {
                let w = [
                    _mm512_cvtph_ps(_mm256_loadu_si256(row.cast())),
                    _mm512_cvtph_ps(_mm256_loadu_si256(row.add(32).cast())),
                ];
                for (b, acc) in acc.iter_mut().enumerate() {
                    let xb = _mm512_set1_ps(*x.add(b * d_in + i));
                    acc[0] = _mm512_fmadd_ps(xb, w[0], acc[0]);
                    acc[1] = _mm512_fmadd_ps(xb, w[1], acc[1]);
                }
                row = row.add(2 * d_out);
            }
            for (b, acc) in acc.iter().enumerate() {
                for (r, acc) in acc.iter().enumerate() {
                    _mm512_storeu_ps(out.as_mut_ptr().add(b * d_out + j0 + 16 * r), *acc);
                }
            }
        }
    }
}

/// Columns `j0 .. j0 + COLUMNS` of [`IMAGES`] images: `out[b][j] += Σ_i input[b][i] · w[i][j]`
/// (f16: accumulating onto `out`, as [`block`]; int8: summing from 0, then `out + scale · sum`,
/// as [`block_int8`]).
///
/// # Safety
/// AVX2, F16C and FMA; `j0 + COLUMNS <= d_out`; `input` holds `IMAGES` rows of `d_in`, `out`
/// `IMAGES` rows of `d_out`; the layer's sizes hold.
#[target_feature(enable = "avx2,f16c,fma")]
#[inline]
unsafe fn together(input: &[f32], layer: &LayerBytes<'_>, j0: usize, out: &mut [f32]) {
    let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
    let int8 = layer.encoding == Encoding::Int8;
    let mut acc = [[_mm256_setzero_ps(); 2]; IMAGES];
    // SAFETY: every pointer read or written below is in bounds by the contract; unaligned.
    unsafe {
        if !int8 {
            for (b, acc) in acc.iter_mut().enumerate() {
                for (r, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_loadu_ps(out.as_ptr().add(b * d_out + j0 + 8 * r));
                }
            }
        }
        let x = input.as_ptr();
        if int8 {
            let mut row = layer.weights.as_ptr().add(j0);
            for i in 0..d_in {
                let q = |r: usize| {
                    let bytes = _mm_loadl_epi64(row.add(8 * r).cast());
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes))
                };
                let w = [q(0), q(1)];
                for (b, acc) in acc.iter_mut().enumerate() {
                    let xb = _mm256_broadcast_ss(&*x.add(b * d_in + i));
                    acc[0] = _mm256_fmadd_ps(xb, w[0], acc[0]);
                    acc[1] = _mm256_fmadd_ps(xb, w[1], acc[1]);
                }
                row = row.add(d_out);
            }
            for (b, acc) in acc.iter().enumerate() {
                for (r, sum) in acc.iter().enumerate() {
                    let at = j0 + 8 * r;
                    let scales = layer.scales.as_ptr().add(2 * at);
                    let scale = _mm256_cvtph_ps(_mm_loadu_si128(scales.cast()));
                    let value = out.as_mut_ptr().add(b * d_out + at);
                    _mm256_storeu_ps(value, _mm256_fmadd_ps(scale, *sum, _mm256_loadu_ps(value)));
                }
            }
        } else {
            let mut row = layer.weights.as_ptr().add(2 * j0);
            for i in 0..d_in {
                let w = [
                    _mm256_cvtph_ps(_mm_loadu_si128(row.cast())),
                    _mm256_cvtph_ps(_mm_loadu_si128(row.add(16).cast())),
                ];
                for (b, acc) in acc.iter_mut().enumerate() {
                    let xb = _mm256_broadcast_ss(&*x.add(b * d_in + i));
                    acc[0] = _mm256_fmadd_ps(xb, w[0], acc[0]);
                    acc[1] = _mm256_fmadd_ps(xb, w[1], acc[1]);
                }
                row = row.add(2 * d_out);
            }
            for (b, acc) in acc.iter().enumerate() {
                for (r, acc) in acc.iter().enumerate() {
                    _mm256_storeu_ps(out.as_mut_ptr().add(b * d_out + j0 + 8 * r), *acc);
                }
            }
        }
    }
}

/// AVX-512 VNNI (and BW) on top of [`avx512_available`], for the full-integer dot products.
pub fn vnni_available() -> bool {
    static ANSWER: AtomicU8 = AtomicU8::new(UNKNOWN);
    cached(&ANSWER, || {
        let leaf7 = __cpuid_count(7, 0);
        avx512_available() && leaf7.ebx & (1 << 30) != 0 && leaf7.ecx & (1 << 11) != 0
    })
}

/// Full-integer dot products (see [`super::dots`]), four output rows at a time: with AVX-512
/// VNNI, [`dots_vnni`]; else [`dots_avx2`]. Integer sums: the same as the portable loop.
///
/// # Safety
/// AVX2; `weights` holds `sums.len()` rows of `input.len()` bytes.
#[target_feature(enable = "avx2")]
pub unsafe fn int8_dots(input: &[u8], weights: &[u8], sums: &mut [i32]) {
    // SAFETY: the CPU has AVX-512 VNNI and BW, or AVX2; the contract holds.
    unsafe {
        if vnni_available() {
            dots_vnni(input, weights, sums)
        } else {
            dots_avx2(input, weights, sums)
        }
    }
}

/// [`int8_dots`] without VNNI: each block of 16 inputs zero-extended to i16 once (VPMOVZXBW),
/// each row's weights sign-extended (VPMOVSXBW), multiplied and pair-summed into i32 with
/// VPMADDWD (a pair of products is at most 2 · 255 · 128, so it never saturates).
///
/// # Safety
/// As [`int8_dots`].
#[target_feature(enable = "avx2")]
pub unsafe fn dots_avx2(input: &[u8], weights: &[u8], sums: &mut [i32]) {
    let n = input.len();
    let blocks = n / 16;
    let tail = |row: &[u8]| -> i32 {
        (16 * blocks..n)
            .map(|i| i32::from(input[i]) * i32::from(row[i] as i8))
            .sum()
    };
    for j in (0..sums.len()).step_by(4) {
        let rows = (sums.len() - j).min(4);
        let mut acc = [_mm256_setzero_si256(); 4];
        for b in 0..blocks {
            // SAFETY: 16 bytes at 16·b < n of `input` and of each row (the contract).
            unsafe {
                let x = _mm256_cvtepu8_epi16(_mm_loadu_si128(input.as_ptr().add(16 * b).cast()));
                for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                    let at = weights.as_ptr().add((j + r) * n + 16 * b);
                    let w = _mm256_cvtepi8_epi16(_mm_loadu_si128(at.cast()));
                    *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(x, w));
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(rows) {
            let row = &weights[(j + r) * n..(j + r + 1) * n];
            sums[j + r] += sum_256(*acc) + tail(row);
        }
    }
}

/// The 8 lanes' sum.
#[target_feature(enable = "avx2")]
fn sum_256(v: __m256i) -> i32 {
    let half = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let quad = _mm_add_epi32(half, _mm_shuffle_epi32::<0b01_00_11_10>(half));
    let pair = _mm_add_epi32(quad, _mm_shuffle_epi32::<0b10_11_00_01>(quad));
    _mm_cvtsi128_si32(pair)
}

/// The mask of the first `min(64, left)` bytes of a block.
fn block_mask(left: usize) -> __mmask64 {
    if left >= 64 { !0 } else { (1u64 << left) - 1 }
}

/// [`int8_dots`] with VPDPBUSD, which multiplies unsigned by signed bytes and adds each four
/// products into an i32 lane: 64 inputs per instruction, no unpacking. The last partial block
/// is loaded under a mask (zeros, which add nothing).
///
/// # Safety
/// AVX-512 VNNI and BW; as [`int8_dots`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
unsafe fn dots_vnni(input: &[u8], weights: &[u8], sums: &mut [i32]) {
    let whole = sums.len() / 4 * 4;
    for j in (0..whole).step_by(4) {
        // SAFETY: rows j .. j + 4 are inside `weights` (the contract).
        let acc = unsafe { vnni_rows::<4>(input, weights, j) };
        let mut four = [0i32; 4];
        // SAFETY: `four` is 4 i32, 16 bytes.
        unsafe { _mm_storeu_si128(four.as_mut_ptr().cast(), sum4(acc)) };
        for (sum, got) in sums[j..j + 4].iter_mut().zip(four) {
            *sum += got;
        }
    }
    for (j, sum) in sums.iter_mut().enumerate().skip(whole) {
        // SAFETY: row j is inside `weights` (the contract).
        let acc = unsafe { vnni_rows::<1>(input, weights, j) };
        *sum += _mm512_reduce_add_epi32(acc[0]);
    }
}

/// `R` rows from `j` of [`dots_vnni`], one accumulator each.
///
/// # Safety
/// AVX-512 VNNI and BW; rows `j .. j + R` of `input.len()` bytes inside `weights`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
#[inline]
unsafe fn vnni_rows<const R: usize>(input: &[u8], weights: &[u8], j: usize) -> [__m512i; R] {
    let n = input.len();
    let mut acc = [_mm512_setzero_si512(); R];
    for b in 0..n.div_ceil(64) {
        let mask = block_mask(n - 64 * b);
        // SAFETY: the masked loads read only the `min(64, left)` bytes at 64·b, inside `input`
        // and each row (the contract); masked-off bytes are not touched.
        unsafe {
            let x = _mm512_maskz_loadu_epi8(mask, input.as_ptr().add(64 * b).cast());
            for (r, acc) in acc.iter_mut().enumerate() {
                let at = weights.as_ptr().add((j + r) * n + 64 * b);
                // The same bytes of the next R rows, into L1 ahead of use: 15 -> 12 µs per
                // image on 784-512-512-10 (the L1 prefetcher does not follow R streams).
                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(R * n).cast());
                *acc = _mm512_dpbusd_epi32(*acc, x, _mm512_maskz_loadu_epi8(mask, at.cast()));
            }
        }
    }
    acc
}

/// The lane sums of four vectors, in one: halves added, then pairwise adds (13 instructions
/// where four full reductions take about 40).
#[target_feature(enable = "avx512f,avx2")]
fn sum4(acc: [__m512i; 4]) -> __m128i {
    let half =
        |v: __m512i| _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v));
    let (a, b, c, d) = (half(acc[0]), half(acc[1]), half(acc[2]), half(acc[3]));
    let abcd = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    _mm_add_epi32(
        _mm256_castsi256_si128(abcd),
        _mm256_extracti128_si256::<1>(abcd),
    )
}

/// [`dots_vnni`] for `sums.len() / d_out` images: for each block of four outputs, the images
/// four at a time ([`block4x4`], 16 accumulators), so the block's weights (four rows) stay in L1
/// while every image passes. The outputs past the last block of four and the images past the
/// last group of four take [`dots_vnni`], one image at a time. The same integers either way.
///
/// # Safety
/// AVX-512 VNNI and BW; `inputs` holds whole rows of `d_in >= 1` activations, one per image,
/// `weights` `d_out` rows of `d_in` bytes, `sums` one row of `d_out` per image.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
pub unsafe fn dot_rows_vnni(inputs: &[u8], weights: &[u8], d_out: usize, sums: &mut [i32]) {
    let n = weights.len() / d_out;
    let images = sums.len() / d_out;
    let (whole_rows, whole_images) = (d_out / 4 * 4, images / 4 * 4);
    for j in (0..whole_rows).step_by(4) {
        for first in (0..whole_images).step_by(4) {
            // SAFETY: as this function's contract, for four whole rows and images.
            let got = unsafe { block4x4(inputs, weights, n, j, first) };
            for (k, got) in got.iter().enumerate() {
                let at = (first + k) * d_out + j;
                for (sum, got) in sums[at..at + 4].iter_mut().zip(got) {
                    *sum += got;
                }
            }
        }
    }
    for (image, (input, row)) in inputs
        .chunks_exact(n)
        .zip(sums.chunks_exact_mut(d_out))
        .enumerate()
    {
        let from = if image < whole_images { whole_rows } else { 0 };
        // SAFETY: the CPU has VNNI (the contract); rows `from ..` of `weights` are `d_out - from`
        // rows of `n` bytes, one per sum.
        unsafe { dots_vnni(input, &weights[from * n..], &mut row[from..]) };
    }
}

/// Four rows (`j ..`) by four images (`first ..`) of [`dot_rows_vnni`], sixteen accumulators in
/// registers; returns each image's four sums.
///
/// # Safety
/// As [`dot_rows_vnni`], with rows `j .. j + 4` and images `first .. first + 4` inside.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
#[inline]
unsafe fn block4x4(
    inputs: &[u8],
    weights: &[u8],
    n: usize,
    j: usize,
    first: usize,
) -> [[i32; 4]; 4] {
    let mut acc = [[_mm512_setzero_si512(); 4]; 4];
    for b in 0..n.div_ceil(64) {
        let mask = block_mask(n - 64 * b);
        // SAFETY: masked loads inside the four images' rows and the four weight rows.
        unsafe {
            let load = |at: *const u8| _mm512_maskz_loadu_epi8(mask, at.cast());
            let x = [0, 1, 2, 3].map(|k| load(inputs.as_ptr().add((first + k) * n + 64 * b)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let w = load(weights.as_ptr().add((j + r) * n + 64 * b));
                for (acc, x) in acc.iter_mut().zip(x) {
                    *acc = _mm512_dpbusd_epi32(*acc, x, w);
                }
            }
        }
    }
    let mut out = [[0i32; 4]; 4];
    for (k, out) in out.iter_mut().enumerate() {
        let sums = sum4([acc[0][k], acc[1][k], acc[2][k], acc[3][k]]);
        // SAFETY: `out` is 4 i32, 16 bytes.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), sums) };
    }
    out
}

/// [`super::requantize_outputs`] sixteen outputs at a time, the same integers as
/// [`super::requantize`]: the 64-bit products of even and odd lanes (VPMULDQ), the nudge and the
/// truncation towards zero in 64 bits, then the rounding right shift, the zero point and the
/// clamp in 32. Returns how many outputs it did (whole groups of sixteen).
///
/// # Safety
/// AVX-512F; `multipliers` holds `4 · sums.len()` bytes, `shifts` and `out` `sums.len()`.
#[target_feature(enable = "avx512f,avx2")]
pub unsafe fn requantize_16(
    sums: &[i32],
    multipliers: &[u8],
    shifts: &[u8],
    zero_point: u8,
    out: &mut [u8],
) -> usize {
    let groups = sums.len() / 16;
    let zero = _mm512_setzero_si512();
    let one = _mm512_set1_epi32(1);
    let nudge = _mm512_set1_epi64(1 << 30);
    let below = _mm512_set1_epi64(1 - (1i64 << 31));
    let truncate = _mm512_set1_epi64((1i64 << 31) - 1);
    let zero_point = _mm512_set1_epi32(i32::from(zero_point));
    let top = _mm512_set1_epi32(255);
    for g in 0..groups {
        // SAFETY: 16 sums, 64 multiplier bytes and 16 shift bytes at group g (the contract).
        let (sum, multiplier, shift) = unsafe {
            (
                _mm512_loadu_si512(sums.as_ptr().add(16 * g).cast()),
                _mm512_loadu_si512(multipliers.as_ptr().add(64 * g).cast()),
                _mm512_cvtepi8_epi32(_mm_loadu_si128(shifts.as_ptr().add(16 * g).cast())),
            )
        };
        let left = _mm512_max_epi32(shift, zero);
        let right = _mm512_max_epi32(_mm512_sub_epi32(zero, shift), zero);
        let x = _mm512_sllv_epi32(sum, left);
        // 64-bit high halves of x · multiplier, even lanes then odd lanes.
        let high = |x: __m512i, m: __m512i| {
            let product = _mm512_mul_epi32(x, m);
            let negative = _mm512_srai_epi64::<63>(product);
            let nudged = _mm512_add_epi64(
                _mm512_add_epi64(product, nudge),
                _mm512_and_si512(negative, below),
            );
            _mm512_srai_epi64::<31>(_mm512_add_epi64(
                nudged,
                _mm512_and_si512(negative, truncate),
            ))
        };
        let even = high(x, multiplier);
        let odd = high(
            _mm512_srli_epi64::<32>(x),
            _mm512_srli_epi64::<32>(multiplier),
        );
        let high = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64::<32>(odd));
        // Rounding divide by 2^right, halves away from zero.
        let mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, right), one);
        let remainder = _mm512_and_si512(high, mask);
        let threshold = _mm512_add_epi32(
            _mm512_srai_epi32::<1>(mask),
            _mm512_and_si512(_mm512_srai_epi32::<31>(high), one),
        );
        let up = _mm512_cmpgt_epi32_mask(remainder, threshold);
        let scaled = _mm512_mask_add_epi32(
            _mm512_srav_epi32(high, right),
            up,
            _mm512_srav_epi32(high, right),
            one,
        );
        let clamped = _mm512_min_epi32(
            _mm512_max_epi32(_mm512_add_epi32(scaled, zero_point), zero),
            top,
        );
        // SAFETY: 16 bytes of `out` at group g (the contract).
        unsafe {
            _mm_storeu_si128(
                out.as_mut_ptr().add(16 * g).cast(),
                _mm512_cvtepi32_epi8(clamped),
            )
        };
    }
    16 * groups
}
