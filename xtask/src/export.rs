//! `cargo xtask export`: a model file as the PyTorch state dict of the course's template
//! (`convert::state_dict`), in safetensors (the activation, its α and the
//! input normalisation in its metadata) or in torch's own `.pt` format (the same metadata in a
//! JSON file beside it, [`sidecar`], since a state dict has no place for it).

use std::path::{Path, PathBuf};

use convert::safetensors::Dtype;
use convert::state_dict::{metadata, state_dict};
use infer::Model;

use crate::files::ModelFileOnDisk;

/// Element type of exported tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportDtype {
    /// 32-bit floats (what `torch.load_state_dict` expects by default).
    F32,
    /// The file's own 16-bit floats.
    F16,
    /// 8-bit floats (torch's float8_e4m3fn) for the hidden layers' weights, each layer scaled by
    /// a power of two (said in the metadata); biases and the output layer in f32. `.pt` only,
    /// and relu, prelu or identity only: about half an f16 file.
    F8,
}

impl ExportDtype {
    /// The element type it names.
    pub fn dtype(self) -> Dtype {
        match self {
            ExportDtype::F32 => Dtype::F32,
            ExportDtype::F16 => Dtype::F16,
            ExportDtype::F8 => Dtype::F8E4M3,
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
            if args.dtype == ExportDtype::F8 {
                anyhow::bail!(
                    "--dtype f8 is for --format pt, the course's .pt (safetensors keeps f32 or f16)"
                );
            }
            crate::files::check_outputs(&[("--out", &args.out)], &[("--model", &args.model)])?;
            let out = convert::state_dict::to_safetensors(&model, args.dtype.dtype());
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
    let mut metadata = metadata(model);
    let bytes = match dtype {
        ExportDtype::F8 => {
            let f8 = convert::f8::f8_state_dict(model)?;
            let exponents: Vec<String> = f8.exponents.iter().map(i32::to_string).collect();
            metadata.insert(
                convert::state_dict::F8_EXPONENTS.into(),
                exponents.join(","),
            );
            convert::pt::write_each(&f8.typed())
        }
        _ => convert::pt::write(&state_dict(model), dtype.dtype()),
    };
    let metadata = serde_json::to_string_pretty(&metadata)? + "\n";
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
