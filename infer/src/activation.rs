//! The nine activation functions of the hidden layers, as stored in the model file, in f32 with
//! `libm`. The trainer computes the same formulas with tensor ops; a cross-crate test holds the
//! two within 1e-5 relative error.
//!
//! Formulas are chosen to stay finite and accurate everywhere, ±100 and ±1e-6 included: with
//! `e = exp(−|x|)` ∈ (0, 1], `logistic = (x ≥ 0 ? 1 : e) / (1 + e)`,
//! `softplus = max(x, 0) + ln(1 + e)`, and `tanh` / `elu` use `exp(t) − 1` computed without
//! cancellation.

use serde::{Deserialize, Serialize};

use crate::format::MAX_LAYERS;

/// The hidden-layer activation of a model. The encoding is the variant index: variants are only
/// ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Activation {
    /// f(x) = 0 for x < 0, x for x ≥ 0.
    Relu,
    /// f(x) = x.
    Identity,
    /// f(x) = 0 for x < 0, 1 for x ≥ 0.
    Step,
    /// f(x) = 1 / (1 + e^−x).
    Logistic,
    /// f(x) = 2 / (1 + e^−2x) − 1.
    Tanh,
    /// f(x) = atan(x).
    Arctan,
    /// f(x) = αx for x < 0, x for x ≥ 0, with a learned α per hidden layer.
    Prelu {
        /// α of hidden layer `i` at index `i` (unused entries are 0).
        alphas: [f32; MAX_LAYERS],
    },
    /// f(x) = α(e^x − 1) for x < 0, x for x ≥ 0.
    Elu {
        /// α.
        alpha: f32,
    },
    /// f(x) = ln(1 + e^x).
    Softplus,
}

impl Activation {
    /// The name used on the command line and in logs.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Identity => "identity",
            Activation::Step => "step",
            Activation::Logistic => "logistic",
            Activation::Tanh => "tanh",
            Activation::Arctan => "arctan",
            Activation::Prelu { .. } => "prelu",
            Activation::Elu { .. } => "elu",
            Activation::Softplus => "softplus",
        }
    }

    /// Whether every parameter of this activation is a finite number.
    pub fn is_valid(&self) -> bool {
        match self {
            Activation::Prelu { alphas } => alphas.iter().all(|a| a.is_finite()),
            Activation::Elu { alpha } => alpha.is_finite(),
            _ => true,
        }
    }

    /// Applies the activation of hidden layer `layer` to one value.
    #[inline]
    pub fn apply(&self, layer: usize, x: f32) -> f32 {
        match *self {
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Identity => x,
            Activation::Step => {
                if x < 0.0 {
                    0.0
                } else {
                    1.0
                }
            }
            Activation::Logistic => logistic(x),
            Activation::Tanh => {
                let m = expm1(-2.0 * libm::fabsf(x));
                sign(x) * (-m / (2.0 + m))
            }
            Activation::Arctan => libm::atanf(x),
            Activation::Prelu { alphas } => {
                if x < 0.0 {
                    alphas.get(layer).copied().unwrap_or(0.0) * x
                } else {
                    x
                }
            }
            Activation::Elu { alpha } => {
                if x < 0.0 {
                    alpha * expm1(x)
                } else {
                    x
                }
            }
            Activation::Softplus => libm::fmaxf(x, 0.0) + libm::log1pf(libm::expf(-libm::fabsf(x))),
        }
    }

    /// Applies the activation of hidden layer `layer` in place.
    pub fn apply_slice(&self, layer: usize, values: &mut [f32]) {
        for value in values {
            *value = self.apply(layer, *value);
        }
    }
}

/// 1 / (1 + e^−x) without overflow: `(x ≥ 0 ? 1 : e) / (1 + e)` with `e = exp(−|x|)`.
#[inline]
fn logistic(x: f32) -> f32 {
    let e = libm::expf(-libm::fabsf(x));
    let numerator = if x >= 0.0 { 1.0 } else { e };
    numerator / (1.0 + e)
}

/// e^t − 1 for t ≤ 0 without cancellation: `e^t − 1` below −0.5, Kahan's `(u − 1)·t / ln u`
/// with `u = e^t` on [−0.5, 0]; written like the trainer's tensor version so both round alike.
#[inline]
fn expm1(t: f32) -> f32 {
    if t < -0.5 {
        return libm::expf(t) - 1.0;
    }
    let u = libm::expf(t);
    if u == 1.0 {
        t
    } else {
        (u - 1.0) * t / libm::logf(u)
    }
}

/// −1, 0 or 1.
#[inline]
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}
