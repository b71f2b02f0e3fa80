//! Forward-pass benchmarks: one 784-512-512-10 image through `Model::predict` (one thread, then
//! all cores sharing each image through `infer::team`), and the first
//! layer's kernel alone, dispatched (SIMD where the CPU has it) against the portable loop.
//! `cargo bench -p infer` (release profile) or `cargo bench -p infer --profile dev`.

use infer::format::{LayerBytes, ModelFile};
use infer::{Activation, Model, Normalization, Scratch};
use std::hint::black_box;
use std::time::Instant;

/// f16 bytes of `count` small pseudo-random weights (timing does not depend on the values).
fn weights(count: usize) -> Vec<u8> {
    let mut state = 7u32;
    (0..count)
        .flat_map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            half::f16::from_f32(((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.1)
                .to_le_bytes()
        })
        .collect()
}

fn benchmark_model() -> Vec<u8> {
    let widths = [784usize, 512, 512, 10];
    let stored: Vec<(Vec<u8>, Vec<u8>)> = widths
        .windows(2)
        .map(|w| (weights(w[0] * w[1]), weights(w[1])))
        .collect();
    let mut layers = infer::heapless::Vec::new();
    for (w, (weights, bias)) in widths.windows(2).zip(&stored) {
        layers
            .push(LayerBytes {
                encoding: infer::format::Encoding::F16,
                scales: &[],
                d_in: w[0] as u32,
                d_out: w[1] as u32,
                weights,
                bias,
            })
            .expect("3 layers fit");
    }
    let file = ModelFile {
        activation: Activation::Relu,
        normalization: Normalization {
            mean: 0.286,
            std: 0.353,
        },
        layers,
    };
    file.to_vec().expect("encodes")
}

fn main() {
    let bytes = benchmark_model();
    let model = Model::from_bytes(&bytes).expect("valid");
    let image: Vec<u8> = (0..784).map(|i| (i * 13 % 256) as u8).collect();
    let mut scratch = Box::new(Scratch::<784>::new());
    bench(
        &format!("predict 784-512-512-10 ({})", infer::kernel::path()),
        3.0,
        || {
            model
                .predict(black_box(&image), &mut scratch)
                .expect("runs")
        },
    );
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if threads > 1 {
        infer::team::with_team(&model, threads, |team| {
            bench(
                &format!("predict 784-512-512-10, {threads} threads sharing each image"),
                3.0,
                || team.predict(black_box(&image)).expect("runs"),
            );
        });
    }

    let w = weights(784 * 512);
    let input: Vec<f32> = (0..784).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
    let mut out = vec![0.0f32; 512];
    bench("layer 784x512, dispatched kernel", 2.0, || {
        infer::kernel::accumulate(black_box(&input), black_box(&w), &mut out)
    });
    bench("layer 784x512, portable loop", 2.0, || {
        infer::kernel::portable(black_box(&input), black_box(&w), &mut out)
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
