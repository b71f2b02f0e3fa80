//! Model conversion, for any Rust code (the commands in `xtask` parse arguments, call it and
//! print): PyTorch's `.pt` format ([`pt`]: its pickle and its zip) and safetensors
//! ([`safetensors`]), the course's template as a state dict both ways ([`state_dict`]: what
//! `export` writes and `import` reads), quantisation ([`quantize`]: int8 and full-integer), and
//! state dicts in 8-bit floats ([`f8`]).
//! std; no burn, no clap.

pub mod f8;
pub mod pt;
pub mod quantize;
pub mod safetensors;
pub mod state_dict;

/// What can go wrong converting a model, by kind; each message names what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `.pt` archive or its pickle is damaged or holds what a state dict does not.
    #[error("{0}")]
    Pt(String),
    /// The safetensors file is damaged.
    #[error("{0}")]
    Safetensors(String),
    /// The state dict does not fit the course's template: a tensor missing, extra or misshaped.
    #[error("{0}")]
    Template(String),
    /// The metadata names an activation, α or normalisation that is not one.
    #[error("{0}")]
    Metadata(String),
    /// The model would be unusable: its logits could leave f32's range.
    #[error("{0}")]
    Unusable(String),
    /// The model file could not be made or read (a value f16 cannot hold, a bad layer).
    #[error(transparent)]
    Model(#[from] infer::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
