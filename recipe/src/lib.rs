//! The settings of a training run and its log, without burn: [`config::TrainConfig`] (what
//! `train` takes on its command line, what the checkpoint stores and what the log records),
//! its parts [`augment::Augmentation`] and [`distill::Distillation`], and [`log::RunLog`]. The
//! trainer reads and writes them; `xtask`'s `sweep`, `compare`, `models` and `submit` build and
//! read the same types instead of strings and untyped JSON.

pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod distill;
pub mod log;

/// Settings that cannot train; the message names the argument.
pub mod error {
    /// A rejected setting.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Error {
        /// The message names the argument and what is wrong with it.
        Config(String),
    }

    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let Error::Config(message) = self;
            f.write_str(message)
        }
    }

    impl std::error::Error for Error {}

    /// `Result` with [`Error`].
    pub type Result<T> = std::result::Result<T, Error>;
}
