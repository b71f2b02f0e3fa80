//! Where training runs. One place chooses the backend, so tests and the CLI agree.
//!
//! The CPU backend is burn-ndarray (with rayon and SIMD), and on it the layers, the loss and the
//! optimizer step are our fused operations (`crate::fused`), which do all of an epoch's
//! arithmetic: what is left to the backend (tensor bookkeeping, autodiff's graph, an argmax) is
//! under 4 % of a profiled epoch, so no other CPU backend can change much (burn-flex would run
//! the same `gemm` kernels). burn 0.22 deprecates ndarray in favour of flex: the `flex` feature
//! runs the same fused kernels on burn-flex (same bytes; no faster or slower beyond this
//! machine's noise in `trainer-bench` rounds), so ndarray, which every build here already has,
//! stays the default.

use burn::tensor::Device;

/// Which device a run uses (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    /// burn's ndarray CPU backend, all cores.
    Cpu,
    /// burn's wgpu backend (Vulkan, Metal, DX12 or WebGPU); needs `--features wgpu`.
    Gpu,
}

/// The CPU device, without autodiff: burn-ndarray's, or burn-flex's when built with the `flex`
/// feature.
#[allow(deprecated)] // burn-ndarray is deprecated upstream; see above.
pub fn cpu() -> Device {
    #[cfg(feature = "flex")]
    return Device::flex();
    #[cfg(not(feature = "flex"))]
    Device::ndarray()
}

/// The device for `kind`, without autodiff.
pub fn device(kind: DeviceKind) -> crate::Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(cpu()),
        #[cfg(feature = "wgpu")]
        DeviceKind::Gpu => Ok(Device::wgpu(Default::default())),
        #[cfg(not(feature = "wgpu"))]
        DeviceKind::Gpu => Err(crate::Error::Config(
            "--device gpu needs the GPU backend: build with `--features wgpu` \
             (cargo xtask train --features wgpu --device gpu)"
                .into(),
        )),
    }
}

/// Seeds `device`'s random numbers and keeps them ours while the guard lives: the CPU backend's
/// generator is process-wide, so two models initialised at once (tests run in parallel) would
/// otherwise take each other's numbers, and neither would be its seed's.
pub fn seed(device: &Device, seed: u64) -> std::sync::MutexGuard<'static, ()> {
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    device.seed(seed);
    guard
}
