//! The model file: the one definition of its bytes.
//!
//! A file is a postcard [`Header`] (magic and format version, so a file of another version is
//! recognised as such before anything else is decoded), the CRC-32 of the payload as 4
//! little-endian bytes, then the payload: a postcard [`ModelFile`]. The checksum is verified
//! before any decoded value is used, so a flash or copy corruption is an error, not silent wrong
//! predictions. Weights and biases are little-endian bytes borrowed in place; postcard puts
//! them at arbitrary (odd) offsets, so they are read byte by byte, never cast to `&[f16]`.
//!
//! Version 3 files hold f16 and int8 layers; version 4 adds full-integer models
//! ([`Encoding::Int8Full`] and their [`Requant`] stages). A file without integer layers is still
//! written as version 3, so float models keep their bytes; both versions are read.

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::{Activation, Error, INPUT_SIZE, NUM_CLASSES};

/// First bytes of every model file.
pub const MAGIC: [u8; 4] = *b"FMLP";
/// The newest format version, which this build writes for full-integer models (2: the payload's
/// CRC-32 follows the header; 3: layers say how their weights are encoded, f16 or int8; 4:
/// full-integer models).
pub const FORMAT_VERSION: u16 = 4;
/// The version written for models without integer layers, and the oldest one read.
pub const FLOAT_FORMAT_VERSION: u16 = 3;
/// Where the commands write and read a model file when none is named (`train --out`, `eval
/// --model`, …): one definition for all of them.
pub const DEFAULT_PATH: &str = "runs/model.fmlp";
/// Most layers a model file may hold.
pub const MAX_LAYERS: usize = 8;
/// Most outputs a layer may have (the trainer's `--hidden` checks the same bound).
pub const MAX_WIDTH: u32 = 65_536;

/// What precedes the model in the file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// [`FORMAT_VERSION`] or [`FLOAT_FORMAT_VERSION`] for files this build writes.
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

impl Normalization {
    /// Pixel `p` (0..=255) as the network's input: [`Self::apply_unit`] of `p / 255`. The one
    /// home of the normalisation: inference, training and calibration all call it, so they
    /// round alike.
    #[inline]
    pub fn apply(&self, pixel: u8) -> f32 {
        self.apply_unit(f32::from(pixel) / 255.0)
    }

    /// A pixel already scaled to 0..1 (an augmented one) as the network's input:
    /// `(x − mean) · (1 / std)` in f32, a multiplication rather than a division (one
    /// instruction on a Cortex-M4F for every pixel, against 14 cycles for VDIV).
    #[inline]
    pub fn apply_unit(&self, unit: f32) -> f32 {
        (unit - self.mean) * (1.0 / self.std)
    }
}

/// How a layer's weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    /// Little-endian f16, two bytes per weight.
    F16,
    /// One signed byte `q` per weight and one f16 scale per output `j`: `w[i][j] = q[i][j] ·
    /// scale[j]` (per-output-channel quantisation; half the bytes of f16).
    Int8,
    /// Full-integer: one signed byte per weight stored output by output (`[d_out, d_in]`, so a
    /// dot product reads consecutive bytes), little-endian i32 biases already in the sums' scale
    /// (the input's zero point folded in), 8-bit activations, i32 sums. Activations are unsigned
    /// with a zero point (ONNX Runtime's and oneDNN's u8 × s8 scheme; TFLite's int8 activations
    /// are the same numbers minus 128), so x86's VPDPBUSD and the Cortex-M4's UXTB16 + SMLAD
    /// take them as they are. A hidden layer turns its sums into 8-bit outputs through its
    /// [`Requant`]; the last layer's `scales` holds one little-endian f32 per output that turns
    /// its sums into logits. Every layer of such a model is full-integer; its first layer's
    /// input is the pixels themselves.
    Int8Full,
}

