//! `show`, `export` and `import`: a model file's anatomy, and the PyTorch state dict of the
//! course's template (`mlp.0.weight`, `mlp.0.bias`, `mlp.2.weight`, …: `nn.Linear` layers at even
//! indices of an `nn.Sequential`, the activation between them) as safetensors.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use half::f16;
use infer::format::{Encoding, MAX_LAYERS, f16_at};
use infer::{Activation, LayerBytes, Model, ModelFile, Normalization};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// Normalisation assumed for an imported state dict without one in its metadata: the course's
/// Fashion-MNIST constants.
const DEFAULT_NORMALIZATION: Normalization = Normalization {
    mean: 0.2860,
    std: 0.3530,
};

/// Options of `show`.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// Model file to describe.
    #[arg(long, value_name = "PATH", default_value = "runs/model.fmlp")]
    model: PathBuf,
}

/// Element type of exported tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportDtype {
    /// 32-bit floats (what `torch.load_state_dict` expects by default).
    F32,
    /// The file's own 16-bit floats.
    F16,
}

/// Options of `export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Model file to export.
    #[arg(long, value_name = "PATH", default_value = "runs/model.fmlp")]
    model: PathBuf,
    /// Output format (only safetensors).
    #[arg(long, value_parser = ["safetensors"], default_value = "safetensors")]
    format: String,
    /// Element type of the tensors.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: ExportDtype,
    /// File to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Options of `quantize`.
#[derive(clap::Args, Debug)]
pub struct QuantizeArgs {
    /// f16 model file to quantise.
    #[arg(long, value_name = "PATH", default_value = "runs/model.fmlp")]
    model: PathBuf,
    /// File to write. Default: MODEL with extension .int8.fmlp.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

/// Runs `quantize`: every layer's weights to int8 with one f16 scale per output,
/// `scale = max |w| / 127`, `q = round(w / scale)`; biases stay f16.
pub fn quantize(args: &QuantizeArgs) -> anyhow::Result<()> {
    let bytes = read_model(&args.model)?;
    let model = Model::from_bytes(&bytes).map_err(|e| anyhow!("{}: {e}", args.model.display()))?;
    let file = model.file();
    let mut storage = Vec::new();
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
        let scale_bytes: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        storage.push((layer.d_in, layer.d_out, q, scale_bytes, layer.bias));
    }
    let mut layers = infer::heapless::Vec::<LayerBytes<'_>, MAX_LAYERS>::new();
    for (d_in, d_out, weights, scales, bias) in &storage {
        layers
            .push(LayerBytes {
                d_in: *d_in,
                d_out: *d_out,
                encoding: Encoding::Int8,
                weights,
                scales,
                bias,
            })
            .map_err(|_| anyhow!("more than {MAX_LAYERS} layers"))?;
    }
    let quantized = ModelFile {
        activation: file.activation,
        normalization: file.normalization,
        layers,
    }
    .to_vec()
    .map_err(|e| anyhow!("encoding: {e}"))?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.model.with_extension("int8.fmlp"));
    data::atomic::write_atomically(&out, &quantized)
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote {} ({} bytes, int8; the f16 file has {} bytes)",
        out.display(),
        quantized.len(),
        bytes.len()
    );
    Ok(())
}

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

fn read_model(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Model::from_bytes(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(bytes)
}

/// Runs `show`.
pub fn show(args: &ShowArgs) -> anyhow::Result<()> {
    let bytes = read_model(&args.model)?;
    let model = Model::from_bytes(&bytes).expect("checked by read_model");
    print!("{}", describe(&args.model, &model, bytes.len()));
    Ok(())
}

fn describe(path: &Path, model: &Model<'_>, size: usize) -> String {
    let file = model.file();
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "model {} ({size} bytes), format version {}, CRC-32 verified",
        path.display(),
        infer::FORMAT_VERSION
    );
    let _ = writeln!(w, "architecture {}", crate::eval::architecture(model));
    let Normalization { mean, std } = file.normalization;
    let _ = writeln!(
        w,
        "input: 28x28 pixels p, fed as (p / 255 - {mean:.4}) / {std:.4}"
    );
    let _ = writeln!(w, "\nlayer  shape (in x out)  parameters  bytes  weights");
    let (mut parameters, mut parameter_bytes) = (0, 0);
    for (index, layer) in file.layers.iter().enumerate() {
        let count = (layer.d_in as usize + 1) * layer.d_out as usize;
        let bytes = layer.weights.len() + layer.scales.len() + layer.bias.len();
        let encoding = match layer.encoding {
            Encoding::F16 => "f16",
            Encoding::Int8 => "int8, f16 scale per output",
        };
        let _ = writeln!(
            w,
            "{index:>5}  {:>7} x {:<6}  {count:>10}  {bytes:>5}  {encoding}",
            layer.d_in, layer.d_out
        );
        parameters += count;
        parameter_bytes += bytes;
    }
    let _ = writeln!(
        w,
        "total                    {parameters:>10}  {parameter_bytes:>5}  (+{} bytes of header, sizes, settings)",
        size - parameter_bytes
    );
    out
}

