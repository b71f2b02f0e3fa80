//! `cargo xtask submit`: the course's hand-in in one command: `ID_HW1.zip` holding
//! `DL_HW1_ID.ipynb` (the notebook, see [`crate::notebook`]), `ID_submission.pt` (the model as
//! the template's state dict, see `export`) and `ID_submission.csv` (the test-set predictions,
//! as `eval --csv` writes them), each also written loose, after checking the size limit, with
//! the figures the grading table asks for.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use data::DataArgs;

use crate::export::ExportDtype;
use crate::files::ModelFileOnDisk;

/// The course's limit on the submitted parameters, in bytes.
pub const SIZE_LIMIT: usize = 2_000_000;

/// What the course counts of a model: the bytes of `submit`'s f16 `.pt` file, of its
/// parameters in f16, whether the course can take it, and the same for an f8 `.pt` where the
/// activation allows one (`None` for a full-integer model, which has no float state dict to hand
/// in).
pub fn hand_in(model: &infer::Model<'_>) -> Option<HandIn> {
    if model.file().is_integer() {
        return None;
    }
    let parameter_bytes = 2 * model.parameter_count();
    let state_dict = convert::state_dict::state_dict(model);
    let f8 = convert::f8::f8_state_dict(model).ok().map(|f8| {
        (
            convert::pt::write_each(&f8.typed()).len(),
            f8.parameter_bytes() <= SIZE_LIMIT,
        )
    });
    Some(HandIn {
        pt_bytes: convert::pt::write(&state_dict, convert::safetensors::Dtype::F16).len(),
        parameter_bytes,
        fits: parameter_bytes <= SIZE_LIMIT,
        f8,
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
    /// With `--dtype f8` (relu, prelu, identity): the `.pt` file's bytes, and whether its
    /// parameters are within [`SIZE_LIMIT`].
    pub f8: Option<(usize, bool)>,
}

/// Options of `submit`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  cargo xtask train && cargo xtask submit --id 12345678     # runs/12345678_HW1.zip
  cargo xtask submit --id 12345678 --model models/mlp-256-128-int8.fmlp --out hand-in
  cargo xtask submit --id 12345678 --images other-set.npy   # the CSV for another dataset

The zip holds DL_HW1_ID.ipynb, ID_submission.pt and ID_submission.csv, as the course asks. The
notebook defines the activation, the MLP, the loss and the optimizer (the project's PyTorch side,
python/fashion_mlp); run top to bottom it loads the .pt with torch.load(FILE, weights_only=True)
into myMLP (self.mlp = nn.Sequential(nn.Linear, myActivation(), ...)) with
load_state_dict(strict=True), prints the test accuracy and writes the CSV; TRAIN = True in its
first cell trains the same network again in PyTorch. The activation and input normalisation are
also in ID_submission.json beside the .pt.")]
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
    /// template holds in memory; f8 stores the hidden layers' weights in one byte each, scaled
    /// (relu, prelu, identity; needs torch 2.1 or later to load).
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
    // Weights and biases: the state dict's elements, in the types they are stored in.
    let parameters = model.parameter_count();
    let size = parameter_bytes(&model, args.dtype)?;
    if size > SIZE_LIMIT {
        let f8_fits = parameter_bytes(&model, ExportDtype::F8).is_ok_and(|b| b <= SIZE_LIMIT);
        bail!(
            "{}: {parameters} parameters take {size} bytes as {:?}, over the course's limit of \
             {SIZE_LIMIT} bytes{}",
            args.model.display(),
            args.dtype,
            if parameters * 2 <= SIZE_LIMIT {
                " (--dtype f16 fits)"
            } else if f8_fits {
                " (--dtype f8 fits)"
            } else {
                ": train a smaller model"
            }
        );
    }
    // With f8 the template holds the f8 weights, so they make the CSV and the accuracy.
    let rounded = match args.dtype {
        ExportDtype::F8 => Some(convert::f8::rounded(&model)?),
        _ => None,
    };
    let predicted = match &rounded {
        Some(bytes) => infer::Model::from_bytes(bytes)?,
        None => file.model(),
    };
    std::fs::create_dir_all(&args.out).map_err(|e| {
        anyhow!(
            "--out {}: cannot make the directory: {e}",
            args.out.display()
        )
    })?;
    let names = HandInNames::of(&args.id);
    let [pt, csv, ipynb, zip] =
        [&names.pt, &names.csv, &names.notebook, &names.zip].map(|name| args.out.join(name));
    let outputs = [
        ("the predictions", csv.as_path()),
        ("the notebook", &ipynb),
        ("the zip", &zip),
    ];
    let mut inputs = vec![("--model", args.model.as_path())];
    let (predictions, summary) = if let Some(images) = &args.images {
        // Another dataset, without labels: the predictions alone.
        inputs.push(("--images", images));
        crate::files::check_outputs(&outputs, &inputs)?;
        let (text, count, format) =
            crate::predict::labels(&predicted, &args.model, images, args.format)?;
        let summary = format!("{count} predictions of {}, {format:?}", images.display());
        (text, summary)
    } else {
        let (split, source, data_files) = crate::eval::test_split(&args.data)?;
        inputs.extend(data_files.iter().map(|f| ("a data file", f.as_path())));
        crate::files::check_outputs(&outputs, &inputs)?;
        let scores = crate::eval::score(&predicted, &split)
            .map_err(|e| anyhow!("{}: {e}", args.model.display()))?;
        let mut summary = format!(
            "{} predictions; test accuracy {:.2}% ({}/{}) on {source}",
            scores.total(),
            scores.accuracy_percent(),
            scores.correct(),
            scores.total()
        );
        if rounded.is_some() {
            let own = crate::eval::score(&model, &split)
                .map_err(|e| anyhow!("{}: {e}", args.model.display()))?;
            let _ = write!(
                summary,
                ", with the f8 weights (the model file's own: {:.2}%)",
                own.accuracy_percent()
            );
        }
        (scores.predictions_csv(), summary)
    };
    let pt_bytes = crate::export::write_pt(&model, args.dtype, &pt, &args.model)?;
    crate::files::write(&csv, predictions.as_bytes())?;
    println!("wrote {} ({summary})", csv.display());
    let notebook = crate::notebook::notebook(&crate::notebook::Settings {
        id: &args.id,
        model: &model,
        config: run_config(&args.model),
        images: args.images.as_deref(),
    });
    crate::files::write(&ipynb, notebook.as_bytes())?;
    let pt_len = pt_bytes.len();
    let archive = convert::pt::zip(&[
        (names.notebook.clone(), notebook.into_bytes()),
        (names.pt.clone(), pt_bytes),
        (names.csv.clone(), predictions.into_bytes()),
    ]);
    crate::files::write(&zip, &archive)?;
    println!(
        "wrote {} ({} bytes: {}, {}, {}); the notebook is also beside it",
        zip.display(),
        archive.len(),
        names.notebook,
        names.pt,
        names.csv
    );
    report(args, &model, size, pt_len);
    Ok(())
}

/// Bytes of `model`'s parameters stored as `dtype` (for f8, the hidden weights in one byte and
/// the rest in f32); an error when the model cannot be stored so.
fn parameter_bytes(model: &infer::Model<'_>, dtype: ExportDtype) -> anyhow::Result<usize> {
    Ok(match dtype {
        ExportDtype::F8 => convert::f8::f8_state_dict(model)?.parameter_bytes(),
        other => model.parameter_count() * other.dtype().size(),
    })
}

/// The names the course gives the hand-in's files.
pub struct HandInNames {
    /// `DL_HW1_ID.ipynb`.
    pub notebook: String,
    /// `ID_submission.pt`.
    pub pt: String,
    /// `ID_submission.csv`.
    pub csv: String,
    /// `ID_HW1.zip`, holding the three.
    pub zip: String,
}

impl HandInNames {
    /// The names for student `id`.
    pub fn of(id: &str) -> Self {
        Self {
            notebook: format!("DL_HW1_{id}.ipynb"),
            pt: format!("{id}_submission.pt"),
            csv: format!("{id}_submission.csv"),
            zip: format!("{id}_HW1.zip"),
        }
    }
}

/// The settings of the run that trained `model`: its run log's (`X.log.json`), or a shipped
/// model's description's (`X.json`, whose `config` is the same type), if either is there and
/// readable.
fn run_config(model: &std::path::Path) -> Option<recipe::config::TrainConfig> {
    if let Ok(log) = recipe::log::RunLog::read(&model.with_extension("log.json")) {
        return Some(log.config);
    }
    let text = std::fs::read(model.with_extension("json")).ok()?;
    let described: serde_json::Value = serde_json::from_slice(&text).ok()?;
    serde_json::from_value(described.get("config")?.clone()).ok()
}

/// The line on the model handed in: its parameters, their bytes, the `.pt` file's.
fn report(args: &SubmitArgs, model: &infer::Model<'_>, size: usize, pt_bytes: usize) {
    println!(
        "model {}: {}, {} parameters, {size} bytes as {:?} (limit {SIZE_LIMIT}); .pt file {} \
         bytes",
        args.model.display(),
        crate::eval::architecture(model),
        model.parameter_count(),
        args.dtype,
        pt_bytes,
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
