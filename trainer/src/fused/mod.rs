//! Our fused CPU operations, registered with burn through its backend extension: a layer's
//! `f(x·W + b)` as one matrix product into a fresh buffer (the bias is its starting value) and one
//! pass for the activation; our cross-entropy with its softmax in one pass; our momentum SGD (and
//! the weight average) in one in-place pass over each parameter. Each has a handwritten backward
//! for burn's autodiff (`autodiff`), and kernels (`cpu`) for the CPU backends' tensors (`tensors`:
//! burn-ndarray's, and burn-flex's with the `flex` feature).
//!
//! The math is the model's definition (layers `x·W + b` then our activation, our cross-entropy,
//! `v ← β·v − γ·η·w − η·g; w ← w + v`), the same as the op-by-op composition in `model`, `loss` and
//! `optim`, which other backends (the GPU) run and which the tests hold these against.

mod autodiff;
mod cpu;
mod tensors;

pub use cpu::{input_gradient_product, strided_product};

use burn::backend::{Dispatch, DispatchDevice, backend_extension, tensor::FloatTensor};
use burn::tensor::{Device, Tensor};
use infer::ActivationKind;

/// A layer's activation as the fused kernels apply it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Act {
    /// Which activation.
    pub kind: ActivationKind,
    /// ELU's α (PReLU's comes as a tensor, a parameter that learns; the others ignore it).
    pub alpha: f32,
}

/// The coefficients of one step of our SGD for one parameter: `v ← β·v − γη·w − η·g`,
/// `w ← w + v`, then, with a weight average, `a ← δ·a + (1 − δ)·w`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepCoefficients {
    /// β.
    pub beta: f64,
    /// γ·η.
    pub gamma_eta: f64,
    /// η.
    pub eta: f64,
    /// δ of the weight average, if one is kept.
    pub average_decay: Option<f64>,
}

/// Which state a parameter's step starts from: the first step has no velocity (`v ← −γη·w −
/// η·g`) and no average yet (`a ← w`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Firsts {
    /// The velocity given is not one yet.
    pub velocity: bool,
    /// The average given is not one yet.
    pub average: bool,
}

/// The fused operations (see the module's documentation).
#[backend_extension(NdArray, Flex: cfg(feature = "flex"), Autodiff)]
pub trait FusedOps: burn::backend::Backend {
    /// `f(x·W + b)` for `x` `[n, d_in]`, `weight` `[d_in, d_out]`, `bias` `[d_out]`.
    fn dense(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: Act,
    ) -> FloatTensor<Self>;

