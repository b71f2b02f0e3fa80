//! `cargo xtask import`: a model file from a state dict of the course's template
//! (`convert::state_dict`),
//! in safetensors or torch's `.pt` format, e.g. trained in PyTorch, so it reaches `infer` and the
//! board too.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use convert::state_dict::{from_pt, from_safetensors};

/// Options of `import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// State dict with mlp.0.weight, mlp.0.bias, mlp.2.weight, … (f32 or f16): safetensors, or
    /// a `.pt` file as `torch.save(model.state_dict(), FILE)` writes it (its activation and
    /// normalisation read from FILE with extension .json when there is one).
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// Model file to write. Default: FILE with extension .fmlp.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

/// Runs `import`.
pub fn run(args: &ImportArgs) -> anyhow::Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.from.with_extension("fmlp"));
    crate::files::check_outputs(&[("--out", &out)], &[("--from", &args.from)])?;
    let raw = data::input::read(&args.from, data::input::MAX_DATA)
        .with_context(|| format!("reading {}", args.from.display()))?;
    let (bytes, notes) = if raw.starts_with(b"PK\x03\x04") {
        let json = crate::export::sidecar(&args.from);
        let metadata = match data::input::read(&json, data::input::MAX_TEXT) {
            Ok(text) => serde_json::from_slice(&text)
                .with_context(|| format!("{}: not a JSON object of strings", json.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", json.display())),
        };
        from_pt(&raw, &metadata)
    } else {
        from_safetensors(&raw)
    }
    .map_err(|e| anyhow!("{}: {e}", args.from.display()))?;
    crate::files::write(&out, &bytes)?;
    for note in notes {
        eprintln!("note: {note}");
    }
    println!("wrote {} ({} bytes)", out.display(), bytes.len());
    Ok(())
}
