//! Random and mutated model files: an error or a usable model, never a panic. Mutations are
//! applied to the payload and then the CRC-32 is recomputed, so the decoder itself (not only the
//! checksum) must survive structurally corrupt data, huge declared sizes included.

use infer::format::{Encoding, LayerBytes, ModelFile};
use infer::{Activation, Model, ModelFileBuf, Normalization, Scratch, crc32::crc32};
use proptest::prelude::*;

/// A valid 784-`hidden`-10 file and the offset of its payload (after header and CRC).
fn valid_file(hidden: usize) -> (Vec<u8>, usize) {
    let w1: Vec<u8> = (0..2 * 784 * hidden).map(|i| (i % 7) as u8).collect();
    let w2: Vec<u8> = (0..2 * 10 * hidden).map(|i| (i % 5) as u8).collect();
    let normalization = Normalization {
        mean: 0.3,
        std: 0.35,
    };
    let mut file = ModelFileBuf::new(Activation::Elu { alpha: 1.0 }, normalization);
    file.push_bytes(784, hidden, Encoding::F16, w1, vec![], vec![0; 2 * hidden])
        .unwrap()
        .push_bytes(hidden, 10, Encoding::F16, w2, vec![], vec![0; 20])
        .unwrap();
    (file.to_vec().unwrap(), 4 + 1 + 4) // magic, version varint, CRC
}

fn use_model(bytes: &[u8]) {
    if let Ok(model) = Model::from_bytes(bytes) {
        let image: Vec<u8> = (0..784).map(|i| i as u8).collect();
        let result = model.forward_into(&image, &mut Scratch::<1024>::new());
        // Valid files can only fail for want of scratch (a mutated width above 1024).
        if let Err(error) = result {
            assert!(
                matches!(error, infer::Error::ScratchTooSmall { .. }),
                "{error}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_bytes_are_an_error_or_a_model(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        use_model(&bytes);
    }

    #[test]
    fn payload_mutations_with_a_fixed_checksum_are_an_error_or_a_model(
        flips in proptest::collection::vec((any::<usize>(), 1..=255u8), 1..6),
        cut in proptest::option::of(any::<usize>()),
        junk in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let (mut bytes, payload_at) = valid_file(3);
        for (at, mask) in flips {
            let at = payload_at + at % (bytes.len() - payload_at);
            bytes[at] ^= mask;
        }
        if let Some(cut) = cut {
            bytes.truncate(payload_at + cut % (bytes.len() - payload_at + 1));
        }
        bytes.extend_from_slice(&junk);
        let crc = crc32(&bytes[payload_at..]);
        bytes[payload_at - 4..payload_at].copy_from_slice(&crc.to_le_bytes());
        use_model(&bytes);
    }

    #[test]
    fn huge_declared_sizes_are_an_error(d_in in any::<u32>(), d_out in any::<u32>()) {
        let weights = [0u8; 8];
        let mut layers = infer::heapless::Vec::new();
        layers.push(LayerBytes { encoding: Encoding::F16, scales: &[], d_in, d_out, weights: &weights, bias: &weights }).unwrap();
        let file = ModelFile {
            activation: Activation::Relu,
            normalization: Normalization { mean: 0.0, std: 1.0 },
            layers,
            requant: infer::heapless::Vec::new(),
        };
        // Encoded by hand: the writer itself refuses such a file.
        let mut bytes = vec![0; file.encoded_len_bound()];
        let len = file.encode(&mut bytes).unwrap();
        prop_assert!(Model::from_bytes(&bytes[..len]).is_err());
    }
}
