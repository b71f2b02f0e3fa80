//! Quantisation of an f16 model file's weights to int8 with one scale per output,
//! `scale = max |w| / 127`, `q = round(w / scale)`. `--scheme int8` keeps f16 biases and f32
//! activations (about half the bytes); `--scheme full` makes the whole forward pass integer, in
//! TFLite's scheme with unsigned 8-bit activations (ONNX Runtime's u8 × s8): each layer's scale
//! and zero point come from running the model on training images (`--calibration`); i32
//! biases and sums; per-output fixed-point requantisation; activations other than ReLU and
//! identity become 256-entry tables.

use half::f16;
use infer::ModelFileBuf;
use infer::format::Encoding;

use crate::Result;

/// The int8 model file of a float `model`: each layer's weights to int8 with one f16 scale per
/// output, `scale = max |w| / 127`, `q = round(w / scale)`; biases stay f16, activations f32.
pub fn int8(model: &infer::Model<'_>) -> Result<Vec<u8>> {
    let file = model.file();
    let mut quantized = ModelFileBuf::new(file.activation, file.normalization);
    for layer in &file.layers {
        let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
        let scales: Vec<f16> = (0..d_out)
            .map(|j| {
                let max = (0..d_in)
                    .map(|i| layer.weight(i, j).abs())
                    .fold(0.0, f32::max);
                f16::from_f32(max / 127.0)
            })
            .collect();
        let mut q = Vec::with_capacity(d_in * d_out);
        for i in 0..d_in {
            for (j, scale) in scales.iter().enumerate() {
                let scale = scale.to_f32();
                let value = if scale > 0.0 {
                    (layer.weight(i, j) / scale).round().clamp(-127.0, 127.0)
                } else {
                    0.0
                };
                q.push(value as i8 as u8);
            }
        }
        let scale_bytes = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        quantized.push_bytes(
            d_in,
            d_out,
            Encoding::Int8,
            q,
            scale_bytes,
            layer.bias.to_vec(),
        )?;
    }
    Ok(quantized.to_vec()?)
}

/// A layer's weights `[d_in][d_out]` and biases as f32.
struct FloatLayer {
    d_in: usize,
    d_out: usize,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

/// The model's layers as f32, and the normalised calibration images run through them: per
/// hidden layer, the range of its sums before and after the activation.
fn calibrate(
    model: &infer::Model<'_>,
    layers: &[FloatLayer],
    images: &[&[u8]],
) -> Vec<((f32, f32), (f32, f32))> {
    let file = model.file();
    let mut ranges = vec![((0.0f32, 0.0f32), (0.0f32, 0.0f32)); layers.len() - 1];
    for image in images {
        let mut x: Vec<f32> = image.iter().map(|&p| file.normalization.apply(p)).collect();
        for (index, layer) in layers[..layers.len() - 1].iter().enumerate() {
            let mut y = layer.bias.clone();
            for (i, &xi) in x.iter().enumerate() {
                let row = &layer.weights[i * layer.d_out..(i + 1) * layer.d_out];
                for (value, &w) in y.iter_mut().zip(row) {
                    *value += xi * w;
                }
            }
            let (pre, post) = &mut ranges[index];
            for value in &mut y {
                *pre = (pre.0.min(*value), pre.1.max(*value));
                *value = file.activation.apply(index, *value);
                *post = (post.0.min(*value), post.1.max(*value));
            }
            x = y;
        }
    }
    ranges
}

/// Scale and zero point that map `[lo, hi]` (widened to hold 0) onto 0..=255.
fn affine((lo, hi): (f32, f32)) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let zero_point = (-lo / scale).round().clamp(0.0, 255.0);
    (scale, zero_point as u8)
}

/// `real = multiplier · 2^(shift - 31)` with the multiplier in `[2^30, 2^31)`: TFLite's
/// `QuantizeMultiplier`.
fn fixed_point(real: f64) -> (i32, i8) {
    if real <= 0.0 {
        return (1 << 30, -31); // a zero scale: every output is the zero point
    }
    let mut shift = real.log2().floor() as i32 + 1; // real = m · 2^shift, m in [0.5, 1)
    let mut multiplier = (real / 2f64.powi(shift) * 2f64.powi(31)).round() as i64;
    if multiplier == 1 << 31 {
        multiplier /= 2;
        shift += 1;
    }
    if shift < -31 {
        return (1 << 30, -31);
    }
    (multiplier as i32, shift.min(30) as i8)
}

