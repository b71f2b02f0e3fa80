//! SysTick as a 64-bit count of core-clock ticks: it wraps every 2^14 ticks (about a
//! millisecond at 16 MHz) and its interrupt counts the wraps.
//!
//! SysTick counts `PERIOD - 1, …, 1, 0` and pends its interrupt as it reaches 0, where it stays
//! for one tick before it reloads. So a wrap the handler has counted begins at that 0: the
//! ticks into the period are 0 there and `PERIOD - current` after it. Counting
//! `PERIOD - 1 - current` instead puts the 0 at the end of the period the handler has already
//! counted, and the clock jumps a whole period ahead for that tick: the app firmware took that
//! jump for a quiet line and refused a frame it was still receiving. With wraps this frequent,
//! every frame the app receives crosses some, so `cargo xtask classify --qemu` and its tests
//! cross hundreds of them; the period is a power of two, so the Cortex-M0 composes the count
//! with shifts rather than a 64-bit multiply inside the inferences `measure` times.

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;

/// Ticks between wraps.
const PERIOD: u32 = 1 << 14;

/// Wraps since [`start`], low and high words (the Cortex-M0 has no 64-bit atomics).
static WRAPS_LOW: AtomicU32 = AtomicU32::new(0);
static WRAPS_HIGH: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    // Loads and stores (no read-modify-write: the Cortex-M0 has none); only this handler
    // writes, and the high word before the low one, so a reader that sees the low word
    // unchanged has read a high word that goes with it.
    let low = WRAPS_LOW.load(Ordering::Relaxed).wrapping_add(1);
    if low == 0 {
        let high = WRAPS_HIGH.load(Ordering::Relaxed);
        WRAPS_HIGH.store(high.wrapping_add(1), Ordering::Relaxed);
    }
    WRAPS_LOW.store(low, Ordering::Relaxed);
}

/// Starts SysTick on the core clock.
pub fn start(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(PERIOD - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// Core-clock ticks since [`start`].
pub fn ticks() -> u64 {
    loop {
        let low = WRAPS_LOW.load(Ordering::Relaxed);
        let high = WRAPS_HIGH.load(Ordering::Relaxed);
        let current = SYST::get_current();
        if WRAPS_LOW.load(Ordering::Relaxed) == low {
            let wraps = u64::from(high) << 32 | u64::from(low);
            let into = if current == 0 { 0 } else { PERIOD - current };
            return wraps * u64::from(PERIOD) + u64::from(into);
        }
    }
}
