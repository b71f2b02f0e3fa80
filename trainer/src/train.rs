//! The training loop: seeded shuffling, mini-batches, our loss and optimizer, learning-rate
//! schedules, per-epoch evaluation, checkpoints and the JSON run log.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use data::{Dataset, Split};
use serde::{Deserialize, Serialize};

use crate::activation::ActivationKind;
use crate::augment::Augmentation;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::loss::CrossEntropy;
use crate::model::{Dropout, INPUT_SIZE, Mlp, NUM_CLASSES};
use crate::optim::MomentumSgd;
use data::transform::SplitMix64;

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// η stays at --lr (after the warm-up).
    Constant,
    /// η follows a half cosine from --lr down to 0 over the run (after the warm-up).
    Cosine,
}

/// The settings that define a run; printed at its start and stored in its checkpoint and log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct TrainConfig {
    /// Hidden layer widths, comma-separated (e.g. 512,512; empty for none).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "512,256")]
    pub hidden: Vec<usize>,
    /// Activation of the hidden layers.
    #[arg(long, value_enum, default_value = "relu")]
    pub activation: ActivationKind,
    /// α of --activation elu (default 1.0) or the initial α of prelu (default 0.25; then learned).
    #[arg(long)]
    pub alpha: Option<f32>,
    /// Passes over the 60,000 training images.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Images per mini-batch.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Peak learning rate η.
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// Momentum β.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Weight decay γ (decoupled: v ← βv − γηw − ηg).
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: Schedule,
    /// Epochs of linear warm-up from 0 to --lr at the start (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    pub warmup_epochs: f64,
    /// Label smoothing ε of the cross-entropy targets (0 = one-hot).
    #[arg(long, default_value_t = 0.1)]
    pub label_smoothing: f32,
    /// Train on only the first N training images (quick experiments); default: all.
    #[arg(long, value_name = "N")]
    pub train_images: Option<usize>,
    /// Hold out the last N training images as a validation set (scored every epoch, never
    /// trained on): tune on it, not on the test set.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub validation: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub augment: Augmentation,
    /// Seed of the initial weights and of the shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl TrainConfig {
    /// Rejects settings that cannot train, naming the argument.
    pub fn validate(&self) -> Result<()> {
        let fail = |message: String| Err(Error::Config(message));
        if let Some(width) = self.hidden.iter().find(|&&w| w == 0 || w > 65_536) {
            return fail(format!(
                "--hidden width {width} must be between 1 and 65536"
            ));
        }
        if self.hidden.len() + 1 > infer::format::MAX_LAYERS {
            return fail(format!(
                "--hidden gives {} layers; the model file holds at most {}",
                self.hidden.len() + 1,
                infer::format::MAX_LAYERS
            ));
        }
        match (self.alpha, self.activation.default_alpha()) {
            (Some(alpha), Some(_)) if !alpha.is_finite() => {
                return fail(format!("--alpha {alpha} must be a finite number"));
            }
            (Some(_), None) => {
                return fail(format!(
                    "--alpha applies to --activation elu or prelu, not {:?}",
                    self.activation
                ));
            }
            _ => {}
        }
        if self.epochs == 0 {
            return fail("--epochs must be at least 1".into());
        }
        self.augment.validate()?;
        if self.train_images == Some(0) {
            return fail("--train-images must be at least 1".into());
        }
        if self.batch_size == 0 {
            return fail("--batch-size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return fail(format!("--lr {} must be a positive number", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return fail(format!("--momentum {} must be in [0, 1)", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return fail(format!("--weight-decay {} must be >= 0", self.weight_decay));
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            return fail(format!(
                "--warmup-epochs {} must be >= 0",
                self.warmup_epochs
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return fail(format!(
                "--label-smoothing {} must be in [0, 1)",
                self.label_smoothing
            ));
        }
        Ok(())
    }

    /// α as used: --alpha, else the activation's default, else 0 (unused).
    pub fn alpha(&self) -> f32 {
        self.alpha
            .or(self.activation.default_alpha())
            .unwrap_or(0.0)
    }

    /// η at optimisation step `step` (from 0) of a run with `steps_per_epoch` steps an epoch.
    pub fn learning_rate(&self, step: usize, steps_per_epoch: usize) -> f64 {
        let total = (self.epochs * steps_per_epoch) as f64;
        let warmup = (self.warmup_epochs * steps_per_epoch as f64).min(total);
        let step = step as f64;
        if step < warmup {
            return self.lr * (step + 1.0) / warmup;
        }
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine => {
                let progress = (step - warmup) / (total - warmup).max(1.0);
                0.5 * self.lr * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
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

/// Where a run writes: the model file, its checkpoint and its JSON log side by side.
#[derive(Debug, Clone)]
pub struct RunPaths {
    /// The f16 model file.
    pub model: PathBuf,
    /// The checkpoint, rewritten after every epoch.
    pub checkpoint: PathBuf,
    /// The JSON run log, rewritten after every epoch.
    pub log: PathBuf,
    /// Loss and accuracy curves, PNG and SVG, rewritten after every epoch.
    pub curves: [PathBuf; 2],
}

impl RunPaths {
    /// Paths derived from the model file's path.
    pub fn new(model: &Path) -> Self {
        Self {
            model: model.to_owned(),
            checkpoint: Checkpoint::path_for(model),
            log: model.with_extension("log.json"),
            curves: [
                model.with_extension("curves.png"),
                model.with_extension("curves.svg"),
            ],
        }
    }
}

/// The JSON run log.
#[derive(Debug, Clone, Serialize)]
pub struct RunLog {
    /// Settings of the run.
    pub config: TrainConfig,
    /// Where the data came from.
    pub data: String,
    /// Input normalisation (mean, std).
    pub normalization: (f32, f32),
    /// Per-epoch records.
    pub epochs: Vec<EpochRecord>,
    /// Set once the model file is written.
    pub model: Option<ModelSummary>,
}

/// The exported model file.
#[derive(Debug, Clone, Serialize)]
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

/// Mean and standard deviation of the training pixels scaled to 0..1.
pub fn pixel_statistics(split: &Split) -> (f32, f32) {
    let n = split.images.len() as f64;
    let sum: f64 = split.images.iter().map(|&p| f64::from(p)).sum();
    let sum_sq: f64 = split
        .images
        .iter()
        .map(|&p| f64::from(p) * f64::from(p))
        .sum();
    let mean = sum / n / 255.0;
    let var = (sum_sq / n / (255.0 * 255.0) - mean * mean).max(1e-12);
    (mean as f32, var.sqrt() as f32)
}

/// Normalised f32 pixels of a whole split.
pub fn normalize(split: &Split, (mean, std): (f32, f32)) -> Vec<f32> {
    split
        .images
        .iter()
        .map(|&p| (f32::from(p) / 255.0 - mean) / std)
        .collect()
}

/// A deterministic permutation of `0..n` for `(seed, epoch)` (SplitMix64 + Fisher-Yates), the
/// same on every platform and version.
pub fn shuffled(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// What one optimisation step did.
pub struct StepOutcome {
    /// The model after the step (unchanged if the loss was not finite).
    pub model: Mlp,
    /// The batch's loss before the step.
    pub loss: f32,
    /// Images of the batch classified right before the step.
    pub right: usize,
}

/// One step of mini-batch SGD on normalised `pixels` (`labels.len() * 784`): forward (with
/// `dropout`), our loss, backward, our optimizer with learning rate `lr`. A NaN or infinite loss
/// leaves the model as it was, for the caller to report.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    model: Mlp,
    optim: &mut MomentumSgd,
    loss_fn: &CrossEntropy,
    pixels: &[f32],
    labels: &[u8],
    lr: f64,
    dropout: Dropout,
    device: &Device,
) -> StepOutcome {
    let input = Tensor::from_data(
        TensorData::new(pixels.to_vec(), [labels.len(), INPUT_SIZE]),
        device,
    );
    let targets = loss_fn.targets(labels, NUM_CLASSES, device);
    let logits = model.forward_with_dropout(input, dropout);
    let predicted = logits.clone().detach().argmax(1).into_data();
    let right = predicted
        .iter::<i64>()
        .zip(labels)
        .filter(|(p, l)| *p == i64::from(**l))
        .count();
    let loss = loss_fn.forward(logits, targets);
    let value: f32 = loss.clone().into_scalar();
    if !value.is_finite() {
        return StepOutcome {
            model,
            loss: value,
            right,
        };
    }
    let mut grads = loss.backward();
    StepOutcome {
        model: optim.step(model, &mut grads, lr),
        loss: value,
        right,
    }
}

/// What the f32 model does on a labelled set.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Predicted class of each image.
    pub predictions: Vec<u8>,
    /// Mean loss (of the run's cross-entropy, label smoothing included).
    pub loss: f64,
}

/// Runs the f32 model (no autodiff) on normalised `pixels` (`n * 784`) with their `labels`.
pub fn evaluate(
    model: &Mlp,
    pixels: &[f32],
    labels: &[u8],
    loss_fn: &CrossEntropy,
    device: &Device,
) -> Evaluation {
    let model = model.valid();
    let device = device.clone().inner();
    let n = labels.len();
    let (mut predictions, mut loss_sum) = (Vec::with_capacity(n), 0.0);
    for start in (0..n).step_by(1000) {
        let rows = (n - start).min(1000);
        let chunk = pixels[start * INPUT_SIZE..(start + rows) * INPUT_SIZE].to_vec();
        let input = Tensor::from_data(TensorData::new(chunk, [rows, INPUT_SIZE]), &device);
        let logits = model.forward(input);
        let targets = loss_fn.targets(&labels[start..start + rows], NUM_CLASSES, &device);
        let loss: f32 = loss_fn.forward(logits.clone(), targets).into_scalar();
        loss_sum += f64::from(loss) * rows as f64;
        predictions.extend(logits.argmax(1).into_data().iter::<i64>().map(|c| c as u8));
    }
    Evaluation {
        predictions,
        loss: loss_sum / n.max(1) as f64,
    }
}

fn accuracy(predictions: &[u8], labels: &[u8]) -> f64 {
    let right = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    right as f64 / labels.len().max(1) as f64
}

/// A finished run: the trained model and what it learned.
pub struct Trained {
    /// The f32 model after the last epoch (its weight average with `--ema`).
    pub model: Mlp,
    /// Input normalisation (mean, std).
    pub normalization: (f32, f32),
    /// Per-epoch records, resumed epochs included.
    pub history: Vec<EpochRecord>,
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

/// Trains `config` on `dataset`, writing a checkpoint and the log after every epoch. With
/// `resume`, continues from that checkpoint (whose settings must equal `config`). When `stop`
/// becomes true (Ctrl-C), finishes the current step, writes a checkpoint that records the
/// position inside the epoch, and returns [`Error::Interrupted`].
pub fn train(
    config: &TrainConfig,
    dataset: &Dataset,
    paths: &RunPaths,
    device: &Device,
    resume: Option<&Checkpoint>,
    quiet: bool,
    stop: &AtomicBool,
) -> Result<Trained> {
    config.validate()?;
    // The validation images are the last --validation ones; training uses the rest (or their
    // first --train-images). Borrowed when neither applies: no 47 MB copy of the training set.
    let all = dataset.train.len();
    if config.validation >= all {
        return Err(Error::Config(format!(
            "--validation {} leaves none of the {all} training images to train on",
            config.validation
        )));
    }
    let trainable = all - config.validation;
    let train_count = config.train_images.map_or(trainable, |n| n.min(trainable));
    let prefix = |range: std::ops::Range<usize>| Split {
        images: dataset.train.images[range.start * INPUT_SIZE..range.end * INPUT_SIZE].to_vec(),
        labels: dataset.train.labels[range].to_vec(),
    };
    let train_split = if train_count == all {
        Cow::Borrowed(&dataset.train)
    } else {
        Cow::Owned(prefix(0..train_count))
    };
    let validation = (config.validation > 0).then(|| prefix(trainable..all));
    let normalization = match resume {
        Some(checkpoint) => checkpoint.normalization,
        None => pixel_statistics(&train_split),
    };
    let train_pixels = normalize(&train_split, normalization);
    let test_pixels = normalize(&dataset.test, normalization);
    let validation_pixels = validation.as_ref().map(|v| normalize(v, normalization));
    let (mean, std) = normalization;
    let mut augmented = vec![0.0f32; INPUT_SIZE];
    let loss_fn = CrossEntropy {
        label_smoothing: config.label_smoothing,
    };

    device.seed(config.seed);
    let mut model = Mlp::new(&config.hidden, config.activation, config.alpha(), device);
    let mut optim = MomentumSgd::new(config.momentum, config.weight_decay);
    if config.augment.ema > 0.0 {
        optim = optim.with_average(f64::from(config.augment.ema));
    }
    let (mut history, mut progress) = (Vec::new(), None);
    if let Some(checkpoint) = resume {
        if checkpoint.config != *config {
            return Err(Error::Checkpoint {
                path: paths.checkpoint.clone(),
                defect: "was written by a run with other settings".into(),
            });
        }
        model = checkpoint.restore(&paths.checkpoint, model, &mut optim)?;
        history = checkpoint.history.clone();
        progress = checkpoint.progress.clone();
    }

    let n = train_split.len();
    let steps_per_epoch = n.div_ceil(config.batch_size);
    let mut log = RunLog {
        config: config.clone(),
        data: dataset.source.to_string(),
        normalization,
        epochs: history.clone(),
        model: None,
    };
    let mut batch_pixels = Vec::with_capacity(config.batch_size * INPUT_SIZE);
    let mut batch_labels = Vec::with_capacity(config.batch_size);
    for epoch in history.len() + 1..=config.epochs {
        let resumed = progress.take().filter(|p: &EpochProgress| p.epoch == epoch);
        let mut state = resumed.unwrap_or(EpochProgress {
            epoch,
            steps_done: 0,
            loss_sum: 0.0,
            right: 0,
            seconds: 0.0,
        });
        let started = Instant::now();
        let bar = progress_bar(steps_per_epoch, epoch, config.epochs, quiet);
        bar.set_position(state.steps_done as u64);
        let order = shuffled(n, config.seed, epoch);
        let mut lr = config.lr;
        for (step, indices) in order
            .chunks(config.batch_size)
            .enumerate()
            .skip(state.steps_done)
        {
            batch_pixels.clear();
            batch_labels.clear();
            // One generator per step: a resumed run draws the same augmentations and masks.
            let mut rng = SplitMix64::for_stream(config.seed, &[epoch as u64, step as u64]);
            for &i in indices {
                if config.augment.transforms_images() {
                    config
                        .augment
                        .apply(train_split.image(i), &mut rng, &mut augmented);
                    batch_pixels.extend(augmented.iter().map(|&v| (v - mean) / std));
                } else {
                    batch_pixels
                        .extend_from_slice(&train_pixels[i * INPUT_SIZE..(i + 1) * INPUT_SIZE]);
                }
                batch_labels.push(train_split.labels[i]);
            }
            lr = config.learning_rate((epoch - 1) * steps_per_epoch + step, steps_per_epoch);
            let dropout = Dropout {
                rate: config.augment.dropout,
                seed: rng.next_u64(),
            };
            let outcome = train_step(
                model,
                &mut optim,
                &loss_fn,
                &batch_pixels,
                &batch_labels,
                lr,
                dropout,
                device,
            );
            model = outcome.model;
            if !outcome.loss.is_finite() {
                bar.abandon();
                return Err(Error::Diverged {
                    loss: outcome.loss,
                    epoch,
                    step: step + 1,
                    checkpoint: paths.checkpoint.exists().then(|| paths.checkpoint.clone()),
                });
            }
            state.right += outcome.right;
            state.loss_sum += f64::from(outcome.loss);
            state.steps_done = step + 1;
            bar.inc(1);
            if step % 20 == 0 {
                bar.set_message(format!("loss {:.4}", state.loss_sum / (step + 1) as f64));
            }
            if stop.load(Ordering::Relaxed) && state.steps_done < steps_per_epoch {
                bar.abandon();
                state.seconds += started.elapsed().as_secs_f64();
                let mut checkpoint =
                    Checkpoint::capture(config, normalization, &history, &model, &optim);
                checkpoint.progress = Some(state.clone());
                checkpoint.save(&paths.checkpoint)?;
                return Err(Error::Interrupted {
                    epoch,
                    step: state.steps_done,
                    checkpoint: paths.checkpoint.clone(),
                });
            }
        }
        let seconds = state.seconds + started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        // With --ema the averaged weights are the ones scored and exported.
        let scored = optim.averaged(model.clone());
        let test = evaluate(
            &scored,
            &test_pixels,
            &dataset.test.labels,
            &loss_fn,
            device,
        );
        let test_accuracy = accuracy(&test.predictions, &dataset.test.labels);
        let validation_accuracy =
            validation
                .as_ref()
                .zip(validation_pixels.as_ref())
                .map(|(split, pixels)| {
                    let scored = evaluate(&model, pixels, &split.labels, &loss_fn, device);
                    accuracy(&scored.predictions, &split.labels)
                });
        let record = EpochRecord {
            epoch,
            train_loss: state.loss_sum / steps_per_epoch as f64,
            train_accuracy: state.right as f64 / n as f64,
            test_loss: test.loss,
            test_accuracy,
            validation_accuracy,
            lr,
            seconds,
        };
        if !quiet {
            let validation = record
                .validation_accuracy
                .map_or(String::new(), |v| format!("  val acc {:.2}%", 100.0 * v));
            eprintln!(
                "epoch {epoch:>3}/{}  loss {:.4}  train acc {:.2}%{validation}  test acc {:.2}%  lr {:.5}  {:.1}s",
                config.epochs,
                record.train_loss,
                100.0 * record.train_accuracy,
                100.0 * record.test_accuracy,
                record.lr,
                record.seconds
            );
        }
        history.push(record);
        Checkpoint::capture(config, normalization, &history, &model, &optim)
            .save(&paths.checkpoint)?;
        log.epochs = history.clone();
        write_log(&paths.log, &log)?;
        if let Err(error) = write_curves(&paths.curves, &history)
            && (epoch == 1 || !quiet)
        {
            eprintln!("warning: no training-curve picture: {error}");
        }
        if stop.load(Ordering::Relaxed) && epoch < config.epochs {
            return Err(Error::Interrupted {
                epoch: epoch + 1,
                step: 0,
                checkpoint: paths.checkpoint.clone(),
            });
        }
    }
    Ok(Trained {
        model: optim.averaged(model),
        normalization,
        history,
    })
}

/// Draws the loss and accuracy curves so far as PNG and SVG. A failure (no font, say) is the
/// caller's to report: pictures never stop a run.
pub fn write_curves(
    paths: &[PathBuf; 2],
    history: &[EpochRecord],
) -> std::result::Result<(), String> {
    let points: Vec<plot::curves::EpochPoint> = history
        .iter()
        .map(|e| plot::curves::EpochPoint {
            epoch: e.epoch,
            train_loss: e.train_loss,
            test_loss: e.test_loss,
            train_accuracy: e.train_accuracy,
            test_accuracy: e.test_accuracy,
        })
        .collect();
    let png = plot::curves::png_bytes(&points).map_err(|e| e.to_string())?;
    let svg = plot::curves::svg(&points).map_err(|e| e.to_string())?;
    for (path, bytes) in paths.iter().zip([png, svg.into_bytes()]) {
        data::atomic::write_atomically(path, &bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Writes the run log atomically.
pub fn write_log(path: &Path, log: &RunLog) -> Result<()> {
    let json = serde_json::to_vec_pretty(log).expect("run log serializes");
    data::atomic::write_atomically(path, &json).map_err(|cause| Error::Io {
        path: path.to_owned(),
        cause,
    })
}

fn progress_bar(steps: usize, epoch: usize, epochs: usize, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(steps as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} batches {elapsed}<{eta} {msg}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: TrainConfig,
    }

    fn defaults() -> TrainConfig {
        Cli::parse_from(["t"]).config
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let a = shuffled(1000, 7, 1);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, shuffled(1000, 7, 1));
        assert_ne!(a, shuffled(1000, 7, 2));
        assert_ne!(a, shuffled(1000, 8, 1));
    }

    #[test]
    fn cosine_schedule_warms_up_then_decays_to_zero() {
        let config = TrainConfig {
            epochs: 10,
            warmup_epochs: 1.0,
            ..defaults()
        };
        let lr = |step| config.learning_rate(step, 100);
        assert!((lr(0) - config.lr / 100.0).abs() < 1e-12);
        assert!((lr(99) - config.lr).abs() < 1e-12);
        assert!((lr(100) - config.lr).abs() < 1e-12);
        assert!(lr(550) < config.lr * 0.51 && lr(550) > config.lr * 0.49);
        assert!(lr(999) < config.lr * 1e-3);
    }

    #[test]
    fn constant_schedule_stays_at_lr() {
        let config = TrainConfig {
            schedule: Schedule::Constant,
            warmup_epochs: 0.0,
            ..defaults()
        };
        assert_eq!(config.learning_rate(0, 10), config.lr);
        assert_eq!(config.learning_rate(150, 10), config.lr);
    }

    #[test]
    fn bad_settings_name_the_argument() {
        for (config, argument) in [
            (
                TrainConfig {
                    hidden: vec![0],
                    ..defaults()
                },
                "--hidden",
            ),
            (
                TrainConfig {
                    epochs: 0,
                    ..defaults()
                },
                "--epochs",
            ),
            (
                TrainConfig {
                    batch_size: 0,
                    ..defaults()
                },
                "--batch-size",
            ),
            (
                TrainConfig {
                    lr: -1.0,
                    ..defaults()
                },
                "--lr",
            ),
            (
                TrainConfig {
                    momentum: 1.5,
                    ..defaults()
                },
                "--momentum",
            ),
            (
                TrainConfig {
                    hidden: vec![8; 9],
                    ..defaults()
                },
                "--hidden",
            ),
        ] {
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains(argument), "{message}");
        }
        defaults().validate().unwrap();
    }
}
