//! Matrix products through the `gemm` crate, with strides instead of transposed copies, their
//! columns shared out between rayon's threads.

use rayon::prelude::*;

/// An operand of [`product`]: values and the strides (in elements) between rows and between
/// columns of the matrix it stands for, so a transpose is a swap of strides, not a copy.
#[derive(Clone, Copy)]
pub(super) struct Operand<'a> {
    values: &'a [f32],
    row_stride: usize,
    column_stride: usize,
}

impl<'a> Operand<'a> {
    pub(super) fn plain(values: &'a [f32], columns: usize) -> Self {
        Self {
            values,
            row_stride: columns,
            column_stride: 1,
        }
    }

    /// The transpose of a row-major matrix with `columns` columns.
    pub(super) fn transposed(values: &'a [f32], columns: usize) -> Self {
        Self {
            values,
            row_stride: 1,
            column_stride: columns,
        }
    }
}

/// The product the layers make, `a (m × k) · b (k × n)` as a new row-major buffer with its
/// columns shared out between rayon's threads, each operand given as its values and its strides
/// between rows and between columns: for `benches/products.rs`, which times a step's products
/// with it.
pub fn strided_product(
    (m, n, k): (usize, usize, usize),
    (a, (a_rows, a_columns)): (&[f32], (usize, usize)),
    (b, (b_rows, b_columns)): (&[f32], (usize, usize)),
) -> Vec<f32> {
    let operand = |values, row_stride, column_stride| Operand {
        values,
        row_stride,
        column_stride,
    };
    let (a, b) = (operand(a, a_rows, a_columns), operand(b, b_rows, b_columns));
    product(m, n, k, a, b, Threads::Share)
}

/// The transpose of a row-major `rows × columns` matrix, as a new row-major `columns × rows` one:
/// 8 × 8 blocks through AVX registers when the CPU has them, in 16 × 16 tiles that read and write
/// whole cache lines; the rest (and every value without AVX) one at a time.
pub(super) fn transpose(values: &[f32], rows: usize, columns: usize) -> Vec<f32> {
    assert_eq!(values.len(), rows * columns);
    let mut out = Vec::with_capacity(rows * columns);
    let at = out.spare_capacity_mut();
    let mut blocks = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx") {
        blocks = (rows / 8 * 8, columns / 8 * 8);
        // SAFETY: the CPU has AVX; `at` has room for the `rows × columns` values `values` holds.
        unsafe { transpose_blocks(values, (rows, columns), blocks, at.as_mut_ptr().cast()) };
    }
    for r in 0..rows {
        let first = if r < blocks.0 { blocks.1 } else { 0 };
        for c in first..columns {
            at[c * rows + r].write(values[r * columns + c]);
        }
    }
    // SAFETY: the blocks wrote rows `..blocks.0` of columns `..blocks.1`, the loop the rest.
    unsafe { out.set_len(rows * columns) };
    out
}

/// [`transpose`]'s 8 × 8 blocks over the first `block_rows` rows and `block_columns` columns
/// (multiples of 8) into `out`.
///
/// # Safety
/// The CPU has AVX; `values` holds `rows × columns` values and `out` has room for as many;
/// `block_rows <= rows` and `block_columns <= columns`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
pub(super) unsafe fn transpose_blocks(
    values: &[f32],
    (rows, columns): (usize, usize),
    (block_rows, block_columns): (usize, usize),
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    let from = values.as_ptr();
    // Rows `r0 .. r0 + 8` and columns `c0 .. c0 + 8`, inside both matrices by the contract.
    let block = |r0: usize, c0: usize| {
        // SAFETY: each row and column read or written is inside its matrix (above).
        unsafe {
            let row = |i: usize| _mm256_loadu_ps(from.add((r0 + i) * columns + c0));
            let pairs = |i: usize| {
                let (a, b) = (row(i), row(i + 1));
                (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b))
            };
            let ((t0, t1), (t2, t3)) = (pairs(0), pairs(2));
            let ((t4, t5), (t6, t7)) = (pairs(4), pairs(6));
            let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let store = |j: usize, v| _mm256_storeu_ps(out.add((c0 + j) * rows + r0), v);
            store(0, _mm256_permute2f128_ps::<0x20>(s0, s4));
            store(1, _mm256_permute2f128_ps::<0x20>(s1, s5));
            store(2, _mm256_permute2f128_ps::<0x20>(s2, s6));
            store(3, _mm256_permute2f128_ps::<0x20>(s3, s7));
            store(4, _mm256_permute2f128_ps::<0x31>(s0, s4));
            store(5, _mm256_permute2f128_ps::<0x31>(s1, s5));
            store(6, _mm256_permute2f128_ps::<0x31>(s2, s6));
            store(7, _mm256_permute2f128_ps::<0x31>(s3, s7));
        }
    };
    // 16 × 16 tiles, so each reads 16 whole cache lines and writes 16: in 8 × 8 blocks taken
    // column-wise alone, rows 2 KiB apart share two of L1's sets and each line was read twice.
    for c0 in (0..block_columns).step_by(16) {
        for r0 in (0..block_rows).step_by(16) {
            for (r, c) in [(r0, c0), (r0, c0 + 8), (r0 + 8, c0), (r0 + 8, c0 + 8)] {
                if r < block_rows && c < block_columns {
                    block(r, c);
                }
            }
        }
    }
}

