//! The layer kernels: `out[j] += Σ_i input[i] · w[i][j]` over weights stored `[d_in, d_out]`,
//! f16 or int8 with a scale per output, for a range of a layer's outputs (so several threads can
//! share one layer: `team`; an output's value does not depend on the range).
//!
//! One file per architecture: [`portable`] is the definition, and every other path is tested
//! against it bit for bit. Each path accumulates every output in input order with one fused
//! multiply-add per weight, so logits are bit-identical on every target. [`best`] is the one
//! dispatch point: it picks the path (detected at run time on x86-64, no `std` needed) and
//! answers which one runs.

use crate::format::{Encoding, LayerBytes};

pub mod portable;

#[cfg(fmlp_arm_fpu)]
mod cortex_m4f;
#[cfg(target_arch = "x86_64")]
mod x86_64;

/// A way of computing a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// [`portable`]: `libm::fmaf` (one instruction on aarch64), VFMA on a Cortex-M4F.
    Portable,
    /// x86-64 with AVX2, F16C and FMA.
    #[cfg(target_arch = "x86_64")]
    X86Avx2,
    /// Cortex-M4F: VCVTB/VCVTT and VFMA, eight outputs in FPU registers (f16 layers; int8
    /// layers take the portable loop).
    #[cfg(fmlp_arm_fpu)]
    CortexM4f,
}

impl Path {
    /// What the path is, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Path::Portable => "portable (libm fmaf)",
            #[cfg(target_arch = "x86_64")]
            Path::X86Avx2 => "x86-64 AVX2 + F16C + FMA",
            #[cfg(fmlp_arm_fpu)]
            Path::CortexM4f => "Cortex-M4F VCVT + VFMA",
        }
    }
}

/// The fastest path this machine runs.
pub fn best() -> Path {
    #[cfg(fmlp_arm_fpu)]
    {
        Path::CortexM4f
    }
    #[cfg(target_arch = "x86_64")]
    {
        if x86_64::available() {
            return Path::X86Avx2;
        }
    }
    #[cfg(not(fmlp_arm_fpu))]
    {
        Path::Portable
    }
}

