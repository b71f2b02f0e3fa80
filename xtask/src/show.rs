//! `cargo xtask show`: a model file's anatomy: architecture, parameters and bytes per layer,
//! activation and its parameters, normalisation and format version.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use infer::format::Encoding;
use infer::{Model, Normalization};

use crate::files::ModelFileOnDisk;

/// Options of `show`.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// Model file to describe.
    #[arg(long, value_name = "PATH", default_value = infer::format::DEFAULT_PATH)]
    model: PathBuf,
}

/// Runs `show`.
pub fn run(args: &ShowArgs) -> anyhow::Result<()> {
    let file = ModelFileOnDisk::read(&args.model)?;
    print!("{}", describe(&file.path, &file.model(), file.bytes.len()));
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
        file.version()
    );
    let _ = writeln!(w, "architecture {}", crate::eval::architecture(model));
    let _ = match crate::submit::hand_in(model) {
        Some(hand_in) => writeln!(
            w,
            "course hand-in: {} bytes of parameters in f16 ({} the {}-byte limit), a {}-byte .pt \
             from submit{}",
            hand_in.parameter_bytes,
            if hand_in.fits { "within" } else { "over" },
            crate::submit::SIZE_LIMIT,
            hand_in.pt_bytes,
            match hand_in.f8 {
                Some((bytes, fits)) => format!(
                    "; with --dtype f8 a {bytes}-byte .pt ({} the limit)",
                    if fits { "within" } else { "over" }
                ),
                None => String::new(),
            }
        ),
        None => writeln!(
            w,
            "course hand-in: none (full-integer: submit the f16 or int8 file it came from)"
        ),
    };
    let Normalization { mean, std } = file.normalization;
    if file.is_integer() {
        let _ = writeln!(
            w,
            "full-integer (TFLite's scheme, u8 activations): input p as u8 (normalisation (p / \
             255 - {mean:.4}) / {std:.4} folded into the first layer's i32 biases), int8 \
             weights, i32 sums, fixed-point requantisation per output, f32 logits"
        );
    } else {
        let _ = writeln!(
            w,
            "input: 28x28 pixels p, fed as (p / 255 - {mean:.4}) / {std:.4}"
        );
    }
    let _ = writeln!(w, "\nlayer  shape (in x out)  parameters  bytes  weights");
    let (mut parameters, mut parameter_bytes) = (0, 0);
    for (index, layer) in file.layers.iter().enumerate() {
        let count = (layer.d_in as usize + 1) * layer.d_out as usize;
        let requant = file.requant.get(index);
        let bytes = layer.weights.len()
            + layer.scales.len()
            + layer.bias.len()
            + requant.map_or(0, |r| r.multipliers.len() + r.shifts.len() + r.table.len());
        let encoding = match (layer.encoding, requant) {
            (Encoding::F16, _) => "f16".to_string(),
            (Encoding::Int8, _) => "int8, f16 scale per output".to_string(),
            (Encoding::Int8Full, Some(r)) => format!(
                "int8, i32 bias; out: u8, zero point {}, {}",
                r.zero_point,
                if r.table.is_empty() {
                    "the clamp as activation"
                } else {
                    "activation by 256-entry table"
                }
            ),
            (Encoding::Int8Full, None) => {
                "int8, i32 bias; out: f32 logits, f32 scale per output".to_string()
            }
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
