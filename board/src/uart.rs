//! The board's UART at 115,200 baud, 8N1, polled: [`Uart::try_read`] never waits, and
//! [`Uart::write_all`] waits only for the transmitter. One driver per peripheral family, chosen by
//! `build.rs` for the board: Arm's CMSDK APB UART (QEMU's MPS2 boards) or Nordic's UART (nRF51,
//! and the nRF52's legacy UART0, which has the same registers).

use core::ptr::{read_volatile, write_volatile};

use crate::UART_BASE;

fn write(offset: usize, value: u32) {
    // SAFETY: `UART_BASE + offset` is one of the board's UART registers (build.rs, the part's
    // reference manual); a volatile word write is how it is programmed.
    unsafe { write_volatile((UART_BASE + offset) as *mut u32, value) }
}

fn read(offset: usize) -> u32 {
    // SAFETY: as in `write`; reading these registers has no effect but the documented one.
    unsafe { read_volatile((UART_BASE + offset) as *const u32) }
}

/// The UART, polled.
pub struct Uart(());

#[cfg(uart = "cmsdk")]
impl Uart {
    const DATA: usize = 0x00;
    const STATE: usize = 0x04;
    const CTRL: usize = 0x08;
    const BAUDDIV: usize = 0x10;
    const TX_FULL: u32 = 1 << 0;
    const RX_FULL: u32 = 1 << 1;

    /// Enables the transmitter and receiver.
    pub fn enable() -> Self {
        write(Self::BAUDDIV, crate::CLOCK_HZ / 115_200);
        write(Self::CTRL, 0b11);
        Self(())
    }

    /// The next received byte, if one is waiting.
    pub fn try_read(&mut self) -> Option<u8> {
        (read(Self::STATE) & Self::RX_FULL != 0).then(|| read(Self::DATA) as u8)
    }

    /// Sends `bytes`.
    pub fn write_all(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            while read(Self::STATE) & Self::TX_FULL != 0 {}
            write(Self::DATA, u32::from(byte));
        }
    }
}

#[cfg(uart = "nrf")]
impl Uart {
    const STARTRX: usize = 0x000;
    const STARTTX: usize = 0x008;
    const RXDRDY: usize = 0x108;
    const TXDRDY: usize = 0x11C;
    const ERROR: usize = 0x124;
    const ERRORSRC: usize = 0x480;
    const ENABLE: usize = 0x500;
    const PSELTXD: usize = 0x50C;
    const PSELRXD: usize = 0x514;
    const RXD: usize = 0x518;
    const TXD: usize = 0x51C;
    const BAUDRATE: usize = 0x524;
    const BAUD_115200: u32 = 0x01D7_E000;

    /// Enables the UART on the board's pins and starts both directions.
    pub fn enable() -> Self {
        let (tx, rx) = crate::UART_PINS;
        write(Self::PSELTXD, tx);
        write(Self::PSELRXD, rx);
        write(Self::BAUDRATE, Self::BAUD_115200);
        write(Self::ENABLE, 4);
        write(Self::STARTRX, 1);
        write(Self::STARTTX, 1);
        Self(())
    }

    /// The next received byte, if one is waiting (a framing or overrun error drops the byte;
    /// the frame's checksum then refuses it).
    pub fn try_read(&mut self) -> Option<u8> {
        if read(Self::ERROR) != 0 {
            write(Self::ERROR, 0);
            write(Self::ERRORSRC, read(Self::ERRORSRC));
        }
        if read(Self::RXDRDY) == 0 {
            return None;
        }
        write(Self::RXDRDY, 0);
        Some(read(Self::RXD) as u8)
    }

    /// Sends `bytes`.
    pub fn write_all(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            write(Self::TXD, u32::from(byte));
            while read(Self::TXDRDY) == 0 {}
            write(Self::TXDRDY, 0);
        }
    }
}
