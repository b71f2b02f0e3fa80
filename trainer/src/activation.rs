//! Our nine activation functions, written with burn tensor ops (none of burn's ready-made
//! activations), each with its analytic derivative as code.
//!
//! The formulas match `infer::Activation`'s and stay finite and accurate at ±100 and near 0:
//! with `e = exp(−|x|)`, `logistic = (x ≥ 0 ? 1 : e) / (1 + e)`,
//! `softplus = max(x, 0) + ln(1 + e)`; `tanh` and `elu` use [`expm1`]. PReLU learns one α per
//! hidden layer (a `Param` of this module), stored in the model file.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};
/// Which activation (the `--activation` value): `infer`'s list of the nine.
pub use infer::ActivationKind;

/// The activation module placed after one hidden `Linear` layer.
#[derive(Module, Debug)]
pub struct Activation {
    #[module(skip)]
    kind: ActivationKind,
    /// ELU's α (for PReLU, the learned `prelu_alpha` is used instead).
    #[module(skip)]
    alpha: f32,
    /// PReLU's learned α, shape `[1]`.
    prelu_alpha: Option<Param<Tensor<1>>>,
}

impl Activation {
    /// A module applying `kind`; `alpha` is ELU's α or PReLU's initial α (ignored otherwise).
    pub fn new(kind: ActivationKind, alpha: f32, device: &Device) -> Self {
        let prelu_alpha = (kind == ActivationKind::Prelu).then(|| {
            Param::from_tensor(Tensor::from_data(TensorData::new(vec![alpha], [1]), device))
        });
        Self {
            kind,
            alpha,
            prelu_alpha,
        }
    }

    /// Which activation this is.
    pub fn kind(&self) -> ActivationKind {
        self.kind
    }

    /// α as used now: PReLU's learned value, ELU's constant, 0 for the others.
    pub fn alpha(&self) -> f32 {
        match &self.prelu_alpha {
            Some(alpha) => alpha.val().into_scalar(),
            None if self.kind == ActivationKind::Elu => self.alpha,
            None => 0.0,
        }
    }

    /// PReLU's learned α (`[1]`, tracked like any parameter); `None` for the others.
    pub fn learned_alpha(&self) -> Option<Tensor<1>> {
        self.prelu_alpha.as_ref().map(Param::val)
    }

    fn prelu_alpha<const D: usize>(&self) -> Tensor<D> {
        let alpha = self.prelu_alpha.as_ref().expect("PReLU holds its α");
        alpha.val().reshape([1; D])
    }

