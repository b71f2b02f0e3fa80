//! Our mini-batch SGD with momentum and decoupled weight decay, exactly
//! `v ← β·v − γ·η·w − η·g;  w ← w + v`, with one velocity `v` per parameter (zero at first).
//!
//! burn's own SGD differs (weight decay added to the gradient, dampening), so we do not use it.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::{Gradients, Tensor};

/// SGD with momentum β and weight decay γ.
#[derive(Debug, Clone)]
pub struct MomentumSgd {
    /// β, the momentum.
    pub beta: f64,
    /// γ, the weight decay.
    pub gamma: f64,
    velocities: HashMap<ParamId, Tensor<1>>,
}

impl MomentumSgd {
    /// An optimizer with no velocity yet.
    pub fn new(beta: f64, gamma: f64) -> Self {
        Self {
            beta,
            gamma,
            velocities: HashMap::new(),
        }
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
        let shape = w.shape();
        let (beta, gamma, eta) = (self.optim.beta, self.optim.gamma, self.eta);
        // v ← β·v − γ·η·w − η·g
        let decay_and_gradient = w.clone().mul_scalar(-gamma * eta) - g.mul_scalar(eta);
        let v = match self.optim.velocities.remove(&id) {
            Some(v) => v.reshape(shape).mul_scalar(beta) + decay_and_gradient,
            None => decay_and_gradient,
        };
        // w ← w + v
        let mut updated = Tensor::from_inner(w + v.clone());
        if require_grad {
            updated = updated.require_grad();
        }
        self.optim.velocities.insert(id, v.flatten(0, D - 1));
        Param::from_mapped_value(id, updated, mapper)
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

    #[test]
    fn sgd_step_matches_formula() {
        let device = crate::device::cpu().autodiff();
        let start = [1.0f32, -2.0, 0.5];
        let mut module = Weights {
            w: Param::from_tensor(Tensor::from_data(
                TensorData::new(start.to_vec(), [3]),
                &device,
            )),
        };
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
}
