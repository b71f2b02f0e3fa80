//! A run's artifacts: where it writes (the model file, its checkpoint, the JSON log and the
//! curves, side by side), what each epoch recorded, and the end of a run: the f16 model file
//! exported, scored through `infer` and written with the final log.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use data::Dataset;
use infer::{Normalization, ScratchVec};

use crate::batch::normalize;
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::export::model_file_bytes;
use crate::learner::evaluate;
use crate::model::Mlp;
pub use recipe::log::{EpochRecord, Images, ModelSummary, RunLog};

/// A run about to start: its validated settings, where it writes, and how much it says.
#[derive(Debug, Clone)]
pub struct Run {
    /// The settings (validated).
    pub config: TrainConfig,
    /// Where it writes.
    pub paths: RunPaths,
    /// Only the summary: no progress bars or per-epoch lines.
    pub quiet: bool,
    /// Steps of the run (counted from 1 over all epochs) after which it pauses: see [`Pause`].
    pub pause: Pause,
}

/// Steps after which a run stops and waits, so that a test can act at a known point of it (send a
/// signal, kill it) instead of guessing one from the clock. After each of those steps, the run
/// prints `paused after step G: epoch E, step S of N` on stderr and waits for a line on stdin (or
/// its end) before it checks for a stop request and goes on. The trainer's binary takes them from
/// `FASHION_MLP_PAUSE_AFTER_STEPS` (comma-separated); runs made in-process have none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pause(pub Vec<usize>);

impl Pause {
    /// The environment variable the trainer's binary reads.
    pub const ENV: &str = "FASHION_MLP_PAUSE_AFTER_STEPS";

    /// The steps `FASHION_MLP_PAUSE_AFTER_STEPS` names (none when it is unset or empty); a value
    /// that is not a list of step numbers is an error naming the variable.
    pub fn from_env() -> Result<Self> {
        let Some(value) = std::env::var_os(Self::ENV) else {
            return Ok(Self::default());
        };
        let value = value.to_string_lossy();
        value
            .split(',')
            .map(str::trim)
            .filter(|step| !step.is_empty())
            .map(|step| match step.parse::<usize>() {
                Ok(step) if step > 0 => Ok(step),
                _ => Err(Error::Config(format!(
                    "{}={value}: not a comma-separated list of step numbers (from 1)",
                    Self::ENV
                ))),
            })
            .collect::<Result<_>>()
            .map(Self)
    }

    /// After the run's step `step` (from 1), of step `in_epoch` of `steps_per_epoch` in `epoch`:
    /// when it is one of the pauses, says so and waits for a line on stdin.
    pub fn after(&self, step: usize, epoch: usize, in_epoch: usize, steps_per_epoch: usize) {
        if !self.0.contains(&step) {
            return;
        }
        eprintln!("paused after step {step}: epoch {epoch}, step {in_epoch} of {steps_per_epoch}");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
}

impl Run {
    /// A run of `config` writing the model file `model` and its companions beside it; settings
    /// that cannot train are an error naming the argument.
    /// Nothing is written yet: paths that cannot be written (a directory, a parent that is a
    /// file, a name not ending in `.fmlp`) are an error naming `--out` before training starts.
    pub fn new(config: TrainConfig, model: &Path, quiet: bool) -> Result<Self> {
        config.validate()?;
        let paths = RunPaths::new(model);
        paths.check()?;
        Ok(Self {
            config,
            paths,
            quiet,
            pause: Pause::default(),
        })
    }

    /// Refuses a run whose outputs would overwrite one of its inputs: the `data` files, and
    /// each `--teacher` file and the checkpoint beside it; an error names both.
    pub fn check_inputs(&self, data: &[PathBuf]) -> Result<()> {
        let teachers = self.config.distill.teachers.iter().flat_map(|teacher| {
            [
                (teacher.clone(), "a --teacher file"),
                (
                    RunPaths::new(teacher).checkpoint,
                    "a --teacher file's checkpoint",
                ),
            ]
        });
        let inputs: Vec<(PathBuf, &str)> = data
            .iter()
            .map(|file| (file.clone(), "one of its data files"))
            .chain(teachers)
            .collect();
        for (role, output) in self.paths.all() {
            if let Some((input, what)) = inputs
                .iter()
                .find(|(input, _)| data::atomic::same_file(input, output))
            {
                return Err(Error::Config(format!(
                    "--out {}: the run's {role} would be written over {}, {what}",
                    self.paths.model.display(),
                    input.display()
                )));
            }
        }
        Ok(())
    }

