//! The MLP: `burn::nn::Linear` layers with our activation between them.

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor, TensorData};
use data::transform::SplitMix64;

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
    /// A freshly initialised `784 → hidden… → 10` network (burn's default init) drawn from
    /// `seed`; `alpha` is ELU's α or PReLU's initial α.
    ///
    /// burn draws a layer's initial values when the parameter is first read, not when the layer
    /// is made, and from the device's process-wide generator. So every value is read here, while
    /// [`crate::device::seed`] holds the generator: a model made while another is being trained
    /// in the same process (tests do) gets its seed's values, not numbers drawn later from
    /// whatever the generator then holds.
    pub fn new(
        hidden: &[usize],
        kind: ActivationKind,
        alpha: f32,
        seed: u64,
        device: &Device,
    ) -> Self {
        let _drawing = crate::device::seed(device, seed);
        let model = Self::unseeded(hidden, kind, alpha, device);
        model.visit(&mut DrawNow);
        model
    }

    fn unseeded(hidden: &[usize], kind: ActivationKind, alpha: f32, device: &Device) -> Self {
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
        infer::Activation::new(self.kind, &alphas)
    }

    /// Logits for a `[batch, 784]` input of normalised pixels.
    pub fn forward(&self, input: Tensor<2>) -> Tensor<2> {
        self.forward_with_dropout(input, Dropout::NONE)
    }

    /// Logits with `dropout` on every hidden layer's output (training only): each value is
    /// kept with probability 1 − rate and then scaled by 1 / (1 − rate), zeroed otherwise. The
    /// mask comes from `dropout.seed`, so a resumed run draws the same masks.
    pub fn forward_with_dropout(&self, input: Tensor<2>, dropout: Dropout) -> Tensor<2> {
        let fused = crate::fused::runs_on(&input.device());
        let mut rng = SplitMix64::new(dropout.seed);
        let keep = 1.0 - dropout.rate;
        let mut x = input;
        for (index, layer) in self.layers.iter().enumerate() {
            let activation = self.activations.get(index);
            x = match (fused, &layer.bias) {
                (true, Some(bias)) => {
                    let act = crate::fused::Act {
                        kind: activation.map_or(ActivationKind::Identity, Activation::kind),
                        alpha: self.alpha,
                    };
                    let prelu_alpha = activation.and_then(Activation::learned_alpha);
                    crate::fused::dense(x, layer.weight.val(), bias.val(), prelu_alpha, act)
                }
                _ => match activation {
                    Some(activation) => activation.forward(layer.forward(x)),
                    None => layer.forward(x),
                },
            };
            if activation.is_some() && dropout.rate > 0.0 {
                let [rows, columns] = x.dims();
                let mask: Vec<f32> = (0..rows * columns)
                    .map(|_| {
                        if rng.uniform() < keep {
                            1.0 / keep
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let mask = Tensor::from_data(TensorData::new(mask, [rows, columns]), &x.device());
                x = x * mask;
            }
        }
        x
    }

    /// The logits through burn's op-by-op composition (`Linear`, then our activation module),
    /// as every device but burn-ndarray's runs them: the reference the fused layers are tested
    /// against.
    pub fn forward_composed(&self, input: Tensor<2>) -> Tensor<2> {
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

/// Reads every parameter, which draws the initial values of those not yet drawn.
struct DrawNow;

impl ModuleVisitor for DrawNow {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// Dropout of one training step: the rate and the seed of its masks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// Fraction of hidden outputs zeroed, 0 for none.
    pub rate: f32,
    /// Seed of the masks.
    pub seed: u64,
}

impl Dropout {
    /// No dropout.
    pub const NONE: Self = Self { rate: 0.0, seed: 0 };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_leaves_hidden_layers_untracked_and_the_output_layer_trainable() {
        let device = crate::device::cpu().autodiff();
        let model = Mlp::new(&[8, 8], ActivationKind::Step, 0.0, 1, &device);
        let tracked: Vec<bool> = model
            .layers
            .iter()
            .map(|l| l.weight.val().is_require_grad())
            .collect();
        assert_eq!(tracked, vec![false, false, true]);
        let relu = Mlp::new(&[8, 8], ActivationKind::Relu, 0.0, 1, &device);
        assert!(relu.layers.iter().all(|l| l.weight.val().is_require_grad()));
    }

    /// Every value of a model, in module order.
    fn values(model: &Mlp) -> Vec<f32> {
        struct Values(Vec<f32>);
        impl ModuleVisitor for Values {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.extend(param.val().into_data().iter::<f32>());
            }
        }
        let mut values = Values(Vec::new());
        model.visit(&mut values);
        values.0
    }

    /// Two models made one after the other, read in the other order, each hold their seed's
    /// values: what two trainings in one process need (with burn's lazy parameters, the first
    /// model read after the second was made took numbers from the second's seed).
    #[test]
    fn a_model_holds_its_seeds_values_however_late_it_is_first_read() {
        let device = crate::device::cpu();
        let alone = |seed| values(&Mlp::new(&[8], ActivationKind::Relu, 0.0, seed, &device));
        let (first_alone, second_alone) = (alone(1), alone(2));
        assert_ne!(first_alone, second_alone, "the seed must matter");
        let first = Mlp::new(&[8], ActivationKind::Relu, 0.0, 1, &device);
        let second = Mlp::new(&[8], ActivationKind::Relu, 0.0, 2, &device);
        assert!(
            values(&second) == second_alone,
            "the second model's values changed"
        );
        assert!(
            values(&first) == first_alone,
            "the first model took values from the second's seed"
        );
    }

    #[test]
    fn dropout_zeroes_about_the_rate_and_keeps_the_mean() {
        let device = crate::device::cpu();
        let model = Mlp::new(&[2000], ActivationKind::Identity, 0.0, 1, &device);
        let input = Tensor::<2>::ones([1, INPUT_SIZE], &device);
        let hidden = |dropout| {
            let mut net = Mlp::new(&[2000], ActivationKind::Identity, 0.0, 1, &device);
            net.layers.truncate(1); // the hidden layer's output, dropout applied, is the output
            net.layers[0] = model.layers[0].clone();
            net.activations = model.activations.clone();
            net.forward_with_dropout(input.clone(), dropout)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let plain = hidden(Dropout::NONE);
        let dropped = hidden(Dropout {
            rate: 0.25,
            seed: 3,
        });
        let zeroed = dropped.iter().filter(|&&v| v == 0.0).count();
        assert!((400..600).contains(&zeroed), "{zeroed} of 2000 zeroed");
        for (p, d) in plain.iter().zip(&dropped) {
            assert!(*d == 0.0 || (d - p / 0.75).abs() <= 1e-5 * p.abs().max(1.0));
        }
        assert_eq!(
            dropped,
            hidden(Dropout {
                rate: 0.25,
                seed: 3
            })
        );
    }
}
