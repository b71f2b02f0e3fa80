//! Cortex-M4F (FPv4-SP): VCVTB/VCVTT convert two f16 weights from one word, VFMA rounds each
//! product-sum once like the other paths, and eight outputs stay in FPU registers while the rows
//! stream by. Unaligned word loads are allowed on the M4, and postcard places the weights at any
//! offset.

use crate::format::LayerBytes;

/// Blocks of sixteen outputs through [`block16`] when every row of the weights starts on a word
/// (the board places the largest f16 layer so), then blocks of eight through [`block8`], the
/// rest through [`super::portable::f16_column`].
pub fn f16_columns(input: &[f32], layer: &LayerBytes<'_>, first: usize, out: &mut [f32]) {
    let (weights, d_out) = (layer.weights, layer.d_out as usize);
    let aligned =
        (weights.as_ptr() as usize + 2 * first).is_multiple_of(4) && d_out.is_multiple_of(2);
    let wide = if input.is_empty() || !aligned {
        0
    } else {
        out.len() / 16
    };
    for block in 0..wide {
        let acc = &mut out[16 * block..16 * block + 16];
        // SAFETY: as for `block8`, with 32 bytes at offset 2 * first + 32 * block of each row;
        // the row starts and that offset are word-aligned (checked above: the weights' address
        // plus 2 * first is, and rows are 2 * d_out bytes apart, a multiple of 4).
        unsafe {
            block16(
                input.as_ptr(),
                input.len(),
                weights.as_ptr().add(2 * first + 32 * block),
                2 * d_out,
                acc.as_mut_ptr(),
            )
        };
    }
    let (first, out) = (first + 16 * wide, &mut out[16 * wide..]);
    let blocks = if input.is_empty() { 0 } else { out.len() / 8 };
    for block in 0..blocks {
        let acc = &mut out[8 * block..8 * block + 8];
        // SAFETY: `weights` holds input.len() rows of 2 * d_out bytes and first + out.len()
        // <= d_out (checked by the caller); this block reads 16 bytes at offset
        // 2 * first + 16 * block of each row, inside the row.
        unsafe {
            block8(
                input.as_ptr(),
                input.len(),
                weights.as_ptr().add(2 * first + 16 * block),
                2 * d_out,
                acc.as_mut_ptr(),
            )
        };
    }
    for (j, value) in out.iter_mut().enumerate().skip(8 * blocks) {
        super::portable::f16_column(input, weights, d_out, first + j, value);
    }
}

/// For i in 0..n: acc[0..8] += x[i] · f16 w[i·stride .. +16 bytes]. Unaligned word loads
/// (allowed on the M4) because postcard places the weights at any offset; VFMA rounds once,
/// like the other paths.
///
/// # Safety
/// `n >= 1`; `x` points to `n` f32; `w + i·stride` to 16 readable bytes for every `i < n`; `acc`
/// to 8 writable f32.
unsafe fn block8(x: *const f32, n: usize, w: *const u8, stride: usize, acc: *mut f32) {
    // SAFETY: the loads and stores stay inside the ranges the contract names; the asm declares
    // every register it changes.
    unsafe {
        core::arch::asm!(
            "vldmia {acc}, {{s16-s23}}",
            "2:",
            "vldmia {x}!, {{s0}}",
            "ldr {t0}, [{w}]",
            "ldr {t1}, [{w}, #4]",
            "ldr {t2}, [{w}, #8]",
            "ldr {t3}, [{w}, #12]",
            "add {w}, {w}, {stride}",
            "vmov s1, s2, {t0}, {t1}",
            "vmov s3, s4, {t2}, {t3}",
            "vcvtb.f32.f16 s8, s1",
            "vcvtt.f32.f16 s9, s1",
            "vcvtb.f32.f16 s10, s2",
            "vcvtt.f32.f16 s11, s2",
            "vcvtb.f32.f16 s12, s3",
            "vcvtt.f32.f16 s13, s3",
            "vcvtb.f32.f16 s14, s4",
            "vcvtt.f32.f16 s15, s4",
            "vfma.f32 s16, s0, s8",
            "vfma.f32 s17, s0, s9",
            "vfma.f32 s18, s0, s10",
            "vfma.f32 s19, s0, s11",
            "vfma.f32 s20, s0, s12",
            "vfma.f32 s21, s0, s13",
            "vfma.f32 s22, s0, s14",
            "vfma.f32 s23, s0, s15",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vstmia {acc}, {{s16-s23}}",
            acc = in(reg) acc,
            x = inout(reg) x => _,
            w = inout(reg) w => _,
            n = inout(reg) n => _,
            stride = in(reg) stride,
            t0 = out(reg) _,
            t1 = out(reg) _,
            t2 = out(reg) _,
            t3 = out(reg) _,
            out("s0") _, out("s1") _, out("s2") _, out("s3") _, out("s4") _,
            out("s8") _, out("s9") _, out("s10") _, out("s11") _,
            out("s12") _, out("s13") _, out("s14") _, out("s15") _,
            out("s16") _, out("s17") _, out("s18") _, out("s19") _,
            out("s20") _, out("s21") _, out("s22") _, out("s23") _,
            options(nostack),
        );
    }
}

