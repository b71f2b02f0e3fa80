//! Float activations: f16 or int8 weights times f32 inputs, one image ([`f16_columns`],
//! [`int8_columns`]) or several at once ([`rows`]), each lane in the portable loop's order.

use core::arch::x86_64::*;

use super::avx512_available;
use crate::format::{Encoding, LayerBytes};

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
        |column, out| unsafe { block::<8>(input, layer, column, out) },
        // SAFETY: as above.
        |column, out| unsafe { block::<1>(input, layer, column, out) },
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
        |column, out| unsafe { block_int8::<8>(input, layer, column, out) },
        // SAFETY: as above.
        |column, out| unsafe { block_int8::<1>(input, layer, column, out) },
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
/// `wide(column, out)` on runs of 64, then `narrow(column, out)` on runs of 8, then the last
/// 1-7 as one more run of 8 over the layer's last 8 columns, keeping only their lanes (each lane does the same fused
/// multiply-adds in the same order as a column alone, so the bits are the same). In layers
/// narrower than 8, `single(column, value)` takes one output at a time.
#[inline(always)]
fn walk(
    d_out: usize,
    first: usize,
    out: &mut [f32],
    mut wide: impl FnMut(usize, &mut [f32]),
    mut narrow: impl FnMut(usize, &mut [f32]),
    mut single: impl FnMut(usize, &mut f32),
) {
    let mut j = 0;
    while j + 64 <= out.len() {
        wide(first + j, &mut out[j..j + 64]);
        j += 64;
    }
    while j + 8 <= out.len() {
        narrow(first + j, &mut out[j..j + 8]);
        j += 8;
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
    narrow(start, &mut lanes);
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

/// A group kernel: columns `j0 .. j0 + 2·lanes` of `images` images, two registers of `lanes`
/// columns each, for one vector width. [`together`] (AVX2) and [`together_512`] (AVX-512) are
/// this one text with their intrinsics: `splat` a pointed-to f32 into every lane, widen `lanes`
/// int8 weights or convert `lanes` f16 values at a pointer.
macro_rules! together_kernel {
    (
        $(#[$doc:meta])*
        $name:ident, $features:literal, images: $images:expr, lanes: $lanes:expr,
        zero: $zero:path, load: $load:path, store: $store:path, fma: $fma:path,
        splat: |$sp:ident| $splat:expr,
        int8: |$ip:ident| $int8:expr,
        f16: |$fp:ident| $f16:expr $(,)?
    ) => {
        $(#[$doc])*
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn $name(input: &[f32], layer: &LayerBytes<'_>, j0: usize, out: &mut [f32]) {
            let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
            let int8 = layer.encoding == Encoding::Int8;
            let mut acc = [[$zero(); 2]; $images];
            // SAFETY: every pointer read or written below is in bounds by the contract;
            // unaligned.
            unsafe {
                if !int8 {
                    for (b, acc) in acc.iter_mut().enumerate() {
                        for (r, acc) in acc.iter_mut().enumerate() {
                            *acc = $load(out.as_ptr().add(b * d_out + j0 + $lanes * r));
                        }
                    }
                }
                let x = input.as_ptr();
                let (mut row, stride) = if int8 {
                    (layer.weights.as_ptr().add(j0), d_out)
                } else {
                    (layer.weights.as_ptr().add(2 * j0), 2 * d_out)
                };
                for i in 0..d_in {
                    let w = if int8 {
                        [row, row.add($lanes)].map(|$ip| $int8)
                    } else {
                        [row, row.add(2 * $lanes)].map(|$fp| $f16)
                    };
                    for (b, acc) in acc.iter_mut().enumerate() {
                        let xb = {
                            let $sp = x.add(b * d_in + i);
                            $splat
                        };
                        acc[0] = $fma(xb, w[0], acc[0]);
                        acc[1] = $fma(xb, w[1], acc[1]);
                    }
                    row = row.add(stride);
                }
                for (b, acc) in acc.iter().enumerate() {
                    for (r, sum) in acc.iter().enumerate() {
                        let at = j0 + $lanes * r;
                        let value = out.as_mut_ptr().add(b * d_out + at);
                        if int8 {
                            let scale = {
                                let $fp = layer.scales.as_ptr().add(2 * at);
                                $f16
                            };
                            $store(value, $fma(scale, *sum, $load(value)));
                        } else {
                            $store(value, *sum);
                        }
                    }
                }
            }
        }
    };
}

together_kernel! {
    /// [`together`] with AVX-512: columns `j0 .. j0 + 32` of 12 images, two registers of 16
    /// lanes each.
    ///
    /// # Safety
    /// AVX-512F, F16C and FMA; `j0 + 32 <= d_out`; `input` holds 12 rows of `d_in`, `out` 12
    /// rows of `d_out`; the layer's sizes hold.
    together_512, "avx512f,avx2,f16c,fma", images: IMAGES_512, lanes: 16,
    zero: _mm512_setzero_ps, load: _mm512_loadu_ps, store: _mm512_storeu_ps,
    fma: _mm512_fmadd_ps,
    splat: |p| _mm512_set1_ps(*p),
    int8: |p| _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast()))),
    f16: |p| _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())),
}

together_kernel! {
    /// Columns `j0 .. j0 + COLUMNS` of [`IMAGES`] images: `out[b][j] += Σ_i input[b][i] ·
    /// w[i][j]` (f16: accumulating onto `out`, as [`block`]; int8: summing from 0, then
    /// `out + scale · sum`, as [`block_int8`]).
    ///
    /// # Safety
    /// AVX2, F16C and FMA; `j0 + COLUMNS <= d_out`; `input` holds `IMAGES` rows of `d_in`,
    /// `out` `IMAGES` rows of `d_out`; the layer's sizes hold.
    together, "avx2,f16c,fma", images: IMAGES, lanes: 8,
    zero: _mm256_setzero_ps, load: _mm256_loadu_ps, store: _mm256_storeu_ps,
    fma: _mm256_fmadd_ps,
    splat: |p| _mm256_broadcast_ss(&*p),
    int8: |p| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast()))),
    f16: |p| _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
}
