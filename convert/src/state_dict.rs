//! The course's template as a state dict, both ways: a model file's tensors in the template's
//! names and layouts (`mlp.0.weight`, `mlp.0.bias`, `mlp.2.weight`, …: `nn.Linear` layers at
//! even indices of an `nn.Sequential`, PReLU's learned α at the odd ones) and the metadata a
//! state dict has no place for (the activation, its α, the input normalisation); and a model
//! file built from such a state dict, every name and shape checked against the template.

use std::collections::BTreeMap;

use infer::format::{MAX_LAYERS, f16_at};
use infer::{Activation, ActivationKind, Model, ModelFileBuf, Normalization};

use crate::pt::NamedTensor;
use crate::safetensors::{self, Dtype, Tensor};
use crate::{Error, Result};

/// The template's names of layer `layer`'s weight and bias: `mlp.{2·layer}.weight` and `.bias`.
pub fn tensor_names(layer: usize) -> (String, String) {
    (
        format!("mlp.{}.weight", 2 * layer),
        format!("mlp.{}.bias", 2 * layer),
    )
}

/// The template's name of PReLU's learned α after layer `layer` (a hidden one): the parameter
/// `alpha` (shape `[1]`) of the `myActivation` at `mlp.{2·layer + 1}`.
pub fn alpha_name(layer: usize) -> String {
    format!("mlp.{}.alpha", 2 * layer + 1)
}

