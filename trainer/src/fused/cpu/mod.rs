//! The fused operations on the CPU backends' tensors (`tensors`). Matrix products go through the
//! `gemm` crate (burn-flex's: AVX-512, AVX2+FMA or portable kernels chosen at run time, threads
//! from rayon's pool) with strides instead of transposed copies; element-wise passes are split
//! over rayon's threads too.

use burn::backend::NdArray;
#[cfg(feature = "flex")]
use burn::backend::flex::Flex;
use burn::backend::tensor::FloatTensor;

use super::tensors::{Buffer, CpuBackend};
use super::{Act, Firsts, FusedOps, StepCoefficients};

mod dense;
mod loss;
mod products;
mod sgd;

pub use dense::input_gradient_product;
pub(crate) use dense::{dense_backward, dense_forward};
pub(crate) use loss::{cross_entropy, cross_entropy_backward};
pub use products::strided_product;
use products::*;
use sgd::*;

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

/// `v`, or 0 when it is subnormal. Every operand of a matrix product passes through here (the
/// activations, `δz`, the weights), because a subnormal operand makes the SIMD kernels take a
/// microcode assist per multiply, 100 times slower (a softmax saturating in a confident model
/// gives them). Values below 1.2e-38 do not matter to the model.
#[inline]
pub(super) fn flush_subnormal(v: f32) -> f32 {
    if v.abs() < f32::MIN_POSITIVE { 0.0 } else { v }
}

/// Values an element-wise task takes: enough to amortise handing it to another thread, few
/// enough to share the passes over a layer of 64k values between 2-4 cores.
pub(super) const TASK: usize = 16_384;

/// The values of a task of a pass over rows of `row` values: whole rows, about [`TASK`].
pub(super) fn piece(row: usize) -> usize {
    (TASK / row.max(1)).max(1) * row.max(1)
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
