//! A dense layer `f(x·W + b)`: its forward pass and its backward pass (the activation's
//! derivative, the weight, bias and input gradients).

use rayon::prelude::*;

use super::*;

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
pub(crate) fn dense_forward(
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
pub(crate) struct DenseGradients {
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
pub(crate) fn dense_backward(
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
pub(super) fn input_gradient(
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
pub(super) fn delta_pass(
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
