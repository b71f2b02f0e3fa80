//! Cortex-M4F (FPv4-SP): VCVTB/VCVTT convert two f16 weights from one word, VFMA rounds each
//! product-sum once like the other paths, and eight outputs stay in FPU registers while the rows
//! stream by. Unaligned word loads are allowed on the M4, and postcard places the weights at any
//! offset.

use crate::format::LayerBytes;

/// Blocks of eight outputs through [`block8`], the rest through [`super::portable::f16_column`].
pub fn f16_columns(input: &[f32], layer: &LayerBytes<'_>, first: usize, out: &mut [f32]) {
    let (weights, d_out) = (layer.weights, layer.d_out as usize);
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
    for j in 8 * blocks..out.len() {
        super::portable::f16_column(input, weights, d_out, first + j, &mut out[j]);
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
