//! x86-64 with AVX2, F16C and FMA (detected at run time with CPUID and XGETBV, no `std`): eight
//! outputs per register, blocks of 64 and 8 outputs held in registers while the rows stream by.
//! Several images at once ([`rows`]) take groups of 6 images (AVX2) or 12 (AVX-512F, when the
//! CPU and OS have it), so each weight is converted once per group. Each lane does the same
//! fused multiply-adds in the same order as the portable loop, so the bits are the same.

use core::arch::x86_64::*;
use core::sync::atomic::{AtomicU8, Ordering};

mod float;
mod integer;

pub use float::{f16_columns, int8_columns, rows};
#[cfg(test)]
pub use integer::dots_avx2;
pub use integer::{dot_rows_vnni, int8_dots, requantize_16, vnni_available};

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

/// `detect()`'s answer, worked out once and kept in `answer`.
fn cached(answer: &AtomicU8, detect: impl FnOnce() -> bool) -> bool {
    match answer.load(Ordering::Relaxed) {
        YES => true,
        NO => false,
        _ => {
            let found = detect();
            answer.store(if found { YES } else { NO }, Ordering::Relaxed);
            found
        }
    }
}

/// AVX2, F16C and FMA, with the OS saving the AVX registers (CPUID and XGETBV: no `std`).
pub fn available() -> bool {
    static ANSWER: AtomicU8 = AtomicU8::new(UNKNOWN);
    cached(&ANSWER, detect)
}

fn detect() -> bool {
    if cfg!(miri) {
        // Miri runs no CPUID or vector instructions: the portable loops are what it checks.
        return false;
    }
    let leaf1 = __cpuid(1);
    let (fma, osxsave, avx, f16c) = (
        leaf1.ecx & (1 << 12) != 0,
        leaf1.ecx & (1 << 27) != 0,
        leaf1.ecx & (1 << 28) != 0,
        leaf1.ecx & (1 << 29) != 0,
    );
    if !(fma && osxsave && avx && f16c) {
        return false;
    }
    // SAFETY: OSXSAVE is set, so XGETBV is enabled.
    let xcr0 = unsafe { xgetbv0() };
    if xcr0 & 0b110 != 0b110 {
        return false; // the OS does not save SSE and AVX state
    }
    // Leaf 7 (AVX2 in EBX bit 5) exists when leaf 0 says so.
    __cpuid(0).eax >= 7 && __cpuid_count(7, 0).ebx & (1 << 5) != 0
}

/// AVX-512F on top of [`available`], with the OS saving the opmask and ZMM registers: for the
/// batched kernel ([`rows`]) and the integer paths.
pub fn avx512_available() -> bool {
    static ANSWER: AtomicU8 = AtomicU8::new(UNKNOWN);
    cached(&ANSWER, || {
        // SAFETY: `available` checked OSXSAVE before XGETBV is read.
        available()
            && __cpuid_count(7, 0).ebx & (1 << 16) != 0
            && unsafe { xgetbv0() } & 0b1110_0110 == 0b1110_0110
    })
}

#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    // SAFETY: the caller checked OSXSAVE.
    unsafe { _xgetbv(0) }
}
