//! Configures the firmware for one board (`FMLP_BOARD`) and one model (`FMLP_MODEL`), both set by
//! `cargo xtask board`, `classify` and `flash`: puts the board's `memory/<part>.x` (from the
//! table in `boards.rs`) on the linker's path as `memory.x`, selects its UART driver
//! (`cfg(uart = "...")`), and writes `config.rs` with the activation width the model needs, the SysTick clock and the UART pins,
//! and `model.bin`: the model file placed so that its largest f16 layer's weights are
//! word-aligned in flash.

use std::path::PathBuf;

#[allow(dead_code)] // the table's xtask fields (core, target, QEMU, probe-rs)
#[path = "boards.rs"]
mod boards;

use boards::BOARDS;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-env-changed=FMLP_BOARD");
    println!("cargo:rerun-if-env-changed=FMLP_MODEL");
    println!("cargo:rustc-check-cfg=cfg(uart, values(\"cmsdk\", \"nrf\"))");
    let name = std::env::var("FMLP_BOARD").unwrap_or_else(|_| "mps2-an386".into());
    let Some(board) = BOARDS.iter().find(|b| b.name == name) else {
        let names: Vec<_> = BOARDS.iter().map(|b| b.name).collect();
        panic!("FMLP_BOARD={name} is not one of {}", names.join(", "));
    };
    std::fs::write(out.join("memory.x"), board.memory.script).expect("OUT_DIR is writable");
    println!("cargo:rerun-if-changed=boards.rs");
    println!("cargo:rerun-if-changed=memory/{}.x", board.memory.file);
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-cfg=uart=\"{}\"", board.uart);

    let Ok(model) = std::env::var("FMLP_MODEL") else {
        panic!(
            "FMLP_MODEL must name the model file to embed in flash; `cargo xtask board --model \
             PATH` sets it"
        )
    };
    println!("cargo:rerun-if-changed={model}");
    let bytes = std::fs::read(&model).unwrap_or_else(|e| panic!("FMLP_MODEL={model}: {e}"));
    let parsed =
        infer::Model::from_bytes(&bytes).unwrap_or_else(|e| panic!("FMLP_MODEL={model}: {e}"));
    let width = parsed.scratch_width();
    // Where the file starts in a word-aligned block of flash: so that the f16 layer with the most
    // weights starts on a word, which the Cortex-M4F's VLDM kernel needs (postcard puts weights
    // at any offset; the other layers take the unaligned kernel).
    let largest = parsed
        .file()
        .layers
        .iter()
        .filter(|l| l.encoding == infer::format::Encoding::F16)
        .max_by_key(|l| l.weights.len());
    let shift = largest.map_or(0, |l| {
        let offset = l.weights.as_ptr() as usize - bytes.as_ptr() as usize;
        (4 - offset % 4) % 4
    });
    let mut placed = vec![0u8; shift];
    placed.extend_from_slice(&bytes);
    placed.resize(bytes.len() + 3, 0);
    std::fs::write(out.join("model.bin"), placed).expect("OUT_DIR is writable");
    let config = format!(
        "/// Values in each activation buffer: the model's widest layer.\n\
         pub const WIDTH: usize = {width};\n\
         /// Where the model file starts in `model.bin` (zero bytes before it).\n\
         pub const MODEL_SHIFT: usize = {shift};\n\
         /// The model file's length.\n\
         pub const MODEL_LEN: usize = {};\n\
         /// SysTick's clock (the core clock) on this board, in Hz.\n\
         pub const CLOCK_HZ: u32 = {};\n\
         /// The UART's registers.\n\
         pub const UART_BASE: usize = {:#x};\n\
         /// The UART's (TX, RX) pins (nRF parts).\n\
         pub const UART_PINS: (u32, u32) = {:?};\n",
        bytes.len(),
        board.clock_hz,
        board.uart_base,
        board.pins
    );
    std::fs::write(out.join("config.rs"), config).expect("OUT_DIR is writable");
}
