//! The wgpu backend trains like the CPU one: same seed, same batches, 300 steps, and the loss
//! curves agree. Runs on any Vulkan/Metal/DX12 device; in CI on Mesa's software Vulkan driver
//! (lavapipe): `cargo test -p trainer --features wgpu --test gpu`.
#![cfg(feature = "wgpu")]

use data::{DataArgs, Dataset};
use trainer::activation::ActivationKind;
use trainer::device::{self, DeviceKind};
use trainer::loss::CrossEntropy;
use trainer::model::{INPUT_SIZE, Mlp};
use trainer::optim::MomentumSgd;
use trainer::train::{normalize, pixel_statistics, shuffled, train_step};

const STEPS: usize = 300;
const BATCH: usize = 128;
const WINDOW: usize = 50;

#[test]
fn gpu_loss_curve_matches_cpu() {
    let dataset = Dataset::load(&DataArgs::default()).expect("Fashion-MNIST");
    let pixels = normalize(&dataset.train, pixel_statistics(&dataset.train));
    let cpu = device::cpu().autodiff();
    let gpu = device::device(DeviceKind::Gpu)
        .expect("wgpu device")
        .autodiff();
    let devices = [&cpu, &gpu];
    let mut models = devices.map(|device| {
        device.seed(11);
        Mlp::new(&[64], ActivationKind::Relu, 0.0, device)
    });
    let mut optims = [MomentumSgd::new(0.9, 5e-4), MomentumSgd::new(0.9, 5e-4)];
    let loss_fn = CrossEntropy {
        label_smoothing: 0.0,
    };
    let order = shuffled(dataset.train.len(), 11, 1);
    let mut curves = [Vec::new(), Vec::new()];
    for step in 0..STEPS {
        let batch = &order[step * BATCH..(step + 1) * BATCH];
        let batch_pixels: Vec<f32> = batch
            .iter()
            .flat_map(|&i| pixels[i * INPUT_SIZE..(i + 1) * INPUT_SIZE].iter().copied())
            .collect();
        let labels: Vec<u8> = batch.iter().map(|&i| dataset.train.labels[i]).collect();
        for side in 0..2 {
            let model = models[side].clone();
            let outcome = train_step(
                model,
                &mut optims[side],
                &loss_fn,
                &batch_pixels,
                &labels,
                0.05,
                trainer::model::Dropout::NONE,
                devices[side],
            );
            models[side] = outcome.model;
            curves[side].push(outcome.loss);
        }
    }
    let means: Vec<(f32, f32)> = curves[0]
        .chunks(WINDOW)
        .zip(curves[1].chunks(WINDOW))
        .map(|(c, g)| {
            (
                c.iter().sum::<f32>() / WINDOW as f32,
                g.iter().sum::<f32>() / WINDOW as f32,
            )
        })
        .collect();
    let relative = |(c, g): (f32, f32)| (c - g).abs() / c;
    let worst = means[1..].iter().map(|&m| relative(m)).fold(0.0, f32::max);
    eprintln!("50-step mean losses (cpu, gpu): {means:?}; worst after step 50: {worst:.3}");
    // The seed is the same but each backend has its own random generator, so the initial
    // weights differ and the first 50 steps are not compared. After them the loss is set by the
    // data and the schedule, not the start: on this machine the means agreed within 3 %.
    assert!(curves.iter().all(|c| c.iter().all(|l| l.is_finite())));
    assert!(worst < 0.06, "50-step means differ by {worst}: {means:?}");
    for (side, curve) in curves.iter().enumerate() {
        let (first, last) = (curve[0], means.last().map(|m| [m.0, m.1][side]).unwrap());
        assert!(
            last < 0.3 * first,
            "side {side} did not learn: {first} -> {last}"
        );
    }
}