    /// f(x), element-wise.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        // Computed only where used: every pass costs (see Relu).
        let negative = |x: &Tensor<D>| x.clone().lower_elem(0.0);
        match self.kind {
            ActivationKind::Identity => x,
            ActivationKind::Step => x.greater_equal_elem(0.0).float(),
            ActivationKind::Logistic => logistic(x),
            ActivationKind::Tanh => {
                let m = expm1(x.clone().abs().mul_scalar(-2.0));
                x.sign() * (m.clone().neg() / m.add_scalar(2.0))
            }
            ActivationKind::Arctan => x.atan(),
            // x · [x ≥ 0] rather than a masked fill: both passes (and the product's backward)
            // are vectorised element-wise ops in burn-ndarray, where `mask_fill` is a scalar
            // loop; 8-12 % faster epochs. Only −∞ differs: −∞ · 0 is NaN, a divergence anyway.
            ActivationKind::Relu => x.clone() * x.greater_equal_elem(0.0).float(),
            ActivationKind::Prelu => {
                let (scaled, negative) = (x.clone() * self.prelu_alpha::<D>(), negative(&x));
                x.mask_where(negative, scaled)
            }
            ActivationKind::Elu => {
                // clamp_max keeps exp finite on the branch that mask_where discards.
                let scaled = expm1(x.clone().clamp_max(0.0)).mul_scalar(self.alpha);
                let negative = negative(&x);
                x.mask_where(negative, scaled)
            }
            ActivationKind::Softplus => x.clone().clamp_min(0.0) + x.abs().neg().exp().log1p(),
        }
    }

    /// f'(x), element-wise: the analytic derivative (logistic: f(1 − f); tanh: 1 − f²; 0 for `step`, whose derivative at 0 is
    /// undefined; the right-hand one at the kinks of `relu`, `prelu` and `elu`).
    pub fn derivative<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let negative = x.clone().lower_elem(0.0);
        let ones = x.ones_like();
        match self.kind {
            ActivationKind::Identity => ones,
            ActivationKind::Step => x.zeros_like(),
            // f(1 − f) and 1 − f², written through e = exp(−|x|) so they do not round to 0
            // where f rounds to ±1.
            ActivationKind::Logistic => {
                let e = x.abs().neg().exp();
                e.clone() / e.add_scalar(1.0).powi_scalar(2)
            }
            ActivationKind::Softplus => logistic(x),
            ActivationKind::Tanh => {
                let e2 = x.abs().mul_scalar(-2.0).exp();
                e2.clone().mul_scalar(4.0) / e2.add_scalar(1.0).powi_scalar(2)
            }
            ActivationKind::Arctan => (x.clone() * x).add_scalar(1.0).recip(),
            ActivationKind::Relu => ones.mask_fill(negative, 0.0),
            ActivationKind::Prelu => {
                let alpha = ones.zeros_like() + self.prelu_alpha::<D>();
                ones.mask_where(negative, alpha)
            }
            ActivationKind::Elu => {
                let scaled = x.clamp_max(0.0).exp().mul_scalar(self.alpha);
                ones.mask_where(negative, scaled)
            }
        }
    }
}

/// 1 / (1 + e^−x) without overflow.
pub fn logistic<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let e = x.clone().abs().neg().exp();
    let numerator = e.clone().mask_fill(x.greater_equal_elem(0.0), 1.0);
    numerator / e.add_scalar(1.0)
}

