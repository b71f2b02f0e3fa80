//! Fashion-MNIST (and any IDX set of 28x28 greyscale images) for the trainer and for `eval`.
//!
//! [`idx`] parses IDX files, plain or gzip, checking every size against the bytes present.
//! [`fetch`] finds Fashion-MNIST (`--data DIR` / `FASHION_MNIST_DIR`, the cache, the Debian
//! package, then a download) and verifies it by the SHA-256 of the decompressed files.
//! [`sets`] reads image sets kept as CSV or NumPy arrays. [`input`] reads an input file whole,
//! bounded; [`atomic`] writes artifacts.
//! [`transform`] shifts, rotates, mirrors, blurs and adds noise to images, for augmentation
//! and robustness checks.

pub mod atomic;
pub mod fetch;
pub mod idx;
pub mod input;
pub mod sets;
pub mod transform;

/// What the unit tests of several modules make.
#[cfg(all(test, unix))]
pub(crate) mod test_files {
    /// A FIFO made at `path` (with `mkfifo`).
    pub fn fifo(path: &std::path::Path) {
        let made = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo {}", path.display());
    }
}

use std::path::PathBuf;

pub use fetch::{DataArgs, Dataset, Source};
pub use idx::Split;

/// Image side in pixels.
pub const IMAGE_SIDE: usize = 28;
/// Pixels per image.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Number of classes; labels are `0..NUM_CLASSES`.
pub const NUM_CLASSES: usize = 10;
/// Fashion-MNIST's class names, in label order.
pub const CLASS_NAMES: [&str; NUM_CLASSES] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Anything wrong with finding, fetching or reading the data. Each names its file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        cause: std::io::Error,
    },
    /// The file's bytes are not a valid IDX file of the expected kind.
    #[error("{path}: {defect}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        defect: String,
    },
    /// The images and labels files disagree in count.
    #[error("{images} holds {image_count} images but {labels} holds {label_count} labels")]
    CountMismatch {
        /// Images file.
        images: PathBuf,
        /// Images in it.
        image_count: usize,
        /// Labels file.
        labels: PathBuf,
        /// Labels in it.
        label_count: usize,
    },
    /// A Fashion-MNIST file's decompressed bytes do not have the published SHA-256.
    #[error("{path}: SHA-256 of the decompressed bytes is {found}, Fashion-MNIST's is {expected}")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Expected hex digest.
        expected: &'static str,
        /// Found hex digest.
        found: String,
    },
    /// Fashion-MNIST is nowhere to be found and could not be downloaded.
    #[error("{0}")]
    NotFound(String),
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;
