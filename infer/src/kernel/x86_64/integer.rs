//! Full-integer layers: u8 activations times s8 weights in i32 sums (AVX2, or AVX-512 VNNI's
//! VPDPBUSD), and the requantisation of the sums back to u8. Integer sums are exact, so every
//! path gives the portable loop's numbers.

use core::arch::x86_64::*;
use core::sync::atomic::AtomicU8;

use super::{UNKNOWN, avx512_available, cached};

/// AVX-512 VNNI (and BW) on top of [`avx512_available`], for the full-integer dot products.
pub fn vnni_available() -> bool {
    static ANSWER: AtomicU8 = AtomicU8::new(UNKNOWN);
    cached(&ANSWER, || {
        avx512_available() && {
            let leaf7 = __cpuid_count(7, 0);
            leaf7.ebx & (1 << 30) != 0 && leaf7.ecx & (1 << 11) != 0
        }
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
