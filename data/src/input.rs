//! Reading an input file whole, bounded: only a regular file (a FIFO would block for ever, a
//! device such as `/dev/zero` never ends), and at most what such a file can legitimately hold,
//! so that no input grows memory without bound.

use std::io::Read;
use std::path::Path;

/// Most bytes of a model file, a state dict or an IDX file: far beyond any model or set here
/// (the largest shipped model is 1.5 MB, Fashion-MNIST's training images 47 MB).
pub const MAX_DATA: u64 = 1 << 30;
/// Most bytes of a text input: a list, a JSON log or metadata.
pub const MAX_TEXT: u64 = 64 << 20;

/// The bytes of `path`, a regular file (or a link to one) of at most `max` bytes. Anything else
/// is an error that says what is there or how large it is (the caller names the file).
pub fn read(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{}, not a regular file",
            crate::atomic::kind(&meta.file_type())
        )));
    }
    if meta.len() > max {
        return Err(too_large(meta.len(), max));
    }
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file that grows while it is read stops at the cap too.
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64, max));
    }
    Ok(bytes)
}

/// [`read`] as UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read(path, max)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn too_large(len: u64, max: u64) -> std::io::Error {
    std::io::Error::other(format!(
        "{len} bytes, more than the {max} such a file can hold"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/dev/zero` never ends and a FIFO blocks until a writer comes: both are refused at once.
    /// A file past the cap is refused from its size, without reading it.
    #[cfg(unix)]
    #[test]
    fn endless_blocking_or_oversized_inputs_are_refused() {
        let dir = std::env::temp_dir().join(format!("input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let error = read(Path::new("/dev/zero"), MAX_DATA).unwrap_err();
        assert!(error.to_string().contains("a character device"), "{error}");
        let fifo = dir.join("fifo");
        crate::test_files::fifo(&fifo);
        let error = read(&fifo, MAX_DATA).unwrap_err();
        assert!(error.to_string().contains("a FIFO"), "{error}");
        let sparse = dir.join("sparse");
        std::fs::File::create(&sparse)
            .unwrap()
            .set_len(MAX_DATA + 1)
            .unwrap();
        let error = read(&sparse, MAX_DATA).unwrap_err();
        assert!(error.to_string().contains("more than the"), "{error}");
        std::fs::write(dir.join("small"), b"abc").unwrap();
        assert_eq!(read(&dir.join("small"), 3).unwrap(), b"abc");
        assert!(read(&dir.join("small"), 2).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