/// How a full-integer hidden layer turns its i32 sums into 8-bit outputs, as TFLite and
/// CMSIS-NN define it: `out = clamp(zero_point + round(sum · multiplier · 2^(shift - 31)), 0,
/// 255)` (`kernel::requantize`, fixed point only), then, when `table` is not empty,
/// `out = table[out]`: the activation as a lookup table. Without a table the clamp is the
/// activation (ReLU: the zero point is 0) or there is none (identity).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Requant<'a> {
    /// The output that stands for 0 (before `table`).
    pub zero_point: u8,
    /// `d_out` little-endian i32 multipliers, each in `[2^30, 2^31)`.
    #[serde(borrow)]
    pub multipliers: &'a [u8],
    /// `d_out` shifts (i8 in `-31..=30`, positive to the left).
    #[serde(borrow)]
    pub shifts: &'a [u8],
    /// Empty, or 256 outputs indexed by the requantised value.
    #[serde(borrow)]
    pub table: &'a [u8],
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
    /// The weight from input `i` to output `j` as a number (an int8 layer's `q · scale`, a
    /// full-integer layer's `q`), for inspection and export; the forward pass applies int8
    /// scales after summing.
    pub fn weight(&self, i: usize, j: usize) -> f32 {
        let at = i * self.d_out as usize + j;
        match self.encoding {
            Encoding::F16 => f16_at(self.weights, at),
            Encoding::Int8 => f32::from(self.weights[at] as i8) * f16_at(self.scales, j),
            // Its scale lives in the requantisation: the stored integer.
            Encoding::Int8Full => f32::from(self.weights[j * self.d_in as usize + i] as i8),
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
    /// A full-integer model's requantisation, one per hidden layer; empty for other models
    /// (which version 3 files are).
    #[serde(borrow)]
    pub requant: Vec<Requant<'a>, MAX_LAYERS>,
}

/// A version 3 payload: a [`ModelFile`] without `requant`.
#[derive(Serialize, Deserialize)]
struct FloatFile<'a> {
    activation: Activation,
    normalization: Normalization,
    #[serde(borrow)]
    layers: Vec<LayerBytes<'a>, MAX_LAYERS>,
}

