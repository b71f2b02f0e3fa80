//! Per-epoch checkpoints: the run's settings, the data it sees, its history, every parameter and
//! every velocity, so `--resume` continues exactly where the last complete epoch ended. The file
//! and its bytes are `recipe::checkpoint`'s; here the learner is captured and restored.
//!
//! A file is `FMLPCKPT`, the format version (u32, little-endian), the CRC-32 of the payload
//! (u32, little-endian), then the payload: the postcard-encoded [`Checkpoint`]. The checksum is
//! verified before the payload is decoded, so a changed byte is an error, not a different run.

use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};
use infer::Normalization;
pub use recipe::checkpoint::{Checkpoint, DataIdentity, EpochProgress};

use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::learner::Learner;
use crate::optim::MomentumSgd;
use crate::run::EpochRecord;

/// Captures the learner's model and optimizer after `history.len()` epochs.
pub fn capture(
    config: &TrainConfig,
    data: &DataIdentity,
    normalization: Normalization,
    history: &[EpochRecord],
    learner: &Learner,
) -> Checkpoint {
    let mut collect = Collect {
        optim: &learner.optim,
        params: Vec::new(),
        velocities: Vec::new(),
        averages: Vec::new(),
    };
    learner.model().visit(&mut collect);
    Checkpoint {
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

/// Puts `checkpoint`'s parameters and velocities into `learner` (built with the same
/// settings); `path` names the checkpoint in errors.
pub fn restore(checkpoint: &Checkpoint, path: &Path, learner: &mut Learner) -> Result<()> {
    let model = learner.model().clone();
    let mut restore = Restore {
        checkpoint,
        optim: &mut learner.optim,
        index: 0,
        defect: None,
    };
    let model = model.map(&mut restore);
    let defect = restore.defect.or_else(|| {
        (restore.index != checkpoint.params.len()).then(|| {
            format!(
                "holds {} parameters, the model {}",
                checkpoint.params.len(),
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

/// Writes `checkpoint` atomically.
pub fn save(checkpoint: &Checkpoint, path: &Path) -> Result<()> {
    data::atomic::write_atomically(path, &checkpoint.to_bytes()).map_err(|cause| Error::Io {
        path: path.to_owned(),
        cause,
    })
}

/// Reads a checkpoint written by [`save`]; an error names the file.
pub fn load(path: &Path) -> Result<Checkpoint> {
    // Parameters, velocities and averages of the largest model file: a few times its bytes.
    let bytes = data::input::read(path, 8 * data::input::MAX_DATA).map_err(|cause| Error::Io {
        path: path.to_owned(),
        cause,
    })?;
    Checkpoint::from_bytes(&bytes).map_err(|defect| Error::Checkpoint {
        path: path.to_owned(),
        defect,
    })
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
