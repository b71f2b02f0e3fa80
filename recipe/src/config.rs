//! The settings of a run: what the command line takes, what the checkpoint and the log store, how
//! they are checked (here, once) and how they are written back as the command that repeats the
//! run.

use std::path::Path;

use infer::ActivationKind;
use serde::{Deserialize, Serialize};

use crate::augment::Augmentation;
use crate::distill::Distillation;
use crate::error::{Error, Result};

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// η stays at --lr (after the warm-up).
    Constant,
    /// η follows a half cosine from --lr down to 0 over the run (after the warm-up).
    Cosine,
}

impl Schedule {
    fn name(self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::Cosine => "cosine",
        }
    }
}

/// Hidden layer widths, input side first: `512,256` on the command line, `""` for none.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Widths(pub Vec<usize>);

impl std::ops::Deref for Widths {
    type Target = [usize];

    fn deref(&self) -> &[usize] {
        &self.0
    }
}

impl From<Vec<usize>> for Widths {
    fn from(widths: Vec<usize>) -> Self {
        Self(widths)
    }
}

impl std::str::FromStr for Widths {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self(Vec::new()));
        }
        text.split(',')
            .map(|width| {
                width
                    .trim()
                    .parse()
                    .map_err(|_| format!("{width:?} is not a width (a whole number, e.g. 512,256)"))
            })
            .collect::<std::result::Result<_, _>>()
            .map(Self)
    }
}

impl std::fmt::Display for Widths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let widths: Vec<String> = self.0.iter().map(usize::to_string).collect();
        f.write_str(&widths.join(","))
    }
}

/// The settings that define a run; printed at its start and stored in its checkpoint and log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct TrainConfig {
    /// Hidden layer widths, comma-separated (e.g. 512,512; "" for none).
    #[arg(long, value_name = "WIDTHS", default_value = "512,256")]
    pub hidden: Widths,
    /// Activation of the hidden layers.
    #[arg(long, default_value = "relu", value_parser = activation_names())]
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
    /// Epochs of linear warm-up from 0 to --lr at the start (fractions allowed; at most a tenth
    /// of the run).
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
    #[command(flatten)]
    #[allow(missing_docs)]
    // Always written: postcard (the checkpoint) cannot skip a field. `default` reads the logs
    // of runs from before distillation.
    #[serde(default)]
    pub distill: Distillation,
    /// Seed of the initial weights and of the shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl Default for TrainConfig {
    /// The settings of `cargo xtask train` with no options.
    fn default() -> Self {
        Self::from_options::<&str>(&[]).expect("the defaults parse")
    }
}

impl TrainConfig {
    /// The settings that the training options `options` give (`--hidden 8 --flip`, ...), the
    /// command line's defaults for the rest; an option that is not a training setting, or a
    /// value that does not parse, is clap's error.
    pub fn from_options<S: Into<std::ffi::OsString> + Clone>(
        options: &[S],
    ) -> std::result::Result<Self, clap::Error> {
        #[derive(clap::Parser)]
        #[command(no_binary_name = true)]
        struct Options {
            #[command(flatten)]
            config: TrainConfig,
        }
        <Options as clap::Parser>::try_parse_from(options.iter().cloned()).map(|o| o.config)
    }
}

/// `--activation` takes the nine names of [`ActivationKind::name`].
fn activation_names() -> impl clap::builder::TypedValueParser<Value = ActivationKind> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(ActivationKind::ALL.map(ActivationKind::name))
        .map(|name| name.parse().expect("one of the listed names"))
}

/// The largest part of a run its warm-up takes: a short run (one epoch, with the default
/// one-epoch warm-up) would otherwise end at the peak rate with no decay at all, and land
/// anywhere from 58 % to 73 % (PyTorch's side, 5,000 images, eight seeds) instead of 68-74 %.
pub const MAX_WARMUP: f64 = 0.1;

/// Most epochs a run takes: far past any schedule here (a few hundred), and small enough that
/// every count of steps fits (`--epochs 18446744073709551615` once overflowed a multiplication).
pub const MAX_EPOCHS: usize = 100_000;

