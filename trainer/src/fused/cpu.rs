//! The fused operations on the CPU backends' tensors (`tensors`). Matrix products go through the
//! `gemm` crate (burn-flex's: AVX-512, AVX2+FMA or portable kernels chosen at run time, threads
//! from rayon's pool) with strides instead of transposed copies; element-wise passes are split
//! over rayon's threads too.

use burn::backend::NdArray;
#[cfg(feature = "flex")]
use burn::backend::flex::Flex;
use burn::backend::tensor::FloatTensor;
use rayon::prelude::*;

use super::tensors::{Buffer, CpuBackend};
use super::{Act, Firsts, FusedOps, StepCoefficients};

/// A row-major matrix: its values and its shape.
#[derive(Debug, Clone)]
pub(super) struct Matrix {
    pub values: Buffer,
    pub rows: usize,
    pub columns: usize,
}

impl Matrix {
    /// A rank-2 tensor's values, in place when they are row-major and contiguous.
    pub fn of<B: CpuBackend>(tensor: FloatTensor<B>) -> Self {
        let values = B::buffer(tensor);
        let &[rows, columns] = values.shape.as_slice() else {
            panic!("a rank-2 tensor, not {:?}", values.shape);
        };
        Self {
            values,
            rows,
            columns,
        }
    }

    fn new(values: Vec<f32>, rows: usize, columns: usize) -> Self {
        Self {
            values: Buffer::owned(values, &[rows, columns]),
            rows,
            columns,
        }
    }

    pub fn slice(&self) -> &[f32] {
        self.values.slice()
    }

    pub fn tensor<B: CpuBackend>(self) -> FloatTensor<B> {
        B::tensor(self.values)
    }
}

/// A rank-1 tensor of `values`.
pub(super) fn vector<B: CpuBackend>(values: Vec<f32>) -> FloatTensor<B> {
    let len = values.len();
    B::tensor(Buffer::owned(values, &[len]))
}

/// The scalar of a `[1]` tensor.
pub(super) fn scalar<B: CpuBackend>(tensor: FloatTensor<B>) -> f32 {
    let values = B::buffer(tensor);
    *values.slice().first().expect("a one-value tensor")
}

/// An operand of [`product`]: values and the strides (in elements) between rows and between
/// columns of the matrix it stands for, so a transpose is a swap of strides, not a copy.
#[derive(Clone, Copy)]
struct Operand<'a> {
    values: &'a [f32],
    row_stride: usize,
    column_stride: usize,
}

impl<'a> Operand<'a> {
    fn plain(values: &'a [f32], columns: usize) -> Self {
        Self {
            values,
            row_stride: columns,
            column_stride: 1,
        }
    }

