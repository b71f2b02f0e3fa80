//! `cargo xtask sweep`: one training run per activation, same net, schedule and seed; each file
//! scored as `eval` scores it.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use infer::ActivationKind;

/// Options of `sweep`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example (the README's table):
  cargo xtask sweep --activations all --hidden 256 --epochs 5")]
pub struct SweepArgs {
    /// Activations to compare, comma-separated, or `all`.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    activations: Vec<String>,
    /// Hidden layer widths of the net, comma-separated.
    #[arg(long, default_value = "256")]
    hidden: String,
    /// Epochs per run.
    #[arg(long, default_value_t = 5, value_parser = crate::args::count::<1, 100_000>)]
    epochs: usize,
    /// Seed of every run.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory for the model files and logs.
    #[arg(long, value_name = "DIR", default_value = "runs/sweep")]
    out_dir: PathBuf,
}

/// Runs `sweep`.
pub fn run(args: &SweepArgs) -> anyhow::Result<()> {
    let mut kinds: Vec<ActivationKind> = if args.activations.iter().any(|a| a == "all") {
        ActivationKind::ALL.to_vec()
    } else {
        args.activations
            .iter()
            .map(|name| {
                name.parse()
                    .map_err(|e| anyhow!("--activations: {name:?} is {e}"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    // `relu,relu` trains ReLU once.
    let mut seen = Vec::new();
    kinds.retain(|kind| {
        let first = !seen.contains(kind);
        seen.push(*kind);
        first
    });
    let widths: recipe::config::Widths =
        args.hidden.parse().map_err(|e| anyhow!("--hidden: {e}"))?;
    let (test, _) = crate::setup::fashion_mnist_test()?;
    let mut table = format!(
        "Command: `cargo xtask sweep --activations {} --hidden {} --epochs {} --seed {}` \
         (default schedule and settings otherwise)\n\n\
         | activation | test accuracy (f16 file, `eval`) | mean epoch time (s) | model bytes |\n\
         |---|---|---|---|\n",
        args.activations.join(","),
        args.hidden,
        args.epochs,
        args.seed
    );
    for kind in kinds {
        let name = kind.name();
        let model_path = args.out_dir.join(format!("{name}.fmlp"));
        eprintln!("== {name}");
        let config = recipe::config::TrainConfig {
            activation: kind,
            hidden: widths.clone(),
            epochs: args.epochs,
            seed: args.seed,
            ..Default::default()
        };
        let mut train_args = config.args();
        train_args.extend([
            "--quiet".into(),
            "--out".into(),
            model_path.display().to_string(),
        ]);
        let status = crate::setup::run_trainer(&train_args, None)?;
        if !status.success() {
            bail!("training with --activation {name} failed ({status})");
        }
        let file = crate::files::ModelFileOnDisk::read(&model_path)?;
        let (model, bytes) = (file.model(), &file.bytes);
        let scores = crate::eval::score(&model, &test).map_err(|e| anyhow!("{e}"))?;
        let log_path = model_path.with_extension("log.json");
        let log = recipe::log::RunLog::read(&log_path).map_err(|e| anyhow!("{e}"))?;
        let seconds: Vec<f64> = log.epochs.iter().map(|e| e.seconds).collect();
        let mean_seconds = seconds.iter().sum::<f64>() / seconds.len().max(1) as f64;
        writeln!(
            table,
            "| {name} | {:.2} % | {mean_seconds:.2} | {} |",
            100.0 * scores.correct() as f64 / scores.total().max(1) as f64,
            bytes.len()
        )?;
    }
    print!("{table}");
    Ok(())
}
