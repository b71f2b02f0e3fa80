//! The files the commands read and write: model files read whole and validated by `infer`,
//! outputs written atomically (a temporary file, then a rename), every error naming the file.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

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
        let bytes = data::input::read(path, data::input::MAX_DATA)
            .with_context(|| format!("reading {}", path.display()))?;
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

/// Checks, before a command writes anything, that each of its `outputs` (a role, such as
/// `--csv`, and a path) can be written as a file and is neither one of its `inputs` nor another
/// output; an error names both roles.
pub fn check_outputs(outputs: &[(&str, &Path)], inputs: &[(&str, &Path)]) -> anyhow::Result<()> {
    for (index, (role, path)) in outputs.iter().enumerate() {
        data::atomic::check_output(path).map_err(|e| anyhow!("{role}: {e}"))?;
        let mut others = inputs.iter().chain(&outputs[..index]);
        if let Some((other, _)) = others.find(|(_, other)| data::atomic::same_file(path, other)) {
            bail!(
                "{role} {} is also {other}: refusing to write over it",
                path.display()
            );
        }
    }
    Ok(())
}

/// A directory of this process's scratch files, removed with everything in it when dropped,
/// whether the command succeeds or fails.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory under the system's temporary directory.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{made}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An exclusive lock on a file (created when missing), held until dropped. It is the operating
/// system's lock (`flock(2)` on Linux), taken on a file description of its own, so it
/// serialises this process's threads as well as other processes, and it ends with a holder that
/// dies.
pub struct Lock {
    _file: std::fs::File,
}

impl Lock {
    /// Waits for the lock on `path`; an error names the file.
    pub fn exclusive(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(Self { _file: file })
    }
}
