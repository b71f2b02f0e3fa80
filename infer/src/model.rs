//! The forward pass over a validated model file.

use crate::format::{ModelFile, f16_at, f32_at};
use crate::{Activation, Error, INPUT_SIZE, NUM_CLASSES, Normalization};

/// A validated model, borrowing its weights from the file's bytes.
#[derive(Debug, Clone)]
pub struct Model<'a> {
    file: ModelFile<'a>,
}

/// The memory a forward pass alternates between: two activation buffers, each at least
/// [`Model::scratch_width`] wide.
pub trait Buffers {
    /// Both buffers.
    fn buffers(&mut self) -> (&mut [f32], &mut [f32]);
}

/// Two activation buffers of `WIDTH` values each, owned by the caller (a `static` on a board)
/// so the forward pass needs no heap.
#[derive(Debug, Clone)]
pub struct Scratch<const WIDTH: usize> {
    front: [f32; WIDTH],
    back: [f32; WIDTH],
}

impl<const WIDTH: usize> Buffers for Scratch<WIDTH> {
    fn buffers(&mut self) -> (&mut [f32], &mut [f32]) {
        (&mut self.front, &mut self.back)
    }
}

/// Two activation buffers on the heap, sized for one model (hosts: the `alloc` feature).
#[cfg(feature = "alloc")]
#[derive(Debug, Clone)]
pub struct ScratchVec {
    front: alloc::vec::Vec<f32>,
    back: alloc::vec::Vec<f32>,
}

#[cfg(feature = "alloc")]
impl ScratchVec {
    /// Buffers as wide as `model`'s widest layer.
    pub fn for_model(model: &Model<'_>) -> Self {
        let width = model.scratch_width();
        Self {
            front: alloc::vec![0.0; width],
            back: alloc::vec![0.0; width],
        }
    }
}

#[cfg(feature = "alloc")]
impl Buffers for ScratchVec {
    fn buffers(&mut self) -> (&mut [f32], &mut [f32]) {
        (&mut self.front, &mut self.back)
    }
}

impl<const WIDTH: usize> Scratch<WIDTH> {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        Self {
            front: [0.0; WIDTH],
            back: [0.0; WIDTH],
        }
    }
}

