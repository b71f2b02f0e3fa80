//! The MLP: `burn::nn::Linear` layers with our activation between them.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::activation::{Activation, ActivationKind};

/// Input width (28x28 pixels).
pub const INPUT_SIZE: usize = infer::INPUT_SIZE;
/// Output width (classes).
pub const NUM_CLASSES: usize = infer::NUM_CLASSES;
const _: () = assert!(INPUT_SIZE == data::IMAGE_PIXELS && NUM_CLASSES == data::NUM_CLASSES);

/// A multi-layer perceptron.
#[derive(Module, Debug)]
pub struct Mlp {
    /// The `Linear` layers, input first.
    pub layers: Vec<Linear>,
    /// One per hidden layer, applied after it (PReLU learns its α per layer).
    pub activations: Vec<Activation>,
    #[module(skip)]
    kind: ActivationKind,
    #[module(skip)]
    alpha: f32,
}

impl Mlp {
    /// A freshly initialised `784 → hidden… → 10` network (burn's default init, seeded by the
    /// device's seed); `alpha` is ELU's α or PReLU's initial α.
    pub fn new(hidden: &[usize], kind: ActivationKind, alpha: f32, device: &Device) -> Self {
        let widths: Vec<usize> = std::iter::once(INPUT_SIZE)
            .chain(hidden.iter().copied())
            .chain([NUM_CLASSES])
            .collect();
        let mut layers: Vec<Linear> = widths
            .windows(2)
            .map(|w| LinearConfig::new(w[0], w[1]).init(device))
            .collect();
        if kind == ActivationKind::Step {
            // No gradient crosses a step, so the layers before it cannot learn; untracked, they
            // also leave no autodiff nodes behind that no backward pass would ever free.
            let output = layers.pop().expect("at least the output layer");
            layers = layers.into_iter().map(Module::no_grad).collect();
            layers.push(output);
        }
        let activations = hidden
            .iter()
            .map(|_| Activation::new(kind, alpha, device))
            .collect();
        Self {
            layers,
            activations,
            kind,
            alpha,
        }
    }

    /// The hidden-layer activation as the model file records it.
    pub fn file_activation(&self) -> infer::Activation {
        let alphas: Vec<f32> = match self.kind {
            ActivationKind::Prelu => self.activations.iter().map(|a| a.alpha()).collect(),
            _ => vec![self.alpha],
        };
        crate::activation::file_activation(self.kind, &alphas)
    }

    /// Logits for a `[batch, 784]` input of normalised pixels.
    pub fn forward(&self, input: Tensor<2>) -> Tensor<2> {
        let mut x = input;
        for (index, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if let Some(activation) = self.activations.get(index) {
                x = activation.forward(x);
            }
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_leaves_hidden_layers_untracked_and_the_output_layer_trainable() {
        let device = crate::device::cpu().autodiff();
        let model = Mlp::new(&[8, 8], ActivationKind::Step, 0.0, &device);
        let tracked: Vec<bool> = model
            .layers
            .iter()
            .map(|l| l.weight.val().is_require_grad())
            .collect();
        assert_eq!(tracked, vec![false, false, true]);
        let relu = Mlp::new(&[8, 8], ActivationKind::Relu, 0.0, &device);
        assert!(relu.layers.iter().all(|l| l.weight.val().is_require_grad()));
    }
}
