//! `cargo xtask export`: a model file as the PyTorch state dict of the course's template
//! (`mlp.0.weight`, `mlp.0.bias`, `mlp.2.weight`, …: `nn.Linear` layers at even indices of an
//! `nn.Sequential`, the activation between them), in safetensors (the activation, its α and the
//! input normalisation in its metadata) or in torch's own `.pt` format (the same metadata in a
//! JSON file beside it, [`sidecar`], since a state dict has no place for it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use infer::format::f16_at;
use infer::{Activation, Model};

use crate::files::ModelFileOnDisk;
use crate::safetensors::{self, Dtype, Tensor};

/// Element type of exported tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportDtype {
    /// 32-bit floats (what `torch.load_state_dict` expects by default).
    F32,
    /// The file's own 16-bit floats.
    F16,
}

impl ExportDtype {
    /// The element type it names.
    pub fn dtype(self) -> Dtype {
        match self {
            ExportDtype::F32 => Dtype::F32,
            ExportDtype::F16 => Dtype::F16,
        }
    }
}

/// File formats of `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// safetensors, metadata inside.
    Safetensors,
    /// PyTorch's zip checkpoint of the state dict, metadata in a JSON file beside it.
    Pt,
}

/// Options of `export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Model file to export.
    #[arg(long, value_name = "PATH", default_value = infer::format::DEFAULT_PATH)]
    model: PathBuf,
    /// Output format: `safetensors`, or `pt` (what `torch.save(model.state_dict())` writes;
    /// `torch.load(FILE, weights_only=True)` reads it; the activation and normalisation go to
    /// FILE with extension .json).
    #[arg(long, value_enum, default_value = "safetensors")]
    format: ExportFormat,
    /// Element type of the tensors.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: ExportDtype,
    /// File to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Runs `export`.
pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let input = ModelFileOnDisk::read(&args.model)?;
    let model = input.model();
    float_only(&args.model, &model)?;
    match args.format {
        ExportFormat::Safetensors => {
            crate::files::check_outputs(&[("--out", &args.out)], &[("--model", &args.model)])?;
            let out = to_safetensors(&model, args.dtype)?;
            crate::files::write(&args.out, &out)?;
            println!(
                "wrote {} ({} bytes, {:?})",
                args.out.display(),
                out.len(),
                args.dtype
            );
        }
        ExportFormat::Pt => {
            write_pt(&model, args.dtype, &args.out, &args.model)?;
        }
    }
    Ok(())
}

/// Where the metadata of a `.pt` file goes: beside it, extension `.json`.
pub fn sidecar(pt: &Path) -> PathBuf {
    pt.with_extension("json")
}

/// Writes `model` (read from `input`) as the `.pt` state dict `out` in `dtype`, and its metadata
/// as JSON beside it ([`sidecar`]); returns the `.pt` file's bytes.
pub fn write_pt(
    model: &Model<'_>,
    dtype: ExportDtype,
    out: &Path,
    input: &Path,
) -> anyhow::Result<Vec<u8>> {
    let json = sidecar(out);
    crate::files::check_outputs(
        &[("--out", out), ("the metadata file", &json)],
        &[("--model", input)],
    )?;
    let dtype = dtype.dtype();
    let bytes = crate::pt::write(&state_dict(model), dtype);
    let metadata = serde_json::to_string_pretty(&metadata(model))? + "\n";
    crate::files::write(&json, metadata.as_bytes())?;
    crate::files::write(out, &bytes)?;
    println!(
        "wrote {} ({} bytes, {dtype:?}; load with torch.load(path, weights_only=True)) and its \
         activation and normalisation in {}",
        out.display(),
        bytes.len(),
        json.display()
    );
    Ok(bytes)
}

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
pub fn to_safetensors(model: &Model<'_>, dtype: ExportDtype) -> anyhow::Result<Vec<u8>> {
    let dtype = dtype.dtype();
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
    Ok(safetensors::write(&tensors, &metadata(model)))
}

/// An error for a full-integer model: its weights' scales are folded into its requantisation,
/// so it has no float state dict.
pub fn float_only(path: &Path, model: &Model<'_>) -> anyhow::Result<()> {
    if model.file().is_integer() {
        anyhow::bail!(
            "{}: a full-integer model has no float weights to export; export the f16 or int8 \
             file it was quantised from",
            path.display()
        );
    }
    Ok(())
}

/// The model's state dict in the template's names and layouts: each `nn.Linear`'s weight
/// `[out_features, in_features]` and bias `[out_features]`, as f32 (an f16 or int8 weight's
/// exact value); for PReLU, each hidden layer's learned α (`[1]`, see [`alpha_name`]).
pub fn state_dict(model: &Model<'_>) -> Vec<crate::pt::NamedTensor> {
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

#[cfg(test)]
mod tests {
    /// A float model's metadata names its own format version (3), not the build's newest (4).
    #[test]
    fn the_metadata_names_the_files_own_version() {
        let bytes = crate::board::tests::small_model();
        let model = infer::Model::from_bytes(&bytes).unwrap();
        assert_eq!(model.file().version(), 3);
        assert_eq!(
            super::metadata(&model)["source"],
            "fashion-mlp model file v3"
        );
    }
}