/// The template lines that convert the sixteen f16 weights in s1-s8 (each pair in place, its
/// upper half through s9) and add each, times the input in register `$x`, to its accumulator in
/// s16-s31: [`block16`]'s body for one input.
#[rustfmt::skip] // one line per pair of weights
macro_rules! sixteen {
    ($x:literal) => {
        concat!(
            "vcvtt.f32.f16 s9, s1\n", "vcvtb.f32.f16 s1, s1\n", "vfma.f32 s16, ", $x, ", s1\n", "vfma.f32 s17, ", $x, ", s9\n",
            "vcvtt.f32.f16 s9, s2\n", "vcvtb.f32.f16 s2, s2\n", "vfma.f32 s18, ", $x, ", s2\n", "vfma.f32 s19, ", $x, ", s9\n",
            "vcvtt.f32.f16 s9, s3\n", "vcvtb.f32.f16 s3, s3\n", "vfma.f32 s20, ", $x, ", s3\n", "vfma.f32 s21, ", $x, ", s9\n",
            "vcvtt.f32.f16 s9, s4\n", "vcvtb.f32.f16 s4, s4\n", "vfma.f32 s22, ", $x, ", s4\n", "vfma.f32 s23, ", $x, ", s9\n",
            "vcvtt.f32.f16 s9, s5\n", "vcvtb.f32.f16 s5, s5\n", "vfma.f32 s24, ", $x, ", s5\n", "vfma.f32 s25, ", $x, ", s9\n",
            "vcvtt.f32.f16 s9, s6\n", "vcvtb.f32.f16 s6, s6\n", "vfma.f32 s26, ", $x, ", s6\n", "vfma.f32 s27, ", $x, ", s9\n",
            "vcvtt.f32.f16 s9, s7\n", "vcvtb.f32.f16 s7, s7\n", "vfma.f32 s28, ", $x, ", s7\n", "vfma.f32 s29, ", $x, ", s9\n",
            "vcvtt.f32.f16 s9, s8\n", "vcvtb.f32.f16 s8, s8\n", "vfma.f32 s30, ", $x, ", s8\n", "vfma.f32 s31, ", $x, ", s9\n",
        )
    };
}

/// For i in 0..n: acc[0..16] += x[i] · f16 w[i·stride .. +32 bytes]. The 32 bytes go into FPU
/// registers with one VLDM (which needs a word-aligned address), each pair is converted in place
/// (VCVTT into a spare register, VCVTB over the pair), and VFMA rounds once like the other paths.
/// Two inputs per loop pass (one VLDM for both): 71 instructions for 32 multiply-accumulates.
///
/// # Safety
/// `n >= 1`; `x` points to `n` f32; `w + i·stride` to 32 readable bytes, word-aligned, for
/// every `i < n`; `acc` to 16 writable f32.
unsafe fn block16(x: *const f32, n: usize, w: *const u8, stride: usize, acc: *mut f32) {
    // SAFETY: the loads and stores stay inside the ranges the contract names, VLDM on the
    // word-aligned addresses it requires; the asm declares every register it changes.
    unsafe {
        core::arch::asm!(
            "vldmia {acc}, {{s16-s31}}",
            "cmp {pairs}, #0",
            "beq 3f",
            "2:",
            "vldmia {x}!, {{s10-s11}}",
            "vldmia {w}, {{s1-s8}}",
            "add {w}, {w}, {stride}",
            sixteen!("s10"),
            "vldmia {w}, {{s1-s8}}",
            "add {w}, {w}, {stride}",
            sixteen!("s11"),
            "subs {pairs}, {pairs}, #1",
            "bne 2b",
            "3:",
            "cmp {odd}, #0",
            "beq 4f",
            "vldmia {x}!, {{s10}}",
            "vldmia {w}, {{s1-s8}}",
            sixteen!("s10"),
            "4:",
            "vstmia {acc}, {{s16-s31}}",
            acc = in(reg) acc,
            x = inout(reg) x => _,
            w = inout(reg) w => _,
            pairs = inout(reg) n / 2 => _,
            odd = in(reg) n % 2,
            stride = in(reg) stride,
            out("s0") _, out("s1") _, out("s2") _, out("s3") _, out("s4") _,
            out("s5") _, out("s6") _, out("s7") _, out("s8") _, out("s9") _,
            out("s10") _, out("s11") _,
            out("s16") _, out("s17") _, out("s18") _, out("s19") _,
            out("s20") _, out("s21") _, out("s22") _, out("s23") _,
            out("s24") _, out("s25") _, out("s26") _, out("s27") _,
            out("s28") _, out("s29") _, out("s30") _, out("s31") _,
            options(nostack),
        );
    }
}

