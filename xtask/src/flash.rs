//! `cargo xtask flash`: builds the app firmware (`board/src/bin/app.rs`) with a model for a real
//! board and writes it to the part with probe-rs.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, anyhow, bail};

/// Options of `flash`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Chips (probe-rs names) and the boards whose UART pins the firmware uses:
  nRF52840_xxAA   Nordic nRF52840-DK: UART on P0.06 (TX) / P0.08 (RX), the J-Link's virtual
                  COM port (/dev/ttyACM0 on Linux)                                  [default]
  nRF51822_xxAA   BBC micro:bit v1: UART on P0.24 / P0.25, the DAPLink's COM port (a Cortex-M0:
                  a model that leaves the code 64 KB of its 256 KB of flash, e.g.
                  models/mlp-72-32-int8.fmlp)

Needs probe-rs (cargo install probe-rs-tools --locked) and a debug probe (the DK's and the
micro:bit's are on board). Then send images with
  cargo xtask classify --port /dev/ttyACM0 --model MODEL picture.png"
)]
pub struct FlashArgs {
    /// The part, as probe-rs names it (see below).
    #[arg(long, value_name = "NAME", default_value = "nRF52840_xxAA")]
    pub chip: String,
    /// Model file to embed in flash.
    #[arg(long, value_name = "PATH", default_value = infer::format::DEFAULT_PATH)]
    pub model: PathBuf,
    /// Build the firmware and print its path, for another flasher; do not run probe-rs.
    #[arg(long)]
    pub build_only: bool,
}

/// Runs `flash`.
pub fn run(args: &FlashArgs) -> anyhow::Result<()> {
    let flashable = || crate::board::BOARDS.iter().filter(|b| b.chip.is_some());
    let board = flashable()
        .find(|b| b.chip.is_some_and(|c| c.eq_ignore_ascii_case(&args.chip)))
        .ok_or_else(|| {
            let names: Vec<_> = flashable().filter_map(|b| b.chip).collect();
            anyhow!("--chip {}: not one of {}", args.chip, names.join(", "))
        })?;
    let chip = board.chip.expect("a flashable board");
    let file = crate::files::ModelFileOnDisk::read(&args.model)?;
    if !board.fits(file.bytes.len() as u64) {
        bail!(
            "{}: {} bytes do not fit the {} beside the firmware's code ({} KB): choose a \
             smaller model (cargo xtask models lists them with their sizes)",
            args.model.display(),
            file.bytes.len(),
            board.part_and_memory(),
            crate::board::CODE_BYTES >> 10
        );
    }
    let elf = crate::board::build(&args.model, board, "app")?;
    println!(
        "built the app firmware for the {} ({}) with {} ({} bytes): {}",
        board.part_and_memory(),
        board.name,
        args.model.display(),
        file.bytes.len(),
        elf.display()
    );
    if args.build_only {
        return Ok(());
    }
    let found = Command::new("probe-rs").arg("--version").output();
    if !found.is_ok_and(|o| o.status.success()) {
        bail!(
            "probe-rs is not installed, so nothing was flashed. Install it with\n  cargo install \
             probe-rs-tools --locked\n(or the installer at https://probe.rs), connect the board \
             and run this again; or flash {} with your own tool.",
            elf.display()
        );
    }
    let status = Command::new("probe-rs")
        .args(["download", "--chip", chip])
        .arg(&elf)
        .status()
        .context("running probe-rs download")?;
    if !status.success() {
        bail!("probe-rs download failed ({status}): is the board connected and powered?");
    }
    let status = Command::new("probe-rs")
        .args(["reset", "--chip", chip])
        .status()
        .context("running probe-rs reset")?;
    if !status.success() {
        bail!("probe-rs reset failed ({status})");
    }
    println!(
        "flashed and reset. Send it images with\n  cargo xtask classify --port /dev/ttyACM0 \
         --model {} IMAGE.png",
        args.model.display()
    );
    Ok(())
}
