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
use trainer::activation::ActivationKind;
use trainer::device::cpu;
use trainer::export::model_file_bytes;
use trainer::loss::CrossEntropy;
use trainer::model::{INPUT_SIZE, Mlp};
use trainer::optim::MomentumSgd;
use trainer::train::{normalize, pixel_statistics, shuffled, train_step};

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
    if let Err(error) = run() {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(cli.epochs > 0, "--epochs must be at least 1");
    let dataset = Dataset::load(&cli.data)?;
    let (mean, std) = pixel_statistics(&dataset.train);
    let pixels = normalize(&dataset.train, (mean, std));
    let labels = &dataset.train.labels;
    let device = cpu().autodiff();
    device.seed(0);
    let mut model = Mlp::new(&cli.hidden, ActivationKind::Relu, 0.0, &device);
    let mut optim = MomentumSgd::new(0.9, 5e-4);
    let loss_fn = CrossEntropy {
        label_smoothing: 0.0,
    };
    let mut batch_pixels = Vec::with_capacity(cli.batch_size * INPUT_SIZE);
    let mut batch_labels = Vec::with_capacity(cli.batch_size);
    let mut seconds = Vec::new();
    for epoch in 0..=cli.epochs {
        let started = Instant::now();
        for indices in shuffled(labels.len(), 0, epoch).chunks(cli.batch_size) {
            batch_pixels.clear();
            batch_labels.clear();
            for &i in indices {
                batch_pixels.extend_from_slice(&pixels[i * INPUT_SIZE..(i + 1) * INPUT_SIZE]);
                batch_labels.push(labels[i]);
            }
            let outcome = train_step(
                model,
                &mut optim,
                &loss_fn,
                &batch_pixels,
                &batch_labels,
                0.05,
                trainer::model::Dropout::NONE,
                &device,
            );
            anyhow::ensure!(outcome.loss.is_finite(), "the loss diverged");
            model = outcome.model;
        }
        if epoch > 0 {
            seconds.push(started.elapsed().as_secs_f64());
        }
        eprintln!("epoch {epoch}: {:.3} s", started.elapsed().as_secs_f64());
    }
    if let Some(path) = &cli.out {
        let bytes = model_file_bytes(&model, infer::Normalization { mean, std })?;
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
