//! `cargo xtask quantize` (the quantisation is `convert::quantize`): an f16 model file's weights to int8 with one scale per output,
//! `scale = max |w| / 127`, `q = round(w / scale)`. `--scheme int8` keeps f16 biases and f32
//! activations (about half the bytes); `--scheme full` makes the whole forward pass integer, in
//! TFLite's scheme with unsigned 8-bit activations (ONNX Runtime's u8 × s8): each layer's scale
//! and zero point come from running the model on training images (`--calibration`); i32
//! biases and sums; per-output fixed-point requantisation; activations other than ReLU and
//! identity become 256-entry tables.

use std::path::PathBuf;

use anyhow::bail;
use infer::format::Encoding;

use crate::files::ModelFileOnDisk;

/// Options of `quantize`.
#[derive(clap::Args, Debug)]
pub struct QuantizeArgs {
    /// f16 model file to quantise.
    #[arg(long, value_name = "PATH", default_value = infer::format::DEFAULT_PATH)]
    model: PathBuf,
    /// File to write. Default: MODEL with extension .int8.fmlp (.q8.fmlp for --scheme full).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// `int8`: int8 weights, f32 activations. `full`: everything integer (see above).
    #[arg(long, value_name = "SCHEME", default_value = "int8", value_parser = ["int8", "full"])]
    scheme: String,
    /// Training images (spread evenly over the training split, never the test split) whose
    /// activations set the 8-bit ranges of `--scheme full` [default: 2000].
    #[arg(long, value_name = "IMAGES", value_parser = crate::args::count::<1, 60_000>)]
    calibration: Option<usize>,
}

/// `--calibration`'s default.
const CALIBRATION: usize = 2000;

/// Runs `quantize`.
pub fn run(args: &QuantizeArgs) -> anyhow::Result<()> {
    let input = ModelFileOnDisk::read(&args.model)?;
    let model = input.model();
    let file = model.file();
    if file.is_integer() {
        bail!(
            "{}: the model is full-integer already; quantise the f16 file it came from",
            args.model.display()
        );
    }
    if args.scheme == "full" {
        return full(args, &input);
    }
    if args.calibration.is_some() {
        bail!("--calibration applies to --scheme full; int8 weights need no calibration images");
    }
    if file.layers.iter().all(|l| l.encoding == Encoding::Int8) {
        bail!(
            "{}: every layer is int8 already; quantise the f16 file it came from",
            args.model.display()
        );
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.model.with_extension("int8.fmlp"));
    crate::files::check_outputs(&[("--out", &out)], &[("--model", &args.model)])?;
    let quantized = convert::quantize::int8(&model)?;
    crate::files::write(&out, &quantized)?;
    println!(
        "wrote {} ({} bytes, int8; the input file has {} bytes)",
        out.display(),
        quantized.len(),
        input.bytes.len()
    );
    Ok(())
}

/// `--scheme full`.
fn full(args: &QuantizeArgs, input: &ModelFileOnDisk) -> anyhow::Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.model.with_extension("q8.fmlp"));
    crate::files::check_outputs(&[("--out", &out)], &[("--model", &args.model)])?;
    let source = crate::setup::ensure_fashion_mnist()?;
    let (train, _) = data::fetch::load_part(&source, data::fetch::Part::Train)?;
    let count = args.calibration.unwrap_or(CALIBRATION).min(train.len());
    let quantized = convert::quantize::full_integer(&input.model(), &train, count)?;
    crate::files::write(&out, &quantized)?;
    println!(
        "wrote {} ({} bytes, full-integer, calibrated on {count} training images; the input \
         file has {} bytes)",
        out.display(),
        quantized.len(),
        input.bytes.len()
    );
    Ok(())
}
