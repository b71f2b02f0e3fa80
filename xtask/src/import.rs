//! `cargo xtask import`: a model file from a safetensors state dict of the course's template
//! (see `export`), e.g. trained in PyTorch, so it reaches `infer` and the board too.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use infer::format::{MAX_LAYERS, f16_at};
use infer::{Activation, ActivationKind, ModelFileBuf, Normalization};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::export::tensor_names;

/// Normalisation assumed for an imported state dict without one in its metadata: the course's
/// Fashion-MNIST constants.
const DEFAULT_NORMALIZATION: Normalization = Normalization {
    mean: 0.2860,
    std: 0.3530,
};

/// Options of `import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// safetensors state dict with mlp.0.weight, mlp.0.bias, mlp.2.weight, … (f32 or f16).
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// Model file to write. Default: FILE with extension .fmlp.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

/// Runs `import`.
pub fn run(args: &ImportArgs) -> anyhow::Result<()> {
    let raw =
        std::fs::read(&args.from).with_context(|| format!("reading {}", args.from.display()))?;
    let (bytes, notes) =
        from_safetensors(&raw).map_err(|e| anyhow!("{}: {e}", args.from.display()))?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.from.with_extension("fmlp"));
    crate::files::write(&out, &bytes)?;
    for note in notes {
        eprintln!("note: {note}");
    }
    println!("wrote {} ({} bytes)", out.display(), bytes.len());
    Ok(())
}

/// A model file built from a state dict, and notes on defaults that were assumed.
pub fn from_safetensors(raw: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<String>)> {
    let tensors = SafeTensors::deserialize(raw).context("not a safetensors file")?;
    let (_, metadata) = SafeTensors::read_metadata(raw)?;
    let metadata = metadata.metadata().clone().unwrap_or_default();
    let mut notes = Vec::new();
    let count = (0..)
        .take_while(|&k| tensors.tensor(&tensor_names(k).0).is_ok())
        .count();
    if count == 0 {
        bail!(
            "no tensor named mlp.0.weight (expected mlp.0.weight, mlp.0.bias, mlp.2.weight, ...)"
        );
    }
    if count > MAX_LAYERS {
        bail!("{count} layers; the model file holds at most {MAX_LAYERS}");
    }
    let activation = activation_from(&metadata, count - 1, &mut notes)?;
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
        let weight = tensors.tensor(&weight_name)?;
        let &[d_out, d_in] = weight.shape() else {
            bail!(
                "{weight_name} has shape {:?}; expected [out_features, in_features]",
                weight.shape()
            );
        };
        if d_in != width {
            bail!("{weight_name} has {d_in} input features; expected {width}");
        }
        let bias = tensors
            .tensor(&bias_name)
            .map_err(|_| anyhow!("{bias_name} is missing"))?;
        if bias.shape() != [d_out] {
            bail!(
                "{bias_name} has shape {:?}; expected [{d_out}]",
                bias.shape()
            );
        }
        // nn.Linear's weight is [out_features, in_features]; ours is [d_in, d_out].
        let w = values(&weight_name, &weight)?;
        let transposed: Vec<f32> = (0..d_in)
            .flat_map(|i| (0..d_out).map(move |j| (i, j)))
            .map(|(i, j)| w[j * d_in + i])
            .collect();
        file.push_f16(d_in, d_out, &transposed, &values(&bias_name, &bias)?)?;
        width = d_out;
    }
    if width != infer::NUM_CLASSES {
        bail!(
            "the last layer has {width} outputs; expected {}",
            infer::NUM_CLASSES
        );
    }
    Ok((file.to_vec()?, notes))
}

fn values(name: &str, view: &TensorView<'_>) -> anyhow::Result<Vec<f32>> {
    let data = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F16 => (0..data.len() / 2).map(|i| f16_at(data, i)).collect(),
        other => bail!("{name} is {other:?}; only F32 and F16 are read"),
    })
}

/// The activation the metadata names (`relu` when it names none), with its α.
fn activation_from(
    metadata: &HashMap<String, String>,
    hidden: usize,
    notes: &mut Vec<String>,
) -> anyhow::Result<Activation> {
    let name = metadata
        .get("activation")
        .map(String::as_str)
        .unwrap_or_else(|| {
            notes.push("no activation in the metadata; assuming relu".into());
            "relu"
        });
    let kind: ActivationKind = name
        .parse()
        .map_err(|e| anyhow!("activation {name:?} in the metadata is {e}"))?;
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
    fn export_round_trips_through_the_safetensors_crate() {
        let bytes = model_bytes();
        let model = Model::from_bytes(&bytes).unwrap();
        for dtype in [ExportDtype::F32, ExportDtype::F16] {
            let exported = to_safetensors(&model, dtype).unwrap();
            let tensors = SafeTensors::deserialize(&exported).unwrap();
            let mut names = tensors.names();
            names.sort();
            assert_eq!(
                names,
                ["mlp.0.bias", "mlp.0.weight", "mlp.2.bias", "mlp.2.weight"]
            );
            let weight = tensors.tensor("mlp.2.weight").unwrap();
            assert_eq!(weight.shape(), [10, 3]);
            let got = values("mlp.2.weight", &weight).unwrap();
            let layer = &model.file().layers[1];
            for j in 0..10 {
                for i in 0..3 {
                    assert_eq!(got[j * 3 + i], f16_at(layer.weights, i * 10 + j));
                }
            }
            // And back: the very same model file.
            let (imported, notes) = from_safetensors(&exported).unwrap();
            assert!(notes.is_empty(), "{notes:?}");
            assert_eq!(imported, bytes, "{dtype:?}");
        }
    }

    #[test]
    fn import_names_missing_and_misshaped_tensors() {
        let zeros = vec![0u8; 4 * 784 * 10];
        let st = |entries: Vec<(&str, Vec<usize>)>| {
            let views: Vec<_> = entries
                .into_iter()
                .map(|(name, shape)| {
                    let n: usize = shape.iter().product();
                    (
                        name.to_owned(),
                        TensorView::new(Dtype::F32, shape, &zeros[..4 * n]).unwrap(),
                    )
                })
                .collect();
            safetensors::serialize(views, None).unwrap()
        };
        let error = |raw: Vec<u8>| from_safetensors(&raw).unwrap_err().to_string();
        assert!(error(st(vec![("fc.weight", vec![10, 784])])).contains("mlp.0.weight"));
        assert!(error(st(vec![("mlp.0.weight", vec![10, 784])])).contains("mlp.0.bias is missing"));
        assert!(
            error(st(vec![
                ("mlp.0.weight", vec![10, 783]),
                ("mlp.0.bias", vec![10])
            ]))
            .contains("784")
        );
        assert!(
            error(st(vec![
                ("mlp.0.weight", vec![4, 784]),
                ("mlp.0.bias", vec![4])
            ]))
            .contains("4 outputs")
        );
        assert!(
            error(st(vec![
                ("mlp.0.weight", vec![10, 784]),
                ("mlp.0.bias", vec![9])
            ]))
            .contains("[10]")
        );
        let (ok, notes) = from_safetensors(&st(vec![
            ("mlp.0.weight", vec![10, 784]),
            ("mlp.0.bias", vec![10]),
        ]))
        .unwrap();
        assert!(Model::from_bytes(&ok).is_ok());
        assert_eq!(notes.len(), 2, "{notes:?}");
    }
}
