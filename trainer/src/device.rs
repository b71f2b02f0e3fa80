//! Where training runs. One place chooses the backend, so tests and the CLI agree.
//!
//! The CPU backend is burn-ndarray (with rayon and SIMD), its matrix products through the system
//! OpenBLAS on Linux. One epoch of 784-512-512-10 at batch 128 (`trainer-bench`, 2-core EPYC,
//! same session): ndarray + OpenBLAS 3.0-3.1 s at 2 threads, 4.4-4.5 s at 1; ndarray +
//! matrixmultiply 4.6 s and 5.8 s; burn-flex with gemm's AVX-512 kernels (`x86-v4`) 4.9 s and
//! 8.0 s. burn 0.22 deprecates ndarray in favour of flex; re-measure when upgrading.

use burn::tensor::Device;

/// Which device a run uses (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    /// burn's ndarray CPU backend, all cores.
    Cpu,
    /// burn's wgpu backend (Vulkan, Metal, DX12 or WebGPU); needs `--features wgpu`.
    Gpu,
}

/// The CPU device, without autodiff.
#[allow(deprecated)] // burn-ndarray is deprecated upstream but measured faster here; see above.
pub fn cpu() -> Device {
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
