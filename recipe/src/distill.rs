//! The teachers of a run (`--teacher`, `--teacher-weight`, `--temperature`): the settings;
//! the trainer's `distill` reads the teachers' files and runs them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The teachers of a run and how much they teach; off without `--teacher`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct Distillation {
    /// A model file (ours: f16, int8 or full-integer) whose logits also teach; several (an
    /// ensemble) teach by their mean logits.
    #[arg(long = "teacher", value_name = "FILE", num_args = 1.., action = clap::ArgAction::Append)]
    pub teachers: Vec<PathBuf>,
    /// W: the share of the loss learnt from the teachers (the labels teach 1 − W).
    #[arg(long, value_name = "W", default_value_t = 0.5, requires = "teachers")]
    pub teacher_weight: f32,
    /// T: the temperature that softens the teachers' and the student's logits in the teachers'
    /// term.
    #[arg(long, value_name = "T", default_value_t = 4.0, requires = "teachers")]
    pub temperature: f32,
}

impl Default for Distillation {
    /// No teacher, and the command line's defaults for the rest, read from its one definition
    /// above (as `TrainConfig::default` reads all of them; this module does not use `config`,
    /// which uses it).
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            distill: Distillation,
        }
        <Defaults as clap::Parser>::parse_from(["trainer"]).distill
    }
}

impl Distillation {
    /// Whether no teacher teaches.
    pub fn is_off(&self) -> bool {
        self.teachers.is_empty()
    }

    /// Rejects values that make no sense, naming the argument.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.teacher_weight) {
            return Err(Error::Config(format!(
                "--teacher-weight {} must be between 0 and 1",
                self.teacher_weight
            )));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::Config(format!(
                "--temperature {} must be a finite number > 0",
                self.temperature
            )));
        }
        Ok(())
    }

    /// The options that give these settings (none when off).
    pub fn args(&self) -> Vec<String> {
        if self.is_off() {
            return Vec::new();
        }
        let mut args = Vec::new();
        for teacher in &self.teachers {
            args.extend(["--teacher".to_owned(), teacher.display().to_string()]);
        }
        args.extend([
            "--teacher-weight".to_owned(),
            self.teacher_weight.to_string(),
            "--temperature".to_owned(),
            self.temperature.to_string(),
        ]);
        args
    }
}
