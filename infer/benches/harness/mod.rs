//! The benchmarks' timing loop, one for `infer`'s and `trainer`'s (`trainer/benches/step.rs`
//! takes it by path).

use std::hint::black_box;
use std::time::Instant;

/// Runs `f` for about `seconds` after a warm-up and prints the median and fastest time per call.
/// (A plain harness rather than criterion: criterion's dependencies change the features of
/// crates burn shares, which made `cargo test` and `cargo run` build burn twice.)
pub fn bench<T>(name: &str, seconds: f64, mut f: impl FnMut() -> T) {
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
