//! Per-epoch checkpoints: the run's settings, the data it sees, its history, every parameter and
//! every velocity, so `--resume` continues exactly where the last complete epoch ended.
//!
//! A file is `FMLPCKPT`, the format version (u32, little-endian), the CRC-32 of the payload
//! (u32, little-endian), then the payload: the postcard-encoded [`Checkpoint`]. The checksum is
//! verified before the payload is decoded, so a changed byte is an error, not a different run.

use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};
use infer::Normalization;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::distill::TeacherFiles;
use crate::error::{Error, Result};
use crate::learner::Learner;
use crate::optim::MomentumSgd;
use crate::run::EpochRecord;

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
    /// The identity of `dataset` and of the `teachers`' files.
    pub fn of(dataset: &data::Dataset, teachers: &TeacherFiles) -> Self {
        Self {
            train_images: dataset.train.len(),
            test_images: dataset.test.len(),
            sha256: dataset.sha256(),
            teachers: teachers.checksums(),
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
    params: Vec<Vec<f32>>,
    /// Velocities, in module order (`None` before a parameter's first step).
    velocities: Vec<Option<Vec<f32>>>,
    /// Weight averages (`--ema`), in module order (`None` before the first step or without).
    averages: Vec<Option<Vec<f32>>>,
}

impl Checkpoint {
    /// Captures the learner's model and optimizer after `history.len()` epochs.
    pub fn capture(
        config: &TrainConfig,
        data: &DataIdentity,
        normalization: Normalization,
        history: &[EpochRecord],
        learner: &Learner,
    ) -> Self {
        let mut collect = Collect {
            optim: &learner.optim,
            params: Vec::new(),
            velocities: Vec::new(),
            averages: Vec::new(),
        };
        learner.model().visit(&mut collect);
        Self {
            config: config.clone(),
            data: data.clone(),
            normalization,
            history: history.to_vec(),
            progress: None,
            params: collect.params,
            velocities: collect.velocities,
            averages: collect.averages,
        }
    }

    /// Puts the captured parameters and velocities into `learner` (built with the same
    /// settings); `path` names the checkpoint in errors.
    pub fn restore(&self, path: &Path, learner: &mut Learner) -> Result<()> {
        let model = learner.model().clone();
        let mut restore = Restore {
            checkpoint: self,
            optim: &mut learner.optim,
            index: 0,
            defect: None,
        };
        let model = model.map(&mut restore);
        let defect = restore.defect.or_else(|| {
            (restore.index != self.params.len()).then(|| {
                format!(
                    "holds {} parameters, the model {}",
                    self.params.len(),
                    restore.index
                )
            })
        });
        match defect {
            Some(defect) => Err(Error::Checkpoint {
                path: path.to_owned(),
                defect,
            }),
            None => {
                learner.set_model(model);
                Ok(())
            }
        }
    }

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

    /// Writes the checkpoint atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        data::atomic::write_atomically(path, &self.to_bytes()).map_err(|cause| Error::Io {
            path: path.to_owned(),
            cause,
        })
    }

    /// Reads a checkpoint written by [`Self::save`]; an error names the file.
    pub fn load(path: &Path) -> Result<Self> {
        // Parameters, velocities and averages of the largest model file: a few times its bytes.
        let bytes =
            data::input::read(path, 8 * data::input::MAX_DATA).map_err(|cause| Error::Io {
                path: path.to_owned(),
                cause,
            })?;
        Self::from_bytes(&bytes).map_err(|defect| Error::Checkpoint {
            path: path.to_owned(),
            defect,
        })
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

struct Collect<'a> {
    optim: &'a MomentumSgd,
    params: Vec<Vec<f32>>,
    velocities: Vec<Option<Vec<f32>>>,
    averages: Vec<Option<Vec<f32>>>,
}

impl ModuleVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.params.push(
            param
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32 parameters"),
        );
        let velocity = self
            .optim
            .velocity(param.id)
            .map(|v| v.to_data().try_to_vec::<f32>());
        self.velocities
            .push(velocity.map(|v| v.expect("f32 velocity")));
        let average = self
            .optim
            .average(param.id)
            .map(|a| a.to_data().try_to_vec::<f32>().expect("f32 average"));
        self.averages.push(average);
    }
}

struct Restore<'a> {
    checkpoint: &'a Checkpoint,
    optim: &'a mut MomentumSgd,
    index: usize,
    defect: Option<String>,
}

impl ModuleMapper for Restore<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let index = self.index;
        self.index += 1;
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let (Some(values), Some(velocity)) = (
            self.checkpoint.params.get(index),
            self.checkpoint.velocities.get(index),
        ) else {
            self.defect
                .get_or_insert(format!("has no parameter {index}"));
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let numel = shape.num_elements();
        if values.len() != numel || velocity.as_ref().is_some_and(|v| v.len() != numel) {
            self.defect.get_or_insert(format!(
                "parameter {index} has {} values, the model needs {numel}",
                values.len()
            ));
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let device = tensor.device();
        let require_grad = tensor.is_require_grad();
        let mut restored = Tensor::from_data(TensorData::new(values.clone(), shape), &device);
        if require_grad {
            restored = restored.require_grad();
        }
        let inner_device = device.clone().inner();
        if let Some(velocity) = velocity {
            let velocity = TensorData::new(velocity.clone(), [numel]);
            self.optim
                .set_velocity(id, Tensor::from_data(velocity, &inner_device));
        }
        match self.checkpoint.averages.get(index) {
            Some(Some(average)) if average.len() == numel => {
                let average = TensorData::new(average.clone(), [numel]);
                self.optim
                    .set_average(id, Tensor::from_data(average, &inner_device));
            }
            Some(Some(average)) => {
                self.defect.get_or_insert(format!(
                    "average {index} has {} values, the model needs {numel}",
                    average.len()
                ));
            }
            _ => {}
        }
        Param::from_mapped_value(id, restored, mapper)
    }
}
