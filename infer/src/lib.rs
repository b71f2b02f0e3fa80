//! `no_std`, heap-free inference for the fashion-mlp model file.
//!
//! The model file format is defined here, once ([`format`]); the trainer writes it with these same
//! types. [`Model::from_bytes`] validates a file and borrows its f16 weights in place (from flash on
//! a microcontroller, from a file buffer on a host), and [`Model::forward_into`] runs the MLP into
//! caller-provided scratch memory. With the `alloc` feature, [`writer`] builds model files; with
//! `std`, [`team`] shares one image's forward pass between threads on a host.
#![cfg_attr(not(test), no_std)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod activation;
pub mod crc32;
pub mod error;
pub mod format;
pub mod kernel;
pub mod model;
#[cfg(feature = "std")]
pub mod team;
#[cfg(feature = "alloc")]
pub mod writer;

pub use activation::{Activation, ActivationKind};
pub use error::Error;
pub use format::{FORMAT_VERSION, LayerBytes, MAGIC, ModelFile, Normalization};
/// Re-exported: [`ModelFile::layers`] is a `heapless` vector.
pub use heapless;
#[cfg(feature = "alloc")]
pub use model::ScratchVec;
pub use model::{Buffers, Model, Scratch};
#[cfg(feature = "alloc")]
pub use writer::{ModelFileBuf, RequantBuf};

/// Pixels per input image (28x28 greyscale), the model's input width.
pub const INPUT_SIZE: usize = 28 * 28;
/// Number of classes, the model's output width.
pub const NUM_CLASSES: usize = 10;
