//! The JSON run log (`runs/model.log.json`): one type, which the trainer writes and the
//! commands (`sweep`, `compare`, `models`, `submit`'s notebook) read.

use std::path::{Path, PathBuf};

use infer::Normalization;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;

/// The JSON run log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunLog {
    /// The command that repeats the run (`cargo xtask models` ships it with the model).
    pub command: String,
    /// Settings of the run.
    pub config: TrainConfig,
    /// Where the data came from.
    pub data: String,
    /// How many images of each kind the run used.
    pub images: Images,
    /// Input normalisation.
    pub normalization: Normalization,
    /// Per-epoch records.
    pub epochs: Vec<EpochRecord>,
    /// Set once the model file is written.
    pub model: Option<ModelSummary>,
}

impl RunLog {
    /// Writes the log atomically to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("run log serializes");
        data::atomic::write_atomically(path, &json)
    }

    /// Reads the log at `path`; an error names the file and what is wrong.
    pub fn read(path: &Path) -> std::result::Result<Self, String> {
        let text = data::input::read(path, data::input::MAX_TEXT)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        serde_json::from_slice(&text)
            .map_err(|e| format!("{}: not a run log of this version: {e}", path.display()))
    }
}

/// The exported model file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelSummary {
    /// Its path.
    pub path: PathBuf,
    /// Its size.
    pub bytes: usize,
    /// Test accuracy of the f32 model.
    pub f32_test_accuracy: f64,
    /// Test accuracy of the f16 file through `infer`.
    pub f16_test_accuracy: f64,
    /// Fraction of test images on which the two predict the same class.
    pub f16_agreement: f64,
}

/// How many images a run used of each kind (`--train-images` and `--validation` applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Images {
    /// Trained on.
    pub train: usize,
    /// Held out and scored every epoch.
    pub validation: usize,
    /// Scored every epoch and at the end.
    pub test: usize,
}

/// What one epoch did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's mini-batches.
    pub train_loss: f64,
    /// Fraction of the training images classified right during the epoch (before each step).
    pub train_accuracy: f64,
    /// Test loss of the f32 model at the epoch's end.
    pub test_loss: f64,
    /// Test accuracy of the f32 model at the epoch's end.
    pub test_accuracy: f64,
    /// Accuracy on the held-out validation images (`--validation`), if any.
    pub validation_accuracy: Option<f64>,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    /// Seconds of training (shuffling, forward, loss, backward, step; evaluation excluded).
    pub seconds: f64,
}