/// The full-integer model file of a float `model`, its 8-bit ranges calibrated on `count`
/// images spread evenly over `train`.
pub fn full_integer(
    model: &infer::Model<'_>,
    train: &data::Split,
    count: usize,
) -> Result<Vec<u8>> {
    let file = model.file();
    let layers: Vec<FloatLayer> = file
        .layers
        .iter()
        .map(|l| {
            let (d_in, d_out) = (l.d_in as usize, l.d_out as usize);
            let mut weights = Vec::with_capacity(d_in * d_out);
            for i in 0..d_in {
                weights.extend((0..d_out).map(|j| l.weight(i, j)));
            }
            let bias = (0..d_out)
                .map(|j| infer::format::f16_at(l.bias, j))
                .collect();
            FloatLayer {
                d_in,
                d_out,
                weights,
                bias,
            }
        })
        .collect();
    let images: Vec<&[u8]> = (0..count)
        .map(|k| train.image(k * train.len() / count))
        .collect();
    let ranges = calibrate(model, &layers, &images);

    let activation = file.activation;
    let kind = activation.kind();
    let infer::Normalization { mean, std } = file.normalization;
    // A layer's input: x = scale · (a + offset); the first's a is the pixel.
    let (mut in_scale, mut in_offset) = (1.0 / (255.0 * f64::from(std)), -255.0 * f64::from(mean));
    let mut quantized = ModelFileBuf::new(activation, file.normalization);
    for (index, layer) in layers.iter().enumerate() {
        let (d_in, d_out) = (layer.d_in, layer.d_out);
        let mut q = vec![0i8; d_in * d_out];
        let mut weight_scales = vec![0f64; d_out];
        for j in 0..d_out {
            let max = (0..d_in)
                .map(|i| layer.weights[i * d_out + j].abs())
                .fold(0.0, f32::max);
            let scale = if max > 0.0 {
                f64::from(max) / 127.0
            } else {
                1.0
            };
            weight_scales[j] = scale;
            for i in 0..d_in {
                let value = f64::from(layer.weights[i * d_out + j]) / scale;
                q[j * d_in + i] = value.round().clamp(-127.0, 127.0) as i8;
            }
        }
        let bias: Vec<i32> = (0..d_out)
            .map(|j| {
                let row: i64 = q[j * d_in..(j + 1) * d_in]
                    .iter()
                    .map(|&w| i64::from(w))
                    .sum();
                let value = f64::from(layer.bias[j]) / (in_scale * weight_scales[j])
                    + in_offset * row as f64;
                value.round().clamp(-1e9, 1e9) as i32
            })
            .collect();
        let sum_scales: Vec<f64> = weight_scales.iter().map(|s| in_scale * s).collect();
        if index + 1 == layers.len() {
            let scales: Vec<f32> = sum_scales.iter().map(|&s| s as f32).collect();
            quantized.push_int8_full(d_in, d_out, &q, &bias, None, &scales)?;
            break;
        }
        let (pre, post) = ranges[index];
        let (out_scale, out_zero) = affine(post); // ReLU's outputs >= 0: zero point 0
        // ReLU: the clamp at the zero point (0, which stands for 0) is the activation;
        // identity: none; the others: a table from the sums' own 8-bit range to the outputs'.
        let (target_scale, target_zero, table) = match kind {
            infer::ActivationKind::Relu | infer::ActivationKind::Identity => {
                (out_scale, out_zero, Vec::new())
            }
            _ => {
                let (pre_scale, pre_zero) = affine(pre);
                let table: Vec<u8> = (0i32..=255)
                    .map(|v| {
                        let real = pre_scale * (v - i32::from(pre_zero)) as f32;
                        let after = activation.apply(index, real);
                        let level = (after / out_scale).round() + f32::from(out_zero);
                        level.clamp(0.0, 255.0) as u8
                    })
                    .collect();
                (pre_scale, pre_zero, table)
            }
        };
        let (multipliers, shifts): (Vec<i32>, Vec<i8>) = sum_scales
            .iter()
            .map(|&s| fixed_point(s / f64::from(target_scale)))
            .unzip();
        let requant = infer::RequantBuf::new(target_zero, &multipliers, &shifts, &table);
        quantized.push_int8_full(d_in, d_out, &q, &bias, Some(requant), &[])?;
        in_scale = f64::from(out_scale);
        in_offset = -f64::from(out_zero);
    }
    Ok(quantized.to_vec()?)
}
