//! The boards, in one table: the firmware's build (`board/build.rs`: memory map, UART, clock)
//! and `xtask` (`board`, `classify`, `flash`, `test`: QEMU's machine and core, the Rust target,
//! probe-rs's chip, the flash and RAM a model may use) both read it. Plain Rust with no
//! dependencies, included by path in each (`#[path] mod boards;`): a build script and a binary
//! of another workspace share it without a crate between them.

/// A part's memory map: the linker script the firmware links with.
pub struct Memory {
    /// `board/memory/<file>.x`.
    pub file: &'static str,
    /// The script's text.
    pub script: &'static str,
}

impl Memory {
    /// The `LENGTH` of the script's region `region` (`FLASH`, `RAM`), in bytes.
    pub fn length(&self, region: &str) -> Option<u64> {
        let line = self
            .script
            .lines()
            .find(|l| l.trim_start().starts_with(region) && l.contains("LENGTH"))?;
        let value = line
            .split("LENGTH")
            .nth(1)?
            .trim_start_matches([' ', '='])
            .trim();
        let (digits, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit())?);
        let unit = match unit.trim() {
            "K" => 1024,
            "M" => 1024 * 1024,
            "" => 1,
            _ => return None,
        };
        Some(digits.parse::<u64>().ok()? * unit)
    }
}

/// Where a firmware runs: a board QEMU emulates, a real one `flash` writes to, or both (the
/// micro:bit). Its name is the firmware's `FMLP_BOARD` and, for an emulated one, QEMU's `-M`.
pub struct Board {
    /// `FMLP_BOARD`, and QEMU's `-M` when `qemu_cpu` is set.
    pub name: &'static str,
    /// The core, for reports.
    pub core: &'static str,
    /// The Rust target.
    pub target: &'static str,
    /// The part whose flash and RAM the firmware gets, for reports.
    pub part: &'static str,
    /// That part's memory map.
    pub memory: Memory,
    /// The firmware's UART driver (`cfg(uart = "...")`).
    pub uart: &'static str,
    /// The UART's registers.
    pub uart_base: u32,
    /// (TX, RX) pins for the nRF UART; unused by the CMSDK one.
    pub pins: (u32, u32),
    /// The core clock (SysTick's), in Hz.
    pub clock_hz: u32,
    /// QEMU's `-cpu`, for the boards QEMU emulates.
    pub qemu_cpu: Option<&'static str>,
    /// probe-rs's chip name, for the boards `flash` writes.
    pub chip: Option<&'static str>,
}

const NRF52840: Memory = Memory {
    file: "nrf52840",
    script: include_str!("memory/nrf52840.x"),
};

/// Every board, QEMU's default machine first.
pub const BOARDS: &[Board] = &[
    // QEMU's MPS2 boards: CMSDK APB UART0, 25 MHz system clock.
    Board {
        name: "mps2-an386",
        core: "Cortex-M4F",
        target: "thumbv7em-none-eabihf",
        part: "nRF52840",
        memory: NRF52840,
        uart: "cmsdk",
        uart_base: 0x4000_4000,
        pins: (0, 0),
        clock_hz: 25_000_000,
        qemu_cpu: Some("cortex-m4"),
        chip: None,
    },
    // Secure state: UART0's secure alias.
    Board {
        name: "mps2-an505",
        core: "Cortex-M33",
        target: "thumbv8m.main-none-eabihf",
        part: "nRF5340 application core",
        memory: Memory {
            file: "nrf5340",
            script: include_str!("memory/nrf5340.x"),
        },
        uart: "cmsdk",
        uart_base: 0x5020_0000,
        pins: (0, 0),
        clock_hz: 20_000_000,
        qemu_cpu: Some("cortex-m33"),
        chip: None,
    },
    // The BBC micro:bit (v1), real or QEMU's `microbit`: nRF51822, UART on P0.24/P0.25, 16 MHz.
    Board {
        name: "microbit",
        core: "Cortex-M0",
        target: "thumbv6m-none-eabi",
        part: "nRF51822",
        memory: Memory {
            file: "nrf51822",
            script: include_str!("memory/nrf51822.x"),
        },
        uart: "nrf",
        uart_base: 0x4000_2000,
        pins: (24, 25),
        clock_hz: 16_000_000,
        qemu_cpu: Some("cortex-m0"),
        chip: Some("nRF51822_xxAA"),
    },
    // Nordic's nRF52840-DK: the UART to its J-Link's virtual COM port is on P0.06/P0.08, 64 MHz.
    Board {
        name: "nrf52840-dk",
        core: "Cortex-M4F",
        target: "thumbv7em-none-eabihf",
        part: "nRF52840",
        memory: NRF52840,
        uart: "nrf",
        uart_base: 0x4000_2000,
        pins: (6, 8),
        clock_hz: 64_000_000,
        qemu_cpu: None,
        chip: Some("nRF52840_xxAA"),
    },
];