impl<'a> ModelFile<'a> {
    /// Decodes and validates a model file. Never panics; any defect is an [`Error`].
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        // The magic, or the start of it, followed by too little: a truncated model file.
        let truncated =
            !bytes.is_empty() && (MAGIC.starts_with(bytes) || bytes.starts_with(&MAGIC));
        let (header, rest) = postcard::take_from_bytes::<Header>(bytes).map_err(|_| {
            if truncated {
                Error::Malformed
            } else {
                Error::BadMagic
            }
        })?;
        if header.magic != MAGIC {
            return Err(Error::BadMagic);
        }
        if header.version != FORMAT_VERSION && header.version != FLOAT_FORMAT_VERSION {
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
        let decoded = if header.version == FLOAT_FORMAT_VERSION {
            postcard::take_from_bytes::<FloatFile<'a>>(payload).map(|(file, rest)| {
                let FloatFile {
                    activation,
                    normalization,
                    layers,
                } = file;
                let requant = Vec::new();
                let file = ModelFile {
                    activation,
                    normalization,
                    layers,
                    requant,
                };
                (file, rest)
            })
        } else {
            postcard::take_from_bytes::<ModelFile<'a>>(payload)
        };
        let (file, rest) = match decoded {
            Ok(decoded) => decoded,
            // Undecodable: a corruption if the checksum says so, else a malformed writer.
            Err(_) => return checksum(payload).and(Err(Error::Malformed)),
        };
        checksum(&payload[..payload.len() - rest.len()])?;
        if !rest.is_empty() {
            return Err(Error::TrailingBytes { count: rest.len() });
        }
        if header.version == FORMAT_VERSION && !file.is_integer() {
            return Err(Error::Malformed); // version 4 is written only for full-integer models
        }
        file.validate()?;
        Ok(file)
    }

    /// The format version of this file: [`FORMAT_VERSION`] for a full-integer model, else
    /// [`FLOAT_FORMAT_VERSION`] (the only versions read, and each is only ever the other's
    /// complement: `decode` refuses a float model stamped 4).
    pub fn version(&self) -> u16 {
        if self.is_integer() {
            FORMAT_VERSION
        } else {
            FLOAT_FORMAT_VERSION
        }
    }

    /// How the weights are stored, in words: `f16`, `int8`, `f16 and int8` (a file may mix float
    /// layers), or `full-integer`.
    pub fn encodings(&self) -> &'static str {
        let has = |encoding| self.layers.iter().any(|l| l.encoding == encoding);
        match (
            has(Encoding::F16),
            has(Encoding::Int8),
            has(Encoding::Int8Full),
        ) {
            (_, _, true) => "full-integer",
            (true, true, _) => "f16 and int8",
            (false, true, _) => "int8",
            _ => "f16",
        }
    }

    /// Whether this is a full-integer model (its layers [`Encoding::Int8Full`]).
    pub fn is_integer(&self) -> bool {
        self.layers
            .first()
            .is_some_and(|l| l.encoding == Encoding::Int8Full)
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
            let last = index + 1 == self.layers.len();
            if (layer.encoding == Encoding::Int8Full) != self.is_integer() {
                return Err(Error::MixedEncodings { layer: index });
            }
            let d_out = layer.d_out as usize;
            let (bytes_per_weight, scale_bytes, bias_bytes) = match layer.encoding {
                Encoding::F16 => (2, 0, 2 * d_out),
                Encoding::Int8 => (1, 2 * d_out, 2 * d_out),
                Encoding::Int8Full => (1, if last { 4 * d_out } else { 0 }, 4 * d_out),
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
            if layer.bias.len() != bias_bytes {
                return Err(Error::LayerBytes {
                    layer: index,
                    expected: bias_bytes,
                    found: layer.bias.len(),
                });
            }
            if layer.encoding == Encoding::Int8Full {
                self.validate_integer(index, layer)?;
            } else {
                let f16_weights = match layer.encoding {
                    Encoding::F16 => layer.weights,
                    _ => &[],
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
            }
            width = layer.d_out;
        }
        let hidden = if self.is_integer() {
            self.layers.len() - 1
        } else {
            0
        };
        if self.requant.len() != hidden {
            return Err(Error::Requant {
                layer: self.requant.len().min(hidden),
                what: "one requantisation per hidden layer of a full-integer model, none else",
            });
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

    /// A full-integer layer's own checks: its requantisation's sizes and ranges, finite
    /// positive output scales, and sums that cannot overflow an i32 (bias + `d_in` products of
    /// at most 255 · 128).
    fn validate_integer(&self, index: usize, layer: &LayerBytes<'_>) -> Result<(), Error> {
        let d_out = layer.d_out as usize;
        let bad = |what| Err(Error::Requant { layer: index, what });
        let largest_bias = (0..d_out)
            .map(|j| i64::from(i32_at(layer.bias, j)).abs())
            .max();
        let bound = largest_bias.unwrap_or(0) + i64::from(layer.d_in) * 255 * 128;
        if bound > i64::from(i32::MAX) {
            return bad("its biases and width could overflow a 32-bit sum");
        }
        if index + 1 == self.layers.len() {
            if !(0..d_out)
                .all(|j| f32_at(layer.scales, j).is_finite() && f32_at(layer.scales, j) > 0.0)
            {
                return Err(Error::NotFinite {
                    layer: index,
                    part: "scales",
                });
            }
            return Ok(());
        }
        let Some(requant) = self.requant.get(index) else {
            return bad("one requantisation per hidden layer");
        };
        if requant.multipliers.len() != 4 * d_out || requant.shifts.len() != d_out {
            return bad("a multiplier and a shift per output");
        }
        if !matches!(requant.table.len(), 0 | 256) {
            return bad("a table of 256 entries or none");
        }
        let multipliers_ok = (0..d_out).all(|j| i32_at(requant.multipliers, j) >= 1 << 30);
        let shifts_ok = requant
            .shifts
            .iter()
            .all(|&s| (-31..=30).contains(&(s as i8)));
        if !multipliers_ok || !shifts_ok {
            return bad("multipliers in [2^30, 2^31) and shifts in -31..=30");
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
            + self
                .requant
                .iter()
                .map(|r| r.multipliers.len() + r.shifts.len() + r.table.len() + 30)
                .sum::<usize>()
    }

    /// Writes the header, the checksum and the model into `out`, returning how many bytes were
    /// written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, Error> {
        let integer = self.is_integer();
        let header = Header {
            magic: MAGIC,
            version: if integer {
                FORMAT_VERSION
            } else {
                FLOAT_FORMAT_VERSION
            },
        };
        let header_len = postcard::to_slice(&header, out)
            .map_err(|_| Error::BufferTooSmall)?
            .len();
        let payload_at = header_len + 4;
        let payload = out.get_mut(payload_at..).ok_or(Error::BufferTooSmall)?;
        let written = if integer {
            postcard::to_slice(self, payload)
        } else {
            let float = FloatFile {
                activation: self.activation,
                normalization: self.normalization,
                layers: self.layers.clone(),
            };
            postcard::to_slice(&float, payload)
        };
        let payload_len = written.map_err(|_| Error::BufferTooSmall)?.len();
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

/// Reads the little-endian i32 at `index`.
#[inline]
pub fn i32_at(bytes: &[u8], index: usize) -> i32 {
    // One slice, one bounds check, one load (four indexings compile to four byte loads).
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[4 * index..4 * index + 4]);
    i32::from_le_bytes(word)
}

/// Reads the little-endian f32 at `index`.
#[inline]
pub fn f32_at(bytes: &[u8], index: usize) -> f32 {
    f32::from_bits(i32_at(bytes, index) as u32)
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
        assert_eq!(
            bytes[4], FLOAT_FORMAT_VERSION as u8,
            "a float model is written as version 3"
        );
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
        // Both versions read are named, not only the newest (a version-2 file was told "this
        // build reads version 4" although 3 is read too).
        bytes[4] = 2;
        let error = std::format!("{}", Model::from_bytes(&bytes).unwrap_err());
        assert!(error.contains("reads versions 3 and 4"), "{error}");
    }

    /// The magic alone, or its start, is a truncated file, not a foreign one.
    #[test]
    fn a_file_cut_inside_its_header_is_truncated_not_foreign() {
        for cut in [1, 3, 4] {
            assert_eq!(
                Model::from_bytes(&MAGIC[..cut.min(4)]).unwrap_err(),
                Error::Malformed,
                "{cut} bytes"
            );
        }
        assert_eq!(Model::from_bytes(b"PK").unwrap_err(), Error::BadMagic);
    }

    /// The version and the encodings a file reports are its own, not the build's newest.
    #[test]
    fn a_file_reports_its_own_version_and_encodings() {
        let bytes = encoded(4);
        let float = Model::from_bytes(&bytes).unwrap();
        assert_eq!(float.file().version(), FLOAT_FORMAT_VERSION);
        assert_eq!(float.file().encodings(), "f16");
        let bytes = integer_file(16, false).to_vec().unwrap();
        let integer = Model::from_bytes(&bytes).unwrap();
        assert_eq!(integer.file().version(), FORMAT_VERSION);
        assert_eq!(integer.file().encodings(), "full-integer");
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
            requant: Vec::new(),
        };
        assert_eq!(
            Model::from_bytes(&encoded_unchecked(&file)).unwrap_err(),
            Error::LayerWidth {
                layer: 0,
                width: wide
            }
        );
    }

    /// A 784-`hidden`-10 full-integer model with pseudo-random integers; `table` gives the hidden
    /// layer an activation table.
    fn integer_file(hidden: usize, table: bool) -> crate::ModelFileBuf {
        let mut seed = 3u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            seed >> 8
        };
        let mut q =
            |n: usize| -> std::vec::Vec<i8> { (0..n).map(|_| next() as u8 as i8).collect() };
        let (q1, q2) = (q(INPUT_SIZE * hidden), q(hidden * NUM_CLASSES));
        let bias1: std::vec::Vec<i32> = (0..hidden as i32).map(|j| j * 1000 - 3000).collect();
        let bias2: std::vec::Vec<i32> = (0..10).map(|j| 50 - 17 * j).collect();
        let multipliers: std::vec::Vec<i32> =
            (0..hidden as i32).map(|j| (1 << 30) + j * 7919).collect();
        let shifts: std::vec::Vec<i8> = (0..hidden).map(|j| -12 - (j % 4) as i8).collect();
        let table: std::vec::Vec<u8> = if table {
            (0..=255u8).map(|v| v / 2 + 40).collect()
        } else {
            std::vec::Vec::new()
        };
        let requant = crate::RequantBuf::new(5, &multipliers, &shifts, &table);
        let scales: std::vec::Vec<f32> = (0..10).map(|j| 0.001 * (j + 1) as f32).collect();
        let mut file = crate::ModelFileBuf::new(Activation::Relu, NORMALIZATION);
        file.push_int8_full(INPUT_SIZE, hidden, &q1, &bias1, Some(requant), &[])
            .unwrap()
            .push_int8_full(hidden, NUM_CLASSES, &q2, &bias2, None, &scales)
            .unwrap();
        file
    }

    #[test]
    fn a_full_integer_forward_is_the_plain_integer_computation() {
        for table in [false, true] {
            let buf = integer_file(9, table);
            let bytes = buf.to_vec().unwrap();
            assert_eq!(
                bytes[4], FORMAT_VERSION as u8,
                "full-integer models are version 4"
            );
            let model = Model::from_bytes(&bytes).unwrap();
            let images = [
                image(),
                (0..INPUT_SIZE).map(|i| (255 - i % 256) as u8).collect(),
            ];
            let batch: std::vec::Vec<&[u8]> = images.iter().map(|i| &i[..]).collect();
            let batched = model.forward_batch(&batch).unwrap();
            for (image, batched) in images.iter().zip(batched) {
                let (layers, requant) = (&buf.layers, &buf.requant[0]);
                let x: std::vec::Vec<i32> = image.iter().map(|&p| i32::from(p)).collect();
                let hidden: std::vec::Vec<i32> = (0..9)
                    .map(|j| {
                        let sum = i32_at(&layers[0].bias, j)
                            + (0..INPUT_SIZE)
                                .map(|i| {
                                    x[i] * i32::from(layers[0].weights[j * INPUT_SIZE + i] as i8)
                                })
                                .sum::<i32>();
                        let m = i32_at(&requant.multipliers, j);
                        let scaled = crate::kernel::requantize(sum, m, requant.shifts[j] as i8);
                        let clamped = (scaled + 5).clamp(0, 255);
                        match table {
                            false => clamped,
                            true => i32::from(requant.table[clamped as usize]),
                        }
                    })
                    .collect();
                let logits: std::vec::Vec<f32> = (0..NUM_CLASSES)
                    .map(|j| {
                        let sum = i32_at(&layers[1].bias, j)
                            + (0..9)
                                .map(|i| hidden[i] * i32::from(layers[1].weights[j * 9 + i] as i8))
                                .sum::<i32>();
                        sum as f32 * f32_at(&layers[1].scales, j)
                    })
                    .collect();
                let got = model
                    .forward_into(image, &mut Scratch::<1024>::new())
                    .unwrap();
                assert_eq!(got.to_vec(), logits, "table {table}");
                assert_eq!(batched.to_vec(), logits, "forward_batch, table {table}");
            }
        }
    }

    #[test]
    fn malformed_full_integer_models_are_errors_that_say_what() {
        let mut mixed = integer_file(4, false);
        mixed.layers[1].encoding = Encoding::F16;
        assert_eq!(
            mixed.to_vec().unwrap_err(),
            Error::MixedEncodings { layer: 1 }
        );

        let mut missing = integer_file(4, false);
        missing.requant.clear();
        assert!(matches!(
            missing.to_vec().unwrap_err(),
            Error::Requant { layer: 0, .. }
        ));

        let mut small = integer_file(4, false);
        small.requant[0].multipliers[3] = 0; // 1 << 30 + ... becomes below 2^30
        assert!(matches!(
            small.to_vec().unwrap_err(),
            Error::Requant { layer: 0, .. }
        ));

        let mut table = integer_file(4, false);
        table.requant[0].table = std::vec![0; 255];
        assert!(matches!(
            table.to_vec().unwrap_err(),
            Error::Requant { layer: 0, .. }
        ));

        let mut overflow = integer_file(4, false);
        overflow.layers[0].bias[..4].copy_from_slice(&(i32::MAX - 100).to_le_bytes());
        let error = overflow.to_vec().unwrap_err();
        assert!(matches!(error, Error::Requant { layer: 0, .. }));
        assert!(error.to_string().contains("overflow"), "{error}");

        let mut nan = integer_file(4, false);
        nan.layers[1].scales[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(
            nan.to_vec().unwrap_err(),
            Error::NotFinite {
                layer: 1,
                part: "scales"
            }
        );
    }

    #[test]
    fn a_float_model_stamped_version_4_is_malformed() {
        let mut bytes = encoded(3);
        bytes[4] = FORMAT_VERSION as u8;
        assert!(Model::from_bytes(&bytes).is_err());
    }
}