    /// The log of this run after `epochs`, with the model's summary once it is written.
    pub fn log(
        &self,
        dataset: &Dataset,
        images: Images,
        normalization: Normalization,
        epochs: &[EpochRecord],
        model: Option<ModelSummary>,
    ) -> RunLog {
        RunLog {
            command: self.config.command_line(&self.paths.model),
            config: self.config.clone(),
            data: dataset.source.to_string(),
            images,
            normalization,
            epochs: epochs.to_vec(),
            model,
        }
    }
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
    /// Each path with what it holds.
    pub fn all(&self) -> [(&'static str, &Path); 5] {
        [
            ("model file", &self.model),
            ("checkpoint", &self.checkpoint),
            ("log", &self.log),
            ("curves (PNG)", &self.curves[0]),
            ("curves (SVG)", &self.curves[1]),
        ]
    }

    /// Checks that every path can be written, before anything is.
    fn check(&self) -> Result<()> {
        let out = self.model.display();
        if self.model.extension().is_none_or(|e| e != "fmlp") {
            return Err(Error::Config(format!(
                "--out {out}: a model file's name ends in .fmlp (its checkpoint, log and curves \
                 are written beside it as .ckpt, .log.json, .curves.png and .curves.svg)"
            )));
        }
        for (role, path) in self.all() {
            data::atomic::check_output(path)
                .map_err(|e| Error::Config(format!("--out {out}: the {role} {e}")))?;
        }
        Ok(())
    }

    /// Paths derived from the model file's path.
    pub fn new(model: &Path) -> Self {
        Self {
            model: model.to_owned(),
            checkpoint: model.with_extension("ckpt"),
            log: model.with_extension("log.json"),
            curves: [
                model.with_extension("curves.png"),
                model.with_extension("curves.svg"),
            ],
        }
    }
}

/// A run's model and what it learned: after the last epoch, or so far.
pub struct Trained {
    /// The f32 model (its weight average with `--ema`).
    pub model: Mlp,
    /// How many images it trained, validated and was tested on.
    pub images: Images,
    /// Input normalisation.
    pub normalization: Normalization,
    /// Per-epoch records, resumed epochs included.
    pub history: Vec<EpochRecord>,
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

/// The end of a run: exports `trained` as the f16 model file, scores the file through `infer` on
/// the test set against the f32 model, and writes the file and the final log.
pub fn finish(
    run: &Run,
    trained: &Trained,
    dataset: &Dataset,
    device: &Device,
) -> Result<ModelSummary> {
    let bytes = model_file_bytes(&trained.model, trained.normalization)?;
    let loss_fn = crate::loss::CrossEntropy {
        label_smoothing: run.config.label_smoothing,
    };
    let f32_predictions = evaluate(
        &trained.model,
        &normalize(&dataset.test, trained.normalization),
        &dataset.test.labels,
        &loss_fn,
        device,
    )
    .predictions;
    let summary = summarize(&run.paths.model, &bytes, &f32_predictions, dataset)?;
    data::atomic::write_atomically(&run.paths.model, &bytes).map_err(|cause| Error::Io {
        path: run.paths.model.clone(),
        cause,
    })?;
    let log = run.log(
        dataset,
        trained.images,
        trained.normalization,
        &trained.history,
        Some(summary.clone()),
    );
    write_log(&log, &run.paths.log)?;
    Ok(summary)
}

/// Scores the f16 file through `infer` against the f32 model's predictions.
fn summarize(
    path: &Path,
    bytes: &[u8],
    f32_predictions: &[u8],
    dataset: &Dataset,
) -> Result<ModelSummary> {
    let export = |e: infer::Error| Error::Export(format!("the exported model: {e}"));
    let model = infer::Model::from_bytes(bytes).map_err(export)?;
    let mut scratch = ScratchVec::for_model(&model);
    let labels = &dataset.test.labels;
    let (mut right_f16, mut right_f32, mut agree) = (0, 0, 0);
    for (index, (&label, &f32_class)) in labels.iter().zip(f32_predictions).enumerate() {
        let class = model
            .predict(dataset.test.image(index), &mut scratch)
            .map_err(export)? as u8;
        right_f16 += usize::from(class == label);
        right_f32 += usize::from(f32_class == label);
        agree += usize::from(class == f32_class);
    }
    let n = labels.len().max(1) as f64;
    Ok(ModelSummary {
        path: path.to_owned(),
        bytes: bytes.len(),
        f32_test_accuracy: right_f32 as f64 / n,
        f16_test_accuracy: right_f16 as f64 / n,
        f16_agreement: agree as f64 / n,
    })
}

/// Writes the run log atomically to `path`; an error names the file.
pub fn write_log(log: &RunLog, path: &Path) -> Result<()> {
    log.write(path).map_err(|cause| Error::Io {
        path: path.to_owned(),
        cause,
    })
}