impl<const WIDTH: usize> Default for Scratch<WIDTH> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Model<'a> {
    /// Validates `bytes` as a model file and borrows its weights in place.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, Error> {
        ModelFile::decode(bytes).map(|file| Self { file })
    }

    /// The decoded file (sizes, activation, normalisation, raw weights).
    pub fn file(&self) -> &ModelFile<'a> {
        &self.file
    }

    /// The hidden-layer activation.
    pub fn activation(&self) -> Activation {
        self.file.activation
    }

    /// The input normalisation.
    pub fn normalization(&self) -> Normalization {
        self.file.normalization
    }

    /// The width a [`Scratch`] must have for this model: its widest layer (the input included)
    /// for a float model; for a full-integer one, whichever is more of its 8-bit activations
    /// (four to a value) and its widest layer's i32 sums, about a quarter as much.
    pub fn scratch_width(&self) -> usize {
        let widest = self.file.max_width();
        if !self.file.is_integer() {
            return widest;
        }
        let sums = self.file.layers.iter().map(|l| l.d_out as usize).max();
        widest.div_ceil(4).max(sums.unwrap_or(0))
    }

    /// Number of weights and biases.
    pub fn parameter_count(&self) -> usize {
        self.file
            .layers
            .iter()
            .map(|l| (l.d_in as usize + 1) * l.d_out as usize)
            .sum()
    }

    /// Runs the network on one image of [`INPUT_SIZE`] pixels (0..=255) and returns the logits.
    pub fn forward_into(
        &self,
        image: &[u8],
        scratch: &mut impl Buffers,
    ) -> Result<[f32; NUM_CLASSES], Error> {
        if image.len() != INPUT_SIZE {
            return Err(Error::ImageSize { found: image.len() });
        }
        let (input, output) = scratch.buffers();
        let needed = self.scratch_width();
        let capacity = input.len().min(output.len());
        if needed > capacity {
            return Err(Error::ScratchTooSmall { needed, capacity });
        }
        if self.file.is_integer() {
            let mut logits = [[0.0; NUM_CLASSES]];
            self.integer_layers(&[image], input, output, &mut logits);
            return Ok(logits[0]);
        }
        self.normalize_into(image, input);
        let mut logits = [0.0; NUM_CLASSES];
        logits.copy_from_slice(self.layers(1, input, output));
        Ok(logits)
    }

    /// A full-integer model's layers for `images` (each checked to be [`INPUT_SIZE`] long), in
    /// the two buffers (each at least `images.len()` × [`Self::scratch_width`] long) seen as
    /// 8-bit activations and i32 sums, one row per image: the pixels in, each layer's sums
    /// from its i32 biases and [`crate::kernel::dot_rows`], hidden outputs through
    /// [`crate::kernel::requantize`], the clamp and the table, logits as `sum · scale` in f32.
    /// Integers throughout, so a batch gives each image the bits it gets alone.
    pub(crate) fn integer_layers(
        &self,
        images: &[&[u8]],
        input: &mut [f32],
        output: &mut [f32],
        logits: &mut [[f32; NUM_CLASSES]],
    ) {
        let activations = as_bytes(input);
        // SAFETY: i32 has no invalid bit patterns and an f32's size and alignment; the view
        // covers the buffer's own values and borrows it exclusively.
        let sums = unsafe {
            core::slice::from_raw_parts_mut(output.as_mut_ptr().cast::<i32>(), output.len())
        };
        let n = images.len();
        for (row, image) in activations.chunks_exact_mut(INPUT_SIZE).zip(images) {
            Self::integer_input(image, row);
        }
        let last = self.file.layers.len() - 1;
        for (index, layer) in self.file.layers.iter().enumerate() {
            let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
            let sums = &mut sums[..n * d_out];
            for row in sums.chunks_exact_mut(d_out) {
                biases_into(layer, 0, row);
            }
            crate::kernel::dot_rows(&activations[..n * d_in], layer, sums);
            if index == last {
                for (logits, row) in logits.iter_mut().zip(sums.chunks_exact(d_out)) {
                    logits_from(layer, 0, row, logits);
                }
                break;
            }
            for (outputs, row) in activations
                .chunks_exact_mut(d_out)
                .zip(sums.chunks_exact(d_out))
            {
                self.requantize_outputs(index, 0, row, outputs);
            }
        }
    }

    /// Hidden layer `index`'s 8-bit outputs `first ..` from their sums: requantised, clamped to
    /// 0..=255, and through the layer's table when it has one.
    fn requantize_outputs(&self, index: usize, first: usize, sums: &[i32], out: &mut [u8]) {
        let requant = &self.file.requant[index];
        let count = sums.len();
        crate::kernel::requantize_outputs(
            sums,
            &requant.multipliers[4 * first..4 * (first + count)],
            &requant.shifts[first..first + count],
            requant.zero_point,
            &mut out[..count],
        );
        if let [_, ..] = requant.table {
            for activation in &mut out[..count] {
                *activation = requant.table[usize::from(*activation)];
            }
        }
    }

    /// Outputs `first ..` of full-integer layer `index` for the 8-bit `input`: 8-bit activations
    /// for a hidden layer, f32 logits for the last. A [`crate::team`] member's share; the same
    /// integers as [`Self::integer_layers`].
    #[cfg(feature = "std")]
    pub(crate) fn integer_columns(
        &self,
        index: usize,
        input: &[u8],
        first: usize,
        mut out: IntegerOutputs<'_>,
    ) {
        let layer = &self.file.layers[index];
        let count = match &out {
            IntegerOutputs::Activations(out) => out.len(),
            IntegerOutputs::Logits(out) => out.len(),
        };
        let mut sums = [0i32; 64];
        for start in (0..count).step_by(64) {
            let width = (count - start).min(64);
            let sums = &mut sums[..width];
            biases_into(layer, first + start, sums);
            crate::kernel::dots(input, layer, first + start, sums);
            match &mut out {
                IntegerOutputs::Activations(out) => {
                    self.requantize_outputs(index, first + start, sums, &mut out[start..])
                }
                IntegerOutputs::Logits(out) => {
                    logits_from(layer, first + start, sums, &mut out[start..])
                }
            }
        }
    }

    /// Copies the pixels of `image` to the start of `activations`: a full-integer model's
    /// input.
    pub(crate) fn integer_input(image: &[u8], activations: &mut [u8]) {
        activations[..image.len()].copy_from_slice(image);
    }

    /// Every layer for `n` images whose normalised pixels fill the start of `input` (one row of
    /// [`INPUT_SIZE`] each), alternating between the two buffers (each at least `n` ×
    /// [`Self::scratch_width`] long): bias, weights ([`crate::kernel::rows`]), and the
    /// activation but after the last layer. Returns the logits, one row of [`NUM_CLASSES`] per
    /// image.
    fn layers<'b>(
        &self,
        n: usize,
        mut input: &'b mut [f32],
        mut output: &'b mut [f32],
    ) -> &'b [f32] {
        for (index, layer) in self.file.layers.iter().enumerate() {
            let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
            let out = &mut output[..n * d_out];
            for row in out.chunks_exact_mut(d_out) {
                for (j, value) in row.iter_mut().enumerate() {
                    *value = f16_at(layer.bias, j);
                }
            }
            crate::kernel::rows(&input[..n * d_in], layer, out);
            if index + 1 != self.file.layers.len() {
                self.file.activation.apply_slice(index, out);
            }
            core::mem::swap(&mut input, &mut output);
        }
        &input[..n * NUM_CLASSES]
    }

    /// Writes the normalised pixels of `image` (already checked to be [`INPUT_SIZE`] long) to
    /// the start of `values`.
    pub(crate) fn normalize_into(&self, image: &[u8], values: &mut [f32]) {
        let normalization = self.file.normalization;
        for (value, &pixel) in values.iter_mut().zip(image) {
            *value = normalization.apply(pixel);
        }
    }

    /// Outputs `first .. first + out.len()` of layer `index` for `input`: bias, weights, and the
    /// activation unless it is the last layer.
    #[cfg(feature = "std")]
    pub(crate) fn layer_columns(&self, index: usize, input: &[f32], first: usize, out: &mut [f32]) {
        let layer = &self.file.layers[index];
        for (j, value) in out.iter_mut().enumerate() {
            *value = f16_at(layer.bias, first + j);
        }
        crate::kernel::columns(input, layer, first, out);
        if index + 1 != self.file.layers.len() {
            self.file.activation.apply_slice(index, out);
        }
    }

    /// The logits of several images, bit-identical to [`Self::forward_into`] on each, computed
    /// [`BATCH`] images at a time so each layer's weights are read once per batch rather than
    /// once per image ([`crate::kernel::rows`]). For hosts (`eval`, `robust`, throughput);
    /// one image's latency is [`Self::forward_into`]'s, or a `team`'s.
    #[cfg(feature = "alloc")]
    pub fn forward_batch(
        &self,
        images: &[&[u8]],
    ) -> Result<alloc::vec::Vec<[f32; NUM_CLASSES]>, Error> {
        if let Some(image) = images.iter().find(|image| image.len() != INPUT_SIZE) {
            return Err(Error::ImageSize { found: image.len() });
        }
        let width = self.scratch_width();
        let mut input = alloc::vec![0.0f32; BATCH * width];
        let mut output = alloc::vec![0.0f32; BATCH * width];
        let mut logits = alloc::vec::Vec::with_capacity(images.len());
        if self.file.is_integer() {
            for batch in images.chunks(BATCH) {
                let mut values = [[0.0; NUM_CLASSES]; BATCH];
                let values = &mut values[..batch.len()];
                self.integer_layers(batch, &mut input, &mut output, values);
                logits.extend_from_slice(values);
            }
            return Ok(logits);
        }
        for batch in images.chunks(BATCH) {
            let n = batch.len();
            for (image, values) in batch.iter().zip(input.chunks_exact_mut(INPUT_SIZE)) {
                self.normalize_into(image, values);
            }
            for row in self
                .layers(n, &mut input, &mut output)
                .chunks_exact(NUM_CLASSES)
            {
                let mut values = [0.0; NUM_CLASSES];
                values.copy_from_slice(row);
                logits.push(values);
            }
        }
        Ok(logits)
    }

    /// The predicted class of one image: the index of the largest logit (the first on ties).
    pub fn predict(&self, image: &[u8], scratch: &mut impl Buffers) -> Result<usize, Error> {
        self.forward_into(image, scratch)
            .map(|logits| argmax(&logits))
    }
}

