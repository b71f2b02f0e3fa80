//! `cargo xtask import`: a model file from a state dict of the course's template (see `export`),
//! in safetensors or torch's `.pt` format, e.g. trained in PyTorch, so it reaches `infer` and the
//! board too.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use infer::format::MAX_LAYERS;
use infer::{Activation, ActivationKind, ModelFileBuf, Normalization};

use crate::export::{alpha_name, tensor_names};
use crate::safetensors;

/// Normalisation assumed for an imported state dict without one in its metadata: the course's
/// Fashion-MNIST constants.
const DEFAULT_NORMALIZATION: Normalization = Normalization {
    mean: 0.2860,
    std: 0.3530,
};

/// Options of `import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// State dict with mlp.0.weight, mlp.0.bias, mlp.2.weight, … (f32 or f16): safetensors, or
    /// a `.pt` file as `torch.save(model.state_dict(), FILE)` writes it (its activation and
    /// normalisation read from FILE with extension .json when there is one).
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// Model file to write. Default: FILE with extension .fmlp.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

/// Runs `import`.
pub fn run(args: &ImportArgs) -> anyhow::Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.from.with_extension("fmlp"));
    crate::files::check_outputs(&[("--out", &out)], &[("--from", &args.from)])?;
    let raw = data::input::read(&args.from, data::input::MAX_DATA)
        .with_context(|| format!("reading {}", args.from.display()))?;
    let (bytes, notes) = if raw.starts_with(b"PK\x03\x04") {
        let json = crate::export::sidecar(&args.from);
        let metadata = match data::input::read(&json, data::input::MAX_TEXT) {
            Ok(text) => serde_json::from_slice(&text)
                .with_context(|| format!("{}: not a JSON object of strings", json.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", json.display())),
        };
        from_pt(&raw, &metadata)
    } else {
        from_safetensors(&raw)
    }
    .map_err(|e| anyhow!("{}: {e}", args.from.display()))?;
    crate::files::write(&out, &bytes)?;
    for note in notes {
        eprintln!("note: {note}");
    }
    println!("wrote {} ({} bytes)", out.display(), bytes.len());
    Ok(())
}

/// A model file built from a safetensors state dict, and notes on defaults that were assumed.
pub fn from_safetensors(raw: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<String>)> {
    let file = safetensors::read(raw).map_err(|e| anyhow!("{e}"))?;
    let tensors = file
        .tensors
        .iter()
        .map(|(name, tensor)| (name.clone(), (tensor.shape.clone(), tensor.values())))
        .collect();
    from_state_dict(tensors, &file.metadata)
}

/// A model file built from a `.pt` state dict and the metadata `export` writes beside it.
pub fn from_pt(
    raw: &[u8],
    metadata: &BTreeMap<String, String>,
) -> anyhow::Result<(Vec<u8>, Vec<String>)> {
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
    for (name, shape, values) in crate::pt::read_with(raw, template).map_err(|e| anyhow!("{e}"))? {
        tensors.insert(name, (shape, values));
    }
    from_state_dict(tensors, metadata)
}

/// A model file built from the tensors of the template's state dict (name → shape and values)
/// and the metadata `export` writes; a tensor the template does not have is an error naming it.
pub fn from_state_dict(
    mut tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    metadata: &BTreeMap<String, String>,
) -> anyhow::Result<(Vec<u8>, Vec<String>)> {
    let mut notes = Vec::new();
    let count = (0..)
        .take_while(|&k| tensors.contains_key(&tensor_names(k).0))
        .count();
    if count == 0 {
        bail!(
            "no tensor named mlp.0.weight (expected mlp.0.weight, mlp.0.bias, mlp.2.weight, ...)"
        );
    }
    if count > MAX_LAYERS {
        bail!("{count} layers; the model file holds at most {MAX_LAYERS}");
    }
    let learned = learned_alphas(&mut tensors, count - 1)?;
    let activation = activation_from(metadata, count - 1, learned, &mut notes)?;
    let normalization = match (
        metadata.get("normalization_mean"),
        metadata.get("normalization_std"),
    ) {
        (Some(mean), Some(std)) => Normalization {
            mean: mean.parse().context("metadata normalization_mean")?,
            std: std.parse().context("metadata normalization_std")?,
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
            bail!("{weight_name} has shape {shape:?}; expected [out_features, in_features]");
        };
        if d_in != width {
            bail!("{weight_name} has {d_in} input features; expected {width}");
        }
        let (bias_shape, bias) = tensors
            .remove(&bias_name)
            .with_context(|| format!("{bias_name} is missing"))?;
        if bias_shape != [d_out] {
            bail!("{bias_name} has shape {bias_shape:?}; expected [{d_out}]");
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
        bail!(
            "tensor {extra} is not part of the template's {count} layers (mlp.0 to mlp.{}): \
             refusing to drop it silently",
            2 * (count - 1)
        );
    }
    if width != infer::NUM_CLASSES {
        bail!(
            "the last layer has {width} outputs; expected {}",
            infer::NUM_CLASSES
        );
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
fn finite_logits(model: &infer::Model<'_>) -> anyhow::Result<()> {
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
            bail!(
                "the normalisation (mean {mean}, std {std}) and the weights can give values \
                 beyond f32's range by layer {index}, so the logits would not be finite on \
                 every picture: refused"
            );
        }
    }
    Ok(())
}

/// PReLU's learned α of each of the `hidden` layers, taken out of `tensors` (`mlp.1.alpha`, ...:
/// the parameter of PyTorch's `myActivation`), or `None` when the state dict holds none.
fn learned_alphas(
    tensors: &mut BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    hidden: usize,
) -> anyhow::Result<Option<Vec<f32>>> {
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
            Some((shape, _)) => bail!("{} has shape {shape:?}; expected [1]", alpha_name(k)),
            None => bail!(
                "{} is missing: a prelu state dict holds the α of each hidden layer",
                alpha_name(k)
            ),
        })
        .collect::<anyhow::Result<_>>()
        .map(Some)
}

