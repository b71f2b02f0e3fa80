//! The one writer of model files, for hosts (the `alloc` feature): a [`ModelFileBuf`] owns each
//! layer's bytes, and [`ModelFileBuf::to_vec`] validates and encodes them as the borrowed
//! [`ModelFile`] that [`crate::format`] defines. The trainer's export, `quantize`, `import` and
//! every test fixture build files through it.

use alloc::vec::Vec;

use crate::format::{Encoding, LayerBytes, MAX_LAYERS, ModelFile, Requant};
use crate::{Activation, Error, Normalization};

/// One layer's bytes, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerBuf {
    /// Input width.
    pub d_in: u32,
    /// Output width.
    pub d_out: u32,
    /// How `weights` holds the values.
    pub encoding: Encoding,
    /// As [`LayerBytes::weights`].
    pub weights: Vec<u8>,
    /// As [`LayerBytes::scales`].
    pub scales: Vec<u8>,
    /// As [`LayerBytes::bias`].
    pub bias: Vec<u8>,
}

impl LayerBuf {
    /// The layer as the format's borrowed view.
    pub fn bytes(&self) -> LayerBytes<'_> {
        LayerBytes {
            d_in: self.d_in,
            d_out: self.d_out,
            encoding: self.encoding,
            weights: &self.weights,
            scales: &self.scales,
            bias: &self.bias,
        }
    }
}

impl From<&LayerBytes<'_>> for LayerBuf {
    fn from(layer: &LayerBytes<'_>) -> Self {
        Self {
            d_in: layer.d_in,
            d_out: layer.d_out,
            encoding: layer.encoding,
            weights: layer.weights.to_vec(),
            scales: layer.scales.to_vec(),
            bias: layer.bias.to_vec(),
        }
    }
}

/// A full-integer hidden layer's requantisation, owned (see [`Requant`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RequantBuf {
    /// As [`Requant::zero_point`].
    pub zero_point: u8,
    /// As [`Requant::multipliers`].
    pub multipliers: Vec<u8>,
    /// As [`Requant::shifts`].
    pub shifts: Vec<u8>,
    /// As [`Requant::table`].
    pub table: Vec<u8>,
}

impl RequantBuf {
    /// From values: one multiplier and shift per output, an optional 256-entry table.
    pub fn new(zero_point: u8, multipliers: &[i32], shifts: &[i8], table: &[u8]) -> Self {
        Self {
            zero_point,
            multipliers: multipliers.iter().flat_map(|m| m.to_le_bytes()).collect(),
            shifts: shifts.iter().map(|&s| s as u8).collect(),
            table: table.to_vec(),
        }
    }

    /// The format's borrowed view.
    pub fn bytes(&self) -> Requant<'_> {
        Requant {
            zero_point: self.zero_point,
            multipliers: &self.multipliers,
            shifts: &self.shifts,
            table: &self.table,
        }
    }
}

/// A model file being built: activation, normalisation and layers that own their bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFileBuf {
    /// Applied after every layer but the last.
    pub activation: Activation,
    /// Applied to the pixels before the first layer.
    pub normalization: Normalization,
    /// The layers, input first.
    pub layers: Vec<LayerBuf>,
    /// A full-integer model's requantisation stages, one per hidden layer.
    pub requant: Vec<RequantBuf>,
}

impl ModelFileBuf {
    /// A file with no layers yet.
    pub fn new(activation: Activation, normalization: Normalization) -> Self {
        Self {
            activation,
            normalization,
            layers: Vec::new(),
            requant: Vec::new(),
        }
    }

    /// Appends an f16 layer from `d_in × d_out` weights (row `i` holding the weights from input
    /// `i`) and `d_out` biases; a value f16 cannot hold (beyond ±65504, infinite or NaN) is an
    /// [`Error::NotFinite`] naming the layer.
    pub fn push_f16(
        &mut self,
        d_in: usize,
        d_out: usize,
        weights: &[f32],
        bias: &[f32],
    ) -> Result<&mut Self, Error> {
        let layer = self.layers.len();
        let weights = f16_bytes(layer, "weights", weights)?;
        let bias = f16_bytes(layer, "bias", bias)?;
        self.push_bytes(d_in, d_out, Encoding::F16, weights, Vec::new(), bias)
    }

    /// Appends a layer of the given encoding from its bytes, as [`LayerBytes`] holds them.
    pub fn push_bytes(
        &mut self,
        d_in: usize,
        d_out: usize,
        encoding: Encoding,
        weights: Vec<u8>,
        scales: Vec<u8>,
        bias: Vec<u8>,
    ) -> Result<&mut Self, Error> {
        let width = |w: usize| u32::try_from(w).map_err(|_| Error::Malformed);
        self.layers.push(LayerBuf {
            d_in: width(d_in)?,
            d_out: width(d_out)?,
            encoding,
            weights,
            scales,
            bias,
        });
        Ok(self)
    }

    /// Appends a full-integer layer: `q` holds `d_out` rows of `d_in` int8 weights (output by
    /// output), `bias` each output's i32 starting sum. A hidden layer gives its `requant`; the
    /// last gives `scales` instead, one f32 per output from sums to logits.
    pub fn push_int8_full(
        &mut self,
        d_in: usize,
        d_out: usize,
        q: &[i8],
        bias: &[i32],
        requant: Option<RequantBuf>,
        scales: &[f32],
    ) -> Result<&mut Self, Error> {
        let weights = q.iter().map(|&w| w as u8).collect();
        let bias = bias.iter().flat_map(|b| b.to_le_bytes()).collect();
        let scales = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        self.requant.extend(requant);
        self.push_bytes(d_in, d_out, Encoding::Int8Full, weights, scales, bias)
    }

    /// An owned copy of a decoded file.
    pub fn from_file(file: &ModelFile<'_>) -> Self {
        Self {
            activation: file.activation,
            normalization: file.normalization,
            layers: file.layers.iter().map(LayerBuf::from).collect(),
            requant: file
                .requant
                .iter()
                .map(|r| RequantBuf {
                    zero_point: r.zero_point,
                    multipliers: r.multipliers.to_vec(),
                    shifts: r.shifts.to_vec(),
                    table: r.table.to_vec(),
                })
                .collect(),
        }
    }

    /// Validates the model (as a reader would) and encodes it.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        if self.layers.len() > MAX_LAYERS || self.requant.len() > MAX_LAYERS {
            return Err(Error::LayerCount {
                found: self.layers.len().max(self.requant.len()),
            });
        }
        let mut layers = heapless::Vec::new();
        for layer in &self.layers {
            // Cannot fail: checked against MAX_LAYERS above.
            let _ = layers.push(layer.bytes());
        }
        let mut requant = heapless::Vec::new();
        for stage in &self.requant {
            // Cannot fail: checked against MAX_LAYERS above.
            let _ = requant.push(stage.bytes());
        }
        let file = ModelFile {
            activation: self.activation,
            normalization: self.normalization,
            layers,
            requant,
        };
        file.validate()?;
        let mut bytes = alloc::vec![0; file.encoded_len_bound()];
        let len = file.encode(&mut bytes)?;
        bytes.truncate(len);
        Ok(bytes)
    }
}

/// Little-endian f16 bytes of `values`, or the first value f16 cannot hold.
fn f16_bytes(layer: usize, part: &'static str, values: &[f32]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(2 * values.len());
    for &value in values {
        let half = half::f16::from_f32(value);
        if !half.is_finite() {
            return Err(Error::NotFinite { layer, part });
        }
        out.extend_from_slice(&half.to_le_bytes());
    }
    Ok(out)
}
