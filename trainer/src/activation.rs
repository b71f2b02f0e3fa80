//! Our activation functions, written with burn tensor ops (none of burn's ready-made ones).
//!
//! Each has its forward function and its analytic derivative as code; tests check the derivative
//! against burn's autodiff. The choice is stored in the model file as an [`infer::Activation`],
//! which `infer` applies the same way.

use burn::module::Module;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Which activation the hidden layers use (the `--activation` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ActivationKind {
    /// f(x) = 0 for x < 0, x for x ≥ 0; f'(x) = 0 / 1.
    Relu,
}

/// The activation module placed between `Linear` layers.
#[derive(Module, Debug)]
pub struct Activation {
    #[module(skip)]
    kind: ActivationKind,
}

impl Activation {
    /// A module applying `kind`.
    pub fn new(kind: ActivationKind) -> Self {
        Self { kind }
    }

    /// Which activation this is.
    pub fn kind(&self) -> ActivationKind {
        self.kind
    }

    /// f(x), element-wise.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self.kind {
            ActivationKind::Relu => x.clone().mask_fill(x.lower_elem(0.0), 0.0),
        }
    }

    /// f'(x), element-wise: the analytic derivative.
    pub fn derivative<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self.kind {
            ActivationKind::Relu => x.clone().ones_like().mask_fill(x.lower_elem(0.0), 0.0),
        }
    }

    /// How the model file records this activation.
    pub fn to_file(&self) -> infer::Activation {
        match self.kind {
            ActivationKind::Relu => infer::Activation::Relu,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    const GRID: [f32; 10] = [
        -100.0, -3.0, -1.0, -1e-3, -1e-6, 1e-6, 1e-3, 1.0, 3.0, 100.0,
    ];

    fn values(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn relu_matches_definition() {
        let device = crate::device::cpu();
        let x = Tensor::<1>::from_data(TensorData::new(GRID.to_vec(), [GRID.len()]), &device);
        let got = values(Activation::new(ActivationKind::Relu).forward(x));
        let want: Vec<f32> = GRID
            .iter()
            .map(|&v| if v < 0.0 { 0.0 } else { v })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn relu_derivative_matches_autodiff() {
        let device = crate::device::cpu().autodiff();
        let activation = Activation::new(ActivationKind::Relu);
        let x = Tensor::<1>::from_data(TensorData::new(GRID.to_vec(), [GRID.len()]), &device)
            .require_grad();
        let grads = activation.forward(x.clone()).sum().backward();
        let autodiff = values(x.grad(&grads).unwrap());
        let analytic = values(activation.derivative(x.inner()));
        assert_eq!(autodiff, analytic);
        assert_eq!(analytic.iter().filter(|&&d| d == 1.0).count(), 5);
    }
}