/// Runs `export`.
pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let bytes = read_model(&args.model)?;
    let out = to_safetensors(&Model::from_bytes(&bytes).expect("checked"), args.dtype)?;
    data::atomic::write_atomically(&args.out, &out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} bytes, {:?})",
        args.out.display(),
        out.len(),
        args.dtype
    );
    Ok(())
}

/// The model as a safetensors state dict of the course's template.
pub fn to_safetensors(model: &Model<'_>, dtype: ExportDtype) -> anyhow::Result<Vec<u8>> {
    let file = model.file();
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (index, layer) in file.layers.iter().enumerate() {
        let (d_in, d_out) = (layer.d_in as usize, layer.d_out as usize);
        // Ours is [d_in, d_out]; nn.Linear's weight is [out_features, in_features].
        let transposed: Vec<f16> = (0..d_out)
            .flat_map(|j| (0..d_in).map(move |i| (i, j)))
            .map(|(i, j)| f16::from_f32(layer.weight(i, j)))
            .collect();
        let bias: Vec<f16> = (0..d_out)
            .map(|j| f16::from_f32(f16_at(layer.bias, j)))
            .collect();
        buffers.push((
            format!("mlp.{}.weight", 2 * index),
            vec![d_out, d_in],
            encode(&transposed, dtype),
        ));
        buffers.push((
            format!("mlp.{}.bias", 2 * index),
            vec![d_out],
            encode(&bias, dtype),
        ));
    }
    let st_dtype = match dtype {
        ExportDtype::F32 => Dtype::F32,
        ExportDtype::F16 => Dtype::F16,
    };
    let views = buffers
        .iter()
        .map(|(name, shape, data)| {
            Ok((
                name.clone(),
                TensorView::new(st_dtype, shape.clone(), data)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let mut metadata = HashMap::from([
        ("format".to_owned(), "pt".to_owned()),
        (
            "source".to_owned(),
            format!("fashion-mlp model file v{}", infer::FORMAT_VERSION),
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
    Ok(safetensors::serialize(views, Some(metadata))?)
}

fn encode(values: &[f16], dtype: ExportDtype) -> Vec<u8> {
    match dtype {
        ExportDtype::F32 => values
            .iter()
            .flat_map(|v| v.to_f32().to_le_bytes())
            .collect(),
        ExportDtype::F16 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Runs `import`.
pub fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let raw =
        std::fs::read(&args.from).with_context(|| format!("reading {}", args.from.display()))?;
    let (bytes, notes) =
        from_safetensors(&raw).map_err(|e| anyhow!("{}: {e}", args.from.display()))?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.from.with_extension("fmlp"));
    data::atomic::write_atomically(&out, &bytes)
        .with_context(|| format!("writing {}", out.display()))?;
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
        .take_while(|k| tensors.tensor(&format!("mlp.{}.weight", 2 * k)).is_ok())
        .count();
    if count == 0 {
        bail!(
            "no tensor named mlp.0.weight (expected mlp.0.weight, mlp.0.bias, mlp.2.weight, ...)"
        );
    }
    if count > MAX_LAYERS {
        bail!("{count} layers; the model file holds at most {MAX_LAYERS}");
    }
    let mut storage = Vec::new();
    let mut width = infer::INPUT_SIZE;
    for k in 0..count {
        let (weight_name, bias_name) = (
            format!("mlp.{}.weight", 2 * k),
            format!("mlp.{}.bias", 2 * k),
        );
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
        let w = values(&weight_name, &weight)?;
        let b = values(&bias_name, &bias)?;
        let mut weights = Vec::with_capacity(2 * d_in * d_out);
        for i in 0..d_in {
            for j in 0..d_out {
                weights.extend_from_slice(&half_bytes(&weight_name, w[j * d_in + i])?);
            }
        }
        let bias_bytes = b
            .iter()
            .map(|&v| half_bytes(&bias_name, v))
            .collect::<anyhow::Result<Vec<_>>>()?;
        storage.push((d_in as u32, d_out as u32, weights, bias_bytes.concat()));
        width = d_out;
    }
    if width != infer::NUM_CLASSES {
        bail!(
            "the last layer has {width} outputs; expected {}",
            infer::NUM_CLASSES
        );
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
    let mut layers = infer::heapless::Vec::new();
    for (d_in, d_out, weights, bias) in &storage {
        let layer = LayerBytes {
            encoding: infer::format::Encoding::F16,
            scales: &[],
            d_in: *d_in,
            d_out: *d_out,
            weights,
            bias,
        };
        layers.push(layer).map_err(|_| anyhow!("too many layers"))?;
    }
    let file = ModelFile {
        activation,
        normalization,
        layers,
    };
    file.validate().map_err(|e| anyhow!("{e}"))?;
    let bytes = file.to_vec().map_err(|e| anyhow!("{e}"))?;
    Ok((bytes, notes))
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

fn half_bytes(name: &str, value: f32) -> anyhow::Result<[u8; 2]> {
    let half = f16::from_f32(value);
    if !half.is_finite() {
        bail!("{name} holds {value}, which f16 cannot represent");
    }
    Ok(half.to_le_bytes())
}

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
    let number = |key: &str, default: f32| -> anyhow::Result<f32> {
        metadata.get(key).map_or(Ok(default), |v| {
            v.parse().with_context(|| format!("metadata {key}"))
        })
    };
    Ok(match name {
        "relu" => Activation::Relu,
        "identity" => Activation::Identity,
        "step" => Activation::Step,
        "logistic" | "sigmoid" => Activation::Logistic,
        "tanh" => Activation::Tanh,
        "arctan" => Activation::Arctan,
        "softplus" => Activation::Softplus,
        "elu" => Activation::Elu {
            alpha: number("alpha", 1.0)?,
        },
        "prelu" => {
            let mut alphas = [0.0; MAX_LAYERS];
            let given: Vec<&str> = metadata
                .get("alphas")
                .map_or(vec![], |a| a.split(',').collect());
            if given.len() != hidden {
                bail!(
                    "prelu needs {hidden} comma-separated alphas in the metadata, found {}",
                    given.len()
                );
            }
            for (slot, value) in alphas.iter_mut().zip(given) {
                *slot = value.trim().parse().context("metadata alphas")?;
            }
            Activation::Prelu { alphas }
        }
        other => bail!(
            "activation {other:?} in the metadata is not one of the nine this model file supports"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_bytes() -> Vec<u8> {
        let w1: Vec<u8> = (0..784 * 3)
            .flat_map(|i| f16::from_f32((i % 13) as f32 * 0.01 - 0.06).to_le_bytes())
            .collect();
        let b1: Vec<u8> = [0.1f32, -0.2, 0.3]
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        let w2: Vec<u8> = (0..3 * 10)
            .flat_map(|i| f16::from_f32(i as f32 * 0.05 - 0.7).to_le_bytes())
            .collect();
        let b2: Vec<u8> = (0..10)
            .flat_map(|i| f16::from_f32(i as f32 * 0.1).to_le_bytes())
            .collect();
        let mut layers = infer::heapless::Vec::new();
        layers
            .push(LayerBytes {
                encoding: infer::format::Encoding::F16,
                scales: &[],
                d_in: 784,
                d_out: 3,
                weights: &w1,
                bias: &b1,
            })
            .unwrap();
        layers
            .push(LayerBytes {
                encoding: infer::format::Encoding::F16,
                scales: &[],
                d_in: 3,
                d_out: 10,
                weights: &w2,
                bias: &b2,
            })
            .unwrap();
        let mut alphas = [0.0; MAX_LAYERS];
        alphas[0] = 0.125;
        let file = ModelFile {
            activation: Activation::Prelu { alphas },
            normalization: Normalization {
                mean: 0.25,
                std: 0.5,
            },
            layers,
        };
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
