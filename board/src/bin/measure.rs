//! The measuring firmware: runs `infer` under QEMU within a part's memory map
//! (`memory/<part>.x`) and reports how it went.
//!
//! The model is embedded in flash at build time (`FMLP_MODEL`, set by `cargo xtask board`) and
//! read in place. Images come from the host one 784-byte record at a time through semihosting
//! file I/O (`images.bin`); each prediction goes back as a 41-byte record (class, then the 10
//! logits as little-endian f32 bits) to `results.bin`. The last line on the semihosting console
//! reports the instruction count (SysTick under `qemu -icount shift=0`, calibrated against a loop
//! of known length), flash and static RAM used, and the peak stack found by stack painting.
//! Exit code 0 on success, 1 on any failure, panics included.
#![no_std]
#![no_main]
#![warn(clippy::undocumented_unsafe_blocks)]

use board::clock::{self, ticks};
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln, nr, syscall};
use infer::{INPUT_SIZE, Model};
use panic_semihosting as _;

const RECORD: usize = wire::RECORD_LEN;
const CALIBRATION_LOOPS: u32 = 100_000;

unsafe extern "C" {
    static _stack_start: u32;
    static _stack_end: u32;
    static __vector_table: u32;
    static __sidata: u32;
    static __sdata: u32;
    static __edata: u32;
}

fn fail(message: &str) -> ! {
    hprintln!("board: {}", message);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

/// Opens a host file (path NUL-terminated), or fails the run.
fn open(path: &[u8], mode: usize) -> usize {
    // SAFETY: SYS_OPEN reads `path.len() - 1` bytes of the live, NUL-terminated `path`.
    let fd = unsafe { syscall!(OPEN, path.as_ptr(), mode, path.len() - 1) };
    if fd == usize::MAX {
        fail("cannot open a host file through semihosting");
    }
    fd
}

/// Reads up to `buf.len()` bytes; returns how many were read.
fn read(fd: usize, buf: &mut [u8]) -> usize {
    // SAFETY: SYS_READ writes at most `buf.len()` bytes into the live, exclusive `buf`.
    let not_read = unsafe { syscall!(READ, fd, buf.as_mut_ptr(), buf.len()) };
    buf.len() - not_read
}

fn write(fd: usize, buf: &[u8]) {
    // SAFETY: SYS_WRITE reads `buf.len()` bytes of the live `buf`.
    if unsafe { syscall!(WRITE, fd, buf.as_ptr(), buf.len()) } != 0 {
        fail("short write to results.bin");
    }
}

/// Ticks taken by `2 * CALIBRATION_LOOPS` instructions.
fn calibrate() -> u64 {
    let start = ticks();
    let mut n = CALIBRATION_LOOPS;
    // SAFETY: a register-only loop: it touches no memory and only the register it declares
    // (a low register, which every Thumb `subs` encoding takes).
    unsafe {
        core::arch::asm!("2:", "subs r0, r0, #1", "bne 2b", inout("r0") n, options(nomem, nostack));
    }
    let _ = n;
    ticks() - start
}

#[entry]
fn main() -> ! {
    let core = cortex_m::Peripherals::take().unwrap_or_else(|| fail("peripherals taken"));
    clock::start(core.SYST);

    let model = match Model::from_bytes(board::model_bytes()) {
        Ok(model) => model,
        Err(error) => {
            hprintln!("board: embedded model: {}", error);
            fail("the embedded model is not valid");
        }
    };
    // SAFETY: the only call.
    let scratch = unsafe { board::scratch() };
    let calibration_ticks = calibrate();

    let input = open(b"images.bin\0", nr::open::R_BINARY);
    let output = open(b"results.bin\0", nr::open::W_TRUNC_BINARY);
    let mut image = [0u8; INPUT_SIZE];
    let (mut count, mut inference_ticks) = (0u32, 0u64);
    loop {
        match read(input, &mut image) {
            0 => break,
            INPUT_SIZE => {}
            _ => fail("images.bin ends inside a record"),
        }
        let start = ticks();
        let logits = model.forward_into(&image, scratch);
        inference_ticks += ticks() - start;
        let logits = logits.unwrap_or_else(|error| {
            hprintln!("board: {}", error);
            fail("inference failed")
        });
        let mut record = [0u8; RECORD];
        record[0] = infer::model::argmax(&logits) as u8;
        for (chunk, logit) in record[1..].chunks_exact_mut(4).zip(&logits) {
            chunk.copy_from_slice(&logit.to_bits().to_le_bytes());
        }
        write(output, &record);
        count += 1;
    }
    // SAFETY: SYS_CLOSE on the two handles opened above, closed once; no memory is touched.
    unsafe {
        syscall!(CLOSE, input);
        syscall!(CLOSE, output);
    }

    let stack_top = &raw const _stack_start as usize;
    let stack_end = &raw const _stack_end as usize;
    let mut untouched = stack_end;
    while untouched < stack_top
        // SAFETY: [_stack_end, _stack_start) is RAM reserved for the stack; cortex-m-rt
        // painted it, and `untouched` stays word-aligned inside it.
        && unsafe { core::ptr::read_volatile(untouched as *const u32) }
            == cortex_m_rt::STACK_PAINT_VALUE
    {
        untouched += 4;
    }
    // From the vector table (the start of flash) to the end of .data's initial values.
    let flash = &raw const __sidata as usize - &raw const __vector_table as usize
        + (&raw const __edata as usize - &raw const __sdata as usize);
    hprintln!(
        "FMLP-BOARD count={} inference_ticks={} calibration_ticks={} calibration_instructions={} \
         flash_bytes={} ram_bytes={} stack_bytes={}",
        count,
        inference_ticks,
        calibration_ticks,
        2 * CALIBRATION_LOOPS,
        flash,
        stack_end - &raw const __sdata as usize,
        stack_top - untouched
    );
    debug::exit(debug::EXIT_SUCCESS);
    loop {
        cortex_m::asm::wfi();
    }
}
