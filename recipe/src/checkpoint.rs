//! The checkpoint file of a run (`runs/model.ckpt`): what it holds and its bytes (a header
//! with a version and a CRC-32, then the postcard payload). The trainer captures and restores
//! its model and optimizer from it; reading one needs no burn.

use infer::Normalization;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::log::EpochRecord;

/// First bytes of every checkpoint.
const MAGIC: [u8; 8] = *b"FMLPCKPT";
/// Bumped whenever the layout changes (4: a header with a CRC-32, and the data's identity; 5:
/// the distillation settings).
const CHECKPOINT_VERSION: u32 = 5;

/// Which data a run trains on, so a resumed run can check that it sees the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataIdentity {
    /// Images in the training split.
    pub train_images: usize,
    /// Images in the test split.
    pub test_images: usize,
    /// SHA-256 of all images and labels ([`data::Dataset::sha256`]).
    pub sha256: String,
    /// CRC-32 of each `--teacher` file, in order (their soft targets are data too).
    pub teachers: Vec<u32>,
}

impl DataIdentity {
    /// The identity of `dataset` and of the teachers' files, given by their CRC-32s in order.
    pub fn of(dataset: &data::Dataset, teachers: Vec<u32>) -> Self {
        Self {
            train_images: dataset.train.len(),
            test_images: dataset.test.len(),
            sha256: dataset.sha256(),
            teachers,
        }
    }
}

impl std::fmt::Display for DataIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} training and {} test images (SHA-256 {}…)",
            self.train_images,
            self.test_images,
            &self.sha256[..self.sha256.len().min(12)]
        )
    }
}

/// Everything needed to continue a run after its last complete epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The run's settings.
    pub config: TrainConfig,
    /// The data the run trains on.
    pub data: DataIdentity,
    /// Input normalisation.
    pub normalization: Normalization,
    /// One record per completed epoch.
    pub history: Vec<EpochRecord>,
    /// Set when the run stopped inside an epoch.
    pub progress: Option<EpochProgress>,
    /// Parameter values, in module order.
    pub params: Vec<Vec<f32>>,
    /// Velocities, in module order (`None` before a parameter's first step).
    pub velocities: Vec<Option<Vec<f32>>>,
    /// Weight averages (`--ema`), in module order (`None` before the first step or without).
    pub averages: Vec<Option<Vec<f32>>>,
}

impl Checkpoint {
    /// The checkpoint file's bytes: header, CRC-32, payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        let payload = postcard::to_allocvec(self).expect("checkpoint serializes");
        let mut bytes = Vec::with_capacity(16 + payload.len());
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&infer::crc32::crc32(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        bytes
    }

    /// Reads [`Self::to_bytes`]'s output; any other bytes are an error that says what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let rest = bytes
            .strip_prefix(&MAGIC)
            .ok_or("not a checkpoint of this program (no FMLPCKPT header)")?;
        let (version, rest) = rest
            .split_first_chunk::<4>()
            .ok_or("truncated checkpoint header")?;
        let version = u32::from_le_bytes(*version);
        if version != CHECKPOINT_VERSION {
            return Err(format!(
                "checkpoint version {version}, this build reads {CHECKPOINT_VERSION}"
            ));
        }
        let (stored, payload) = rest
            .split_first_chunk::<4>()
            .ok_or("truncated checkpoint header")?;
        let (stored, computed) = (u32::from_le_bytes(*stored), infer::crc32::crc32(payload));
        if stored != computed {
            return Err(format!(
                "checkpoint is corrupt: its payload's CRC-32 is {computed:08x}, the file says \
                 {stored:08x} (truncated, or changed since it was written)"
            ));
        }
        postcard::from_bytes(payload)
            .map_err(|e| format!("checkpoint is corrupt: its payload does not decode ({e})"))
    }
}

/// Where a run stopped inside an epoch (Ctrl-C), so `--resume` continues with the next step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochProgress {
    /// The epoch in progress, from 1.
    pub epoch: usize,
    /// Steps of it already applied.
    pub steps_done: usize,
    /// Sum of their losses.
    pub loss_sum: f64,
    /// Training images they classified right.
    pub right: usize,
    /// Seconds spent on them.
    pub seconds: f64,
}