    /// [`Self::dense`] with PReLU, whose α (`[1]`) is a parameter that learns.
    fn prelu_dense(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        alpha: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The mean over rows of `logsumexp(z) − Σ q·z` for `logits` `z` and `targets` `q`, both
    /// `[n, classes]`, as a `[1]` tensor.
    fn cross_entropy(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self>;

    /// One step of our SGD on one parameter (any shape; `velocity` and `average` flattened, the
    /// average empty when none is kept): the new weight, velocity and average.
    fn momentum_step(
        weight: FloatTensor<Self>,
        velocity: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        average: FloatTensor<Self>,
        step: StepCoefficients,
        firsts: Firsts,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// Whether the fused operations run on `device`: the CPU device (burn-ndarray's, or burn-flex's
/// with the `flex` feature), with or without autodiff. Other devices take the composed path.
pub fn runs_on(device: &Device) -> bool {
    fn cpu(device: &DispatchDevice) -> bool {
        match device {
            DispatchDevice::NdArray(_) => true,
            #[cfg(feature = "flex")]
            DispatchDevice::Flex(_) => true,
            #[allow(unreachable_patterns)] // the GPU backend adds a variant
            _ => false,
        }
    }
    match device.as_dispatch() {
        DispatchDevice::Autodiff(inner) => cpu(inner),
        other => cpu(other),
    }
}

/// `f(x·W + b)` (see [`FusedOps::dense`]); for PReLU, `prelu_alpha` is its learned α.
pub fn dense(
    x: Tensor<2>,
    weight: Tensor<2>,
    bias: Tensor<1>,
    prelu_alpha: Option<Tensor<1>>,
    activation: Act,
) -> Tensor<2> {
    let (x, weight, bias) = (
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    );
    Tensor::from_dispatch(match prelu_alpha {
        Some(alpha) => Dispatch::prelu_dense(x, weight, bias, alpha.into_dispatch()),
        None => Dispatch::dense(x, weight, bias, activation),
    })
}

/// Our cross-entropy of `logits` against `targets` (see [`FusedOps::cross_entropy`]).
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    Tensor::from_dispatch(Dispatch::cross_entropy(
        logits.into_dispatch(),
        targets.into_dispatch(),
    ))
}

/// One SGD step on a parameter's inner (non-autodiff) tensors (see
/// [`FusedOps::momentum_step`]).
pub fn momentum_step<const D: usize>(
    weight: Tensor<D>,
    velocity: Option<Tensor<1>>,
    grad: Tensor<D>,
    average: Option<Tensor<1>>,
    step: StepCoefficients,
) -> (Tensor<D>, Tensor<1>, Option<Tensor<1>>) {
    let device = weight.device();
    let len = weight.shape().num_elements();
    let firsts = Firsts {
        velocity: velocity.is_none(),
        average: average.is_none(),
    };
    let average_len = if step.average_decay.is_some() { len } else { 0 };
    let (weight, velocity, average) = Dispatch::momentum_step(
        weight.into_dispatch(),
        velocity
            .unwrap_or_else(|| Tensor::zeros([len], &device))
            .into_dispatch(),
        grad.into_dispatch(),
        average
            .unwrap_or_else(|| Tensor::zeros([average_len], &device))
            .into_dispatch(),
        step,
        firsts,
    );
    let average = Tensor::<1>::from_dispatch(average);
    (
        Tensor::from_dispatch(weight),
        Tensor::from_dispatch(velocity),
        step.average_decay.map(|_| average),
    )
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, Tensor};

    use super::*;
    use crate::activation::Activation;
    use crate::loss::CrossEntropy;

    fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
        tensor.into_data().try_to_vec::<f32>().unwrap()
    }

    /// Within 1e-5 relative of the reference, norm-wise: no value further from its reference
    /// than 1e-5 of the reference's largest magnitude. (A sum that cancels to about 0 carries the
    /// rounding of its large terms, in either computation, so value-wise ratios are noise there.)
    fn assert_close(what: &str, got: &[f32], want: &[f32]) {
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_within(what, got, want, scale);
    }

    /// Within 1e-5 of `scale`. For one sum that cancels, the scale is the sum of its terms'
    /// magnitudes: the two computations add in different orders, so their roundings differ by
    /// a fraction of that, not of the (possibly tiny) result.
    fn assert_within(what: &str, got: &[f32], want: &[f32], scale: f32) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "{what}[{i}]: fused {a}, composed {b} (scale {scale})"
            );
        }
    }

    fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), device)
    }

    #[test]
    fn fused_layers_match_the_composition_in_value_and_gradient() {
        let device = crate::device::cpu().autodiff();
        let _drawing = crate::device::seed(&device, 5);
        for kind in ActivationKind::ALL {
            let alpha = kind.default_alpha().unwrap_or(0.0);
            // Batch 1, width 1, a last partial batch, and a full one; ∂x through transposes
            // (d_out > n) with whole 8 × 8 blocks and edges.
            let shapes = [
                (1, 7, 5),
                (37, 20, 1),
                (128, 30, 17),
                (3, 784, 64),
                (20, 33, 70),
            ];
            for (n, d_in, d_out) in shapes {
                // Values of the scale training sees: inputs about ±2, weights as initialised.
                let x = random([n, d_in], &device).mul_scalar(2.0);
                let weight = random([d_in, d_out], &device).div_scalar((d_in as f32).sqrt());
                let bias = random([d_out], &device);
                let upstream = random([n, d_out], &device);
                let run = |fused: bool| {
                    let (x, w, b) = (
                        x.clone().require_grad(),
                        weight.clone().require_grad(),
                        bias.clone().require_grad(),
                    );
                    let module = Activation::new(kind, alpha, &device);
                    let prelu_alpha = module.learned_alpha();
                    let a = if fused {
                        let act = Act { kind, alpha };
                        dense(x.clone(), w.clone(), b.clone(), prelu_alpha.clone(), act)
                    } else {
                        let z = x.clone().matmul(w.clone()) + b.clone().unsqueeze::<2>();
                        module.forward(z)
                    };
                    let loss = (a.clone() * upstream.clone()).sum();
                    if !loss.is_tracked() {
                        // step: no gradient crosses it (the fused one is 0, tested below).
                        return (values(a), vec![], vec![], vec![], vec![]);
                    }
                    let grads = loss.backward();
                    let gradient = |t: &Tensor<2>| t.grad(&grads).map(values).unwrap_or_default();
                    let vector = |t: &Tensor<1>| t.grad(&grads).map(values).unwrap_or_default();
                    (
                        values(a),
                        gradient(&x),
                        gradient(&w),
                        vector(&b),
                        prelu_alpha.as_ref().map(vector).unwrap_or_default(),
                    )
                };
                let (fused, mut composed) = (run(true), run(false));
                if kind == ActivationKind::Step {
                    let zeros = |v: &[f32]| vec![0.0; v.len()];
                    composed.1 = zeros(&fused.1);
                    composed.2 = zeros(&fused.2);
                    composed.3 = zeros(&fused.3);
                }
                let what = |part: &str| format!("{kind:?} {n}x{d_in}x{d_out} {part}");
                assert_close(&what("output"), &fused.0, &composed.0);
                assert_close(&what("dx"), &fused.1, &composed.1);
                assert_close(&what("dW"), &fused.2, &composed.2);
                assert_close(&what("db"), &fused.3, &composed.3);
                // dα = Σ upstream·min(z, 0): one sum over the whole batch.
                let z = x.clone().matmul(weight.clone()) + bias.clone().unsqueeze::<2>();
                let terms = (upstream.clone() * z.clamp_max(0.0)).abs().sum();
                assert_within(&what("dα"), &fused.4, &composed.4, values(terms)[0]);
            }
        }
    }

    #[test]
    fn the_first_layer_computes_no_input_gradient() {
        let device = crate::device::cpu().autodiff();
        let x = random([4, 6], &device); // no require_grad: the images
        let w = random([6, 3], &device).require_grad();
        let b = random([3], &device).require_grad();
        let act = Act {
            kind: ActivationKind::Relu,
            alpha: 0.0,
        };
        let grads = dense(x.clone(), w.clone(), b, None, act).sum().backward();
        assert!(x.grad(&grads).is_none());
        assert!(w.grad(&grads).is_some());
    }

    #[test]
    fn fused_cross_entropy_matches_the_composition() {
        let device = crate::device::cpu().autodiff();
        let _drawing = crate::device::seed(&device, 9);
        for (n, smoothing) in [(1, 0.0), (37, 0.1), (128, 0.3)] {
            let loss = CrossEntropy {
                label_smoothing: smoothing,
            };
            let logits = random([n, 10], &device).mul_scalar(8.0);
            let labels: Vec<u8> = (0..n).map(|i| (i * 7 % 10) as u8).collect();
            let targets = loss.targets(&labels, 10, &device);
            let run = |fused: bool| {
                let z = logits.clone().require_grad();
                let value = if fused {
                    cross_entropy(z.clone(), targets.clone())
                } else {
                    loss.forward_composed(z.clone(), targets.clone())
                };
                let grads = value.clone().backward();
                (values(value), values(z.grad(&grads).unwrap()))
            };
            let (fused, composed) = (run(true), run(false));
            assert_close(&format!("loss {n}"), &fused.0, &composed.0);
            assert_close(&format!("dz {n}"), &fused.1, &composed.1);
        }
    }

    #[test]
    fn a_fused_sgd_step_equals_the_composed_one_bit_for_bit() {
        let device = crate::device::cpu();
        let step = StepCoefficients {
            beta: 0.9,
            gamma_eta: 5e-4 * 0.05,
            eta: 0.05,
            average_decay: Some(0.999),
        };
        let tensor = |seed: u64, n: usize| {
            let _drawing = crate::device::seed(&device, seed);
            random([n], &device)
        };
        let (w, g) = (tensor(1, 40_000), tensor(2, 40_000));
        let (mut fused, mut composed) = ((w.clone(), None, None), (w, None, None));
        for _ in 0..3 {
            let (w, v, a) = momentum_step(fused.0, fused.1, g.clone(), fused.2, step);
            fused = (w, Some(v), a);
            let (w, v, a) =
                crate::optim::composed_step(composed.0, composed.1, g.clone(), composed.2, step);
            composed = (w, Some(v), a);
            assert_eq!(values(fused.0.clone()), values(composed.0.clone()));
            assert_eq!(
                values(fused.1.clone().unwrap()),
                values(composed.1.clone().unwrap())
            );
            assert_eq!(
                values(fused.2.clone().unwrap()),
                values(composed.2.clone().unwrap())
            );
        }
    }

    #[test]
    fn runs_on_the_cpu_backend_with_or_without_autodiff() {
        assert!(runs_on(&crate::device::cpu()));
        assert!(runs_on(&crate::device::cpu().autodiff()));
    }
}
