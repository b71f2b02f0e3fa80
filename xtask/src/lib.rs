//! The project's commands (`cargo xtask`), one module each, and what they share: setting up the
//! machine ([`setup`]), range-checked arguments ([`args`]), reading models and writing outputs ([`files`]). The conversions
//! (`.pt`, safetensors, quantisation) are the `convert` crate's. The binary (`main.rs`) parses
//! the command line and calls the `run` of each module.
//!
//! Light on purpose: burn is not a dependency; `train` runs the trainer's own binary.

pub mod args;
pub mod bench;
pub mod board;
pub mod classify;
pub mod compare;
pub mod eval;
pub mod export;
pub mod files;
pub mod flash;
pub mod import;
pub mod models;
pub mod notebook;
pub mod predict;
pub mod quantize;
pub mod robust;
pub mod setup;
pub mod show;
pub mod submit;
pub mod sweep;
pub mod test;
pub mod train;
