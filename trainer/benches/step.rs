//! One training step of the benchmark network (784-512-512-10, ReLU, batch 128): forward, our
//! loss, backward, our optimizer. Random pixels and labels: the cost does not depend on them.
//!
//! Run in the profile the rest of the project uses, so burn is not rebuilt:
//! `cargo bench -p trainer --profile dev --bench step`.

use std::hint::black_box;
use std::time::Instant;

use trainer::batch::Batch;
use trainer::config::{Schedule, TrainConfig};
use trainer::device::cpu;
use trainer::learner::Learner;
use trainer::model::INPUT_SIZE;

fn main() {
    trainer::learner::join_the_pool();
    let batch_size = 128;
    let config = TrainConfig {
        hidden: vec![512, 512].into(),
        lr: 0.01,
        schedule: Schedule::Constant,
        warmup_epochs: 0.0,
        label_smoothing: 0.0,
        ..TrainConfig::default()
    };
    let mut learner = Learner::new(&config, 1, &cpu().autodiff());
    let batch = Batch {
        pixels: (0..batch_size * INPUT_SIZE)
            .map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.3)
            .collect(),
        labels: (0..batch_size).map(|i| (i * 7 % 10) as u8).collect(),
        dropout_seed: 0,
        ..Batch::default()
    };
    bench("train step 784-512-512-10, batch 128", 10.0, || {
        learner.step(&batch, 0).loss
    });
}

/// Runs `f` for about `seconds` after a warm-up and prints the median and fastest time per call.
/// (A plain harness rather than criterion: criterion's dependencies change the features of
/// crates burn shares, which made `cargo test` and `cargo run` build burn twice.)
fn bench<T>(name: &str, seconds: f64, mut f: impl FnMut() -> T) {
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds / 4.0 {
        black_box(f());
    }
    let mut times = Vec::new();
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds || times.len() < 5 {
        let call = Instant::now();
        black_box(f());
        times.push(call.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let us = |s: f64| s * 1e6;
    println!(
        "{name}: median {:.2} us, fastest {:.2} us ({} calls)",
        us(times[times.len() / 2]),
        us(times[0]),
        times.len()
    );
}
