//! gzip (or plain) bytes, decompressed as an IDX file would be, then parsed as images.
#![no_main]

use std::path::Path;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Ok(plain) = data::idx::decompress_maybe_gzip(Path::new("f.gz"), bytes.to_vec()) {
        let _ = data::Split::from_bytes(Path::new("i"), &plain, Path::new("l"), &[0, 0, 8, 1, 0, 0, 0, 0]);
    }
});
