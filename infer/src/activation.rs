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

/// Which of the nine activations, without its parameters: the `--activation` value of the
/// trainer and the commands, and the one list of their names. In the order of the course's table
/// (the trainer's checkpoints store the variant index, so variants are only ever appended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationKind {
    /// f(x) = x; f' = 1.
    Identity,
    /// f(x) = 0 for x < 0, 1 for x ≥ 0; f' = 0: cannot train the layers before it.
    Step,
    /// f(x) = 1/(1+e^−x); f' = f(1−f).
    Logistic,
    /// f(x) = 2/(1+e^−2x) − 1; f' = 1 − f².
    Tanh,
    /// f(x) = atan(x); f' = 1/(x²+1).
    Arctan,
    /// f(x) = 0 for x < 0, x for x ≥ 0; f' = 0 / 1.
    Relu,
    /// f(x) = αx for x < 0, x for x ≥ 0, α learned per hidden layer; f' = α / 1.
    Prelu,
    /// f(x) = α(e^x − 1) for x < 0, x for x ≥ 0; f' = f + α / 1.
    Elu,
    /// f(x) = ln(1 + e^x); f' = 1/(1+e^−x).
    Softplus,
}

impl ActivationKind {
    /// All nine, in the order of the course's table.
    pub const ALL: [ActivationKind; 9] = [
        ActivationKind::Identity,
        ActivationKind::Step,
        ActivationKind::Logistic,
        ActivationKind::Tanh,
        ActivationKind::Arctan,
        ActivationKind::Relu,
        ActivationKind::Prelu,
        ActivationKind::Elu,
        ActivationKind::Softplus,
    ];

    /// The name used on the command line, in logs and in exported metadata.
    pub fn name(self) -> &'static str {
        match self {
            ActivationKind::Identity => "identity",
            ActivationKind::Step => "step",
            ActivationKind::Logistic => "logistic",
            ActivationKind::Tanh => "tanh",
            ActivationKind::Arctan => "arctan",
            ActivationKind::Relu => "relu",
            ActivationKind::Prelu => "prelu",
            ActivationKind::Elu => "elu",
            ActivationKind::Softplus => "softplus",
        }
    }

    /// The default α: PReLU's initial value, ELU's constant; `None` for the others.
    pub fn default_alpha(self) -> Option<f32> {
        match self {
            ActivationKind::Prelu => Some(0.25),
            ActivationKind::Elu => Some(1.0),
            _ => None,
        }
    }
}

impl core::fmt::Display for ActivationKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// An activation name that is none of the nine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownActivation;

impl core::fmt::Display for UnknownActivation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("not one of identity, step, logistic, tanh, arctan, relu, prelu, elu, softplus")
    }
}

impl core::str::FromStr for ActivationKind {
    type Err = UnknownActivation;

    /// A name of [`ActivationKind::name`]; `sigmoid` is taken for `logistic`.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        if name == "sigmoid" {
            return Ok(ActivationKind::Logistic);
        }
        ActivationKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or(UnknownActivation)
    }
}

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
    /// `kind` with its parameters: `alphas` holds ELU's α (one value, 1.0 when empty) or PReLU's
    /// α of each hidden layer; the other activations ignore it.
    pub fn new(kind: ActivationKind, alphas: &[f32]) -> Self {
        match kind {
            ActivationKind::Identity => Activation::Identity,
            ActivationKind::Step => Activation::Step,
            ActivationKind::Logistic => Activation::Logistic,
            ActivationKind::Tanh => Activation::Tanh,
            ActivationKind::Arctan => Activation::Arctan,
            ActivationKind::Relu => Activation::Relu,
            ActivationKind::Prelu => {
                let mut per_layer = [0.0; MAX_LAYERS];
                for (slot, &alpha) in per_layer.iter_mut().zip(alphas) {
                    *slot = alpha;
                }
                Activation::Prelu { alphas: per_layer }
            }
            ActivationKind::Elu => Activation::Elu {
                alpha: alphas.first().copied().unwrap_or(1.0),
            },
            ActivationKind::Softplus => Activation::Softplus,
        }
    }

    /// Which of the nine this is.
    pub fn kind(&self) -> ActivationKind {
        match self {
            Activation::Relu => ActivationKind::Relu,
            Activation::Identity => ActivationKind::Identity,
            Activation::Step => ActivationKind::Step,
            Activation::Logistic => ActivationKind::Logistic,
            Activation::Tanh => ActivationKind::Tanh,
            Activation::Arctan => ActivationKind::Arctan,
            Activation::Prelu { .. } => ActivationKind::Prelu,
            Activation::Elu { .. } => ActivationKind::Elu,
            Activation::Softplus => ActivationKind::Softplus,
        }
    }

    /// The name used on the command line and in logs.
    pub fn name(&self) -> &'static str {
        self.kind().name()
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
