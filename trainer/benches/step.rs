//! One training step of the benchmark network (784-512-512-10, ReLU, batch 128): forward, our
//! loss, backward, our optimizer. Random pixels and labels: the cost does not depend on them.
//!
//! Run in the profile the rest of the project uses, so burn is not rebuilt:
//! `cargo bench -p trainer --profile dev --bench step`.

use std::hint::black_box;
use std::time::Instant;

use trainer::activation::ActivationKind;
use trainer::device::cpu;
use trainer::loss::CrossEntropy;
use trainer::model::{INPUT_SIZE, Mlp};
use trainer::optim::MomentumSgd;
use trainer::train::train_step;

fn main() {
    let batch = 128;
    let device = cpu().autodiff();
    device.seed(0);
    let mut model = Some(Mlp::new(&[512, 512], ActivationKind::Relu, 0.0, &device));
    let mut optim = MomentumSgd::new(0.9, 5e-4);
    let loss_fn = CrossEntropy {
        label_smoothing: 0.0,
    };
    let pixels: Vec<f32> = (0..batch * INPUT_SIZE)
        .map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.3)
        .collect();
    let labels: Vec<u8> = (0..batch).map(|i| (i * 7 % 10) as u8).collect();
    bench("train step 784-512-512-10, batch 128", 10.0, || {
        let outcome = train_step(
            model.take().expect("model"),
            &mut optim,
            &loss_fn,
            &pixels,
            &labels,
            0.01,
            trainer::model::Dropout::NONE,
            &device,
        );
        model = Some(outcome.model);
        outcome.loss
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