impl TrainConfig {
    /// Rejects settings that cannot train, naming the argument.
    pub fn validate(&self) -> Result<()> {
        let fail = |message: String| Err(Error::Config(message));
        let widest = infer::format::MAX_WIDTH as usize;
        if let Some(width) = self.hidden.iter().find(|&&w| w == 0 || w > widest) {
            return fail(format!(
                "--hidden width {width} must be between 1 and {widest}"
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
                    "--alpha applies to --activation elu or prelu, not {}",
                    self.activation
                ));
            }
            _ => {}
        }
        if !(1..=MAX_EPOCHS).contains(&self.epochs) {
            return fail(format!(
                "--epochs {} must be between 1 and {MAX_EPOCHS}",
                self.epochs
            ));
        }
        self.augment.validate()?;
        self.distill.validate()?;
        if self.train_images == Some(0) {
            return fail("--train-images must be at least 1".into());
        }
        if self.batch_size == 0 {
            return fail("--batch-size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return fail(format!("--lr {} must be a finite positive number", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return fail(format!("--momentum {} must be in [0, 1)", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return fail(format!(
                "--weight-decay {} must be a finite number >= 0",
                self.weight_decay
            ));
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            return fail(format!(
                "--warmup-epochs {} must be a finite number >= 0",
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

    /// η over a run with `steps_per_epoch` steps an epoch: the warm-up takes `warmup_epochs`,
    /// at most [`MAX_WARMUP`] of the run.
    pub fn learning_rate(&self, steps_per_epoch: usize) -> LearningRate {
        let total = self.epochs.saturating_mul(steps_per_epoch) as f64;
        LearningRate {
            peak: self.lr,
            schedule: self.schedule,
            warmup_steps: (self.warmup_epochs * steps_per_epoch as f64).min(total * MAX_WARMUP),
            total_steps: total,
        }
    }

    /// The options that give this configuration, every setting spelled out.
    pub fn args(&self) -> Vec<String> {
        let Self {
            hidden,
            activation,
            alpha,
            epochs,
            batch_size,
            lr,
            momentum,
            weight_decay,
            schedule,
            warmup_epochs,
            label_smoothing,
            train_images,
            validation,
            augment,
            distill,
            seed,
        } = self;
        let mut args = vec![
            "--hidden".to_owned(),
            hidden.to_string(),
            "--activation".to_owned(),
            activation.name().to_owned(),
        ];
        if let Some(alpha) = alpha {
            args.extend(["--alpha".to_owned(), alpha.to_string()]);
        }
        for (flag, value) in [
            ("--epochs", epochs.to_string()),
            ("--batch-size", batch_size.to_string()),
            ("--lr", lr.to_string()),
            ("--momentum", momentum.to_string()),
            ("--weight-decay", weight_decay.to_string()),
            ("--schedule", schedule.name().to_owned()),
            ("--warmup-epochs", warmup_epochs.to_string()),
            ("--label-smoothing", label_smoothing.to_string()),
        ] {
            args.extend([flag.to_owned(), value]);
        }
        if let Some(images) = train_images {
            args.extend(["--train-images".to_owned(), images.to_string()]);
        }
        args.extend(["--validation".to_owned(), validation.to_string()]);
        args.extend(augment.args());
        args.extend(distill.args());
        args.extend(["--seed".to_owned(), seed.to_string()]);
        args
    }

    /// The command that repeats this run, writing `out`: `cargo xtask train` and [`Self::args`].
    pub fn command_line(&self, out: &Path) -> String {
        let mut words = vec!["cargo".to_owned(), "xtask".to_owned(), "train".to_owned()];
        words.extend(self.args());
        words.extend(["--out".to_owned(), out.display().to_string()]);
        words
            .iter()
            .map(|word| shell_quoted(word))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `word` as a POSIX shell reads it back: unchanged when it holds only safe characters, else in
/// single quotes.
fn shell_quoted(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_.,/=+:@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// η over a run: a linear warm-up from 0, then the schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearningRate {
    /// η after the warm-up (the whole run, for a constant schedule).
    pub peak: f64,
    /// What follows the warm-up.
    pub schedule: Schedule,
    /// Steps of warm-up (fractions allowed).
    pub warmup_steps: f64,
    /// Steps of the whole run.
    pub total_steps: f64,
}

impl LearningRate {
    /// η at `peak` for every step.
    pub fn constant(peak: f64) -> Self {
        Self {
            peak,
            schedule: Schedule::Constant,
            warmup_steps: 0.0,
            total_steps: 0.0,
        }
    }

    /// η at optimisation step `step` (from 0).
    pub fn at(&self, step: usize) -> f64 {
        let step = step as f64;
        if step < self.warmup_steps {
            return self.peak * (step + 1.0) / self.warmup_steps;
        }
        match self.schedule {
            Schedule::Constant => self.peak,
            Schedule::Cosine => {
                let progress =
                    (step - self.warmup_steps) / (self.total_steps - self.warmup_steps).max(1.0);
                0.5 * self.peak * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distillation's defaults, read from its own definition (so that distill does not use
    /// this module), are the command line's.
    #[test]
    fn distillation_defaults_are_the_command_lines() {
        let config = TrainConfig::default();
        assert_eq!(config.distill, crate::distill::Distillation::default());
        assert!(config.distill.teachers.is_empty() && config.distill.temperature == 4.0);
    }
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: TrainConfig,
    }

    fn defaults() -> TrainConfig {
        TrainConfig::default()
    }

    #[test]
    fn cosine_schedule_warms_up_then_decays_to_zero() {
        let config = TrainConfig {
            epochs: 10,
            warmup_epochs: 1.0,
            ..defaults()
        };
        let lr = |step| config.learning_rate(100).at(step);
        assert!((lr(0) - config.lr / 100.0).abs() < 1e-12);
        assert!((lr(99) - config.lr).abs() < 1e-12);
        assert!((lr(100) - config.lr).abs() < 1e-12);
        assert!(lr(550) < config.lr * 0.51 && lr(550) > config.lr * 0.49);
        assert!(lr(999) < config.lr * 1e-3);
    }

    #[test]
    fn a_short_run_warms_up_for_a_tenth_of_it_then_decays() {
        let config = TrainConfig {
            epochs: 1,
            warmup_epochs: 1.0,
            ..defaults()
        };
        let rate = config.learning_rate(40);
        assert_eq!(rate.warmup_steps, 4.0);
        assert!((rate.at(3) - config.lr).abs() < 1e-12);
        assert!(
            rate.at(39) < config.lr * 0.01,
            "decays to about 0: {}",
            rate.at(39)
        );
    }

    #[test]
    fn constant_schedule_stays_at_lr() {
        let config = TrainConfig {
            schedule: Schedule::Constant,
            warmup_epochs: 0.0,
            ..defaults()
        };
        assert_eq!(config.learning_rate(10).at(0), config.lr);
        assert_eq!(config.learning_rate(10).at(150), config.lr);
        assert_eq!(LearningRate::constant(0.3).at(7), 0.3);
    }

    #[test]
    fn the_command_line_gives_back_the_same_configuration() {
        let unusual = TrainConfig {
            hidden: vec![300, 7].into(),
            activation: ActivationKind::Elu,
            alpha: Some(0.7),
            epochs: 3,
            batch_size: 33,
            lr: 0.012_345_678_9,
            momentum: 0.8,
            weight_decay: 1e-7,
            schedule: Schedule::Constant,
            warmup_epochs: 0.25,
            label_smoothing: 0.05,
            train_images: Some(1234),
            validation: 500,
            augment: Augmentation {
                shift: 1.5,
                flip: true,
                rotate: 10.0,
                scale: 0.1,
                noise: 0.05,
                contrast: 0.3,
                brightness: 0.2,
                erase: 0.25,
                dropout: 0.1,
                mixup: 0.2,
                ema: 0.999,
            },
            distill: Distillation {
                teachers: vec!["models/a.fmlp".into(), "runs/b.fmlp".into()],
                teacher_weight: 0.7,
                temperature: 2.5,
            },
            seed: 42,
        };
        let no_hidden = TrainConfig {
            hidden: Widths::default(),
            ..defaults()
        };
        for config in [defaults(), unusual, no_hidden] {
            let line = config.command_line(Path::new("runs/a b.fmlp"));
            assert!(line.ends_with("--out 'runs/a b.fmlp'"), "{line}");
            let args = line.strip_prefix("cargo xtask train ").unwrap();
            let words = args
                .split(' ')
                .take_while(|w| *w != "--out")
                .map(|w| if w == "''" { "" } else { w });
            let parsed = Cli::try_parse_from(std::iter::once("t").chain(words)).unwrap();
            assert_eq!(parsed.config, config, "{line}");
        }
    }

    #[test]
    fn bad_settings_name_the_argument() {
        for (config, argument) in [
            (
                TrainConfig {
                    hidden: vec![0].into(),
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
                    hidden: vec![8; 9].into(),
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
