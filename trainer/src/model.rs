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
    /// Applied after every layer but the last.
    pub activation: Activation,
}

impl Mlp {
    /// A freshly initialised `784 → hidden… → 10` network (burn's default init, seeded by the
    /// device's seed).
    pub fn new(hidden: &[usize], activation: ActivationKind, device: &Device) -> Self {
        let widths: Vec<usize> = std::iter::once(INPUT_SIZE)
            .chain(hidden.iter().copied())
            .chain([NUM_CLASSES])
            .collect();
        let layers = widths
            .windows(2)
            .map(|w| LinearConfig::new(w[0], w[1]).init(device))
            .collect();
        Self {
            layers,
            activation: Activation::new(activation),
        }
    }

    /// Logits for a `[batch, 784]` input of normalised pixels.
    pub fn forward(&self, input: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        let mut x = input;
        for (index, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if index != last {
                x = self.activation.forward(x);
            }
        }
        x
    }
}
