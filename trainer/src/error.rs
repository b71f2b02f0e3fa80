//! The trainer's error type: each variant names the file or setting at fault.

use std::path::PathBuf;

/// What can stop a training run or an export.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Finding or reading the dataset failed.
    #[error(transparent)]
    Data(#[from] data::Error),
    /// A file could not be written or read.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        cause: std::io::Error,
    },
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Config(String),
    /// A checkpoint is unreadable or belongs to another run.
    #[error("{path}: {defect}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        defect: String,
    },
    /// The loss became NaN or infinite.
    #[error(
        "training diverged: loss is {loss} at epoch {epoch}, step {step}: {cause}; {}",
        match checkpoint {
            Some(path) => format!("the last good checkpoint is {} (a run with other settings \
                                   starts anew: another --out, or delete it)", path.display()),
            None => "no epoch completed, so there is no checkpoint".to_owned(),
        }
    )]
    Diverged {
        /// What made it diverge, as far as the step can tell, and what to change.
        cause: String,
        /// The loss value.
        loss: f32,
        /// Epoch, from 1.
        epoch: usize,
        /// Step within the epoch, from 1.
        step: usize,
        /// The last checkpoint written, if any.
        checkpoint: Option<PathBuf>,
    },
    /// Ctrl-C: the run stopped after a complete step and wrote a checkpoint.
    #[error(
        "interrupted before step {} of epoch {epoch}; checkpoint written to {}. Continue with the \
         same command plus --resume",
        step + 1,
        checkpoint.display()
    )]
    Interrupted {
        /// Epoch in progress, from 1.
        epoch: usize,
        /// Steps of it done.
        step: usize,
        /// The checkpoint written.
        checkpoint: PathBuf,
    },
    /// The weights cannot be written as f16.
    #[error("cannot export: {0}")]
    Export(String),
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl From<recipe::error::Error> for Error {
    fn from(error: recipe::error::Error) -> Self {
        let recipe::error::Error::Config(message) = error;
        Error::Config(message)
    }
}
