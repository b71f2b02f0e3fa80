//! The floor under a training epoch: the matrix products of one step of the benchmark network
//! (784-512-512-10, batch 128), each timed alone through the fused kernels' own product
//! (`trainer::fused::strided_product`: row-major operands, a transposed operand read through its
//! strides, the columns split between rayon's threads; `∂x = δ·Wᵀ` through
//! `input_gradient_product`, which transposes `δ` and the result when that is faster), times the
//! 469 steps of an epoch. What an epoch takes beyond this is everything else: the element-wise
//! passes, the optimizer, memory traffic between products.
//!
//! `RAYON_NUM_THREADS=T cargo bench -p trainer --profile dev --bench products`

use std::hint::black_box;
use std::time::Instant;

use trainer::fused::{input_gradient_product, strided_product};

/// The fastest of 5 rounds of 50 calls of `f`, in seconds per call.
fn time(mut f: impl FnMut()) -> f64 {
    (0..20).for_each(|_| f());
    (0..5)
        .map(|_| {
            let started = Instant::now();
            (0..50).for_each(|_| f());
            started.elapsed().as_secs_f64() / 50.0
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    // As a training step runs: on a worker of rayon's pool, the others awake for its pieces.
    trainer::learner::with_helpers_awake(run);
}

fn run() {
    let (batch, steps) = (128, 60_000usize.div_ceil(128));
    let values = |len: usize, scale: f32| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * scale)
            .collect()
    };
    println!(
        "matrix products of one training step, each alone, {} thread(s):",
        rayon::current_num_threads()
    );
    let mut step = 0.0;
    for (d_in, d_out) in [(784, 512), (512, 512), (512, 10)] {
        let (x, w, dz) = (
            values(batch * d_in, 2.0),
            values(d_in * d_out, 0.1),
            values(batch * d_out, 0.01),
        );
        let flops = 2.0 * (batch * d_in * d_out) as f64;
        let mut report = |name: &str, seconds: f64| {
            println!(
                "  {name:6} {batch}x{d_in}x{d_out}: {:7.1} us, {:5.1} GFLOP/s",
                seconds * 1e6,
                flops / seconds / 1e9
            );
            step += seconds;
        };
        let x_plain = (x.as_slice(), (d_in, 1));
        let forward = time(|| {
            let w_plain = (w.as_slice(), (d_out, 1));
            black_box(strided_product((batch, d_out, d_in), x_plain, w_plain));
        });
        report("x·W", forward);
        let weight_gradient = time(|| {
            let x_transposed = (x.as_slice(), (1, d_in));
            let dz_plain = (dz.as_slice(), (d_out, 1));
            black_box(strided_product(
                (d_in, d_out, batch),
                x_transposed,
                dz_plain,
            ));
        });
        report("xᵀ·δ", weight_gradient);
        if d_in != 784 {
            // The first layer's input needs no gradient.
            let input_gradient = time(|| {
                let shape = (batch, d_in, d_out);
                black_box(input_gradient_product(&dz, &w, shape));
            });
            report("δ·Wᵀ", input_gradient);
        }
    }
    println!(
        "one step {:.0} us; an epoch's {steps} steps {:.2} s",
        step * 1e6,
        step * steps as f64
    );
}