/// The activation the metadata names (`relu` when it names none, `prelu` when the state dict
/// holds `learned` α), with its α.
fn activation_from(
    metadata: &BTreeMap<String, String>,
    hidden: usize,
    learned: Option<Vec<f32>>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Activation> {
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
        .map_err(|e| anyhow!("activation {name:?} in the metadata is {e}"))?;
    if let Some(learned) = learned {
        if kind != ActivationKind::Prelu {
            bail!(
                "the state dict holds prelu's α ({}) but the activation is {name}",
                alpha_name(0)
            );
        }
        return Ok(Activation::new(kind, &learned));
    }
    let alphas: Vec<f32> = match kind {
        ActivationKind::Elu => match metadata.get("alpha") {
            Some(alpha) => vec![alpha.parse().context("metadata alpha")?],
            None => vec![1.0],
        },
        ActivationKind::Prelu => {
            let given: Vec<&str> = metadata
                .get("alphas")
                .map_or(vec![], |a| a.split(',').collect());
            if given.len() != hidden {
                bail!(
                    "prelu needs {hidden} comma-separated alphas in the metadata, found {}",
                    given.len()
                );
            }
            given
                .iter()
                .map(|value| value.trim().parse().context("metadata alphas"))
                .collect::<anyhow::Result<_>>()?
        }
        _ => Vec::new(),
    };
    Ok(Activation::new(kind, &alphas))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{ExportDtype, to_safetensors};
    use infer::Model;

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
        for dtype in [ExportDtype::F32, ExportDtype::F16] {
            let exported = to_safetensors(&model, dtype).unwrap();
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
            let pt = crate::pt::write(&crate::export::state_dict(&model), dtype);
            let (imported, notes) = from_pt(&pt, &crate::export::metadata(&model)).unwrap();
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
        let mut tensors: BTreeMap<_, _> = crate::export::state_dict(&model)
            .into_iter()
            .map(|(name, shape, values)| (name, (shape, values)))
            .collect();
        let mut metadata = crate::export::metadata(&model);
        metadata.remove("activation");
        metadata.insert("alphas".into(), "0.5".into());
        let (imported, _) = from_state_dict(tensors.clone(), &metadata).unwrap();
        assert_eq!(imported, bytes);
        metadata.insert("activation".into(), "relu".into());
        let error = from_state_dict(tensors.clone(), &metadata).unwrap_err();
        assert!(error.to_string().contains("mlp.1.alpha"), "{error}");
        tensors.insert("mlp.1.alpha".into(), (vec![2], vec![0.1, 0.2]));
        let error = from_state_dict(tensors, &crate::export::metadata(&model)).unwrap_err();
        assert!(error.to_string().contains("expected [1]"), "{error}");
    }

    /// A normalisation that sends some pixel out of f32's range (std 1e-45, mean 1e38) once
    /// imported fine and scored about 10 % in eval: it is refused.
    #[test]
    fn normalisations_or_weights_that_cannot_give_finite_logits_are_refused() {
        let bytes = model_bytes();
        let model = Model::from_bytes(&bytes).unwrap();
        let tensors = || {
            crate::export::state_dict(&model)
                .into_iter()
                .map(|(name, shape, values)| (name, (shape, values)))
                .collect::<BTreeMap<_, _>>()
        };
        for (mean, std) in [("0.25", "1e-45"), ("1e38", "0.5")] {
            let mut metadata = crate::export::metadata(&model);
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
        assert!(from_state_dict(tensors(), &crate::export::metadata(&model)).is_ok());
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
}
