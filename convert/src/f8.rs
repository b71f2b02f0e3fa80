//! A state dict in 8-bit floats: torch's `float8_e4m3fn` (4 exponent bits, bias 7, 3 mantissa
//! bits, no infinities; largest 448, smallest normal 2⁻⁶, subnormals to 2⁻⁹), which
//! `torch.load(weights_only=True)` reads and `load_state_dict` converts into the template's f32
//! layers as it loads.
//!
//! One byte a weight halves an f16 `.pt`, but 8-bit floats keep 4 significant bits over a
//! narrow range, and weights of a few hundredths would mostly fall among the subnormals. So each
//! hidden layer's weights are scaled by a power of two that brings the largest to at most 448
//! before rounding: with a positively homogeneous activation (`f(s·x) = s·f(x)` for `s > 0`:
//! ReLU, PReLU, identity), scaling a layer's weights and bias by `s` scales its outputs by `s`,
//! and the next layer's weights take `1/s` back. The biases (and PReLU's α) stay f32, where any
//! scale is exact, and so does the output layer, which takes the last scale back: the logits
//! are the model's own, up to the rounding of the hidden weights. Powers of two make every
//! scaling exact, so [`rounded`] gives back the same network as a model file, for scoring.

use infer::{Activation, Model};

use crate::pt::NamedTensor;
use crate::safetensors::Dtype;
use crate::state_dict::state_dict;
use crate::{Error, Result};

/// Largest magnitude of the format.
pub const MAX: f32 = 448.0;

/// Largest power of two one layer's weights are scaled up by (see [`f8_state_dict`]).
const MAX_UP: i32 = 15;
/// Smallest: f16 weights reach 65504, which 2^-8 brings under [`MAX`].
const MIN_UP: i32 = -8;

/// `x` in e4m3fn, rounded to nearest with ties to even; magnitudes beyond [`MAX`] saturate to it
/// (torch would make them NaN; the scales here keep every weight within it).
pub fn encode(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    let a = f64::from(x.abs());
    if a.is_nan() {
        return 0x7F;
    }
    if a > f64::from(MAX) {
        return sign | 0x7E;
    }
    // Subnormals (and the smallest normal): multiples of 2⁻⁹ below 2⁻⁶; their code is the count.
    if a < f64::powi(2.0, -6) {
        return sign | (a * 512.0).round_ties_even() as u8;
    }
    let mut exponent = a.log2().floor() as i32;
    // log2 can land one off at exact powers of two: hold 1 ≤ a / 2^e < 2.
    if a / f64::powi(2.0, exponent) >= 2.0 {
        exponent += 1;
    } else if a / f64::powi(2.0, exponent) < 1.0 {
        exponent -= 1;
    }
    let mut mantissa = ((a / f64::powi(2.0, exponent) - 1.0) * 8.0).round_ties_even() as i32;
    if mantissa == 8 {
        mantissa = 0;
        exponent += 1;
    }
    let field = exponent + 7;
    // 0x7E is 448; 0x7F would be NaN.
    if field > 15 || (field == 15 && mantissa == 7) {
        return sign | 0x7E;
    }
    sign | ((field as u8) << 3) | mantissa as u8
}

/// The value of the e4m3fn code `b` (NaN for 0x7F and 0xFF).
pub fn decode(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let (field, mantissa) = (i32::from((b >> 3) & 0xF), f32::from(b & 7));
    if field == 15 && mantissa == 7.0 {
        return f32::NAN;
    }
    sign * match field {
        0 => mantissa / 512.0,
        _ => (1.0 + mantissa / 8.0) * f32::powi(2.0, field - 7),
    }
}

/// `x` rounded to the nearest e4m3fn value.
pub fn round(x: f32) -> f32 {
    decode(encode(x))
}