    /// The transpose of a row-major matrix with `columns` columns.
    fn transposed(values: &'a [f32], columns: usize) -> Self {
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
fn transpose(values: &[f32], rows: usize, columns: usize) -> Vec<f32> {
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
unsafe fn transpose_blocks(
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
enum Threads {
    Share,
    One,
}

/// `a (m × k) · b (k × n)` as a new row-major buffer, written once by the product (no zero
/// fill first).
fn product(m: usize, n: usize, k: usize, a: Operand, b: Operand, threads: Threads) -> Vec<f32> {
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
fn in_column_runs(n: usize, work: usize, threads: Threads, run: impl Fn(usize, usize) + Sync) {
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
unsafe fn product_columns(
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

/// `v`, or 0 when it is subnormal. Every operand of a matrix product passes through here (the
/// activations, `δz`, the weights), because a subnormal operand makes the SIMD kernels take a
/// microcode assist per multiply, 100 times slower (a softmax saturating in a confident model
/// gives them). Values below 1.2e-38 do not matter to the model.
#[inline]
fn flush_subnormal(v: f32) -> f32 {
    if v.abs() < f32::MIN_POSITIVE { 0.0 } else { v }
}

/// Values an element-wise task takes: enough to amortise handing it to another thread, few
/// enough to share the passes over a layer of 64k values between 2-4 cores.
const TASK: usize = 16_384;

/// The values of a task of a pass over rows of `row` values: whole rows, about [`TASK`].
fn piece(row: usize) -> usize {
    (TASK / row.max(1)).max(1) * row.max(1)
}

/// Calls `$body` with `$f` bound to `$activation`'s function as a closure of its own type, so
/// each activation's loop is compiled (and vectorised) for it alone rather than matching the
/// kind at every value.
macro_rules! with_activation {
    ($activation:expr, |$f:ident| $body:expr) => {{
        use infer::{Activation, ActivationKind as Kind};
        let alpha = $activation.alpha;
        match $activation.kind {
            Kind::Identity => {
                let $f = |v: f32| v;
                $body
            }
            Kind::Step => {
                let $f = |v: f32| Activation::Step.apply(0, v);
                $body
            }
            Kind::Logistic => {
                let $f = |v: f32| Activation::Logistic.apply(0, v);
                $body
            }
            Kind::Tanh => {
                let $f = |v: f32| Activation::Tanh.apply(0, v);
                $body
            }
            Kind::Arctan => {
                let $f = |v: f32| Activation::Arctan.apply(0, v);
                $body
            }
            Kind::Relu => {
                let $f = |v: f32| if v < 0.0 { 0.0 } else { v };
                $body
            }
            Kind::Prelu => {
                let prelu = Activation::new(Kind::Prelu, &[alpha]);
                let $f = |v: f32| prelu.apply(0, v);
                $body
            }
            Kind::Elu => {
                let $f = |v: f32| Activation::Elu { alpha }.apply(0, v);
                $body
            }
            Kind::Softplus => {
                let $f = |v: f32| Activation::Softplus.apply(0, v);
                $body
            }
        }
    }};
}

/// Calls `$body` with `$d` bound to f' of `$activation` (the analytic derivatives of
/// `trainer::activation`: the right-hand one at the kinks, 0 for `step`) as a closure of its own
/// type, like [`with_activation`].
macro_rules! with_derivative {
    ($activation:expr, |$d:ident| $body:expr) => {{
        use infer::ActivationKind as Kind;
        let alpha = $activation.alpha;
        match $activation.kind {
            Kind::Identity => {
                let $d = |_: f32| 1.0;
                $body
            }
            Kind::Step => {
                let $d = |_: f32| 0.0;
                $body
            }
            Kind::Logistic => {
                let $d = |z: f32| {
                    let e = (-z.abs()).exp();
                    e / ((e + 1.0) * (e + 1.0))
                };
                $body
            }
            Kind::Softplus => {
                let $d = |z: f32| {
                    let e = (-z.abs()).exp();
                    (if z >= 0.0 { 1.0 } else { e }) / (1.0 + e)
                };
                $body
            }
            Kind::Tanh => {
                let $d = |z: f32| {
                    let e2 = (-2.0 * z.abs()).exp();
                    4.0 * e2 / ((e2 + 1.0) * (e2 + 1.0))
                };
                $body
            }
            Kind::Arctan => {
                let $d = |z: f32| 1.0 / (z * z + 1.0);
                $body
            }
            Kind::Relu => {
                let $d = |z: f32| if z < 0.0 { 0.0 } else { 1.0 };
                $body
            }
            Kind::Prelu => {
                let $d = |z: f32| if z < 0.0 { alpha } else { 1.0 };
                $body
            }
            Kind::Elu => {
                let $d = |z: f32| if z < 0.0 { alpha * z.exp() } else { 1.0 };
                $body
            }
        }
    }};
}

/// A dense layer's forward pass: the pre-activation `z = x·W + b` (which the backward step
/// keeps) and `f(z)`, as `infer` computes it. Each run of columns, on the thread that takes it,
/// starts from the bias, adds the product, and applies `f` while the values are in its cache.
pub(super) fn dense_forward(
    x: &Matrix,
    weight: &Matrix,
    bias: &[f32],
    activation: Act,
) -> (Matrix, Matrix) {
    let (n, d_in, d_out) = (x.rows, x.columns, weight.columns);
    assert_eq!(weight.rows, d_in, "x·W needs x's columns to be W's rows");
    assert_eq!(bias.len(), d_out, "one bias per output");
    // Written once each, by the runs (no zero fill first).
    let (mut z, mut a) = (Vec::with_capacity(n * d_out), Vec::with_capacity(n * d_out));
    let (z_at, a_at) = (z.as_mut_ptr() as usize, a.as_mut_ptr() as usize);
    let (x_operand, w_operand) = (
        Operand::plain(x.slice(), d_in),
        Operand::plain(weight.slice(), d_out),
    );
    with_activation!(activation, |f| in_column_runs(
        d_out,
        n * d_out * d_in,
        Threads::Share,
        |first, count| {
            let (z_at, a_at) = (z_at as *mut f32, a_at as *mut f32);
            // SAFETY: columns `first .. first + count` of each of the n rows of the two buffers
            // of n × d_out values are this run's alone; z's are written (the bias) before the
            // product adds to them and before they are read.
            unsafe {
                for row in 0..n {
                    let at = row * d_out + first;
                    std::ptr::copy_nonoverlapping(bias.as_ptr().add(first), z_at.add(at), count);
                }
                let shape = (n, d_out, d_in);
                product_columns(z_at, shape, x_operand, w_operand, true, first, count);
                for row in 0..n {
                    let at = row * d_out + first;
                    let z_row = std::slice::from_raw_parts(z_at.add(at), count);
                    let a_row = std::slice::from_raw_parts_mut(
                        a_at.add(at).cast::<std::mem::MaybeUninit<f32>>(),
                        count,
                    );
                    for (a, &z) in a_row.iter_mut().zip(z_row) {
                        a.write(flush_subnormal(f(z)));
                    }
                }
            }
        }
    ));
    // SAFETY: the runs cover every column of every row of both buffers.
    unsafe {
        z.set_len(n * d_out);
        a.set_len(n * d_out);
    }
    (Matrix::new(z, n, d_out), Matrix::new(a, n, d_out))
}

/// A dense layer's gradients.
pub(super) struct DenseGradients {
    /// `∂x = δz·Wᵀ`, when asked for.
    pub x: Option<Matrix>,
    /// `∂W = xᵀ·δz`.
    pub weight: Matrix,
    /// `∂b = Σ_rows δz`.
    pub bias: Vec<f32>,
    /// PReLU's `∂α = Σ_{z<0} z·δa`.
    pub alpha: f32,
}

/// The gradients of a dense layer: `δz = δa ⊙ f'(z)`, `∂b` and PReLU's `∂α` in one pass, then
/// `∂W = xᵀ·δz` and (when `need_dx`) `∂x = δz·Wᵀ` as products with swapped strides.
pub(super) fn dense_backward(
    x: &Matrix,
    weight: &Matrix,
    z: &Matrix,
    grad: Matrix,
    activation: Act,
    need_dx: bool,
) -> DenseGradients {
    let (n, d_in, d_out) = (x.rows, x.columns, z.columns);
    // The upstream gradient becomes δz in place (copied first only if someone else holds it).
    let mut grad = grad.values;
    let dz = grad.slice_mut();
    let prelu = activation.kind == infer::ActivationKind::Prelu;
    let (bias, alpha) = with_derivative!(activation, |derivative| {
        delta_pass(dz, z.slice(), d_out, prelu, derivative)
    });
    let dz: &[f32] = dz;
    let weight_gradient = |threads| {
        let x = Operand::transposed(x.slice(), d_in);
        product(d_in, d_out, n, x, Operand::plain(dz, d_out), threads)
    };
    // ∂W and ∂x are independent: side by side, each on a thread of its own, they share the
    // cores better than each split in turn.
    let (dw, dx) = if need_dx && rayon::current_num_threads() > 1 {
        let (dw, dx) = rayon::join(
            || weight_gradient(Threads::One),
            || input_gradient(dz, weight.slice(), (n, d_in, d_out), Threads::One),
        );
        (dw, Some(dx))
    } else {
        (
            weight_gradient(Threads::Share),
            need_dx.then(|| input_gradient(dz, weight.slice(), (n, d_in, d_out), Threads::Share)),
        )
    };
    DenseGradients {
        x: dx.map(|dx| Matrix::new(dx, n, d_in)),
        weight: Matrix::new(dw, d_in, d_out),
        bias,
        alpha,
    }
}

/// `∂x = δz·Wᵀ` (`δz` `n × d_out`, `W` `d_in × d_out`). gemm packs the operand it reads across
/// rows one value at a time, which for `W` is slower than the product itself (its 48 rows 2 KiB
/// apart share two of L1's sets): 870 µs against 560 µs for 128×512×512. So when `W` is the
/// larger of the two (`d_out > n`), this transposes `δz` instead, takes `∂xᵀ = W·δzᵀ` from
/// operands read along their rows, and transposes the result back: 530-550 µs in all.
fn input_gradient(
    dz: &[f32],
    weight: &[f32],
    (n, d_in, d_out): (usize, usize, usize),
    threads: Threads,
) -> Vec<f32> {
    if d_out > n {
        let dz_transposed = transpose(dz, n, d_out);
        let (w, dz) = (
            Operand::plain(weight, d_out),
            Operand::plain(&dz_transposed, n),
        );
        transpose(&product(d_in, n, d_out, w, dz, threads), d_in, n)
    } else {
        let w = Operand::transposed(weight, d_out);
        product(n, d_in, d_out, Operand::plain(dz, d_out), w, threads)
    }
}

/// [`input_gradient`] with the columns shared between rayon's threads: for
/// `benches/products.rs`.
pub fn input_gradient_product(
    dz: &[f32],
    weight: &[f32],
    (n, d_in, d_out): (usize, usize, usize),
) -> Vec<f32> {
    input_gradient(dz, weight, (n, d_in, d_out), Threads::Share)
}

/// `δz = δa ⊙ f'(z)` in place (`dz` holds `δa`), with `Σ_rows δz` gathered in the same pass,
/// and for PReLU `Σ_{z<0} z·δa`, its `∂α`.
fn delta_pass(
    dz: &mut [f32],
    z: &[f32],
    columns: usize,
    prelu: bool,
    derivative: impl Fn(f32) -> f32 + Sync + Send,
) -> (Vec<f32>, f32) {
    let piece = piece(columns);
    dz.par_chunks_mut(piece)
        .zip(z.par_chunks(piece))
        .map(|(dz, z)| {
            // PReLU's ∂α takes δa before it is scaled; the others skip that branchy sum.
            let alpha = if prelu {
                dz.iter()
                    .zip(z)
                    .map(|(&g, &z)| if z < 0.0 { z * g } else { 0.0 })
                    .sum()
            } else {
                0.0
            };
            let mut sums = vec![0.0f32; columns];
            for (dz_row, z_row) in dz.chunks_exact_mut(columns).zip(z.chunks_exact(columns)) {
                for ((g, &z), sum) in dz_row.iter_mut().zip(z_row).zip(&mut sums) {
                    *g = flush_subnormal(*g * derivative(z));
                    *sum += *g;
                }
            }
            (sums, alpha)
        })
        // Gathered in piece order, then summed in that order: rayon's `reduce` would combine
        // pieces in an order that depends on which thread stole what, and float sums in another
        // order differ in their last bits; same seed and thread count must give the same bytes.
        .collect::<Vec<_>>()
        .into_iter()
        .fold(
            (vec![0.0; columns], 0.0),
            |(mut a, alpha_a), (b, alpha_b)| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                (a, alpha_a + alpha_b)
            },
        )
}

/// Our cross-entropy of logits `z` against targets `q` (`[n, k]`): the mean loss, and each
/// row's softmax for the backward pass.
pub(super) fn cross_entropy(z: &Matrix, q: &Matrix) -> (f32, Matrix) {
    let (n, k) = (z.rows, z.columns);
    let mut p = z.slice().to_vec();
    let mut loss = 0.0f64;
    for (row, q) in p
        .chunks_exact_mut(k.max(1))
        .zip(q.slice().chunks_exact(k.max(1)))
    {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let (mut target, mut sum) = (0.0f32, 0.0f32);
        for (v, &q) in row.iter_mut().zip(q) {
            let shifted = *v - max;
            target += q * shifted;
            *v = shifted.exp();
            sum += *v;
        }
        loss += f64::from(sum.ln() - target);
        row.iter_mut().for_each(|v| *v /= sum);
    }
    ((loss / n.max(1) as f64) as f32, Matrix::new(p, n, k))
}

/// `δz = (softmax − q) · g / n`, for the loss's upstream gradient `g`.
pub(super) fn cross_entropy_backward(p: &Matrix, q: &Matrix, upstream: f32) -> Matrix {
    let scale = upstream / p.rows.max(1) as f32;
    let dz = p
        .slice()
        .iter()
        .zip(q.slice())
        .map(|(p, q)| (p - q) * scale)
        .collect();
    Matrix::new(dz, p.rows, p.columns)
}

/// One SGD step in one pass over each element: `w` and `v` in place (`first`: `v` holds no
/// velocity yet), and the average `a` when one is kept (`(a, first)`: `a` holds none yet). The
/// composed step's roundings: each coefficient rounded to f32 once, the same products and sums
/// (and a subnormal weight flushed to 0).
fn sgd_pass(
    w: &mut [f32],
    (v, first): (&mut [f32], bool),
    g: &[f32],
    average: Option<(&mut [f32], bool)>,
    step: StepCoefficients,
) {
    let (beta, decay, eta) = (step.beta as f32, (-step.gamma_eta) as f32, step.eta as f32);
    let update = |w: &mut f32, v: &mut f32, g: f32| {
        // v ← β·v − γη·w − η·g; w ← w + v
        let decay_and_gradient = *w * decay - g * eta;
        *v = if first {
            decay_and_gradient
        } else {
            *v * beta + decay_and_gradient
        };
        *w = flush_subnormal(*w + *v);
    };
    let chunks = w
        .par_chunks_mut(TASK)
        .zip(v.par_chunks_mut(TASK))
        .zip(g.par_chunks(TASK));
    match (average, step.average_decay) {
        (Some((a, first_average)), Some(delta)) => {
            let (keep, take) = (delta as f32, (1.0 - delta) as f32);
            chunks
                .zip(a.par_chunks_mut(TASK))
                .for_each(|(((w, v), g), a)| {
                    for (((w, v), &g), a) in w.iter_mut().zip(v).zip(g).zip(a) {
                        update(w, v, g);
                        // a ← δ·a + (1 − δ)·w
                        *a = if first_average {
                            *w
                        } else {
                            *a * keep + *w * take
                        };
                    }
                });
        }
        _ => chunks.for_each(|((w, v), g)| {
            for ((w, v), &g) in w.iter_mut().zip(v).zip(g) {
                update(w, v, g);
            }
        }),
    }
}

/// The fused operations on `$backend`'s tensors (a [`CpuBackend`]).
macro_rules! fused_ops_on {
    ($backend:ty) => {
        impl FusedOps for $backend {
            fn dense(
                x: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                bias: FloatTensor<Self>,
                activation: Act,
            ) -> FloatTensor<Self> {
                let bias = Self::buffer(bias);
                let (x, weight) = (Matrix::of::<Self>(x), Matrix::of::<Self>(weight));
                let (_, a) = dense_forward(&x, &weight, bias.slice(), activation);
                a.tensor::<Self>()
            }

            fn prelu_dense(
                x: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                bias: FloatTensor<Self>,
                alpha: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                let activation = Act {
                    kind: infer::ActivationKind::Prelu,
                    alpha: scalar::<Self>(alpha),
                };
                Self::dense(x, weight, bias, activation)
            }

            fn cross_entropy(
                logits: FloatTensor<Self>,
                targets: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                let (z, q) = (Matrix::of::<Self>(logits), Matrix::of::<Self>(targets));
                let (loss, _) = cross_entropy(&z, &q);
                vector::<Self>(vec![loss])
            }

            fn momentum_step(
                weight: FloatTensor<Self>,
                velocity: FloatTensor<Self>,
                grad: FloatTensor<Self>,
                average: FloatTensor<Self>,
                step: StepCoefficients,
                firsts: Firsts,
            ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
                let (mut w, mut v, g, mut a) = (
                    Self::buffer(weight),
                    Self::buffer(velocity),
                    Self::buffer(grad),
                    Self::buffer(average),
                );
                let averaging = step.average_decay.is_some();
                // Copy-on-write: in place when the buffers are not shared, as after the
                // backward pass.
                sgd_pass(
                    w.slice_mut(),
                    (v.slice_mut(), firsts.velocity),
                    g.slice(),
                    averaging.then(|| (a.slice_mut(), firsts.average)),
                    step,
                );
                (Self::tensor(w), Self::tensor(v), Self::tensor(a))
            }
        }
    };
}

fused_ops_on!(NdArray);
#[cfg(feature = "flex")]
fused_ops_on!(Flex);

#[cfg(test)]
mod tests {
    use super::transpose;

    #[test]
    fn transpose_swaps_rows_and_columns_in_blocks_and_edges() {
        for (rows, columns) in [
            (1, 1),
            (3, 5),
            (8, 8),
            (16, 16),
            (20, 33),
            (64, 9),
            (41, 128),
        ] {
            let values: Vec<f32> = (0..rows * columns).map(|i| i as f32).collect();
            let out = transpose(&values, rows, columns);
            for r in 0..rows {
                for c in 0..columns {
                    assert_eq!(
                        out[c * rows + r],
                        values[r * columns + c],
                        "{rows}×{columns}"
                    );
                }
            }
        }
    }
}
