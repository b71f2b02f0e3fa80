//! Our mini-batch SGD with momentum and decoupled weight decay, exactly
//! `v ← β·v − γ·η·w − η·g;  w ← w + v`, with one velocity `v` per parameter (zero at first).
//!
//! burn's own SGD differs (weight decay added to the gradient, dampening), so we do not use it.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::{Gradients, Tensor};

use crate::fused::StepCoefficients;

/// SGD with momentum β and weight decay γ, optionally keeping an exponential moving average of
/// the weights (`--ema`): after every step `a ← δ·a + (1 − δ)·w`, starting from the first
/// step's weights.
#[derive(Debug, Clone)]
pub struct MomentumSgd {
    /// β, the momentum.
    pub beta: f64,
    /// γ, the weight decay.
    pub gamma: f64,
    velocities: HashMap<ParamId, Tensor<1>>,
    /// δ of the weight average, if one is kept.
    average_decay: Option<f64>,
    averages: HashMap<ParamId, Tensor<1>>,
}

impl MomentumSgd {
    /// An optimizer with no velocity yet.
    pub fn new(beta: f64, gamma: f64) -> Self {
        Self {
            beta,
            gamma,
            velocities: HashMap::new(),
            average_decay: None,
            averages: HashMap::new(),
        }
    }

    /// Also keeps an exponential moving average of the weights with decay δ = `decay`.
    pub fn with_average(mut self, decay: f64) -> Self {
        self.average_decay = Some(decay);
        self
    }

    /// The averaged weights of a parameter, flattened; `None` before its first step or without
    /// averaging.
    pub fn average(&self, id: ParamId) -> Option<&Tensor<1>> {
        self.averages.get(&id)
    }

    /// Sets the average of a parameter (flattened), as when resuming from a checkpoint.
    pub fn set_average(&mut self, id: ParamId, average: Tensor<1>) {
        self.averages.insert(id, average);
    }

    /// `module` with every averaged parameter replaced by its average (for evaluation and
    /// export); unchanged without averaging.
    pub fn averaged<M: Module>(&self, module: M) -> M {
        if self.averages.is_empty() {
            return module;
        }
        module.map(&mut Averaged { optim: self })
    }

    /// Applies one step with learning rate η = `eta` to every parameter of `module` that has a
    /// gradient in `grads`.
    pub fn step<M: Module>(&mut self, module: M, grads: &mut Gradients, eta: f64) -> M {
        let mut step = Step {
            optim: self,
            grads,
            eta,
        };
        module.map(&mut step)
    }

    /// The velocity of a parameter, flattened; `None` before its first step.
    pub fn velocity(&self, id: ParamId) -> Option<&Tensor<1>> {
        self.velocities.get(&id)
    }

    /// Sets the velocity of a parameter (flattened), as when resuming from a checkpoint.
    pub fn set_velocity(&mut self, id: ParamId, velocity: Tensor<1>) {
        self.velocities.insert(id, velocity);
    }
}

struct Step<'a> {
    optim: &'a mut MomentumSgd,
    grads: &'a mut Gradients,
    eta: f64,
}

impl ModuleMapper for Step<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(g) = tensor.grad_remove(self.grads) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let w = tensor.inner();
        let step = StepCoefficients {
            beta: self.optim.beta,
            gamma_eta: self.optim.gamma * self.eta,
            eta: self.eta,
            average_decay: self.optim.average_decay,
        };
        let velocity = self.optim.velocities.remove(&id);
        let average = self.optim.averages.remove(&id);
        let (w, velocity, average) = if crate::fused::runs_on(&w.device()) {
            crate::fused::momentum_step(w, velocity, g, average, step)
        } else {
            composed_step(w, velocity, g, average, step)
        };
        if let Some(average) = average {
            self.optim.averages.insert(id, average);
        }
        self.optim.velocities.insert(id, velocity);
        let mut updated = Tensor::from_inner(w);
        if require_grad {
            updated = updated.require_grad();
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}

