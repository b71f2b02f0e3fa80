//! Writing artifacts so that a crash or a full disk never leaves a half-written file: the bytes go
//! to a temporary file in the same directory, are flushed to disk, then renamed over the target.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically (temp file, fsync, rename). On error the previous file at
/// `path`, if any, is intact and the temp file is removed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("path has no file name"))?;
    let temp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("atomic-test-{}", std::process::id()));
        let path = dir.join("out.bin");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_write_leaves_the_previous_artifact_intact() {
        let dir = std::env::temp_dir().join(format!("atomic-fail-{}", std::process::id()));
        // The target is a non-empty directory: the final rename fails, as a full or read-only
        // disk would make some step fail.
        let target = dir.join("model.fmlp");
        std::fs::create_dir_all(target.join("keep")).unwrap();
        assert!(write_atomically(&target, b"new").is_err());
        assert!(
            target.join("keep").is_dir(),
            "the previous artifact must survive"
        );
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("model.fmlp")],
            "temp file left behind"
        );
        // A parent that is a file: the error says so.
        let blocked = dir.join("model.fmlp/keep/file");
        std::fs::write(&blocked, b"x").unwrap();
        assert!(write_atomically(&blocked.join("out.fmlp"), b"new").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