/// Adds `input · W[.., first .. first + out.len()]` to `out` for `layer` (as validated by
/// [`crate::ModelFile`]). An f16 layer's outputs sum `x · w`; an int8 layer's sum `x · q` in
/// input order (one rounding per term), then add `scale · sum` in one more fused step.
pub fn columns(input: &[f32], layer: &LayerBytes<'_>, first: usize, out: &mut [f32]) {
    assert_eq!(input.len(), layer.d_in as usize, "the layer's input");
    check_layer(layer);
    assert!(
        first + out.len() <= layer.d_out as usize,
        "columns inside the layer"
    );
    match (best(), layer.encoding) {
        (Path::Portable, Encoding::F16) => portable::f16_columns(input, layer, first, out),
        // SAFETY: `best` found AVX2, F16C and FMA; sizes checked above.
        #[cfg(target_arch = "x86_64")]
        (Path::X86Avx2, Encoding::F16) => unsafe { x86_64::f16_columns(input, layer, first, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        (Path::X86Avx2, Encoding::Int8) => unsafe {
            x86_64::int8_columns(input, layer, first, out)
        },
        #[cfg(fmlp_arm_fpu)]
        (Path::CortexM4f, Encoding::F16) => cortex_m4f::f16_columns(input, layer, first, out),
        (_, Encoding::Int8) => portable::int8_columns(input, layer, first, out),
        (_, Encoding::Int8Full) => unreachable!("full-integer layers take `dots`"),
    }
}

/// Adds `Σ_i input[i] · q[j][i]` to `sums[k]` for the full-integer `layer`'s outputs
/// `j = first + k`: u8 × i8 products summed in i32, exact (`ModelFile` checked that no sum can
/// overflow), so every path gives the same integers whatever its order.
pub fn dots(input: &[u8], layer: &LayerBytes<'_>, first: usize, sums: &mut [i32]) {
    let d_in = layer.d_in as usize;
    assert_eq!(input.len(), d_in, "the layer's input");
    assert_eq!(layer.encoding, Encoding::Int8Full, "a full-integer layer");
    check_layer(layer);
    assert!(
        first + sums.len() <= layer.d_out as usize,
        "outputs inside the layer"
    );
    let weights = &layer.weights[first * d_in..(first + sums.len()) * d_in];
    match best() {
        #[cfg(fmlp_arm_dsp)]
        Path::CortexM4f => cortex_m4f::int8_dots(input, weights, sums),
        // SAFETY: `best` found AVX2; `weights` holds the rows (sliced above).
        #[cfg(target_arch = "x86_64")]
        Path::X86Avx2 => unsafe { x86_64::int8_dots(input, weights, sums) },
        _ => portable::int8_dots(input, weights, sums),
    }
}

/// `out[k] = clamp(zero_point + requantize(sums[k], multiplier[k], shift[k]), 0, 255)` for
/// little-endian i32 `multipliers` and i8 `shifts`, one per sum: a hidden layer's outputs. With
/// AVX-512, sixteen at a time (the same integers).
pub fn requantize_outputs(
    sums: &[i32],
    multipliers: &[u8],
    shifts: &[u8],
    zero_point: u8,
    out: &mut [u8],
) {
    let count = sums.len();
    assert!(multipliers.len() == 4 * count && shifts.len() == count && out.len() == count);
    #[cfg(target_arch = "x86_64")]
    let done = if best() == Path::X86Avx2 && x86_64::avx512_available() {
        // SAFETY: the CPU has AVX-512F; the sizes are checked above.
        unsafe { x86_64::requantize_16(sums, multipliers, shifts, zero_point, out) }
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    let factors = multipliers[4 * done..].chunks_exact(4).zip(&shifts[done..]);
    for ((out, &sum), (multiplier, &shift)) in
        out[done..].iter_mut().zip(&sums[done..]).zip(factors)
    {
        let multiplier =
            i32::from_le_bytes([multiplier[0], multiplier[1], multiplier[2], multiplier[3]]);
        let scaled = requantize(sum, multiplier, shift as i8);
        *out = (i32::from(zero_point) + scaled).clamp(0, 255) as u8;
    }
}

/// [`dots`] for several images: `inputs` holds one row of `d_in` activations per image and
/// `sums` one row of `d_out` sums; each image's sums are the integers [`dots`] gives it. With
/// AVX-512 VNNI and four images or more, each block of four outputs' weights is read once for
/// all the images.
pub fn dot_rows(inputs: &[u8], layer: &LayerBytes<'_>, sums: &mut [i32]) {
    let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
    assert_eq!(layer.encoding, Encoding::Int8Full, "a full-integer layer");
    check_layer(layer);
    let images = sums.len().checked_div(d_out).unwrap_or(0);
    assert_eq!(sums.len(), images * d_out, "whole rows of sums");
    assert_eq!(inputs.len(), images * d_in, "one row of inputs per image");
    #[cfg(target_arch = "x86_64")]
    if images >= 4 && d_in > 0 && best() == Path::X86Avx2 && x86_64::vnni_available() {
        // SAFETY: the CPU has AVX-512 VNNI and BW; the sizes are checked above.
        return unsafe { x86_64::dot_rows_vnni(inputs, layer.weights, d_out, sums) };
    }
    for (input, row) in inputs
        .chunks_exact(d_in.max(1))
        .zip(sums.chunks_exact_mut(d_out))
    {
        dots(&input[..d_in], layer, 0, row);
    }
}

/// `round(sum · multiplier · 2^(shift - 31))` in fixed point, exactly as TFLite's
/// `MultiplyByQuantizedMultiplier` computes it (gemmlowp's saturating rounding doubling high
/// multiply, then a rounding right shift): the same integers on every target. Branch-free; the
/// multiply cannot saturate because `ModelFile` holds multipliers to `[2^30, 2^31)`.
#[inline]
pub fn requantize(sum: i32, multiplier: i32, shift: i8) -> i32 {
    let (left, right) = (shift.max(0) as u32, (-shift).max(0) as u32);
    let product = i64::from(sum.wrapping_shl(left)) * i64::from(multiplier);
    // All ones when the product is negative.
    let negative = product >> 63;
    // Nudge by 2^30 (1 - 2^30 below zero), then divide by 2^31 truncating towards zero.
    let nudged = product + (1 << 30) + (negative & (1 - (1i64 << 31)));
    let high = ((nudged + (negative & ((1i64 << 31) - 1))) >> 31) as i32;
    // Rounding divide by 2^right, halves away from zero (right = 0: the mask is 0, no change).
    let mask = ((1i64 << right) - 1) as i32;
    let threshold = (mask >> 1) + (high >> 31 & 1);
    (high >> right) + i32::from((high & mask) > threshold)
}

/// [`columns`] for several images at once, all of a layer's outputs: `outs` holds one row of
/// `d_out` values per image and `inputs` one row of `d_in`. Every output takes the same fused
/// multiply-adds in the same order as [`columns`] gives it, so the bits are the same; the x86-64
/// path streams the weights once per four images instead of once per image.
pub fn rows(inputs: &[f32], layer: &LayerBytes<'_>, outs: &mut [f32]) {
    let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
    check_layer(layer);
    let images = outs.len().checked_div(d_out).unwrap_or(0);
    assert_eq!(outs.len(), images * d_out, "whole rows of outputs");
    assert_eq!(inputs.len(), images * d_in, "one row of inputs per image");
    match best() {
        // SAFETY: `best` found AVX2, F16C and FMA; sizes checked above.
        #[cfg(target_arch = "x86_64")]
        Path::X86Avx2 => unsafe { x86_64::rows(inputs, layer, outs, images) },
        _ => {
            for (input, out) in inputs
                .chunks_exact(d_in.max(1))
                .zip(outs.chunks_exact_mut(d_out))
            {
                columns(&input[..d_in], layer, 0, out);
            }
        }
    }
}

/// Which path [`rows`] takes on this machine, for reports.
pub fn rows_name() -> &'static str {
    match best() {
        #[cfg(target_arch = "x86_64")]
        Path::X86Avx2 if x86_64::avx512_available() => {
            "x86-64 AVX-512F + F16C, 12 images x 32 columns at a time"
        }
        #[cfg(target_arch = "x86_64")]
        Path::X86Avx2 => "x86-64 AVX2 + F16C + FMA, 6 images x 16 columns at a time",
        other => other.name(),
    }
}

/// Which path [`dots`] and [`dot_rows`] take on this machine, for reports.
pub fn integer_name() -> &'static str {
    match best() {
        #[cfg(target_arch = "x86_64")]
        Path::X86Avx2 if x86_64::vnni_available() => {
            "x86-64 AVX-512 VNNI (VPDPBUSD), 4 outputs x 4 images at a time in batches"
        }
        #[cfg(target_arch = "x86_64")]
        Path::X86Avx2 => "x86-64 AVX2 (VPMOVZXBW, VPMOVSXBW + VPMADDWD), 4 outputs at a time",
        #[cfg(fmlp_arm_dsp)]
        Path::CortexM4f => "Cortex-M4 DSP (UXTB16, SXTB16 + SMLAD), 2 outputs at a time",
        _ => "portable (i32 sums)",
    }
}

/// What the kernels rely on, which [`crate::ModelFile`] validated: the weights and scales hold
/// exactly what the sizes need.
fn check_layer(layer: &LayerBytes<'_>) {
    let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
    let bytes_per_weight = match layer.encoding {
        Encoding::F16 => 2,
        Encoding::Int8 | Encoding::Int8Full => 1,
    };
    assert_eq!(
        layer.weights.len(),
        bytes_per_weight * d_in * d_out,
        "validated by ModelFile"
    );
    assert!(
        layer.encoding != Encoding::Int8 || layer.scales.len() == 2 * d_out,
        "validated by ModelFile"
    );
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

    /// Signed bytes covering -128..=127.
    fn bytes(count: usize) -> std::vec::Vec<u8> {
        (0..count).map(|k| (k * 37 % 251) as u8).collect()
    }

    /// A layer of `encoding` over the given bytes.
    fn layer<'a>(
        encoding: Encoding,
        d_in: usize,
        d_out: usize,
        weights: &'a [u8],
        scales: &'a [u8],
    ) -> LayerBytes<'a> {
        LayerBytes {
            d_in: d_in as u32,
            d_out: d_out as u32,
            encoding,
            weights,
            scales,
            bias: &[],
        }
    }

    /// Runs [`columns`] and the portable loop of `encoding` on the same input and bias for
    /// layers of every block size and remainder, their bytes at an odd offset like postcard's,
    /// and requires the same bits.
    fn assert_bit_identical(encoding: Encoding) {
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
            let seed = (d_in * 31 + d_out) as u32;
            let stored = match encoding {
                Encoding::F16 => weights(d_in * d_out, seed),
                Encoding::Int8 => bytes(d_in * d_out),
                Encoding::Int8Full => unreachable!("float encodings only"),
            };
            let mut at_odd_offset = std::vec![0u8];
            at_odd_offset.extend(stored);
            let scales = weights(d_out, d_out as u32 + 5);
            let scales = if encoding == Encoding::Int8 {
                &scales[..]
            } else {
                &[]
            };
            let layer = layer(encoding, d_in, d_out, &at_odd_offset[1..], scales);
            let input: std::vec::Vec<f32> = (0..d_in)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let bias: std::vec::Vec<f32> = (0..d_out).map(|j| j as f32 * 0.01 - 0.3).collect();
            let (mut got, mut expected) = (bias.clone(), bias);
            columns(&input, &layer, 0, &mut got);
            match encoding {
                Encoding::F16 => portable::f16_columns(&input, &layer, 0, &mut expected),
                Encoding::Int8 => portable::int8_columns(&input, &layer, 0, &mut expected),
                Encoding::Int8Full => unreachable!("float encodings only"),
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<std::vec::Vec<_>>();
            assert_eq!(
                bits(&got),
                bits(&expected),
                "{encoding:?} {d_in}x{d_out} via {}",
                best().name()
            );
        }
    }

    #[test]
    fn dispatched_kernel_is_bit_identical_to_the_portable_loop() {
        assert_bit_identical(Encoding::F16);
    }

    #[test]
    fn dispatched_int8_kernel_is_bit_identical_to_the_portable_loop() {
        assert_bit_identical(Encoding::Int8);
    }

    #[test]
    fn rows_of_images_are_bit_identical_to_the_portable_loop_on_each() {
        for encoding in [Encoding::F16, Encoding::Int8] {
            for (d_in, d_out) in [(784, 512), (130, 137), (33, 10), (7, 16), (5, 3), (0, 9)] {
                let seed = (d_in * 17 + d_out) as u32;
                let stored = match encoding {
                    Encoding::F16 => weights(d_in * d_out, seed),
                    Encoding::Int8 => bytes(d_in * d_out),
                    Encoding::Int8Full => unreachable!("float encodings only"),
                };
                let mut at_odd_offset = std::vec![0u8];
                at_odd_offset.extend(stored);
                let scales = weights(d_out, seed + 1);
                let scales = if encoding == Encoding::Int8 {
                    &scales[..]
                } else {
                    &[]
                };
                let layer = layer(encoding, d_in, d_out, &at_odd_offset[1..], scales);
                for images in [1, 5, 6, 7, 12, 13, 19, 25] {
                    let inputs: std::vec::Vec<f32> = (0..images * d_in)
                        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                        .collect();
                    let start: std::vec::Vec<f32> = (0..images * d_out)
                        .map(|j| (j % 29) as f32 * 0.01)
                        .collect();
                    let mut got = start.clone();
                    rows(&inputs, &layer, &mut got);
                    for b in 0..images {
                        let mut expected = start[b * d_out..(b + 1) * d_out].to_vec();
                        let input = &inputs[b * d_in..(b + 1) * d_in];
                        match encoding {
                            Encoding::F16 => portable::f16_columns(input, &layer, 0, &mut expected),
                            Encoding::Int8 => {
                                portable::int8_columns(input, &layer, 0, &mut expected)
                            }
                            Encoding::Int8Full => unreachable!("float encodings only"),
                        }
                        let got = &got[b * d_out..(b + 1) * d_out];
                        assert!(
                            got.iter()
                                .zip(&expected)
                                .all(|(g, e)| g.to_bits() == e.to_bits()),
                            "{encoding:?} {d_in}x{d_out}, {images} images, image {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_range_of_columns_is_those_columns_of_the_whole_layer() {
        let (d_in, d_out) = (130, 137);
        let (f16, int8, scales) = (
            weights(d_in * d_out, 9),
            bytes(d_in * d_out),
            weights(d_out, 4),
        );
        let layers = [
            layer(Encoding::F16, d_in, d_out, &f16, &[]),
            layer(Encoding::Int8, d_in, d_out, &int8, &scales),
        ];
        let input: std::vec::Vec<f32> = (0..d_in).map(|i| (i % 13) as f32 - 6.0).collect();
        for layer in &layers {
            let mut whole = std::vec![0.5f32; d_out];
            columns(&input, layer, 0, &mut whole);
            for (first, width) in [(0, 137), (16, 64), (17, 71), (100, 37), (136, 1), (5, 0)] {
                let range = first..first + width;
                let mut part = std::vec![0.5f32; width];
                columns(&input, layer, first, &mut part);
                assert_eq!(part, whole[range.clone()], "{:?} {range:?}", layer.encoding);
                let mut portable = std::vec![0.5f32; width];
                match layer.encoding {
                    Encoding::F16 => portable::f16_columns(&input, layer, first, &mut portable),
                    Encoding::Int8 => portable::int8_columns(&input, layer, first, &mut portable),
                    Encoding::Int8Full => unreachable!("float encodings only"),
                }
                assert_eq!(portable, part, "portable {:?} {range:?}", layer.encoding);
            }
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
        columns(
            &[2.0, 1.0],
            &layer(Encoding::Int8, 2, 2, &weights, &scales),
            0,
            &mut out,
        );
        assert_eq!(out, [1.0 + 0.5 * (-2.0 + 127.0), 2.0 * (6.0 - 128.0)]);
    }

    #[test]
    fn portable_loop_rounds_once_per_weight() {
        // (1 + 2^-15)(1 + 2^-10) = 1 + 2^-10 + 2^-15 + 2^-25: the last bit only survives when
        // the product is not rounded before the add.
        let x = 1.0 + 2f32.powi(-15);
        let w = half::f16::from_f32(1.0 + 2f32.powi(-10)).to_le_bytes();
        let mut out = [-(1.0 + 2f32.powi(-10) + 2f32.powi(-15))];
        portable::f16_columns(&[x], &layer(Encoding::F16, 1, 1, &w, &[]), 0, &mut out);
        assert_eq!(out[0], 2f32.powi(-25));
    }

    /// TFLite's reference `MultiplyByQuantizedMultiplier` in wide arithmetic: round half away
    /// from zero of `sum · multiplier / 2^(31 - shift)`, after gemmlowp's two roundings.
    fn requantize_by_definition(sum: i32, multiplier: i32, shift: i8) -> i32 {
        let x = i64::from(sum) << shift.max(0);
        let product = i128::from(x) * i128::from(multiplier);
        let nudge = if product >= 0 {
            1i128 << 30
        } else {
            1 - (1i128 << 30)
        };
        let high = ((product + nudge) / (1i128 << 31)) as i64;
        let right = (-i32::from(shift)).max(0);
        if right == 0 {
            return high as i32;
        }
        let divisor = 1i64 << right;
        let (quotient, remainder) = (high.div_euclid(divisor), high.rem_euclid(divisor));
        let threshold = divisor / 2 - 1 + i64::from(high < 0);
        (quotient + i64::from(remainder > threshold)) as i32
    }

    /// A stream of pseudo-random u32 from `seed` (a 64-bit LCG's top bits).
    fn numbers(mut seed: u64) -> impl FnMut() -> u32 {
        move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as u32
        }
    }

    #[test]
    fn requantize_is_tflites_fixed_point_multiply() {
        let mut next = numbers(7);
        for _ in 0..200_000 {
            let sum = (next() as i32) >> (next() % 24);
            let multiplier = (1 << 30) + (next() as i32 & ((1 << 30) - 1));
            let shift = (next() % 20) as i8 - 16;
            if shift > 0 && (i64::from(sum) << shift) != i64::from(sum.wrapping_shl(shift as u32)) {
                continue; // TFLite requires the left shift not to overflow
            }
            assert_eq!(
                requantize(sum, multiplier, shift),
                requantize_by_definition(sum, multiplier, shift),
                "{sum} x {multiplier} shift {shift}"
            );
        }
        // gemmlowp's high multiply takes a positive half up and a negative one towards zero
        // (1.5 -> 2, -1.5 -> -1); the right shift takes halves away from zero (1.5 -> 2).
        assert_eq!(requantize(3, 1 << 30, 0), 2);
        assert_eq!(requantize(-3, 1 << 30, 0), -1);
        assert_eq!(requantize(5, 1 << 30, -1), 2); // 2.5 -> 3, then 1.5 -> 2
        assert_eq!(requantize(-5, 1 << 30, -1), -1); // -2.5 -> -2, then -1
    }

    /// `bytes` after one byte, so a slice from 1 starts at an odd offset, as postcard leaves it.
    fn at_odd_offset(bytes: &[u8]) -> std::vec::Vec<u8> {
        let mut stored = std::vec![0u8];
        stored.extend(bytes);
        stored
    }

    /// A full-integer layer of `weights` (`d_out` rows of `d_in`), no biases or scales.
    fn integer_layer(weights: &[u8], d_in: usize, d_out: usize) -> LayerBytes<'_> {
        LayerBytes {
            d_in: d_in as u32,
            d_out: d_out as u32,
            encoding: Encoding::Int8Full,
            weights,
            scales: &[],
            bias: &[],
        }
    }

    #[test]
    fn dots_are_the_plain_integer_dot_products() {
        for (d_in, d_out) in [(784, 13), (5, 3), (130, 2), (3, 1)] {
            let q: std::vec::Vec<u8> = (0..d_in * d_out).map(|i| (i * 89 % 256) as u8).collect();
            let stored = at_odd_offset(&q);
            let layer = integer_layer(&stored[1..], d_in, d_out);
            let input: std::vec::Vec<u8> = (0..d_in).map(|i| (i * 37 % 256) as u8).collect();
            for first in [0, d_out / 2] {
                let mut sums = std::vec![5i32; d_out - first];
                dots(&input, &layer, first, &mut sums);
                for (k, &sum) in sums.iter().enumerate() {
                    let j = first + k;
                    let want: i32 = (0..d_in)
                        .map(|i| i32::from(input[i]) * i32::from(q[j * d_in + i] as i8))
                        .sum();
                    assert_eq!(sum, 5 + want, "{d_in}x{d_out} output {j}");
                }
            }
        }
    }

    /// The AVX2 dot products, which CPUs with AVX-512 VNNI skip, against the portable loop.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_dots_are_the_portable_integers() {
        if !x86_64::available() {
            return;
        }
        for (d_in, d_out) in [(784, 13), (70, 8), (17, 5), (3, 2)] {
            let q: std::vec::Vec<u8> = (0..d_in * d_out).map(|i| (i * 61 % 256) as u8).collect();
            let input: std::vec::Vec<u8> = (0..d_in).map(|i| (i * 29 % 256) as u8).collect();
            let (mut got, mut want) = (std::vec![3i32; d_out], std::vec![3i32; d_out]);
            // SAFETY: AVX2 is there; `q` holds d_out rows of d_in bytes.
            unsafe { x86_64::dots_avx2(&input, &q, &mut got) };
            portable::int8_dots(&input, &q, &mut want);
            assert_eq!(got, want, "{d_in}x{d_out}");
        }
    }

    #[test]
    fn rows_of_images_get_the_integers_each_gets_alone() {
        for (d_in, d_out) in [(784, 13), (70, 8), (130, 5), (1, 3)] {
            let q: std::vec::Vec<u8> = (0..d_in * d_out).map(|i| (i * 61 % 256) as u8).collect();
            let stored = at_odd_offset(&q);
            let layer = integer_layer(&stored[1..], d_in, d_out);
            for images in [1, 3, 4, 5, 8, 9] {
                let inputs: std::vec::Vec<u8> =
                    (0..images * d_in).map(|i| (i * 29 % 256) as u8).collect();
                let start: std::vec::Vec<i32> = (0..images * d_out).map(|i| i as i32 - 7).collect();
                let mut got = start.clone();
                dot_rows(&inputs, &layer, &mut got);
                for b in 0..images {
                    let mut want = start[b * d_out..(b + 1) * d_out].to_vec();
                    portable::int8_dots(
                        &inputs[b * d_in..(b + 1) * d_in],
                        layer.weights,
                        &mut want,
                    );
                    assert_eq!(
                        &got[b * d_out..(b + 1) * d_out],
                        &want[..],
                        "{d_in}x{d_out}, {images} images, image {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn requantized_outputs_are_requantize_clamped_on_each() {
        let mut next = numbers(11);
        for count in [0, 1, 15, 16, 37, 300] {
            let sums: std::vec::Vec<i32> = (0..count)
                .map(|_| (next() as i32) >> (next() % 31))
                .collect();
            let multipliers: std::vec::Vec<i32> = (0..count)
                .map(|_| (1 << 30) + (next() as i32 & ((1 << 30) - 1)))
                .collect();
            let shifts: std::vec::Vec<u8> = (0..count)
                .map(|_| ((next() % 40) as i8 - 31) as u8)
                .collect();
            let bytes: std::vec::Vec<u8> =
                multipliers.iter().flat_map(|m| m.to_le_bytes()).collect();
            for zero_point in [0u8, 7, 200] {
                let mut got = std::vec![0u8; count];
                requantize_outputs(&sums, &bytes, &shifts, zero_point, &mut got);
                for k in 0..count {
                    let scaled = requantize(sums[k], multipliers[k], shifts[k] as i8);
                    let want = (i32::from(zero_point) + scaled).clamp(0, 255) as u8;
                    assert_eq!(
                        got[k], want,
                        "{count} outputs, output {k}, zero point {zero_point}"
                    );
                }
            }
        }
    }
}
