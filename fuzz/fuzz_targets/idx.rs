//! An images file and a labels file (the input split at its first byte's value).
#![no_main]

use std::path::Path;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let Some((&split, rest)) = bytes.split_first() else { return };
    let at = (usize::from(split) * 64).min(rest.len());
    let (images, labels) = rest.split_at(rest.len() - at);
    let _ = data::Split::from_bytes(Path::new("images"), images, Path::new("labels"), labels);
});
