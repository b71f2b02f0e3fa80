//! Writing artifacts so that a crash or a full disk never leaves a half-written file: the bytes go
//! to a new temporary file in the same directory, are flushed to disk, then renamed over the
//! target. And the checks every output path passes before a command writes anything.

use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically (temp file, fsync, rename). On error the previous file at
/// `path`, if any, is intact and the temp file is removed.
///
/// - Only a regular file (or nothing) is replaced: a device, a FIFO, a socket or a directory at
///   `path` is an error naming it ([`check_output`]). A symbolic link to a regular file has that
///   file replaced (the link stays); a link to anything else is an error.
/// - The temp file's name ends in 64 random bits, and it is created with `O_CREAT | O_EXCL`
///   (`create_new`), which never opens an existing file or follows a link: another user cannot
///   plant a link there that makes this write into their choice of file. Concurrent writers of
///   one path never mix their bytes: each rename puts one writer's whole file in place, and the
///   last one stays.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    check_output(path).map_err(std::io::Error::other)?;
    // A link to a regular file: replace the file it names.
    let path = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::canonicalize(path)?,
        _ => path.to_owned(),
    };
    let dir = parent(&path);
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("path has no file name"))?;
    let (temp, mut file) =
        create_temp(dir, &name.to_string_lossy(), std::iter::repeat_with(nonce))?;
    pending().push(temp.clone());
    let result = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, &path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    pending().retain(|p| *p != temp);
    result
}

/// The temp files this process is writing now.
fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    static PENDING: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes the temp files [`write_atomically`] is writing now, for a process about to exit on a
/// signal in the middle of a write: it leaves no hidden `.tmp` behind (the file it was to
/// replace is untouched either way). Not for a signal handler itself: it takes a lock.
pub fn remove_pending() {
    for temp in pending().drain(..) {
        let _ = std::fs::remove_file(temp);
    }
}

/// A new file in `dir` named after `name` and the first of `nonces` whose name is free, created
/// exclusively (never an existing file or link); after 16 names taken, the error of the last.
fn create_temp(
    dir: &Path,
    name: &str,
    nonces: impl Iterator<Item = u64>,
) -> std::io::Result<(PathBuf, std::fs::File)> {
    // At most 64 characters of the name, so that the temp name stays legal (255 bytes) for any
    // legal name.
    let short: String = name.chars().take(64).collect();
    let mut last = std::io::Error::other("no temporary name tried");
    for nonce in nonces.take(16) {
        let temp = dir.join(format!(".{short}.{nonce:016x}.tmp"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => last = error,
            Err(error) => return Err(error),
        }
    }
    Err(last)
}

/// 64 bits no other user can predict: std's hasher keys are drawn from the operating system's
/// random source (once per thread, then stepped per hasher), hashed with the time.
fn nonce() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
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
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        // What is there, through a link: only a regular file may be replaced.
        let (meta, through) = if meta.file_type().is_symlink() {
            match std::fs::metadata(path) {
                Ok(target) => (target, " (a symbolic link to it)"),
                Err(_) => return Err(format!("{text} is a symbolic link to nothing")),
            }
        } else {
            (meta, "")
        };
        if !meta.is_file() {
            return Err(format!(
                "{text} is {}{through}, not a regular file: refusing to replace it",
                kind(&meta.file_type())
            ));
        }
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

/// What a file that is not a regular one is, for errors.
pub(crate) fn kind(file_type: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
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

    /// A link planted where the temp file goes once made the write land in the link's target
    /// (another user's choice of file). Exclusive creation skips such a name and takes the next.
    #[cfg(unix)]
    #[test]
    fn a_link_planted_at_a_temp_name_is_never_written_through() {
        let dir = std::env::temp_dir().join(format!("atomic-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(format!(".out.csv.{:016x}.tmp", 7))).unwrap();
        let (temp, mut file) = create_temp(&dir, "out.csv", [7, 8].into_iter()).unwrap();
        assert_eq!(temp, dir.join(format!(".out.csv.{:016x}.tmp", 8)));
        file.write_all(b"mine").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_ne!(nonce(), nonce());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// FIFOs, links to devices and dangling links are refused by name; a link to a regular file
    /// has that file replaced, the link kept; a 250-character name is written.
    #[cfg(unix)]
    #[test]
    fn only_regular_files_are_replaced() {
        let dir = std::env::temp_dir().join(format!("atomic-special-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        crate::test_files::fifo(&fifo);
        let to_null = dir.join("null");
        std::os::unix::fs::symlink("/dev/null", &to_null).unwrap();
        let dangling = dir.join("dangling");
        std::os::unix::fs::symlink(dir.join("nothing"), &dangling).unwrap();
        for (path, says) in [
            (&fifo, "is a FIFO, not a regular file"),
            (&to_null, "is a character device (a symbolic link to it)"),
            (&dangling, "is a symbolic link to nothing"),
        ] {
            let error = write_atomically(path, b"x").unwrap_err().to_string();
            assert!(error.contains(says), "{}: {error}", path.display());
        }
        let file_type = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&file_type));
        assert!(
            std::fs::symlink_metadata(&to_null)
                .unwrap()
                .file_type()
                .is_symlink()
        );

        let real = dir.join("real.csv");
        std::fs::write(&real, b"old").unwrap();
        let link = dir.join("link.csv");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomically(&link, b"new").unwrap();
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );

        let long = dir.join("a".repeat(250));
        write_atomically(&long, b"long").unwrap();
        assert_eq!(std::fs::read(&long).unwrap(), b"long");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A write in progress has its temp file listed, and `remove_pending` removes it.
    #[test]
    fn a_pending_temp_file_is_removed_on_request() {
        let dir = std::env::temp_dir().join(format!("atomic-pending-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (temp, _file) = create_temp(&dir, "out.csv", [1].into_iter()).unwrap();
        pending().push(temp.clone());
        assert!(temp.exists());
        remove_pending();
        assert!(!temp.exists());
        assert!(pending().is_empty());
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
