//! The model file: the one definition of its bytes.
//!
//! A file is a postcard [`Header`] (magic and format version, so a file of another version is
//! recognised as such before anything else is decoded), the CRC-32 of the payload as 4
//! little-endian bytes, then the payload: a postcard [`ModelFile`]. The checksum is verified
//! before any decoded value is used, so a flash or copy corruption is an error, not silent wrong
//! predictions. Weights and biases are little-endian f16 bytes borrowed in place; postcard puts
//! them at arbitrary (odd) offsets, so they are read two bytes at a time, never cast to `&[f16]`.

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::{Activation, Error, INPUT_SIZE, NUM_CLASSES};

/// First bytes of every model file.
pub const MAGIC: [u8; 4] = *b"FMLP";
/// The format version this build writes and reads (2: the payload's CRC-32 follows the header;
/// 3: layers say how their weights are encoded, f16 or int8).
pub const FORMAT_VERSION: u16 = 3;
/// Most layers a model file may hold.
pub const MAX_LAYERS: usize = 8;
/// Most outputs a layer may have (the trainer's `--hidden` checks the same bound).
pub const MAX_WIDTH: u32 = 65_536;

/// What precedes the model in the file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// Always [`FORMAT_VERSION`] for files this build writes.
    pub version: u16,
}

/// Input normalisation: a pixel `p` (0..=255) enters the network as `(p / 255 - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean of the training pixels scaled to 0..1.
    pub mean: f32,
    /// Standard deviation of the training pixels scaled to 0..1.
    pub std: f32,
}

/// How a layer's weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    /// Little-endian f16, two bytes per weight.
    F16,
    /// One signed byte `q` per weight and one f16 scale per output `j`: `w[i][j] = q[i][j] ·
    /// scale[j]` (per-output-channel quantisation; half the bytes of f16).
    Int8,
}

/// One `Linear` layer: `y = x W + b` with `W` stored row-major as `[d_in, d_out]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LayerBytes<'a> {
    /// Input width.
    pub d_in: u32,
    /// Output width.
    pub d_out: u32,
    /// How `weights` holds the values.
    pub encoding: Encoding,
    /// `d_in * d_out` weights in `encoding`, row `i` holding the weights from input `i`.
    #[serde(borrow)]
    pub weights: &'a [u8],
    /// For [`Encoding::Int8`], `d_out` little-endian f16 scales, one per output; else empty.
    #[serde(borrow)]
    pub scales: &'a [u8],
    /// `d_out` little-endian f16 values.
    #[serde(borrow)]
    pub bias: &'a [u8],
}

impl<'a> LayerBytes<'a> {
    /// The weight from input `i` to output `j` as a number (an int8 layer's `q · scale`), for
    /// inspection and export; the forward pass applies int8 scales after summing.
    pub fn weight(&self, i: usize, j: usize) -> f32 {
        let at = i * self.d_out as usize + j;
        match self.encoding {
            Encoding::F16 => f16_at(self.weights, at),
            Encoding::Int8 => f32::from(self.weights[at] as i8) * f16_at(self.scales, j),
        }
    }
}

/// The model: activation of the hidden layers, input normalisation, and the layers in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFile<'a> {
    /// Applied after every layer but the last.
    pub activation: Activation,
    /// Applied to the pixels before the first layer.
    pub normalization: Normalization,
    /// The layers, input first.
    #[serde(borrow)]
    pub layers: Vec<LayerBytes<'a>, MAX_LAYERS>,
}

