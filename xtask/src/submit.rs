//! `cargo xtask submit`: the course's hand-in in one command: `ID_submission.pt` (the model as
//! the template's state dict, see `export`) and `ID_submission.csv` (the test-set predictions,
//! as `eval --csv` writes them), after checking the size limit, with the figures the grading
//! table asks for.

use std::path::PathBuf;

use anyhow::{anyhow, bail};
use data::DataArgs;

use crate::export::ExportDtype;
use crate::files::ModelFileOnDisk;

/// The course's limit on the submitted parameters, in bytes.
pub const SIZE_LIMIT: usize = 2_000_000;

/// What the course counts of a model: the bytes of `submit`'s f16 `.pt` file, of its
/// parameters in f16, and whether the course can take it (`None` for a full-integer model,
/// which has no float state dict to hand in).
pub fn hand_in(model: &infer::Model<'_>) -> Option<HandIn> {
    if model.file().is_integer() {
        return None;
    }
    let parameter_bytes = 2 * model.parameter_count();
    let state_dict = crate::export::state_dict(model);
    Some(HandIn {
        pt_bytes: crate::pt::write(&state_dict, crate::safetensors::Dtype::F16).len(),
        parameter_bytes,
        fits: parameter_bytes <= SIZE_LIMIT,
    })
}

/// See [`hand_in`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandIn {
    /// Bytes of the f16 `.pt` file `submit` writes.
    pub pt_bytes: usize,
    /// Bytes of the parameters in f16: what the course's limit counts.
    pub parameter_bytes: usize,
    /// Whether they are within [`SIZE_LIMIT`].
    pub fits: bool,
}

/// Options of `submit`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  cargo xtask train && cargo xtask submit --id 12345678     # runs/12345678_submission.pt and .csv
  cargo xtask submit --id 12345678 --model models/mlp-256-128-int8.fmlp --out hand-in
  cargo xtask submit --id 12345678 --images other-set.npy   # the CSV for another dataset

The .pt file loads with torch.load(FILE, weights_only=True) into the course's template
(self.mlp = nn.Sequential(nn.Linear, myActivation(), ...)) with load_state_dict(strict=True);
its activation and input normalisation are in ID_submission.json beside it.")]
pub struct SubmitArgs {
    /// Student ID: the files are named ID_submission.pt and ID_submission.csv.
    #[arg(long, value_name = "STUDENTID", value_parser = student_id)]
    id: String,
    /// Model file to hand in.
    #[arg(long, value_name = "PATH", default_value = infer::format::DEFAULT_PATH)]
    model: PathBuf,
    /// Directory to write the files into (made if missing).
    #[arg(long, value_name = "DIR", default_value = "runs")]
    out: PathBuf,
    /// Element type of the .pt file's tensors. f16 holds a model file's weights exactly in half
    /// the bytes (the template's f32 parameters take them as they load); f32 is what the
    /// template holds in memory.
    #[arg(long, value_enum, default_value = "f16")]
    dtype: ExportDtype,
    /// Predict these images for the CSV instead of the test split (another dataset, without
    /// labels): IDX, a folder of PNG files, a CSV or a .npy array, as `predict` reads them.
    #[arg(long, value_name = "PATH", conflicts_with = "data")]
    images: Option<PathBuf>,
    /// How --images are stored (default: from the path, as `predict` guesses).
    #[arg(long, value_enum, requires = "images")]
    format: Option<crate::predict::Format>,
    #[command(flatten)]
    data: DataArgs,
}

/// A student ID that is safe in a file name: letters, digits, `-` and `_`.
fn student_id(id: &str) -> Result<String, String> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{id:?}: a student ID is letters, digits, '-' and '_' (it names the files)"
        ));
    }
    Ok(id.to_owned())
}

/// Runs `submit`.
pub fn run(args: &SubmitArgs) -> anyhow::Result<()> {
    let file = ModelFileOnDisk::read(&args.model)?;
    let model = file.model();
    crate::export::float_only(&args.model, &model)?;
    // Weights and biases: the state dict's elements.
    let parameters = model.parameter_count();
    let size = parameters * args.dtype.dtype().size();
    if size > SIZE_LIMIT {
        bail!(
            "{}: {parameters} parameters take {size} bytes as {:?}, over the course's limit of \
             {SIZE_LIMIT} bytes{}",
            args.model.display(),
            args.dtype,
            if parameters * 2 <= SIZE_LIMIT {
                " (--dtype f16 fits)"
            } else {
                ": train a smaller model"
            }
        );
    }
    std::fs::create_dir_all(&args.out).map_err(|e| {
        anyhow!(
            "--out {}: cannot make the directory: {e}",
            args.out.display()
        )
    })?;
    let pt = args.out.join(format!("{}_submission.pt", args.id));
    let csv = args.out.join(format!("{}_submission.csv", args.id));
    if let Some(images) = &args.images {
        // Another dataset, without labels: the predictions alone.
        crate::files::check_outputs(
            &[("the predictions", &csv)],
            &[("--model", &args.model), ("--images", images)],
        )?;
        let (text, count, format) =
            crate::predict::labels(&model, &args.model, images, args.format)?;
        crate::export::write_pt(&model, args.dtype, &pt, &args.model)?;
        crate::files::write(&csv, text.as_bytes())?;
        println!(
            "wrote {} ({count} predictions of {}, {format:?})",
            csv.display(),
            images.display()
        );
        report(args, &model, size, &pt);
        return Ok(());
    }
    let (split, source, data_files) = crate::eval::test_split(&args.data)?;
    let mut inputs = vec![("--model", args.model.as_path())];
    inputs.extend(data_files.iter().map(|f| ("a data file", f.as_path())));
    crate::files::check_outputs(&[("the predictions", &csv)], &inputs)?;
    let scores =
        crate::eval::score(&model, &split).map_err(|e| anyhow!("{}: {e}", args.model.display()))?;
    crate::export::write_pt(&model, args.dtype, &pt, &args.model)?;
    crate::files::write(&csv, scores.predictions_csv().as_bytes())?;
    println!("wrote {} ({} predictions)", csv.display(), scores.total());
    report(args, &model, size, &pt);
    println!(
        "test accuracy {:.2}% ({}/{}) on {source}",
        100.0 * scores.correct() as f64 / scores.total() as f64,
        scores.correct(),
        scores.total()
    );
    Ok(())
}

/// The line on the model handed in: its parameters, their bytes, the `.pt` file's.
fn report(args: &SubmitArgs, model: &infer::Model<'_>, size: usize, pt: &std::path::Path) {
    println!(
        "model {}: {}, {} parameters, {size} bytes as {:?} (limit {SIZE_LIMIT}); .pt file {} \
         bytes",
        args.model.display(),
        crate::eval::architecture(model),
        model.parameter_count(),
        args.dtype,
        std::fs::metadata(pt).map(|m| m.len()).unwrap_or(0),
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn student_ids_that_would_escape_a_file_name_are_refused() {
        assert!(super::student_id("12345678").is_ok());
        assert!(super::student_id("ab_12-x").is_ok());
        for bad in ["", "../x", "a b", "a/b", "ü"] {
            assert!(super::student_id(bad).is_err(), "{bad:?}");
        }
    }
}
