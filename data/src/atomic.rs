//! Writing artifacts so that a crash or a full disk never leaves a half-written file: the bytes go
//! to a temporary file of this process in the same directory, are flushed to disk, then renamed
//! over the target. And the checks every output path passes before a command writes anything.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Writes `bytes` to `path` atomically (temp file, fsync, rename). On error the previous file at
/// `path`, if any, is intact and the temp file is removed. The temp file's name is unique to the
/// process and the call, so concurrent writers of one path never mix their bytes: each rename
/// puts one writer's whole file in place, and the last one stays.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let dir = parent(path);
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("path has no file name"))?;
    let temp = dir.join(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
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

/// The directory `path` is in (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Checks, before anything is written, that `path` can be written as a file: it names a file
/// (not a directory, not ending in `/`), and its directory is one or can be made (no part of it
/// is a file). The error says what is wrong, for the caller to prefix with the flag.
pub fn check_output(path: &Path) -> Result<(), String> {
    let text = path.to_string_lossy();
    if text.is_empty() || text.ends_with('/') || path.file_name().is_none() {
        return Err(format!("{text} does not name a file"));
    }
    if path.is_dir() {
        return Err(format!("{text} is a directory"));
    }
    for ancestor in parent(path).ancestors() {
        if ancestor.as_os_str().is_empty() || ancestor.is_dir() {
            return Ok(());
        }
        if ancestor.exists() {
            return Err(format!("{text}: {} is not a directory", ancestor.display()));
        }
    }
    Ok(())
}

/// Whether `a` and `b` name the same file, existing or not (links and `..` resolved where the
/// files or their directories exist).
pub fn same_file(a: &Path, b: &Path) -> bool {
    resolved(a) == resolved(b)
}

/// `path` made absolute, through its real directory where that exists.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(real) = path.canonicalize() {
        return real;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map_or_else(|_| absolute.clone(), |dir| dir.join(name)),
        _ => absolute,
    }
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

    #[test]
    fn outputs_that_cannot_be_files_are_named_before_anything_is_written() {
        let dir = std::env::temp_dir().join(format!("atomic-check-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("afile"), b"x").unwrap();
        assert!(check_output(&dir.join("new/deeper/m.fmlp")).is_ok());
        assert!(check_output(&dir.join("m.fmlp")).is_ok());
        for (path, says) in [
            (dir.join("sub"), "is a directory"),
            (
                PathBuf::from(format!("{}/sub/", dir.display())),
                "does not name a file",
            ),
            (dir.join("afile/m.fmlp"), "is not a directory"),
            (dir.join("afile/x/m.fmlp"), "is not a directory"),
        ] {
            let error = check_output(&path).unwrap_err();
            assert!(error.contains(says), "{}: {error}", path.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn same_file_sees_through_dots_and_missing_files() {
        let dir = std::env::temp_dir().join(format!("atomic-same-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(dir.join("a/x"), b"x").unwrap();
        assert!(same_file(&dir.join("a/x"), &dir.join("a/../a/x")));
        assert!(same_file(&dir.join("a/new"), &dir.join("a/./new")));
        assert!(!same_file(&dir.join("a/x"), &dir.join("a/y")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_writers_of_one_path_each_write_a_whole_file() {
        let dir = std::env::temp_dir().join(format!("atomic-race-{}", std::process::id()));
        let path = dir.join("out.csv");
        let contents: Vec<Vec<u8>> = (0..8u8).map(|k| vec![b'a' + k; 100_000]).collect();
        std::thread::scope(|scope| {
            for bytes in &contents {
                let path = &path;
                scope.spawn(move || {
                    for _ in 0..20 {
                        write_atomically(path, bytes).unwrap();
                    }
                });
            }
        });
        let written = std::fs::read(&path).unwrap();
        assert!(contents.contains(&written), "a mix of writers");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "temp files left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