impl<'a> ModelFile<'a> {
    /// Decodes and validates a model file. Never panics; any defect is an [`Error`].
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        let (header, rest) =
            postcard::take_from_bytes::<Header>(bytes).map_err(|_| Error::BadMagic)?;
        if header.magic != MAGIC {
            return Err(Error::BadMagic);
        }
        if header.version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: header.version,
                expected: FORMAT_VERSION,
            });
        }
        let (stored, payload) = rest.split_first_chunk::<4>().ok_or(Error::Malformed)?;
        let stored = u32::from_le_bytes(*stored);
        let checksum = |bytes: &[u8]| match crate::crc32::crc32(bytes) {
            computed if computed == stored => Ok(()),
            computed => Err(Error::Checksum { stored, computed }),
        };
        let (file, rest) = match postcard::take_from_bytes::<ModelFile<'a>>(payload) {
            Ok(decoded) => decoded,
            // Undecodable: a corruption if the checksum says so, else a malformed writer.
            Err(_) => return checksum(payload).and(Err(Error::Malformed)),
        };
        checksum(&payload[..payload.len() - rest.len()])?;
        if !rest.is_empty() {
            return Err(Error::TrailingBytes { count: rest.len() });
        }
        file.validate()?;
        Ok(file)
    }

    /// Checks that the sizes chain from [`INPUT_SIZE`] to [`NUM_CLASSES`], that every width is at
    /// most [`MAX_WIDTH`], that every layer holds exactly the bytes its sizes need, and that every
    /// parameter is a finite number (a NaN or infinite weight would make every prediction
    /// meaningless without any error).
    pub fn validate(&self) -> Result<(), Error> {
        if self.layers.is_empty() {
            return Err(Error::LayerCount { found: 0 });
        }
        let Normalization { mean, std } = self.normalization;
        if !mean.is_finite() || !std.is_finite() || std <= 0.0 || !self.activation.is_valid() {
            return Err(Error::BadParameter);
        }
        let mut width = INPUT_SIZE as u32;
        for (index, layer) in self.layers.iter().enumerate() {
            if layer.d_in != width {
                return Err(Error::LayerShape {
                    layer: index,
                    expected: width,
                    found: layer.d_in,
                });
            }
            if layer.d_out == 0 || layer.d_out > MAX_WIDTH {
                return Err(Error::LayerWidth {
                    layer: index,
                    width: layer.d_out,
                });
            }
            let (bytes_per_weight, scale_bytes) = match layer.encoding {
                Encoding::F16 => (2, 0),
                Encoding::Int8 => (1, layer.d_out as usize * 2),
            };
            let weight_bytes = (layer.d_in as usize)
                .checked_mul(layer.d_out as usize)
                .and_then(|n| n.checked_mul(bytes_per_weight))
                .ok_or(Error::Malformed)?;
            if layer.weights.len() != weight_bytes {
                return Err(Error::LayerBytes {
                    layer: index,
                    expected: weight_bytes,
                    found: layer.weights.len(),
                });
            }
            if layer.scales.len() != scale_bytes {
                return Err(Error::LayerBytes {
                    layer: index,
                    expected: scale_bytes,
                    found: layer.scales.len(),
                });
            }
            let bias_bytes = layer.d_out as usize * 2;
            if layer.bias.len() != bias_bytes {
                return Err(Error::LayerBytes {
                    layer: index,
                    expected: bias_bytes,
                    found: layer.bias.len(),
                });
            }
            let f16_weights = match layer.encoding {
                Encoding::F16 => layer.weights,
                Encoding::Int8 => &[],
            };
            for (part, bytes) in [
                ("weights", f16_weights),
                ("scales", layer.scales),
                ("bias", layer.bias),
            ] {
                if !all_finite_f16(bytes) {
                    return Err(Error::NotFinite { layer: index, part });
                }
            }
            width = layer.d_out;
        }
        if width != NUM_CLASSES as u32 {
            return Err(Error::LayerShape {
                layer: self.layers.len() - 1,
                expected: NUM_CLASSES as u32,
                found: width,
            });
        }
        Ok(())
    }

    /// An upper bound of the encoded size, for sizing the buffer given to [`Self::encode`].
    pub fn encoded_len_bound(&self) -> usize {
        64 + self
            .layers
            .iter()
            .map(|l| l.weights.len() + l.scales.len() + l.bias.len() + 30)
            .sum::<usize>()
    }

    /// Writes the header, the checksum and the model into `out`, returning how many bytes were
    /// written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, Error> {
        let header = Header {
            magic: MAGIC,
            version: FORMAT_VERSION,
        };
        let header_len = postcard::to_slice(&header, out)
            .map_err(|_| Error::BufferTooSmall)?
            .len();
        let payload_at = header_len + 4;
        let payload = out.get_mut(payload_at..).ok_or(Error::BufferTooSmall)?;
        let payload_len = postcard::to_slice(self, payload)
            .map_err(|_| Error::BufferTooSmall)?
            .len();
        let crc = crate::crc32::crc32(&out[payload_at..payload_at + payload_len]);
        out[header_len..payload_at].copy_from_slice(&crc.to_le_bytes());
        Ok(payload_at + payload_len)
    }

    /// The widest activation vector a forward pass holds (the input included).
    pub fn max_width(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.d_out as usize)
            .fold(INPUT_SIZE, usize::max)
    }
}

