//! `cargo xtask export`: a model file as the PyTorch state dict of the course's template
//! (`mlp.0.weight`, `mlp.0.bias`, `mlp.2.weight`, …: `nn.Linear` layers at even indices of an
//! `nn.Sequential`, the activation between them) in safetensors, with the activation, its α and
//! the input normalisation in the metadata.

use std::collections::HashMap;
use std::path::PathBuf;

use half::f16;
use infer::format::f16_at;
use infer::{Activation, Model};
use safetensors::{Dtype, tensor::TensorView};

use crate::files::ModelFileOnDisk;

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

/// Runs `export`.
pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let input = ModelFileOnDisk::read(&args.model)?;
    let out = to_safetensors(&input.model(), args.dtype)?;
    crate::files::write(&args.out, &out)?;
    println!(
        "wrote {} ({} bytes, {:?})",
        args.out.display(),
        out.len(),
        args.dtype
    );
    Ok(())
}

/// The template's names of layer `layer`'s weight and bias: `mlp.{2·layer}.weight` and `.bias`.
pub fn tensor_names(layer: usize) -> (String, String) {
    (
        format!("mlp.{}.weight", 2 * layer),
        format!("mlp.{}.bias", 2 * layer),
    )
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
        let (weight_name, bias_name) = tensor_names(index);
        buffers.push((weight_name, vec![d_out, d_in], encode(&transposed, dtype)));
        buffers.push((bias_name, vec![d_out], encode(&bias, dtype)));
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