/// The model as a safetensors state dict of the course's template.
pub fn to_safetensors(model: &Model<'_>, dtype: Dtype) -> Vec<u8> {
    let encoded: Vec<(String, Vec<usize>, Vec<u8>)> = state_dict(model)
        .into_iter()
        .map(|(name, shape, values)| (name, shape, dtype.encode(&values)))
        .collect();
    let tensors: Vec<(String, Tensor<'_>)> = encoded
        .iter()
        .map(|(name, shape, data)| {
            let tensor = Tensor {
                dtype,
                shape: shape.clone(),
                data,
            };
            (name.clone(), tensor)
        })
        .collect();
    safetensors::write(&tensors, &metadata(model))
}

/// The model's state dict in the template's names and layouts: each `nn.Linear`'s weight
/// `[out_features, in_features]` and bias `[out_features]`, as f32 (an f16 or int8 weight's
/// exact value); for PReLU, each hidden layer's learned α (`[1]`, see [`alpha_name`]).
pub fn state_dict(model: &Model<'_>) -> Vec<NamedTensor> {
    let mut tensors = Vec::new();
    for (index, layer) in model.file().layers.iter().enumerate() {
        let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
        // Ours is [d_in, d_out]; nn.Linear's weight is [out_features, in_features].
        let transposed: Vec<f32> = (0..d_out)
            .flat_map(|j| (0..d_in).map(move |i| (i, j)))
            .map(|(i, j)| layer.weight(i, j))
            .collect();
        let bias: Vec<f32> = (0..d_out).map(|j| f16_at(layer.bias, j)).collect();
        let (weight_name, bias_name) = tensor_names(index);
        tensors.push((weight_name, vec![d_out, d_in], transposed));
        tensors.push((bias_name, vec![d_out], bias));
        if let Activation::Prelu { alphas } = model.file().activation
            && index + 1 < model.file().layers.len()
        {
            tensors.push((alpha_name(index), vec![1], vec![alphas[index]]));
        }
    }
    tensors
}

/// What a state dict has no place for: the activation (and its α), the input normalisation and
/// where the file came from.
pub fn metadata(model: &Model<'_>) -> BTreeMap<String, String> {
    let file = model.file();
    let mut metadata = BTreeMap::from([
        // safetensors' own convention: the tensors are a PyTorch state dict.
        ("format".to_owned(), "pt".to_owned()),
        (
            "source".to_owned(),
            format!("fashion-mlp model file v{}", file.version()),
        ),
        ("activation".to_owned(), file.activation.name().to_owned()),
        (
            "normalization_mean".to_owned(),
            file.normalization.mean.to_string(),
        ),
        (
            "normalization_std".to_owned(),
            file.normalization.std.to_string(),
        ),
        (
            "normalization".to_owned(),
            "x = (pixel / 255 - mean) / std".to_owned(),
        ),
    ]);
    match file.activation {
        Activation::Elu { alpha } => {
            metadata.insert("alpha".into(), alpha.to_string());
        }
        Activation::Prelu { alphas } => {
            let hidden: Vec<String> = alphas[..file.layers.len() - 1]
                .iter()
                .map(f32::to_string)
                .collect();
            metadata.insert("alphas".into(), hidden.join(","));
        }
        _ => {}
    }
    metadata
}

/// The metadata key of an f8 export's layer scales: each layer's outputs are `2^e` times the
/// model's (see [`crate::f8`]).
pub const F8_EXPONENTS: &str = "f8_exponents";

/// Normalisation assumed for an imported state dict without one in its metadata: the course's
/// Fashion-MNIST constants.
const DEFAULT_NORMALIZATION: Normalization = Normalization {
    mean: 0.2860,
    std: 0.3530,
};

/// A model file built from a safetensors state dict, and notes on defaults that were assumed.
pub fn from_safetensors(raw: &[u8]) -> Result<(Vec<u8>, Vec<String>)> {
    let file = safetensors::read(raw).map_err(Error::Safetensors)?;
    let tensors = file
        .tensors
        .iter()
        .map(|(name, tensor)| (name.clone(), (tensor.shape.clone(), tensor.values())))
        .collect();
    from_state_dict(tensors, &file.metadata)
}

/// A model file built from a `.pt` state dict and the metadata `export` writes beside it.
pub fn from_pt(raw: &[u8], metadata: &BTreeMap<String, String>) -> Result<(Vec<u8>, Vec<String>)> {
    // Names and shapes are checked before any values are read: a file of thousands of
    // tensors, or of huge ones, costs nothing before it is refused.
    let template = |name: &str, shape: &[usize]| {
        let layer = (0..MAX_LAYERS).find(|&k| {
            let (weight, bias) = tensor_names(k);
            name == weight || name == bias
        });
        let is_alpha = (0..MAX_LAYERS).any(|k| name == alpha_name(k));
        match layer {
            None if is_alpha && shape == [1] => Ok(()),
            None if is_alpha => Err(format!("{name} has shape {shape:?}; expected [1]")),
            None => Err(format!(
                "tensor {name} is not part of the template (mlp.0.weight, mlp.0.bias, \
                 mlp.1.alpha for prelu, mlp.2.weight, ..., at most {MAX_LAYERS} layers)"
            )),
            Some(k) if shape.len() != if name == tensor_names(k).0 { 2 } else { 1 } => {
                Err(format!("{name} has shape {shape:?}"))
            }
            Some(_) => Ok(()),
        }
    };
    let mut tensors = BTreeMap::new();
    for (name, shape, values) in crate::pt::read_with(raw, template).map_err(Error::Pt)? {
        tensors.insert(name, (shape, values));
    }
    // An f8 export's layers are scaled by powers of two (see `crate::f8`), said beside it.
    if let Some(exponents) = metadata.get(F8_EXPONENTS) {
        let exponents = exponents
            .split(',')
            .map(|e| e.trim().parse::<i32>().ok().filter(|e| e.abs() <= 100))
            .collect::<Option<Vec<i32>>>()
            .ok_or_else(|| {
                Error::Metadata(format!(
                    "{F8_EXPONENTS} is {exponents:?}, not a list of small whole numbers"
                ))
            })?;
        crate::f8::descale(&mut tensors, &exponents)?;
    }
    from_state_dict(tensors, metadata)
}

/// A model file built from the tensors of the template's state dict (name → shape and values)
/// and the metadata `export` writes; a tensor the template does not have is an error naming it.
pub fn from_state_dict(
    mut tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    metadata: &BTreeMap<String, String>,
) -> Result<(Vec<u8>, Vec<String>)> {
    let mut notes = Vec::new();
    let count = (0..)
        .take_while(|&k| tensors.contains_key(&tensor_names(k).0))
        .count();
    if count == 0 {
        return Err(Error::Template(
            "no tensor named mlp.0.weight (expected mlp.0.weight, mlp.0.bias, mlp.2.weight, ...)"
                .into(),
        ));
    }
    if count > MAX_LAYERS {
        return Err(Error::Template(format!(
            "{count} layers; the model file holds at most {MAX_LAYERS}"
        )));
    }
    let learned = learned_alphas(&mut tensors, count - 1)?;
    let activation = activation_from(metadata, count - 1, learned, &mut notes)?;
    let normalization = match (
        metadata.get("normalization_mean"),
        metadata.get("normalization_std"),
    ) {
        (Some(mean), Some(std)) => Normalization {
            mean: number(mean, "normalization_mean")?,
            std: number(std, "normalization_std")?,
        },
        _ => {
            notes.push(format!(
                "no normalization in the metadata; assuming mean {} and std {} (the course's)",
                DEFAULT_NORMALIZATION.mean, DEFAULT_NORMALIZATION.std
            ));
            DEFAULT_NORMALIZATION
        }
    };
    let mut file = ModelFileBuf::new(activation, normalization);
    let mut width = infer::INPUT_SIZE;
    for k in 0..count {
        let (weight_name, bias_name) = tensor_names(k);
        let (shape, w) = tensors.remove(&weight_name).expect("counted above");
        let &[d_out, d_in] = shape.as_slice() else {
            return Err(Error::Template(format!(
                "{weight_name} has shape {shape:?}; expected [out_features, in_features]"
            )));
        };
        if d_in != width {
            return Err(Error::Template(format!(
                "{weight_name} has {d_in} input features; expected {width}"
            )));
        }
        let (bias_shape, bias) = tensors
            .remove(&bias_name)
            .ok_or_else(|| Error::Template(format!("{bias_name} is missing")))?;
        if bias_shape != [d_out] {
            return Err(Error::Template(format!(
                "{bias_name} has shape {bias_shape:?}; expected [{d_out}]"
            )));
        }
        // nn.Linear's weight is [out_features, in_features]; ours is [d_in, d_out].
        let transposed: Vec<f32> = (0..d_in)
            .flat_map(|i| (0..d_out).map(move |j| (i, j)))
            .map(|(i, j)| w[j * d_in + i])
            .collect();
        file.push_f16(d_in, d_out, &transposed, &bias)?;
        width = d_out;
    }
    if let Some(extra) = tensors.keys().next() {
        return Err(Error::Template(format!(
            "tensor {extra} is not part of the template's {count} layers (mlp.0 to mlp.{}): \
             refusing to drop it silently",
            2 * (count - 1)
        )));
    }
    if width != infer::NUM_CLASSES {
        return Err(Error::Template(format!(
            "the last layer has {width} outputs; expected {}",
            infer::NUM_CLASSES
        )));
    }
    let bytes = file.to_vec()?;
    finite_logits(&infer::Model::from_bytes(&bytes)?)?;
    Ok((bytes, notes))
}

/// Refuses a model whose logits can leave f32's range on some picture (pixels 0-255): its
/// normalisation (a std of 1e-45, a mean of 1e38) or its weights. The bound is interval
/// arithmetic, in f64: the largest normalised input, then per layer the largest `Σ|w|·bound +
/// |b|`, through the activation at both ends of the interval. Such a model once imported fine
/// and `eval` then reported about 10 %, silently.
fn finite_logits(model: &infer::Model<'_>) -> Result<()> {
    let file = model.file();
    let Normalization { mean, std } = file.normalization;
    let input = |p: f64| ((p - f64::from(mean)) / f64::from(std)).abs();
    let mut bound = input(0.0).max(input(1.0));
    let last = file.layers.len() - 1;
    for (index, layer) in file.layers.iter().enumerate() {
        let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
        let mut widest = 0f64;
        for j in 0..d_out {
            let sum: f64 = (0..d_in)
                .map(|i| f64::from(layer.weight(i, j)).abs())
                .sum::<f64>()
                * bound
                + f64::from(infer::format::f16_at(layer.bias, j)).abs();
            widest = widest.max(sum);
        }
        bound = if index == last {
            widest
        } else {
            let at = |z: f64| f64::from(file.activation.apply(index, z as f32)).abs();
            at(widest).max(at(-widest))
        };
        if !(bound.is_finite() && bound < f64::from(f32::MAX)) {
            return Err(Error::Unusable(format!(
                "the normalisation (mean {mean}, std {std}) and the weights can give values \
                 beyond f32's range by layer {index}, so the logits would not be finite on \
                 every picture: refused"
            )));
        }
    }
    Ok(())
}

/// PReLU's learned α of each of the `hidden` layers, taken out of `tensors` (`mlp.1.alpha`, ...:
/// the parameter of PyTorch's `myActivation`), or `None` when the state dict holds none.
fn learned_alphas(
    tensors: &mut BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    hidden: usize,
) -> Result<Option<Vec<f32>>> {
    let found: Vec<Option<(Vec<usize>, Vec<f32>)>> = (0..hidden)
        .map(|k| tensors.remove(&alpha_name(k)))
        .collect();
    if found.iter().all(Option::is_none) {
        return Ok(None);
    }
    found
        .into_iter()
        .enumerate()
        .map(|(k, tensor)| match tensor {
            Some((shape, values)) if shape == [1] => Ok(values[0]),
            Some((shape, _)) => Err(Error::Template(format!(
                "{} has shape {shape:?}; expected [1]",
                alpha_name(k)
            ))),
            None => Err(Error::Template(format!(
                "{} is missing: a prelu state dict holds the α of each hidden layer",
                alpha_name(k)
            ))),
        })
        .collect::<Result<_>>()
        .map(Some)
}

/// The activation the metadata names (`relu` when it names none, `prelu` when the state dict
/// holds `learned` α), with its α.
fn activation_from(
    metadata: &BTreeMap<String, String>,
    hidden: usize,
    learned: Option<Vec<f32>>,
    notes: &mut Vec<String>,
) -> Result<Activation> {
    let name = match metadata.get("activation") {
        Some(name) => name.as_str(),
        None if learned.is_some() => "prelu",
        None => {
            notes.push("no activation in the metadata; assuming relu".into());
            "relu"
        }
    };
    let kind: ActivationKind = name
        .parse()
        .map_err(|e| Error::Metadata(format!("activation {name:?} in the metadata is {e}")))?;
    if let Some(learned) = learned {
        if kind != ActivationKind::Prelu {
            return Err(Error::Template(format!(
                "the state dict holds prelu's α ({}) but the activation is {name}",
                alpha_name(0)
            )));
        }
        return Ok(Activation::new(kind, &learned));
    }
    let alphas: Vec<f32> = match kind {
        ActivationKind::Elu => match metadata.get("alpha") {
            Some(alpha) => vec![number(alpha, "alpha")?],
            None => vec![1.0],
        },
        ActivationKind::Prelu => {
            let given: Vec<&str> = metadata
                .get("alphas")
                .map_or(vec![], |a| a.split(',').collect());
            if given.len() != hidden {
                return Err(Error::Metadata(format!(
                    "prelu needs {hidden} comma-separated alphas in the metadata, found {}",
                    given.len()
                )));
            }
            given
                .iter()
                .map(|value| number(value.trim(), "alphas"))
                .collect::<Result<_>>()?
        }
        _ => Vec::new(),
    };
    Ok(Activation::new(kind, &alphas))
}

/// A number of the metadata's `key`.
fn number(text: &str, key: &str) -> Result<f32> {
    text.parse()
        .map_err(|e| Error::Metadata(format!("metadata {key} {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_bytes() -> Vec<u8> {
        let w1: Vec<f32> = (0..784 * 3)
            .map(|i| (i % 13) as f32 * 0.01 - 0.06)
            .collect();
        let w2: Vec<f32> = (0..3 * 10).map(|i| i as f32 * 0.05 - 0.7).collect();
        let b2: Vec<f32> = (0..10).map(|i| i as f32 * 0.1).collect();
        let normalization = Normalization {
            mean: 0.25,
            std: 0.5,
        };
        let mut file = ModelFileBuf::new(
            Activation::new(ActivationKind::Prelu, &[0.125]),
            normalization,
        );
        file.push_f16(784, 3, &w1, &[0.1, -0.2, 0.3])
            .unwrap()
            .push_f16(3, 10, &w2, &b2)
            .unwrap();
        file.to_vec().unwrap()
    }

    #[test]
    fn export_then_import_gives_back_the_same_file() {
        let bytes = model_bytes();
        let model = Model::from_bytes(&bytes).unwrap();
        for dtype in [Dtype::F32, Dtype::F16] {
            let exported = to_safetensors(&model, dtype);
            let file = safetensors::read(&exported).unwrap();
            let names: Vec<&String> = file.tensors.keys().collect();
            assert_eq!(
                names,
                [
                    "mlp.0.bias",
                    "mlp.0.weight",
                    "mlp.1.alpha",
                    "mlp.2.bias",
                    "mlp.2.weight"
                ]
            );
            assert_eq!(file.tensors["mlp.1.alpha"].values(), [0.125]);
            let weight = &file.tensors["mlp.2.weight"];
            assert_eq!(weight.shape, [10, 3]);
            let got = weight.values();
            let layer = &model.file().layers[1];
            for j in 0..10 {
                for i in 0..3 {
                    assert_eq!(got[j * 3 + i], layer.weight(i, j));
                }
            }
            let (imported, notes) = from_safetensors(&exported).unwrap();
            assert!(notes.is_empty(), "{notes:?}");
            assert_eq!(imported, bytes, "{dtype:?}");
        }
    }

    #[test]
    fn pt_export_then_import_gives_back_the_same_file() {
        let bytes = model_bytes();
        let model = Model::from_bytes(&bytes).unwrap();
        for dtype in [safetensors::Dtype::F32, safetensors::Dtype::F16] {
            let pt = crate::pt::write(&state_dict(&model), dtype);
            let (imported, notes) = from_pt(&pt, &metadata(&model)).unwrap();
            assert!(notes.is_empty(), "{notes:?}");
            assert_eq!(imported, bytes, "{dtype:?}");
        }
    }

    /// PReLU's α is a parameter of PyTorch's `myActivation`, so its state dict holds it
    /// (`mlp.1.alpha`): that value is the model's, with or without the metadata's; a state dict
    /// with α and another activation, or with some hidden layer's α missing, is refused.
    #[test]
    fn prelu_alpha_comes_from_the_state_dict() {
        let bytes = model_bytes();
        let model = Model::from_bytes(&bytes).unwrap();
        let mut tensors: BTreeMap<_, _> = state_dict(&model)
            .into_iter()
            .map(|(name, shape, values)| (name, (shape, values)))
            .collect();
        let mut given = metadata(&model);
        given.remove("activation");
        given.insert("alphas".into(), "0.5".into());
        let (imported, _) = from_state_dict(tensors.clone(), &given).unwrap();
        assert_eq!(imported, bytes);
        given.insert("activation".into(), "relu".into());
        let error = from_state_dict(tensors.clone(), &given).unwrap_err();
        assert!(error.to_string().contains("mlp.1.alpha"), "{error}");
        tensors.insert("mlp.1.alpha".into(), (vec![2], vec![0.1, 0.2]));
        let error = from_state_dict(tensors, &metadata(&model)).unwrap_err();
        assert!(error.to_string().contains("expected [1]"), "{error}");
    }

    /// A normalisation that sends some pixel out of f32's range (std 1e-45, mean 1e38) once
    /// imported fine and scored about 10 % in eval: it is refused.
    #[test]
    fn normalisations_or_weights_that_cannot_give_finite_logits_are_refused() {
        let bytes = model_bytes();
        let model = Model::from_bytes(&bytes).unwrap();
        let tensors = || {
            state_dict(&model)
                .into_iter()
                .map(|(name, shape, values)| (name, (shape, values)))
                .collect::<BTreeMap<_, _>>()
        };
        for (mean, std) in [("0.25", "1e-45"), ("1e38", "0.5")] {
            let mut metadata = metadata(&model);
            metadata.insert("normalization_mean".into(), mean.into());
            metadata.insert("normalization_std".into(), std.into());
            match from_state_dict(tensors(), &metadata) {
                Ok(_) => panic!("mean {mean}, std {std}: accepted"),
                Err(error) => assert!(
                    error.to_string().contains("would not be finite"),
                    "{mean}, {std}: {error}"
                ),
            }
        }
        assert!(from_state_dict(tensors(), &metadata(&model)).is_ok());
    }

    #[test]
    fn import_names_missing_misshaped_and_extra_tensors() {
        let zeros = vec![0u8; 4 * 784 * 10];
        let st = |entries: Vec<(&str, Vec<usize>)>| {
            let tensors: Vec<(String, safetensors::Tensor<'_>)> = entries
                .into_iter()
                .map(|(name, shape)| {
                    let n: usize = shape.iter().product();
                    let tensor = safetensors::Tensor {
                        dtype: safetensors::Dtype::F32,
                        shape,
                        data: &zeros[..4 * n],
                    };
                    (name.to_owned(), tensor)
                })
                .collect();
            safetensors::write(&tensors, &BTreeMap::new())
        };
        let error = |raw: Vec<u8>| from_safetensors(&raw).unwrap_err().to_string();
        let one_layer = |extra: Vec<(&'static str, Vec<usize>)>| {
            let mut entries = vec![("mlp.0.weight", vec![10, 784]), ("mlp.0.bias", vec![10])];
            entries.extend(extra);
            st(entries)
        };
        for (raw, says) in [
            (st(vec![("fc.weight", vec![10, 784])]), "mlp.0.weight"),
            (
                st(vec![("mlp.0.weight", vec![10, 784])]),
                "mlp.0.bias is missing",
            ),
            (
                st(vec![
                    ("mlp.0.weight", vec![10, 783]),
                    ("mlp.0.bias", vec![10]),
                ]),
                "784",
            ),
            (
                st(vec![
                    ("mlp.0.weight", vec![4, 784]),
                    ("mlp.0.bias", vec![4]),
                ]),
                "4 outputs",
            ),
            (
                st(vec![
                    ("mlp.0.weight", vec![10, 784]),
                    ("mlp.0.bias", vec![9]),
                ]),
                "[10]",
            ),
            (one_layer(vec![("foo", vec![1])]), "tensor foo"),
            (
                one_layer(vec![("mlp.1.weight", vec![1])]),
                "tensor mlp.1.weight",
            ),
            (
                one_layer(vec![("mlp.4.weight", vec![1])]),
                "tensor mlp.4.weight",
            ),
        ] {
            let message = error(raw);
            assert!(message.contains(says), "{says:?}: {message}");
        }
        let (ok, notes) = from_safetensors(&one_layer(vec![])).unwrap();
        assert!(Model::from_bytes(&ok).is_ok());
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    /// A float model's metadata names its own format version (3), not the build's newest (4).
    #[test]
    fn the_metadata_names_the_files_own_version() {
        let bytes = model_bytes();
        let model = Model::from_bytes(&bytes).unwrap();
        assert_eq!(model.file().version(), 3);
        assert_eq!(metadata(&model)["source"], "fashion-mlp model file v3");
    }
}
