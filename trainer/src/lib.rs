//! Trains the fashion-mlp network and exports it as the f16 model file that `infer` reads.
//!
//! Everything that learns is ours, written with burn tensor ops: the activation
//! ([`activation`]), the cross-entropy ([`loss`]) and the momentum SGD ([`optim`]). burn provides
//! the `Linear` layers, autodiff and the CPU (or, with the `wgpu` feature, GPU) backend.
//!
//! A run reads its settings ([`config`]), selects and batches its images ([`batch`]), steps a
//! [`learner::Learner`] through the epochs ([`train`]), saves [`checkpoint`]s, and writes its
//! artifacts and the f16 file ([`run`], [`export`]).

pub mod activation;
pub use recipe::augment;
pub mod batch;
pub mod checkpoint;
pub use recipe::config;
pub mod device;
pub mod distill;
pub mod error;
pub mod export;
// burn-ndarray is deprecated upstream, but it is the CPU backend these kernels extend (`device`).
#[allow(deprecated)]
pub mod fused;
pub mod learner;
pub mod loss;
pub mod model;
pub mod optim;
pub mod run;
pub mod train;

pub use error::{Error, Result};
