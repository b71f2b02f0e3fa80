//! One training step of the benchmark network (784-512-512-10, ReLU, batch 128): forward, our
//! loss, backward, our optimizer. Random pixels and labels: the cost does not depend on them.
//!
//! Run in the profile the rest of the project uses, so burn is not rebuilt:
//! `cargo bench -p trainer --profile dev --bench step`.

#[path = "../../infer/benches/harness/mod.rs"]
mod harness;

use harness::bench;

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
