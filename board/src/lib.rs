//! What the firmwares share: the model embedded in flash (`FMLP_MODEL`, read in place),
//! activation buffers sized for it, SysTick as a 64-bit clock, and the board's UART. `build.rs`
//! configures them for one board (`FMLP_BOARD`).
#![no_std]
#![warn(clippy::undocumented_unsafe_blocks)]

use infer::Scratch;

mod config {
    include!(concat!(env!("OUT_DIR"), "/config.rs"));
}
pub use config::{CLOCK_HZ, MODEL_LEN, MODEL_SHIFT, UART_BASE, UART_PINS, WIDTH};

pub mod clock;
pub mod uart;

/// The model file, word-aligned in flash.
#[repr(C, align(4))]
pub struct Aligned<const N: usize>(pub [u8; N]);

/// The model file embedded at build time, [`MODEL_SHIFT`] bytes into a word-aligned block (see
/// `build.rs`).
static PLACED: Aligned<{ MODEL_LEN + 3 }> =
    Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.bin")));

/// The model file, read in place from flash.
pub fn model_bytes() -> &'static [u8] {
    &PLACED.0[MODEL_SHIFT..MODEL_SHIFT + MODEL_LEN]
}

/// Activation buffers, in RAM (.bss) rather than on the stack.
static mut SCRATCH: Scratch<WIDTH> = Scratch::new();

/// The activation buffers.
///
/// # Safety
/// Call once: every call returns the same buffers.
#[allow(clippy::deref_addrof)] // `&mut SCRATCH` would be a reference to a `static mut`
pub unsafe fn scratch() -> &'static mut Scratch<WIDTH> {
    // SAFETY: the caller takes the only reference.
    unsafe { &mut *(&raw mut SCRATCH) }
}
