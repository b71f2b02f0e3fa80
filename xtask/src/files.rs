//! The files the commands read and write: model files read whole and validated by `infer`,
//! outputs written atomically (a temporary file, then a rename), every error naming the file.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};

/// A model file's bytes, read and validated.
pub struct ModelFileOnDisk {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its bytes, a valid model file.
    pub bytes: Vec<u8>,
}

impl ModelFileOnDisk {
    /// Reads and validates `path`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        infer::Model::from_bytes(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            bytes,
        })
    }

    /// The model, borrowing the bytes.
    pub fn model(&self) -> infer::Model<'_> {
        infer::Model::from_bytes(&self.bytes).expect("validated when read")
    }
}

/// Writes `bytes` to `path` atomically; an error names the file.
pub fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    data::atomic::write_atomically(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}
