//! Random and mutated IDX and gzip inputs: an error naming the file, or valid data; never a
//! panic, never an allocation sized by a declared (rather than present) length.

use std::io::Write;
use std::path::Path;

use data::idx::decompress_maybe_gzip;
use data::{IMAGE_PIXELS, Split};
use proptest::prelude::*;

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn valid_pair(n: u32) -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..n as usize * IMAGE_PIXELS)
        .map(|i| (i * 31) as u8)
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    (idx(&[n, 28, 28], &pixels), idx(&[n], &labels))
}

fn load(images: &[u8], labels: &[u8]) -> Result<Split, data::Error> {
    Split::from_bytes(
        Path::new("images.idx"),
        images,
        Path::new("labels.idx"),
        labels,
    )
}

fn check(result: Result<Split, data::Error>) {
    match result {
        Ok(split) => {
            assert_eq!(split.images.len(), split.len() * IMAGE_PIXELS);
            assert!(split.labels.iter().all(|&l| l < 10));
        }
        Err(error) => assert!(error.to_string().contains(".idx"), "unnamed: {error}"),
    }
}

/// A mutation: flip bits, overwrite a (possibly huge) big-endian u32, truncate, or append.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Word(usize, u32),
    Truncate(usize),
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        (
            any::<usize>(),
            prop_oneof![Just(u32::MAX), Just(0), Just(1 << 31), any::<u32>()]
        )
            .prop_map(|(at, word)| Mutation::Word(at, word)),
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Append),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    match mutation {
        Mutation::Flip(at, mask) if !bytes.is_empty() => {
            let at = at % bytes.len();
            bytes[at] ^= mask;
        }
        Mutation::Word(at, word) if bytes.len() >= 4 => {
            let at = at % (bytes.len() - 3);
            bytes[at..at + 4].copy_from_slice(&word.to_be_bytes());
        }
        Mutation::Truncate(len) => bytes.truncate(len % (bytes.len() + 1)),
        Mutation::Append(extra) => bytes.extend_from_slice(extra),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_are_an_error_or_valid(
        images in proptest::collection::vec(any::<u8>(), 0..2048),
        labels in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        check(load(&images, &labels));
    }

    #[test]
    fn mutated_idx_files_are_an_error_or_valid(
        n in 0u32..4,
        image_mutations in proptest::collection::vec(mutation(), 1..4),
        label_mutations in proptest::collection::vec(mutation(), 0..3),
    ) {
        let (mut images, mut labels) = valid_pair(n);
        image_mutations.iter().for_each(|m| mutate(&mut images, m));
        label_mutations.iter().for_each(|m| mutate(&mut labels, m));
        check(load(&images, &labels));
    }

    #[test]
    fn mutated_gzip_is_an_error_or_decodes(mutations in proptest::collection::vec(mutation(), 1..4)) {
        let (images, _) = valid_pair(2);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&images).unwrap();
        let mut gz = gz.finish().unwrap();
        mutations.iter().for_each(|m| mutate(&mut gz, m));
        match decompress_maybe_gzip(Path::new("images.gz"), gz) {
            Ok(bytes) => check(load(&bytes, &idx(&[2], &[0, 1]))),
            Err(error) => prop_assert!(error.to_string().contains("images.gz"), "{}", error),
        }
    }
}
