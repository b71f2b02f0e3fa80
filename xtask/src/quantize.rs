//! `cargo xtask quantize`: an f16 model file's weights to int8 with one f16 scale per output,
//! `scale = max |w| / 127`, `q = round(w / scale)`; biases stay f16. About half the bytes.

use std::path::PathBuf;

use anyhow::{anyhow, bail};
use half::f16;
use infer::ModelFileBuf;
use infer::format::Encoding;

use crate::files::ModelFileOnDisk;

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

/// Runs `quantize`.
pub fn run(args: &QuantizeArgs) -> anyhow::Result<()> {
    let input = ModelFileOnDisk::read(&args.model)?;
    let model = input.model();
    let file = model.file();
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
    let mut quantized = ModelFileBuf::new(file.activation, file.normalization);
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
        let scale_bytes = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        quantized.push_bytes(
            d_in,
            d_out,
            Encoding::Int8,
            q,
            scale_bytes,
            layer.bias.to_vec(),
        )?;
    }
    let quantized = quantized.to_vec().map_err(|e| anyhow!("encoding: {e}"))?;
    crate::files::write(&out, &quantized)?;
    println!(
        "wrote {} ({} bytes, int8; the input file has {} bytes)",
        out.display(),
        quantized.len(),
        input.bytes.len()
    );
    Ok(())
}