/// Whether every little-endian f16 in `bytes` is finite (its exponent bits are not all set).
fn all_finite_f16(bytes: &[u8]) -> bool {
    bytes
        .chunks_exact(2)
        .all(|pair| u16::from_le_bytes([pair[0], pair[1]]) & 0x7C00 != 0x7C00)
}

/// Reads the f16 value at `index` from little-endian bytes, as f32.
#[inline]
pub fn f16_at(bytes: &[u8], index: usize) -> f32 {
    half::f16::from_le_bytes([bytes[2 * index], bytes[2 * index + 1]]).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Model, ModelFileBuf, Scratch};

    /// Encodes a 784-`hidden`-10 model with deterministic pseudo-random weights.
    fn encoded(hidden: usize) -> std::vec::Vec<u8> {
        let mut seed = 1u32;
        let mut values = |n: usize| -> std::vec::Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.2
                })
                .collect()
        };
        let (w1, b1) = (values(INPUT_SIZE * hidden), values(hidden));
        let (w2, b2) = (values(hidden * NUM_CLASSES), values(NUM_CLASSES));
        let mut file = ModelFileBuf::new(Activation::Relu, NORMALIZATION);
        file.push_f16(INPUT_SIZE, hidden, &w1, &b1).unwrap();
        file.push_f16(hidden, NUM_CLASSES, &w2, &b2).unwrap();
        file.to_vec().unwrap()
    }

    const NORMALIZATION: Normalization = Normalization {
        mean: 0.286,
        std: 0.353,
    };

    fn image() -> std::vec::Vec<u8> {
        (0..INPUT_SIZE).map(|i| (i * 7 % 256) as u8).collect()
    }

    #[test]
    fn encoded_model_roundtrips() {
        let bytes = encoded(6);
        let model = Model::from_bytes(&bytes).unwrap();
        assert_eq!(model.parameter_count(), 785 * 6 + 7 * 10);
        let logits = model
            .forward_into(&image(), &mut Scratch::<1024>::new())
            .unwrap();
        assert!(logits.iter().all(|l| l.is_finite()));
    }

    #[test]
    fn forward_matches_a_plain_computation() {
        let bytes = encoded(3);
        let model = Model::from_bytes(&bytes).unwrap();
        let file = model.file();
        let input: std::vec::Vec<f32> = image()
            .iter()
            .map(|&p| (f32::from(p) / 255.0 - 0.286) / 0.353)
            .collect();
        let mut x = input;
        for (index, layer) in file.layers.iter().enumerate() {
            let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
            let mut y: std::vec::Vec<f32> = (0..d_out).map(|j| f16_at(layer.bias, j)).collect();
            for (j, out) in y.iter_mut().enumerate() {
                for (i, xi) in x.iter().enumerate().take(d_in) {
                    *out += xi * f16_at(layer.weights, i * d_out + j);
                }
            }
            if index == 0 {
                y.iter_mut()
                    .for_each(|v| *v = Activation::Relu.apply(0, *v));
            }
            x = y;
        }
        let logits = model
            .forward_into(&image(), &mut Scratch::<1024>::new())
            .unwrap();
        for (a, b) in logits.iter().zip(&x) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn every_single_byte_flip_is_an_error() {
        let bytes = encoded(4);
        for at in 0..bytes.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut flipped = bytes.clone();
                flipped[at] ^= mask;
                // The header catches flips in itself; the CRC-32 catches every other single flip.
                assert!(
                    Model::from_bytes(&flipped).is_err(),
                    "flip {mask:#x} at {at} decoded"
                );
            }
        }
    }

    #[test]
    fn corrupted_payload_names_both_checksums() {
        let mut bytes = encoded(4);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let error = Model::from_bytes(&bytes).unwrap_err();
        assert!(matches!(error, Error::Checksum { .. }), "{error:?}");
        assert!(std::format!("{error}").contains("CRC-32"));
    }

    #[test]
    fn truncated_model_is_an_error() {
        let bytes = encoded(4);
        for len in 0..bytes.len() {
            assert!(
                Model::from_bytes(&bytes[..len]).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
    }

    #[test]
    fn trailing_junk_is_an_error() {
        let mut bytes = encoded(4);
        bytes.extend_from_slice(b"junk");
        assert_eq!(
            Model::from_bytes(&bytes).unwrap_err(),
            Error::TrailingBytes { count: 4 }
        );
    }

    #[test]
    fn other_version_is_named() {
        let mut bytes = encoded(4);
        // Header: 4 magic bytes, then the version as a varint (1 byte for small versions).
        assert_eq!(bytes[4], FORMAT_VERSION as u8);
        bytes[4] = FORMAT_VERSION as u8 + 1;
        let error = Model::from_bytes(&bytes).unwrap_err();
        assert_eq!(
            error,
            Error::UnsupportedVersion {
                found: FORMAT_VERSION + 1,
                expected: FORMAT_VERSION
            }
        );
        assert!(std::format!("{error}").contains(&std::format!("version {}", FORMAT_VERSION + 1)));
    }

    #[test]
    fn bad_magic_is_an_error() {
        let mut bytes = encoded(4);
        bytes[0] = b'X';
        assert_eq!(Model::from_bytes(&bytes).unwrap_err(), Error::BadMagic);
    }

    #[test]
    fn sizes_that_do_not_chain_are_an_error() {
        let mut file = ModelFileBuf::new(Activation::Relu, NORMALIZATION);
        file.push_f16(5, NUM_CLASSES, &[0.0; 5 * NUM_CLASSES], &[0.0; NUM_CLASSES])
            .unwrap();
        assert_eq!(
            file.to_vec().unwrap_err(),
            Error::LayerShape {
                layer: 0,
                expected: INPUT_SIZE as u32,
                found: 5
            }
        );
    }

    #[test]
    fn small_scratch_and_wrong_image_size_are_errors() {
        let bytes = encoded(4);
        let model = Model::from_bytes(&bytes).unwrap();
        assert_eq!(
            model
                .forward_into(&image(), &mut Scratch::<100>::new())
                .unwrap_err(),
            Error::ScratchTooSmall {
                needed: INPUT_SIZE,
                capacity: 100
            }
        );
        assert_eq!(
            model
                .forward_into(&[0; 10], &mut Scratch::<1024>::new())
                .unwrap_err(),
            Error::ImageSize { found: 10 }
        );
    }

    /// A 784-4-10 int8 model with the given first-layer scale bytes, encoded and decoded again.
    fn int8_file(scales: &[u8]) -> Result<std::vec::Vec<u8>, Error> {
        let w1: std::vec::Vec<u8> = (0..INPUT_SIZE * 4).map(|k| (k % 7) as u8).collect();
        let w2: std::vec::Vec<u8> = (0..4 * NUM_CLASSES).map(|k| (k * 3) as u8).collect();
        let s2: std::vec::Vec<u8> = (0..NUM_CLASSES)
            .flat_map(|_| half::f16::from_f32(0.01).to_le_bytes())
            .collect();
        let (b1, b2) = (std::vec![0u8; 8], std::vec![0u8; 2 * NUM_CLASSES]);
        let mut file = ModelFileBuf::new(
            Activation::Relu,
            Normalization {
                mean: 0.0,
                std: 1.0,
            },
        );
        file.push_bytes(INPUT_SIZE, 4, Encoding::Int8, w1, scales.to_vec(), b1)?
            .push_bytes(4, NUM_CLASSES, Encoding::Int8, w2, s2, b2)?;
        file.to_vec()
            .and_then(|bytes| ModelFile::decode(&bytes).map(|_| ()).map(|()| bytes))
    }

    #[test]
    fn int8_model_decodes_and_runs() {
        let scales: std::vec::Vec<u8> = (0..4)
            .flat_map(|_| half::f16::from_f32(0.5).to_le_bytes())
            .collect();
        let bytes = int8_file(&scales).unwrap();
        let model = Model::from_bytes(&bytes).unwrap();
        assert_eq!(model.file().layers[0].encoding, Encoding::Int8);
        assert_eq!(
            model.file().layers[0].weight(1, 2),
            0.5 * 6.0 // row 1, column 2: byte (4 + 2) % 7
        );
        let mut scratch = Scratch::<784>::new();
        let logits = model.forward_into(&[255; 784], &mut scratch).unwrap();
        assert!(logits.iter().all(|l| l.is_finite()));
    }

    #[test]
    fn int8_scales_of_the_wrong_size_or_not_finite_are_errors() {
        let short = std::vec![0u8; 6];
        assert!(matches!(
            int8_file(&short),
            Err(Error::LayerBytes {
                layer: 0,
                expected: 8,
                found: 6
            })
        ));
        let infinite: std::vec::Vec<u8> = (0..4)
            .flat_map(|_| half::f16::INFINITY.to_le_bytes())
            .collect();
        assert_eq!(
            int8_file(&infinite),
            Err(Error::NotFinite {
                layer: 0,
                part: "scales"
            })
        );
    }

    /// `file` encoded without validation, as a writer other than ours might produce it.
    fn encoded_unchecked(file: &ModelFile<'_>) -> std::vec::Vec<u8> {
        let mut bytes = std::vec![0; file.encoded_len_bound()];
        let len = file.encode(&mut bytes).unwrap();
        bytes.truncate(len);
        bytes
    }

    #[test]
    fn non_finite_weights_and_biases_are_errors_on_reading_and_writing() {
        let valid = encoded(3);
        let model = Model::from_bytes(&valid).unwrap();
        for bits in [0x7E00u16, 0x7C00, 0xFC00] {
            for (layer, part) in [(0, "weights"), (1, "bias"), (1, "weights")] {
                let mut buffers = ModelFileBuf::from_file(model.file());
                let target = &mut buffers.layers[layer];
                let bytes = if part == "bias" {
                    &mut target.bias
                } else {
                    &mut target.weights
                };
                bytes[2..4].copy_from_slice(&bits.to_le_bytes());
                let expected = Error::NotFinite { layer, part };
                assert_eq!(buffers.to_vec(), Err(expected), "{bits:#x} writing");
                let mut file = model.file().clone();
                file.layers = buffers.layers.iter().map(|l| l.bytes()).collect();
                let bytes = encoded_unchecked(&file);
                assert_eq!(
                    Model::from_bytes(&bytes).unwrap_err(),
                    expected,
                    "{bits:#x} reading"
                );
            }
        }
    }

    #[test]
    fn a_layer_wider_than_max_width_is_an_error() {
        let wide = MAX_WIDTH + 1;
        let (weights, bias) = ([0u8; 8], [0u8; 8]);
        let mut layers = Vec::new();
        layers
            .push(LayerBytes {
                d_in: INPUT_SIZE as u32,
                d_out: wide,
                encoding: Encoding::F16,
                weights: &weights,
                scales: &[],
                bias: &bias,
            })
            .unwrap();
        let file = ModelFile {
            activation: Activation::Relu,
            normalization: NORMALIZATION,
            layers,
        };
        assert_eq!(
            Model::from_bytes(&encoded_unchecked(&file)).unwrap_err(),
            Error::LayerWidth {
                layer: 0,
                width: wide
            }
        );
    }
}