/// Sets `sums` to the i32 biases of `layer`'s outputs from `first` on, the start of their sums.
fn biases_into(layer: &crate::LayerBytes<'_>, first: usize, sums: &mut [i32]) {
    for (sum, bias) in sums.iter_mut().zip(layer.bias[4 * first..].chunks_exact(4)) {
        *sum = i32::from_le_bytes([bias[0], bias[1], bias[2], bias[3]]);
    }
}

/// An activation buffer's bytes, as a full-integer model's 8-bit activations.
pub(crate) fn as_bytes(buffer: &mut [f32]) -> &mut [u8] {
    // SAFETY: u8 has no invalid bit patterns and alignment 1; the view covers the buffer's own
    // bytes and borrows it exclusively.
    unsafe { core::slice::from_raw_parts_mut(buffer.as_mut_ptr().cast::<u8>(), buffer.len() * 4) }
}

/// Where a team member's share of a full-integer layer goes.
#[cfg(feature = "std")]
pub(crate) enum IntegerOutputs<'a> {
    /// A hidden layer's 8-bit outputs.
    Activations(&'a mut [u8]),
    /// The last layer's logits.
    Logits(&'a mut [f32]),
}

/// The last full-integer layer's logits `first ..` from their sums: `sum · scale` in f32.
fn logits_from(layer: &crate::LayerBytes<'_>, first: usize, sums: &[i32], out: &mut [f32]) {
    for (j, (logit, &sum)) in out.iter_mut().zip(sums).enumerate() {
        *logit = sum as f32 * f32_at(layer.scales, first + j);
    }
}

/// Images [`Model::forward_batch`] takes at a time: a multiple of the kernels' groups (12 images
/// with AVX-512, 6 with AVX2), and few enough that their activations (two buffers of 48 × the
/// widest layer, 300 KB for 784 inputs) stay in a core's L2.
#[cfg(feature = "alloc")]
pub const BATCH: usize = 48;

/// Index of the largest value, the first on ties; NaN never wins.
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (index, &value) in values.iter().enumerate() {
        if value > values[best] || values[best].is_nan() {
            best = index;
        }
    }
    best
}
