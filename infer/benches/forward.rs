//! Forward-pass benchmarks: one 784-512-512-10 image through `Model::predict` (one thread, then
//! all cores sharing each image through `infer::team`), 48 images through `Model::forward_batch`
//! (one thread; time per image), and the first
//! layer's kernel alone, dispatched (SIMD where the CPU has it) against the portable loop.
//! `cargo bench -p infer` (release profile) or `cargo bench -p infer --profile dev`.

mod harness;

use harness::bench;
use infer::{Activation, Model, ModelFileBuf, Normalization, ScratchVec};
use std::hint::black_box;

/// `count` small pseudo-random weights (timing does not depend on the values).
fn weights(count: usize) -> Vec<f32> {
    let mut state = 7u32;
    (0..count)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

fn benchmark_model() -> Vec<u8> {
    let normalization = Normalization {
        mean: 0.286,
        std: 0.353,
    };
    let mut file = ModelFileBuf::new(Activation::Relu, normalization);
    for w in [784usize, 512, 512, 10].windows(2) {
        file.push_f16(w[0], w[1], &weights(w[0] * w[1]), &weights(w[1]))
            .expect("small values");
    }
    file.to_vec().expect("encodes")
}

fn main() {
    let bytes = benchmark_model();
    let model = Model::from_bytes(&bytes).expect("valid");
    let image: Vec<u8> = (0..784).map(|i| (i * 13 % 256) as u8).collect();
    let mut scratch = ScratchVec::for_model(&model);
    bench(
        &format!("predict 784-512-512-10 ({})", infer::kernel::best().name()),
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

    let images: Vec<Vec<u8>> = (0..48)
        .map(|k| (0..784).map(|i| ((i * 13 + k * 7) % 256) as u8).collect())
        .collect();
    let batch: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    bench(
        "forward_batch 784-512-512-10, 48 images (per call)",
        3.0,
        || model.forward_batch(black_box(&batch)).expect("runs"),
    );

    let w: Vec<u8> = weights(784 * 512)
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let input: Vec<f32> = (0..784).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
    let layer = infer::LayerBytes {
        d_in: 784,
        d_out: 512,
        encoding: infer::format::Encoding::F16,
        weights: &w,
        scales: &[],
        bias: &[],
    };
    let mut out = vec![0.0f32; 512];
    bench("layer 784x512, dispatched kernel", 2.0, || {
        infer::kernel::columns(black_box(&input), &layer, 0, &mut out)
    });
    let inputs: Vec<f32> = (0..48 * 784).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
    let mut outs = vec![0.0f32; 48 * 512];
    bench(
        "layer 784x512, 48 images through rows (per call)",
        2.0,
        || infer::kernel::rows(black_box(&inputs), &layer, &mut outs),
    );
    bench("layer 784x512, portable loop", 2.0, || {
        infer::kernel::portable::f16_columns(black_box(&input), &layer, 0, &mut out)
    });
}