/// The model's state dict for an f8 `.pt` (each tensor with the type it is stored in), and each
/// layer's scale as a power of two (`exponents[k]`: layer `k`'s outputs are `2^e` times the
/// model's; 0 for the output layer).
#[derive(Debug, Clone, PartialEq)]
pub struct F8StateDict {
    /// The tensors in the template's order, with their storage type.
    pub tensors: Vec<(NamedTensor, Dtype)>,
    /// The scale of each layer's outputs, as a power of two.
    pub exponents: Vec<i32>,
}

impl F8StateDict {
    /// The tensors with their types, as [`crate::pt::write_each`] takes them.
    pub fn typed(&self) -> Vec<(&NamedTensor, Dtype)> {
        self.tensors.iter().map(|(t, d)| (t, *d)).collect()
    }

    /// Bytes of the parameters as stored: one a hidden weight, four the rest.
    pub fn parameter_bytes(&self) -> usize {
        self.tensors
            .iter()
            .map(|((_, _, values), dtype)| values.len() * dtype.size())
            .sum()
    }
}

/// The model's state dict with its hidden layers' weights scaled and rounded to e4m3fn (see the
/// module's documentation); an error for an activation the scaling would change.
pub fn f8_state_dict(model: &Model<'_>) -> Result<F8StateDict> {
    let file = model.file();
    match file.activation {
        Activation::Relu | Activation::Prelu { .. } | Activation::Identity => {}
        other => {
            return Err(Error::Unusable(format!(
                "--dtype f8 scales each layer by a power of two, which only a positively \
                 homogeneous activation passes through (relu, prelu, identity); this model's \
                 is {}",
                other.name()
            )));
        }
    }
    let layers = file.layers.len();
    let mut exponents = Vec::with_capacity(layers);
    let mut before = 0i32; // the scale of this layer's inputs
    let mut tensors = Vec::new();
    for (name, shape, values) in state_dict(model) {
        let layer = layer_of(&name);
        let is_weight = name.ends_with(".weight");
        let last = layer + 1 == layers;
        let (exponent, dtype) = if is_weight && !last {
            let largest = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            // The largest power of two that keeps the largest weight at most MAX, and at most
            // 2^15: an f8 value is a multiple of 2^-9, so taken back by 2^-15 it is a multiple
            // of 2^-24, which f16 still holds exactly (`rounded`, `import`).
            let up = if largest > 0.0 {
                ((f64::from(MAX) / f64::from(largest)).log2().floor() as i32).min(MAX_UP)
            } else {
                0
            };
            (before + up, Dtype::F8E4M3)
        } else if is_weight {
            (0, Dtype::F32)
        } else {
            // A bias takes its layer's scale, α none; both stay f32.
            (*exponents.last().unwrap_or(&0), Dtype::F32)
        };
        let values: Vec<f32> = if is_weight {
            let factor = f32::powi(2.0, exponent - before);
            let scaled = values.iter().map(|v| v * factor);
            match dtype {
                Dtype::F8E4M3 => scaled.map(round).collect(),
                _ => scaled.collect(),
            }
        } else if name.ends_with(".bias") {
            let factor = f32::powi(2.0, exponent);
            values.iter().map(|v| v * factor).collect()
        } else {
            values
        };
        if !values.iter().all(|v| v.is_finite()) || exponent.abs() > 100 {
            return Err(Error::Unusable(format!(
                "{name}: scaled by 2^{exponent} for f8 it leaves f32's range (weights near \
                 zero in every earlier layer); export it as f16"
            )));
        }
        if is_weight {
            exponents.push(exponent);
        } else if name.ends_with(".bias") {
            before = exponent;
        }
        tensors.push(((name, shape, values), dtype));
    }
    Ok(F8StateDict { tensors, exponents })
}

/// The layer a template name (`mlp.{2k}.weight`, `mlp.{2k}.bias`, `mlp.{2k+1}.alpha`) is in.
fn layer_of(name: &str) -> usize {
    name.split('.')
        .nth(1)
        .and_then(|index| index.parse::<usize>().ok())
        .map_or(0, |index| index / 2)
}