/// Whether a product shares out its columns between rayon's threads, or runs on this one (as
/// when it runs beside another product).
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Threads {
    Share,
    One,
}

/// `a (m × k) · b (k × n)` as a new row-major buffer, written once by the product (no zero
/// fill first).
pub(super) fn product(
    m: usize,
    n: usize,
    k: usize,
    a: Operand,
    b: Operand,
    threads: Threads,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(m * n);
    let at = out.as_mut_ptr() as usize;
    in_column_runs(n, m * n * k, threads, |first, count| {
        // SAFETY: the buffer has room for m × n values, and each run is given to one task: with
        // `accumulate` off the product writes every value of its columns and reads none.
        unsafe { product_columns(at as *mut f32, (m, n, k), a, b, false, first, count) }
    });
    // SAFETY: the runs cover every column, so every value is written.
    unsafe { out.set_len(m * n) };
    out
}

/// Calls `run(first, count)` for runs of the `n` columns of a product of `work` multiply-adds
/// that cover them once. With [`Threads::Share`] and a large product, each of rayon's threads
/// takes a run (measured faster than gemm's own split on these shapes: 190 against 144 GFLOP/s
/// for 128×784·784×512 on 2 cores); otherwise one run takes them all, on this thread.
pub(super) fn in_column_runs(
    n: usize,
    work: usize,
    threads: Threads,
    run: impl Fn(usize, usize) + Sync,
) {
    let workers = match threads {
        Threads::Share if work >= 1 << 20 => rayon::current_num_threads().min(n / 16).max(1),
        _ => 1,
    };
    // Runs of whole 16-column groups (the AVX-512 kernels' width).
    let length = n.div_ceil(workers).next_multiple_of(16).min(n.max(1));
    if workers > 1 {
        (0..n)
            .into_par_iter()
            .step_by(length)
            .for_each(|first| run(first, length.min(n - first)));
    } else if n > 0 {
        run(0, n);
    }
}

/// Columns `first .. first + count` of the product `a (m × k) · b (k × n)` into `out` (m × n,
/// row-major), added to `out`'s values when `accumulate`.
///
/// # Safety
/// `out` is valid for writing those columns of its m rows (and for reading them when
/// `accumulate`), and no one else accesses them meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn product_columns(
    out: *mut f32,
    (m, n, k): (usize, usize, usize),
    a: Operand,
    b: Operand,
    accumulate: bool,
    first: usize,
    count: usize,
) {
    assert!(first + count <= n);
    assert!(
        m == 0 || k == 0 || a.values.len() > (m - 1) * a.row_stride + (k - 1) * a.column_stride
    );
    assert!(
        n == 0 || k == 0 || b.values.len() > (k - 1) * b.row_stride + (n - 1) * b.column_stride
    );
    // SAFETY: columns `first .. first + count` of every row of `out` and of `b` are inside them
    // (asserted above; `out` by the contract).
    unsafe {
        gemm::gemm(
            m,
            count,
            k,
            out.add(first),
            1,
            n as isize,
            accumulate,
            a.values.as_ptr(),
            a.column_stride as isize,
            a.row_stride as isize,
            b.values.as_ptr().add(first * b.column_stride),
            b.column_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