/// Full-integer dot products, two outputs at a time through [`dots2`] (UXTB16 and SXTB16 unpack
/// two pairs of activations and of weights from one word each, SMLAD multiplies and adds both):
/// an odd last output and the inputs
/// past a multiple of four take the portable loop. The sums are exact integers, so the order
/// does not matter. SXTB16 and SMLAD are the DSP extension's: every Cortex-M4 and M7, and the
/// Cortex-M33s that have it (the nRF5340's and the STM32L5/U5's do; build for
/// `thumbv8m.main-none-eabihf` with `-C target-cpu=cortex-m33`, as `board/` does, or
/// `-C target-feature=+dsp`).
#[cfg(fmlp_arm_dsp)]
pub fn int8_dots(input: &[u8], weights: &[u8], sums: &mut [i32]) {
    let d_in = input.len();
    let quads = d_in / 4;
    let pairs = if quads == 0 { 0 } else { sums.len() / 2 };
    for pair in 0..pairs {
        let rows = &weights[2 * pair * d_in..(2 * pair + 2) * d_in];
        // SAFETY: `rows` holds two rows of `d_in >= 4 * quads` bytes; `input` holds `d_in`.
        let (first, second) = unsafe { dots2(input.as_ptr(), quads, rows.as_ptr(), d_in) };
        let tail = |row: &[u8]| -> i32 {
            (4 * quads..d_in)
                .map(|i| i32::from(input[i]) * i32::from(row[i] as i8))
                .sum()
        };
        sums[2 * pair] += first + tail(&rows[..d_in]);
        sums[2 * pair + 1] += second + tail(&rows[d_in..]);
    }
    super::portable::int8_dots(input, &weights[2 * pairs * d_in..], &mut sums[2 * pairs..]);
}

/// The dot products of the first `4 · quads` inputs `x` with the rows at `w` and `w + stride`:
/// per four inputs, one word of activations (two UXTB16) and one of each row's weights, two
/// SXTB16 and two SMLAD per row (15 instructions for 8 multiply-accumulates with the loop).
///
/// # Safety
/// `quads >= 1`; `x` points to `4 · quads` readable bytes, `w` and `w + stride` to as many.
/// Unaligned word loads are allowed on the M4.
#[cfg(fmlp_arm_dsp)]
unsafe fn dots2(x: *const u8, quads: usize, w: *const u8, stride: usize) -> (i32, i32) {
    let (mut first, mut second) = (0i32, 0i32);
    // SAFETY: the loads stay inside the ranges the contract names; the asm declares every
    // register it changes.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldr {a13}, [{x}], #4",
            "uxtb16 {a02}, {a13}",
            "uxtb16 {a13}, {a13}, ror #8",
            "ldr {t}, [{w}, {stride}]",
            "sxtb16 {d}, {t}",
            "sxtb16 {t}, {t}, ror #8",
            "smlad {second}, {a02}, {d}, {second}",
            "smlad {second}, {a13}, {t}, {second}",
            "ldr {t}, [{w}], #4",
            "sxtb16 {d}, {t}",
            "sxtb16 {t}, {t}, ror #8",
            "smlad {first}, {a02}, {d}, {first}",
            "smlad {first}, {a13}, {t}, {first}",
            "subs {n}, {n}, #1",
            "bne 2b",
            x = inout(reg) x => _,
            w = inout(reg) w => _,
            n = inout(reg) quads => _,
            stride = in(reg) stride,
            first = inout(reg) first,
            second = inout(reg) second,
            a02 = out(reg) _,
            a13 = out(reg) _,
            t = out(reg) _,
            d = out(reg) _,
            options(nostack, readonly),
        );
    }
    (first, second)
}
