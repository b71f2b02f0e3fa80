//! `trainer-bench`: times training epochs of the benchmark network for `cargo xtask bench`, and
//! prints one JSON line. Each epoch is what `train` does minus evaluation: shuffle, batch, forward,
//! our loss, backward, our optimizer step. A warm-up epoch runs first and is not counted.
//!
//! Thread counts come from the environment (`RAYON_NUM_THREADS`), which `cargo xtask bench` sets.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use data::{DataArgs, Dataset};
use trainer::batch::{Batch, Batcher, pixel_statistics};
use trainer::config::{Schedule, TrainConfig};
use trainer::device::cpu;
use trainer::export::model_file_bytes;
use trainer::learner::Learner;
use trainer::model::INPUT_SIZE;

/// Time training epochs of a ReLU MLP at a fixed learning rate (lr 0.05, momentum 0.9, weight
/// decay 5e-4, no label smoothing: the PyTorch reference's workload).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Hidden widths.
    #[arg(long, value_delimiter = ',', default_value = "512,512")]
    hidden: Vec<usize>,
    /// Images per step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Timed epochs (after one warm-up epoch); the median is reported.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Also write the trained network as an f16 model file here (for the inference benchmark).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
}

fn main() {
    trainer::learner::main_of(run);
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(cli.epochs > 0, "--epochs must be at least 1");
    if let Some(out) = &cli.out {
        data::atomic::check_output(out).map_err(|e| anyhow::anyhow!("--out: {e}"))?;
    }
    let config = TrainConfig {
        hidden: cli.hidden.clone().into(),
        epochs: cli.epochs + 1,
        batch_size: cli.batch_size,
        schedule: Schedule::Constant,
        warmup_epochs: 0.0,
        label_smoothing: 0.0,
        ..TrainConfig::default()
    };
    config.validate()?;
    let dataset = Dataset::load(&cli.data)?;
    let normalization = pixel_statistics(&dataset.train);
    let batcher = Batcher::new(
        &dataset.train,
        normalization,
        &config.augment,
        config.seed,
        config.batch_size,
    );
    let mut learner = Learner::new(&config, batcher.steps_per_epoch(), &cpu().autodiff());
    let mut batch = Batch::default();
    let mut seconds = Vec::new();
    for epoch in 0..=cli.epochs {
        let started = Instant::now();
        for (step, indices) in batcher.epoch(epoch).iter().enumerate() {
            batcher.fill(epoch, step, indices, &mut batch);
            let outcome = learner.step(&batch, step);
            anyhow::ensure!(outcome.loss.is_finite(), "the loss diverged");
        }
        if epoch > 0 {
            seconds.push(started.elapsed().as_secs_f64());
        }
        eprintln!("epoch {epoch}: {:.3} s", started.elapsed().as_secs_f64());
    }
    if let Some(path) = &cli.out {
        let bytes = model_file_bytes(learner.model(), normalization)?;
        data::atomic::write_atomically(path, &bytes)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut sorted = seconds.clone();
    sorted.sort_by(f64::total_cmp);
    let layers: Vec<usize> = std::iter::once(INPUT_SIZE)
        .chain(cli.hidden.iter().copied())
        .chain([10])
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "layers": layers,
            "batch_size": cli.batch_size,
            "train_epoch_s": sorted[sorted.len() / 2],
            "train_epoch_s_all": seconds,
        })
    );
    Ok(())
}