/// e^t − 1 for t ≤ 0 without cancellation: `e^t − 1` below −0.5 (no cancellation there, and its
/// gradient is exactly e^t), Kahan's `(u − 1)·t / ln u` with `u = e^t` on [−0.5, 0] (`t` itself
/// where `u` rounds to 1). Each branch gets an input it is finite on, so no NaN reaches the
/// gradient through the branch `mask_where` discards.
pub fn expm1<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    let far = t.clone().lower_elem(-0.5);
    let direct = t.clone().exp().sub_scalar(1.0);
    let near = t.clamp_min(-0.5);
    let u = near.clone().exp();
    let at_one = u.clone().equal_elem(1.0);
    let ln_u = u.clone().log().mask_fill(at_one.clone(), 1.0);
    let kahan = (u.sub_scalar(1.0) * near.clone() / ln_u).mask_where(at_one, near);
    kahan.mask_where(far, direct)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large and small values on both sides; 0 itself is left to the kink-aware checks.
    const GRID: [f32; 14] = [
        -100.0, -20.0, -3.0, -1.0, -0.3, -1e-3, -1e-6, 1e-6, 1e-3, 0.3, 1.0, 3.0, 20.0, 100.0,
    ];

    fn values(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn activation(kind: ActivationKind, device: &Device) -> Activation {
        Activation::new(kind, kind.default_alpha().unwrap_or(0.0), device)
    }

    fn close(a: f32, b: f32, rel: f32, abs: f32) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()) + abs
    }

    #[test]
    fn values_match_definitions_in_f64() {
        let device = crate::device::cpu();
        let x = Tensor::<1>::from_data(TensorData::new(GRID.to_vec(), [GRID.len()]), &device);
        for kind in ActivationKind::ALL {
            let got = values(activation(kind, &device).forward(x.clone()));
            for (&x, &got) in GRID.iter().zip(&got) {
                let x = f64::from(x);
                let want = match kind {
                    ActivationKind::Identity => x,
                    ActivationKind::Step => f64::from(u8::from(x >= 0.0)),
                    ActivationKind::Logistic => 1.0 / (1.0 + (-x).exp()),
                    ActivationKind::Tanh => 2.0 / (1.0 + (-2.0 * x).exp()) - 1.0,
                    ActivationKind::Arctan => x.atan(),
                    ActivationKind::Relu => x.max(0.0),
                    ActivationKind::Prelu => {
                        if x < 0.0 {
                            0.25 * x
                        } else {
                            x
                        }
                    }
                    ActivationKind::Elu => {
                        if x < 0.0 {
                            x.exp_m1()
                        } else {
                            x
                        }
                    }
                    ActivationKind::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
                };
                assert!(got.is_finite(), "{kind:?}({x}) = {got}");
                assert!(
                    close(got, want as f32, 2e-6, 1e-30),
                    "{kind:?}({x}) = {got}, want {want}"
                );
            }
        }
    }

    #[test]
    fn derivatives_match_autodiff() {
        let device = crate::device::cpu().autodiff();
        for kind in ActivationKind::ALL {
            let activation = activation(kind, &device);
            let x = Tensor::<1>::from_data(TensorData::new(GRID.to_vec(), [GRID.len()]), &device)
                .require_grad();
            let y = activation.forward(x.clone());
            let analytic = values(activation.derivative(x.clone().inner()));
            if kind == ActivationKind::Step {
                // step's output does not depend differentiably on x: autodiff does not track it.
                assert!(!y.is_tracked() && analytic.iter().all(|&d| d == 0.0));
                continue;
            }
            let autodiff = values(x.grad(&y.sum().backward()).unwrap());
            for ((&x, &a), &b) in GRID.iter().zip(&autodiff).zip(&analytic) {
                assert!(a.is_finite(), "{kind:?}'({x}) autodiff {a}");
                assert!(
                    close(a, b, 1e-5, 1e-30),
                    "{kind:?}'({x}): autodiff {a}, analytic {b}"
                );
            }
        }
    }

    #[test]
    fn derivatives_match_central_differences() {
        let device = crate::device::cpu();
        for kind in ActivationKind::ALL {
            let activation = activation(kind, &device);
            let kinked = matches!(
                kind,
                ActivationKind::Step
                    | ActivationKind::Relu
                    | ActivationKind::Prelu
                    | ActivationKind::Elu
            );
            let points: Vec<f32> = GRID
                .iter()
                .copied()
                .filter(|x| !kinked || x.abs() >= 0.1)
                .collect();
            let steps: Vec<f32> = points.iter().map(|x| 1e-2 * x.abs().max(1.0)).collect();
            let tensor =
                |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [points.len()]), &device);
            let plus = values(activation.forward(tensor(
                points.iter().zip(&steps).map(|(x, h)| x + h).collect(),
            )));
            let minus = values(activation.forward(tensor(
                points.iter().zip(&steps).map(|(x, h)| x - h).collect(),
            )));
            let analytic = values(activation.derivative(tensor(points.clone())));
            for i in 0..points.len() {
                let central = (plus[i] - minus[i]) / (2.0 * steps[i]);
                assert!(
                    close(central, analytic[i], 1e-3, 1e-4),
                    "{kind:?}'({}): central difference {central}, analytic {}",
                    points[i],
                    analytic[i]
                );
            }
        }
    }

    #[test]
    fn prelu_alpha_receives_a_gradient() {
        let device = crate::device::cpu().autodiff();
        let activation = activation(ActivationKind::Prelu, &device);
        let x = Tensor::<1>::from_data(TensorData::new(vec![-2.0, -1.0, 3.0], [3]), &device);
        let grads = activation.forward(x).sum().backward();
        let alpha = activation.prelu_alpha.as_ref().unwrap().val();
        assert_eq!(values(alpha.grad(&grads).unwrap()), vec![-3.0]);
    }
}
