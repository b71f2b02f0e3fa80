//! Activation functions of the hidden layers, as stored in the model file.

use serde::{Deserialize, Serialize};

/// The hidden-layer activation of a model. New variants are appended (the encoding is the
/// variant index), so older files keep their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Activation {
    /// f(x) = max(0, x).
    Relu,
}

impl Activation {
    /// The name used on the command line and in logs.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Relu => "relu",
        }
    }

    /// Whether every parameter of this activation is usable.
    pub fn is_valid(&self) -> bool {
        match self {
            Activation::Relu => true,
        }
    }

    /// Applies the activation to one value.
    #[inline]
    pub fn apply(&self, x: f32) -> f32 {
        match self {
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
        }
    }

    /// Applies the activation in place.
    pub fn apply_slice(&self, values: &mut [f32]) {
        for value in values {
            *value = self.apply(*value);
        }
    }
}
