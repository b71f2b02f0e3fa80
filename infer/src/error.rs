//! The one error type of this crate.

use core::fmt;

/// Everything that can be wrong with a model file or a call into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The file does not start with the fashion-mlp magic bytes.
    BadMagic,
    /// The file is a fashion-mlp model of a format version this build does not read.
    UnsupportedVersion {
        /// Version found in the file.
        found: u16,
        /// The newest version this build reads (it also reads
        /// [`crate::format::FLOAT_FORMAT_VERSION`]).
        expected: u16,
    },
    /// The payload's CRC-32 does not match the one stored in the file: the bytes were corrupted
    /// (in flash, or on the way there).
    Checksum {
        /// CRC-32 stored in the file.
        stored: u32,
        /// CRC-32 of the payload as found.
        computed: u32,
    },
    /// The bytes do not decode as a model (truncated, or a field is corrupt).
    Malformed,
    /// Bytes follow the end of the model.
    TrailingBytes {
        /// How many bytes are left over.
        count: usize,
    },
    /// The file holds no layers, or more than [`crate::format::MAX_LAYERS`].
    LayerCount {
        /// Layers found.
        found: usize,
    },
    /// A layer's sizes do not chain: its input width is not the previous layer's output width
    /// (or, for the first layer, [`crate::INPUT_SIZE`]), or the last one's output is not
    /// [`crate::NUM_CLASSES`].
    LayerShape {
        /// Index of the layer, from 0.
        layer: usize,
        /// Expected input width (for the last layer's output check: the expected output width).
        expected: u32,
        /// Width found.
        found: u32,
    },
    /// A layer's weight or bias byte count does not match its declared sizes.
    LayerBytes {
        /// Index of the layer, from 0.
        layer: usize,
        /// Bytes expected (2 per f16 value).
        expected: usize,
        /// Bytes found.
        found: usize,
    },
    /// A normalisation or activation parameter is not a finite number (or the std is not > 0).
    BadParameter,
    /// The scratch buffer is narrower than the widest layer.
    ScratchTooSmall {
        /// Width needed.
        needed: usize,
        /// Width available.
        capacity: usize,
    },
    /// The image does not have [`crate::INPUT_SIZE`] pixels.
    ImageSize {
        /// Pixels given.
        found: usize,
    },
    /// The output buffer passed to an encoder is too small.
    BufferTooSmall,
    /// A weight, scale or bias is not a finite f16: NaN or infinite in a file, or a value the
    /// writer was given that f16 cannot hold (beyond ±65504, infinite or NaN).
    NotFinite {
        /// Index of the layer, from 0.
        layer: usize,
        /// `weights`, `scales` or `bias`.
        part: &'static str,
    },
    /// A layer has no outputs, or more than [`crate::format::MAX_WIDTH`].
    LayerWidth {
        /// Index of the layer, from 0.
        layer: usize,
        /// Its outputs.
        width: u32,
    },
    /// A model mixes full-integer layers with float ones.
    MixedEncodings {
        /// The first layer whose encoding differs from the first layer's.
        layer: usize,
    },
    /// A full-integer layer's requantisation is missing or out of range.
    Requant {
        /// Index of the layer, from 0.
        layer: usize,
        /// What it must be.
        what: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::BadMagic => write!(f, "not a fashion-mlp model file (bad magic bytes)"),
            Error::UnsupportedVersion { found, .. } => write!(
                f,
                "model format version {found} is not supported (this build reads versions {} \
                 and {})",
                crate::format::FLOAT_FORMAT_VERSION,
                crate::format::FORMAT_VERSION
            ),
            Error::Checksum { stored, computed } => write!(
                f,
                "model file is corrupt: its payload's CRC-32 is {computed:08x}, the file says \
                 {stored:08x} (truncated, or damaged in storage or transfer)"
            ),
            Error::Malformed => write!(f, "model file is truncated or corrupt (does not decode)"),
            Error::MixedEncodings { layer } => write!(
                f,
                "layer {layer} is full-integer and the first is not, or the other way round: a \
                 model is all full-integer or all float"
            ),
            Error::Requant { layer, what } => {
                write!(
                    f,
                    "layer {layer}'s requantisation is malformed: it needs {what}"
                )
            }
            Error::TrailingBytes { count } => {
                write!(f, "model file has {count} unexpected bytes after its end")
            }
            Error::LayerCount { found } => write!(
                f,
                "model has {found} layers; expected 1 to {}",
                crate::format::MAX_LAYERS
            ),
            Error::LayerShape {
                layer,
                expected,
                found,
            } => {
                write!(
                    f,
                    "layer {layer} has width {found} where {expected} is required"
                )
            }
            Error::LayerBytes {
                layer,
                expected,
                found,
            } => write!(
                f,
                "layer {layer} holds {found} bytes of parameters where its sizes need {expected}"
            ),
            Error::BadParameter => {
                write!(
                    f,
                    "model has a non-finite or out-of-range normalisation/activation value"
                )
            }
            Error::ScratchTooSmall { needed, capacity } => write!(
                f,
                "scratch holds {capacity} values per buffer but the model's widest layer needs {needed}"
            ),
            Error::ImageSize { found } => {
                write!(
                    f,
                    "image has {found} pixels; expected {}",
                    crate::INPUT_SIZE
                )
            }
            Error::BufferTooSmall => write!(f, "output buffer too small for the encoded model"),
            Error::NotFinite { layer, part } => write!(
                f,
                "layer {layer} {part} hold a value that is not a finite f16 (NaN, infinite, or \
                 beyond ±65504)"
            ),
            Error::LayerWidth { layer, width } => write!(
                f,
                "layer {layer} has {width} outputs; a layer has 1 to {}",
                crate::format::MAX_WIDTH
            ),
        }
    }
}

impl core::error::Error for Error {}
