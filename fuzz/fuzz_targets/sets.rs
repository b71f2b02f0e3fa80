//! The image-set readers `predict` and `submit --images` use: any bytes as a Kaggle-layout CSV
//! and as a NumPy `.npy` array; an error or whole images (784 bytes each, labels 0-9 and one per
//! image where there are labels), never a panic.
#![no_main]

use std::path::Path;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let check = |images: data::sets::Images| {
        assert!(!images.is_empty() && images.pixels.len() % data::IMAGE_PIXELS == 0);
        if let Some(labels) = &images.labels {
            assert_eq!(labels.len(), images.len());
            assert!(labels.iter().all(|&l| usize::from(l) < data::NUM_CLASSES));
        }
    };
    if let Ok(text) = std::str::from_utf8(bytes)
        && let Ok(images) = data::sets::read_csv(Path::new("set.csv"), text)
    {
        check(images);
    }
    if let Ok(images) = data::sets::read_npy(Path::new("set.npy"), bytes) {
        check(images);
    }
});