/// One step of our SGD through burn's element-wise operations (every device but
/// burn-ndarray's, whose fused pass computes the same): the new weight, and the flattened new
/// velocity and average.
pub(crate) fn composed_step<const D: usize>(
    w: Tensor<D>,
    velocity: Option<Tensor<1>>,
    g: Tensor<D>,
    average: Option<Tensor<1>>,
    step: StepCoefficients,
) -> (Tensor<D>, Tensor<1>, Option<Tensor<1>>) {
    let shape = w.shape();
    // v ← β·v − γ·η·w − η·g
    let decay_and_gradient = w.clone().mul_scalar(-step.gamma_eta) - g.mul_scalar(step.eta);
    let v = match velocity {
        Some(v) => v.reshape(shape).mul_scalar(step.beta) + decay_and_gradient,
        None => decay_and_gradient,
    };
    // w ← w + v
    let w = w + v.clone();
    let average = step.average_decay.map(|decay| {
        // a ← δ·a + (1 − δ)·w
        let flat = w.clone().flatten(0, D - 1);
        match average {
            Some(a) => a.mul_scalar(decay) + flat.mul_scalar(1.0 - decay),
            None => flat,
        }
    });
    (w, v.flatten(0, D - 1), average)
}

struct Averaged<'a> {
    optim: &'a MomentumSgd,
}

impl ModuleMapper for Averaged<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(average) = self.optim.averages.get(&id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let mut value = Tensor::from_inner(average.clone().reshape(tensor.shape()));
        if require_grad {
            value = value.require_grad();
        }
        Param::from_mapped_value(id, value, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::tensor::TensorData;

    #[derive(Module, Debug)]
    struct Weights {
        w: Param<Tensor<1>>,
    }

    /// A trainable 1-D parameter holding `start`, on the CPU with autodiff.
    fn weights(start: &[f32]) -> Weights {
        let device = crate::device::cpu().autodiff();
        Weights {
            w: Param::from_tensor(Tensor::from_data(
                TensorData::new(start.to_vec(), [start.len()]),
                &device,
            )),
        }
    }

    #[test]
    fn sgd_step_matches_formula() {
        let start = [1.0f32, -2.0, 0.5];
        let mut module = weights(&start);
        let (beta, gamma, eta) = (0.9, 0.01, 0.1);
        let mut optim = MomentumSgd::new(beta, gamma);
        // Loss Σ w² / 2 + Σ w: gradient w + 1.
        let mut w: Vec<f64> = start.iter().map(|&x| f64::from(x)).collect();
        let mut v = [0.0f64; 3];
        for _ in 0..3 {
            let x = module.w.val();
            let loss = (x.clone() * x.clone()).sum().mul_scalar(0.5) + x.sum();
            let mut grads = loss.backward();
            module = optim.step(module, &mut grads, eta);
            for i in 0..3 {
                let g = w[i] + 1.0;
                v[i] = beta * v[i] - gamma * eta * w[i] - eta * g;
                w[i] += v[i];
            }
            let got = module.w.val().into_data().try_to_vec::<f32>().unwrap();
            for i in 0..3 {
                assert!(
                    (f64::from(got[i]) - w[i]).abs() < 1e-6,
                    "{i}: {} vs {}",
                    got[i],
                    w[i]
                );
            }
        }
    }

    #[test]
    fn weight_average_follows_its_formula_and_replaces_the_values() {
        let start = [1.0f32, -2.0, 0.5];
        let mut module = weights(&start);
        let (beta, eta, decay) = (0.9, 0.1, 0.75);
        let mut optim = MomentumSgd::new(beta, 0.0).with_average(decay);
        let mut w: Vec<f64> = start.iter().map(|&x| f64::from(x)).collect();
        let (mut v, mut average) = ([0.0f64; 3], None::<Vec<f64>>);
        for _ in 0..4 {
            let x = module.w.val();
            let loss = (x.clone() * x.clone()).sum().mul_scalar(0.5);
            let mut grads = loss.backward();
            module = optim.step(module, &mut grads, eta);
            for i in 0..3 {
                v[i] = beta * v[i] - eta * w[i];
                w[i] += v[i];
            }
            average = Some(match average {
                None => w.clone(),
                Some(a) => (0..3)
                    .map(|i| decay * a[i] + (1.0 - decay) * w[i])
                    .collect(),
            });
        }
        let expected = average.unwrap();
        let averaged = optim.averaged(module.clone());
        let got = averaged.w.val().into_data().try_to_vec::<f32>().unwrap();
        let live = module.w.val().into_data().try_to_vec::<f32>().unwrap();
        for i in 0..3 {
            assert!(
                (f64::from(got[i]) - expected[i]).abs() < 1e-6,
                "{got:?} vs {expected:?}"
            );
            assert!(
                (f64::from(live[i]) - w[i]).abs() < 1e-6,
                "the live weights stay"
            );
        }
        assert!(averaged.w.val().is_require_grad());
    }
}