/// The network of [`f8_state_dict`] as a model file: each weight the f8 value with its scale
/// taken back (exact, a power of two), the biases the model's own. It computes what the `.pt`
/// computes in the template, so its accuracy is the f8 file's.
pub fn rounded(model: &Model<'_>) -> Result<Vec<u8>> {
    let f8 = f8_state_dict(model)?;
    let mut tensors: std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> = f8
        .tensors
        .into_iter()
        .map(|((name, shape, values), _)| (name, (shape, values)))
        .collect();
    descale(&mut tensors, &f8.exponents)?;
    let (bytes, _) =
        crate::state_dict::from_state_dict(tensors, &crate::state_dict::metadata(model))?;
    Ok(bytes)
}

/// Takes the scales of an f8 state dict (its layers' `exponents`, as `export` writes them in
/// the metadata, `f8_exponents`) back out of its weights and biases.
pub fn descale(
    tensors: &mut std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    exponents: &[i32],
) -> Result<()> {
    let layers = (0..)
        .take_while(|&k| tensors.contains_key(&crate::state_dict::tensor_names(k).0))
        .count();
    let steps_fit = exponents
        .iter()
        .scan(0, |before, &e| {
            let step = e - *before;
            *before = e;
            Some((MIN_UP..=MAX_UP).contains(&step) || e == 0)
        })
        .all(|fits| fits);
    if exponents.len() != layers || exponents.last() != Some(&0) || !steps_fit {
        return Err(Error::Metadata(format!(
            "f8_exponents {exponents:?} do not fit a {layers}-layer f8 export (one per layer, \
             each {MIN_UP} to {MAX_UP} from the one before, 0 for the output layer)"
        )));
    }
    for (name, (_, values)) in tensors.iter_mut() {
        let layer = layer_of(name);
        let Some(&exponent) = exponents.get(layer) else {
            return Err(Error::Metadata(format!(
                "f8_exponents gives {} layers; {name} is in layer {layer}",
                exponents.len()
            )));
        };
        let before = layer.checked_sub(1).map_or(0, |k| exponents[k]);
        let factor = if name.ends_with(".weight") {
            f32::powi(2.0, before - exponent)
        } else if name.ends_with(".bias") {
            f32::powi(2.0, -exponent)
        } else {
            1.0
        };
        values.iter_mut().for_each(|v| *v *= factor);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_decodes_and_encodes_back() {
        for b in 0..=255u8 {
            let v = decode(b);
            if v.is_nan() {
                assert!(b & 0x7F == 0x7F);
                continue;
            }
            // ±0 both decode to 0; -0 encodes to 0x80.
            assert_eq!(encode(v), b, "{b:#04x} -> {v}");
        }
        assert_eq!(decode(0x7E), MAX);
        assert_eq!(decode(0x08), 1.0 / 64.0);
        assert_eq!(decode(0x01), 1.0 / 512.0);
    }

    #[test]
    fn rounding_is_to_nearest_with_ties_to_even() {
        // Between 1 (0x38) and 1.125 (0x39): the tie goes to the even code, 1.
        assert_eq!(encode(1.0625), 0x38);
        // Between 1.125 and 1.25 (0x3A): the tie goes to 1.25.
        assert_eq!(encode(1.1875), 0x3A);
        assert_eq!(encode(1.05), 0x38);
        assert_eq!(encode(1.07), 0x39);
        assert_eq!(encode(1.2), 0x3A);
        // Subnormals: 3.5·2⁻⁹ ties to 4·2⁻⁹.
        assert_eq!(encode(3.5 / 512.0), 0x04);
        // Saturating above the largest, the sign kept.
        assert_eq!(encode(1e6), 0x7E);
        assert_eq!(encode(-1e6), 0xFE);
        assert_eq!(encode(f32::INFINITY), 0x7E);
        assert_eq!(encode(f32::NEG_INFINITY), 0xFE);
        assert_eq!(round(-0.3), -0.3125);
    }

    #[test]
    fn the_nearest_value_is_chosen_for_many_numbers() {
        let values: Vec<f32> = (0..=255u8).map(decode).filter(|v| !v.is_nan()).collect();
        let mut x = 1e-4f32;
        while x < 500.0 {
            for v in [x, -x] {
                let got = round(v);
                let best = values
                    .iter()
                    .map(|c| (c - v).abs())
                    .fold(f32::INFINITY, f32::min);
                assert!(
                    (got - v).abs() <= best || v.abs() > MAX,
                    "{v}: {got}, off by {} where {best} is possible",
                    (got - v).abs()
                );
            }
            x *= 1.013;
        }
    }

    /// A 784-24-12-10 model of `activation` with weights of a few hundredths, as trained ones.
    fn model_bytes(kind: infer::ActivationKind) -> Vec<u8> {
        let weights = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 7919 + seed * 104_729) % 2001) as f32 - 1000.0) * 6e-5)
                .collect()
        };
        let bias = |n: usize| -> Vec<f32> { (0..n).map(|j| j as f32 * 0.01 - 0.05).collect() };
        let mut file = infer::ModelFileBuf::new(
            Activation::new(kind, &[0.25, 0.125]),
            infer::Normalization {
                mean: 0.25,
                std: 0.5,
            },
        );
        file.push_f16(784, 24, &weights(784 * 24, 1), &bias(24))
            .unwrap()
            .push_f16(24, 12, &weights(24 * 12, 2), &bias(12))
            .unwrap()
            .push_f16(12, 10, &weights(12 * 10, 3), &bias(10))
            .unwrap();
        file.to_vec().unwrap()
    }

    fn logits(bytes: &[u8], image: &[u8]) -> Vec<f32> {
        let model = Model::from_bytes(bytes).unwrap();
        let mut scratch = infer::ScratchVec::for_model(&model);
        model.forward_into(image, &mut scratch).unwrap().to_vec()
    }

    #[test]
    fn the_scaled_state_dict_is_the_same_network_as_the_rounded_model() {
        for kind in [infer::ActivationKind::Relu, infer::ActivationKind::Prelu] {
            let bytes = model_bytes(kind);
            let model = Model::from_bytes(&bytes).unwrap();
            let f8 = f8_state_dict(&model).unwrap();
            // Hidden weights in f8, at most MAX, the largest of each layer above MAX / 2.
            let dtypes: Vec<Dtype> = f8.tensors.iter().map(|(_, d)| *d).collect();
            assert_eq!(dtypes[0], Dtype::F8E4M3);
            assert_eq!(f8.exponents.len(), 3);
            assert_eq!(f8.exponents[2], 0, "the logits keep the model's scale");
            for ((name, _, values), dtype) in &f8.tensors {
                if *dtype == Dtype::F8E4M3 {
                    let largest = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    assert!(largest <= MAX && largest > MAX / 2.0, "{name}: {largest}");
                    assert!(values.iter().all(|v| round(*v) == *v), "{name}");
                }
            }
            // The network the state dict holds, computed here in f64 with the activation's
            // homogeneity, against the rounded model file's logits.
            let image: Vec<u8> = (0..784).map(|i| (i * 37 % 256) as u8).collect();
            let x: Vec<f64> = image
                .iter()
                .map(|&p| ((f64::from(p) / 255.0) - 0.25) / 0.5)
                .collect();
            let mut h = x;
            let layers = f8.tensors.chunks(if kind == infer::ActivationKind::Prelu {
                3
            } else {
                2
            });
            for (k, layer) in layers.enumerate() {
                let ((_, shape, w), _) = &layer[0];
                let ((_, _, b), _) = &layer[1];
                let (d_out, d_in) = (shape[0], shape[1]);
                let mut z: Vec<f64> = (0..d_out)
                    .map(|j| {
                        f64::from(b[j])
                            + (0..d_in)
                                .map(|i| f64::from(w[j * d_in + i]) * h[i])
                                .sum::<f64>()
                    })
                    .collect();
                if k < 2 {
                    let alpha = layer.get(2).map_or(0.0, |((_, _, a), _)| f64::from(a[0]));
                    z.iter_mut()
                        .for_each(|v| *v = if *v < 0.0 { alpha * *v } else { *v });
                }
                h = z;
            }
            let rounded = rounded(&model).unwrap();
            let got = logits(&rounded, &image);
            let original = logits(&bytes, &image);
            for j in 0..10 {
                assert!(
                    (f64::from(got[j]) - h[j]).abs() < 1e-3 * (1.0 + h[j].abs()),
                    "{kind:?} logit {j}: the state dict's {} against the model file's {}",
                    h[j],
                    got[j]
                );
                // f8 moves the logits a little, not a lot.
                assert!(
                    (got[j] - original[j]).abs() < 0.1,
                    "{} {}",
                    got[j],
                    original[j]
                );
            }
        }
    }

    #[test]
    fn scales_that_would_leave_f32s_range_are_refused() {
        // Weights of 2^-24 (f16's smallest) take the largest step, 2^15, each layer: seven
        // hidden layers pass 2^100.
        let mut file = infer::ModelFileBuf::new(
            Activation::Relu,
            infer::Normalization {
                mean: 0.25,
                std: 0.5,
            },
        );
        let tiny = f32::powi(2.0, -24);
        file.push_f16(784, 4, &[tiny; 784 * 4], &[0.0; 4]).unwrap();
        for _ in 0..6 {
            file.push_f16(4, 4, &[tiny; 16], &[0.0; 4]).unwrap();
        }
        file.push_f16(4, 10, &[0.1; 40], &[0.0; 10]).unwrap();
        let bytes = file.to_vec().unwrap();
        let error = f8_state_dict(&Model::from_bytes(&bytes).unwrap()).unwrap_err();
        assert!(error.to_string().contains("leaves f32's range"), "{error}");
    }

    #[test]
    fn exponents_that_do_not_fit_the_layers_are_refused() {
        let bytes = model_bytes(infer::ActivationKind::Relu);
        let f8 = f8_state_dict(&Model::from_bytes(&bytes).unwrap()).unwrap();
        let tensors: std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> = f8
            .tensors
            .iter()
            .map(|((name, shape, values), _)| (name.clone(), (shape.clone(), values.clone())))
            .collect();
        let good = f8.exponents.clone();
        assert!(descale(&mut tensors.clone(), &good).is_ok());
        for bad in [
            vec![good[0], good[1]],
            vec![good[0], good[1], 3],
            vec![good[0] + 100, good[1] + 100, 0],
            vec![good[0], good[1], 0, 0],
        ] {
            let error = descale(&mut tensors.clone(), &bad).unwrap_err();
            assert!(error.to_string().contains("do not fit"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn an_activation_the_scales_would_change_is_refused() {
        let bytes = model_bytes(infer::ActivationKind::Elu);
        let error = f8_state_dict(&Model::from_bytes(&bytes).unwrap()).unwrap_err();
        assert!(
            error.to_string().contains("relu, prelu, identity"),
            "{error}"
        );
    }

    #[test]
    fn an_f8_pt_reads_back_with_its_f32_biases() {
        let bytes = model_bytes(infer::ActivationKind::Relu);
        let f8 = f8_state_dict(&Model::from_bytes(&bytes).unwrap()).unwrap();
        let pt = crate::pt::write_each(&f8.typed());
        let read = crate::pt::read(&pt).unwrap();
        let written: Vec<&NamedTensor> = f8.tensors.iter().map(|(t, _)| t).collect();
        assert_eq!(read.iter().collect::<Vec<_>>(), written);
        // One byte a hidden weight.
        let f16 = crate::pt::write(&state_dict(&Model::from_bytes(&bytes).unwrap()), Dtype::F16);
        assert!(
            pt.len() < f16.len() * 6 / 10,
            "{} against {}",
            pt.len(),
            f16.len()
        );
    }
}
