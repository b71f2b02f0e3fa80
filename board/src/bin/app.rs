//! The application firmware: classifies images sent over the board's UART with the model in
//! flash, in `wire`'s framed protocol. Each `CLASSIFY` frame (784 pixel bytes) gets a `RESULT`
//! (the frame's CRC-32, class and logits); a frame that is corrupted, cut short (the line quiet for
//! [`QUIET_MS`] inside a frame), of the wrong size or of an unknown kind gets an `ERROR` naming
//! why, and the next frame is read as usual. No semihosting, no allocator: it runs without a
//! debugger attached. A panic (none is expected) resets the core.
#![no_std]
#![no_main]
#![warn(clippy::undocumented_unsafe_blocks)]

use board::clock::{self, ticks};
use board::uart::Uart;
use cortex_m_rt::entry;
use infer::{INPUT_SIZE, Model};
use wire::{Decoder, Fault};

/// A frame whose bytes stop for this long is truncated.
const QUIET_MS: u64 = 200;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    cortex_m::peripheral::SCB::sys_reset()
}

/// The frame decoder (its buffer holds one image), in RAM (.bss) rather than on the stack.
static mut DECODER: Decoder<INPUT_SIZE> = Decoder::new();

fn reply(uart: &mut Uart, kind: u8, payload: &[u8]) {
    let mut frame = [0u8; wire::MAX_REPLY];
    let n = wire::encode(kind, payload, &mut frame);
    uart.write_all(&frame[..n]);
}

#[entry]
fn main() -> ! {
    let core = cortex_m::Peripherals::take().unwrap_or_else(|| panic!("peripherals taken"));
    clock::start(core.SYST);
    let mut uart = Uart::enable();
    // SAFETY: the only call.
    let scratch = unsafe { board::scratch() };
    // SAFETY: the only reference to DECODER, taken once.
    #[allow(clippy::deref_addrof)]
    let decoder = unsafe { &mut *(&raw mut DECODER) };
    // A model that does not decode answers every image with this fault's reply; the build
    // script already refused one, so this is for flash corrupted on the part.
    let model = Model::from_bytes(board::model_bytes()).ok();
    let quiet_ticks = QUIET_MS * u64::from(board::CLOCK_HZ) / 1000;
    let mut last_byte = ticks();
    loop {
        let Some(byte) = uart.try_read() else {
            if ticks() - last_byte > quiet_ticks {
                if let Some(fault) = decoder.timeout() {
                    reply(&mut uart, wire::ERROR, &[fault as u8]);
                }
                last_byte = ticks();
            }
            continue;
        };
        last_byte = ticks();
        let answer = match decoder.push(byte) {
            None => continue,
            Some(Err(fault)) => Err(fault),
            Some(Ok(frame)) if frame.kind != wire::CLASSIFY => Err(Fault::UnknownKind),
            Some(Ok(frame)) if frame.payload.len() != INPUT_SIZE => Err(Fault::WrongSize),
            Some(Ok(frame)) => model
                .as_ref()
                .and_then(|model| model.forward_into(frame.payload, scratch).ok())
                .map(|logits| (frame.crc, logits))
                .ok_or(Fault::BadModel),
        };
        match answer {
            Ok((crc, logits)) => {
                let mut payload = [0u8; wire::RESULT_LEN];
                payload[..4].copy_from_slice(&crc.to_le_bytes());
                payload[4] = infer::model::argmax(&logits) as u8;
                for (chunk, logit) in payload[5..].chunks_exact_mut(4).zip(&logits) {
                    chunk.copy_from_slice(&logit.to_bits().to_le_bytes());
                }
                reply(&mut uart, wire::RESULT, &payload);
            }
            Err(fault) => reply(&mut uart, wire::ERROR, &[fault as u8]),
        }
    }
}
